package baldur

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Breaker returns the named breaker, creating it on first use. A breaker
// the cluster does not know yet is registered by the first outcome report
// with the server's default policy; until then it runs its local view with
// Baldur's defaults.
func (c *Client) Breaker(name string) *Breaker {
	if b, ok := c.breakers.Load(name); ok {
		return b.(*Breaker)
	}
	nb := newBreaker(c, name)
	if f, ok := c.fleetStates.Load(name); ok {
		nb.setFleet(f.(*fleetView))
		nb.intervalRev.Store(f.(*fleetView).revision)
	}
	b, _ := c.breakers.LoadOrStore(name, nb)
	return b.(*Breaker)
}

// KillSwitch reports whether the cluster's kill switch is on (every breaker
// passes calls straight through).
func (c *Client) KillSwitch() bool { return c.killSwitch.Load() }

// circuitsStale reports whether the pushed breaker states are older than
// the stale bound (or never arrived). An answered report counts as news
// from the cluster: the member that answered keeps the watches on the
// same connection current and leaves out their heartbeats meanwhile.
func (c *Client) circuitsStale() bool {
	at := c.circuitsAt.Load()
	return at == 0 || time.Since(time.Unix(0, max(at, c.answeredAt.Load()))) > c.opts.staleAfter
}

func (c *Client) kickReporter() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Client) applyCircuits(msg *pb.WatchCircuitsResponse) {
	c.killSwitch.Store(msg.KillSwitch)
	c.circuitsAt.Store(time.Now().UnixNano())
	var seen map[string]bool
	if msg.Snapshot {
		seen = make(map[string]bool, len(msg.Circuits))
	}
	for _, ci := range msg.Circuits {
		f := &fleetView{state: State(ci.State), policy: localPolicyFrom(ci.Policy), probeWindow: ci.ProbeWindow, revision: ci.Revision}
		if ci.Pinned {
			f.policy.dryRun = false // a force always applies
		}
		if seen != nil {
			seen[ci.Name] = true
		}
		c.fleetStates.Store(ci.Name, f)
		if b, ok := c.breakers.Load(ci.Name); ok {
			b.(*Breaker).setFleet(f)
		}
	}
	if msg.Snapshot {
		c.fleetStates.Range(func(k, _ any) bool {
			if !seen[k.(string)] {
				c.fleetStates.Delete(k)
				if b, ok := c.breakers.Load(k); ok {
					b.(*Breaker).fleet.Store(nil)
				}
			}
			return true
		})
	}
}

func (c *Client) watchCircuits(ctx context.Context) {
	client := pb.NewCircuitServiceClient(c.conn)
	var rev uint64
	delay := c.opts.minBackoff
	for ctx.Err() == nil {
		stream, err := client.WatchCircuits(c.callContext(ctx), &pb.WatchCircuitsRequest{FromRevision: rev}, grpc.WaitForReady(true))
		if err == nil {
			for {
				msg, rerr := stream.Recv()
				if rerr != nil {
					err = rerr
					break
				}
				c.applyCircuits(msg)
				rev = msg.Revision
				if f := c.opts.onUpdate; f != nil && (msg.Snapshot || len(msg.Circuits) > 0) {
					u := Update{Kind: UpdateCircuits, Revision: msg.Revision, Snapshot: msg.Snapshot, Names: make([]string, 0, len(msg.Circuits))}
					for _, ci := range msg.Circuits {
						u.Names = append(u.Names, ci.Name)
					}
					f(u)
				}
				delay = c.opts.minBackoff
			}
		}
		if ctx.Err() != nil {
			return
		}
		c.opts.logger.Debug("baldur.watch_reconnecting", "stream", "circuits", "revision", rev, "err", err)
		if !c.backoff(ctx, &delay) {
			return
		}
	}
}

