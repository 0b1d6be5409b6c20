package canary

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
)

// Buckets.
var (
	BucketRollouts = []byte("canary_rollouts") // id → Rollout JSON
	BucketActive   = []byte("canary_active")   // section → id of the rollout holding it
	BucketHistory  = []byte("canary_history")  // seq (8 bytes BE) → Transition JSON
	BucketMeta     = []byte("canary_meta")     // "seq" → last history seq
	keySeq         = []byte("seq")
	keyRevision    = []byte("revision")
)

// Revision is the index of the newest rollout change (0: none).
func Revision(kv fsm.KV) uint64 {
	if v := kv.Get(BucketMeta, keyRevision); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func touch(kv fsm.KV, index uint64) {
	kv.Put(BucketMeta, keyRevision, binary.BigEndian.AppendUint64(nil, index))
}

// Buckets lists this domain's buckets.
func Buckets() [][]byte { return [][]byte{BucketRollouts, BucketActive, BucketHistory, BucketMeta} }

// Get returns a rollout.
func Get(kv fsm.KV, id string) (Rollout, bool) {
	v := kv.Get(BucketRollouts, []byte(id))
	if v == nil {
		return Rollout{}, false
	}
	var r Rollout
	if err := json.Unmarshal(v, &r); err != nil {
		panic(fmt.Sprintf("canary: decode rollout %s: %v", id, err))
	}
	return r, true
}

// List returns every rollout, by id.
func List(kv fsm.KV) []Rollout {
	var out []Rollout
	kv.Scan(BucketRollouts, nil, false, func(_, v []byte) bool {
		var r Rollout
		if err := json.Unmarshal(v, &r); err != nil {
			panic(fmt.Sprintf("canary: decode rollout: %v", err))
		}
		out = append(out, r)
		return true
	})
	return out
}

// Holder is the id of the active rollout holding section ("" for none).
func Holder(kv fsm.KV, section string) string { return string(kv.Get(BucketActive, []byte(section))) }

// Active returns the rollouts that hold a section.
func Active(kv fsm.KV) []Rollout {
	var out []Rollout
	kv.Scan(BucketActive, nil, false, func(_, v []byte) bool {
		if r, ok := Get(kv, string(v)); ok {
			out = append(out, r)
		}
		return true
	})
	return out
}

// Transition is one entry of the rollout history.
type Transition struct {
	Seq       uint64    `json:"seq"`
	RolloutID string    `json:"rollout_id"`
	Section   string    `json:"section"`
	From      State     `json:"from"`
	To        State     `json:"to"`
	Stage     int       `json:"stage"`
	Action    string    `json:"action"`
	Actor     string    `json:"actor"`
	Reason    string    `json:"reason,omitempty"`
	Time      time.Time `json:"time"`
	Automatic bool      `json:"automatic,omitempty"`
	Evidence  *Evidence `json:"evidence,omitempty"`
	Revision  uint64    `json:"revision"`
}

// History returns up to limit transitions (of rollout id, or all for "")
// with a sequence below before (0: from the newest), newest first.
func History(kv fsm.KV, id string, before uint64, limit int) []Transition {
	var out []Transition
	var start []byte
	if before > 0 {
		start = binary.BigEndian.AppendUint64(nil, before-1)
	}
	kv.Scan(BucketHistory, start, true, func(_, v []byte) bool {
		var t Transition
		if err := json.Unmarshal(v, &t); err != nil {
			panic(fmt.Sprintf("canary: decode history: %v", err))
		}
		if id == "" || t.RolloutID == id {
			out = append(out, t)
		}
		return len(out) < limit
	})
	return out
}

func appendHistory(kv fsm.KV, t Transition) {
	var seq uint64
	if v := kv.Get(BucketMeta, keySeq); len(v) == 8 {
		seq = binary.BigEndian.Uint64(v)
	}
	seq++
	t.Seq = seq
	kv.Put(BucketMeta, keySeq, binary.BigEndian.AppendUint64(nil, seq))
	kv.Put(BucketHistory, binary.BigEndian.AppendUint64(nil, seq), marshal(t))
	if seq > MaxHistory {
		kv.Delete(BucketHistory, binary.BigEndian.AppendUint64(nil, seq-MaxHistory))
	}
}

// Gate is what the start, promotion and resume gates and the interlock
// read (the dispatcher fills it from the other domains in the same
// transaction; the rule of what blocks is the pre-action gate's,
// governance.Gate).
type Gate struct {
	// Blocked says why the pre-action gate refuses an operator's start,
	// promotion or resume, break glass left aside ("" when it does not).
	Blocked string
	// Level is the global emergency level (0..3), for the interlock.
	Level int
	// BreakGlass: an admin's break glass is engaged; the gates let
	// everything through and the rollout is flagged for review.
	BreakGlass bool
}

func (g Gate) blocked() string { return g.Blocked }

// Result is what Apply did.
type Result struct {
	fsm.Change
	Rollout Rollout
	// Complete: the last stage was promoted; the dispatcher sets the
	// section to the rollout's values in the same transaction.
	Complete bool
}

// Applied is r in the dispatcher's vocabulary.
func (r Result) Applied() fsm.Applied {
	c := r.Change
	c.Action, c.Target = "canary."+c.Action, "rollout/"+r.Rollout.ID
	return fsm.Applied{Change: c, Value: r}
}

func marshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("canary: encode: %v", err))
	}
	return b
}

