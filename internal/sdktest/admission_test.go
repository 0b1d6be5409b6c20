package sdktest_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"github.com/baldurhq/baldurd/server"
	"google.golang.org/protobuf/types/known/durationpb"
)

// renew is the renewal period the admission tests run with (a share's
// lease is three of them).
const renew = 500 * time.Millisecond

func admissionCluster(t *testing.T, n int) *testcluster.Cluster {
	c := testcluster.New(t, n, testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.AdmissionRenewInterval = renew }))
	c.WaitForLeader(10 * time.Second)
	return c
}

// offer calls Allow at rate a second until stop closes, counting into
// admitted.
func offer(l *baldur.RateLimiter, rate float64, stop <-chan struct{}, admitted *atomic.Int64, wg *sync.WaitGroup) {
	defer wg.Done()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	last, owed := time.Now(), 0.0
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			owed += rate * now.Sub(last).Seconds()
			last = now
			for ; owed >= 1; owed-- {
				if l.Allow() {
					admitted.Add(1)
				}
			}
		}
	}
}

// 50 SDK clients with skewed demand share a 1,000/s limit: the admitted
// fleet rate stays within ±10 % of the limit in every 5 s window after the
// first, for 60 s; a client leaving gives its share to the others within
// two renewal periods; with the cluster gone no client admits above its
// last share, then the fallback rate.
func TestRateLimitFleetAccuracy(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test (70 s)")
	}
	c := admissionCluster(t, 3)
	adm := pb.NewAdmissionServiceClient(dialConn(t, c.Leader().GRPCAddr))
	if _, err := adm.PutRateLimit(ctxT(t), &pb.PutRateLimitRequest{Name: "api", Rate: 1000, Per: durationpb.New(time.Second), Burst: 100, FallbackRate: 10}); err != nil {
		t.Fatal(err)
	}
	const clients = 50
	var (
		sdks     []*baldur.Client
		limiters []*baldur.RateLimiter
		admitted atomic.Int64
		wg       sync.WaitGroup
		offered  float64
	)
	stop := make(chan struct{})
	for i := range clients {
		cl := dialSDK(t, endpoints(c), baldur.WithInstanceID(fmt.Sprintf("api-%02d", i)))
		sdks = append(sdks, cl)
		l := cl.RateLimit("api")
		limiters = append(limiters, l)
		// Skewed: 5 heavy (300/s), 15 medium (60/s), 30 light (10/s).
		rate := 10.0
		switch {
		case i < 5:
			rate = 300
		case i < 20:
			rate = 60
		}
		offered += rate
		wg.Add(1)
		go offer(l, rate, stop, &admitted, &wg)
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	t.Logf("offered %.0f/s against 1000/s", offered)
	const window = 5 * time.Second
	var windows []float64
	prev := admitted.Load()
	for range 12 {
		time.Sleep(window)
		now := admitted.Load()
		windows = append(windows, float64(now-prev)/window.Seconds())
		prev = now
	}
	t.Logf("admitted per second in each 5 s window: %.0f", windows)
	for i, w := range windows[1:] {
		if math.Abs(w-1000) > 100 {
			t.Errorf("window %d: %.0f/s admitted, outside 1000 ± 10 %%", i+2, w)
		}
	}

	// A client leaves: the others hold the whole limit again within two
	// renewal periods.
	sum := func(ls []*baldur.RateLimiter) float64 {
		s := 0.0
		for _, l := range ls {
			s += l.Share()
		}
		return s
	}
	heavy := limiters[0]
	before := heavy.Share()
	sdks[0].Close()
	left := time.Now()
	rest := limiters[1:]
	if !testcluster.Eventually(10*time.Second, func() bool { return sum(rest) >= 990 }) {
		t.Fatalf("after a client left: the others hold %.0f/s", sum(rest))
	}
	took := time.Since(left)
	t.Logf("a client holding %.1f/s left: the others held the whole limit again after %v (renewal period %v)", before, took, renew)
	if took > 2*renew+200*time.Millisecond {
		t.Errorf("rebalancing took %v, more than two renewal periods", took)
	}

	// The cluster is gone: no client admits above its last share; after
	// the lease, the fallback rate (10/s each).
	for i := range c.Nodes {
		c.Kill(i)
	}
	time.Sleep(renew) // a renewal in flight has ended
	last := make([]float64, len(rest))
	for i, l := range rest {
		last[i] = l.Share()
	}
	cut := admitted.Load()
	time.Sleep(time.Second)
	within := float64(admitted.Load() - cut)
	t.Logf("a second without the cluster: %.0f admitted (last shares sum to %.0f/s)", within, sum(rest))
	if within > 1100 {
		t.Errorf("%.0f admitted in a second without the cluster: above the last shares", within)
	}
	for i, l := range rest {
		if l.Share() > last[i]+1e-9 {
			t.Errorf("client %d: share %.1f above its last %.1f", i+1, l.Share(), last[i])
		}
	}
	if !testcluster.Eventually(5*time.Second, func() bool { return sum(rest) <= 49*10+1e-6 }) {
		t.Fatalf("after the leases: shares sum to %.0f/s, want the fallback 49 × 10/s", sum(rest))
	}
	cut = admitted.Load()
	time.Sleep(2 * time.Second)
	t.Logf("on the fallback rate: %.0f/s admitted", float64(admitted.Load()-cut)/2)
	if r := float64(admitted.Load()-cut) / 2; r > 49*10*1.1+50 {
		t.Errorf("%.0f/s admitted on the fallback rate of 490/s", r)
	}
}

