package canary

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/baldurhq/baldurd/internal/fsm"
)

// State is a rollout's lifecycle state.
type State int

// States (Baldur §13.3).
const (
	Created State = iota
	Canary
	Paused
	Completed
	RolledBack
	Cancelled
	Failed
)

var stateNames = [...]string{"CREATED", "CANARY", "PAUSED", "COMPLETED", "ROLLED_BACK", "CANCELLED", "FAILED"}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Terminal states never change again.
func (s State) Terminal() bool {
	return s == Completed || s == RolledBack || s == Cancelled || s == Failed
}

// Active rollouts hold their section.
func (s State) Active() bool { return !s.Terminal() }

// Criteria judge a stage (Baldur §13.2 PassCriteria).
type Criteria struct {
	ErrorRateAbsoluteMax float64       `json:"error_rate_absolute_max"`
	ErrorRateIncreaseMax float64       `json:"error_rate_increase_max"`
	LatencyP95DeltaMs    float64       `json:"latency_p95_delta_ms"`
	LatencyP99DeltaPct   float64       `json:"latency_p99_delta_pct"`
	MinRequests          int64         `json:"min_requests"`
	EvaluationWindow     time.Duration `json:"evaluation_window"`
}

// DefaultCriteria are Baldur's PassCriteria defaults.
func DefaultCriteria() Criteria {
	return Criteria{ErrorRateAbsoluteMax: 0.05, ErrorRateIncreaseMax: 0.01, LatencyP95DeltaMs: 50, LatencyP99DeltaPct: 0.2,
		MinRequests: 100, EvaluationWindow: 300 * time.Second}
}

// Tiers and their error-rate floors (PassCriteria.for_tier): a stage may
// ask for a stricter error rate, never a looser one.
var tierFloors = map[string]float64{"critical": 0.03, "standard": 0.05, "non_essential": 0.10}

// DefaultTier is the tier of a rollout that names none.
const DefaultTier = "standard"

// WithFloor is c with the tier's error-rate floor applied.
func (c Criteria) WithFloor(tier string) Criteria {
	if f, ok := tierFloors[tier]; ok && c.ErrorRateAbsoluteMax > f {
		c.ErrorRateAbsoluteMax = f
	}
	return c
}

// Stage is one step of a rollout.
type Stage struct {
	Name        string        `json:"name"`
	Percentage  float64       `json:"percentage"`
	Duration    time.Duration `json:"duration"`
	AutoPromote bool          `json:"auto_promote"`
	Criteria    Criteria      `json:"criteria"`
}

// Selection is how the SDK picks requests for the canary values
// (Canary(section).Use(key), Baldur §13.5).
type Selection struct {
	Strategy  string   `json:"strategy"`
	AllowList []string `json:"allow_list,omitempty"`
	Header    string   `json:"header,omitempty"`
}

// Strategies of Selection.
var Strategies = []string{"user_id_hash", "random", "header", "allow_list"}

// Rollout is one staged change of a configuration section.
type Rollout struct {
	ID             string          `json:"id"`
	Section        string          `json:"section"`
	NewValues      json.RawMessage `json:"new_values"`
	PreviousValues json.RawMessage `json:"previous_values"`
	SectionVersion uint64          `json:"section_version"`
	Stages         []Stage         `json:"stages"`
	Tier           string          `json:"tier"`
	Selection      Selection       `json:"selection"`

	State          State     `json:"state"`
	Stage          int       `json:"stage"`
	Version        uint64    `json:"version"`
	Reason         string    `json:"reason,omitempty"`
	CreatedBy      string    `json:"created_by"`
	CreatedAt      time.Time `json:"created_at"`
	StageStartedAt time.Time `json:"stage_started_at"`
	PausedAt       time.Time `json:"paused_at"`
	PausedBy       string    `json:"paused_by,omitempty"`
	// InterlockPaused: paused by the emergency interlock (no automatic
	// resume).
	InterlockPaused bool      `json:"interlock_paused,omitempty"`
	FinishedAt      time.Time `json:"finished_at"`
	FinishedBy      string    `json:"finished_by,omitempty"`
	FinishReason    string    `json:"finish_reason,omitempty"`
	Flagged         bool      `json:"flagged,omitempty"`
	Stuck           bool      `json:"stuck,omitempty"`
	Evidence        *Evidence `json:"evidence,omitempty"`
	Revision        uint64    `json:"revision"`
}

