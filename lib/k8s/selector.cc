#include "lib/k8s/selector.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "lib/k8s/label_syntax.h"

namespace daxlease::k8s {
namespace {

// Splits on commas that are not inside parentheses.
std::vector<std::string> SplitTopLevel(absl::string_view text) {
  std::vector<std::string> parts;
  std::string cur;
  int depth = 0;
  for (char ch : text) {
    if (ch == '(') ++depth;
    if (ch == ')') --depth;
    if (ch == ',' && depth == 0) {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  parts.push_back(cur);
  return parts;
}

}  // namespace

absl::StatusOr<LabelSelector> LabelSelector::Parse(absl::string_view text) {
  LabelSelector sel;
  if (absl::StripAsciiWhitespace(text).empty()) return sel;
  for (const std::string& raw : SplitTopLevel(text)) {
    absl::string_view part = absl::StripAsciiWhitespace(raw);
    auto bad = [&] {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid label selector requirement '", part, "'"));
    };
    Requirement req;
    size_t pos;
    if ((pos = part.find("!=")) != absl::string_view::npos) {
      req = {Requirement::Op::kNotIn,
             std::string(absl::StripAsciiWhitespace(part.substr(0, pos))),
             {std::string(absl::StripAsciiWhitespace(part.substr(pos + 2)))}};
    } else if ((pos = part.find('=')) != absl::string_view::npos) {
      size_t vpos = pos + 1;
      if (vpos < part.size() && part[vpos] == '=') ++vpos;
      req = {Requirement::Op::kIn,
             std::string(absl::StripAsciiWhitespace(part.substr(0, pos))),
             {std::string(absl::StripAsciiWhitespace(part.substr(vpos)))}};
    } else if ((pos = part.find('(')) != absl::string_view::npos) {
      if (part.back() != ')') return bad();
      std::vector<absl::string_view> words =
          absl::StrSplit(part.substr(0, pos), ' ', absl::SkipWhitespace());
      if (words.size() != 2) return bad();
      if (words[1] == "in") {
        req.op = Requirement::Op::kIn;
      } else if (words[1] == "notin") {
        req.op = Requirement::Op::kNotIn;
      } else {
        return bad();
      }
      req.key = std::string(words[0]);
      absl::string_view inner = part.substr(pos + 1, part.size() - pos - 2);
      for (absl::string_view v : absl::StrSplit(inner, ',')) {
        req.values.push_back(std::string(absl::StripAsciiWhitespace(v)));
      }
    } else if (absl::ConsumePrefix(&part, "!")) {
      req = {Requirement::Op::kNotExists,
             std::string(absl::StripAsciiWhitespace(part)),
             {}};
    } else {
      req = {Requirement::Op::kExists, std::string(part), {}};
    }
    // As the server parses it: a key or value no label may hold is an
    // error, not a selector that matches nothing.
    absl::Status valid = ValidateLabelKey(req.key);
    for (const std::string& v : req.values) {
      if (valid.ok()) valid = ValidateLabelValue(v);
    }
    if (!valid.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid label selector requirement '", part,
                       "': ", valid.message()));
    }
    sel.reqs_.push_back(std::move(req));
  }
  return sel;
}

bool LabelSelector::Matches(
    const std::map<std::string, std::string>& labels) const {
  for (const Requirement& r : reqs_) {
    auto it = labels.find(r.key);
    bool has = it != labels.end();
    bool in = has && std::find(r.values.begin(), r.values.end(), it->second) !=
                         r.values.end();
    switch (r.op) {
      case Requirement::Op::kIn:
        if (!in) return false;
        break;
      case Requirement::Op::kNotIn:
        if (in) return false;
        break;
      case Requirement::Op::kExists:
        if (!has) return false;
        break;
      case Requirement::Op::kNotExists:
        if (has) return false;
        break;
    }
  }
  return true;
}

bool LabelSelector::Matches(const nlohmann::json& obj) const {
  std::map<std::string, std::string> labels;
  if (obj.contains("metadata") && obj["metadata"].contains("labels") &&
      obj["metadata"]["labels"].is_object()) {
    for (const auto& [k, v] : obj["metadata"]["labels"].items()) {
      if (v.is_string()) labels[k] = v.get<std::string>();
    }
  }
  return Matches(labels);
}

absl::StatusOr<FieldSelector> FieldSelector::Parse(absl::string_view text) {
  FieldSelector sel;
  if (absl::StripAsciiWhitespace(text).empty()) return sel;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    part = absl::StripAsciiWhitespace(part);
    Requirement req;
    size_t pos, vpos;
    if ((pos = part.find("!=")) != absl::string_view::npos) {
      req.equal = false;
      vpos = pos + 2;
    } else if ((pos = part.find('=')) != absl::string_view::npos) {
      req.equal = true;
      vpos = pos + 1;
      if (vpos < part.size() && part[vpos] == '=') ++vpos;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid field selector requirement '", part, "'"));
    }
    req.path = std::string(absl::StripAsciiWhitespace(part.substr(0, pos)));
    req.value = std::string(absl::StripAsciiWhitespace(part.substr(vpos)));
    if (req.path.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid field selector requirement '", part, "'"));
    }
    sel.reqs_.push_back(std::move(req));
  }
  return sel;
}

bool FieldSelector::Matches(const nlohmann::json& obj) const {
  for (const Requirement& r : reqs_) {
    const nlohmann::json* cur = &obj;
    for (absl::string_view step : absl::StrSplit(r.path, '.')) {
      if (cur == nullptr || !cur->is_object()) {
        cur = nullptr;
        break;
      }
      auto it = cur->find(std::string(step));
      cur = it == cur->end() ? nullptr : &*it;
    }
    std::string value;
    if (cur != nullptr) {
      value = cur->is_string() ? cur->get<std::string>() : cur->dump();
    }
    if ((value == r.value) != r.equal) return false;
  }
  return true;
}

std::vector<std::string> FieldSelector::Paths() const {
  std::vector<std::string> out;
  for (const Requirement& r : reqs_) out.push_back(r.path);
  return out;
}

}  // namespace daxlease::k8s
