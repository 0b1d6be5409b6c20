// Package baldur is the Go SDK of baldurd.
//
// A [Client] holds a local, push-updated copy of the decision state it
// needs: it opens a Watch stream to one of the endpoints, receives a full
// snapshot and then deltas tagged with revisions, and swaps an atomic
// pointer on each. Every decision (such as [Emergency.Admit]) reads that
// pointer and never waits on the network.
//
// # When the cluster is unreachable
//
// The client reconnects with capped exponential backoff, trying the
// endpoints in order, and resumes the stream from the last revision it
// applied (the server sends only what changed since; after a snapshot
// restore it sends a new full snapshot).
//
// Emergency levels fail static: while disconnected, Level and Admit keep
// answering from the last state received, indefinitely. An active
// emergency is not ended by losing contact, and NORMAL stays NORMAL; this
// matches Baldur's rule that an emergency exit fails closed. [Emergency.Stale]
// reports when the state is older than the stale bound ([WithStaleAfter],
// default 10 s), for alerting; an answered outcome report counts as news
// (the member leaves out the watch heartbeats of a connection whose reports
// it answers). [WithOnUpdate] tells the application of each change once
// it is applied. Before the first snapshot arrives the level
// is NORMAL and Stale is true; [Client.WaitReady] waits for it.
//
// Circuit breakers ([Client.Breaker], [Protect]) combine the fleet state the
// cluster pushes with a local, per-process view; a call is rejected if
// either rejects it. While the cluster is unreachable, the fleet view keeps
// its last state until the stale bound, then breakers decide on their local
// view alone; outcome reports are buffered (bounded) and sent after
// reconnect. Allow never waits on the network. See docs/circuits.md.
//
// # Leader changes
//
// Calls to the cluster (reports, DLQ stores, leases, every admin call made
// on a connection from [NewConn]) ride out a leader change: a write carries
// a Baldur-Request-Id (one is added when the caller set none), and a call
// that reached no leader (NO_LEADER, NOT_LEADER, LEADER_UNREACHABLE,
// LEADER_NOT_READY) or whose outcome is unknown (RESULT_UNKNOWN,
// SHUTTING_DOWN) is sent again with backoff while its deadline allows (10 s
// without one), a write with its id so that it applies once. A node that
// cannot be reached is left for the next endpoint and the call sent again
// for up to 2 s. See docs/api.md, "Errors".
//
// # The other primitives
//
// Each primitive has a handle named like the cluster's service:
// [Client.Circuits], [Client.Emergency], [Client.DLQ], [Client.Leases],
// [Client.Elections], [Client.Scheduler], [Client.Config], [Client.Canary].
//
//   - Runtime configuration ([Client.Config]): feature flags
//     ([Config.Flag], [Flag.Enabled]), the retry defaults [WithRetry] and
//     [WithDefaultRetry] fill in, the breaker defaults; received on the
//     emergency watch, fail-static. See docs/config.md.
//   - Canary rollouts ([Client.Canary]): whether this instance is in a
//     rollout's canary cohort (its Config then holds the rollout's values,
//     and its reports count for the canary) and request-level selection
//     ([CanaryView.Use]). See docs/canary.md.
//   - Dead-letter queue ([Client.DLQ]): [DLQ.Store] with a bounded durable
//     spool (delivered in order, deduplicated by the client-chosen id) and
//     [DLQ.HandleReplay] workers that lease entries (one at a time, or a
//     batch with [WithReplayBatch]) and report outcomes; [WithDLQ] stores a
//     Protect call's final failure. See docs/dlq.md.
//   - Fenced leases ([Client.Leases]): acquire, keep alive, revoke; the
//     fencing token is the grant's Raft index (package pgfence checks it in
//     PostgreSQL). Elections ([Client.Elections]; shorthands [Client.Elect],
//     [Client.Resign], [Client.Leader], [Client.Observe]) and the fleet job
//     scheduler ([Client.Scheduler]: each run of a declared job claimed by
//     exactly one live instance). See docs/coordination.md.
//   - Integrations: [RoundTripper] and [UnaryClientInterceptor] put an HTTP
//     client or a gRPC connection behind a breaker.
//
// # Observability
//
// [Client.Stats] returns what this process counted: by name, protected
// calls by outcome with their attempts and durations, retries, and
// breaker rejections (what Baldur's baldur_protect_*, baldur_retry_* and
// baldur_circuit_breaker_* series count), plus the link to the cluster.
// Counting costs two atomic adds per histogram; nothing is registered
// anywhere. The optional module github.com/baldurhq/baldurd/sdk/go/baldurprom
// exports it to Prometheus under Baldur's names.
//
// # Module
//
// The SDK is its own Go module, github.com/baldurhq/baldurd/sdk/go, that
// requires the generated API module (github.com/baldurhq/baldurd/api), gRPC
// and protobuf only; an application that imports it gets none of the
// server's dependencies (TestExternalModuleTidiesAndBuilds).
package baldur
