package sdktest_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
)

func TestLeaseAcquireHeldKeepAliveRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	a := dialSDK(t, endpoints(c), baldur.WithInstanceID("worker-a"))
	b := dialSDK(t, endpoints(c), baldur.WithInstanceID("worker-b"))
	la, err := a.Leases().Acquire(ctxT(t), "billing-export", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !la.Valid() || la.FencingToken() == 0 || la.Holder() != "worker-a" {
		t.Fatalf("lease %+v", la)
	}
	_, err = b.Leases().Acquire(ctxT(t), "billing-export", 5*time.Second)
	if !errors.Is(err, baldur.ErrLeaseHeld) || !strings.Contains(err.Error(), "worker-a") {
		t.Fatalf("second holder: %v, want LEASE_HELD naming worker-a", err)
	}
	// Kept alive well past its TTL.
	time.Sleep(7 * time.Second)
	if !la.Valid() {
		t.Fatal("lease not kept alive")
	}
	if _, err := b.Leases().Acquire(ctxT(t), "billing-export", 5*time.Second); !errors.Is(err, baldur.ErrLeaseHeld) {
		t.Fatalf("after 7s the kept-alive lease was lost: %v", err)
	}
	if err := la.Release(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	lb, err := b.Leases().Acquire(ctxT(t), "billing-export", 5*time.Second)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	if lb.FencingToken() <= la.FencingToken() {
		t.Fatalf("fencing token %d after %d: not increasing", lb.FencingToken(), la.FencingToken())
	}
	lb.Release(ctxT(t))
}

func TestLeaseSelfFencesWhenTheClusterIsGone(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	cl := dialSDK(t, c.Nodes[0].GRPCAddr)
	l, err := cl.Leases().Acquire(ctxT(t), "exporter", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	acquired := time.Now()
	c.Kill(0)
	select {
	case <-l.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("lease never reported lost")
	}
	// Stopped acting before the server could have let it lapse.
	if took := time.Since(acquired); took > 5*time.Second {
		t.Fatalf("self-fenced after %v, past the 5s TTL", took)
	}
	if l.Valid() {
		t.Fatal("lost lease still valid")
	}
}

func TestFailoverWithinTTL(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	const trials, ttl = 20, 5 * time.Second
	var holders, standbys []*baldur.Client
	var leases []*baldur.Lease
	for i := 0; i < trials; i++ {
		h, err := baldur.Dial(ctxT(t), endpoints(c), baldur.WithInstanceID(fmt.Sprintf("h-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		holders = append(holders, h)
		standbys = append(standbys, dialSDK(t, endpoints(c), baldur.WithInstanceID(fmt.Sprintf("s-%d", i))))
		l, err := h.Leases().Acquire(ctxT(t), fmt.Sprintf("failover-%d", i), ttl)
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
	}
	// Every holder dies at once (no release): the process is gone.
	killed := time.Now()
	for _, h := range holders {
		h.Close()
	}
	lat := make([]time.Duration, trials)
	var wg sync.WaitGroup
	for i, s := range standbys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(killed) < 3*ttl {
				if l, err := s.Leases().Acquire(context.Background(), fmt.Sprintf("failover-%d", i), ttl); err == nil {
					lat[i] = time.Since(killed)
					if l.FencingToken() <= leases[i].FencingToken() {
						t.Errorf("trial %d: token %d not above %d", i, l.FencingToken(), leases[i].FencingToken())
					}
					l.Release(context.Background())
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("holder killed → new holder (TTL %v): p50 %v, p99 %v, min %v", ttl, lat[len(lat)/2], lat[len(lat)*99/100], lat[0])
	for _, d := range lat {
		if d == 0 || d > ttl+time.Second {
			t.Fatalf("failover took %v (0 = never), want ≤ TTL + 1s: %v", d, lat)
		}
	}
}

func TestElectionPrefersLowerPriority(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	first := dialSDK(t, c.Nodes[0].GRPCAddr, baldur.WithInstanceID("first"))
	leader, err := first.Elect(ctxT(t), "primary", baldur.WithElectionTTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	obs := first.Observe(ctxT(t), "primary")
	if got := <-obs; got.Leader != "first" {
		t.Fatalf("observed leader %q", got.Leader)
	}
	type result struct {
		who   string
		lease *baldur.Lease
	}
	won := make(chan result, 2)
	for _, cand := range []struct {
		id   string
		prio int32
	}{{"backup", 500}, {"preferred", 10}} {
		cl := dialSDK(t, c.Nodes[0].GRPCAddr, baldur.WithInstanceID(cand.id))
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			l, err := cl.Elect(ctx, "primary", baldur.WithPriority(cand.prio), baldur.WithElectionTTL(5*time.Second))
			if err == nil {
				won <- result{cand.id, l}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // both candidates registered
	if err := leader.Release(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	r := <-won
	if r.who != "preferred" {
		t.Fatalf("%s won; the lower priority number should", r.who)
	}
	for info := range obs {
		if info.Leader == "preferred" {
			break
		}
	}
	info, err := first.Leader(ctxT(t), "primary")
	if err != nil || info.Leader != "preferred" || info.FencingToken != r.lease.FencingToken() {
		t.Fatalf("leader info %+v %v", info, err)
	}
	r.lease.Release(ctxT(t))
}

func TestSchedulerRunsEachTickOnceAcrossFailures(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test (60 s)")
	}
	c := testcluster.New(t, 3)
	type run struct {
		client int
		token  uint64
		at     time.Time
		slot   time.Time
	}
	var mu sync.Mutex
	var runs []run
	const ttl = 5 * time.Second
	var clients []*baldur.Client
	cancels := make([]context.CancelFunc, 3)
	done := make([]chan struct{}, 3)
	for i := 0; i < 3; i++ {
		cl, err := baldur.Dial(ctxT(t), endpoints(c), baldur.WithInstanceID(fmt.Sprintf("sched-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, cl)
		ctx, cancel := context.WithCancel(context.Background())
		cancels[i], done[i] = cancel, make(chan struct{})
		s := cl.Scheduler("reports", baldur.WithSchedulerTTL(ttl)).Every("rollup", time.Second, func(ctx context.Context, token uint64) error {
			mu.Lock()
			runs = append(runs, run{client: i, token: token, at: time.Now(), slot: baldur.ScheduledAt(ctx)})
			mu.Unlock()
			return nil
		})
		go func() { defer close(done[i]); s.Run(ctx) }()
	}
	defer func() {
		for i := range clients {
			cancels[i]()
			<-done[i]
			clients[i].Close()
		}
	}()
	holder := func() int {
		mu.Lock()
		defer mu.Unlock()
		if len(runs) == 0 {
			return -1
		}
		return runs[len(runs)-1].client
	}
	start := time.Now()
	time.Sleep(15 * time.Second)
	// Kill the scheduler holder's process (no release).
	h := holder()
	if h < 0 {
		t.Fatal("no run in 15s")
	}
	clients[h].Close()
	t.Logf("killed holder sched-%d at %v", h, time.Since(start))
	time.Sleep(20 * time.Second)
	c.Kill(c.LeaderIndex())
	t.Logf("killed the cluster leader at %v", time.Since(start))
	time.Sleep(25 * time.Second)
	mu.Lock()
	defer mu.Unlock()
	failover := ttl + 2*time.Second
	var worst time.Duration
	tokens := map[uint64]bool{}
	for i := 1; i < len(runs); i++ {
		gap := runs[i].at.Sub(runs[i-1].at)
		worst = max(worst, gap)
		if runs[i].token < runs[i-1].token {
			t.Fatalf("run %d used token %d after %d", i, runs[i].token, runs[i-1].token)
		}
		if !runs[i].slot.After(runs[i-1].slot) {
			t.Fatalf("run %d filled slot %v after run %d filled %v: a tick ran twice", i, runs[i].slot, i-1, runs[i-1].slot)
		}
		if off := runs[i].slot.Sub(runs[0].slot) % time.Second; off != 0 {
			t.Fatalf("run %d slot %v is off the 1s cadence by %v", i, runs[i].slot, off)
		}
		if gap > time.Second+failover {
			t.Fatalf("gap of %v between runs %d and %d exceeds interval + failover (%v)", gap, i-1, i, time.Second+failover)
		}
	}
	for _, r := range runs {
		tokens[r.token] = true
	}
	t.Logf("%d runs over 60s by %d holders; largest gap %v", len(runs), len(tokens), worst)
	if len(runs) < 45 || len(tokens) < 2 {
		t.Fatalf("%d runs by %d holders", len(runs), len(tokens))
	}
}
