package sdktest_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"github.com/baldurhq/baldurd/server"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

func dlqAdmin(t *testing.T, addr string) pb.DLQServiceClient {
	return pb.NewDLQServiceClient(dialConn(t, addr))
}

func TestSpooledEntriesArriveExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	cl := dialSDK(t, endpoints(c), baldur.WithSpoolDir(t.TempDir(), 1000))
	for i := range c.Nodes {
		c.Kill(i)
	}
	var ids []string
	for i := 0; i < 500; i++ {
		data, _ := structpb.NewStruct(map[string]any{"order": float64(i)})
		r, err := cl.DLQ().Store(ctxT(t), &baldur.Entry{Domain: "payment", FailureType: "MAX_RETRIES_TIMEOUT", RequestData: data})
		if err != nil || !r.Spooled {
			t.Fatalf("store %d during the outage: %+v %v", i, r, err)
		}
		ids = append(ids, r.ID)
	}
	if s := cl.DLQ().SpoolStats(); s.Spooled != 500 {
		t.Fatalf("spool: %+v", s)
	}
	for i := range c.Nodes {
		c.Restart(i)
	}
	nl := c.WaitForLeader(15 * time.Second)
	if !testcluster.Eventually(30*time.Second, func() bool { return cl.DLQ().SpoolStats().Spooled == 0 }) {
		t.Fatalf("spool not drained: %+v", cl.DLQ().SpoolStats())
	}
	admin := dlqAdmin(t, nl.GRPCAddr)
	st, err := admin.GetStats(ctxT(t), &pb.GetDLQStatsRequest{})
	if err != nil || st.Total != 500 {
		t.Fatalf("stats after delivery: %v %v", st, err)
	}
	seen := map[string]bool{}
	token := ""
	for {
		page, err := admin.ListEntries(ctxT(t), &pb.ListEntriesRequest{PageSize: 200, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Entries {
			if seen[e.Id] {
				t.Fatalf("duplicate %s", e.Id)
			}
			seen[e.Id] = true
		}
		if token = page.NextPageToken; token == "" {
			break
		}
	}
	for _, id := range ids {
		if !seen[id] {
			t.Fatalf("spooled entry %s missing", id)
		}
	}
}

func storeEntry(t *testing.T, cl *baldur.Client, domain string) string {
	t.Helper()
	r, err := cl.DLQ().Store(ctxT(t), &baldur.Entry{Domain: domain, FailureType: "MAX_RETRIES_TIMEOUT"})
	if err != nil || !r.Created {
		t.Fatalf("store: %+v %v", r, err)
	}
	return r.ID
}

func waitStatus(t *testing.T, admin pb.DLQServiceClient, id, want string, timeout time.Duration) *pb.DLQEntry {
	t.Helper()
	var e *pb.DLQEntry
	if !testcluster.Eventually(timeout, func() bool {
		var err error
		e, err = admin.GetEntry(ctxT(t), &pb.GetEntryRequest{Id: id})
		return err == nil && e.Status == want
	}) {
		t.Fatalf("entry %s: %v, want %s", id, e, want)
	}
	return e
}

func TestReplayWorkersRetryEscalateAndTakeOver(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	producer := dialSDK(t, endpoints(c), baldur.WithSpoolDir(t.TempDir(), 100))
	admin := dlqAdmin(t, c.Leader().GRPCAddr)

	// A handler that always fails: retried, then REQUIRES_REVIEW.
	flaky := storeEntry(t, producer, "flaky")
	var attempts atomic.Int32
	var keys []string
	w1 := dialSDK(t, endpoints(c), baldur.WithInstanceID("worker-1"), baldur.WithSpoolDir(t.TempDir(), 100))
	w1.DLQ().HandleReplay("flaky", func(ctx context.Context, e *baldur.Entry, key string) error {
		attempts.Add(1)
		keys = append(keys, key)
		return errors.New("downstream still broken")
	}, baldur.WithReplayPoll(50*time.Millisecond))
	e := waitStatus(t, admin, flaky, "REQUIRES_REVIEW", 15*time.Second)
	if attempts.Load() != 2 || e.RetryCount != 2 || e.ResolutionNote != "downstream still broken" {
		t.Fatalf("after exhausting retries: attempts %d, %v", attempts.Load(), e)
	}
	if keys[0] == keys[1] || keys[0] != fmt.Sprintf("flaky:%s:1", flaky) {
		t.Fatalf("idempotency keys per attempt: %v", keys)
	}

	// A worker that shuts down mid-replay reports the failed attempt; another
	// worker replays the entry. (A worker killed with SIGKILL, whose lease must
	// expire instead, is tested with real processes in internal/e2e.)
	slow := storeEntry(t, producer, "slow")
	started := make(chan struct{})
	dying, err := baldur.Dial(ctxT(t), endpoints(c), baldur.WithInstanceID("worker-dies"), baldur.WithSpoolDir(t.TempDir(), 100))
	if err != nil {
		t.Fatal(err)
	}
	dying.DLQ().HandleReplay("slow", func(ctx context.Context, e *baldur.Entry, key string) error {
		close(started)
		<-ctx.Done() // hangs until the process "dies"
		return ctx.Err()
	}, baldur.WithReplayLease(5*time.Second), baldur.WithReplayPoll(50*time.Millisecond))
	<-started
	e = waitStatus(t, admin, slow, "REPLAYING", 5*time.Second)
	if e.ReplayWorker != "worker-dies" {
		t.Fatalf("leased to %q", e.ReplayWorker)
	}
	go dying.Close()
	w2 := dialSDK(t, endpoints(c), baldur.WithInstanceID("worker-2"), baldur.WithSpoolDir(t.TempDir(), 100))
	var replayedBy atomic.Value
	w2.DLQ().HandleReplay("slow", func(ctx context.Context, e *baldur.Entry, key string) error {
		replayedBy.Store(key)
		return nil
	}, baldur.WithReplayPoll(50*time.Millisecond))
	e = waitStatus(t, admin, slow, "RESOLVED", 20*time.Second)
	if e.RetryCount != 2 || replayedBy.Load() != fmt.Sprintf("slow:%s:2", slow) {
		t.Fatalf("takeover: %v, key %v", e, replayedBy.Load())
	}
}

// A worker leasing in batches replays every entry exactly once (twice for
// those that fail once), running a batch's handlers concurrently.
func TestReplayWorkersLeaseInBatches(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	producer := dialSDK(t, endpoints(c), baldur.WithSpoolDir(t.TempDir(), 100))
	admin := dlqAdmin(t, c.Leader().GRPCAddr)
	ids := map[string]bool{}
	for range 40 {
		ids[storeEntry(t, producer, "bulk")] = true
	}
	var mu sync.Mutex
	calls := map[string]int{}
	inFlight, peak := 0, 0
	for w := range 1 { // one worker: concurrency can only come from its batches
		worker := dialSDK(t, endpoints(c), baldur.WithInstanceID(fmt.Sprintf("batch-%d", w)), baldur.WithSpoolDir(t.TempDir(), 100))
		worker.DLQ().HandleReplay("bulk", func(ctx context.Context, e *baldur.Entry, key string) error {
			mu.Lock()
			calls[e.Id]++
			first := calls[e.Id] == 1
			inFlight++
			peak = max(peak, inFlight)
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			mu.Lock()
			inFlight--
			mu.Unlock()
			if first && strings.HasSuffix(e.Id, "7") {
				return errors.New("transient") // fails once, succeeds on the next attempt
			}
			return nil
		}, baldur.WithReplayBatch(8), baldur.WithReplayPoll(20*time.Millisecond))
	}
	for id := range ids {
		e := waitStatus(t, admin, id, "RESOLVED", 20*time.Second)
		want := 1
		if strings.HasSuffix(id, "7") {
			want = 2
		}
		mu.Lock()
		n := calls[id]
		mu.Unlock()
		if n != want || int(e.RetryCount) != want {
			t.Fatalf("entry %s replayed %d times (retry count %d), want %d", id, n, e.RetryCount, want)
		}
	}
	if peak < 3 {
		t.Fatalf("the handler never ran concurrently (peak %d): batches were not leased", peak)
	}
}

func TestReplayPausesWhileBreakerOpenOrEmergency(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) {
		cfg.DLQBreakers = map[string][]string{"payment": {"stripe"}}
	}))
	addr := c.Nodes[0].GRPCAddr
	cl := dialSDK(t, addr, baldur.WithSpoolDir(t.TempDir(), 100))
	admin := dlqAdmin(t, addr)
	cc := circuits(t, addr)
	if _, err := cc.SetPolicy(ctxT(t), &pb.SetPolicyRequest{Name: "stripe", Policy: &pb.CircuitPolicy{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.ForceOpen(ctxT(t), &pb.ForceRequest{Name: "stripe", Reason: "upstream down"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AcquireReplay(ctxT(t), &pb.AcquireReplayRequest{Domains: []string{"payment"}, Worker: "probe"}); err != nil {
		t.Fatal(err)
	}
	id := storeEntry(t, cl, "payment")
	var replays atomic.Int32
	cl.DLQ().HandleReplay("payment", func(context.Context, *baldur.Entry, string) error { replays.Add(1); return nil }, baldur.WithReplayPoll(50*time.Millisecond))
	resp, err := admin.AcquireReplay(ctxT(t), &pb.AcquireReplayRequest{Domains: []string{"payment"}, Worker: "probe"})
	if err != nil || resp.Entry != nil || resp.BlockedReason != "paused: breaker stripe is OPEN" {
		t.Fatalf("acquire while the breaker is open: %v %v", resp, err)
	}
	time.Sleep(500 * time.Millisecond)
	if replays.Load() != 0 {
		t.Fatal("replayed while the breaker was OPEN")
	}
	// The breaker closes: replay resumes by itself.
	if _, err := cc.Reset(ctxT(t), &pb.ResetRequest{Name: "stripe", Reason: "recovered"}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, admin, id, "RESOLVED", 10*time.Second)
	// Emergency LEVEL_2 pauses replay too.
	if _, err := admin2(t, addr).TriggerEmergency(ctxT(t), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_2, Reason: "incident"}); err != nil {
		t.Fatal(err)
	}
	id2 := storeEntry(t, cl, "payment")
	time.Sleep(500 * time.Millisecond)
	if e, _ := admin.GetEntry(ctxT(t), &pb.GetEntryRequest{Id: id2}); e.Status != "PENDING" {
		t.Fatalf("replayed at LEVEL_2: %v", e)
	}
	if _, err := admin2(t, addr).ReleaseEmergency(ctxT(t), &pb.ReleaseEmergencyRequest{Reason: "over", Force: true}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, admin, id2, "RESOLVED", 10*time.Second)
	// Each pause is audited once (workers polled many times meanwhile),
	// and so is each resumption.
	trail, err := pb.NewAuditServiceClient(dialConn(t, addr)).ListAudit(ctxT(t), &pb.ListAuditRequest{Target: "dlq/domain/payment"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range trail.Records {
		got = append(got, r.Action+": "+r.Reason)
	}
	want := []string{
		"dlq.replay_blocked: paused: breaker stripe is OPEN",
		"dlq.replay_resumed: replay resumed after: paused: breaker stripe is OPEN",
		"dlq.replay_blocked: paused: emergency LEVEL_2",
		"dlq.replay_resumed: replay resumed after: paused: emergency LEVEL_2",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("pause records in the audit trail:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func admin2(t *testing.T, addr string) pb.EmergencyServiceClient { return admin(t, addr) }

func TestProtectWithDLQCapturesExhaustedRetries(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	cl := dialSDK(t, c.Nodes[0].GRPCAddr, baldur.WithSpoolDir(t.TempDir(), 100))
	admin := dlqAdmin(t, c.Nodes[0].GRPCAddr)
	failing := func(context.Context) (string, error) { return "", errors.New("card processor timeout") }
	r := baldur.ProtectWithMeta(ctxT(t), cl, "payment-api", failing,
		baldur.WithRetry[string](baldur.Retry{MaxAttempts: 2, BaseDelay: time.Millisecond}),
		baldur.WithDLQ[string]("payment", map[string]any{"order_id": "o-42", "amount": 12.5}))
	if r.DLQID == "" || r.Outcome != baldur.OutcomeFailure {
		t.Fatalf("result %+v", r)
	}
	e, err := admin.GetEntry(ctxT(t), &pb.GetEntryRequest{Id: r.DLQID})
	if err != nil || e.Domain != "payment" || e.FailureType != "MAX_RETRIES_ERRORS_ERRORSTRING" || e.RequestData.Fields["order_id"].GetStringValue() != "o-42" {
		t.Fatalf("captured entry: %v %v", e, err)
	}
	// A rejected call, or one the fallback served, is not captured.
	fb := baldur.ProtectWithMeta(ctxT(t), cl, "payment-api", failing,
		baldur.WithRetry[string](baldur.Retry{MaxAttempts: 2, BaseDelay: time.Millisecond}),
		baldur.WithDLQ[string]("payment", nil),
		baldur.WithFallback[string](func(context.Context, error) (string, error) { return "queued", nil }))
	if fb.DLQID != "" || !fb.FallbackUsed {
		t.Fatalf("fallback-served call captured: %+v", fb)
	}
	noRetry := baldur.ProtectWithMeta(ctxT(t), cl, "other", failing, baldur.WithDLQ[string]("payment", nil))
	if noRetry.DLQID != "" {
		t.Fatalf("a call without a retry stage was captured: %+v", noRetry)
	}
}

func TestBatchReplayAdaptsItsBatchSize(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	cl := dialSDK(t, endpoints(c), baldur.WithSpoolDir(t.TempDir(), 100))
	admin := dlqAdmin(t, c.Followers()[0].GRPCAddr) // relayed to the leader
	var ids []string
	for i := 0; i < 60; i++ {
		r, err := cl.DLQ().Store(ctxT(t), &baldur.Entry{Id: fmt.Sprintf("b%02d", i), Domain: "batch", FailureType: "X"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	// Everything fails twice first: all 60 end in REQUIRES_REVIEW.
	breaker := dialSDK(t, endpoints(c), baldur.WithInstanceID("fails"), baldur.WithSpoolDir(t.TempDir(), 100))
	breaker.DLQ().HandleReplay("batch", func(context.Context, *baldur.Entry, string) error { return errors.New("down") }, baldur.WithReplayPoll(10*time.Millisecond))
	for _, id := range ids {
		waitStatus(t, dlqAdmin(t, c.Leader().GRPCAddr), id, "REQUIRES_REVIEW", 30*time.Second)
	}
	breaker.Close()
	// Now even entries succeed and odd ones keep failing.
	w := dialSDK(t, endpoints(c), baldur.WithInstanceID("half"), baldur.WithSpoolDir(t.TempDir(), 100))
	w.DLQ().HandleReplay("batch", func(_ context.Context, e *baldur.Entry, _ string) error {
		var n int
		fmt.Sscanf(e.Id, "b%d", &n)
		if n%2 == 1 {
			return errors.New("still down")
		}
		return nil
	}, baldur.WithReplayPoll(10*time.Millisecond))
	stream, err := admin.ReplayBatch(ctxT(t), &pb.ReplayBatchRequest{Domain: "batch", MaxItems: 60, Rate: 500, Redrive: true, Reason: "vendor fixed", BatchTimeout: durationpb.New(20 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	var progress []*pb.ReplayBatchProgress
	for {
		p, err := stream.Recv()
		if err != nil {
			break
		}
		if !p.Done && p.BlockedReason == "" {
			progress = append(progress, p)
		}
	}
	if len(progress) != 2 || progress[0].BatchSize != 50 || progress[0].Failed != 25 || progress[0].Resolved != 25 || progress[0].NextBatchSize != 40 || progress[1].BatchSize != 10 {
		t.Fatalf("progress: %v", progress)
	}
}

// Payload documents survive the gRPC round trip as sent (every JSON value
// kind, nesting, unicode); values JSON cannot hold are refused by name.
func TestStorePayloadRoundTripAndNonJSONValues(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	admin := dlqAdmin(t, c.Nodes[0].GRPCAddr)
	doc := map[string]any{"n": 12.5, "big": 1e21, "neg": -3.0, "t": true, "nil": nil, "s": "é \"q\" <tag>\n",
		"list": []any{1.0, "two", []any{}, map[string]any{"deep": map[string]any{"x": false}}}, "empty": map[string]any{}}
	in, err := structpb.NewStruct(doc)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := admin.StoreEntry(ctxT(t), &pb.StoreEntryRequest{Entry: &pb.DLQEntry{Id: "rt-1", Domain: "payment", FailureType: "X", SnapshotData: in}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := admin.GetEntry(ctxT(t), &pb.GetEntryRequest{Id: "rt-1"})
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*structpb.Struct{"store answer": resp.Entry.SnapshotData, "get": got.SnapshotData} {
		if !reflect.DeepEqual(s.AsMap(), doc) {
			t.Errorf("%s: %v, want %v", name, s.AsMap(), doc)
		}
	}
	for _, bad := range []float64{math.NaN(), math.Inf(1)} {
		_, err := admin.StoreEntry(ctxT(t), &pb.StoreEntryRequest{Entry: &pb.DLQEntry{Id: "rt-2", Domain: "payment", FailureType: "X",
			RequestData: &structpb.Struct{Fields: map[string]*structpb.Value{"v": structpb.NewNumberValue(bad)}}}})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "request_data.v") {
			t.Errorf("request_data %v: %v, want INVALID_ARGUMENT naming request_data.v", bad, err)
		}
	}
	if _, err := admin.GetEntry(ctxT(t), &pb.GetEntryRequest{Id: "rt-2"}); status.Code(err) != codes.NotFound {
		t.Fatalf("a refused store left an entry: %v", err)
	}
}

// Replay attempts run through the idempotency gate under their
// per-attempt key (Baldur §5.3): an attempt done already is reported a
// success without running again.
func TestReplayRunsThroughTheGate(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	producer := dialSDK(t, endpoints(c), baldur.WithSpoolDir(t.TempDir(), 100))
	admin := dlqAdmin(t, c.Leader().GRPCAddr)
	gate := pb.NewIdempotencyServiceClient(dialConn(t, c.Leader().GRPCAddr))
	ran, done := storeEntry(t, producer, "gated"), storeEntry(t, producer, "gated")
	// done's first attempt ran before (say, on a worker that lost its
	// lease after the side effect): its gate record is completed.
	doneKey := baldur.ReplayGateKey(fmt.Sprintf("gated:%s:1", done))
	acq, err := gate.AcquireIdempotency(ctxT(t), &pb.AcquireIdempotencyRequest{Key: doneKey})
	if err != nil || acq.Decision != "CONTINUE" {
		t.Fatal(acq, err)
	}
	if _, err := gate.CompleteIdempotency(ctxT(t), &pb.CompleteIdempotencyRequest{Key: doneKey, Token: acq.Record.Token}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	calls := map[string]int{}
	w := dialSDK(t, endpoints(c), baldur.WithInstanceID("gated-worker"), baldur.WithSpoolDir(t.TempDir(), 100))
	w.DLQ().HandleReplay("gated", func(ctx context.Context, e *baldur.Entry, key string) error {
		mu.Lock()
		defer mu.Unlock()
		calls[e.Id]++
		return nil
	}, baldur.WithReplayPoll(50*time.Millisecond))
	waitStatus(t, admin, ran, "RESOLVED", 10*time.Second)
	e := waitStatus(t, admin, done, "RESOLVED", 10*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if calls[ran] != 1 || calls[done] != 0 || e.ResolutionType != "duplicate_skip" {
		t.Fatalf("handler calls %v; the done attempt: %v", calls, e)
	}
	rec, err := gate.GetIdempotency(ctxT(t), &pb.GetIdempotencyRequest{Key: baldur.ReplayGateKey(fmt.Sprintf("gated:%s:1", ran))})
	if err != nil || rec.Status != "completed" {
		t.Fatalf("the replayed attempt's gate record: %v %v", rec, err)
	}
}
