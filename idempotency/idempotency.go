package idempotency

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
)

// Statuses.
const (
	Executing = "executing"
	Completed = "completed"
	Failed    = "failed"
)

// Decisions.
const (
	Continue = "CONTINUE"
	Skip     = "SKIP"
	Abort    = "ABORT"
)

// Defaults and limits (Baldur §6.3).
const (
	DefaultExecutionTTL = 1800 * time.Second
	DefaultMemoryTTL    = 1800 * time.Second
	ClockSkew           = 5 * time.Second
	MaxTTL              = 7 * 24 * time.Hour
	MaxKey              = 256
	MaxResult           = 4096
	MaxError            = 1024
)

var keyPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,256}$`)

// Record is one key's state.
type Record struct {
	Key          string          `json:"key"`
	Status       string          `json:"status"`
	Token        uint64          `json:"token"` // the acquire's index: Complete and Fail must name it
	StartedAt    time.Time       `json:"started_at"`
	UpdatedAt    time.Time       `json:"updated_at"`
	RetryCount   int             `json:"retry_count"`
	ExecutionTTL time.Duration   `json:"execution_ttl"`
	MemoryTTL    time.Duration   `json:"memory_ttl"`
	ExpiresAt    time.Time       `json:"expires_at"`
	Result       json.RawMessage `json:"result,omitempty"`
	Error        string          `json:"error,omitempty"`
	Actor        string          `json:"actor,omitempty"`
}

// Buckets.
var (
	BucketRecords = []byte("idempotency")        // key → Record JSON
	BucketExpiry  = []byte("idempotency_expiry") // expires_at (8 bytes BE unix nanos) + key → nil
)

// Buckets lists this domain's buckets.
func Buckets() [][]byte { return [][]byte{BucketRecords, BucketExpiry} }

// Errors.
var (
	ErrNotFound = errors.New("idempotency: no record for the key")
)

// TokenError is a Complete or Fail by a caller that no longer holds the
// execution (another racer took it over, or it ended).
type TokenError struct {
	Key    string
	Status string
}

func (e *TokenError) Error() string {
	return fmt.Sprintf("idempotency: key %q is %s under another token: this execution no longer holds it", e.Key, e.Status)
}

func invalid(field, msg string) error {
	return &fsm.ArgumentError{Domain: "idempotency", FieldName: field, Code: "INVALID_ARGUMENT", Msg: msg}
}

// CheckKey validates a key.
func CheckKey(key string) error {
	if !keyPattern.MatchString(key) {
		return invalid("key", fmt.Sprintf("%q: 1..%d of letters, digits, '.', '_', ':', '-'", key, MaxKey))
	}
	return nil
}

// CheckTTL validates a window (0: the default).
func CheckTTL(field string, d time.Duration) error {
	if d < 0 || d > MaxTTL {
		return invalid(field, fmt.Sprintf("%v is outside 0 (the default)..%v", d, MaxTTL))
	}
	return nil
}

// Get returns a key's record.
func Get(kv fsm.KV, key string) (Record, bool) {
	v := kv.Get(BucketRecords, []byte(key))
	if v == nil {
		return Record{}, false
	}
	var r Record
	if err := json.Unmarshal(v, &r); err != nil {
		panic(fmt.Sprintf("idempotency: decode %s: %v", key, err))
	}
	return r, true
}

func expiryKey(at time.Time, key string) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(at.UnixNano())), key...)
}

func put(kv fsm.KV, old *Record, r Record) {
	if old != nil && !old.ExpiresAt.IsZero() {
		kv.Delete(BucketExpiry, expiryKey(old.ExpiresAt, old.Key))
	}
	b, _ := json.Marshal(r)
	kv.Put(BucketRecords, []byte(r.Key), b)
	kv.Put(BucketExpiry, expiryKey(r.ExpiresAt, r.Key), nil)
}

// Result is what a command did.
type Result struct {
	fsm.Change
	Decision string
	Record   Record
}

// Applied is r in the dispatcher's vocabulary (gate decisions are not
// audited: they are traffic, not operator actions).
func (r Result) Applied() fsm.Applied { return fsm.Applied{Value: r} }

// stale reports whether an executing record's window (plus the clock-skew
// tolerance) has passed at now.
func (r Record) stale(now time.Time) bool {
	return now.Sub(r.StartedAt) >= r.ExecutionTTL+ClockSkew
}

// Live reports whether a stored record still counts at now: an outcome
// is forgotten after its memory window; an execution is never forgotten
// while it runs (it is taken over when stale, and removed by expiry).
func Live(r Record, now time.Time) bool {
	return r.Status == Executing || now.Before(r.ExpiresAt)
}

// Windows fills the defaults of an acquire's windows (0: the default).
func Windows(execTTL, memTTL time.Duration) (time.Duration, time.Duration) {
	if execTTL <= 0 {
		execTTL = DefaultExecutionTTL
	}
	if memTTL <= 0 {
		memTTL = DefaultMemoryTTL
	}
	return execTTL, memTTL
}

// Acquire decides an acquire of key at now against the current record
// (cur is nil when there is none, or it is no longer live): the decision
// and, for CONTINUE, the record to store under token. This is the gate of
// §6.3; every store decides with it.
func Acquire(cur *Record, key string, token uint64, now time.Time, execTTL, memTTL time.Duration, actor string) (string, Record) {
	execTTL, memTTL = Windows(execTTL, memTTL)
	next := Record{Key: key, Status: Executing, Token: token, StartedAt: now, UpdatedAt: now, ExecutionTTL: execTTL,
		MemoryTTL: memTTL, ExpiresAt: now.Add(execTTL + ClockSkew + memTTL), Actor: actor}
	if cur != nil {
		switch {
		case cur.Status == Completed:
			return Skip, *cur
		case cur.Status == Executing && !cur.stale(now):
			return Abort, *cur
		}
		// Failed, or executing past its window: this racer takes over.
		next.RetryCount = cur.RetryCount + 1
	}
	return Continue, next
}

// Finish decides a complete (failMsg nil) or a fail of the execution
// token names: a compare-and-set from executing. cur is nil when there is
// no live record.
func Finish(cur *Record, key string, token uint64, now time.Time, result json.RawMessage, failMsg *string) (Record, error) {
	if cur == nil {
		return Record{}, fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	if cur.Status != Executing || cur.Token != token {
		return Record{}, &TokenError{Key: cur.Key, Status: cur.Status}
	}
	next := *cur
	next.UpdatedAt, next.ExpiresAt = now, now.Add(cur.MemoryTTL)
	if failMsg == nil {
		if len(result) > MaxResult || (len(result) > 0 && !json.Valid(result)) {
			return Record{}, invalid("result", fmt.Sprintf("must be JSON of at most %d bytes", MaxResult))
		}
		next.Status, next.Result = Completed, result
	} else {
		if len(*failMsg) > MaxError {
			return Record{}, invalid("error", fmt.Sprintf("at most %d bytes", MaxError))
		}
		next.Status, next.Error = Failed, *failMsg
	}
	return next, nil
}

// Apply applies one gate command to the replicated state.
func Apply(kv fsm.KV, m fsm.Meta, c *raftv1.IdempotencyCommand) (Result, error) {
	if err := CheckKey(c.GetKey()); err != nil {
		return Result{}, err
	}
	stored, exists := Get(kv, c.GetKey())
	var cur *Record
	if exists && Live(stored, m.Time) {
		cur = &stored
	}
	switch c.GetOp() {
	case raftv1.IdempotencyCommand_ACQUIRE:
		decision, next := Acquire(cur, c.GetKey(), m.Index, m.Time, time.Duration(c.GetExecutionTtlNanos()), time.Duration(c.GetMemoryTtlNanos()), m.Actor)
		if decision != Continue {
			return Result{Decision: decision, Record: next}, nil
		}
		put(kv, existing(stored, exists), next)
		return Result{Decision: Continue, Record: next}, nil
	case raftv1.IdempotencyCommand_COMPLETE, raftv1.IdempotencyCommand_FAIL:
		var failMsg *string
		if c.GetOp() == raftv1.IdempotencyCommand_FAIL {
			msg := c.GetError()
			failMsg = &msg
		}
		next, err := Finish(cur, c.GetKey(), c.GetToken(), m.Time, c.GetResultJson(), failMsg)
		if err != nil {
			return Result{}, err
		}
		put(kv, &stored, next)
		return Result{Record: next}, nil
	case raftv1.IdempotencyCommand_EXPIRE:
		if exists && !m.Time.Before(stored.ExpiresAt) {
			kv.Delete(BucketRecords, []byte(stored.Key))
			kv.Delete(BucketExpiry, expiryKey(stored.ExpiresAt, stored.Key))
		}
		return Result{}, nil
	}
	return Result{}, invalid("op", fmt.Sprintf("unknown idempotency op %v", c.GetOp()))
}

func existing(r Record, ok bool) *Record {
	if !ok {
		return nil
	}
	return &r
}

// Proposals are the records past their memory window at now (completed and
// failed ones; an executing one is forgotten after its window, the skew
// tolerance and the memory window), at most limit.
func Proposals(kv fsm.KV, now time.Time) []*raftv1.Command {
	var out []*raftv1.Command
	cut := uint64(now.UnixNano())
	kv.Scan(BucketExpiry, nil, false, func(k, _ []byte) bool {
		if len(k) < 8 || binary.BigEndian.Uint64(k[:8]) > cut || len(out) >= 500 {
			return false
		}
		out = append(out, &raftv1.Command{Reason: "idempotency record past its window", Version: 7,
			Body: &raftv1.Command_Idempotency{Idempotency: &raftv1.IdempotencyCommand{Op: raftv1.IdempotencyCommand_EXPIRE, Key: string(k[8:])}}})
		return true
	})
	return out
}
