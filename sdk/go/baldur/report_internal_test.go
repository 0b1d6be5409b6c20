package baldur

import (
	"errors"
	"testing"
	"time"
)

// While an instance sees only successes its intervals are held (not
// collected) until the idle report interval; a quiet flush is one report
// per breaker; an interval with a failure is collected at once, the held
// successes first, apart and marked held; rejections alone wait.
func TestCollectHoldsQuietIntervals(t *testing.T) {
	c := localClient(t, WithReportInterval(time.Hour), WithIdleReportInterval(time.Second)) // the loop never ticks
	b := c.Breaker("svc")
	t0 := time.Now()
	c.lastReport = t0
	b.Record(nil)
	b.Record(nil)
	if batch := c.collect(t0.Add(100 * time.Millisecond)); batch != nil {
		t.Fatalf("a quiet interval was collected: %v", batch)
	}
	b.Record(nil)
	if batch := c.collect(t0.Add(200 * time.Millisecond)); batch != nil {
		t.Fatalf("a quiet interval was collected: %v", batch)
	}
	// A quiet second: one report with every success.
	b.Record(nil)
	batch := c.collect(t0.Add(1100 * time.Millisecond))
	if batch == nil || len(batch.Reports) != 1 || batch.Reports[0].Successes != 4 || batch.Reports[0].Held {
		t.Fatalf("quiet flush: %v", batch)
	}
	// Successes held, then a failure: held first, apart.
	b.Record(nil)
	if c.collect(t0.Add(1200*time.Millisecond)) != nil {
		t.Fatal("a quiet interval was collected")
	}
	b.Record(nil)
	b.Record(errors.New("down"))
	batch = c.collect(t0.Add(1300 * time.Millisecond))
	if batch == nil || len(batch.Reports) != 2 || !batch.Reports[0].Held || batch.Reports[0].Successes != 1 ||
		batch.Reports[1].Held || batch.Reports[1].Successes != 1 || batch.Reports[1].Failures != 1 {
		t.Fatalf("interval with a failure: %v", batch)
	}
	// Rejections alone wait like successes.
	b.rejections.Add(3)
	if c.collect(t0.Add(1400*time.Millisecond)) != nil {
		t.Fatal("rejections alone were collected before the idle interval")
	}
	if batch = c.collect(t0.Add(2400 * time.Millisecond)); batch == nil || batch.Reports[0].Rejections != 3 {
		t.Fatalf("rejections after the idle interval: %v", batch)
	}
}
