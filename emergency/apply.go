package emergency

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
)

// Buckets used by this package.
var (
	BucketState   = []byte("emergency_state")
	BucketHistory = []byte("emergency_history")
	BucketConfig  = []byte("emergency_config")
	keyConfig     = []byte("config")
)

// Buckets lists this package's buckets for the schema.
func Buckets() [][]byte { return [][]byte{BucketState, BucketHistory, BucketConfig} }

// Get returns scope's state; a scope never triggered is NORMAL.
func Get(kv fsm.KV, scope string) State {
	if v := kv.Get(BucketState, []byte(scope)); v != nil {
		var s State
		if err := json.Unmarshal(v, &s); err != nil {
			panic(fmt.Sprintf("emergency: decode state %q: %v", scope, err))
		}
		return s
	}
	return State{Scope: scope}
}

// List returns every scope ever triggered, ordered by name.
func List(kv fsm.KV) []State {
	var out []State
	kv.Scan(BucketState, nil, false, func(_, v []byte) bool {
		var s State
		if err := json.Unmarshal(v, &s); err != nil {
			panic(fmt.Sprintf("emergency: decode state: %v", err))
		}
		out = append(out, s)
		return true
	})
	return out
}

// GetConfig returns the replicated config, or DefaultConfig.
func GetConfig(kv fsm.KV) (Config, uint64) {
	v := kv.Get(BucketConfig, keyConfig)
	if v == nil {
		return DefaultConfig(), 0
	}
	var c struct {
		Config
		Revision uint64 `json:"revision"`
	}
	if err := json.Unmarshal(v, &c); err != nil {
		panic(fmt.Sprintf("emergency: decode config: %v", err))
	}
	return c.Config, c.Revision
}

// History returns up to limit changes, newest first; scope "" means all.
func History(kv fsm.KV, scope string, limit int) []Change {
	var out []Change
	kv.Scan(BucketHistory, nil, true, func(_, v []byte) bool {
		var c Change
		if err := json.Unmarshal(v, &c); err != nil {
			panic(fmt.Sprintf("emergency: decode history: %v", err))
		}
		if scope == "" || c.Scope == scope {
			out = append(out, c)
		}
		return len(out) < limit
	})
	return out
}

func put(kv fsm.KV, s State) { kv.Put(BucketState, []byte(s.Scope), marshal(s)) }

func record(kv fsm.KV, m fsm.Meta, scope, action string, from, to Level) {
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], m.Index)
	kv.Put(BucketHistory, key[:], marshal(Change{Revision: m.Index, Time: m.Time, Scope: scope, Action: action, From: from, To: to, Actor: m.Actor, Reason: m.Reason}))
	// Keep the newest MaxHistory entries: walk from the newest and copy
	// only the keys past them (usually one).
	n := 0
	var old [][]byte
	kv.Scan(BucketHistory, nil, true, func(k, _ []byte) bool {
		if n++; n > MaxHistory {
			old = append(old, append([]byte(nil), k...))
		}
		return true
	})
	for _, k := range old {
		kv.Delete(BucketHistory, k)
	}
}

func effective(s State) Level {
	if !s.Active {
		return Normal
	}
	return s.Level
}

// Trigger activates level on a scope. An automatic trigger never lowers an
// active higher (or equal) level; it then reports Changed=false.
func Trigger(kv fsm.KV, m fsm.Meta, c *raftv1.EmergencyTrigger) (Result, error) {
	level, d := Level(c.GetLevel()), time.Duration(c.GetDurationNanos())
	if err := CheckTrigger(level, m.Reason, d, c.GetScope()); err != nil {
		return Result{}, err
	}
	scope, _ := CheckScope(c.GetScope())
	cur := Get(kv, scope)
	if c.GetAuto() && cur.Active && cur.Level >= level {
		return Result{Scope: scope, State: cur}, nil
	}
	cfg, _ := GetConfig(kv)
	if c.GetAuto() && d == 0 {
		d = cfg.AutoDuration
	}
	next := State{
		Scope: scope, Level: level, Active: true, Reason: m.Reason, ActivatedBy: m.Actor,
		ActivatedAt: m.Time, Auto: c.GetAuto(), ActivationRevision: m.Index, Revision: m.Index,
	}
	if d > 0 {
		next.ExpiresAt = m.Time.Add(d)
	}
	action := "trigger"
	if c.GetAuto() {
		action = "auto_trigger"
	}
	put(kv, next)
	record(kv, m, scope, action, effective(cur), level)
	return Result{Change: fsm.Change{Changed: true, Action: action, Before: cur, After: next}, Scope: scope, State: next}, nil
}

