// Package dlq holds the dead-letter queue's replicated entries (Baldur §4,
// §8): the entry model, every lifecycle transition, capacity limits with
// overflow strategies, payload truncation, masking of sensitive fields and
// domain validation.
//
// Entries are keyed by a client-chosen id (a UUIDv7 or ULID from the SDK),
// so a retried store never creates a second entry. Secondary indexes (by
// time, domain and status) and per-domain and per-status counters live in
// the same transaction as the entry, so listings page in order and
// capacity checks are O(1).
//
// What the leader decides is stamped into the command: the capacity limits
// and overflow strategy in force, the expiry, the masked and truncated
// payloads (prepared with [Capture] before proposing, so the log never
// holds unmasked data). The FSM only applies.
//
// Files: lifecycle.go holds the lifecycle rules both stores apply
// ([Transition], [Check]); replay.go what the leader decides around replay
// ([PauseReason], [ReplayOutcome]); layout.go the bbolt layout the
// replicated state uses; store.go the [Store] interface, implemented by
// [Replicated] (replicated.go) and by postgres.Store.
//
// Imports: the standard library and the internal command protos only.
package dlq
