// Package server is baldurd's composition root: configuration, the gRPC
// services (one file each), the REST gateway, authentication, leader
// forwarding, the watch hub and the leader task runner. It takes no domain
// decision: which breaker trips, which lease or entry expires, which run a
// job claim gets are answered by the domain packages, and the server
// proposes what they return.
//
// Some files are the only places for their concern: errors.go maps domain
// and raftstore errors to gRPC statuses; apply.go dispatches committed
// commands to the domain packages through one table keyed by command body
// (and appends the audit record in the same transaction); proposer.go is
// the one way to Raft (proposer.propose, with group commit as a property of
// the command kind in proposer_group.go); leader.go runs every domain's
// time-driven work.
//
// Only cmd/baldurd and tests import this package.
package server
