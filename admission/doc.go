// Package admission holds the rules of the fleet's admission primitives
// (issue 14): rate limits shared across instances by leases on fair shares
// of the rate (Doorman's design), bulkheads (Baldur §11) and the adaptive
// throttle (§12), as they are configured in the replicated configuration
// sections rate_limits, bulkheads and throttles, and how the leader divides
// a limit among the instances that ask (Allocator). Admission itself is
// decided in each SDK instance, with no network on the hot path.
package admission
