package server

import (
	"github.com/baldurhq/baldurd/audit"
	"github.com/baldurhq/baldurd/canary"
	"github.com/baldurhq/baldurd/circuit"
	"github.com/baldurhq/baldurd/config"
	"github.com/baldurhq/baldurd/coordination"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/emergency"
	"github.com/baldurhq/baldurd/governance"
	"github.com/baldurhq/baldurd/idempotency"
	"github.com/baldurhq/baldurd/notify"
)

// SchemaVersion is the version of the bbolt layout below. Bump it when a
// bucket's meaning changes; a node refuses a state file or snapshot newer
// than its own version.
//
//	1: the first layout.
//	2: audit_head keeps the audit trail's head; a binary at 1 would append
//	   without moving it, so it must not open a state file written at 2.
//	   Files at 1 are read as they are (the head is found from the newest
//	   record until the first append writes the key).
const SchemaVersion = 2

// CommandVersion is the highest command version this binary applies. The
// leader does not propose a command whose version some voter lacks.
//
//	1: the first commands.
//	2: DLQCommand STORE_BATCH (group commit of stores, proposer_group.go).
//	3: DLQCommand BATCH (group commit of stores and replay completions,
//	   replay leases taken several at a time).
//	4: CircuitCommand DELETE (an admin's delete, the leader's idle sweep).
//	5: MemberPromotion (a non-voter staged for promotion, membership.go);
//	   AuditRetention (records removed behind a signed anchor).
//	6: no new command: the member serves Internal.IngestReports, so the
//	   others send it merged outcome reports (report_merge.go).
//	7: ConfigSet (the runtime configuration, config_service.go) and
//	   CanaryCommand (rollouts, canary_service.go), GovernanceCommand
//	   (system control, system_service.go), NotifyCommand (notifications,
//	   notify_service.go), IdempotencyCommand (idempotency_service.go).
//	8: CommandBatch (group commit of any commands, proposer_group.go);
//	   ConfigSet entry (one named entry of a map section: rate limits,
//	   bulkheads, throttles; admission_service.go).
const CommandVersion = 8

// Buckets owned by the server itself.
var (
	bucketMembers        = []byte("members")          // node id → member JSON
	bucketRequests       = []byte("requests")         // request id → revision (8 bytes BE)
	bucketRequestsByTime = []byte("requests_by_time") // unix nanos (8 bytes BE) + request id → nil
)

// schemaBuckets is every bucket in state.db (raftstore adds its own _meta).
func schemaBuckets() [][]byte {
	b := append([][]byte{bucketMembers, bucketRequests, bucketRequestsByTime}, audit.Buckets()...)
	b = append(b, circuit.Buckets()...)
	b = append(b, coordination.Buckets()...)
	b = append(b, dlq.Buckets()...)
	b = append(b, config.Buckets()...)
	b = append(b, canary.Buckets()...)
	b = append(b, governance.Buckets()...)
	b = append(b, notify.Buckets()...)
	b = append(b, idempotency.Buckets()...)
	return append(b, emergency.Buckets()...)
}