// Apply applies one rollout command. Operator actions are checked against
// the state (TransitionError, StageConflictError, BlockedError); the
// cluster's own (automatic) ones that no longer fit the state are no-ops.
func Apply(kv fsm.KV, m fsm.Meta, c *raftv1.CanaryCommand, gate Gate) (Result, error) {
	if c.GetOp() == raftv1.CanaryCommand_CREATE {
		return create(kv, m, c)
	}
	cur, ok := Get(kv, c.GetId())
	if !ok {
		if c.GetAutomatic() || c.GetOp() == raftv1.CanaryCommand_PURGE {
			return Result{}, nil
		}
		return Result{}, fmt.Errorf("%w: %q", ErrNotFound, c.GetId())
	}
	if c.GetAutomatic() && c.GetStageStartedUnixNano() != 0 && cur.StageStartedAt.UnixNano() != c.GetStageStartedUnixNano() {
		return Result{Rollout: cur}, nil // judged a stage the rollout has left
	}
	bypass := c.GetBypassReason()
	if bypass != "" && len(bypass) < MinBypassReason {
		return Result{}, invalid("bypass_reason", fmt.Sprintf("is %d characters: a bypass needs at least %d", len(bypass), MinBypassReason))
	}
	refuse := func(action string) (Result, error) {
		if c.GetAutomatic() {
			return Result{Rollout: cur}, nil
		}
		return Result{}, &TransitionError{ID: cur.ID, Action: action, From: cur.State}
	}
	// gated applies the gate to an operator's action; a bypass flags the
	// rollout for review.
	next := cur
	gated := func() error {
		why := gate.blocked()
		if why == "" || c.GetAutomatic() && c.GetOp() != raftv1.CanaryCommand_PROMOTE {
			return nil
		}
		if gate.BreakGlass && !c.GetAutomatic() {
			next.Flagged = true
			return nil
		}
		if c.GetAutomatic() || bypass == "" {
			return &BlockedError{Why: why}
		}
		next.Flagged = true
		return nil
	}
	var ev *Evidence
	if len(c.GetEvidenceJson()) > 0 {
		var e Evidence
		if json.Unmarshal(c.GetEvidenceJson(), &e) == nil {
			ev = &e
			next.Evidence = ev
		}
	}
	action := ""
	complete := false
	switch c.GetOp() {
	case raftv1.CanaryCommand_START:
		if cur.State != Created {
			return refuse("start")
		}
		if err := gated(); err != nil {
			return Result{}, err
		}
		next.State, next.Stage, next.StageStartedAt = Canary, 0, m.Time
		action = "start"
	case raftv1.CanaryCommand_PROMOTE:
		if cur.State != Canary && cur.State != Paused {
			return refuse("promote")
		}
		if c.GetCheckStage() && int(c.GetExpectedStageIndex()) != cur.Stage {
			if c.GetAutomatic() {
				return Result{Rollout: cur}, nil
			}
			return Result{}, &StageConflictError{ID: cur.ID, Expected: int(c.GetExpectedStageIndex()), Current: cur.Stage}
		}
		if c.GetAutomatic() && cur.State != Canary {
			return Result{Rollout: cur}, nil
		}
		if err := gated(); err != nil {
			if c.GetAutomatic() {
				return Result{Rollout: cur}, nil
			}
			return Result{}, err
		}
		if cur.State == Paused || cur.Stage+1 >= len(cur.Stages) {
			next.State, next.FinishedAt, next.FinishedBy, next.FinishReason = Completed, m.Time, m.Actor, m.Reason
			next.PausedAt, next.InterlockPaused = time.Time{}, false
			action, complete = "complete", true
		} else {
			next.Stage++
			next.StageStartedAt = m.Time
			action = "promote"
		}
	case raftv1.CanaryCommand_PAUSE:
		if cur.State != Canary {
			return refuse("pause")
		}
		next.State, next.PausedAt, next.PausedBy, next.InterlockPaused = Paused, m.Time, m.Actor, c.GetInterlock()
		action = "pause"
	case raftv1.CanaryCommand_RESUME:
		if cur.State != Paused {
			return refuse("resume")
		}
		if err := gated(); err != nil {
			return Result{}, err
		}
		// The stage starts over: its evidence is judged from here.
		next.State, next.StageStartedAt, next.PausedAt, next.PausedBy, next.InterlockPaused = Canary, m.Time, time.Time{}, "", false
		next.Stuck = false
		action = "resume"
	case raftv1.CanaryCommand_ROLLBACK:
		if cur.State != Canary && cur.State != Paused {
			return refuse("roll back")
		}
		next.State, next.FinishedAt, next.FinishedBy, next.FinishReason = RolledBack, m.Time, m.Actor, m.Reason
		action = "rollback"
	case raftv1.CanaryCommand_CANCEL:
		if cur.State != Created {
			return refuse("be cancelled (only a rollout not started can)")
		}
		next.State, next.FinishedAt, next.FinishedBy, next.FinishReason = Cancelled, m.Time, m.Actor, m.Reason
		action = "cancel"
	case raftv1.CanaryCommand_FLAG_STUCK:
		if cur.State.Terminal() || cur.Stuck {
			return Result{Rollout: cur}, nil
		}
		next.Stuck = true
		action = "stuck"
	case raftv1.CanaryCommand_PURGE:
		if !cur.State.Terminal() || m.Time.Sub(cur.FinishedAt) < Retention {
			return Result{Rollout: cur}, nil
		}
		kv.Delete(BucketRollouts, []byte(cur.ID))
		touch(kv, m.Index)
		return Result{Change: fsm.Change{Changed: true, Action: "purge", Before: cur}, Rollout: cur}, nil
	default:
		return Result{}, invalid("op", fmt.Sprintf("unknown canary op %v", c.GetOp()))
	}
	next.Version++
	next.Revision = m.Index
	kv.Put(BucketRollouts, []byte(next.ID), marshal(next))
	touch(kv, m.Index)
	if next.State.Terminal() {
		if Holder(kv, next.Section) == next.ID {
			kv.Delete(BucketActive, []byte(next.Section))
		}
	}
	reason := m.Reason
	if bypass != "" && next.Flagged {
		reason = fmt.Sprintf("%s (gate bypassed: %s)", m.Reason, bypass)
	}
	appendHistory(kv, Transition{RolloutID: next.ID, Section: next.Section, From: cur.State, To: next.State, Stage: next.Stage,
		Action: action, Actor: m.Actor, Reason: reason, Time: m.Time, Automatic: c.GetAutomatic(), Evidence: ev, Revision: m.Index})
	return Result{Change: fsm.Change{Changed: true, Action: action, Before: cur, After: next, Reason: reason}, Rollout: next, Complete: complete}, nil
}

