// Command baldur-fleetsim runs N SDK instances in one process against a
// running baldurd cluster and prints what they cost each node and how
// quickly the fleet hears of changes.
//
// Each instance is a real SDK client (baldur.Dial: one connection, an
// emergency and a circuit watch stream, outcome reports every
// --report-interval) spread over the endpoints in turn. One driver
// goroutine makes every instance call --breakers breakers --call-rate
// times a second (Allow and Record on the SDK's breakers); a fleet-wide
// --dlq-rate of DLQ stores goes through the instances in turn; --leases
// instances each hold a lease the SDK keeps alive.
//
// During --duration it measures:
//   - fan-out: every --change-every an emergency trigger (scope
//     "fleetsim") is written through the first endpoint; the time from the
//     write to the moment each instance's Level shows it, taken in the
//     SDK's WithOnUpdate callback (p50, p99 over instances and changes,
//     and the slowest instance per change);
//   - fleet trip: every --trip-every one breaker starts failing for every
//     instance; the time from the first failing call until every
//     instance's fleet view of it is OPEN (p50, p99 over trips), then it is
//     reset; changes and trips take turns: each starts once the one before
//     (and a trip's reset) has reached every instance, and 200 ms more;
//   - per node, from its /metrics (--metrics, one HTTP address per node):
//     CPU (cores used over the run), RSS, goroutines, watch streams, and the
//     reports it received per second; for the leader, the merged report
//     batches it ingested per second.
//
// Example, against `make cluster`:
//
//	baldur-fleetsim --endpoints 127.0.0.1:7400,127.0.0.1:7410,127.0.0.1:7420 \
//	  --metrics 127.0.0.1:7401,127.0.0.1:7411,127.0.0.1:7421 --instances 1000 --duration 60s
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

type config struct {
	endpoints, metrics       []string
	instances, breakers      int
	callRate                 float64
	reportInterval           time.Duration
	idleReportInterval       time.Duration
	dlqRate                  float64
	leases                   int
	duration                 time.Duration
	changeEvery, tripEvery   time.Duration
	token, cacert, cert, key string
	dialConcurrency          int
}

