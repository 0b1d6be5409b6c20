package baldur

import (
	"sync/atomic"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
)

// Config is the cluster's runtime configuration as this client last
// received it: feature flags, retry defaults, breaker defaults and each
// section's version. It arrives on the emergency watch the client already
// holds and is fail-static: while the cluster is unreachable the last
// values stay in force (before the first, the built-in defaults).
type Config struct {
	snap atomic.Pointer[configSnapshot]
}

type configSnapshot struct {
	flags map[string]flagState
	retry Retry
	// retrySet: the cluster has set retry_defaults (retry is complete).
	retrySet bool
	breaker  BreakerDefaults
	versions map[string]uint64
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

func newConfig() *Config {
	c := &Config{}
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
	next := &configSnapshot{flags: make(map[string]flagState, len(rc.Flags)), versions: make(map[string]uint64, len(rc.Versions))}
	for name, f := range rc.Flags {
		p := 100.0
		if f.Percentage != nil {
			p = f.GetPercentage()
		}
		next.flags[name] = flagState{enabled: f.Enabled, value: f.Value, cut: uint32(min(max(p, 0), 100)*100 + 0.5)}
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
	h.snap.Store(next)
}
