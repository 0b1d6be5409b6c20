package server_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/server"
	"google.golang.org/grpc/codes"
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