func main() {
	var cfg config
	var endpoints, metrics string
	flag.StringVar(&endpoints, "endpoints", "127.0.0.1:7400", "gRPC addresses of the nodes, comma-separated; instances are spread over them in turn")
	flag.StringVar(&metrics, "metrics", "", "HTTP addresses of the nodes (for /metrics), comma-separated; empty: no per-node figures")
	flag.IntVar(&cfg.instances, "instances", 1000, "SDK instances to run")
	flag.IntVar(&cfg.breakers, "breakers", 10, "breakers each instance calls (names shared by the fleet)")
	flag.Float64Var(&cfg.callRate, "call-rate", 20, "calls per second each instance makes on each breaker")
	flag.DurationVar(&cfg.reportInterval, "report-interval", 100*time.Millisecond, "how often each instance reports outcomes")
	flag.DurationVar(&cfg.idleReportInterval, "idle-report-interval", time.Second, "how long an instance with nothing but successes holds its report (at most --report-interval: report every interval)")
	flag.Float64Var(&cfg.dlqRate, "dlq-rate", 50, "DLQ stores per second, fleet-wide")
	flag.IntVar(&cfg.leases, "leases", 100, "instances that each hold a lease (TTL 10s, kept alive by the SDK)")
	flag.DurationVar(&cfg.duration, "duration", 60*time.Second, "how long to measure once every instance is connected")
	flag.DurationVar(&cfg.changeEvery, "change-every", 2*time.Second, "how often to change the emergency level (fan-out)")
	flag.DurationVar(&cfg.tripEvery, "trip-every", 5*time.Second, "how often to make a breaker fail fleet-wide (trip latency)")
	flag.StringVar(&cfg.token, "token", os.Getenv("BALDUR_TOKEN"), "bearer token (role service; operator for the changes and resets)")
	flag.StringVar(&cfg.cacert, "cacert", os.Getenv("BALDUR_CACERT"), "PEM CA of the nodes (TLS)")
	flag.StringVar(&cfg.cert, "cert", os.Getenv("BALDUR_CERT"), "PEM client certificate")
	flag.StringVar(&cfg.key, "key", os.Getenv("BALDUR_KEY"), "PEM key of --cert")
	flag.IntVar(&cfg.dialConcurrency, "dial-concurrency", 50, "instances connecting at once while the fleet starts")
	cpuProfile := flag.String("cpuprofile", "", "write the simulator's own CPU profile (the measured period) to this file")
	flag.Parse()
	cfg.endpoints = splitList(endpoints)
	cfg.metrics = splitList(metrics)
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "baldur-fleetsim:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "baldur-fleetsim: --cpuprofile:", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "baldur-fleetsim:", err)
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (c config) validate() error {
	switch {
	case len(c.endpoints) == 0:
		return errors.New("--endpoints: give at least one node")
	case c.instances < 1:
		return fmt.Errorf("--instances %d: at least 1", c.instances)
	case c.breakers < 1 || c.breakers > 1000:
		return fmt.Errorf("--breakers %d: 1..1000", c.breakers)
	case c.callRate <= 0 || c.callRate > 1000:
		return fmt.Errorf("--call-rate %v: above 0, at most 1000", c.callRate)
	case c.reportInterval < 10*time.Millisecond:
		return fmt.Errorf("--report-interval %v: at least 10ms", c.reportInterval)
	case c.dlqRate < 0:
		return fmt.Errorf("--dlq-rate %v: not negative", c.dlqRate)
	case c.leases < 0 || c.leases > c.instances:
		return fmt.Errorf("--leases %d: 0..--instances", c.leases)
	case c.duration < time.Second:
		return fmt.Errorf("--duration %v: at least 1s", c.duration)
	case c.changeEvery < 100*time.Millisecond || c.tripEvery < time.Second:
		return fmt.Errorf("--change-every (%v) at least 100ms, --trip-every (%v) at least 1s", c.changeEvery, c.tripEvery)
	case c.dialConcurrency < 1:
		return fmt.Errorf("--dial-concurrency %d: at least 1", c.dialConcurrency)
	}
	return nil
}

// fleet is the running instances.
type fleet struct {
	cfg      config
	clients  []*baldur.Client
	breakers [][]*baldur.Breaker // [instance][breaker]
	names    []string
	failing  []atomic.Bool // per breaker: calls fail
	// per breaker: when the first call failed once failing was set (Unix
	// ns): a trip is timed from there, not from the flag, which the driver
	// may act on late while the machine is busy
	firstFail []atomic.Int64
	probe     atomic.Pointer[probe]
	calls     atomic.Uint64
	stored    atomic.Uint64
	dlqErrs   atomic.Uint64
}

func run(ctx context.Context, cfg config, out io.Writer) error {
	sdkOpts := []baldur.Option{baldur.WithReportInterval(cfg.reportInterval), baldur.WithIdleReportInterval(cfg.idleReportInterval), baldur.WithStaleAfter(time.Minute)}
	var dialOpts []grpc.DialOption
	if cfg.token != "" {
		sdkOpts = append(sdkOpts, baldur.WithToken(cfg.token))
	}
	if cfg.cacert != "" || cfg.cert != "" {
		tlsCfg, err := baldur.TLSConfig(cfg.cacert, cfg.cert, cfg.key)
		if err != nil {
			return err
		}
		sdkOpts = append(sdkOpts, baldur.WithTLS(tlsCfg))
		dialOpts = append(dialOpts, baldur.TLSDialOption(tlsCfg))
	}
	adminConn, err := baldur.NewConn(strings.Join(cfg.endpoints, ","), dialOpts...)
	if err != nil {
		return err
	}
	defer adminConn.Close()
	actx := func() (context.Context, context.CancelFunc) {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		if cfg.token != "" {
			c = withToken(c, cfg.token)
		}
		return c, cancel
	}
	f := &fleet{cfg: cfg, failing: make([]atomic.Bool, cfg.breakers), firstFail: make([]atomic.Int64, cfg.breakers)}
	for b := range cfg.breakers {
		f.names = append(f.names, fmt.Sprintf("fleetsim-%03d", b))
	}
	// Fleet policies: a breaker trips when half of the last 200 calls fail
	// (at least 100 calls, from at least 3 instances); an instance's own
	// view would need 1,000 failures in a row, so the fleet acts first.
	circuits := pb.NewCircuitServiceClient(adminConn)
	for _, name := range f.names {
		c, cancel := actx()
		_, err := circuits.SetPolicy(c, &pb.SetPolicyRequest{Name: name, Reason: "fleetsim", Policy: &pb.CircuitPolicy{
			FailureThreshold: 1000, FailureRateThreshold: proto.Float64(50), MinimumCalls: 100, WindowSize: 200,
			MinReporters: int32(min(3, cfg.instances)), RecoveryTimeout: durationpb.New(time.Hour)}})
		cancel()
		if err != nil {
			return fmt.Errorf("set the policy of %s: %w", name, err)
		}
	}

	// Connect the fleet, a few at a time.
	fmt.Fprintf(out, "connecting %d instances to %d nodes...\n", cfg.instances, len(cfg.endpoints))
	start := time.Now()
	f.clients = make([]*baldur.Client, cfg.instances)
	f.breakers = make([][]*baldur.Breaker, cfg.instances)
	sem := make(chan struct{}, cfg.dialConcurrency)
	var wg sync.WaitGroup
	var dialErr atomic.Pointer[error]
	for i := range cfg.instances {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			// Spread: instance i starts at endpoint i mod n and lists the rest after it.
			n := len(cfg.endpoints)
			eps := make([]string, n)
			for k := range n {
				eps[k] = cfg.endpoints[(i+k)%n]
			}
			c, err := baldur.Dial(ctx, strings.Join(eps, ","), append(sdkOpts, baldur.WithInstanceID(fmt.Sprintf("sim-%05d", i)),
				baldur.WithOnUpdate(func(u baldur.Update) { f.updated(i, u) }))...)
			if err == nil {
				wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
				err = c.WaitReady(wctx)
				cancel()
			}
			if err != nil {
				dialErr.Store(&err)
				return
			}
			f.clients[i] = c
			for _, name := range f.names {
				f.breakers[i] = append(f.breakers[i], c.Breaker(name))
			}
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range f.clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	if e := dialErr.Load(); e != nil {
		return fmt.Errorf("an instance did not connect: %w", *e)
	}
	fmt.Fprintf(out, "connected in %v\n", time.Since(start).Round(time.Millisecond))

	// Leases.
	for i := range cfg.leases {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		if _, err := f.clients[i].Leases().Acquire(c, fmt.Sprintf("fleetsim-lease-%05d", i), 10*time.Second); err != nil && !errors.Is(err, baldur.ErrLeaseHeld) {
			cancel()
			return fmt.Errorf("lease %d: %w", i, err)
		}
		cancel()
	}

	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { defer bg.Done(); f.drive(runCtx) }()
	go func() { defer bg.Done(); f.storeDLQ(runCtx) }()

	before := scrapeAll(cfg.metrics)
	selfCPU0 := selfCPU()
	t0 := time.Now()
	var fanout, fanoutSlowest, trips, tripFirst, tripPer, decided, driverLag []time.Duration
	nextChange, nextTrip := t0.Add(cfg.changeEvery), t0.Add(cfg.tripEvery)
	em := pb.NewEmergencyServiceClient(adminConn)
	level := 0
	tripIdx := 0
	for time.Since(t0) < cfg.duration && ctx.Err() == nil {
		now := time.Now()
		switch {
		case !now.Before(nextChange):
			level = level%3 + 1
			per, err := f.measureChange(ctx, func() error {
				c, cancel := actx()
				defer cancel()
				_, err := em.TriggerEmergency(c, &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_Value(level), Scope: "fleetsim", Reason: "fleetsim fan-out"})
				return err
			}, level)
			if err != nil {
				return fmt.Errorf("emergency change: %w", err)
			}
			fanout = append(fanout, per...)
			fanoutSlowest = append(fanoutSlowest, maxOf(per))
			nextChange = time.Now().Add(cfg.changeEvery)
			nextTrip = later(nextTrip, time.Now().Add(settle))
		case !now.Before(nextTrip):
			b := tripIdx % cfg.breakers
			tripIdx++
			f.firstFail[b].Store(0)
			notClosed := 0
			for i := range f.breakers {
				if f.breakers[i][b].FleetState() != baldur.StateClosed {
					notClosed++
				}
			}
			flagged := time.Now()
			per, err := f.measureTrip(ctx, b)
			if err != nil {
				return err
			}
			if f.firstFail[b].Load() == 0 {
				// Not a trip this run caused: say what the breaker was, and
				// leave it out of the figures.
				c, cancel := actx()
				st, err := circuits.GetCircuit(c, &pb.GetCircuitRequest{Name: f.names[b]})
				cancel()
				fmt.Fprintf(out, "trip %d left out: breaker %s OPEN for every instance before any call failed (%d instances not CLOSED at the onset; now %v, %v)\n", tripIdx, f.names[b], notClosed, st, err)
				per = nil
			}
			c, cancel := actx()
			if per != nil {
				// From the first failing call: the driver shares the
				// machine and may make it late (driverLag).
				onset := time.Unix(0, f.firstFail[b].Load())
				lag := onset.Sub(flagged)
				driverLag = append(driverLag, lag)
				for i := range per {
					per[i] = max(0, per[i]-lag)
				}
				trips = append(trips, maxOf(per))
				tripFirst = append(tripFirst, slices.Min(per))
				tripPer = append(tripPer, per...)
				if st, err := circuits.GetCircuit(c, &pb.GetCircuitRequest{Name: f.names[b]}); err == nil && st.OpenedAt != nil {
					decided = append(decided, st.OpenedAt.AsTime().Sub(onset))
				}
			}
			cancel()
			// The reset is a change for every instance too: the next
			// measurement starts once the fleet has it, so it does not
			// time this one's tail.
			if _, err := f.measure(ctx, baldur.UpdateCircuits, func(i int) bool {
				return f.breakers[i][b].FleetState() == baldur.StateClosed
			}, func() error {
				c, cancel := actx()
				defer cancel()
				_, err := circuits.Reset(c, &pb.ResetRequest{Name: f.names[b], Reason: "fleetsim: next trip"})
				return err
			}, fmt.Sprintf("breaker %s reset", f.names[b])); err != nil {
				return fmt.Errorf("reset %s: %w", f.names[b], err)
			}
			nextTrip = time.Now().Add(cfg.tripEvery)
			nextChange = later(nextChange, time.Now().Add(settle))
		default:
			time.Sleep(10 * time.Millisecond)
		}
	}
	elapsed := time.Since(t0)
	after := scrapeAll(cfg.metrics)
	simCores := (selfCPU() - selfCPU0).Seconds() / elapsed.Seconds()
	cancelRun()
	bg.Wait()

	fmt.Fprintf(out, "\n%d instances, %d breakers each at %.0f calls/s, reports every %v (successes alone every %v), %.0f DLQ stores/s, %d leases; measured %v\n",
		cfg.instances, cfg.breakers, cfg.callRate, cfg.reportInterval, max(cfg.reportInterval, cfg.idleReportInterval), cfg.dlqRate, cfg.leases, elapsed.Round(time.Second))
	fmt.Fprintf(out, "calls made %.0f/s; DLQ stores %d (%d failed); this simulator used %.2f cores (on the same machine, it competes with the nodes)\n",
		float64(f.calls.Load())/elapsed.Seconds(), f.stored.Load(), f.dlqErrs.Load(), simCores)
	fmt.Fprintf(out, "fan-out (write -> instance sees it), %d changes: p50 %v, p99 %v; slowest instance per change p50 %v, p99 %v\n",
		len(fanoutSlowest), pct(fanout, 50), pct(fanout, 99), pct(fanoutSlowest, 50), pct(fanoutSlowest, 99))
	fmt.Fprintf(out, "  slowest instance per change, in turn: %s\n", joinDurations(fanoutSlowest))
	fmt.Fprintf(out, "fleet trip (first failing call -> every instance's fleet view OPEN), %d trips: p50 %v, p99 %v; of which until the leader committed the trip: p50 %v, p99 %v; the first instance p50 %v; per instance p50 %v, p99 %v (the first failing call came p50 %v, p99 %v after the breaker was set to fail)\n",
		len(trips), pct(trips, 50), pct(trips, 99), pct(decided, 50), pct(decided, 99), pct(tripFirst, 50), pct(tripPer, 50), pct(tripPer, 99), pct(driverLag, 50), pct(driverLag, 99))
	fmt.Fprintf(out, "  slowest instance per trip, in turn: %s\n", joinDurations(trips))
	if len(cfg.metrics) > 0 {
		printNodes(out, cfg, before, after, elapsed)
	}
	return nil
}

// drive makes every instance's calls from one goroutine, spread evenly
// over time (every 5 ms the next share of the fleet's instance-breaker
// pairs, in turn), so each pair is called --call-rate times a second and
// a failure that starts is met within milliseconds somewhere in the
// fleet, as in a real fleet whose calls do not arrive in lockstep.
func (f *fleet) drive(ctx context.Context) {
	const step = 5 * time.Millisecond
	tick := time.NewTicker(step)
	defer tick.Stop()
	errDown := errors.New("fleetsim: dependency down")
	pairs := len(f.breakers) * f.cfg.breakers
	perSecond := float64(pairs) * f.cfg.callRate
	cursor, owed := 0, 0.0
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			owed += perSecond * now.Sub(last).Seconds()
			last = now
		}
		for ; owed >= 1; owed-- {
			i, b := cursor/f.cfg.breakers, cursor%f.cfg.breakers
			cursor = (cursor + 1) % pairs
			br := f.breakers[i][b]
			if br.Allow() != nil {
				continue
			}
			if f.failing[b].Load() {
				if f.firstFail[b].Load() == 0 {
					f.firstFail[b].CompareAndSwap(0, time.Now().UnixNano())
				}
				br.Record(errDown)
			} else {
				br.Record(nil)
			}
			f.calls.Add(1)
		}
		owed = min(owed, perSecond) // a stall is not made up in a burst
	}
}

