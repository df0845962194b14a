// What daxlease-io (client/tools/daxlease_io.c) prints, parsed in one place
// for the tests that drive it: the "persisted seq=N index=I epoch=E" line
// `pattern` prints after each persisted block, and the summary `verify`
// prints ("blocks=N valid=V empty=E corrupt=C maxseq=S", then
// "corrupt_at=I[,I...]" when C > 0). The parsers do not guess: text that is
// not exactly that format gives std::nullopt, so a test that needs the value
// fails (with the text in its message) instead of comparing against 0 or a
// truncated number. Header-only, no cluster: daxlease_io_output_test checks
// it against the tool's format strings.
#ifndef DAXLEASE_TESTS_TWONODE_DAXLEASE_IO_OUTPUT_H_
#define DAXLEASE_TESTS_TWONODE_DAXLEASE_IO_OUTPUT_H_

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace daxlease::testing {

namespace daxlease_io_output_internal {

// `s` is only decimal digits (no sign, no space) and fits `out`.
template <typename Int>
bool Number(absl::string_view s, Int* out) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return absl::ascii_isdigit(c);
  }) && absl::SimpleAtoi(s, out);
}

// `field` is exactly "KEY=NUMBER".
template <typename Int>
bool Field(absl::string_view field, absl::string_view key, Int* out) {
  return absl::ConsumePrefix(&field, key) && absl::ConsumePrefix(&field, "=") &&
         Number(field, out);
}

}  // namespace daxlease_io_output_internal

// One line `daxlease-io pattern` prints once a block is persisted.
struct PersistedLine {
  uint64_t seq = 0;    // 1, 2, ... in the order written
  uint64_t index = 0;  // the block's index in the volume
  int64_t epoch = 0;   // the epoch the persist completed under
};

// `line` (without its '\n') as a "persisted seq=N index=I epoch=E" line;
// nullopt for any other line (error, revoked, a library message) or one that
// is not exactly that.
inline std::optional<PersistedLine> ParsePersistedLine(absl::string_view line) {
  using daxlease_io_output_internal::Field;
  if (!absl::ConsumePrefix(&line, "persisted ")) return std::nullopt;
  const std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
  PersistedLine p;
  if (f.size() != 3 || !Field(f[0], "seq", &p.seq) ||
      !Field(f[1], "index", &p.index) || !Field(f[2], "epoch", &p.epoch)) {
    return std::nullopt;
  }
  return p;
}

// The seq of the last persisted line of a `daxlease-io pattern` log (its
// stdout and stderr). Only whole lines count: the log of a running writer
// may end in the middle of one, whose number would be cut short. nullopt
// when there is no such line, or when the last line that starts with
// "persisted " is not in the format (the output changed: a test must not
// take the line before it for the last one).
inline std::optional<uint64_t> LastPersistedSeq(absl::string_view log) {
  size_t end = log.rfind('\n');  // the end of the last whole line
  while (end != absl::string_view::npos) {
    const size_t nl =
        end == 0 ? absl::string_view::npos : log.rfind('\n', end - 1);
    const size_t start = nl == absl::string_view::npos ? 0 : nl + 1;
    const absl::string_view line = log.substr(start, end - start);
    if (absl::StartsWith(line, "persisted ")) {
      std::optional<PersistedLine> p = ParsePersistedLine(line);
      if (!p.has_value()) return std::nullopt;
      return p->seq;
    }
    end = nl;
  }
  return std::nullopt;
}

// What `daxlease-io verify` printed on stdout.
struct VerifySummary {
  uint64_t blocks = 0;   // blocks checked
  uint64_t valid = 0;    // pattern blocks whose checksum and index hold
  uint64_t empty = 0;    // never written (all zero)
  uint64_t corrupt = 0;  // the rest
  uint64_t maxseq = 0;   // the newest seq among the valid ones (0: none)
  std::vector<uint64_t> corrupt_at;  // the first 16 corrupt blocks' indices
};

// `out`, the whole stdout of `daxlease-io verify`: the summary line and,
// when corrupt > 0, the corrupt_at line naming min(corrupt, 16) indices.
// nullopt when it is anything else (verify failed before its summary, or
// the format changed).
inline std::optional<VerifySummary> ParseVerify(absl::string_view out) {
  using daxlease_io_output_internal::Field;
  constexpr uint64_t kNamed = 16;  // CORRUPT_NAMED in daxlease_io.c
  if (!absl::ConsumeSuffix(&out, "\n")) return std::nullopt;
  const std::vector<absl::string_view> lines = absl::StrSplit(out, '\n');
  const std::vector<absl::string_view> f = absl::StrSplit(lines[0], ' ');
  VerifySummary s;
  if (f.size() != 5 || !Field(f[0], "blocks", &s.blocks) ||
      !Field(f[1], "valid", &s.valid) || !Field(f[2], "empty", &s.empty) ||
      !Field(f[3], "corrupt", &s.corrupt) ||
      !Field(f[4], "maxseq", &s.maxseq) ||
      s.valid + s.empty + s.corrupt != s.blocks) {
    return std::nullopt;
  }
  if (s.corrupt == 0) {
    if (lines.size() != 1) return std::nullopt;
    return s;
  }
  absl::string_view named = lines.size() == 2 ? lines[1] : "";
  if (!absl::ConsumePrefix(&named, "corrupt_at=")) return std::nullopt;
  for (absl::string_view i : absl::StrSplit(named, ',')) {
    uint64_t index = 0;
    if (!daxlease_io_output_internal::Number(i, &index)) return std::nullopt;
    s.corrupt_at.push_back(index);
  }
  if (s.corrupt_at.size() != std::min(s.corrupt, kNamed)) return std::nullopt;
  return s;
}

}  // namespace daxlease::testing

#endif  // DAXLEASE_TESTS_TWONODE_DAXLEASE_IO_OUTPUT_H_
