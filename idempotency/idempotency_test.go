package idempotency_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/idempotency"
)

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func TestAcquireDecisions(t *testing.T) {
	exec := func(started time.Time) *idempotency.Record {
		return &idempotency.Record{Key: "k", Status: idempotency.Executing, Token: 7, StartedAt: started, ExecutionTTL: time.Minute, RetryCount: 2}
	}
	for _, tc := range []struct {
		name     string
		cur      *idempotency.Record
		want     string
		retries  int
		newToken bool
	}{
		{"no record", nil, idempotency.Continue, 0, true},
		{"completed", &idempotency.Record{Status: idempotency.Completed, Token: 7, Result: json.RawMessage(`{"a":1}`)}, idempotency.Skip, 0, false},
		{"fresh execution", exec(t0.Add(-30 * time.Second)), idempotency.Abort, 2, false},
		{"within the skew tolerance", exec(t0.Add(-time.Minute - 4*time.Second)), idempotency.Abort, 2, false},
		{"stale execution", exec(t0.Add(-time.Minute - idempotency.ClockSkew)), idempotency.Continue, 3, true},
		{"failed", &idempotency.Record{Status: idempotency.Failed, Token: 7, RetryCount: 1}, idempotency.Continue, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, r := idempotency.Acquire(tc.cur, "k", 99, t0, 0, 0, "alice")
			if d != tc.want || r.RetryCount != tc.retries || (r.Token == 99) != tc.newToken {
				t.Fatalf("got %s retries %d token %d; want %s retries %d (new token %v)", d, r.RetryCount, r.Token, tc.want, tc.retries, tc.newToken)
			}
			if d == idempotency.Continue && (r.Status != idempotency.Executing || r.ExecutionTTL != idempotency.DefaultExecutionTTL ||
				!r.ExpiresAt.Equal(t0.Add(idempotency.DefaultExecutionTTL+idempotency.ClockSkew+idempotency.DefaultMemoryTTL))) {
				t.Fatalf("record %+v", r)
			}
		})
	}
}

func TestFinishIsACompareAndSet(t *testing.T) {
	_, r := idempotency.Acquire(nil, "k", 5, t0, time.Minute, time.Hour, "")
	if _, err := idempotency.Finish(nil, "k", 5, t0, nil, nil); !errors.Is(err, idempotency.ErrNotFound) {
		t.Fatalf("no record: %v", err)
	}
	var te *idempotency.TokenError
	if _, err := idempotency.Finish(&r, "k", 6, t0, nil, nil); !errors.As(err, &te) {
		t.Fatalf("another token: %v", err)
	}
	done, err := idempotency.Finish(&r, "k", 5, t0.Add(time.Second), json.RawMessage(`{"ok":true}`), nil)
	if err != nil || done.Status != idempotency.Completed || !done.ExpiresAt.Equal(t0.Add(time.Second+time.Hour)) {
		t.Fatalf("complete: %+v %v", done, err)
	}
	if _, err := idempotency.Finish(&done, "k", 5, t0, nil, nil); !errors.As(err, &te) {
		t.Fatalf("complete twice: %v", err)
	}
	msg := strings.Repeat("x", idempotency.MaxError+1)
	if _, err := idempotency.Finish(&r, "k", 5, t0, nil, &msg); err == nil {
		t.Fatal("an error over the cap was accepted")
	}
	if _, err := idempotency.Finish(&r, "k", 5, t0, json.RawMessage(`{`), nil); err == nil {
		t.Fatal("a result that is not JSON was accepted")
	}
	if idempotency.Live(done, done.ExpiresAt) || !idempotency.Live(done, done.ExpiresAt.Add(-1)) {
		t.Fatal("an outcome is live until its memory window ends")
	}
}
