// Package idempotency is the fleet's idempotency gate (Baldur §6): one
// record per key, executing, completed or failed, decided in the
// replicated state so that of any number of racers exactly one runs.
// Acquire answers CONTINUE (run it), SKIP (done already: the stored
// result) or ABORT (running elsewhere, not stale yet); a failed record, or
// an executing one older than its execution window plus the clock-skew
// tolerance, is taken over by exactly one racer. Complete and Fail are
// compare-and-set from executing, by the token Acquire gave.
package idempotency
