// Package config is the runtime configuration: named sections kept in the
// replicated state, each with a version that counts its changes and a
// history of them (before and after). A section's values are the JSON of
// the domain that uses them (circuit.Policy for circuit_defaults,
// dlq.Limits for dlq, emergency.Config for emergency, Retry and Flags
// here); this package stores them, checks the writer's expected version and
// keeps the history, and owns the rules of the two sections no other domain
// has: retry defaults and feature flags.
//
// Set is deterministic: the leader fills every field before proposing, so
// a node's own startup flags never reach the state.
package config