// storeDLQ stores --dlq-rate entries a second through the instances in turn.
func (f *fleet) storeDLQ(ctx context.Context) {
	if f.cfg.dlqRate == 0 {
		return
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / f.cfg.dlqRate))
	defer tick.Stop()
	payload, _ := structpb.NewStruct(map[string]any{"order": "o-1", "amount": 12.5})
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	defer wg.Wait()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		c := f.clients[n%len(f.clients)]
		select {
		case sem <- struct{}{}:
		default:
			f.dlqErrs.Add(1) // the cluster is behind: count it, do not pile up
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := c.DLQ().Store(sctx, &baldur.Entry{Domain: "fleetsim", FailureType: "MAX_RETRIES_TIMEOUT", RequestData: payload}); err != nil {
				f.dlqErrs.Add(1)
				return
			}
			f.stored.Add(1)
		}()
	}
}

// probe is a change being measured: each instance's time to see it,
// taken by the instance's own watch goroutine when the pushed change is
// applied (the SDK's WithOnUpdate), so measuring costs nothing per
// instance between changes and nothing is polled.
type probe struct {
	kind  baldur.UpdateKind
	start time.Time
	shows func(i int) bool // instance i's view shows the change
	seen  []atomic.Int64   // per instance: nanoseconds after start (0: not yet)
	left  atomic.Int64
}

