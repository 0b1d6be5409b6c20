package emergency

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/baldurhq/baldurd/internal/fsm"
)

// Level is an emergency level, ordered by severity.
type Level int

// The levels, as Baldur names them.
const (
	Normal Level = iota
	Level1
	Level2
	Level3
)

var levelNames = [...]string{"NORMAL", "LEVEL_1", "LEVEL_2", "LEVEL_3"}

func (l Level) String() string {
	if l < Normal || l > Level3 {
		return fmt.Sprintf("Level(%d)", int(l))
	}
	return levelNames[l]
}

// Valid reports whether l is one of the four levels.
func (l Level) Valid() bool { return l >= Normal && l <= Level3 }

// ParseLevel accepts Baldur's spellings in any case ("LEVEL_2", "level_2").
func ParseLevel(s string) (Level, error) {
	for i, n := range levelNames {
		if strings.EqualFold(s, n) {
			return Level(i), nil
		}
	}
	return 0, &fsm.ArgumentError{Domain: "emergency", FieldName: "level", Code: "INVALID_LEVEL", Msg: fmt.Sprintf("unknown level %q; use NORMAL, LEVEL_1, LEVEL_2 or LEVEL_3", s)}
}

// Tier is a request's criticality.
type Tier int

// Tiers.
const (
	TierCritical Tier = iota + 1
	TierStandard
	TierNonEssential
)

// Admission is the fraction (0..1) of each tier admitted at a level.
type Admission struct {
	Critical     float64 `json:"critical"`
	Standard     float64 `json:"standard"`
	NonEssential float64 `json:"non_essential"`
}

// Fraction returns the admitted fraction for t.
func (a Admission) Fraction(t Tier) float64 {
	switch t {
	case TierCritical:
		return a.Critical
	case TierStandard:
		return a.Standard
	case TierNonEssential:
		return a.NonEssential
	}
	return 0
}

// Config is the replicated emergency configuration.
type Config struct {
	// Levels[l] is the admission at level l; Levels[Normal] admits all.
	Levels [4]Admission `json:"levels"`
	// Stabilization is how long after activation a release needs force.
	Stabilization time.Duration `json:"stabilization"`
	// StepDelay is the time between gradual recovery steps.
	StepDelay time.Duration `json:"step_delay"`
	// AutoDuration is the expiry of automatic triggers without a duration.
	AutoDuration time.Duration `json:"auto_duration"`
}

// DefaultConfig is Baldur's table (§10.1) and recovery gate defaults:
// 300 s stabilization, 60 s per step, 30 min automatic activations.
func DefaultConfig() Config {
	return Config{
		Levels: [4]Admission{
			Normal: {1, 1, 1},
			Level1: {Critical: 1, Standard: 1, NonEssential: 0},
			Level2: {Critical: 1, Standard: 0.1, NonEssential: 0},
			Level3: {Critical: 0.5, Standard: 0, NonEssential: 0},
		},
		Stabilization: 300 * time.Second,
		StepDelay:     60 * time.Second,
		AutoDuration:  30 * time.Minute,
	}
}

// Limits on inputs.
const (
	MinDuration     = time.Second
	MaxDuration     = 7 * 24 * time.Hour
	MaxReasonLength = 1024
	MaxHistory      = 100
	GlobalScope     = "global"
)

var scopePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Validate checks c and names the first field at fault.
func (c Config) Validate() error {
	if c.Levels[Normal] != (Admission{1, 1, 1}) {
		return &fsm.ArgumentError{Domain: "emergency", FieldName: "config.levels", Code: "INVALID_CONFIG", Msg: "NORMAL must admit every tier fully"}
	}
	for l := Level1; l <= Level3; l++ {
		a := c.Levels[l]
		for _, f := range []struct {
			name string
			v    float64
		}{{"critical", a.Critical}, {"standard", a.Standard}, {"non_essential", a.NonEssential}} {
			if !(f.v >= 0 && f.v <= 1) {
				return &fsm.ArgumentError{Domain: "emergency", FieldName: fmt.Sprintf("config.levels[%s].%s", l, f.name), Code: "INVALID_CONFIG", Msg: fmt.Sprintf("admission %v is outside 0..1", f.v)}
			}
		}
	}
	switch {
	case c.Stabilization < 0 || c.Stabilization > 24*time.Hour:
		return &fsm.ArgumentError{Domain: "emergency", FieldName: "config.stabilization_period", Code: "INVALID_CONFIG", Msg: fmt.Sprintf("%v is outside 0s..24h", c.Stabilization)}
	case c.StepDelay < time.Second || c.StepDelay > time.Hour:
		return &fsm.ArgumentError{Domain: "emergency", FieldName: "config.level_step_delay", Code: "INVALID_CONFIG", Msg: fmt.Sprintf("%v is outside 1s..1h", c.StepDelay)}
	case c.AutoDuration < time.Minute || c.AutoDuration > 24*time.Hour:
		return &fsm.ArgumentError{Domain: "emergency", FieldName: "config.auto_duration", Code: "INVALID_CONFIG", Msg: fmt.Sprintf("%v is outside 1m..24h", c.AutoDuration)}
	}
	return nil
}

