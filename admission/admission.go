package admission

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/baldurhq/baldurd/internal/fsm"
)

// Scopes of a rate limit.
const (
	// ScopeGlobal is one quota for the whole fleet. (Per-key quotas are
	// designed in docs/admission.md but not built: a scope other than
	// global is refused.)
	ScopeGlobal = "global"
)

// Limits on what is configured.
const (
	MaxNames      = 1000 // entries in one section
	MaxRate       = 1e9  // per second
	MaxBurst      = 1 << 30
	MaxPer        = time.Hour
	MaxConcurrent = 1 << 20
	MaxWait       = 10 * time.Minute
)

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// ErrNotFound is a name the section does not have.
var ErrNotFound = errors.New("admission: not configured")

func invalid(field, msg string) error {
	return &fsm.ArgumentError{Domain: "admission", FieldName: field, Code: "INVALID_ARGUMENT", Msg: msg}
}

// CheckName validates a rate limit's, bulkhead's or throttle's name.
func CheckName(name string) error {
	if !namePattern.MatchString(name) {
		return invalid("name", fmt.Sprintf("%q: 1..64 of a-z, 0-9, '_', '.', '-', starting with a letter or digit", name))
	}
	return nil
}

// RateLimit is a fleet-wide quota: Rate calls per Per, with bursts of up
// to Burst calls.
type RateLimit struct {
	Rate  float64       `json:"rate"`
	Per   time.Duration `json:"per"`
	Burst int           `json:"burst"`
	Scope string        `json:"scope"`
	// FallbackRate is what one instance admits (per Per) once its share's
	// lease has ended without renewal (the cluster unreachable); 0: the
	// equal share of the fleet it last saw, never more than its last share.
	FallbackRate float64 `json:"fallback_rate,omitempty"`
}

// WithDefaults fills what a request leaves out: per 1s, scope global.
func (l RateLimit) WithDefaults() RateLimit {
	if l.Per == 0 {
		l.Per = time.Second
	}
	if l.Scope == "" {
		l.Scope = ScopeGlobal
	}
	return l
}

// Validate checks a complete limit.
func (l RateLimit) Validate() error {
	switch {
	case !(l.Rate > 0) || l.Rate/l.Per.Seconds() > MaxRate:
		return invalid("rate", fmt.Sprintf("%v: must be above 0 and at most %g a second", l.Rate, float64(MaxRate)))
	case l.Per <= 0 || l.Per > MaxPer:
		return invalid("per", fmt.Sprintf("%v: must be above 0 and at most %v", l.Per, MaxPer))
	case l.Burst < 1 || l.Burst > MaxBurst:
		return invalid("burst", fmt.Sprintf("%d: must be at least 1 (and at most %d)", l.Burst, MaxBurst))
	case l.Scope != ScopeGlobal:
		return invalid("scope", fmt.Sprintf("%q: only %s is built (per-key quotas: docs/admission.md)", l.Scope, ScopeGlobal))
	case !(l.FallbackRate >= 0 && l.FallbackRate <= l.Rate):
		return invalid("fallback_rate", fmt.Sprintf("%v: must be between 0 (the default) and the rate, %v", l.FallbackRate, l.Rate))
	}
	return nil
}

// PerSecond is the rate in calls a second.
func (l RateLimit) PerSecond() float64 { return l.Rate / l.Per.Seconds() }

// Bulkhead is a named compartment: at most MaxConcurrent calls at once in
// each instance, a call waiting up to MaxWait for a permit (0: rejected at
// once when full).
type Bulkhead struct {
	MaxConcurrent int           `json:"max_concurrent"`
	MaxWait       time.Duration `json:"max_wait"`
}

// Validate checks a bulkhead.
func (b Bulkhead) Validate() error {
	switch {
	case b.MaxConcurrent < 1 || b.MaxConcurrent > MaxConcurrent:
		return invalid("max_concurrent", fmt.Sprintf("%d: must be 1..%d", b.MaxConcurrent, MaxConcurrent))
	case b.MaxWait < 0 || b.MaxWait > MaxWait:
		return invalid("max_wait", fmt.Sprintf("%v: must be 0..%v", b.MaxWait, MaxWait))
	}
	return nil
}