// updated is every instance's WithOnUpdate callback. The fleet's slices
// are complete before a probe is stored, and the probe's atomic store and
// load order those writes before these reads.
func (f *fleet) updated(i int, u baldur.Update) {
	p := f.probe.Load()
	if p == nil || u.Kind != p.kind || p.seen[i].Load() != 0 || !p.shows(i) {
		return
	}
	if p.seen[i].CompareAndSwap(0, max(1, int64(time.Since(p.start)))) {
		p.left.Add(-1)
	}
}

// measure starts a probe, makes the change and waits until every
// instance shows it (up to 30 s); it returns each instance's time.
func (f *fleet) measure(ctx context.Context, kind baldur.UpdateKind, shows func(i int) bool, change func() error, what string) ([]time.Duration, error) {
	n := len(f.clients)
	p := &probe{kind: kind, start: time.Now(), shows: shows, seen: make([]atomic.Int64, n)}
	p.left.Store(int64(n))
	f.probe.Store(p)
	defer f.probe.Store(nil)
	if err := change(); err != nil {
		return nil, err
	}
	// Instances that showed it before the probe could see their update
	// (none should), or whose update raced the store above.
	for i := range n {
		if p.seen[i].Load() == 0 && shows(i) && p.seen[i].CompareAndSwap(0, max(1, int64(time.Since(p.start)))) {
			p.left.Add(-1)
		}
	}
	for p.left.Load() > 0 && time.Since(p.start) < 30*time.Second && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	if left := p.left.Load(); left > 0 {
		var which []string
		for i, c := range f.clients {
			if p.seen[i].Load() == 0 && len(which) < 5 {
				which = append(which, fmt.Sprintf("%s (emergency revision %d, stale %v)", c.InstanceID(), c.Emergency().Revision(), c.Emergency().Stale()))
			}
		}
		return nil, fmt.Errorf("%d instances did not see %s within 30s: %s", left, what, strings.Join(which, ", "))
	}
	seen := make([]time.Duration, n)
	for i := range seen {
		seen[i] = time.Duration(p.seen[i].Load())
	}
	return seen, nil
}

