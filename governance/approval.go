package governance

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
)

// Approval states.
const (
	Pending  = "PENDING"
	Approved = "APPROVED" // being carried out by the leader
	Executed = "EXECUTED"
	Failed   = "FAILED" // carried out, and refused
	Rejected = "REJECTED"
	Expired  = "EXPIRED"
)

// ApprovalTTL is how long a request waits for a decision;
// ApprovalRetention how long a decided one is kept.
const (
	ApprovalTTL       = 24 * time.Hour
	ApprovalRetention = 7 * 24 * time.Hour
	// MaxPending bounds the change requests waiting at once.
	MaxPending = 1000
)

// ended is when a decided request last changed (zero while it is pending
// or being carried out).
func (a Approval) ended() time.Time {
	switch a.State {
	case Pending, Approved:
		return time.Time{}
	case Expired:
		return a.ExpiresAt
	}
	if a.ExecutedAt.After(a.DecidedAt) {
		return a.ExecutedAt
	}
	return a.DecidedAt
}

// Operations that dual control can hold, with Baldur's defaults.
var (
	Operations = []string{"dlq.purge", "cluster.remove_member", "cluster.restore_snapshot", "system.disable", "emergency.force_release", "canary.start", "canary.promote"}
	// DefaultApproval is what needs a second person always; StrictApproval
	// what needs one in STRICT mode too.
	DefaultApproval = []string{"dlq.purge", "cluster.remove_member", "cluster.restore_snapshot", "system.disable", "emergency.force_release"}
	StrictApproval  = []string{"canary.start", "canary.promote"}
)

// Approval is one change request: the operation, the request as the API
// received it (Request, the method's protobuf), who asked, and what became
// of it.
type Approval struct {
	ID             string    `json:"id"`
	Operation      string    `json:"operation"`
	Method         string    `json:"method"`
	Request        []byte    `json:"request"`
	Summary        string    `json:"summary"`
	RequestedBy    string    `json:"requested_by"`
	RequesterRole  int32     `json:"requester_role"`
	Reason         string    `json:"reason,omitempty"`
	State          string    `json:"state"`
	RequestedAt    time.Time `json:"requested_at"`
	ExpiresAt      time.Time `json:"expires_at"`
	DecidedBy      string    `json:"decided_by,omitempty"`
	DecisionReason string    `json:"decision_reason,omitempty"`
	DecidedAt      time.Time `json:"decided_at"`
	Result         string    `json:"result,omitempty"`
	ExecutedAt     time.Time `json:"executed_at"`
	Revision       uint64    `json:"revision"`
}

// Errors.
var (
	ErrApprovalNotFound = errors.New("governance: approval not found")
	// ErrSelfApproval is a requester deciding on their own request.
	ErrSelfApproval = errors.New("governance: a request cannot be approved by the identity that made it")
)

// DecidedError is a decision on a request no longer pending.
type DecidedError struct{ ID, State string }

func (e *DecidedError) Error() string {
	return fmt.Sprintf("governance: approval %s is %s, not PENDING", e.ID, e.State)
}

// BucketApprovals holds the change requests (id → Approval JSON).
var BucketApprovals = []byte("governance_approvals")

// GetApproval returns a change request.
func GetApproval(kv fsm.KV, id string) (Approval, bool) {
	v := kv.Get(BucketApprovals, []byte(id))
	if v == nil {
		return Approval{}, false
	}
	var a Approval
	if err := json.Unmarshal(v, &a); err != nil {
		panic(fmt.Sprintf("governance: decode approval %s: %v", id, err))
	}
	return a, true
}

// ListApprovals returns every change request kept, by id.
func ListApprovals(kv fsm.KV) []Approval {
	var out []Approval
	kv.Scan(BucketApprovals, nil, false, func(_, v []byte) bool {
		var a Approval
		if err := json.Unmarshal(v, &a); err != nil {
			panic(fmt.Sprintf("governance: decode approval: %v", err))
		}
		out = append(out, a)
		return true
	})
	return out
}

// ApprovalResult is what an approval change did.
type ApprovalResult struct {
	fsm.Change
	Approval Approval
}

// Applied is r in the dispatcher's vocabulary.
func (r ApprovalResult) Applied() fsm.Applied {
	c := r.Change
	c.Action, c.Target = "governance."+c.Action, "approval/"+r.Approval.ID
	return fsm.Applied{Change: c, Value: r}
}

func putApproval(kv fsm.KV, a Approval) {
	b, _ := json.Marshal(a)
	kv.Put(BucketApprovals, []byte(a.ID), b)
}

