// Package emergency holds fleet-wide emergency levels (Baldur §10): the
// levels and their per-tier admission fractions, manual and automatic
// triggers, release behind a recovery gate, gradual recovery, expiry and a
// bounded history.
//
// Everything here is deterministic: the functions that change state take
// the leader-stamped time and the Raft index in fsm.Meta and read nothing
// else, so every replica computes the same result. A change function
// validates everything before its first write, so a refused command leaves
// no trace. Time-driven transitions (expiry, recovery steps) are found by
// [Proposals] on the leader, which returns the EmergencyExpire and
// EmergencyStep commands applied by [Expire] and [Step]; both name the
// activation they act on, which makes late or repeated proposals no-ops.
//
// Imports: the standard library and the internal command protos only.
package emergency
