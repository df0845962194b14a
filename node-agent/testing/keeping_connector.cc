#include "node-agent/testing/keeping_connector.h"

#include <utility>

namespace daxlease::agent::testing {
namespace {

// What the library gets: every call goes to the kept region.
class Forward final : public fabric::RemoteRegion {
 public:
  explicit Forward(std::shared_ptr<fabric::RemoteRegion> r)
      : r_(std::move(r)) {}
  uint64_t size() const override { return r_->size(); }
  absl::Status Read(uint64_t o, absl::Span<char> out) override {
    return r_->Read(o, out);
  }
  absl::Status Write(uint64_t o, absl::Span<const char> d) override {
    return r_->Write(o, d);
  }
  absl::Status Persist(uint64_t o, uint64_t n) override {
    return r_->Persist(o, n);
  }
  absl::Status ReadStream(uint64_t o, uint64_t n, absl::Span<char> buf,
                          const Landed& landed) override {
    return r_->ReadStream(o, n, buf, landed);
  }

 private:
  const std::shared_ptr<fabric::RemoteRegion> r_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<fabric::RemoteRegion>> KeepingConnector::Connect(
    const fabric::GrantInfo& grant) {
  auto c = inner_.Connect(grant);
  if (!c.ok()) return c.status();
  std::shared_ptr<fabric::RemoteRegion> r = std::move(*c);
  {
    std::lock_guard<std::mutex> l(mu_);
    last_ = r;
  }
  return std::make_unique<Forward>(std::move(r));
}

std::shared_ptr<fabric::RemoteRegion> KeepingConnector::last() {
  std::lock_guard<std::mutex> l(mu_);
  return last_;
}

}  // namespace daxlease::agent::testing