func create(kv fsm.KV, m fsm.Meta, c *raftv1.CanaryCommand) (Result, error) {
	var r Rollout
	if err := json.Unmarshal(c.GetRolloutJson(), &r); err != nil {
		return Result{}, invalid("rollout", err.Error())
	}
	if err := Validate(r); err != nil {
		return Result{}, err
	}
	if _, exists := Get(kv, r.ID); exists {
		return Result{}, invalid("id", fmt.Sprintf("rollout %q exists", r.ID))
	}
	if h := Holder(kv, r.Section); h != "" {
		return Result{}, &ConflictError{Section: r.Section, Holder: h}
	}
	if n := len(List(kv)); n >= MaxRollouts {
		return Result{}, invalid("section", fmt.Sprintf("the cluster keeps %d rollouts (finished ones for 7 days), as many as it may: try again when older ones are purged", n))
	}
	r.State, r.Stage, r.Version, r.Revision = Created, 0, 1, m.Index
	r.CreatedBy, r.CreatedAt, r.Reason = m.Actor, m.Time, m.Reason
	r.Evidence, r.Flagged, r.Stuck = nil, false, false
	kv.Put(BucketRollouts, []byte(r.ID), marshal(r))
	kv.Put(BucketActive, []byte(r.Section), []byte(r.ID))
	touch(kv, m.Index)
	appendHistory(kv, Transition{RolloutID: r.ID, Section: r.Section, From: Created, To: Created, Action: "create", Actor: m.Actor,
		Reason: m.Reason, Time: m.Time, Revision: m.Index})
	return Result{Change: fsm.Change{Changed: true, Action: "create", After: r}, Rollout: r}, nil
}