// reporter keeps outcome batches until the cluster takes them.
type reporter struct {
	mu      sync.Mutex
	pending []*pb.ReportOutcomesRequest
	sent    atomic.Uint64
	dropped atomic.Uint64

	// The report loop's stream (StreamOutcomes; nil: none open), or unary
	// calls to a member that does not serve it. Report loop only.
	stream       pb.CircuitService_StreamOutcomesClient
	streamCancel context.CancelFunc
	unary        bool
}

// livenessHeader on the report stream tells the member that this client
// counts answered reports as news (circuitsStale, Emergency.Stale), so it
// may leave out the heartbeats of this connection's watches while it
// answers.
const livenessHeader = "baldur-liveness"

// reportTimeout bounds the answer to one batch.
const reportTimeout = 2 * time.Second

// send delivers one batch: a message on the instance's long-lived report
// stream (opened on first use, and again after an error), or a
// ReportOutcomes call when the member does not serve the stream.
func (r *reporter) send(ctx context.Context, c *Client, client pb.CircuitServiceClient, batch *pb.ReportOutcomesRequest) error {
	if r.unary {
		cctx, cancel := context.WithTimeout(c.callContext(ctx), reportTimeout)
		defer cancel()
		resp, err := client.ReportOutcomes(cctx, batch, failFast{})
		if err == nil {
			c.answered(resp)
		}
		return err
	}
	if r.stream == nil {
		sctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(c.callContext(ctx), livenessHeader, "reports"))
		st, err := client.StreamOutcomes(sctx)
		if err != nil {
			cancel()
			return err
		}
		r.stream, r.streamCancel = st, cancel
	}
	expire := time.AfterFunc(reportTimeout, r.streamCancel)
	err := r.stream.Send(batch)
	var resp *pb.ReportOutcomesResponse
	if err == nil || errors.Is(err, io.EOF) { // io.EOF: the stream ended; Recv says why
		resp, err = r.stream.Recv()
	}
	expire.Stop()
	if err == nil {
		c.answered(resp)
		return nil
	}
	r.close()
	if status.Code(err) == codes.Unimplemented {
		r.unary = true // an older member: calls, as before
		return r.send(ctx, c, client, batch)
	}
	return err
}

// answered takes a report's answer: it is news from the cluster (the
// member leaves out this connection's watch heartbeats while it answers),
// and it may ask for quiet reports to be held longer (idleInterval).
func (c *Client) answered(resp *pb.ReportOutcomesResponse) {
	c.answeredAt.Store(time.Now().UnixNano())
	c.idleAsked.Store(int64(resp.GetIdleReportInterval().AsDuration()))
	c.reportAsked.Store(int64(resp.GetReportInterval().AsDuration()))
}

// reportEvery is the least time between two reports: the client's report
// interval, or what the member last asked for when that is longer (a
// member with many instances bounds the reports it takes while a breaker
// fails across the fleet), at most 1 s.
func (c *Client) reportEvery() time.Duration {
	return max(c.opts.reportInterval, min(time.Duration(c.reportAsked.Load()), time.Second))
}

// idleInterval is how long intervals of successes only are held: the
// client's own idle report interval, or what the member last asked for
// when that is longer (a member with many instances spreads their quiet
// reports), at most a third of the stale bound so that the answers keep
// the client fresh.
func (c *Client) idleInterval() time.Duration {
	return max(c.opts.idleReports, min(time.Duration(c.idleAsked.Load()), c.opts.staleAfter/3))
}

// close ends the report stream (it is opened again for the next batch).
func (r *reporter) close() {
	if r.stream != nil {
		r.streamCancel()
		r.stream, r.streamCancel = nil, nil
	}
}

func (r *reporter) stats() (sent uint64, buffered int, dropped uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent.Load(), len(r.pending), r.dropped.Load()
}

// notable reports whether any breaker's interval holds what the leader
// decides on: a failure, a slow call or a probe outcome. Rejections only
// feed a metric: they wait like successes (a tripped breaker would
// otherwise have every instance of the fleet report ten times a second,
// just when the trip is being pushed to them).
func (c *Client) notable() bool {
	return c.anyBreaker(func(b *Breaker) bool {
		return b.failures.Load()+b.slow.Load()+b.probeSuccesses.Load()+b.probeFailures.Load() > 0
	})
}

