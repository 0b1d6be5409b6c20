package baldur

import (
	"crypto/sha256"
	"encoding/binary"
	"hash/maphash"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"google.golang.org/protobuf/proto"
)

// Config is the cluster's runtime configuration as this client last
// received it: feature flags, retry defaults, breaker defaults and each
// section's version. It arrives on the emergency watch the client already
// holds and is fail-static: while the cluster is unreachable the last
// values stay in force (before the first, the built-in defaults).
type Config struct {
	instance string
	snap     atomic.Pointer[configSnapshot]
	// buckets remembers request keys' buckets (RequestBucket costs a
	// SHA-256; the keys a service sees recur): a direct-mapped cache,
	// lock-free, an entry replaced when another key maps to its slot;
	// made on the first Use (128 KiB).
	buckets atomic.Pointer[[bucketSlots]atomic.Pointer[bucketEntry]]
	seed    maphash.Seed
	// dryRun is the system control's dry run: breakers and emergency
	// admission decide and count, and let every call through.
	dryRun atomic.Bool
	mode   atomic.Pointer[string]
	// onChange is told of each configuration installed (the admission
	// handles follow it).
	onChange func(*configSnapshot)
}

// DryRun reports whether the cluster's system control is in dry run.
func (h *Config) DryRun() bool { return h.dryRun.Load() }

// Mode is the cluster's operating mode, NORMAL or STRICT ("" before the
// first configuration arrives).
func (h *Config) Mode() string {
	if m := h.mode.Load(); m != nil {
		return *m
	}
	return ""
}

const bucketSlots = 16384

type bucketEntry struct {
	section, key string
	bucket       uint32
}

// requestBucket is RequestBucket through the cache.
func (h *Config) requestBucket(section, key string) uint32 {
	cache := h.buckets.Load()
	if cache == nil {
		h.buckets.CompareAndSwap(nil, new([bucketSlots]atomic.Pointer[bucketEntry]))
		cache = h.buckets.Load()
	}
	slot := &cache[(maphash.String(h.seed, key)+uint64(len(section)))%bucketSlots]
	if e := slot.Load(); e != nil && e.key == key && e.section == section {
		return e.bucket
	}
	b := RequestBucket(section, key)
	slot.Store(&bucketEntry{section: section, key: key, bucket: b})
	return b
}

type configSnapshot struct {
	flags map[string]flagState
	retry Retry
	// retrySet: the cluster has set retry_defaults (retry is complete).
	retrySet bool
	breaker  BreakerDefaults
	versions map[string]uint64
	// Rollouts in CANARY, by section; the rollouts whose canary cohort
	// this instance is in, and those whose baseline it is in (its reports
	// carry both).
	rollouts         map[string]*rolloutState
	canary, baseline []string
	// The admission primitives by name (admission.go).
	rateLimits map[string]*pb.RateLimitConfig
	bulkheads  map[string]*pb.BulkheadConfig
	throttles  map[string]*pb.ThrottleConfig
}

type rolloutState struct {
	id, section string
	stage       int
	percentage  float64
	inCohort    bool
	strategy    string
	allow       map[string]bool
}

type flagState struct {
	enabled bool
	value   string
	// cut is the percentage in hundredths: a key is in when its bucket
	// (0..9999) is below it.
	cut uint32
}

// BreakerDefaults is the policy the cluster gives breakers registered on
// first report (the circuit_defaults section).
type BreakerDefaults struct {
	FailureThreshold     int
	FailureRateThreshold float64
	MinimumCalls         int
	WindowSize           int
	RecoveryTimeout      time.Duration
	HalfOpenMaxCalls     int
	SuccessThreshold     int
	SlowCallDuration     time.Duration
	ReportInterval       time.Duration
}

func newConfig(instance string) *Config {
	c := &Config{instance: instance, seed: maphash.MakeSeed()}
	c.snap.Store(&configSnapshot{retry: Retry{}.withDefaults(), versions: map[string]uint64{}})
	return c
}

// Config is the runtime configuration's view.
func (c *Client) Config() *Config { return c.config }

// Flag is one feature flag as last received; a flag the cluster does not
// have is off.
type Flag struct {
	name string
	st   flagState
	ok   bool
}

// Flag returns the named flag.
func (h *Config) Flag(name string) Flag {
	st, ok := h.snap.Load().flags[name]
	return Flag{name: name, st: st, ok: ok}
}

// Exists reports whether the cluster has the flag.
func (f Flag) Exists() bool { return f.ok }

// On reports whether the flag is enabled at all (whatever its percentage).
func (f Flag) On() bool { return f.st.enabled }

// Value is the flag's value ("" when unset).
func (f Flag) Value() string { return f.st.value }

