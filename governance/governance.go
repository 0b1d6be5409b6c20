package governance

import (
	"encoding/json"
	"fmt"
	"math"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
)

// Limits and periods.
const (
	// MinReason is the shortest reason break glass takes.
	MinReason       = 10
	MaxReasonLength = 1024
	// MaxBreakGlass is the longest break glass.
	MaxBreakGlass = 4 * time.Hour
	// StrictWarnings are when a STRICT mode is warned about; StrictMax
	// when it returns to NORMAL by itself.
	StrictMax = 8 * time.Hour
)

// StrictWarnings are the ages of a STRICT mode that are warned about.
var StrictWarnings = []time.Duration{4 * time.Hour, 6 * time.Hour}

// BreakGlass is an admin's override of the gates and approvals.
type BreakGlass struct {
	Reason string    `json:"reason"`
	By     string    `json:"by"`
	Since  time.Time `json:"since"`
	Until  time.Time `json:"until"`
}

// System is the replicated system control.
type System struct {
	DryRun       bool        `json:"dry_run"`
	Strict       bool        `json:"strict"`
	StrictReason string      `json:"strict_reason,omitempty"`
	StrictBy     string      `json:"strict_by,omitempty"`
	StrictSince  time.Time   `json:"strict_since"`
	StrictWarned int         `json:"strict_warned,omitempty"` // warnings given (StrictWarnings)
	BreakGlass   *BreakGlass `json:"break_glass,omitempty"`
	Revision     uint64      `json:"revision"`
}

// BreakGlassActive reports whether break glass is engaged at now.
func (s System) BreakGlassActive(now time.Time) bool {
	return s.BreakGlass != nil && now.Before(s.BreakGlass.Until)
}

// Mode is NORMAL or STRICT.
func (s System) Mode() string {
	if s.Strict {
		return "STRICT"
	}
	return "NORMAL"
}

// Buckets.
var (
	BucketSystem = []byte("governance")
	keySystem    = []byte("system")
)

// Buckets lists this domain's buckets.
func Buckets() [][]byte { return [][]byte{BucketSystem, BucketApprovals} }

// Get returns the system control (zero: live, NORMAL, no break glass).
func Get(kv fsm.KV) System {
	v := kv.Get(BucketSystem, keySystem)
	if v == nil {
		return System{}
	}
	var s System
	if err := json.Unmarshal(v, &s); err != nil {
		panic(fmt.Sprintf("governance: decode system: %v", err))
	}
	return s
}

func invalid(field, code, msg string) error {
	return &fsm.ArgumentError{Domain: "governance", FieldName: field, Code: code, Msg: msg}
}

// CheckReason checks a reason; required ones must be given, break glass's
// be at least MinReason characters.
func CheckReason(reason string, required bool, min int) error {
	switch {
	case len(reason) > MaxReasonLength:
		return invalid("reason", "INVALID_ARGUMENT", fmt.Sprintf("is %d bytes: at most %d", len(reason), MaxReasonLength))
	case required && len([]rune(reason)) < max(1, min):
		if min > 1 {
			return invalid("reason", "REASON_REQUIRED", fmt.Sprintf("needs at least %d characters", min))
		}
		return invalid("reason", "REASON_REQUIRED", "a reason is required")
	}
	return nil
}

// Result is what a change did.
type Result struct {
	fsm.Change
	System System
}

// Applied is r in the dispatcher's vocabulary.
func (r Result) Applied() fsm.Applied {
	c := r.Change
	c.Action, c.Target = "governance."+c.Action, "system"
	return fsm.Applied{Change: c, Value: r}
}

