package dlq_test

import (
	"testing"
	"time"

	"github.com/baldurhq/baldurd/dlq"
)

func TestPauseReasonNamesTheEmergencyOrTheOpenBreaker(t *testing.T) {
	states := map[string]string{"payments-db": "OPEN", "stripe": "HALF_OPEN", "adyen": "CLOSED"}
	isOpen := func(name string) string { return states[name] }
	cases := []struct {
		domain, level string
		mapped        []string
		want          string
	}{
		{"payments", "", nil, ""},
		{"payments", "LEVEL_2", []string{"payments-db"}, "paused: emergency LEVEL_2"},
		{"payments", "", []string{"payments-db"}, "paused: breaker payments-db is OPEN"},
		{"payments-db", "", nil, "paused: breaker payments-db is OPEN"},                      // the breaker named like the domain counts
		{"payments", "", []string{"adyen", "stripe"}, "paused: breaker stripe is HALF_OPEN"}, // replay waits for CLOSED
		{"payments", "", []string{"adyen"}, ""},
	}
	for _, tc := range cases {
		if got := dlq.PauseReason(tc.domain, tc.mapped, tc.level, isOpen); got != tc.want {
			t.Errorf("PauseReason(%q, %v, %q) = %q, want %q", tc.domain, tc.mapped, tc.level, got, tc.want)
		}
	}
}

func TestReplayOutcomeClassifiesRequeuedEntries(t *testing.T) {
	cases := []struct {
		e    dlq.Entry
		want string
	}{
		{dlq.Entry{Status: dlq.Resolved}, dlq.ReplayResolved},
		{dlq.Entry{Status: dlq.Archived}, dlq.ReplayResolved},
		{dlq.Entry{Status: dlq.RequiresReview}, dlq.ReplayFailed},
		{dlq.Entry{Status: dlq.Pending, RetryCount: 2}, dlq.ReplayFailed}, // attempted again since requeued at 1
		{dlq.Entry{Status: dlq.Pending, RetryCount: 1}, dlq.ReplayPending},
		{dlq.Entry{Status: dlq.Replaying, RetryCount: 2}, dlq.ReplayPending},
	}
	for _, tc := range cases {
		if got := dlq.ReplayOutcome(tc.e, 1); got != tc.want {
			t.Errorf("%s at %d attempts: %s, want %s", tc.e.Status, tc.e.RetryCount, got, tc.want)
		}
	}
}

func TestCaptureSetsTheRetryBudgetAndExpiry(t *testing.T) {
	lim := dlq.DefaultLimits()
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	e, err := dlq.Capture(dlq.Entry{ID: "e1", Domain: "payments", FailureType: "TIMEOUT", RequestData: []byte(`{"password":"x","amount":3}`)}, lim, now)
	if err != nil {
		t.Fatal(err)
	}
	if e.MaxRetries != lim.MaxReplayAttempts || !e.ExpiresAt.Equal(now.Add(72*time.Hour)) || string(e.RequestData) != `{"amount":3,"password":"***"}` {
		t.Fatalf("captured %+v (request %s)", e, e.RequestData)
	}
	if e.IdempotencyKey() != "payments:e1:0" {
		t.Fatalf("idempotency key %q", e.IdempotencyKey())
	}
}
