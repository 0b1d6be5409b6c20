package config

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
)

// Section names.
const (
	Bulkheads       = "bulkheads"
	CircuitDefaults = "circuit_defaults"
	DLQ             = "dlq"
	Emergency       = "emergency"
	Flags           = "flags"
	RateLimits      = "rate_limits"
	RetryDefaults   = "retry_defaults"
	Throttles       = "throttles"
)

// Sections is every section, sorted.
var Sections = []string{Bulkheads, CircuitDefaults, DLQ, Emergency, Flags, RateLimits, RetryDefaults, Throttles}

// EntrySections are the sections that are maps of named entries, each of
// which may be set or removed on its own (ConfigSet.entry).
var EntrySections = []string{Bulkheads, RateLimits, Throttles}

// MaxEntries is how many entries one such section holds.
const MaxEntries = 1000

// ErrEntryNotFound is the removal of an entry the section does not have.
var ErrEntryNotFound = errors.New("config: no such entry")

// MaxHistory is how many changes of one section are kept.
const MaxHistory = 100

// Buckets.
var (
	BucketSections = []byte("config_sections") // section → Section JSON
	BucketHistory  = []byte("config_history")  // section 0x00 version (8 bytes BE) → Change JSON
)

// Buckets lists this domain's buckets.
func Buckets() [][]byte { return [][]byte{BucketSections, BucketHistory} }

// Section is a section as set: its values and who set them when.
type Section struct {
	Name     string          `json:"name"`
	Version  uint64          `json:"version"`
	Values   json.RawMessage `json:"values"`
	Revision uint64          `json:"revision"`
	Time     time.Time       `json:"time"`
	Actor    string          `json:"actor"`
	Reason   string          `json:"reason,omitempty"`
}

// Change is one entry of a section's history.
type Change struct {
	Version  uint64          `json:"version"`
	Before   json.RawMessage `json:"before"`
	After    json.RawMessage `json:"after"`
	Revision uint64          `json:"revision"`
	Time     time.Time       `json:"time"`
	Actor    string          `json:"actor"`
	Reason   string          `json:"reason,omitempty"`
}

// VersionError is a write made against a version the section no longer
// has.
type VersionError struct {
	Section           string
	Expected, Current uint64
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("config: section %s is at version %d, not %d: read it again and reapply the change", e.Section, e.Current, e.Expected)
}

// CheckSection validates a section name.
func CheckSection(name string) error {
	for _, s := range Sections {
		if s == name {
			return nil
		}
	}
	return &fsm.ArgumentError{Domain: "config", FieldName: "section", Code: "UNKNOWN_SECTION",
		Msg: fmt.Sprintf("%q is not a section; use one of %s", name, strings.Join(Sections, ", "))}
}

// Get returns the section as set (ok false while it was never set).
func Get(kv fsm.KV, name string) (Section, bool) {
	v := kv.Get(BucketSections, []byte(name))
	if v == nil {
		return Section{Name: name}, false
	}
	var s Section
	if err := json.Unmarshal(v, &s); err != nil {
		panic(fmt.Sprintf("config: decode section %s: %v", name, err))
	}
	return s, true
}

// Revision is the index of the newest change of any section (0: none).
func Revision(kv fsm.KV) uint64 {
	var rev uint64
	for _, name := range Sections {
		if s, ok := Get(kv, name); ok && s.Revision > rev {
			rev = s.Revision
		}
	}
	return rev
}

func historyKey(name string, version uint64) []byte {
	k := make([]byte, 0, len(name)+9)
	k = append(append(k, name...), 0)
	return binary.BigEndian.AppendUint64(k, version)
}

// History returns up to limit changes of a section with a version below
// before (0: from the newest), newest first.
func History(kv fsm.KV, name string, before uint64, limit int) []Change {
	var out []Change
	prefix := append([]byte(name), 0)
	start := historyKey(name, math.MaxUint64)
	if before != 0 {
		start = historyKey(name, before-1)
	}
	kv.Scan(BucketHistory, start, true, func(k, v []byte) bool {
		if len(k) != len(prefix)+8 || !bytes.HasPrefix(k, prefix) {
			return false
		}
		var c Change
		if err := json.Unmarshal(v, &c); err != nil {
			panic(fmt.Sprintf("config: decode history: %v", err))
		}
		out = append(out, c)
		return len(out) < limit
	})
	return out
}