// Throttle is the adaptive throttle of §12: a windowed admission counter
// whose limit floats in [MinLimit, MaxLimit], steered by the calls' round
// trip times, coupled to a breaker and to emergency levels.
type Throttle struct {
	InitialLimit   int           `json:"initial_limit"`
	MinLimit       int           `json:"min_limit"`
	MaxLimit       int           `json:"max_limit"`
	Window         time.Duration `json:"window"`
	SampleInterval time.Duration `json:"sample_interval"`
	Smoothing      float64       `json:"smoothing_factor"`
	DecreaseRatio  float64       `json:"decrease_ratio"`
	IncreaseStep   int           `json:"increase_step"`
	SLAWarning     time.Duration `json:"sla_warning"`
	SLACritical    time.Duration `json:"sla_critical"`
	// Breaker is the breaker coupled to the throttle (default: the
	// throttle's name): OPEN clamps to CBOpenPercent of the limit (at
	// least MinLimit), HALF_OPEN to CBHalfOpenPercent.
	Breaker           string  `json:"breaker,omitempty"`
	CBOpenPercent     float64 `json:"cb_open_limit_percent"`
	CBHalfOpenPercent float64 `json:"cb_half_open_limit_percent"`
	// Level1Multiplier and Level2Multiplier scale the limit under the
	// emergency levels; LEVEL_3 (and the kill switch) freeze it.
	Level1Multiplier float64 `json:"level1_multiplier"`
	Level2Multiplier float64 `json:"level2_multiplier"`
	// RecoveryStepInterval is how long each step of the recovery ramp
	// (80 %, 90 %, 100 %) lasts once a pressure source stands down.
	RecoveryStepInterval time.Duration `json:"recovery_step_interval"`
}

// DefaultThrottle is Baldur's BALDUR_THROTTLE_* defaults.
func DefaultThrottle() Throttle {
	return Throttle{InitialLimit: 100, MinLimit: 10, MaxLimit: 500, Window: 60 * time.Second, SampleInterval: 500 * time.Millisecond,
		Smoothing: 0.5, DecreaseRatio: 0.9, IncreaseStep: 1, SLAWarning: 200 * time.Millisecond, SLACritical: 500 * time.Millisecond,
		CBOpenPercent: 0, CBHalfOpenPercent: 0.5, Level1Multiplier: 0.8, Level2Multiplier: 0.5, RecoveryStepInterval: 30 * time.Second}
}

// Validate checks a complete throttle.
func (t Throttle) Validate() error {
	switch {
	case t.MinLimit < 1:
		return invalid("min_limit", fmt.Sprintf("%d: must be at least 1", t.MinLimit))
	case t.MaxLimit < t.MinLimit || t.MaxLimit > MaxConcurrent:
		return invalid("max_limit", fmt.Sprintf("%d: must be min_limit (%d)..%d", t.MaxLimit, t.MinLimit, MaxConcurrent))
	case t.InitialLimit < t.MinLimit || t.InitialLimit > t.MaxLimit:
		return invalid("initial_limit", fmt.Sprintf("%d: must be within min_limit..max_limit (%d..%d)", t.InitialLimit, t.MinLimit, t.MaxLimit))
	case t.Window <= 0 || t.Window > time.Hour:
		return invalid("window", fmt.Sprintf("%v: must be above 0 and at most 1h", t.Window))
	case t.SampleInterval <= 0 || t.SampleInterval > time.Minute:
		return invalid("sample_interval", fmt.Sprintf("%v: must be above 0 and at most 1m", t.SampleInterval))
	case !(t.Smoothing > 0 && t.Smoothing <= 1):
		return invalid("smoothing_factor", fmt.Sprintf("%v: must be in (0, 1]", t.Smoothing))
	case !(t.DecreaseRatio > 0 && t.DecreaseRatio < 1):
		return invalid("decrease_ratio", fmt.Sprintf("%v: must be in (0, 1)", t.DecreaseRatio))
	case t.IncreaseStep < 1:
		return invalid("increase_step", fmt.Sprintf("%d: must be at least 1", t.IncreaseStep))
	case t.SLAWarning <= 0:
		return invalid("sla_warning", fmt.Sprintf("%v: must be above 0", t.SLAWarning))
	case t.SLACritical <= t.SLAWarning:
		return invalid("sla_critical", fmt.Sprintf("%v: must be above sla_warning (%v)", t.SLACritical, t.SLAWarning))
	case !(t.CBOpenPercent >= 0 && t.CBOpenPercent <= 1):
		return invalid("cb_open_limit_percent", fmt.Sprintf("%v: must be 0..1", t.CBOpenPercent))
	case !(t.CBHalfOpenPercent >= 0 && t.CBHalfOpenPercent <= 1):
		return invalid("cb_half_open_limit_percent", fmt.Sprintf("%v: must be 0..1", t.CBHalfOpenPercent))
	case !(t.Level1Multiplier > 0 && t.Level1Multiplier <= 1):
		return invalid("level1_multiplier", fmt.Sprintf("%v: must be in (0, 1]", t.Level1Multiplier))
	case !(t.Level2Multiplier > 0 && t.Level2Multiplier <= 1):
		return invalid("level2_multiplier", fmt.Sprintf("%v: must be in (0, 1]", t.Level2Multiplier))
	case t.RecoveryStepInterval < 0 || t.RecoveryStepInterval > time.Hour:
		return invalid("recovery_step_interval", fmt.Sprintf("%v: must be 0..1h", t.RecoveryStepInterval))
	case t.Breaker != "" && len(t.Breaker) > 128:
		return invalid("breaker", "at most 128 bytes")
	}
	return nil
}
