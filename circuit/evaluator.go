package circuit

import (
	"slices"
	"sync"
	"time"
)

// Report is one instance's aggregated outcomes for one breaker over one
// report interval.
type Report struct {
	// Instance reported it (one instance's report), or Failing names the
	// instances whose part had failures or slow calls (merged reports).
	Instance  string
	Failing   []string
	Successes int64
	Failures  int64
	SlowCalls int64
	// Held: successes an instance held back while it was healthy and sent
	// ahead of its news. In a count-based window they are older than every
	// outcome not held: they go in at the oldest end (filling a window that
	// is not full, trimmed first from one that is) and do not end a streak
	// of failures. At fleet scale a window of a few hundred calls spans
	// milliseconds, and held successes are up to an idle report interval
	// old.
	Held bool
	// Epoch is the breaker's epoch the report counts under (its last reset,
	// close or policy change; 0 before its registration applies): a window
	// begun under another epoch is dropped first, whichever member took
	// the reset.
	Epoch uint64
}

// failing is who failed in r.
func (r Report) failing() []string {
	if r.Failing != nil || r.Instance == "" {
		return r.Failing
	}
	if r.Failures > 0 || r.SlowCalls > 0 {
		return []string{r.Instance}
	}
	return nil
}

// Evaluator holds the leader's fleet outcome windows, one per breaker, and
// decides when the fleet's evidence trips a breaker. It is safe for
// concurrent use. Windows exist only in the leader's memory.
type Evaluator struct {
	mu      sync.Mutex
	windows map[string]*window
	// seen is when an instance last reported each breaker to this leader;
	// started stands in for breakers not reported since it took over.
	seen    map[string]time.Time
	started time.Time
}

// NewEvaluator returns an empty evaluator (a new leader starts here).
func NewEvaluator() *Evaluator {
	return &Evaluator{windows: map[string]*window{}, seen: map[string]time.Time{}, started: time.Now()}
}

// Seen records a report of name at now.
func (e *Evaluator) Seen(name string, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seen[name] = now
}

// LastSeen is when name was last reported to this leader (its start when
// it was not).
func (e *Evaluator) LastSeen(name string) time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	if t, ok := e.seen[name]; ok {
		return t
	}
	return e.started
}

// Forget drops what the evaluator holds about a deleted breaker.
func (e *Evaluator) Forget(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.windows, name)
	delete(e.seen, name)
}

type bucket struct {
	failing  []string // instances whose outcomes here had failures or slow calls
	at       time.Time
	calls    int64
	failures int64
	slow     int64
}

type window struct {
	epoch       uint64
	buckets     []bucket
	calls       int64
	failures    int64
	slow        int64
	consecutive int64
}

func (w *window) drop(i int) {
	b := w.buckets[i]
	w.calls -= b.calls
	w.failures -= b.failures
	w.slow -= b.slow
}

// trim bounds the window by count (newest WindowSize calls, trimming the
// oldest bucket proportionally) or by time.
func (w *window) trim(p Policy, now time.Time) {
	n := 0
	if p.WindowType == TimeWindow {
		cutoff := now.Add(-p.WindowDuration)
		for n < len(w.buckets) && w.buckets[n].at.Before(cutoff) {
			w.drop(n)
			n++
		}
	} else {
		for n < len(w.buckets) && w.calls-w.buckets[n].calls >= int64(p.WindowSize) {
			w.drop(n)
			n++
		}
		if n < len(w.buckets) && w.calls > int64(p.WindowSize) {
			// Keep the newest part of the oldest bucket.
			b := &w.buckets[n]
			excess := w.calls - int64(p.WindowSize)
			f := b.failures * excess / b.calls
			s := b.slow * excess / b.calls
			b.calls -= excess
			b.failures -= f
			b.slow -= s
			w.calls -= excess
			w.failures -= f
			w.slow -= s
		}
	}
	w.buckets = w.buckets[n:]
}

func (w *window) reporters() int {
	seen := map[string]bool{}
	for _, b := range w.buckets {
		if b.failures > 0 || b.slow > 0 {
			for _, in := range b.failing {
				seen[in] = true
			}
		}
	}
	return len(seen)
}

// Observe adds a report to the breaker's window and returns the evidence
// for a trip when the fleet's evidence meets the policy, or nil. It
// evaluates on reports that carry failures or slow calls, as Baldur
// evaluates on each failure.
func (e *Evaluator) Observe(name string, p Policy, r Report, now time.Time) *Evidence {
	if r.Successes < 0 || r.Failures < 0 || r.SlowCalls < 0 {
		return nil
	}
	calls := r.Successes + r.Failures
	if calls == 0 && r.SlowCalls == 0 {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	w := e.windows[name]
	switch {
	case w == nil || w.epoch != r.Epoch && w.epoch != 0:
		w = &window{epoch: r.Epoch}
		e.windows[name] = w
	case w.epoch == 0:
		// Begun by the report that registered the breaker (epoch 0 until
		// its registration applies): its first window goes on.
		w.epoch = r.Epoch
	}
	held := r.Held && p.WindowType != TimeWindow
	if calls > 0 {
		b := bucket{failing: r.failing(), at: now, calls: calls, failures: r.Failures, slow: r.SlowCalls}
		if held {
			w.buckets = slices.Insert(w.buckets, 0, b)
		} else {
			w.buckets = append(w.buckets, b)
		}
		w.calls += calls
		w.failures += r.Failures
		w.slow += r.SlowCalls
	}
	// A batch's order is unknown: any success in it ends the streak
	// (held ones are older than the streak).
	switch {
	case held:
	case r.Successes > 0:
		w.consecutive = 0
	default:
		w.consecutive += r.Failures
	}
	w.trim(p, now)
	if r.Failures == 0 && r.SlowCalls == 0 {
		return nil
	}
	reporters := w.reporters()
	ev := Evidence{WindowCalls: w.calls, WindowFailures: w.failures, WindowSlowCalls: w.slow, ConsecutiveFailures: w.consecutive, Reporters: reporters}
	if reporters < p.MinReporters {
		return nil
	}
	switch {
	case p.FailureRateThreshold > 0 && w.calls >= int64(p.MinimumCalls) && float64(w.failures)*100/float64(w.calls) >= p.FailureRateThreshold:
		ev.Trigger = TriggerFailureRate
	case w.consecutive >= int64(p.FailureThreshold):
		ev.Trigger = TriggerFailureThreshold
	case p.SlowCallRateThreshold > 0 && w.calls >= int64(p.MinimumCalls) && float64(w.slow)*100/float64(w.calls) >= p.SlowCallRateThreshold:
		ev.Trigger = TriggerSlowCallRate
	default:
		return nil
	}
	return &ev
}

// Reset clears a breaker's window (on trip and on close, as Baldur does).
func (e *Evaluator) Reset(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.windows, name)
}

// Snapshot returns the current window totals of a breaker (for status).
func (e *Evaluator) Snapshot(name string) Evidence {
	e.mu.Lock()
	defer e.mu.Unlock()
	w := e.windows[name]
	if w == nil {
		return Evidence{}
	}
	return Evidence{WindowCalls: w.calls, WindowFailures: w.failures, WindowSlowCalls: w.slow, ConsecutiveFailures: w.consecutive, Reporters: w.reporters()}
}
