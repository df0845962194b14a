// AgentMetrics: the node agent's Prometheus series (docs/agent.md):
//   daxlease_agent_mapped_volumes        volumes this node serves, mapped
//   daxlease_agent_mapped_bytes          their size: the DAX capacity served
//   daxlease_agent_publishes             publishes on this node (one lease
//                                        each: the holders)
//   daxlease_agent_sessions              attached clients (libdaxlease)
//   daxlease_agent_recall_acks_total     recalls acked for this node's leases
//   daxlease_agent_recall_flush_seconds  histogram: from the agent seeing a
//                                        lease Recalling to its ack (clients'
//                                        flush + unmap)
//   daxlease_agent_fences_total          revoked grants this owner fenced
//   daxlease_agent_lease_breaks_total    Linux lease breaks turned into recalls
//   daxlease_agent_migration_source_hashed_bytes_total
//                                        bytes of its volumes this node hashed
//                                        as a migration's source (its
//                                        checksum, the target's DIGESTS)
// Thread-safe.
#ifndef DAXLEASE_NODE_AGENT_AGENT_METRICS_H_
#define DAXLEASE_NODE_AGENT_AGENT_METRICS_H_

#include <cstdint>

#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace daxlease::agent {

class AgentMetrics {
 public:
  // Registers the families in `registry`, which must outlive this.
  explicit AgentMetrics(prometheus::Registry& registry);
  AgentMetrics(const AgentMetrics&) = delete;
  AgentMetrics& operator=(const AgentMetrics&) = delete;

  void Set(int mapped_volumes, uint64_t mapped_bytes, int publishes,
           int sessions);
  void RecallAcked(absl::Duration flush);
  void Fenced();
  void LeaseBroken();
  void SourceHashed(uint64_t bytes);

 private:
  prometheus::Gauge& mapped_volumes_;
  prometheus::Gauge& mapped_bytes_;
  prometheus::Gauge& publishes_;
  prometheus::Gauge& sessions_;
  prometheus::Counter& recall_acks_;
  prometheus::Histogram& recall_flush_;
  prometheus::Counter& fences_;
  prometheus::Counter& lease_breaks_;
  prometheus::Counter& source_hashed_;
};

}  // namespace daxlease::agent

#endif  // DAXLEASE_NODE_AGENT_AGENT_METRICS_H_