// anyCalls reports whether any breaker has calls to report (held or in
// this interval).
func (c *Client) anyCalls() bool {
	return c.anyBreaker(func(b *Breaker) bool { return b.held > 0 || b.successes.Load()+b.rejections.Load() > 0 })
}

// anyBreaker reports whether f holds for one of the client's breakers.
func (c *Client) anyBreaker(f func(*Breaker) bool) bool {
	found := false
	c.breakers.Range(func(_, v any) bool {
		found = f(v.(*Breaker))
		return !found
	})
	return found
}

// collect swaps every breaker's interval counters into one batch. Until
// the idle report interval has passed since the last batch, an interval of
// successes only is not collected: its counters keep adding up.
//
// Held successes go first, as a report of their own marked held: when an
// interval with failures ends a quiet second, the leader counts that
// second's successes as older than the failures, not mixed with them.
//
// While a canary rollout is active nothing is held: the leader judges the
// cohorts on the share of failing calls, and intervals with failures sent
// at once while quiet ones wait would inflate it.
func (c *Client) collect(now time.Time) *pb.ReportOutcomesRequest {
	notable := c.notable()
	if now.Sub(c.lastReport) < c.idleInterval() && !notable && !c.config.tracking() {
		c.holdQuiet()
		return nil
	}
	if !notable && !c.anyCalls() {
		return nil // an idle instance: nothing to build
	}
	req := &pb.ReportOutcomesRequest{InstanceId: c.opts.instanceID}
	req.CanaryRollouts, req.BaselineRollouts = c.config.cohorts()
	var current []*pb.OutcomeReport
	c.breakers.Range(func(_, v any) bool {
		b := v.(*Breaker)
		// The revision the interval began under; the next one begins now.
		rev := b.intervalRev.Swap(b.FleetRevision())
		r := &pb.OutcomeReport{
			Revision: rev,
			Name:     b.name, Successes: b.successes.Swap(0), Failures: b.failures.Swap(0), SlowCalls: b.slow.Swap(0),
			Rejections: b.rejections.Swap(0), ProbeSuccesses: b.probeSuccesses.Swap(0), ProbeFailures: b.probeFailures.Swap(0),
			LocalOpen: b.LocalState() == StateOpen, ProbeWindow: b.permitWindow.Load(),
		}
		for i := range b.latency {
			if n := b.latency[i].Swap(0); n > 0 {
				if r.LatencyHistogram == nil {
					r.LatencyHistogram = make([]int64, len(b.latency))
				}
				r.LatencyHistogram[i] = n
			}
		}
		switch {
		case b.held > 0 && notable:
			// Apart, and first: older than this interval's failures.
			req.Reports = append(req.Reports, &pb.OutcomeReport{Revision: b.heldRev, Name: b.name, Successes: b.held, Held: true})
		case b.held > 0:
			// A quiet flush: one report from the oldest revision on.
			r.Successes += b.held
			r.Revision = b.heldRev
		}
		b.held = 0
		if r.Successes+r.Failures+r.SlowCalls+r.Rejections+r.ProbeSuccesses+r.ProbeFailures > 0 {
			current = append(current, r)
		}
		return true
	})
	req.Reports = append(req.Reports, current...)
	if len(req.Reports) == 0 {
		return nil
	}
	c.lastReport = now
	return req
}

// holdQuiet ends the interval here, unreported: its successes are held
// under the revision it began with (the oldest held one). Report loop only.
func (c *Client) holdQuiet() {
	c.breakers.Range(func(_, v any) bool {
		b := v.(*Breaker)
		moved, began := b.successes.Swap(0), b.intervalRev.Swap(b.FleetRevision())
		if moved > 0 {
			if b.held == 0 {
				b.heldRev = began
			}
			b.held += moved
		}
		return true
	})
}