// Apply applies one system control change. The leader's own steps name
// what they act on (the STRICT period by its start, break glass by its
// start), so a late or repeated one is a no-op.
func Apply(kv fsm.KV, m fsm.Meta, c *raftv1.GovernanceCommand) (Result, error) {
	cur := Get(kv)
	next := cur
	action := ""
	switch c.GetOp() {
	case raftv1.GovernanceCommand_DRY_RUN:
		if cur.DryRun {
			return Result{System: cur}, nil
		}
		next.DryRun, action = true, "dry_run"
	case raftv1.GovernanceCommand_LIVE:
		if !c.GetConfirm() {
			return Result{}, invalid("confirm", "CONFIRM_REQUIRED", "leaving dry run enforces every decision again: send confirm: true")
		}
		if !cur.DryRun {
			return Result{System: cur}, nil
		}
		next.DryRun, action = false, "live"
	case raftv1.GovernanceCommand_STRICT:
		if err := CheckReason(m.Reason, true, 1); err != nil {
			return Result{}, err
		}
		if cur.Strict {
			return Result{System: cur}, nil
		}
		next.Strict, next.StrictReason, next.StrictBy, next.StrictSince, next.StrictWarned = true, m.Reason, m.Actor, m.Time, 0
		action = "strict"
	case raftv1.GovernanceCommand_NORMAL:
		if !cur.Strict {
			return Result{System: cur}, nil
		}
		next.Strict, next.StrictReason, next.StrictBy, next.StrictSince, next.StrictWarned = false, "", "", time.Time{}, 0
		action = "normal"
	case raftv1.GovernanceCommand_STRICT_EXPIRE:
		if !cur.Strict || cur.StrictSince.UnixNano() != c.GetSinceUnixNano() || m.Time.Sub(cur.StrictSince) < StrictMax {
			return Result{System: cur}, nil
		}
		next.Strict, next.StrictReason, next.StrictBy, next.StrictSince, next.StrictWarned = false, "", "", time.Time{}, 0
		action = "strict_expired"
	case raftv1.GovernanceCommand_STRICT_WARN:
		w := int(c.GetWarning())
		if !cur.Strict || cur.StrictSince.UnixNano() != c.GetSinceUnixNano() || w <= cur.StrictWarned || w > len(StrictWarnings) {
			return Result{System: cur}, nil
		}
		next.StrictWarned, action = w, "strict_warning"
	case raftv1.GovernanceCommand_BREAK_GLASS:
		if err := CheckReason(m.Reason, true, MinReason); err != nil {
			return Result{}, err
		}
		ttl := time.Duration(c.GetTtlNanos())
		if ttl <= 0 || ttl > MaxBreakGlass {
			return Result{}, invalid("ttl", "INVALID_ARGUMENT", fmt.Sprintf("%v is outside 0 (excluded)..%v", ttl, MaxBreakGlass))
		}
		next.BreakGlass, action = &BreakGlass{Reason: m.Reason, By: m.Actor, Since: m.Time, Until: m.Time.Add(ttl)}, "break_glass"
	case raftv1.GovernanceCommand_END_BREAK_GLASS:
		if cur.BreakGlass == nil {
			return Result{System: cur}, nil
		}
		if c.GetSinceUnixNano() != 0 && (cur.BreakGlass.Since.UnixNano() != c.GetSinceUnixNano() || m.Time.Before(cur.BreakGlass.Until)) {
			return Result{System: cur}, nil // the leader's expiry of another, or an early one
		}
		next.BreakGlass, action = nil, "break_glass_ended"
	default:
		return Result{}, invalid("op", "INVALID_ARGUMENT", fmt.Sprintf("unknown governance op %v", c.GetOp()))
	}
	next.Revision = m.Index
	b, _ := json.Marshal(next)
	kv.Put(BucketSystem, keySystem, b)
	return Result{Change: fsm.Change{Changed: true, Action: action, Before: cur, After: next}, System: next}, nil
}

// Gate reasons.
const (
	AllowedBreakGlass = "break_glass"
	BlockedKillSwitch = "kill_switch"
	BlockedEmergency  = "emergency_mode"
)

// GateInput is what the pre-action gate reads.
type GateInput struct {
	System     System
	KillSwitch bool
	// Level is the global emergency level (0..3), ExpiresAt when its
	// activation ends (zero: not scheduled).
	Level     int
	ExpiresAt time.Time
	// MinLevel is the level from which the gate blocks (default 2).
	MinLevel int
	Now      time.Time
}

// Decision is the gate's answer.
type Decision struct {
	Allowed bool
	// Reason: "" (allowed), break_glass (allowed, flagged for review),
	// kill_switch or emergency_mode (blocked).
	Reason  string
	Message string
}

// Gate is the pre-action gate (§15.1), in its fixed order, stopping at the
// first that decides: break glass engaged allows (flagged); the kill switch
// blocks; an emergency at or above the minimum level blocks. (Baldur's
// error-budget check has no error budget to read here.)
func Gate(in GateInput) Decision {
	if in.System.BreakGlassActive(in.Now) {
		return Decision{Allowed: true, Reason: AllowedBreakGlass,
			Message: fmt.Sprintf("Break glass is engaged by %s until %s: allowed and flagged for review.", in.System.BreakGlass.By, in.System.BreakGlass.Until.UTC().Format(time.RFC3339))}
	}
	if in.KillSwitch {
		return Decision{Reason: BlockedKillSwitch, Message: "The system is disabled (kill switch): automatic and corrective actions are held until it is enabled."}
	}
	minLevel := in.MinLevel
	if minLevel <= 0 {
		minLevel = 2
	}
	if in.Level >= minLevel {
		msg := fmt.Sprintf("Emergency mode LEVEL_%d is active.", in.Level)
		if !in.ExpiresAt.IsZero() && in.ExpiresAt.After(in.Now) {
			h := in.ExpiresAt.Sub(in.Now).Hours()
			msg += fmt.Sprintf(" Auto-restore in ~%.1fh.", math.Ceil(h*10)/10)
		}
		return Decision{Reason: BlockedEmergency, Message: msg}
	}
	return Decision{Allowed: true}
}
