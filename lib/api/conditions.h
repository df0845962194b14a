// The condition types (metav1.Condition `type`) and the reasons of the
// daxlease.io/v1alpha1 objects that more than one program reads or writes:
// the operator and the agents write them, `kubectl daxlease status` and the
// tests read them. One name, one place (docs/operator.md, "Custom resources"
// and "Migration").
#ifndef DAXLEASE_LIB_API_CONDITIONS_H_
#define DAXLEASE_LIB_API_CONDITIONS_H_

namespace daxlease::api {

// Written by the operator.
inline constexpr char kLeaseGrantedCondition[] = "Granted";     // DaxLease
inline constexpr char kRecallCompleteCondition[] = "Complete";  // DaxRecall
inline constexpr char kVolumeReadyCondition[] = "Ready";        // DaxVolume
inline constexpr char kMigrationProgressingCondition[] = "Progressing";
inline constexpr char kMigrationSucceededCondition[] = "Succeeded";
inline constexpr char kMigrationFailedCondition[] = "Failed";

// Written by the agents on a DaxMigration (docs/agent.md, "Migration"): the
// side that lost frees its media (the source's after Complete, the target's
// after Failed). False with kMediaFreeFailedReason while the node's CSI
// plugin refuses the free (FreeMedia: the device still open, the plugin
// down), the message naming the node, the plugin's error, the attempt and
// when it is asked again; True with kMediaFreedReason once the media is
// gone. The status booleans `sourceMediaFreed`/`targetMediaFreed` stay the
// durable record a deletion waits for; these say why it has to wait.
inline constexpr char kSourceMediaFreedCondition[] = "SourceMediaFreed";
inline constexpr char kTargetMediaFreedCondition[] = "TargetMediaFreed";
inline constexpr char kMediaFreeFailedReason[] = "FreeFailed";
inline constexpr char kMediaFreedReason[] = "Freed";

}  // namespace daxlease::api

#endif  // DAXLEASE_LIB_API_CONDITIONS_H_