// reportLoop sends the outcome reports. It sleeps while nothing is news:
// a quiet instance wakes once per idle report interval (or per report
// interval while a canary rollout tracks it, or while reports wait to be
// sent), not ten times a second. A failure or slow call wakes it
// (signalNews): what came before is held apart as older, and the report
// goes once a report interval has passed since the last one, so a failing
// instance still reports at most once per interval. A member that asks for
// a longer interval (reportEvery) gets news at a random moment within it.
func (c *Client) reportLoop(ctx context.Context) {
	t := time.NewTimer(c.opts.idleReports)
	defer t.Stop()
	defer c.reporter.close()
	client := pb.NewCircuitServiceClient(c.conn)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		case <-c.news:
			if !c.config.tracking() { // a tracked instance holds nothing back (collect)
				c.holdQuiet() // the successes before the news are older than it
			}
			every := c.reportEvery()
			wait := every - time.Since(c.lastReport)
			if every > c.opts.reportInterval {
				// The member spreads reports: news goes at a random moment
				// within the interval, so when a dependency fails for the
				// whole fleet its news does not reach the member at once
				// (the first of many instances still reports at once).
				wait = max(wait, rand.N(every))
			}
			if wait > 0 {
				t.Reset(wait)
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				case <-c.kick:
				}
			}
		}
		c.newsPending.Store(false) // news from here on wakes the next turn
		select {
		case <-c.news: // signalled before the store: this turn takes it
		default:
		}
		c.acquireProbes(ctx, client)
		if batch := c.collect(time.Now()); batch != nil {
			c.reporter.mu.Lock()
			c.reporter.pending = append(c.reporter.pending, batch)
			if over := len(c.reporter.pending) - c.opts.maxBuffered; over > 0 {
				c.reporter.pending = c.reporter.pending[over:]
				c.reporter.dropped.Add(uint64(over))
			}
			c.reporter.mu.Unlock()
		}
		c.flush(ctx, client)
		next := c.idleInterval()
		if _, buffered, _ := c.reporter.stats(); buffered > 0 || c.config.tracking() {
			next = c.reportEvery()
		}
		t.Reset(next)
	}
}

// signalNews wakes the report loop for a failure or slow call, once per
// report: the calls after the first cost an atomic load.
func (c *Client) signalNews() {
	if c.newsPending.Load() || !c.newsPending.CompareAndSwap(false, true) {
		return
	}
	select {
	case c.news <- struct{}{}:
	default:
	}
}

// flush sends buffered batches in order until one fails.
func (c *Client) flush(ctx context.Context, client pb.CircuitServiceClient) {
	for {
		c.reporter.mu.Lock()
		if len(c.reporter.pending) == 0 {
			c.reporter.mu.Unlock()
			return
		}
		batch := c.reporter.pending[0]
		c.reporter.mu.Unlock()
		if err := c.reporter.send(ctx, c, client, batch); err != nil {
			c.opts.logger.Debug("baldur.report_failed", "err", err, "buffered", len(c.reporter.pending))
			return
		}
		c.reporter.mu.Lock()
		c.reporter.pending = c.reporter.pending[1:]
		c.reporter.mu.Unlock()
		c.reporter.sent.Add(1)
	}
}

// acquireProbes asks for fleet HALF_OPEN permits where calls were refused
// for lack of one.
func (c *Client) acquireProbes(ctx context.Context, client pb.CircuitServiceClient) {
	c.breakers.Range(func(_, v any) bool {
		b := v.(*Breaker)
		if !b.probeWanted.Swap(false) {
			return true
		}
		f := b.fleet.Load()
		if f == nil || f.state != StateHalfOpen {
			return true
		}
		cctx, cancel := context.WithTimeout(c.callContext(ctx), 2*time.Second)
		resp, err := client.AcquireProbe(cctx, &pb.AcquireProbeRequest{Name: b.name, InstanceId: c.opts.instanceID})
		cancel()
		if err == nil && resp.Granted {
			b.permitWindow.Store(resp.ProbeWindow)
			b.permits.Add(1)
		}
		return true
	})
}
