package baldurprom_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"github.com/baldurhq/baldurd/sdk/go/baldurprom"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCollectorExportsBaldurSeries(t *testing.T) {
	// A client whose cluster is unreachable still protects calls locally.
	c, err := baldur.Dial(context.Background(), "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	boom := errors.New("boom")
	calls := 0
	fn := func(context.Context) (int, error) {
		calls++
		if calls%2 == 1 {
			return 0, boom
		}
		return 1, nil
	}
	for range 3 {
		baldur.Protect(context.Background(), c, "payments", fn, baldur.WithRetry[int](baldur.Retry{MaxAttempts: 3, BaseDelay: time.Millisecond}))
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(baldurprom.New(c))

	want := `
# HELP baldur_protect_fallback_total Protected calls the fallback served.
# TYPE baldur_protect_fallback_total counter
baldur_protect_fallback_total{mode="sync",name="payments"} 0
# HELP baldur_retry_attempts_started_total Retries started (attempts after the first).
# TYPE baldur_retry_attempts_started_total counter
baldur_retry_attempts_started_total{domain="payments"} 3
# HELP baldur_retry_outcomes_total Retried calls by how they ended.
# TYPE baldur_retry_outcomes_total counter
baldur_retry_outcomes_total{domain="payments",is_synthetic="false",outcome="exhausted"} 0
baldur_retry_outcomes_total{domain="payments",is_synthetic="false",outcome="non_retryable"} 0
baldur_retry_outcomes_total{domain="payments",is_synthetic="false",outcome="success"} 3
# HELP baldur_circuit_breaker_state Breaker state as this process applies it: 0 closed, 1 open, 2 half-open.
# TYPE baldur_circuit_breaker_state gauge
baldur_circuit_breaker_state{service="payments"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "baldur_protect_fallback_total", "baldur_retry_attempts_started_total",
		"baldur_retry_outcomes_total", "baldur_circuit_breaker_state"); err != nil {
		t.Fatal(err)
	}
	// The attempts histogram: three successful calls of two attempts each.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "baldur_protect_attempts" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		if h.GetSampleCount() != 3 || h.GetSampleSum() != 6 {
			t.Fatalf("baldur_protect_attempts count %d sum %v, want 3 and 6", h.GetSampleCount(), h.GetSampleSum())
		}
		return
	}
	t.Fatal("baldur_protect_attempts not exported")
}
