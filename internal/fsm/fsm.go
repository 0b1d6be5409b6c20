// Package fsm is the state-machine vocabulary every domain speaks: the
// key-value view of the replicated state a command is applied to (KV), the
// context the leader stamps into a command (Meta), what a change function did
// (Change), what the dispatcher hands back for an applied command (Applied)
// and the error for invalid input (ArgumentError). It is a leaf: it imports
// the standard library only; every domain and the server's dispatch table
// meet here, and raftstore.KV satisfies KV without importing it.
package fsm

import "time"

// KV is the storage a domain applies commands to: named buckets of ordered
// keys. raftstore.KV implements it over one bbolt transaction.
type KV interface {
	Get(bucket, key []byte) []byte
	Put(bucket, key, value []byte)
	Delete(bucket, key []byte)
	// Scan calls fn for each key of bucket from start (nil: the first, or
	// with reverse the last) in order until fn returns false.
	Scan(bucket, start []byte, reverse bool, fn func(key, value []byte) bool)
}

// Meta is the context the leader stamped into a command: the log index it
// applies at (the revision), the leader's clock when it was proposed, the
// authenticated actor and the caller's reason.
type Meta struct {
	Index  uint64
	Time   time.Time
	Actor  string
	Reason string
}

// Change is what a change function did, in the form the audit trail needs.
// Changed is false for a no-op (nothing was written and nothing is
// audited). Action is the verb ("trip"; qualified with the domain in
// Applied), Target names what changed ("lease/billing"); Before and After
// are the audited documents. Actor, when set, is who the change is audited
// for instead of the command's actor (a store inside a batch).
type Change struct {
	Changed bool
	Action  string
	Target  string
	Actor   string
	// Reason is a batch item's own reason; "" is the command's.
	Reason string
	Before any
	After  any
}

// Applied is what the dispatcher hands back for one applied command: its
// change (Action qualified with the domain, "circuit.trip"; Target
// "circuit/payments"), the domain's own result for the proposer in Value (a
// lease, a stored entry, a probe grant), and, for a command that stands for
// several callers (a DLQ STORE_BATCH), each caller's change in Batch, audited
// one by one instead of Change.
type Applied struct {
	Change
	Value any
	Batch []Change
}

// ArgumentError is invalid input. Domain prefixes the message (the server's
// own checks leave it empty). FieldName names the request field at
// fault and Code is a stable upper-snake reason (INVALID_ARGUMENT,
// NAME_TOO_LONG, …); the server maps it to a BadRequest naming the field.
type ArgumentError struct {
	Domain    string
	FieldName string
	Code      string
	Msg       string
}

func (e *ArgumentError) Error() string {
	if e.Domain == "" {
		return e.FieldName + ": " + e.Msg
	}
	return e.Domain + ": " + e.FieldName + ": " + e.Msg
}

// Field is the request field at fault.
func (e *ArgumentError) Field() string { return e.FieldName }

// Reason is the stable upper-snake reason.
func (e *ArgumentError) Reason() string { return e.Code }
