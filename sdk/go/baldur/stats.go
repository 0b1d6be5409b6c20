package baldur

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// What the SDK counts, as Baldur's Python library does with its
// baldur_protect_*, baldur_retry_* and baldur_circuit_breaker_* series:
// counters and histograms kept with atomics in this process and read with
// Client.Stats. The core module registers nothing anywhere; the optional
// module github.com/baldurhq/baldurd/sdk/go/baldurprom exports them to
// Prometheus.

// Histogram is a snapshot of a histogram in Prometheus' shape: cumulative
// counts at ascending upper bounds (+Inf is Count).
type Histogram struct {
	Bounds []float64
	Counts []uint64 // Counts[i] observations ≤ Bounds[i]
	Count  uint64
	Sum    float64
}

// Bucket bounds: Baldur's duration buckets, and attempts of a retried call.
var (
	durationBounds = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	attemptBounds  = []float64{1, 2, 3, 4, 5, 7, 10}
	delayBounds    = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
)

// histogram counts observations of whole units (attempts, nanoseconds):
// a bucket add and a sum add, two atomic adds and no lock on the hot path.
// unit is the size of one observed unit in the exported value (1 for
// attempts, 1e-9 for nanoseconds exported as seconds).
type histogram struct {
	bounds  []float64 // in exported units
	limits  []int64   // bounds in observed units
	unit    float64
	buckets []atomic.Uint64 // non-cumulative; the last is +Inf
	sum     atomic.Int64
}

func newHistogram(bounds []float64, unit float64) *histogram {
	h := &histogram{bounds: bounds, unit: unit, buckets: make([]atomic.Uint64, len(bounds)+1)}
	for _, b := range bounds {
		h.limits = append(h.limits, int64(math.Round(b/unit)))
	}
	return h
}

func (h *histogram) observe(v int64) {
	i := 0
	for i < len(h.limits) && v > h.limits[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.sum.Add(v)
}

func (h *histogram) snapshot() Histogram {
	out := Histogram{Bounds: h.bounds, Counts: make([]uint64, len(h.bounds)), Sum: float64(h.sum.Load()) * h.unit}
	for i := range h.buckets {
		out.Count += h.buckets[i].Load()
		if i < len(h.bounds) {
			out.Counts[i] = out.Count
		}
	}
	return out
}

// ProtectStats counts one name's protected calls (Protect/ProtectWithMeta).
type ProtectStats struct {
	// Attempts and Duration by outcome: baldur_protect_attempts and
	// baldur_protect_duration_seconds{outcome}. An outcome no call had is
	// absent.
	Attempts map[Outcome]Histogram
	Duration map[Outcome]Histogram
	// Fallbacks counts calls the fallback served (baldur_protect_fallback_total).
	Fallbacks uint64
}

// Retry outcomes (the outcome label of baldur_retry_outcomes_total).
const (
	RetrySucceeded    = "success"       // an attempt after the first succeeded
	RetryExhausted    = "exhausted"     // attempts, elapsed budget or deadline ran out
	RetryNonRetryable = "non_retryable" // RetryIf refused an error after a retry
)

var retryOutcomes = []string{RetrySucceeded, RetryExhausted, RetryNonRetryable}

// RetryStats counts the retry stage of one name's calls.
type RetryStats struct {
	// Started counts retries started: attempts after the first
	// (baldur_retry_attempts_started_total).
	Started uint64
	// Outcomes counts retried calls by how they ended
	// (baldur_retry_outcomes_total); a call that succeeded first time is
	// not a retried call.
	Outcomes map[string]uint64
	// Delay is the backoff slept before each retry (baldur_retry_delay_seconds).
	Delay Histogram
}

// callStats is one name's counters.
type callStats struct {
	attempts, duration [outcomeCount]*histogram
	fallbacks          atomic.Uint64
	retryStarted       atomic.Uint64
	retryOutcomes      [3]atomic.Uint64
	retryDelay         *histogram
}

func newCallStats() *callStats {
	s := &callStats{retryDelay: newHistogram(delayBounds, 1e-9)}
	for i := range outcomeCount {
		s.attempts[i], s.duration[i] = newHistogram(attemptBounds, 1), newHistogram(durationBounds, 1e-9)
	}
	return s
}

// callStatsRegistry holds callStats by name.
type callStatsRegistry struct{ m sync.Map }

func (r *callStatsRegistry) of(name string) *callStats {
	if s, ok := r.m.Load(name); ok {
		return s.(*callStats)
	}
	s, _ := r.m.LoadOrStore(name, newCallStats())
	return s.(*callStats)
}

func (s *callStats) call(o Outcome, attempts int, d time.Duration) {
	s.attempts[o].observe(int64(attempts))
	s.duration[o].observe(int64(d))
	if o == OutcomeFallback {
		s.fallbacks.Add(1)
	}
}

func (s *callStats) retried(outcome string) {
	for i, name := range retryOutcomes {
		if name == outcome {
			s.retryOutcomes[i].Add(1)
		}
	}
}

func (s *callStats) protectStats() ProtectStats {
	out := ProtectStats{Attempts: map[Outcome]Histogram{}, Duration: map[Outcome]Histogram{}, Fallbacks: s.fallbacks.Load()}
	for o := range outcomeCount {
		if a := s.attempts[o].snapshot(); a.Count > 0 {
			out.Attempts[Outcome(o)], out.Duration[Outcome(o)] = a, s.duration[o].snapshot()
		}
	}
	return out
}

func (s *callStats) retryStats() RetryStats {
	out := RetryStats{Started: s.retryStarted.Load(), Outcomes: map[string]uint64{}, Delay: s.retryDelay.snapshot()}
	for i, name := range retryOutcomes {
		out.Outcomes[name] = s.retryOutcomes[i].Load()
	}
	return out
}
