package dlq

// The lifecycle rules of an entry — which operation may move it from which
// status, what each one changes — shared by both stores: the replicated
// state applies them in Apply (layout.go), PostgreSQL inside a row lock.

import (
	"fmt"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
)

// Transition computes what op c does to entry e at m.Time: the next entry
// and the action name, "" for a no-op (a late timer), or an error. Both
// stores (Raft and PostgreSQL) apply entries through it.
func Transition(e Entry, m fsm.Meta, c *raftv1.DLQCommand) (Entry, string, error) {
	if err := Check(e, c.GetOp(), c.GetWorker()); err != nil {
		return e, "", err
	}
	action := ""
	switch c.GetOp() {
	case raftv1.DLQCommand_ACQUIRE:
		e.Status, e.RetryCount, e.LastRetryAt = Replaying, e.RetryCount+1, m.Time
		if e.ReplayOrigin == "" {
			e.ReplayOrigin = OriginAutomatic
		}
		e.ReplayWorker, e.ReplayLeaseUntil = c.GetWorker(), m.Time.Add(time.Duration(c.GetLeaseNanos()))
		action = "replay_started"
	case raftv1.DLQCommand_COMPLETE:
		e.ReplayWorker, e.ReplayLeaseUntil = "", time.Time{}
		switch {
		case c.GetSuccess():
			e.Status, e.ResolvedAt, e.ResolvedBy = Resolved, m.Time, m.Actor
			e.ResolutionType = orDefault(c.GetResolutionType(), orDefault(e.ReplayOrigin, OriginAutomatic)+"_replay")
			action = "replay_succeeded"
		case e.RetryCount >= e.MaxRetries:
			e.Status, e.ResolutionNote = RequiresReview, truncString(c.GetNote(), 1000)
			action = "replay_exhausted"
		default:
			e.Status, e.ResolutionNote = Pending, truncString(c.GetNote(), 1000)
			e.ReplayOrigin = "" // the next attempt is whatever starts it
			action = "replay_failed"
		}
	case raftv1.DLQCommand_RESOLVE:
		e.Status, e.ResolvedAt, e.ResolvedBy, e.ResolutionType, e.ResolutionNote = Resolved, m.Time, m.Actor, "manual", truncString(c.GetNote(), 1000)
		action = "resolved"
	case raftv1.DLQCommand_REDRIVE, raftv1.DLQCommand_REPLAY:
		if c.GetOp() == raftv1.DLQCommand_REDRIVE {
			if e.Metadata == nil {
				e.Metadata = map[string]string{}
			}
			prev := atoi(e.Metadata["previous_total_retries"]) + e.RetryCount
			e.Metadata["previous_total_retries"] = fmt.Sprint(prev)
			e.Metadata["force_redrive_count"] = fmt.Sprint(atoi(e.Metadata["force_redrive_count"]) + 1)
			e.RetryCount = 0
			action = "force_redrive"
		} else {
			action = "replay_requested"
		}
		e.Status = Pending
		e.ReplayOrigin = orDefault(c.GetResolutionType(), OriginManual)
	case raftv1.DLQCommand_RELEASE_STALE:
		if e.Status != Replaying || m.Time.Before(e.ReplayLeaseUntil) || uint64(e.ReplayLeaseUntil.UnixNano()) != c.GetReplayLeaseUntilUnixNano() {
			return e, "", nil
		}
		e.ReplayWorker, e.ReplayLeaseUntil = "", time.Time{}
		e.Status = Pending
		if e.RetryCount >= e.MaxRetries {
			e.Status = RequiresReview
		}
		e.ResolutionNote = "replay lease expired (worker gone)"
		action = "replay_lease_expired"
	case raftv1.DLQCommand_EXPIRE:
		if e.Status != Pending || m.Time.Before(e.ExpiresAt) {
			return e, "", nil
		}
		e.Status, e.ResolutionType = Expired, "ttl_expired"
		action = "expired"
	case raftv1.DLQCommand_ARCHIVE:
		if e.Status != Resolved || m.Time.Sub(e.ResolvedAt) < time.Duration(c.GetOlderThanNanos()) {
			return e, "", nil
		}
		e.Status = Archived
		action = "archived"
	default:
		return e, "", &fsm.ArgumentError{Domain: "dlq", FieldName: "op", Code: "INVALID_ARGUMENT", Msg: fmt.Sprintf("unknown dlq op %v", c.GetOp())}
	}
	e.UpdatedAt, e.Revision = m.Time, m.Index
	return e, action, nil
}

// Check reports why op cannot be applied to e now (by worker, for replay
// completions). The FSM and the server's pre-check both use it.
func Check(e Entry, op raftv1.DLQCommand_Op, worker string) error {
	conflict := func(want string) error { return &ConflictError{ID: e.ID, Current: e.Status, Want: want} }
	switch op {
	case raftv1.DLQCommand_ACQUIRE:
		if e.Status != Pending {
			return conflict("only PENDING entries can be replayed")
		}
		if e.RetryCount >= e.MaxRetries {
			return conflict(fmt.Sprintf("replay budget spent (%d of %d); force-redrive it", e.RetryCount, e.MaxRetries))
		}
	case raftv1.DLQCommand_COMPLETE:
		if e.Status != Replaying || e.ReplayWorker != worker {
			return conflict("the replay lease is not this worker's (it expired and the entry moved on)")
		}
	case raftv1.DLQCommand_RESOLVE:
		if e.Status == Resolved || e.Status == Archived || e.Status == Replaying {
			return conflict("resolve needs an entry that is not resolved, archived or being replayed")
		}
	case raftv1.DLQCommand_REDRIVE:
		if e.Status != RequiresReview && e.Status != Pending && e.Status != Expired {
			return conflict("redrive needs REQUIRES_REVIEW, PENDING or EXPIRED")
		}
	case raftv1.DLQCommand_REPLAY:
		if e.Status != RequiresReview && e.Status != Pending && e.Status != Expired {
			return conflict("replay needs REQUIRES_REVIEW, PENDING or EXPIRED")
		}
		if e.RetryCount >= e.MaxRetries {
			return conflict("replay budget spent; force-redrive it")
		}
	}
	return nil
}

// Summary is what the audit trail keeps of an entry (no payloads). Its
// fields are in name order, so it encodes as the map it replaced did.
type Summary struct {
	Domain       string `json:"domain"`
	FailureType  string `json:"failure_type"`
	ID           string `json:"id"`
	RetryCount   int    `json:"retry_count"`
	Status       Status `json:"status"`
	ReplayOrigin string `json:"replay_origin,omitempty"`
}

// Replay origins (Entry.ReplayOrigin).
const (
	OriginManual    = "manual"
	OriginBatch     = "batch"
	OriginAutomatic = "automatic"
)

func summary(e Entry) Summary {
	return Summary{ID: e.ID, Domain: e.Domain, FailureType: e.FailureType, Status: e.Status, RetryCount: e.RetryCount, ReplayOrigin: e.ReplayOrigin}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func atoi(s string) int {
	n := 0
	fmt.Sscan(s, &n)
	return n
}
