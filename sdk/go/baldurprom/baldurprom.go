// Package baldurprom exports a Go SDK client's counters (baldur.Client.Stats)
// to Prometheus under the names Baldur's Python library uses, so the
// dashboards and alerts written for it read Go services too:
//
//	baldur_protect_attempts{name,outcome,mode}          histogram
//	baldur_protect_duration_seconds{name,outcome,mode}  histogram
//	baldur_protect_fallback_total{name,mode}            counter
//	baldur_retry_outcomes_total{domain,outcome,is_synthetic} counter
//	baldur_retry_attempts_started_total{domain}         counter
//	baldur_retry_delay_seconds{domain}                  histogram
//	baldur_circuit_breaker_state{service}               gauge (0 closed, 1 open, 2 half-open)
//	baldur_circuit_breaker_blocked_total{service,reason} counter
//	baldur_bulkhead_{active_count,max_concurrent,utilization_percent,waiting_count}{bulkhead_name} gauge
//	baldur_bulkhead_rejected_total{bulkhead_name}       counter
//	baldur_throttle_{limit,max_limit,gradient}{service} gauge
//	baldur_throttle_denied_total{service,reason}        counter
//	baldur_ratelimit_share{name}                        gauge (calls a second)
//	baldur_ratelimit_{admitted,refused}_total{name}     counter
//	baldur_sdk_outcome_batches_{sent,dropped}_total, baldur_sdk_outcome_batches_buffered,
//	baldur_sdk_stream_reconnects_total                   the SDK's own link to the cluster
//
// mode is always "sync" and is_synthetic "false" (Go has no async facade or
// synthetic traffic marker). The package lives in its own module so the
// core SDK does not depend on Prometheus:
//
//	reg.MustRegister(baldurprom.New(client))
package baldurprom

import (
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	protectAttempts = prometheus.NewDesc("baldur_protect_attempts", "Attempts per protected call.", []string{"name", "outcome", "mode"}, nil)
	protectDuration = prometheus.NewDesc("baldur_protect_duration_seconds", "Duration of protected calls, every attempt and sleep included.", []string{"name", "outcome", "mode"}, nil)
	protectFallback = prometheus.NewDesc("baldur_protect_fallback_total", "Protected calls the fallback served.", []string{"name", "mode"}, nil)
	retryOutcomes   = prometheus.NewDesc("baldur_retry_outcomes_total", "Retried calls by how they ended.", []string{"domain", "outcome", "is_synthetic"}, nil)
	retryStarted    = prometheus.NewDesc("baldur_retry_attempts_started_total", "Retries started (attempts after the first).", []string{"domain"}, nil)
	retryDelay      = prometheus.NewDesc("baldur_retry_delay_seconds", "Backoff slept before each retry.", []string{"domain"}, nil)
	breakerState    = prometheus.NewDesc("baldur_circuit_breaker_state", "Breaker state as this process applies it: 0 closed, 1 open, 2 half-open.", []string{"service"}, nil)
	breakerBlocked  = prometheus.NewDesc("baldur_circuit_breaker_blocked_total", "Calls the breaker rejected.", []string{"service", "reason"}, nil)
	batchesSent     = prometheus.NewDesc("baldur_sdk_outcome_batches_sent_total", "Outcome batches delivered to the cluster.", nil, nil)
	batchesDropped  = prometheus.NewDesc("baldur_sdk_outcome_batches_dropped_total", "Outcome batches dropped because the buffer was full.", nil, nil)
	batchesBuffered = prometheus.NewDesc("baldur_sdk_outcome_batches_buffered", "Outcome batches waiting for the cluster.", nil, nil)
	reconnects      = prometheus.NewDesc("baldur_sdk_stream_reconnects_total", "Watch streams re-opened after a failure.", nil, nil)

	bulkheadActive   = prometheus.NewDesc("baldur_bulkhead_active_count", "Calls holding a permit of the bulkhead.", []string{"bulkhead_name"}, nil)
	bulkheadMax      = prometheus.NewDesc("baldur_bulkhead_max_concurrent", "The bulkhead's capacity.", []string{"bulkhead_name"}, nil)
	bulkheadUtil     = prometheus.NewDesc("baldur_bulkhead_utilization_percent", "Active calls over capacity, in percent.", []string{"bulkhead_name"}, nil)
	bulkheadWaiting  = prometheus.NewDesc("baldur_bulkhead_waiting_count", "Calls waiting for a permit.", []string{"bulkhead_name"}, nil)
	bulkheadRejected = prometheus.NewDesc("baldur_bulkhead_rejected_total", "Calls a full bulkhead rejected.", []string{"bulkhead_name"}, nil)
	throttleLimit    = prometheus.NewDesc("baldur_throttle_limit", "The adaptive throttle's limit in force.", []string{"service"}, nil)
	throttleMax      = prometheus.NewDesc("baldur_throttle_max_limit", "The adaptive throttle's ceiling.", []string{"service"}, nil)
	throttleGradient = prometheus.NewDesc("baldur_throttle_gradient", "Previous over current smoothed round trip time.", []string{"service"}, nil)
	throttleDenied   = prometheus.NewDesc("baldur_throttle_denied_total", "Calls the adaptive throttle refused.", []string{"service", "reason"}, nil)
	rateShare        = prometheus.NewDesc("baldur_ratelimit_share", "This instance's share of the fleet-wide rate limit, in calls a second.", []string{"name"}, nil)
	rateAdmitted     = prometheus.NewDesc("baldur_ratelimit_admitted_total", "Calls the rate limit admitted.", []string{"name"}, nil)
	rateRefused      = prometheus.NewDesc("baldur_ratelimit_refused_total", "Calls the rate limit refused.", []string{"name"}, nil)
)