// Release ends an activation, or starts gradual recovery. Without force it
// is refused until the stabilization period since activation has passed.
func Release(kv fsm.KV, m fsm.Meta, c *raftv1.EmergencyRelease) (Result, error) {
	if err := CheckReason(m.Reason); err != nil {
		return Result{}, err
	}
	scope, err := CheckScope(c.GetScope())
	if err != nil {
		return Result{}, err
	}
	cur := Get(kv, scope)
	if err := CheckRelease(cur); err != nil {
		return Result{}, err
	}
	cfg, _ := GetConfig(kv)
	if until := cur.ActivatedAt.Add(cfg.Stabilization); !c.GetForce() && m.Time.Before(until) {
		return Result{}, &RecoveryBlockedError{Until: until}
	}
	action := "release"
	if c.GetForce() {
		action = "force_release"
	}
	next := cur
	next.Revision = m.Index
	if c.GetGradual() && cur.Level > Level1 {
		if cur.Recovering {
			return Result{}, ErrAlreadyRecovering
		}
		next.Recovering, next.TargetLevel, next.NextStepAt = true, Normal, m.Time.Add(cfg.StepDelay)
		put(kv, next)
		record(kv, m, scope, "recovery_start", cur.Level, cur.Level)
		return Result{Change: fsm.Change{Changed: true, Action: "recovery_start", Before: cur, After: next}, Scope: scope, State: next}, nil
	}
	next = deactivate(cur, m)
	put(kv, next)
	record(kv, m, scope, action, cur.Level, Normal)
	return Result{Change: fsm.Change{Changed: true, Action: action, Before: cur, After: next}, Scope: scope, State: next}, nil
}

func deactivate(cur State, m fsm.Meta) State {
	return State{
		Scope: cur.Scope, Level: Normal, Reason: cur.Reason, ActivatedBy: cur.ActivatedBy, ActivatedAt: cur.ActivatedAt,
		DeactivatedAt: m.Time, DeactivatedBy: m.Actor, Revision: m.Index,
	}
}

// Expire ends the named activation if its expiry has passed at m.Time.
func Expire(kv fsm.KV, m fsm.Meta, c *raftv1.EmergencyExpire) (Result, error) {
	cur := Get(kv, c.GetScope())
	if !cur.Active || cur.ActivationRevision != c.GetActivationRevision() || cur.ExpiresAt.IsZero() || m.Time.Before(cur.ExpiresAt) {
		return Result{Scope: cur.Scope, State: cur}, nil
	}
	next := deactivate(cur, m)
	put(kv, next)
	record(kv, m, cur.Scope, "expire", cur.Level, Normal)
	return Result{Change: fsm.Change{Changed: true, Action: "expire", Before: cur, After: next}, Scope: cur.Scope, State: next}, nil
}

