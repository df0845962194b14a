#include "node-agent/agent/metrics.h"

namespace daxlease::agent {
namespace {

prometheus::Gauge& G(prometheus::Registry& r, const char* name,
                     const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({});
}
prometheus::Counter& C(prometheus::Registry& r, const char* name,
                       const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r).Add({});
}

}  // namespace

AgentMetrics::AgentMetrics(prometheus::Registry& r)
    : mapped_volumes_(G(r, "daxlease_agent_mapped_volumes",
                        "Volumes this node serves, mapped")),
      mapped_bytes_(G(r, "daxlease_agent_mapped_bytes",
                      "Bytes of DAX memory this node serves")),
      publishes_(G(r, "daxlease_agent_publishes",
                   "Publishes on this node, each holding one DaxLease")),
      sessions_(G(r, "daxlease_agent_sessions",
                  "Clients attached to this node's leases")),
      recall_acks_(C(r, "daxlease_agent_recall_acks_total",
                     "Recalls acked for this node's leases")),
      recall_flush_(
          prometheus::BuildHistogram()
              .Name("daxlease_agent_recall_flush_seconds")
              .Help("From a lease seen Recalling to its ack (flush, unmap)")
              .Register(r)
              .Add({},
                   prometheus::Histogram::BucketBoundaries{
                       0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                       5, 10, 30, 60})),
      fences_(C(r, "daxlease_agent_fences_total",
                "Revoked grants this node fenced as owner")),
      lease_breaks_(C(r, "daxlease_agent_lease_breaks_total",
                      "Linux lease breaks on served files")),
      source_hashed_(
          C(r, "daxlease_agent_migration_source_hashed_bytes_total",
            "Bytes of its volumes this node hashed as a migration's source "
            "(its checksum and the target's chunk digests)")) {}

void AgentMetrics::Set(int mapped_volumes, uint64_t mapped_bytes, int publishes,
                       int sessions) {
  mapped_volumes_.Set(mapped_volumes);
  mapped_bytes_.Set(static_cast<double>(mapped_bytes));
  publishes_.Set(publishes);
  sessions_.Set(sessions);
}
void AgentMetrics::RecallAcked(absl::Duration flush) {
  recall_acks_.Increment();
  recall_flush_.Observe(absl::ToDoubleSeconds(flush));
}
void AgentMetrics::Fenced() { fences_.Increment(); }
void AgentMetrics::LeaseBroken() { lease_breaks_.Increment(); }
void AgentMetrics::SourceHashed(uint64_t bytes) {
  source_hashed_.Increment(static_cast<double>(bytes));
}

}  // namespace daxlease::agent