// measureChange writes a change and returns, per instance, the time until
// its Level for scope "fleetsim" shows it.
func (f *fleet) measureChange(ctx context.Context, write func() error, level int) ([]time.Duration, error) {
	return f.measure(ctx, baldur.UpdateEmergency, func(i int) bool {
		return int(f.clients[i].Emergency().LevelOf("fleetsim")) == level
	}, write, fmt.Sprintf("the change to LEVEL_%d", level))
}

// measureTrip makes breaker b fail for every instance and returns, per
// instance, the time until its fleet view is OPEN.
func (f *fleet) measureTrip(ctx context.Context, b int) ([]time.Duration, error) {
	defer f.failing[b].Store(false)
	return f.measure(ctx, baldur.UpdateCircuits, func(i int) bool {
		return f.breakers[i][b].FleetState() == baldur.StateOpen
	}, func() error { f.failing[b].Store(true); return nil }, fmt.Sprintf("breaker %s OPEN", f.names[b]))
}

func joinDurations(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = d.Round(time.Millisecond).String()
	}
	return strings.Join(parts, " ")
}

// settle is the quiet time between the end of one measured change and the
// start of the next.
const settle = 200 * time.Millisecond

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// selfCPU is the CPU time this process used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// withToken adds the bearer token to an admin call.
func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func maxOf(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)].Round(100 * time.Microsecond)
}

