package coordination

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
)

// Buckets.
var (
	BucketResources = []byte("coord_resources") // resource name → Resource JSON
	BucketJobs      = []byte("coord_jobs")      // resource + "\x00" + job → Job JSON
)

// Buckets lists this package's buckets for the schema.
func Buckets() [][]byte { return [][]byte{BucketResources, BucketJobs} }

// Limits.
const (
	MinTTL          = 5 * time.Second
	MaxTTL          = 300 * time.Second
	DefaultTTL      = 30 * time.Second
	MaxLockDelay    = 60 * time.Second
	MaxHolderLength = 128
	DefaultPriority = 100
	MaxPriority     = 1000
	MinJobInterval  = time.Second
	MaxJobInterval  = 31 * 24 * time.Hour
)

// Lease is a grant of a resource.
type Lease struct {
	ID           uint64        `json:"id"`
	Name         string        `json:"name"`
	Holder       string        `json:"holder"`
	FencingToken uint64        `json:"fencing_token"`
	TTL          time.Duration `json:"ttl"`
	GrantedAt    time.Time     `json:"granted_at"`
	ExpiresAt    time.Time     `json:"expires_at"`
	Priority     int           `json:"priority,omitempty"`
	// Owner is the authenticated identity that acquired the lease; only
	// it may release the lease (an operator's force aside).
	Owner string `json:"owner,omitempty"`
}

// Candidate waits in an election.
type Candidate struct {
	Holder    string    `json:"holder"`
	Priority  int       `json:"priority"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Resource is a lease's or election's replicated record.
type Resource struct {
	Name           string        `json:"name"`
	Lease          *Lease        `json:"lease,omitempty"`
	LockDelay      time.Duration `json:"lock_delay,omitempty"`
	LockDelayUntil time.Time     `json:"lock_delay_until"`
	Candidates     []Candidate   `json:"candidates,omitempty"`
	Revision       uint64        `json:"revision"`
}

// Held reports the lease in force at now, or nil.
func (r Resource) Held(now time.Time) *Lease {
	if r.Lease != nil && now.Before(r.Lease.ExpiresAt) {
		return r.Lease
	}
	return nil
}

// Job is a scheduled job of a scheduler resource.
type Job struct {
	Resource         string        `json:"resource"`
	Name             string        `json:"name"`
	Interval         time.Duration `json:"interval,omitempty"`
	Cron             string        `json:"cron,omitempty"`
	Enabled          bool          `json:"enabled"`
	CatchUp          bool          `json:"catch_up,omitempty"`
	NextRunAt        time.Time     `json:"next_run_at"`
	LastRunAt        time.Time     `json:"last_run_at"`
	LastScheduledAt  time.Time     `json:"last_scheduled_at"`
	RunCount         uint64        `json:"run_count"`
	ErrorCount       uint64        `json:"error_count"`
	SkippedRuns      uint64        `json:"skipped_runs"`
	LastError        string        `json:"last_error,omitempty"`
	LastDuration     time.Duration `json:"last_duration"`
	LastFencingToken uint64        `json:"last_fencing_token,omitempty"`
	Running          bool          `json:"running,omitempty"`
	Revision         uint64        `json:"revision"`
}

// Result describes what a change did. Lease is the grant (ACQUIRE,
// KEEPALIVE, CAMPAIGN); Started reports a claimed job run.
type Result struct {
	fsm.Change
	Lease   *Lease
	Started bool
}

// Applied is r in the dispatcher's vocabulary: the action qualified with
// the domain.
func (r Result) Applied() fsm.Applied {
	c := r.Change
	c.Action = "coordination." + c.Action
	return fsm.Applied{Change: c, Value: r}
}

// Errors.
var (
	ErrNotFound    = errors.New("coordination: no such lease")
	ErrNotHolder   = errors.New("coordination: not the holder of the lease")
	ErrJobNotFound = errors.New("coordination: no such job")
	ErrStaleToken  = errors.New("coordination: fencing token is not the current holder's")
	ErrNotDue      = errors.New("coordination: the job's next run is not due")
)

// HeldError is a resource held by someone else.
type HeldError struct {
	Holder    string
	ExpiresAt time.Time
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("coordination: held by %q until %s", e.Holder, e.ExpiresAt.Format(time.RFC3339Nano))
}

// LockDelayError is a lapsed resource still inside its lock-delay.
type LockDelayError struct{ Until time.Time }

func (e *LockDelayError) Error() string {
	return fmt.Sprintf("coordination: resource in lock-delay until %s", e.Until.Format(time.RFC3339Nano))
}

// LostError is a keepalive of a lease that lapsed, was revoked or never existed.
type LostError struct{ Why string }

func (e *LostError) Error() string { return "coordination: lease lost: " + e.Why }

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$`)

// CheckName validates a resource or job name.
func CheckName(field, name string) error {
	if !namePattern.MatchString(name) {
		return &fsm.ArgumentError{Domain: "coordination", FieldName: field, Code: "INVALID_NAME", Msg: fmt.Sprintf("%q is not a name (letters, digits, '.', '_', ':', '/', '-'; at most 128)", name)}
	}
	return nil
}

// CheckHolder validates a holder identity.
func CheckHolder(holder string) error {
	if strings.TrimSpace(holder) == "" || len(holder) > MaxHolderLength {
		return &fsm.ArgumentError{Domain: "coordination", FieldName: "holder", Code: "INVALID_HOLDER", Msg: fmt.Sprintf("is required, at most %d bytes", MaxHolderLength)}
	}
	return nil
}

// CheckTTL validates a lease TTL; zero means the default.
func CheckTTL(ttl time.Duration) (time.Duration, error) {
	if ttl == 0 {
		return DefaultTTL, nil
	}
	if ttl < MinTTL || ttl > MaxTTL {
		return 0, &fsm.ArgumentError{Domain: "coordination", FieldName: "ttl", Code: "TTL_OUT_OF_RANGE", Msg: fmt.Sprintf("%v is outside %v..%v", ttl, MinTTL, MaxTTL)}
	}
	return ttl, nil
}

// CheckLockDelay validates a lock-delay.
func CheckLockDelay(d time.Duration) error {
	if d < 0 || d > MaxLockDelay {
		return &fsm.ArgumentError{Domain: "coordination", FieldName: "lock_delay", Code: "INVALID_ARGUMENT", Msg: fmt.Sprintf("%v is outside 0..%v", d, MaxLockDelay)}
	}
	return nil
}

// CheckPriority validates an election priority; zero means the default.
func CheckPriority(p int) (int, error) {
	if p == 0 {
		return DefaultPriority, nil
	}
	if p < 0 || p > MaxPriority {
		return 0, &fsm.ArgumentError{Domain: "coordination", FieldName: "priority", Code: "INVALID_ARGUMENT", Msg: fmt.Sprintf("%d is outside 0..%d", p, MaxPriority)}
	}
	return p, nil
}

func marshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("coordination: encode %T: %v", v, err))
	}
	return b
}

// Commands use the raft proto; alias for readers of this package.
type Command = raftv1.CoordinationCommand
