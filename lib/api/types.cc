#include "lib/api/types.h"

#include <utility>

namespace daxlease::api {

const Condition* FindCondition(const std::vector<Condition>& conditions,
                               const std::string& type) {
  for (const Condition& c : conditions) {
    if (c.type == type) return &c;
  }
  return nullptr;
}

bool SetCondition(std::vector<Condition>& conditions, Condition c) {
  for (Condition& old : conditions) {
    if (old.type != c.type) continue;
    if (old.status == c.status) {
      c.last_transition_time = old.last_transition_time;
    }
    if (old == c) return false;
    old = std::move(c);
    return true;
  }
  conditions.push_back(std::move(c));
  return true;
}

}  // namespace daxlease::api
