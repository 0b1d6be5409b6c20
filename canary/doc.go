// Package canary rolls a runtime configuration change out in stages
// (Baldur §13): rollout records and their deterministic transitions
// (Apply over one CanaryCommand), the leader's judgment of a stage from the
// cohorts' own outcome reports (Tracker, in leader.go), the time-driven
// steps (Proposals: automatic promotion and rollback, the emergency
// interlock, the watchdog, retention) and the cohort rules both the
// cluster and the SDK follow (InCohort).
//
// A rollout holds its configuration section from creation until it ends:
// the section keeps its values (the baseline) while the canary cohort's
// SDK instances take the rollout's, and the section takes the new values
// when the last stage is promoted. A rollback leaves the section as it
// was, so every instance is back on the previous values.
package canary
