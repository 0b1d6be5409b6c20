package server

import (
	"testing"
	"time"
)

// Each channel takes at most perMinute messages a minute and perHour an
// hour; channels do not share their budget.
func TestNotifyRateLimit(t *testing.T) {
	var n notifier
	t0 := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	sent := 0
	for i := range 100 {
		if n.allow("ops", t0.Add(time.Duration(i)*100*time.Millisecond), 60, 300) {
			sent++
		}
	}
	if sent != 60 {
		t.Fatalf("%d messages in 10 s, want 60", sent)
	}
	if !n.allow("chat", t0, 60, 300) {
		t.Fatal("another channel shares the budget")
	}
	if !n.allow("ops", t0.Add(61*time.Second), 60, 300) {
		t.Fatal("a new minute did not free the budget")
	}
	sent = 0
	for i := range 600 {
		if n.allow("hourly", t0.Add(time.Duration(i)*5*time.Second), 60, 300) {
			sent++
		}
	}
	if sent != 300 {
		t.Fatalf("%d messages in 50 minutes at 12 a minute, want 300 (the hour's budget)", sent)
	}
}