// The limit's status shows each instance's share; bad input is refused
// naming the field; an SDK asking for a limit the cluster does not have
// gets a typed error before any call.
func TestRateLimitContract(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := admissionCluster(t, 1)
	r := restClient{t: t, base: "http://" + c.Nodes[0].HTTPAddr}
	code, body := r.do("PUT", "/v1/ratelimits/orders", `{"rate":1000,"per":"1s","burst":100}`)
	if code != 200 || dig(body, "limit", "rate") != 1000.0 || dig(body, "limit", "scope") != "global" {
		t.Fatalf("put: %d %v", code, body)
	}
	for _, tc := range []struct{ path, body, field string }{
		{"/v1/ratelimits/orders", `{"rate":0,"burst":1}`, "rate"},
		{"/v1/ratelimits/orders", `{"rate":-5,"burst":1}`, "rate"},
		{"/v1/ratelimits/orders", `{"rate":10,"burst":0}`, "burst"},
		{"/v1/ratelimits/orders", `{"rate":10,"burst":1,"per":"0s"}`, "per"},
		{"/v1/ratelimits/orders", `{"rate":10,"burst":1,"scope":"galaxy"}`, "scope"},
		{"/v1/ratelimits/orders", `{"rate":"NaN","burst":1}`, "rate"},
		{"/v1/ratelimits/orders", `{"rate":"Infinity","burst":1}`, "rate"},
		{"/v1/ratelimits/orders", `{"rate":10,"burst":1,"fallback_rate":"NaN"}`, "fallback_rate"},
		{"/v1/throttles/psp", `{"config":{"level1_multiplier":"NaN"}}`, "config.level1_multiplier"},
		{"/v1/throttles/psp", `{"config":{"cb_open_limit_percent":"NaN"}}`, "config.cb_open_limit_percent"},
		{"/v1/ratelimits/Bad%20Name", `{"rate":10,"burst":1}`, "name"},
		{"/v1/bulkheads/db", `{"max_concurrent":0}`, "max_concurrent"},
		{"/v1/bulkheads/db", `{"max_concurrent":5,"max_wait":"-1s"}`, "max_wait"},
		{"/v1/throttles/psp", `{"config":{"min_limit":50,"max_limit":10}}`, "config.max_limit"},
	} {
		if code, body := r.do("PUT", tc.path, tc.body); code != 400 || body["field"] != tc.field {
			t.Errorf("PUT %s %s: %d %v, want 400 naming %s", tc.path, tc.body, code, body, tc.field)
		}
	}
	for _, tc := range []struct{ body, field string }{
		{`{"instance":"x","rate_limits":[{"name":"orders","demand":-1}]}`, "rate_limits[0].demand"},
		{`{"instance":"x","rate_limits":[{"name":"orders","demand":5,"has":"NaN"}]}`, "rate_limits[0].has"},
		{`{"instance":"","rate_limits":[]}`, "instance"},
	} {
		if code, body := r.do("POST", "/v1/admission:sync", tc.body); code != 400 || body["field"] != tc.field {
			t.Errorf("sync %s: %d %v, want 400 naming %s", tc.body, code, body, tc.field)
		}
	}
	if code, body = r.do("GET", "/v1/ratelimits/orders", ""); code != 200 || dig(body, "limit", "rate") != 1000.0 || dig(body, "limit", "burst") != 100.0 {
		t.Fatalf("nothing half-applied: %d %v", code, body)
	}
	sdk := dialSDK(t, c.Nodes[0].GRPCAddr, baldur.WithInstanceID("orders-1"))
	l := sdk.RateLimit("orders")
	if err := l.Wait(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if !testcluster.Eventually(5*time.Second, func() bool {
		_, body = r.do("GET", "/v1/ratelimits/orders", "")
		insts, _ := body["instances"].([]any)
		return len(insts) == 1 && dig(body, "allocated").(float64) > 999
	}) {
		t.Fatalf("status: %v", body)
	}
	if dig(body, "instances", "0", "instance") != "orders-1" {
		t.Fatalf("status names the instance: %v", body)
	}
	calls := 0
	_, err := baldur.Protect(ctxT(t), sdk, "x", func(context.Context) (int, error) { calls++; return 1, nil }, baldur.WithRateLimit[int]("nope"),
		baldur.WithFallback(func(context.Context, error) (int, error) { calls++; return 0, nil }))
	var nc *baldur.NotConfiguredError
	if !errors.As(err, &nc) || nc.Kind != "rate limit" || calls != 0 {
		t.Fatalf("an unknown limit: %v after %d calls", err, calls)
	}
	if err := sdk.RateLimit("nope").Wait(ctxT(t)); !errors.Is(err, baldur.ErrNotConfigured) {
		t.Fatalf("Wait on an unknown limit: %v", err)
	}
	if code, _ := r.do("DELETE", "/v1/ratelimits/orders", ""); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	if code, body := r.do("GET", "/v1/ratelimits/orders", ""); code != 404 || body["reason"] != "ADMISSION_NOT_FOUND" {
		t.Fatalf("after delete: %d %v", code, body)
	}
	if code, _ := r.do("DELETE", "/v1/ratelimits/orders", ""); code != 404 {
		t.Fatalf("delete twice: %d", code)
	}
}

type restClient struct {
	t    *testing.T
	base string
}

func (r restClient) do(method, path, body string) (int, map[string]any) {
	r.t.Helper()
	return testcluster.REST{T: r.t, Base: r.base}.Do(method, path, body)
}

func dig(m map[string]any, path ...string) any { return testcluster.Dig(m, path...) }

// Bulkheads and throttles are configured centrally, followed without a
// restart, and shown across the fleet.
func TestBulkheadsAndThrottlesAcrossTheFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := admissionCluster(t, 3)
	r := restClient{t: t, base: "http://" + c.Followers()[0].HTTPAddr}
	if code, body := r.do("PUT", "/v1/bulkheads/database", `{"max_concurrent":2}`); code != 200 || dig(body, "config", "max_concurrent") != 2.0 {
		t.Fatalf("put bulkhead: %d %v", code, body)
	}
	if code, body := r.do("PUT", "/v1/throttles/psp", `{"config":{"min_limit":5,"max_limit":50,"initial_limit":20}}`); code != 200 || dig(body, "config", "sla_warning") != "0.200s" {
		t.Fatalf("put throttle (defaults filled): %d %v", code, body)
	}
	var sdks []*baldur.Client
	for i := range 3 {
		sdks = append(sdks, dialSDK(t, endpoints(c), baldur.WithInstanceID(fmt.Sprintf("svc-%d", i))))
	}
	for _, s := range sdks {
		// An SDK watching a member that has not applied the PUTs yet sees
		// them a moment later.
		if !testcluster.Eventually(5*time.Second, func() bool {
			return s.Config().Version("throttles") > 0 && s.Config().Version("bulkheads") > 0
		}) {
			t.Fatalf("%s never received the admission configuration", s.InstanceID())
		}
		b := s.Bulkhead("database")
		if err := b.Acquire(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		if err := b.Acquire(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		th := s.Throttle("psp")
		if !th.Allow() {
			t.Fatal("throttle refused the first call")
		}
		th.Record(10 * time.Millisecond)
	}
	// Full: a Protect call is REJECTED and served by the fallback.
	res := baldur.ProtectWithMeta(ctxT(t), sdks[0], "db-call", func(context.Context) (string, error) { return "ran", nil },
		baldur.WithBulkhead[string]("database"), baldur.WithFallback(func(_ context.Context, err error) (string, error) {
			var full *baldur.BulkheadFullError
			if errors.As(err, &full) && full.Max == 2 && full.Active == 2 {
				return "cached", nil
			}
			return "", err
		}))
	if res.Value != "cached" || !res.FallbackUsed {
		t.Fatalf("a full bulkhead: %+v", res)
	}
	var body map[string]any
	if !testcluster.Eventually(5*time.Second, func() bool {
		_, body = r.do("GET", "/v1/bulkheads", "")
		return dig(body, "bulkheads", "0", "instances") == 3.0 && dig(body, "bulkheads", "0", "active") == 6.0 &&
			dig(body, "bulkheads", "0", "rejected_total") == "1"
	}) {
		t.Fatalf("fleet view: %v", body)
	}
	if dig(body, "bulkheads", "0", "utilization_percent") != 100.0 || dig(body, "bulkheads", "0", "rejected_total") != "1" {
		t.Fatalf("utilization and rejections: %v", body)
	}
	// A new capacity reaches every instance without a restart.
	if code, body := r.do("PUT", "/v1/bulkheads/database", `{"max_concurrent":4}`); code != 200 {
		t.Fatalf("resize: %d %v", code, body)
	}
	for _, s := range sdks {
		b := s.Bulkhead("database")
		if !testcluster.Eventually(5*time.Second, func() bool { return b.State().MaxConcurrent == 4 }) || !b.TryAcquire() {
			t.Fatalf("%s: %+v", s.InstanceID(), b.State())
		}
	}
	if !testcluster.Eventually(5*time.Second, func() bool {
		_, body = r.do("GET", "/v1/bulkheads/database", "")
		return body["active"] == 9.0 && body["utilization_percent"] == 75.0
	}) {
		t.Fatalf("after the resize: %v", body)
	}
	// Each instance's throttle limit and regime; LEVEL_3 freezes them.
	if !testcluster.Eventually(5*time.Second, func() bool {
		_, body = r.do("GET", "/v1/throttle/status", "")
		insts, _ := dig(body, "throttles", "0", "instances").([]any)
		return len(insts) == 3 && dig(body, "throttles", "0", "instances", "0", "regime") == "NORMAL" && dig(body, "throttles", "0", "instances", "0", "limit") == 20.0
	}) {
		t.Fatalf("throttle status: %v", body)
	}
	if _, err := admin(t, c.Leader().GRPCAddr).TriggerEmergency(ctxT(t), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_3, Reason: "outage"}); err != nil {
		t.Fatal(err)
	}
	if !testcluster.Eventually(10*time.Second, func() bool {
		_, body = r.do("GET", "/v1/throttle/status", "")
		for i := range 3 {
			if dig(body, "throttles", "0", "instances", fmt.Sprint(i), "regime") != "FROZEN" {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("LEVEL_3: %v", body)
	}
	if code, body := r.do("PUT", "/v1/throttles/psp", `{"config":{"smoothing_factor":2}}`); code != 400 || body["field"] != "config.smoothing_factor" {
		t.Fatalf("bad throttle: %d %v", code, body)
	}
	var nc *baldur.NotConfiguredError
	if _, err := baldur.Protect(ctxT(t), sdks[0], "x", func(context.Context) (int, error) { return 1, nil }, baldur.WithBulkhead[int]("nope")); !errors.As(err, &nc) || nc.Kind != "bulkhead" {
		t.Fatalf("unknown bulkhead: %v", err)
	}
}
