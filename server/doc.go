// Package server is baldurd's composition root: configuration, the gRPC
// services (one file each), the REST gateway, authentication, leader
// forwarding, the watch hub and the leader-only loops.
//
// Two files are the only places for their concern: errors.go maps domain
// and raftstore errors to gRPC statuses, and apply.go dispatches committed
// commands to the domain packages through one table keyed by command body
// (and appends the audit record in the same transaction).
//
// Only cmd/baldurd and tests import this package.
package server
