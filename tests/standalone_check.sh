#!/usr/bin/env bash
# The repository stands alone: no file may point outside it (a design
# document or a machine path in a sibling checkout). Fails listing the lines.
set -euo pipefail
cd "$(dirname "$0")/.."
pattern='\.\./shared|/work/shared|DESIGN\.md'
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  hits=$(git grep -n -I -E "$pattern" -- . ':!tests/standalone_check.sh' || true)
else
  hits=$(grep -rn -I -E "$pattern" --exclude-dir=.git --exclude-dir='build*' \
    --exclude=standalone_check.sh . || true)
fi
if [[ -n $hits ]]; then
  echo "files point outside the repository (use docs/design.md):" >&2
  echo "$hits" >&2
  exit 1
fi
echo "no file points outside the repository"