// Result is what Set did.
type Result struct {
	fsm.Change
	Section Section
}

// Applied is r in the dispatcher's vocabulary.
func (r Result) Applied() fsm.Applied {
	c := r.Change
	c.Action, c.Target = "config."+c.Action, "config/"+r.Section.Name
	return fsm.Applied{Change: c, Value: r}
}

// Check refuses a ConfigSet that Set would refuse, before anything is
// written (the dispatcher checks it before the emergency domain applies its
// part of the emergency section).
func Check(kv fsm.KV, c *raftv1.ConfigSet) error {
	if err := CheckSection(c.GetSection()); err != nil {
		return err
	}
	removal := c.GetDeleteEntry() && c.GetEntry() != ""
	if v := c.GetValuesJson(); !removal && (!json.Valid(v) || len(v) == 0 || v[0] != '{') {
		return &fsm.ArgumentError{Domain: "config", FieldName: "values", Code: "INVALID_CONFIG", Msg: "is not a JSON object"}
	}
	cur, _ := Get(kv, c.GetSection())
	if c.GetCheckVersion() && c.GetExpectedVersion() != cur.Version {
		return &VersionError{Section: c.GetSection(), Expected: c.GetExpectedVersion(), Current: cur.Version}
	}
	return nil
}

// withEntry is a map section's values with one entry set (or removed).
func withEntry(kv fsm.KV, c *raftv1.ConfigSet) (json.RawMessage, error) {
	if !slices.Contains(EntrySections, c.GetSection()) {
		return nil, &fsm.ArgumentError{Domain: "config", FieldName: "section", Code: "INVALID_ARGUMENT",
			Msg: fmt.Sprintf("%s is not a section of named entries (%s are)", c.GetSection(), strings.Join(EntrySections, ", "))}
	}
	entries := map[string]json.RawMessage{}
	if cur, ok := Get(kv, c.GetSection()); ok {
		if err := json.Unmarshal(cur.Values, &entries); err != nil {
			panic(fmt.Sprintf("config: decode section %s: %v", c.GetSection(), err))
		}
	}
	_, exists := entries[c.GetEntry()]
	switch {
	case c.GetDeleteEntry() && !exists:
		return nil, fmt.Errorf("%w: %s has no %q", ErrEntryNotFound, c.GetSection(), c.GetEntry())
	case c.GetDeleteEntry():
		delete(entries, c.GetEntry())
	case !exists && len(entries) >= MaxEntries:
		return nil, &fsm.ArgumentError{Domain: "config", FieldName: "name", Code: "LIMIT_EXCEEDED",
			Msg: fmt.Sprintf("section %s holds %d entries already, the most it may", c.GetSection(), MaxEntries)}
	default:
		entries[c.GetEntry()] = json.RawMessage(c.GetValuesJson())
	}
	return marshal(entries), nil
}

// Set replaces a section's values (or, with an entry, one entry of a map
// section): version + 1, a history entry, the oldest entries beyond
// MaxHistory removed.
func Set(kv fsm.KV, m fsm.Meta, c *raftv1.ConfigSet) (Result, error) {
	if err := Check(kv, c); err != nil {
		return Result{}, err
	}
	cur, set := Get(kv, c.GetSection())
	before := cur.Values
	if prev := c.GetPreviousJson(); !set && json.Valid(prev) {
		before = json.RawMessage(prev)
	}
	values := json.RawMessage(c.GetValuesJson())
	if c.GetEntry() != "" {
		v, err := withEntry(kv, c)
		if err != nil {
			return Result{}, err
		}
		values = v
	}
	next := Section{Name: c.GetSection(), Version: cur.Version + 1, Values: values,
		Revision: m.Index, Time: m.Time, Actor: m.Actor, Reason: m.Reason}
	kv.Put(BucketSections, []byte(next.Name), marshal(next))
	kv.Put(BucketHistory, historyKey(next.Name, next.Version), marshal(Change{
		Version: next.Version, Before: before, After: next.Values, Revision: m.Index, Time: m.Time, Actor: m.Actor, Reason: m.Reason}))
	if next.Version > MaxHistory {
		kv.Delete(BucketHistory, historyKey(next.Name, next.Version-MaxHistory))
	}
	var b, a any
	if len(before) > 0 {
		b = before
	}
	a = next.Values
	return Result{Change: fsm.Change{Changed: true, Action: "set", Before: b, After: a}, Section: next}, nil
}

func marshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("config: encode: %v", err))
	}
	return b
}

// Retry is what an SDK's retry stage uses for the fields a call leaves out.
type Retry struct {
	MaxAttempts int           `json:"max_attempts"`
	Backoff     string        `json:"backoff"`
	BaseDelay   time.Duration `json:"base_delay"`
	MaxDelay    time.Duration `json:"max_delay"`
	Multiplier  float64       `json:"multiplier"`
	Jitter      float64       `json:"jitter"`
	MaxElapsed  time.Duration `json:"max_elapsed"`
}

// DefaultRetry is Baldur's retry defaults (§3): three attempts, exponential
// from 1 s to 60 s, doubling, 20 % jitter.
func DefaultRetry() Retry {
	return Retry{MaxAttempts: 3, Backoff: "exponential", BaseDelay: time.Second, MaxDelay: 60 * time.Second, Multiplier: 2, Jitter: 0.2}
}

// Backoffs are the retry strategies.
var Backoffs = []string{"exponential", "linear", "constant", "decorrelated"}

func invalid(field, msg string) error {
	return &fsm.ArgumentError{Domain: "config", FieldName: "values." + field, Code: "INVALID_CONFIG", Msg: msg}
}

// Validate checks r and names the first field at fault.
func (r Retry) Validate() error {
	switch {
	case r.MaxAttempts < 1 || r.MaxAttempts > 10:
		return invalid("max_attempts", fmt.Sprintf("%d is outside 1..10", r.MaxAttempts))
	case !contains(Backoffs, r.Backoff):
		return invalid("backoff", fmt.Sprintf("%q: use one of %s", r.Backoff, strings.Join(Backoffs, ", ")))
	case r.BaseDelay < time.Millisecond || r.BaseDelay > time.Hour:
		return invalid("base_delay", fmt.Sprintf("%v is outside 1ms..1h", r.BaseDelay))
	case r.MaxDelay < r.BaseDelay || r.MaxDelay > time.Hour:
		return invalid("max_delay", fmt.Sprintf("%v is outside base_delay (%v)..1h", r.MaxDelay, r.BaseDelay))
	case !(r.Multiplier >= 1 && r.Multiplier <= 10):
		return invalid("multiplier", fmt.Sprintf("%v is outside 1..10", r.Multiplier))
	case !(r.Jitter >= 0 && r.Jitter <= 1):
		return invalid("jitter", fmt.Sprintf("%v is outside 0..1", r.Jitter))
	case r.MaxElapsed < 0 || r.MaxElapsed > 24*time.Hour:
		return invalid("max_elapsed", fmt.Sprintf("%v is outside 0..24h", r.MaxElapsed))
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Flag is a named feature flag.
type Flag struct {
	Enabled     bool    `json:"enabled"`
	Value       string  `json:"value,omitempty"`
	Percentage  float64 `json:"percentage"`
	Description string  `json:"description,omitempty"`
}

// FlagSet is the flags section: flag name → flag.
type FlagSet map[string]Flag

// Limits of the flags section.
const (
	MaxFlags            = 1000
	MaxFlagValue        = 1024
	MaxFlagDescription  = 256
	maxFlagNameLength   = 64
	flagNamePatternText = `^[a-z0-9][a-z0-9._-]{0,63}$`
)

var flagName = regexp.MustCompile(flagNamePatternText)

// Validate checks every flag and names the first at fault.
func (f FlagSet) Validate() error {
	if len(f) > MaxFlags {
		return &fsm.ArgumentError{Domain: "config", FieldName: "values", Code: "INVALID_CONFIG", Msg: fmt.Sprintf("%d flags: at most %d", len(f), MaxFlags)}
	}
	for name, fl := range f {
		switch {
		case !flagName.MatchString(name):
			return invalid(name, fmt.Sprintf("is not a flag name (%s)", flagNamePatternText))
		case !(fl.Percentage >= 0 && fl.Percentage <= 100):
			return invalid(name+".percentage", fmt.Sprintf("%v is outside 0..100", fl.Percentage))
		case len(fl.Value) > MaxFlagValue:
			return invalid(name+".value", fmt.Sprintf("is %d bytes: at most %d", len(fl.Value), MaxFlagValue))
		case len(fl.Description) > MaxFlagDescription:
			return invalid(name+".description", fmt.Sprintf("is %d bytes: at most %d", len(fl.Description), MaxFlagDescription))
		}
	}
	return nil
}
