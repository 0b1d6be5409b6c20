// Package circuit holds fleet-wide circuit breakers (Baldur §1): the
// replicated breaker records and their deterministic transitions, and the
// leader's in-memory [Evaluator] that turns outcome reports into trip
// evidence.
//
// What is replicated: each breaker's policy, state, pin (force), HALF_OPEN
// probe window and the evidence of its last transition, plus the global
// kill switch. What is not: the outcome windows. They live in the leader's
// memory (DESIGN principle 6) and a new leader starts with empty windows,
// so a breaker that was close to tripping needs fresh evidence after a
// leader change. A tripped breaker stays OPEN across leader changes.
//
// Change functions validate before their first write and take the leader's
// time from fsm.Meta. The leader's decisions are here too (leader.go):
// [Ingest] turns a batch of outcome reports into the commands to propose
// (register, trip with evidence, probe results), and [Proposals] lists the
// time-driven transitions due; each names what it acts on (the OPEN
// breaker's opened-at revision, the pin revision, the probe window), so a
// repeated or late proposal is a no-op.
//
// Imports: the standard library and the internal command protos only.
package circuit