// Collector reads a client's Stats at each scrape.
type Collector struct{ c *baldur.Client }

// New returns a collector for c; register it with a prometheus.Registerer.
func New(c *baldur.Client) *Collector { return &Collector{c: c} }

// Describe sends every series' description.
func (k *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{protectAttempts, protectDuration, protectFallback, retryOutcomes, retryStarted, retryDelay,
		breakerState, breakerBlocked, batchesSent, batchesDropped, batchesBuffered, reconnects,
		bulkheadActive, bulkheadMax, bulkheadUtil, bulkheadWaiting, bulkheadRejected, throttleLimit, throttleMax, throttleGradient,
		throttleDenied, rateShare, rateAdmitted, rateRefused} {
		ch <- d
	}
}

// Collect sends the current values.
func (k *Collector) Collect(ch chan<- prometheus.Metric) {
	st := k.c.Stats()
	for name, p := range st.Protect {
		for o, h := range p.Attempts {
			ch <- histogram(protectAttempts, h, name, o.String(), "sync")
		}
		for o, h := range p.Duration {
			ch <- histogram(protectDuration, h, name, o.String(), "sync")
		}
		ch <- prometheus.MustNewConstMetric(protectFallback, prometheus.CounterValue, float64(p.Fallbacks), name, "sync")
	}
	for name, r := range st.Retry {
		for outcome, n := range r.Outcomes {
			ch <- prometheus.MustNewConstMetric(retryOutcomes, prometheus.CounterValue, float64(n), name, outcome, "false")
		}
		ch <- prometheus.MustNewConstMetric(retryStarted, prometheus.CounterValue, float64(r.Started), name)
		ch <- histogram(retryDelay, r.Delay, name)
	}
	for name, b := range st.Breakers {
		ch <- prometheus.MustNewConstMetric(breakerState, prometheus.GaugeValue, float64(stateValue(b.State)), name)
		for reason, n := range b.Blocked {
			ch <- prometheus.MustNewConstMetric(breakerBlocked, prometheus.CounterValue, float64(n), name, reason)
		}
	}
	for name, b := range st.Bulkheads {
		ch <- prometheus.MustNewConstMetric(bulkheadActive, prometheus.GaugeValue, float64(b.Active), name)
		ch <- prometheus.MustNewConstMetric(bulkheadMax, prometheus.GaugeValue, float64(b.MaxConcurrent), name)
		ch <- prometheus.MustNewConstMetric(bulkheadUtil, prometheus.GaugeValue, b.UtilizationPercent, name)
		ch <- prometheus.MustNewConstMetric(bulkheadWaiting, prometheus.GaugeValue, float64(b.Waiting), name)
		ch <- prometheus.MustNewConstMetric(bulkheadRejected, prometheus.CounterValue, float64(b.Rejected), name)
	}
	for name, t := range st.Throttles {
		ch <- prometheus.MustNewConstMetric(throttleLimit, prometheus.GaugeValue, float64(t.Limit), name)
		ch <- prometheus.MustNewConstMetric(throttleMax, prometheus.GaugeValue, float64(t.MaxLimit), name)
		ch <- prometheus.MustNewConstMetric(throttleGradient, prometheus.GaugeValue, t.Gradient, name)
		ch <- prometheus.MustNewConstMetric(throttleDenied, prometheus.CounterValue, float64(t.Rejected), name, "limit")
	}
	for name, r := range st.RateLimits {
		ch <- prometheus.MustNewConstMetric(rateShare, prometheus.GaugeValue, r.Share, name)
		ch <- prometheus.MustNewConstMetric(rateAdmitted, prometheus.CounterValue, float64(r.Admitted), name)
		ch <- prometheus.MustNewConstMetric(rateRefused, prometheus.CounterValue, float64(r.Refused), name)
	}
	ch <- prometheus.MustNewConstMetric(batchesSent, prometheus.CounterValue, float64(st.BatchesSent))
	ch <- prometheus.MustNewConstMetric(batchesDropped, prometheus.CounterValue, float64(st.DroppedBatches))
	ch <- prometheus.MustNewConstMetric(batchesBuffered, prometheus.GaugeValue, float64(st.BatchesBuffered))
	ch <- prometheus.MustNewConstMetric(reconnects, prometheus.CounterValue, float64(st.Reconnects))
}

// stateValue is Baldur's encoding of a breaker state.
func stateValue(s baldur.State) int {
	switch s {
	case baldur.StateOpen:
		return 1
	case baldur.StateHalfOpen:
		return 2
	}
	return 0
}

func histogram(d *prometheus.Desc, h baldur.Histogram, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	for i, b := range h.Bounds {
		buckets[b] = h.Counts[i]
	}
	return prometheus.MustNewConstHistogram(d, h.Count, h.Sum, buckets, labels...)
}