// ApplyApproval applies one change-request command: creation (PENDING,
// expiring after ApprovalTTL), a decision (never by the requester, only on
// a PENDING request), the leader's expiry, and the outcome of carrying an
// approved request out.
func ApplyApproval(kv fsm.KV, m fsm.Meta, c *raftv1.GovernanceCommand) (ApprovalResult, error) {
	if c.GetOp() == raftv1.GovernanceCommand_APPROVAL_CREATE {
		var a Approval
		if err := json.Unmarshal(c.GetApprovalJson(), &a); err != nil || a.ID == "" || a.Method == "" {
			return ApprovalResult{}, invalid("approval", "INVALID_ARGUMENT", "is not a change request")
		}
		if _, exists := GetApproval(kv, a.ID); exists {
			return ApprovalResult{}, invalid("approval", "INVALID_ARGUMENT", fmt.Sprintf("approval %s exists", a.ID))
		}
		pending := 0
		for _, p := range ListApprovals(kv) {
			if p.State == Pending {
				pending++
			}
		}
		if pending >= MaxPending {
			return ApprovalResult{}, invalid("approval", "LIMIT_REACHED", fmt.Sprintf("%d change requests are pending, as many as the cluster keeps: decide some first", pending))
		}
		a.State, a.RequestedBy, a.Reason, a.RequestedAt, a.ExpiresAt, a.Revision = Pending, m.Actor, m.Reason, m.Time, m.Time.Add(ApprovalTTL), m.Index
		putApproval(kv, a)
		return ApprovalResult{Change: fsm.Change{Changed: true, Action: "approval_requested", After: a}, Approval: a}, nil
	}
	cur, ok := GetApproval(kv, c.GetApprovalId())
	if !ok {
		if c.GetOp() == raftv1.GovernanceCommand_APPROVAL_DECIDE {
			return ApprovalResult{}, fmt.Errorf("%w: %q", ErrApprovalNotFound, c.GetApprovalId())
		}
		return ApprovalResult{}, nil
	}
	next := cur
	action := ""
	switch c.GetOp() {
	case raftv1.GovernanceCommand_APPROVAL_DECIDE:
		if cur.State != Pending {
			return ApprovalResult{}, &DecidedError{ID: cur.ID, State: cur.State}
		}
		if !m.Time.Before(cur.ExpiresAt) {
			return ApprovalResult{}, &DecidedError{ID: cur.ID, State: Expired}
		}
		if m.Actor == cur.RequestedBy {
			return ApprovalResult{}, ErrSelfApproval
		}
		next.DecidedBy, next.DecisionReason, next.DecidedAt = m.Actor, m.Reason, m.Time
		if c.GetApprove() {
			next.State, action = Approved, "approval_approved"
		} else {
			next.State, action = Rejected, "approval_rejected"
		}
	case raftv1.GovernanceCommand_APPROVAL_EXPIRE:
		if end := cur.ended(); !end.IsZero() && m.Time.Sub(end) >= ApprovalRetention {
			kv.Delete(BucketApprovals, []byte(cur.ID)) // decided a week ago: forgotten
			return ApprovalResult{Approval: cur}, nil
		}
		if cur.State != Pending || m.Time.Before(cur.ExpiresAt) {
			return ApprovalResult{Approval: cur}, nil
		}
		next.State, action = Expired, "approval_expired"
	case raftv1.GovernanceCommand_APPROVAL_DONE:
		if cur.State != Approved {
			return ApprovalResult{Approval: cur}, nil // carried out already
		}
		next.State, next.Result, next.ExecutedAt, action = Executed, c.GetResult(), m.Time, "approval_executed"
		if c.GetFailed() {
			next.State, action = Failed, "approval_failed"
		}
	default:
		return ApprovalResult{}, invalid("op", "INVALID_ARGUMENT", fmt.Sprintf("unknown governance op %v", c.GetOp()))
	}
	next.Revision = m.Index
	putApproval(kv, next)
	return ApprovalResult{Change: fsm.Change{Changed: true, Action: action, Before: cur, After: next}, Approval: next}, nil
}

// ApprovalProposals are the change requests' steps due at now: expiry of
// those still pending after 24h, and removal of decided ones after a week.
func ApprovalProposals(kv fsm.KV, now time.Time) []*raftv1.Command {
	var out []*raftv1.Command
	for _, a := range ListApprovals(kv) {
		switch end := a.ended(); {
		case a.State == Pending && !now.Before(a.ExpiresAt):
			out = append(out, command("change request expired after 24h", &raftv1.GovernanceCommand{Op: raftv1.GovernanceCommand_APPROVAL_EXPIRE, ApprovalId: a.ID}))
		case !end.IsZero() && now.Sub(end) >= ApprovalRetention:
			out = append(out, command("decided change request kept a week", &raftv1.GovernanceCommand{Op: raftv1.GovernanceCommand_APPROVAL_EXPIRE, ApprovalId: a.ID}))
		}
	}
	return out
}