// Progress is the percent of the stages done.
func (r Rollout) Progress() float64 {
	switch {
	case r.State == Completed:
		return 100
	case r.State == Created || len(r.Stages) == 0:
		return 0
	}
	return float64(r.Stage) / float64(len(r.Stages)) * 100
}

// Percentage is the canary cohort's share now: its stage's in CANARY and
// PAUSED (a pause holds the stage; it does not take the values back), 0
// otherwise.
func (r Rollout) Percentage() float64 {
	if (r.State != Canary && r.State != Paused) || r.Stage >= len(r.Stages) {
		return 0
	}
	return r.Stages[r.Stage].Percentage
}

// Limits on a rollout.
const (
	MaxStages       = 20
	MaxNameLength   = 64
	MaxReasonLength = 1024
	MaxAllowList    = 1000
	MinBypassReason = 10
	MaxStageTime    = 7 * 24 * time.Hour
	// Retention is how long a finished rollout is kept; MaxRollouts how
	// many are kept at most (a create beyond is refused); MaxHistory how
	// many transitions.
	Retention   = 7 * 24 * time.Hour
	MaxRollouts = 1000
	MaxHistory  = 10000
	// StuckPaused is how long a rollout may stay PAUSED before the
	// watchdog flags it.
	StuckPaused = 30 * time.Minute
)

var (
	idPattern     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	headerPattern = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
)

func invalid(field, msg string) error {
	return &fsm.ArgumentError{Domain: "canary", FieldName: field, Code: "INVALID_ROLLOUT", Msg: msg}
}

// Validate checks a rollout to create and names the first field at fault
// (the request's field names: stages[1].percentage).
func Validate(r Rollout) error {
	if !idPattern.MatchString(r.ID) {
		return invalid("id", fmt.Sprintf("%q: use letters, digits, '.', '_', '-' (at most 64)", r.ID))
	}
	if len(r.Reason) > MaxReasonLength {
		return invalid("reason", fmt.Sprintf("is %d bytes: at most %d", len(r.Reason), MaxReasonLength))
	}
	if _, ok := tierFloors[r.Tier]; !ok {
		return invalid("tier", fmt.Sprintf("%q: use critical, standard or non_essential", r.Tier))
	}
	if len(r.Stages) == 0 || len(r.Stages) > MaxStages {
		return invalid("stages", fmt.Sprintf("has %d stages: give 1..%d", len(r.Stages), MaxStages))
	}
	if !json.Valid(r.NewValues) || !json.Valid(r.PreviousValues) {
		return invalid("new_values", "is not JSON")
	}
	names := map[string]bool{}
	for i, s := range r.Stages {
		f := fmt.Sprintf("stages[%d]", i)
		switch {
		case s.Name == "" || len(s.Name) > MaxNameLength || strings.ContainsFunc(s.Name, func(r rune) bool { return r < ' ' }):
			return invalid(f+".name", fmt.Sprintf("must be 1..%d printable characters", MaxNameLength))
		case names[s.Name]:
			return invalid(f+".name", fmt.Sprintf("%q names two stages", s.Name))
		case !(s.Percentage > 0 && s.Percentage <= 100):
			return invalid(f+".percentage", fmt.Sprintf("%v is outside 0 (excluded)..100", s.Percentage))
		case i > 0 && s.Percentage <= r.Stages[i-1].Percentage:
			return invalid(f+".percentage", fmt.Sprintf("%v does not rise above stage %d's %v: order stages by percentage", s.Percentage, i-1, r.Stages[i-1].Percentage))
		case s.Duration <= 0 || s.Duration > MaxStageTime:
			return invalid(f+".duration", fmt.Sprintf("%v is outside 0 (excluded)..%v", s.Duration, MaxStageTime))
		}
		names[s.Name] = true
		if err := s.Criteria.validate(f + ".pass_criteria"); err != nil {
			return err
		}
	}
	switch r.Selection.Strategy {
	case "user_id_hash", "random", "header", "allow_list":
	default:
		return invalid("selection.strategy", fmt.Sprintf("%q: use one of %s", r.Selection.Strategy, strings.Join(Strategies, ", ")))
	}
	if len(r.Selection.AllowList) > MaxAllowList {
		return invalid("selection.allow_list", fmt.Sprintf("has %d entries: at most %d", len(r.Selection.AllowList), MaxAllowList))
	}
	if r.Selection.Header != "" && !headerPattern.MatchString(r.Selection.Header) {
		return invalid("selection.header", fmt.Sprintf("%q is not a header name", r.Selection.Header))
	}
	return nil
}