// Step lowers a recovering scope by one level if the step is due at m.Time
// and the command names the current activation and level.
func Step(kv fsm.KV, m fsm.Meta, c *raftv1.EmergencyStep) (Result, error) {
	cur := Get(kv, c.GetScope())
	if !cur.Active || !cur.Recovering || cur.ActivationRevision != c.GetActivationRevision() ||
		cur.Level != Level(c.GetFromLevel()) || m.Time.Before(cur.NextStepAt) {
		return Result{Scope: cur.Scope, State: cur}, nil
	}
	cfg, _ := GetConfig(kv)
	next := cur
	next.Level--
	next.Revision = m.Index
	if next.Level <= cur.TargetLevel || next.Level == Normal {
		next = deactivate(cur, m)
	} else {
		next.NextStepAt = m.Time.Add(cfg.StepDelay)
	}
	put(kv, next)
	record(kv, m, cur.Scope, "recovery_step", cur.Level, effective(next))
	return Result{Change: fsm.Change{Changed: true, Action: "recovery_step", Before: cur, After: next}, Scope: cur.Scope, State: next}, nil
}

// ConfigFromCommand converts the command form of the config.
func ConfigFromCommand(c *raftv1.EmergencyConfig) (Config, error) {
	cfg := Config{
		Stabilization: time.Duration(c.GetStabilizationNanos()),
		StepDelay:     time.Duration(c.GetStepDelayNanos()),
		AutoDuration:  time.Duration(c.GetAutoDurationNanos()),
	}
	cfg.Levels[Normal] = Admission{1, 1, 1}
	seen := map[Level]bool{}
	for _, l := range c.GetLevels() {
		lv := Level(l.GetLevel())
		if lv < Level1 || lv > Level3 {
			return Config{}, &fsm.ArgumentError{Domain: "emergency", FieldName: "config.levels.level", Code: "INVALID_CONFIG", Msg: fmt.Sprintf("level %s cannot be configured; use LEVEL_1..LEVEL_3", lv)}
		}
		if seen[lv] {
			return Config{}, &fsm.ArgumentError{Domain: "emergency", FieldName: "config.levels", Code: "INVALID_CONFIG", Msg: fmt.Sprintf("%s listed twice", lv)}
		}
		seen[lv] = true
		cfg.Levels[lv] = Admission{Critical: l.GetCritical(), Standard: l.GetStandard(), NonEssential: l.GetNonEssential()}
	}
	if len(seen) != 3 {
		return Config{}, &fsm.ArgumentError{Domain: "emergency", FieldName: "config.levels", Code: "INVALID_CONFIG", Msg: "give the admission for each of LEVEL_1, LEVEL_2 and LEVEL_3"}
	}
	return cfg, cfg.Validate()
}

// SetConfig replaces the config.
func SetConfig(kv fsm.KV, m fsm.Meta, c *raftv1.EmergencyConfig) (Result, error) {
	if err := CheckReason(m.Reason); err != nil {
		return Result{}, err
	}
	cfg, err := ConfigFromCommand(c)
	if err != nil {
		return Result{}, err
	}
	before, _ := GetConfig(kv)
	kv.Put(BucketConfig, keyConfig, marshal(struct {
		Config
		Revision uint64 `json:"revision"`
	}{cfg, m.Index}))
	return Result{Change: fsm.Change{Changed: true, Action: "config_update", Before: before, After: cfg}, Scope: "config"}, nil
}

// DueAction is a time-driven transition the leader should propose.
type DueAction struct {
	Scope              string
	ActivationRevision uint64
	// Expire is set for an expiry; otherwise this is a recovery step.
	Expire    bool
	FromLevel Level
}

// Due lists the expiries and recovery steps due at now.
func Due(kv fsm.KV, now time.Time) []DueAction {
	var out []DueAction
	for _, s := range List(kv) {
		switch {
		case !s.Active:
		case !s.ExpiresAt.IsZero() && !now.Before(s.ExpiresAt):
			out = append(out, DueAction{Scope: s.Scope, ActivationRevision: s.ActivationRevision, Expire: true, FromLevel: s.Level})
		case s.Recovering && !now.Before(s.NextStepAt):
			out = append(out, DueAction{Scope: s.Scope, ActivationRevision: s.ActivationRevision, FromLevel: s.Level})
		}
	}
	return out
}
