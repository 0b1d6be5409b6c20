package dlq

import (
	"fmt"
	"time"
)

// The replay rules the leader applies before and after handing entries to
// workers.

// Capture completes an entry a client stores: masked and truncated
// (PrepareCompact), with the retry budget and expiry the limits give at
// now.
func Capture(e Entry, lim Limits, now time.Time) (Entry, error) {
	e, err := PrepareCompact(e, lim)
	if err != nil {
		return e, err
	}
	e.MaxRetries = lim.MaxReplayAttempts
	e.ExpiresAt = now.Add(time.Duration(lim.ExpiryHours) * time.Hour)
	return e, nil
}

// DuplicateSkip is the resolution of a replay whose attempt the
// idempotency gate found done already (Baldur §5.3).
const DuplicateSkip = "duplicate_skip"

// IdempotencyKey is the key a worker sends with a replayed call: one per
// entry and attempt, so the target can drop a duplicate of the same
// attempt.
func (e Entry) IdempotencyKey() string { return fmt.Sprintf("%s:%s:%d", e.Domain, e.ID, e.RetryCount) }

// PauseReason says why replay of domain is paused now, or "" when it may
// run: an emergency level that pauses replay (emergencyLevel, "" for none),
// or a breaker that is not CLOSED among the domain's own (named like the
// domain) and those mapped to it (breakerState: "" for no such breaker).
// Replay waits for CLOSED, as Baldur does: while a breaker is HALF_OPEN its
// few trial calls are the fleet's probes, and replay traffic would bypass
// their limit. When the breaker closes, workers find the entries
// replayable again: that is the automatic replay on recovery.
func PauseReason(domain string, mapped []string, emergencyLevel string, breakerState func(breaker string) string) string {
	if emergencyLevel != "" {
		return "paused: emergency " + emergencyLevel
	}
	for _, name := range append([]string{domain}, mapped...) {
		if st := breakerState(name); st != "" && st != "CLOSED" {
			return "paused: breaker " + name + " is " + st
		}
	}
	return ""
}

// Replay outcomes of an entry requeued by a batch replay.
const (
	ReplayResolved = "resolved"
	ReplayFailed   = "failed"
	ReplayPending  = "pending"
)

// ReplayOutcome classifies an entry requeued with retryCount attempts
// behind it: resolved (RESOLVED or ARCHIVED), failed (back to PENDING after
// another attempt, or REQUIRES_REVIEW) or still pending.
func ReplayOutcome(e Entry, retryCount int) string {
	switch {
	case e.Status == Resolved || e.Status == Archived:
		return ReplayResolved
	case e.Status == RequiresReview || (e.Status == Pending && e.RetryCount > retryCount):
		return ReplayFailed
	}
	return ReplayPending
}