// Enabled reports whether the flag is on for key: enabled, and key's
// bucket, fnv1a32(name + ":" + key) % 10000, below the percentage (in
// hundredths). The same key is in or out on every instance and in every
// language that computes the same hash.
func (f Flag) Enabled(key string) bool {
	if !f.st.enabled {
		return false
	}
	if f.st.cut >= 10000 {
		return true
	}
	return FlagBucket(f.name, key) < f.st.cut
}

// FlagBucket is key's bucket (0..9999) for the flag name: FNV-1a (32 bit)
// of name, ":" and key, modulo 10000.
func FlagBucket(name, key string) uint32 {
	const offset, prime = 2166136261, 16777619
	h := uint32(offset)
	for i := 0; i < len(name); i++ {
		h = (h ^ uint32(name[i])) * prime
	}
	h = (h ^ ':') * prime
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * prime
	}
	return h % 10000
}

// RetryDefaults is the cluster's retry_defaults section (the built-in
// defaults before it arrives): what WithRetry uses for the fields a call
// leaves out.
func (h *Config) RetryDefaults() Retry { return h.snap.Load().retry }

// retryFor is a call's Retry with the fields it leaves out filled.
func (h *Config) retryFor(r Retry) Retry {
	if s := h.snap.Load(); s.retrySet {
		return r.withBase(s.retry)
	}
	return r.withDefaults()
}

// BreakerDefaults is the cluster's circuit_defaults section.
func (h *Config) BreakerDefaults() BreakerDefaults { return h.snap.Load().breaker }

// Version is a section's version as last received (0: never set, or
// nothing received yet).
func (h *Config) Version(section string) uint64 { return h.snap.Load().versions[section] }

var backoffs = map[string]Backoff{"exponential": BackoffExponential, "linear": BackoffLinear, "constant": BackoffConstant, "decorrelated": BackoffDecorrelated}

// apply installs the configuration a watch message carries.
func (h *Config) apply(rc *pb.RuntimeConfig) {
	if rc == nil {
		return
	}
	if sys := rc.System; sys != nil {
		h.dryRun.Store(sys.DryRun)
		mode := sys.Mode
		h.mode.Store(&mode)
	}
	next := &configSnapshot{versions: make(map[string]uint64, len(rc.Versions)), rollouts: map[string]*rolloutState{}}
	for _, ro := range rc.Rollouts {
		rs := &rolloutState{id: ro.Id, section: ro.Section, stage: int(ro.StageIndex), percentage: ro.Percentage,
			inCohort: InCohort(ro.Id, h.instance, ro.Percentage), strategy: ro.GetSelection().GetStrategy()}
		if list := ro.GetSelection().GetAllowList(); len(list) > 0 {
			rs.allow = make(map[string]bool, len(list))
			for _, k := range list {
				rs.allow[k] = true
			}
		}
		next.rollouts[ro.Section] = rs
		if !rs.inCohort {
			next.baseline = append(next.baseline, ro.Id)
			continue
		}
		// This instance is in the canary cohort: the rollout's values are
		// its values of the section.
		next.canary = append(next.canary, ro.Id)
		v := ro.GetValues()
		switch ro.Section {
		case "flags":
			rc = proto.Clone(rc).(*pb.RuntimeConfig)
			rc.Flags = v.GetFlags()
		case "retry_defaults":
			rc = proto.Clone(rc).(*pb.RuntimeConfig)
			rc.RetryDefaults = v.GetRetryDefaults()
			rc.Versions["retry_defaults"] = max(rc.Versions["retry_defaults"], 1) // set, by the rollout
		case "circuit_defaults":
			rc = proto.Clone(rc).(*pb.RuntimeConfig)
			rc.CircuitDefaults = v.GetCircuitDefaults()
		}
	}
	next.flags = make(map[string]flagState, len(rc.Flags))
	for name, f := range rc.Flags {
		p := 100.0
		if f.Percentage != nil {
			p = f.GetPercentage()
		}
		next.flags[name] = flagState{enabled: f.Enabled, value: f.Value, cut: uint32(min(max(p, 0), 100)*100 + 0.5)}
	}
	if rc.Versions == nil {
		rc.Versions = map[string]uint64{}
	}
	for k, v := range rc.Versions {
		next.versions[k] = v
	}
	next.retry = Retry{}.withDefaults()
	if r := rc.RetryDefaults; r != nil && rc.Versions["retry_defaults"] > 0 {
		next.retry = Retry{MaxAttempts: int(r.MaxAttempts), Backoff: backoffs[r.Backoff], BaseDelay: r.BaseDelay.AsDuration(),
			MaxDelay: r.MaxDelay.AsDuration(), Multiplier: r.Multiplier, Jitter: r.Jitter, MaxElapsed: r.MaxElapsed.AsDuration()}
		next.retry.Increment = next.retry.BaseDelay
		next.retrySet = true
	}
	if p := rc.CircuitDefaults; p != nil {
		next.breaker = BreakerDefaults{FailureThreshold: int(p.FailureThreshold), FailureRateThreshold: p.GetFailureRateThreshold(),
			MinimumCalls: int(p.MinimumCalls), WindowSize: int(p.WindowSize), RecoveryTimeout: p.RecoveryTimeout.AsDuration(),
			HalfOpenMaxCalls: int(p.HalfOpenMaxCalls), SuccessThreshold: int(p.SuccessThreshold), SlowCallDuration: p.SlowCallDuration.AsDuration(),
			ReportInterval: p.ReportInterval.AsDuration()}
	}
	next.rateLimits, next.bulkheads, next.throttles = rc.RateLimits, rc.Bulkheads, rc.Throttles
	h.snap.Store(next)
	if h.onChange != nil {
		h.onChange(next)
	}
}

