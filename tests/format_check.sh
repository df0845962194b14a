#!/usr/bin/env bash
# Every C++ source and header is clang-formatted (Google style, .clang-format).
# Fails listing each file clang-format would change; fix with
# `clang-format -i FILE`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v clang-format >/dev/null; then
  echo "clang-format not installed (scripts/install-deps.sh installs it)" >&2
  exit 1
fi
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files '*.cc' '*.h')
else
  mapfile -t files < <(find . -path './build*' -prune -o \
    \( -name '*.cc' -o -name '*.h' \) -print)
fi
if ! out=$(clang-format --dry-run --Werror "${files[@]}" 2>&1); then
  echo "not clang-formatted (clang-format -i FILE):" >&2
  grep -o '^[^: ]*\.\(cc\|h\):' <<<"$out" | sort -u | tr -d : |
    sed 's/^/  /' >&2
  exit 1
fi
echo "${#files[@]} files clang-formatted"