func (c Criteria) validate(f string) error {
	switch {
	case !(c.ErrorRateAbsoluteMax >= 0 && c.ErrorRateAbsoluteMax <= 1):
		return invalid(f+".error_rate_absolute_max", fmt.Sprintf("%v is outside 0..1", c.ErrorRateAbsoluteMax))
	case !(c.ErrorRateIncreaseMax >= 0 && c.ErrorRateIncreaseMax <= 1):
		return invalid(f+".error_rate_increase_max", fmt.Sprintf("%v is outside 0..1", c.ErrorRateIncreaseMax))
	case !(c.LatencyP95DeltaMs >= 0 && c.LatencyP95DeltaMs <= 3_600_000):
		return invalid(f+".latency_p95_delta_ms", fmt.Sprintf("%v is outside 0..3600000", c.LatencyP95DeltaMs))
	case !(c.LatencyP99DeltaPct >= 0 && c.LatencyP99DeltaPct <= 100):
		return invalid(f+".latency_p99_delta_pct", fmt.Sprintf("%v is outside 0..100", c.LatencyP99DeltaPct))
	case c.MinRequests < 1 || c.MinRequests > 1_000_000_000:
		return invalid(f+".min_requests", fmt.Sprintf("%d is outside 1..1000000000", c.MinRequests))
	case c.EvaluationWindow < 10*time.Second || c.EvaluationWindow > time.Hour:
		return invalid(f+".evaluation_window", fmt.Sprintf("%v is outside 10s..1h", c.EvaluationWindow))
	}
	return nil
}

// InCohort reports whether an SDK instance is in a rollout's canary cohort
// at percentage: the first four bytes of sha256("{rollout id}:{instance
// id}"), big-endian, modulo 10000, below percentage in hundredths. Sticky:
// the same instance stays in as the percentage rises.
func InCohort(rolloutID, instanceID string, percentage float64) bool {
	return Bucket(rolloutID, instanceID) < uint32(percentage*100+0.5)
}

// Bucket is sha256("{a}:{b}")[:4] (big-endian) modulo 10000.
func Bucket(a, b string) uint32 {
	h := sha256.Sum256([]byte(a + ":" + b))
	return binary.BigEndian.Uint32(h[:4]) % 10000
}

// Errors.
var (
	ErrNotFound = errors.New("canary: rollout not found")
	// ErrJudgment is an operator's promotion (without force) of a stage
	// whose judgment fails or lacks evidence.
	ErrJudgment = errors.New("canary: the stage's judgment does not allow a promotion")
)

// ConflictError is a section held by an active rollout.
type ConflictError struct{ Section, Holder string }

func (e *ConflictError) Error() string {
	return fmt.Sprintf("canary: section %s is held by rollout %s until it completes, rolls back or is cancelled", e.Section, e.Holder)
}

// StageConflictError is a promotion of a stage the rollout has left.
type StageConflictError struct {
	ID                string
	Expected, Current int
}

func (e *StageConflictError) Error() string {
	return fmt.Sprintf("canary: rollout %s is at stage %d, not %d: someone else promoted it", e.ID, e.Current, e.Expected)
}

// TransitionError is an action the rollout's state does not allow.
type TransitionError struct {
	ID     string
	Action string
	From   State
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("canary: rollout %s is %s: it cannot %s", e.ID, e.From, e.Action)
}

// BlockedError is a start, promotion or resume refused by a gate.
type BlockedError struct{ Why string }

func (e *BlockedError) Error() string {
	return fmt.Sprintf("canary: refused by the pre-action gate: %s Give bypass_reason (at least %d characters) to go ahead anyway.", e.Why, MinBypassReason)
}