// scrape reads the unlabelled samples and the sums of labelled ones from
// a node's /metrics.
func scrape(addr string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		name := line[:sp]
		if b := strings.IndexByte(name, '{'); b >= 0 {
			name = name[:b] // labelled: summed
		}
		out[name] += v
	}
	return out
}

func scrapeAll(addrs []string) []map[string]float64 {
	out := make([]map[string]float64, len(addrs))
	for i, a := range addrs {
		out[i] = scrape(a)
	}
	return out
}

func printNodes(out io.Writer, cfg config, before, after []map[string]float64, elapsed time.Duration) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "node\tleader\tCPU (cores)\tRSS MiB\tgoroutines\twatchers\treports/s in\tmerged batches/s ingested\t")
	for i, a := range cfg.metrics {
		b, e := before[i], after[i]
		s := elapsed.Seconds()
		leader := ""
		if e["baldur_node_is_leader"] == 1 {
			leader = "*"
		}
		fmt.Fprintf(tw, "%s\t%s\t%.3f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t\n", a, leader,
			(e["process_cpu_seconds_total"]-b["process_cpu_seconds_total"])/s,
			e["process_resident_memory_bytes"]/(1<<20), e["go_goroutines"], e["baldur_watchers"],
			(e["baldur_circuit_reports_total"]-b["baldur_circuit_reports_total"])/s,
			(e["baldur_circuit_evaluator_lag_seconds_count"]-b["baldur_circuit_evaluator_lag_seconds_count"])/s)
	}
	tw.Flush()
}
