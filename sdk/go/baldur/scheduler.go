package baldur

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// JobFunc is a scheduled job. It runs only on the holder of the scheduler's
// lease; pass fencingToken to the writes it makes. ctx ends if the lease is
// lost while it runs.
type JobFunc func(ctx context.Context, fencingToken uint64) error

type jobDef struct {
	name     string
	interval time.Duration
	cron     string
	catchUp  bool
	fn       JobFunc
}

// Scheduler runs jobs fleet-wide: every client of a scheduler resource
// declares the same jobs and calls Run; the one holding the resource's
// lease runs each due run exactly once, and run records persist in the
// cluster so a new holder keeps the cadence.
type Scheduler struct {
	c        *Client
	resource string
	ttl      time.Duration
	tick     time.Duration

	mu   sync.Mutex
	jobs map[string]*jobDef
}

// SchedulerOption configures a Scheduler.
type SchedulerOption func(*Scheduler)

// WithSchedulerTTL sets the scheduler lease TTL (default 10s); a dead
// holder is replaced within about this long.
func WithSchedulerTTL(d time.Duration) SchedulerOption { return func(s *Scheduler) { s.ttl = d } }

// WithTick sets how often the holder checks for due jobs (default 200ms).
func WithTick(d time.Duration) SchedulerOption { return func(s *Scheduler) { s.tick = d } }

// Scheduler returns a scheduler for resource.
func (c *Client) Scheduler(resource string, opts ...SchedulerOption) *Scheduler {
	s := &Scheduler{c: c, resource: resource, ttl: 10 * time.Second, tick: 200 * time.Millisecond, jobs: map[string]*jobDef{}}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Every adds a job that runs every interval.
func (s *Scheduler) Every(name string, interval time.Duration, fn JobFunc) *Scheduler {
	return s.add(&jobDef{name: name, interval: interval, fn: fn})
}

// Cron adds a job on a cron schedule ("*/5 * * * *", "@hourly").
func (s *Scheduler) Cron(name, expr string, fn JobFunc) *Scheduler {
	return s.add(&jobDef{name: name, cron: expr, fn: fn})
}

// CatchUp makes the named job run once for runs missed while no holder was
// alive (default: missed runs are skipped and counted).
func (s *Scheduler) CatchUp(name string) *Scheduler {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j := s.jobs[name]; j != nil {
		j.catchUp = true
	}
	return s
}

func (s *Scheduler) add(j *jobDef) *Scheduler {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jobs[j.name] = j
	return s
}

// Run declares the jobs, then campaigns for the scheduler's lease and runs
// due jobs while holding it, until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	client := pb.NewCoordinationServiceClient(s.c.conn)
	s.mu.Lock()
	defs := make([]*jobDef, 0, len(s.jobs))
	for _, j := range s.jobs {
		defs = append(defs, j)
	}
	s.mu.Unlock()
	for _, j := range defs {
		req := &pb.DeclareJobRequest{Resource: s.resource, Name: j.name, Cron: j.cron, CatchUp: j.catchUp}
		if j.interval > 0 {
			req.Interval = durationpb.New(j.interval)
		}
		for {
			_, err := client.DeclareJob(s.c.callContext(ctx), req)
			if err == nil {
				break
			}
			if r := Reason(err); r == "INVALID_SCHEDULE" || r == "INVALID_NAME" || r == "INVALID_ARGUMENT" {
				return fmt.Errorf("baldur: job %s: %w", j.name, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	for ctx.Err() == nil {
		lease, err := s.c.Elect(ctx, s.resource, WithElectionTTL(s.ttl))
		if err != nil {
			return ctx.Err()
		}
		s.lead(ctx, lease, defs)
		lease.cancel()
		<-lease.done
	}
	return ctx.Err()
}

// lead runs due jobs while the lease holds.
func (s *Scheduler) lead(ctx context.Context, lease *Lease, defs []*jobDef) {
	client := pb.NewCoordinationServiceClient(s.c.conn)
	byName := map[string]*jobDef{}
	for _, d := range defs {
		byName[d.name] = d
	}
	t := time.NewTicker(s.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = lease.Release(rctx)
			cancel()
			return
		case <-lease.Lost():
			return
		case <-t.C:
		}
		if !lease.Valid() {
			return
		}
		resp, err := client.ListJobs(s.c.callContext(ctx), &pb.ListJobsRequest{Resource: s.resource, Consistency: "stale"})
		if err != nil {
			continue
		}
		now := time.Now()
		for _, j := range resp.Jobs {
			d := byName[j.Name]
			if d == nil || !j.Enabled || j.NextRunAt.AsTime().After(now) || !lease.Valid() {
				continue
			}
			start, err := client.StartJobRun(s.c.callContext(ctx), &pb.StartJobRunRequest{Resource: s.resource, Name: j.Name, FencingToken: lease.FencingToken()})
			if err != nil {
				if Reason(err) == "STALE_FENCING_TOKEN" {
					return // someone else holds the scheduler now
				}
				continue
			}
			if !start.Started {
				continue
			}
			s.runOne(context.WithValue(ctx, scheduledKey{}, start.ScheduledAt.AsTime()), client, lease, d)
		}
	}
}

func (s *Scheduler) runOne(ctx context.Context, client pb.CoordinationServiceClient, lease *Lease, d *jobDef) {
	jctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-lease.Lost():
			cancel()
		case <-jctx.Done():
		}
	}()
	started := time.Now()
	err := safeRun(jctx, d.fn, lease.FencingToken())
	cancel()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	fctx, fcancel := context.WithTimeout(s.c.callContext(context.WithoutCancel(ctx)), 5*time.Second)
	defer fcancel()
	_, _ = client.FinishJobRun(fctx, &pb.FinishJobRunRequest{Resource: s.resource, Name: d.name, FencingToken: lease.FencingToken(),
		Error: msg, Duration: durationpb.New(time.Since(started))})
}

type scheduledKey struct{}

// ScheduledAt returns the time the running job's run was scheduled for (the
// cadence slot it fills), from a JobFunc's context.
func ScheduledAt(ctx context.Context) time.Time {
	t, _ := ctx.Value(scheduledKey{}).(time.Time)
	return t
}

var errJobPanicked = errors.New("baldur: job panicked")

func safeRun(ctx context.Context, fn JobFunc, token uint64) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", errJobPanicked, r)
		}
	}()
	return fn(ctx, token)
}
