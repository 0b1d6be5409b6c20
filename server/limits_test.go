package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// What clients create is bounded: breakers per cluster, DLQ domains and
// entry fields, watch streams per node; a refusal is RESOURCE_EXHAUSTED
// (or INVALID_ARGUMENT for a field) naming the limit, and nothing of a
// refused batch is applied.
func TestLimitsOnWhatClientsCreate(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) {
		cfg.MaxBreakers, cfg.MaxWatchers = 20, 3
		cfg.DLQ.MaxDomains = 3
		cfg.MetricsMaxNames = 5
	}))
	conn := dial(t, c.Leader().GRPCAddr)
	circuits := pb.NewCircuitServiceClient(conn)

	// Breakers: 20 register; a batch naming more is refused whole.
	var reports []*pb.OutcomeReport
	for i := range 20 {
		reports = append(reports, &pb.OutcomeReport{Name: fmt.Sprintf("svc-%02d", i), Successes: 1})
	}
	if _, err := circuits.ReportOutcomes(ctxT(t), &pb.ReportOutcomesRequest{InstanceId: "i", Reports: reports}); err != nil {
		t.Fatal(err)
	}
	_, err := circuits.ReportOutcomes(ctxT(t), &pb.ReportOutcomesRequest{InstanceId: "i", Reports: []*pb.OutcomeReport{
		{Name: "svc-00", Failures: 1}, {Name: "svc-new", Successes: 1}}})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-breakers") {
		t.Fatalf("registration past the cap: %v", err)
	}
	if _, err := circuits.SetPolicy(ctxT(t), &pb.SetPolicyRequest{Name: "svc-policy", Policy: &pb.CircuitPolicy{}}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a policy for a new breaker past the cap: %v", err)
	}
	list, err := circuits.ListCircuits(ctxT(t), &pb.ListCircuitsRequest{})
	if err != nil || len(list.Circuits) != 20 {
		t.Fatalf("breakers after the refusals: %d %v", len(list.Circuits), err)
	}
	// Pages: 20 breakers by 7, in name order, none twice.
	var names []string
	token := ""
	for pages := 0; ; pages++ {
		page, err := circuits.ListCircuits(ctxT(t), &pb.ListCircuitsRequest{PageSize: 7, PageToken: token})
		if err != nil || pages > 5 {
			t.Fatalf("page %d: %v", pages, err)
		}
		for _, ci := range page.Circuits {
			names = append(names, ci.Name)
		}
		if token = page.NextPageToken; token == "" {
			break
		}
	}
	if len(names) != 20 || names[0] != "svc-00" || names[19] != "svc-19" || !sort.StringsAreSorted(names) {
		t.Fatalf("paged names: %v", names)
	}
	if _, err := circuits.ListCircuits(ctxT(t), &pb.ListCircuitsRequest{PageSize: 20000}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("page size 20000: %v", err)
	}
	// Known breakers still take reports.
	if _, err := circuits.ReportOutcomes(ctxT(t), &pb.ReportOutcomesRequest{InstanceId: "i", Reports: []*pb.OutcomeReport{{Name: "svc-01", Successes: 1}}}); err != nil {
		t.Fatalf("a report for a known breaker at the cap: %v", err)
	}

	// DLQ: three domains; fields and metadata bounded.
	dlqs := pb.NewDLQServiceClient(conn)
	store := func(id, domain string, mod func(e *pb.DLQEntry)) error {
		e := &pb.DLQEntry{Id: id, Domain: domain, FailureType: "X"}
		if mod != nil {
			mod(e)
		}
		_, err := dlqs.StoreEntry(ctxT(t), &pb.StoreEntryRequest{Entry: e})
		return err
	}
	for i, d := range []string{"a", "b", "c"} {
		if err := store(fmt.Sprintf("e-%d", i), d, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := store("e-9", "d", nil); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--dlq-max-domains") {
		t.Fatalf("a fourth domain: %v", err)
	}
	if err := store("e-10", "a", nil); err != nil {
		t.Fatalf("a known domain at the cap: %v", err)
	}
	if err := store("e-11", "a", func(e *pb.DLQEntry) { e.EntityId = strings.Repeat("x", 40000) }); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "entity_id") {
		t.Fatalf("a 40 KB entity_id: %v", err)
	}
	if err := store("e-12", "a", func(e *pb.DLQEntry) {
		e.Metadata = map[string]string{}
		for i := range 65 {
			e.Metadata[fmt.Sprint("k", i)] = "v"
		}
	}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "metadata") {
		t.Fatalf("65 metadata keys: %v", err)
	}
	if err := store("e-13", "a", func(e *pb.DLQEntry) { e.Metadata = map[string]string{strings.Repeat("k", 40000): "v"} }); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a 40 KB metadata key: %v", err)
	}

	// Watchers: three per node here; a fourth is refused until one ends.
	em := pb.NewEmergencyServiceClient(conn)
	var cancels []context.CancelFunc
	for range 3 {
		ctx, cancel := context.WithCancel(ctxT(t))
		cancels = append(cancels, cancel)
		st, err := em.WatchEmergency(ctx, &pb.WatchEmergencyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	st, err := em.WatchEmergency(ctxT(t), &pb.WatchEmergencyRequest{})
	if err == nil {
		_, err = st.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-watchers") {
		t.Fatalf("a fourth watcher: %v", err)
	}
	cancels[0]()
	if !testcluster.Eventually(5_000_000_000, func() bool {
		st, err := em.WatchEmergency(ctxT(t), &pb.WatchEmergencyRequest{})
		if err != nil {
			return false
		}
		_, err = st.Recv()
		return err == nil
	}) {
		t.Fatal("a watcher slot did not come back after a stream ended")
	}
	for _, c := range cancels[1:] {
		c()
	}
	if v := testcluster.MetricValue(t, c.Leader().HTTPAddr, `baldur_limit_refusals_total{limit="breakers"}`); v < 2 {
		t.Fatalf("breaker refusals counted: %v", v)
	}
	// Per-breaker series are bounded (5 names here), the totals are not.
	if v := testcluster.MetricValue(t, c.Leader().HTTPAddr, `baldur_circuit_reports_total{name="other"}`); v < 15 {
		t.Fatalf("reports of names past the series budget: %v", v)
	}
	if v := testcluster.MetricValue(t, c.Leader().HTTPAddr, `baldur_circuits{state="CLOSED"}`); v != 20 {
		t.Fatalf("breakers by state: %v", v)
	}
}

// Breakers can be removed: by an admin (SDK watchers forget it), and by
// the leader when no instance reported an auto-registered, idle one.
func TestBreakerDeleteAndIdleSweep(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.CircuitIdleTimeout = 2 * time.Second }))
	conn := dial(t, c.Leader().GRPCAddr)
	circuits := pb.NewCircuitServiceClient(conn)
	if _, err := circuits.ReportOutcomes(ctxT(t), &pb.ReportOutcomesRequest{InstanceId: "i", Reports: []*pb.OutcomeReport{{Name: "gone", Successes: 1}, {Name: "idle", Successes: 1}}}); err != nil {
		t.Fatal(err)
	}
	// A policy of its own keeps a breaker from the idle sweep.
	if _, err := circuits.SetPolicy(ctxT(t), &pb.SetPolicyRequest{Name: "kept", Policy: &pb.CircuitPolicy{FailureThreshold: 7}}); err != nil {
		t.Fatal(err)
	}
	watch, err := circuits.WatchCircuits(ctxT(t), &pb.WatchCircuitsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := watch.Recv()
	if err != nil || len(first.Circuits) != 3 {
		t.Fatalf("first watch message: %v %v", first, err)
	}
	if _, err := circuits.DeleteCircuit(ctxT(t), &pb.DeleteCircuitRequest{Name: "gone"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("delete without a reason: %v", err)
	}
	if _, err := circuits.DeleteCircuit(ctxT(t), &pb.DeleteCircuitRequest{Name: "gone", Reason: "decommissioned"}); err != nil {
		t.Fatal(err)
	}
	if _, err := circuits.DeleteCircuit(ctxT(t), &pb.DeleteCircuitRequest{Name: "gone", Reason: "again"}); status.Code(err) != codes.NotFound {
		t.Fatalf("deleting it twice: %v", err)
	}
	// The watcher gets a snapshot without it.
	for {
		msg, err := watch.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if msg.Snapshot {
			for _, ci := range msg.Circuits {
				if ci.Name == "gone" {
					t.Fatalf("the snapshot after the delete still holds it")
				}
			}
			break
		}
	}
	// "idle" is swept; "kept" stays.
	if !testcluster.Eventually(10*time.Second, func() bool {
		_, err := circuits.GetCircuit(ctxT(t), &pb.GetCircuitRequest{Name: "idle"})
		return status.Code(err) == codes.NotFound
	}) {
		t.Fatal("the idle breaker was not removed")
	}
	if _, err := circuits.GetCircuit(ctxT(t), &pb.GetCircuitRequest{Name: "kept"}); err != nil {
		t.Fatalf("a breaker with its own policy was swept: %v", err)
	}
	recs, err := pb.NewAuditServiceClient(conn).ListAudit(ctxT(t), &pb.ListAuditRequest{Action: "circuit.delete"})
	if err != nil || len(recs.Records) != 2 {
		t.Fatalf("deletes in the audit trail: %v %v", recs, err)
	}
}

// TestSlowAndManyWatchersAreBounded: a client connection holds at most
// --max-watchers-per-connection streams (REST watchers, which share the
// gateway's own connection, are not limited by it); a watcher whose client
// takes nothing is dropped after --watch-send-timeout, its connection is
// closed when its data still cannot leave, and the node's watcher count
// comes back down.
func TestSlowAndManyWatchersAreBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) {
		cfg.MaxWatchersPerConn, cfg.WatchSendTimeout = 2, 2*time.Second
	}))
	n := c.Leader()
	watch := func(conn *grpc.ClientConn) error {
		st, err := pb.NewEmergencyServiceClient(conn).WatchEmergency(ctxT(t), &pb.WatchEmergencyRequest{})
		if err == nil {
			_, err = st.Recv()
		}
		return err
	}
	a := dial(t, n.GRPCAddr)
	for range 2 {
		if err := watch(a); err != nil {
			t.Fatal(err)
		}
	}
	if err := watch(a); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-watchers-per-connection") {
		t.Fatalf("a third watcher on one connection: %v", err)
	}
	if err := watch(dial(t, n.GRPCAddr)); err != nil {
		t.Fatalf("a watcher on another connection: %v", err)
	}
	var rest []io.Closer
	for range 3 {
		resp, err := http.Get("http://" + n.HTTPAddr + "/v1/emergency:watch")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("REST watcher: %v %v", resp, err)
		}
		rest = append(rest, resp.Body)
	}
	if v := testcluster.MetricValue(t, n.HTTPAddr, "baldur_watchers"); v != 6 {
		t.Fatalf("watchers open: %v, want 6", v)
	}
	for _, b := range rest {
		b.Close()
	}

	// State whose snapshot is larger than a stream's window.
	em := emergencyClient(t, n)
	for i := range 200 {
		if _, err := em.TriggerEmergency(ctxT(t), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_1, Scope: fmt.Sprintf("svc-%d", i), Reason: strings.Repeat("r", 450)}); err != nil {
			t.Fatal(err)
		}
	}
	// A watcher that reads everything, and a client with fixed 64 KiB
	// windows that never reads.
	reader, err := pb.NewEmergencyServiceClient(dial(t, n.GRPCAddr)).WatchEmergency(ctxT(t), &pb.WatchEmergencyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		for {
			if _, err := reader.Recv(); err != nil {
				readErr <- err
				return
			}
		}
	}()
	stuck, err := grpc.NewClient(n.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	if _, err := pb.NewEmergencyServiceClient(stuck).WatchEmergency(context.Background(), &pb.WatchEmergencyRequest{}); err != nil {
		t.Fatal(err)
	}
	// Changes go on: once its window and the node's per-stream write
	// buffer (64 KiB each) are full, a send blocks.
	for i := range 800 {
		if _, err := em.TriggerEmergency(ctxT(t), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_Value(1 + i%3), Scope: fmt.Sprintf("svc-%d", i%200), Reason: strings.Repeat(string(rune('a'+i%26)), 450)}); err != nil {
			t.Fatal(err)
		}
	}
	// Every watcher that stopped reading (the stuck client's, and those
	// above that read once) is dropped; the stuck client's data could not
	// leave, so its connection is closed; the watcher count comes back to
	// the one that reads.
	if !testcluster.Eventually(20*time.Second, func() bool {
		return stuck.GetState() != connectivity.Ready && testcluster.MetricValue(t, n.HTTPAddr, "baldur_watchers") == 1
	}) {
		t.Fatalf("stuck client %v, watchers %v", stuck.GetState(), testcluster.MetricValue(t, n.HTTPAddr, "baldur_watchers"))
	}
	if v := testcluster.MetricValue(t, n.HTTPAddr, "baldur_watchers_dropped_total"); v < 1 {
		t.Fatalf("dropped watchers counted: %v", v)
	}
	select {
	case err := <-readErr:
		t.Fatalf("the watcher that reads was cut: %v", err)
	default:
	}
	// Watchers that read are untouched by all this.
	if err := watch(dial(t, n.GRPCAddr)); err != nil {
		t.Fatalf("a new watcher: %v", err)
	}
}