// State is one scope's emergency state.
type State struct {
	Scope         string    `json:"scope"`
	Level         Level     `json:"level"`
	Active        bool      `json:"active"`
	Reason        string    `json:"reason,omitempty"`
	ActivatedBy   string    `json:"activated_by,omitempty"`
	ActivatedAt   time.Time `json:"activated_at"`
	ExpiresAt     time.Time `json:"expires_at"`
	Auto          bool      `json:"auto,omitempty"`
	Recovering    bool      `json:"recovering,omitempty"`
	TargetLevel   Level     `json:"target_level"`
	NextStepAt    time.Time `json:"next_step_at"`
	DeactivatedAt time.Time `json:"deactivated_at"`
	DeactivatedBy string    `json:"deactivated_by,omitempty"`
	// ActivationRevision identifies the activation (the index of its trigger).
	ActivationRevision uint64 `json:"activation_revision,omitempty"`
	// Revision is the index of the last change to this scope.
	Revision uint64 `json:"revision"`
}

// Change is one history entry.
type Change struct {
	Revision uint64    `json:"revision"`
	Time     time.Time `json:"time"`
	Scope    string    `json:"scope"`
	Action   string    `json:"action"`
	From     Level     `json:"from"`
	To       Level     `json:"to"`
	Actor    string    `json:"actor"`
	Reason   string    `json:"reason,omitempty"`
}

// Result describes what a change function did, for the audit trail and the
// caller. Changed is false for a no-op (nothing was written).
type Result struct {
	fsm.Change
	Scope string
	State State
}

// Applied is r in the dispatcher's vocabulary: the action qualified with
// the domain, the target the scope.
func (r Result) Applied() fsm.Applied {
	c := r.Change
	c.Action, c.Target = "emergency."+c.Action, "emergency/"+r.Scope
	return fsm.Applied{Change: c, Value: r}
}

// Errors.
var (
	ErrNotActive         = errors.New("emergency: not active")
	ErrRecoveryBlocked   = errors.New("emergency: recovery blocked by the recovery gate")
	ErrAlreadyRecovering = errors.New("emergency: gradual recovery already in progress")
)

// RecoveryBlockedError says until when a release without force is refused.
type RecoveryBlockedError struct {
	Until time.Time
}

func (e *RecoveryBlockedError) Error() string {
	return fmt.Sprintf("emergency: recovery blocked by the recovery gate until %s (stabilization period); use force to override", e.Until.Format(time.RFC3339))
}

func (e *RecoveryBlockedError) Unwrap() error { return ErrRecoveryBlocked }

// CheckScope validates a scope name; empty means global.
func CheckScope(scope string) (string, error) {
	if scope == "" {
		return GlobalScope, nil
	}
	if !scopePattern.MatchString(scope) {
		return "", &fsm.ArgumentError{Domain: "emergency", FieldName: "scope", Code: "INVALID_SCOPE", Msg: fmt.Sprintf("%q is not a scope name (lowercase letters, digits, '.', '_', '-', at most 63)", scope)}
	}
	return scope, nil
}

// CheckReason validates a required reason.
func CheckReason(reason string) error {
	if strings.TrimSpace(reason) == "" {
		return &fsm.ArgumentError{Domain: "emergency", FieldName: "reason", Code: "REASON_REQUIRED", Msg: "a reason is required"}
	}
	if len(reason) > MaxReasonLength {
		return &fsm.ArgumentError{Domain: "emergency", FieldName: "reason", Code: "REASON_TOO_LONG", Msg: fmt.Sprintf("%d bytes, at most %d", len(reason), MaxReasonLength)}
	}
	return nil
}

// CheckTrigger validates a trigger request without reading state, so the
// server can refuse bad input before proposing.
func CheckTrigger(level Level, reason string, d time.Duration, scope string) error {
	if !level.Valid() {
		return &fsm.ArgumentError{Domain: "emergency", FieldName: "level", Code: "INVALID_LEVEL", Msg: fmt.Sprintf("unknown level %d", int(level))}
	}
	if level == Normal {
		return &fsm.ArgumentError{Domain: "emergency", FieldName: "level", Code: "INVALID_LEVEL", Msg: "NORMAL cannot be triggered; use release"}
	}
	if err := CheckReason(reason); err != nil {
		return err
	}
	if d != 0 && (d < MinDuration || d > MaxDuration) {
		return &fsm.ArgumentError{Domain: "emergency", FieldName: "duration", Code: "DURATION_OUT_OF_RANGE", Msg: fmt.Sprintf("%v is outside %v..%v", d, MinDuration, MaxDuration)}
	}
	_, err := CheckScope(scope)
	return err
}

func marshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("emergency: encode %T: %v", v, err))
	}
	return b
}

// PausesReplay reports whether the level in force pauses DLQ replay
// (Baldur §5.4: LEVEL_2 and above stop automated replays).
func (s State) PausesReplay() bool { return s.Active && s.Level >= Level2 }

// CheckRelease refuses to release a scope that is not active.
func CheckRelease(cur State) error {
	if !cur.Active {
		return fmt.Errorf("%w: scope %q is NORMAL", ErrNotActive, cur.Scope)
	}
	return nil
}
