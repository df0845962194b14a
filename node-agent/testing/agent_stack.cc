#include "node-agent/testing/agent_stack.h"

#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lib/api/json.h"
#include "lib/base/status.h"
#include "node-agent/agent/agent.h"

namespace daxlease::agent::testing {

absl::Status AgentStack::Start(const AgentStackOptions& options) {
  options_ = options;
  std::string tmpl = options.dir_prefix + ".XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return base::ErrnoStatus("mkdtemp", tmpl, errno);
  }
  dir = tmpl;
  op::ControllerOptions co;
  co.resync = options.operator_resync;
  controller_ =
      std::make_unique<op::Controller>(kube, base::RealClock(), events_, co);
  RETURN_IF_ERROR(controller_->Start());
  ASSIGN_OR_RETURN(a, StartNode("node-a"));
  ASSIGN_OR_RETURN(b, StartNode("node-b"));
  return absl::OkStatus();
}

void AgentStack::Stop() {
  if (stopped_) return;
  stopped_ = true;
  b.reset();
  a.reset();
  if (controller_ != nullptr) controller_->Stop();
  kube.Shutdown();
  if (!dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
}

absl::StatusOr<std::unique_ptr<AgentNode>> AgentStack::StartNode(
    const std::string& name) {
  AgentNodeOptions o;
  o.name = name;
  o.dir = dir;
  o.secret = options_.secret;
  o.resync = options_.node_resync;
  o.verbs_ip = options_.verbs_ip;
  return AgentNode::Start(o, kube);
}

absl::StatusOr<std::string> AgentStack::Publish(AgentNode& node,
                                                const std::string& volume,
                                                const std::string& pod,
                                                bool owner_local,
                                                std::string target) {
  if (target.empty()) target = absl::StrCat(dir, "/target-", pod);
  std::error_code ec;
  std::filesystem::create_directories(target, ec);
  if (ec) return absl::InternalError(absl::StrCat(target, ": ", ec.message()));
  pb::PublishRequest p;
  p.set_volume_id(volume);
  p.set_target_path(target);
  p.set_pod_namespace("default");
  p.set_pod_name(pod);
  p.set_pod_uid(pod + "-uid");
  p.set_owner_local(owner_local);
  ASSIGN_OR_RETURN(pb::PublishResponse r, node.agent().Publish(p));
  std::ofstream(target + "/daxlease.json") << r.descriptor_json();
  const std::string link = target + "/agent.sock";
  if (::symlink(node.socket().c_str(), link.c_str()) != 0) {
    return base::ErrnoStatus("symlink", link, errno);
  }
  return target;
}

absl::StatusOr<std::string> AgentStack::Recall(const std::string& volume,
                                               int grace) {
  k8s::Json r = {
      {"apiVersion", api::kApiVersion},
      {"kind", "DaxRecall"},
      {"metadata", {{"generateName", volume + "-recall-"}}},
      {"spec",
       {{"volume", volume}, {"reason", "Manual"}, {"graceSeconds", grace}}}};
  ASSIGN_OR_RETURN(k8s::Json created, kube.Create(DaxRecallResource(), r));
  return k8s::NameOf(created);
}

k8s::Json AgentStack::RecallStatus(const std::string& name) {
  auto r = kube.Get(DaxRecallResource(), "", name);
  if (!r.ok()) return k8s::Json::object();
  return r->value("status", k8s::Json::object());
}

}  // namespace daxlease::agent::testing
