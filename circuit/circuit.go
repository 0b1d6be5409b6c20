package circuit

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/baldurhq/baldurd/internal/fsm"
)

// State is a breaker state.
type State int

// States, as Baldur names them.
const (
	Closed State = iota
	Open
	HalfOpen
)

var stateNames = [...]string{"CLOSED", "OPEN", "HALF_OPEN"}

func (s State) String() string {
	if s < Closed || s > HalfOpen {
		return fmt.Sprintf("State(%d)", int(s))
	}
	return stateNames[s]
}

// WindowType selects how the outcome window is bounded.
type WindowType int

// Window types.
const (
	CountWindow WindowType = iota
	TimeWindow
)

// Policy configures one breaker. Zero fields mean "use the default" when a
// policy is set through the API (see WithDefaults).
type Policy struct {
	FailureThreshold      int           `json:"failure_threshold"`
	FailureRateThreshold  float64       `json:"failure_rate_threshold"`
	MinimumCalls          int           `json:"minimum_calls"`
	WindowType            WindowType    `json:"window_type"`
	WindowSize            int           `json:"window_size"`
	WindowDuration        time.Duration `json:"window_duration"`
	SlowCallRateThreshold float64       `json:"slow_call_rate_threshold"`
	SlowCallDuration      time.Duration `json:"slow_call_duration"`
	RecoveryTimeout       time.Duration `json:"recovery_timeout"`
	HalfOpenMaxCalls      int           `json:"half_open_max_calls"`
	SuccessThreshold      int           `json:"success_threshold"`
	HalfOpenStuckTimeout  time.Duration `json:"half_open_stuck_timeout"`
	MinReporters          int           `json:"min_reporters"`
	ReportInterval        time.Duration `json:"report_interval"`
	DryRun                bool          `json:"dry_run"`
}

// DefaultPolicy is Baldur's defaults (§1.2) plus the fleet knobs.
func DefaultPolicy() Policy {
	return Policy{
		FailureThreshold:     5,
		FailureRateThreshold: 50,
		MinimumCalls:         10,
		WindowType:           CountWindow,
		WindowSize:           100,
		WindowDuration:       60 * time.Second,
		SlowCallDuration:     60 * time.Second,
		RecoveryTimeout:      60 * time.Second,
		HalfOpenMaxCalls:     3,
		SuccessThreshold:     2,
		HalfOpenStuckTimeout: 60 * time.Second,
		MinReporters:         1,
		ReportInterval:       100 * time.Millisecond,
	}
}

// WithDefaults fills p's zero fields from d. Rates of 0 stay 0 only when
// the caller set every field; use an explicit policy to disable a trigger.
func (p Policy) WithDefaults(d Policy) Policy {
	fill := func(v *int, dv int) {
		if *v == 0 {
			*v = dv
		}
	}
	fillD := func(v *time.Duration, dv time.Duration) {
		if *v == 0 {
			*v = dv
		}
	}
	fill(&p.FailureThreshold, d.FailureThreshold)
	fill(&p.MinimumCalls, d.MinimumCalls)
	fill(&p.WindowSize, d.WindowSize)
	fillD(&p.WindowDuration, d.WindowDuration)
	fillD(&p.SlowCallDuration, d.SlowCallDuration)
	fillD(&p.RecoveryTimeout, d.RecoveryTimeout)
	fill(&p.HalfOpenMaxCalls, d.HalfOpenMaxCalls)
	fill(&p.SuccessThreshold, d.SuccessThreshold)
	fillD(&p.HalfOpenStuckTimeout, d.HalfOpenStuckTimeout)
	fill(&p.MinReporters, d.MinReporters)
	fillD(&p.ReportInterval, d.ReportInterval)
	return p
}

// Validate checks every field and names the first one at fault.
func (p Policy) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &fsm.ArgumentError{Domain: "circuit", FieldName: field, Code: "INVALID_POLICY", Msg: fmt.Sprintf(format, args...)}
	}
	intIn := func(field string, v, lo, hi int) error {
		if v < lo || v > hi {
			return bad(field, "%d is outside %d..%d", v, lo, hi)
		}
		return nil
	}
	durIn := func(field string, v, lo, hi time.Duration) error {
		if v < lo || v > hi {
			return bad(field, "%v is outside %v..%v", v, lo, hi)
		}
		return nil
	}
	for _, err := range []error{
		intIn("failure_threshold", p.FailureThreshold, 1, 1000),
		intIn("minimum_calls", p.MinimumCalls, 1, 100000),
		intIn("window_size", p.WindowSize, 1, 100000),
		durIn("window_duration", p.WindowDuration, time.Second, time.Hour),
		durIn("slow_call_duration", p.SlowCallDuration, time.Millisecond, time.Hour),
		durIn("recovery_timeout", p.RecoveryTimeout, 100*time.Millisecond, 24*time.Hour),
		intIn("half_open_max_calls", p.HalfOpenMaxCalls, 1, 1000),
		intIn("success_threshold", p.SuccessThreshold, 1, 1000),
		durIn("half_open_stuck_timeout", p.HalfOpenStuckTimeout, time.Second, 24*time.Hour),
		intIn("min_reporters", p.MinReporters, 1, 10000),
		durIn("report_interval", p.ReportInterval, 10*time.Millisecond, time.Minute),
	} {
		if err != nil {
			return err
		}
	}
	if !(p.FailureRateThreshold >= 0 && p.FailureRateThreshold <= 100) {
		return bad("failure_rate_threshold", "%v is outside 0..100", p.FailureRateThreshold)
	}
	if !(p.SlowCallRateThreshold >= 0 && p.SlowCallRateThreshold <= 100) {
		return bad("slow_call_rate_threshold", "%v is outside 0..100", p.SlowCallRateThreshold)
	}
	if p.WindowType != CountWindow && p.WindowType != TimeWindow {
		return bad("window_type", "unknown window type %d", p.WindowType)
	}
	if p.SuccessThreshold > p.HalfOpenMaxCalls {
		return bad("success_threshold", "%d exceeds half_open_max_calls %d: the breaker could never close", p.SuccessThreshold, p.HalfOpenMaxCalls)
	}
	return nil
}

