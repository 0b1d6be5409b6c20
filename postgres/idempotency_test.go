package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/idempotency"
	"github.com/baldurhq/baldurd/postgres"
)

// The gate over PostgreSQL: of concurrent first acquires exactly one
// continues; a retried acquire (same request id) is the caller's own; a
// failure is taken over by exactly one; records leave after their windows.
func TestIdempotencyStore(t *testing.T) {
	d := open(t)
	ctx := context.Background()
	var now atomic.Int64
	now.Store(t0.UnixNano())
	s := &postgres.Idempotency{DB: d, Now: func() time.Time { return time.Unix(0, now.Load()) }}

	// Each race's callers are new requests: a request id seen before would
	// be that request's retry (its own execution: CONTINUE).
	rounds := 0
	race := func(key string, n int) map[string]int {
		rounds++
		round := rounds
		var mu sync.Mutex
		got := map[string]int{}
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				dec, _, err := s.Acquire(ctx, idempotency.Caller{Actor: "app", RequestID: fmt.Sprintf("%s-%d-%d", key, round, i)}, key, time.Minute, time.Hour)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Error(err)
					return
				}
				got[dec]++
			}()
		}
		wg.Wait()
		return got
	}
	if got := race("k1", 30); got[idempotency.Continue] != 1 || got[idempotency.Abort] != 29 {
		t.Fatalf("30 first acquires: %v", got)
	}
	dec, r, err := s.Acquire(ctx, idempotency.Caller{RequestID: "r1"}, "k2", time.Minute, time.Hour)
	if err != nil || dec != idempotency.Continue {
		t.Fatal(dec, err)
	}
	if again, r2, err := s.Acquire(ctx, idempotency.Caller{RequestID: "r1"}, "k2", time.Minute, time.Hour); err != nil || again != idempotency.Continue || r2.Token != r.Token {
		t.Fatalf("retried acquire: %s %+v %v", again, r2, err)
	}
	if other, _, _ := s.Acquire(ctx, idempotency.Caller{RequestID: "r2"}, "k2", time.Minute, time.Hour); other != idempotency.Abort {
		t.Fatalf("another caller: %s", other)
	}
	msg := "provider down"
	var te *idempotency.TokenError
	if _, err := s.Finish(ctx, idempotency.Caller{}, "k2", r.Token+1000, nil, &msg); !errors.As(err, &te) {
		t.Fatalf("fail with another token: %v", err)
	}
	if f, err := s.Finish(ctx, idempotency.Caller{}, "k2", r.Token, nil, &msg); err != nil || f.Status != idempotency.Failed {
		t.Fatalf("fail: %+v %v", f, err)
	}
	if got := race("k2", 20); got[idempotency.Continue] != 1 || got[idempotency.Abort] != 19 {
		t.Fatalf("takeover after a failure: %v", got)
	}
	rec, err := s.Get(ctx, "k2", "")
	if err != nil || rec.RetryCount != 1 || rec.Status != idempotency.Executing {
		t.Fatalf("after the takeover: %+v %v", rec, err)
	}
	done, err := s.Finish(ctx, idempotency.Caller{}, "k2", rec.Token, json.RawMessage(`{"charge":"ch_1"}`), nil)
	if err != nil || done.Status != idempotency.Completed {
		t.Fatal(done, err)
	}
	if dec, r, _ := s.Acquire(ctx, idempotency.Caller{}, "k2", 0, 0); dec != idempotency.Skip || string(r.Result) != `{"charge": "ch_1"}` && string(r.Result) != `{"charge":"ch_1"}` {
		t.Fatalf("after completion: %s %s", dec, r.Result)
	}
	// A stale execution is taken over: k1's window (1m) and the skew passed.
	now.Add(int64(time.Minute + idempotency.ClockSkew))
	if got := race("k1", 10); got[idempotency.Continue] != 1 {
		t.Fatalf("stale takeover: %v", got)
	}
	// Past every window, the sweep removes the records.
	now.Add(int64(3 * time.Hour))
	n, err := s.Expire(ctx, s.Now(), 1000)
	if err != nil || n != 2 {
		t.Fatalf("expire: %d %v", n, err)
	}
	if _, err := s.Get(ctx, "k2", ""); !errors.Is(err, idempotency.ErrNotFound) {
		t.Fatalf("after expiry: %v", err)
	}
}