// InCohort reports whether instance is in a rollout's canary cohort at
// percentage: sha256("{rollout id}:{instance id}")[:4] (big-endian) modulo
// 10000 below the percentage in hundredths. It is the cluster's rule
// (canary.InCohort): sticky, so an instance in at 5 % stays in at 50 %.
func InCohort(rolloutID, instance string, percentage float64) bool {
	h := sha256.Sum256([]byte(rolloutID + ":" + instance))
	return binary.BigEndian.Uint32(h[:4])%10000 < uint32(percentage*100+0.5)
}

// CanaryView is a section's rollout as this client last received it.
type CanaryView struct {
	section string
	r       *rolloutState
	h       *Config
}

// Canary is the view of the rollout of a runtime configuration section
// ("flags", "retry_defaults", "circuit_defaults", "dlq").
func (c *Client) Canary(section string) CanaryView {
	return CanaryView{section: section, r: c.config.snap.Load().rollouts[section], h: c.config}
}

// Active reports whether a rollout of the section is in CANARY.
func (v CanaryView) Active() bool { return v.r != nil }

// RolloutID is the active rollout's id ("" for none).
func (v CanaryView) RolloutID() string {
	if v.r == nil {
		return ""
	}
	return v.r.id
}

// Stage is the active rollout's stage index (-1 for none).
func (v CanaryView) Stage() int {
	if v.r == nil {
		return -1
	}
	return v.r.stage
}

// Percentage is the active stage's share of the fleet (0 for none).
func (v CanaryView) Percentage() float64 {
	if v.r == nil {
		return 0
	}
	return v.r.percentage
}

// InCohort reports whether this instance is in the canary cohort: its
// Config() holds the rollout's values of the section, and its outcome
// reports count for the canary.
func (v CanaryView) InCohort() bool { return v.r != nil && v.r.inCohort }

// Use is request-level selection (Baldur §13.5) by the rollout's
// strategy, for requests identified by key:
//   - user_id_hash (default): sha256("{section}:{key}")[:4] (big-endian)
//     % 100 below the stage's percentage, as Baldur computes it, so a user
//     is in or out in every service and language; an empty key is out;
//   - random: a fresh draw under the percentage;
//   - header: key is the header's value (X-Canary-Config unless the
//     rollout names another): true, 1 or yes;
//   - allow_list: key is on the rollout's list.
//
// Without an active rollout every request uses the baseline.
func (v CanaryView) Use(key string) bool {
	r := v.r
	if r == nil {
		return false
	}
	switch r.strategy {
	case "random":
		return rand.Float64()*100 < r.percentage
	case "header":
		return strings.EqualFold(key, "true") || key == "1" || strings.EqualFold(key, "yes")
	case "allow_list":
		return r.allow[key]
	}
	if key == "" {
		return false
	}
	return float64(v.h.requestBucket(v.section, key)) < r.percentage
}

// RequestBucket is Baldur's request bucket of key for a section:
// sha256("{section}:{key}")[:4] as a big-endian integer, modulo 100.
func RequestBucket(section, key string) uint32 {
	var buf [128]byte
	b := append(append(append(buf[:0], section...), ':'), key...)
	h := sha256.Sum256(b)
	return binary.BigEndian.Uint32(h[:4]) % 100
}

// tracking reports whether a rollout is active (calls' durations are
// then reported).
func (h *Config) tracking() bool { return len(h.snap.Load().rollouts) > 0 }

// cohorts are the rollouts this instance's reports count for.
func (h *Config) cohorts() (canary, baseline []string) {
	s := h.snap.Load()
	return s.canary, s.baseline
}