// Evidence is what a transition was based on.
type Evidence struct {
	WindowCalls         int64  `json:"window_calls"`
	WindowFailures      int64  `json:"window_failures"`
	WindowSlowCalls     int64  `json:"window_slow_calls"`
	ConsecutiveFailures int64  `json:"consecutive_failures"`
	Reporters           int    `json:"reporters"`
	Trigger             string `json:"trigger"`
}

// Triggers recorded in Evidence.Trigger.
const (
	TriggerFailureThreshold = "failure_threshold_exceeded"
	TriggerFailureRate      = "failure_rate_threshold_exceeded"
	TriggerSlowCallRate     = "slow_call_rate_threshold_exceeded"
	TriggerHalfOpenFailure  = "half_open_failure"
	TriggerProbesSucceeded  = "probes_succeeded"
	TriggerRecoveryTimeout  = "recovery_timeout"
	TriggerForceOpen        = "force_open"
	TriggerForceClose       = "force_close"
	TriggerForceExpired     = "force_expired"
	TriggerReset            = "reset"
)

// Breaker is one replicated breaker.
type Breaker struct {
	Name     string    `json:"name"`
	State    State     `json:"state"`
	Policy   Policy    `json:"policy"`
	OpenedAt time.Time `json:"opened_at"`
	// OpenedRevision names the current OPEN period (the index that opened it).
	OpenedRevision uint64   `json:"opened_revision,omitempty"`
	Evidence       Evidence `json:"evidence"`

	Pinned       bool      `json:"pinned,omitempty"`
	PinReason    string    `json:"pin_reason,omitempty"`
	PinnedBy     string    `json:"pinned_by,omitempty"`
	PinExpiresAt time.Time `json:"pin_expires_at"`
	PinRevision  uint64    `json:"pin_revision,omitempty"`

	ProbeWindow          uint64    `json:"probe_window,omitempty"`
	ProbeWindowStartedAt time.Time `json:"probe_window_started_at"`
	ProbesGranted        int       `json:"probes_granted,omitempty"`
	ProbeSuccesses       int       `json:"probe_successes,omitempty"`

	// Epoch is the revision of the last reset, close or policy change:
	// outcomes reported under an older revision are not counted.
	Epoch uint64 `json:"epoch,omitempty"`

	Revision uint64 `json:"revision"`
}

// Result describes what a change function did. Changed is false for a
// no-op; Granted reports a probe permit.
type Result struct {
	fsm.Change
	Name    string
	Breaker Breaker
	Granted bool
}

// Applied is r in the dispatcher's vocabulary: the action qualified with
// the domain, the target the breaker.
func (r Result) Applied() fsm.Applied {
	c := r.Change
	c.Action, c.Target = "circuit."+c.Action, "circuit/"+r.Name
	return fsm.Applied{Change: c, Value: r}
}

// Limits.
const (
	MaxNameLength   = 100
	MaxReasonLength = 500
	MinForceTTL     = time.Minute
	MaxForceTTL     = 1440 * time.Minute
	DefaultForceTTL = 90 * time.Minute
)

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/-]*$`)

// Errors.
var (
	ErrNotFound = errors.New("circuit: breaker not found")
)

// CheckName validates a breaker name.
func CheckName(name string) error {
	if name == "" || len(name) > MaxNameLength || !namePattern.MatchString(name) {
		return &fsm.ArgumentError{Domain: "circuit", FieldName: "name", Code: "INVALID_NAME", Msg: fmt.Sprintf("%q is not a breaker name (letters, digits, '.', '_', ':', '/', '-'; at most %d)", name, MaxNameLength)}
	}
	return nil
}

// CheckReason validates a required reason.
func CheckReason(reason string) error {
	if strings.TrimSpace(reason) == "" {
		return &fsm.ArgumentError{Domain: "circuit", FieldName: "reason", Code: "REASON_REQUIRED", Msg: "a reason is required"}
	}
	if len(reason) > MaxReasonLength {
		return &fsm.ArgumentError{Domain: "circuit", FieldName: "reason", Code: "REASON_TOO_LONG", Msg: fmt.Sprintf("%d bytes, at most %d", len(reason), MaxReasonLength)}
	}
	return nil
}

// CheckTTL validates a force TTL; zero means the default.
func CheckTTL(ttl time.Duration) (time.Duration, error) {
	if ttl == 0 {
		return DefaultForceTTL, nil
	}
	if ttl < MinForceTTL || ttl > MaxForceTTL || ttl%time.Minute != 0 {
		return 0, &fsm.ArgumentError{Domain: "circuit", FieldName: "ttl", Code: "TTL_OUT_OF_RANGE", Msg: fmt.Sprintf("%v: use whole minutes from 1m to 1440m", ttl)}
	}
	return ttl, nil
}

func marshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("circuit: encode %T: %v", v, err))
	}
	return b
}

// Probing reports whether the breaker hands out probe permits now:
// HALF_OPEN and not pinned. The FSM decides each permit; this spares a log
// entry when none can be granted.
func (b Breaker) Probing() bool { return b.State == HalfOpen && !b.Pinned }
