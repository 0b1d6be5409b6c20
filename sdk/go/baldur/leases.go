package baldur

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// ErrLeaseHeld is matched (errors.Is) when someone else holds a resource.
var ErrLeaseHeld = errors.New("baldur: lease held by another holder")

// LeaseHeldError names the holder (as the server's message says).
type LeaseHeldError struct {
	Name string
	Msg  string
}

func (e *LeaseHeldError) Error() string { return fmt.Sprintf("baldur: %s: %s", e.Name, e.Msg) }

// Is makes errors.Is(err, ErrLeaseHeld) true.
func (e *LeaseHeldError) Is(target error) bool { return target == ErrLeaseHeld }

// ErrLeaseLost is returned by Lease operations after the lease is gone.
var ErrLeaseLost = errors.New("baldur: lease lost")

// Leases acquires fenced leases.
type Leases struct{ c *Client }

// Leases returns the lease API.
func (c *Client) Leases() *Leases { return &Leases{c: c} }

// LeaseOption configures Acquire.
type LeaseOption func(*leaseConfig)

type leaseConfig struct {
	holder    string
	lockDelay time.Duration
	margin    float64
}

// WithHolder sets the holder identity (default: the client's instance id).
func WithHolder(h string) LeaseOption { return func(c *leaseConfig) { c.holder = h } }

// WithLockDelay keeps the resource ungrantable for d after this lease
// lapses without being released.
func WithLockDelay(d time.Duration) LeaseOption { return func(c *leaseConfig) { c.lockDelay = d } }

// WithSafetyMargin sets the share of the TTL (0.05..0.3, default 0.1) by
// which the holder stops acting before its lease could have lapsed.
func WithSafetyMargin(ratio float64) LeaseOption { return func(c *leaseConfig) { c.margin = ratio } }

// Lease is a held resource. A background loop keeps it alive; the holder
// must stop acting when Valid turns false or Lost is closed (self-fencing),
// and pass FencingToken to every downstream write.
type Lease struct {
	c      *Client
	id     uint64
	name   string
	holder string
	token  uint64
	ttl    time.Duration
	margin time.Duration

	validUntil atomic.Int64 // unix nanos: last confirmed send + TTL − margin
	lost       chan struct{}
	lostOnce   sync.Once
	cancel     context.CancelFunc
	done       chan struct{}
}

// Acquire grants name to this client for ttl (5s..300s) if nobody else
// holds it, and keeps it alive until Release or loss.
func (l *Leases) Acquire(ctx context.Context, name string, ttl time.Duration, opts ...LeaseOption) (*Lease, error) {
	cfg := leaseConfig{holder: l.c.opts.instanceID, margin: 0.1}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.margin < 0.05 || cfg.margin > 0.3 {
		return nil, fmt.Errorf("baldur: safety margin %v outside 0.05..0.3", cfg.margin)
	}
	sent := time.Now()
	resp, err := pb.NewCoordinationServiceClient(l.c.conn).AcquireLease(l.c.callContext(ctx), &pb.AcquireLeaseRequest{
		Name: name, Holder: cfg.holder, Ttl: durationpb.New(ttl), LockDelay: durationpb.New(cfg.lockDelay)})
	if err != nil {
		return nil, leaseErr(name, err)
	}
	return l.c.startLease(resp.Lease, cfg, sent), nil
}

func leaseErr(name string, err error) error {
	switch Reason(err) {
	case "LEASE_HELD", "LOCK_DELAY":
		msg := err.Error()
		if i := strings.Index(msg, "desc = "); i >= 0 {
			msg = msg[i+7:]
		}
		return &LeaseHeldError{Name: name, Msg: msg}
	case "LEASE_LOST", "LEASE_NOT_FOUND":
		return fmt.Errorf("%w: %v", ErrLeaseLost, err)
	}
	return err
}

func (c *Client) startLease(pl *pb.Lease, cfg leaseConfig, sent time.Time) *Lease {
	ttl := pl.Ttl.AsDuration()
	l := &Lease{c: c, id: pl.Id, name: pl.Name, holder: pl.Holder, token: pl.FencingToken, ttl: ttl,
		margin: time.Duration(float64(ttl) * cfg.margin), lost: make(chan struct{}), done: make(chan struct{})}
	l.validUntil.Store(sent.Add(ttl - l.margin).UnixNano())
	ctx, cancel := context.WithCancel(c.runCtx)
	l.cancel = cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(l.done)
		l.keepAlive(ctx)
	}()
	return l
}

// ID, Name, Holder and FencingToken describe the grant.
func (l *Lease) ID() uint64 { return l.id }

// Name is the resource.
func (l *Lease) Name() string { return l.name }

// Holder is the holder identity.
func (l *Lease) Holder() string { return l.holder }

// FencingToken strictly increases per resource; give it to every write the
// lease protects so a stale holder's writes can be refused downstream.
func (l *Lease) FencingToken() uint64 { return l.token }

// Valid reports whether the holder may still act: the lease was confirmed
// recently enough that it cannot have lapsed (TTL minus the safety margin).
func (l *Lease) Valid() bool {
	select {
	case <-l.lost:
		return false
	default:
	}
	return time.Now().UnixNano() < l.validUntil.Load()
}

// Lost is closed when the lease is gone or can no longer be confirmed.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

func (l *Lease) markLost() { l.lostOnce.Do(func() { close(l.lost) }) }

func (l *Lease) keepAlive(ctx context.Context) {
	client := pb.NewCoordinationServiceClient(l.c.conn)
	every := l.ttl / 3
	for {
		wait := every
		if until := time.Until(time.Unix(0, l.validUntil.Load())); until < wait {
			wait = max(until, 0)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if time.Now().UnixNano() >= l.validUntil.Load() {
			// Could not confirm the lease within its TTL: stop acting.
			l.markLost()
			return
		}
		sent := time.Now()
		cctx, cancel := context.WithTimeout(l.c.callContext(ctx), max(time.Until(time.Unix(0, l.validUntil.Load())), 100*time.Millisecond))
		_, err := client.KeepAliveLease(cctx, &pb.KeepAliveLeaseRequest{Id: l.id, Name: l.name})
		cancel()
		switch {
		case err == nil:
			l.validUntil.Store(sent.Add(l.ttl - l.margin).UnixNano())
			every = l.ttl / 3
		case Reason(err) == "LEASE_LOST" || Reason(err) == "LEASE_NOT_FOUND":
			l.markLost()
			return
		default:
			every = min(l.ttl/10, 500*time.Millisecond) // retry soon: the cluster may be electing
		}
	}
}

// Release stops the keepalive and revokes the lease (best effort: an
// unreachable cluster lets it lapse).
func (l *Lease) Release(ctx context.Context) error {
	l.cancel()
	<-l.done
	l.markLost()
	_, err := pb.NewCoordinationServiceClient(l.c.conn).RevokeLease(l.c.callContext(ctx), &pb.RevokeLeaseRequest{Id: l.id, Name: l.name, Holder: l.holder})
	if err != nil && Reason(err) != "LEASE_NOT_FOUND" {
		return err
	}
	return nil
}

// abandon stops the keepalive without revoking (tests simulate a crash).
func (l *Lease) abandon() {
	l.cancel()
	<-l.done
}

// ElectOption configures Elect.
type ElectOption func(*electConfig)

type electConfig struct {
	priority int32
	ttl      time.Duration
	poll     time.Duration
}

// WithPriority prefers this candidate over those with a higher number
// (0..1000, default 100) when several wait.
func WithPriority(p int32) ElectOption { return func(c *electConfig) { c.priority = p } }

// WithElectionTTL sets the leadership lease TTL (default 15s).
func WithElectionTTL(d time.Duration) ElectOption { return func(c *electConfig) { c.ttl = d } }

// Elect campaigns for leadership of name and blocks until this client
// leads (returning its lease) or ctx ends.
func (c *Client) Elect(ctx context.Context, name string, opts ...ElectOption) (*Lease, error) {
	cfg := electConfig{ttl: 15 * time.Second, poll: 200 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.runCtx, cancel)() // Close ends the campaign too
	client := pb.NewCoordinationServiceClient(c.conn)
	for {
		sent := time.Now()
		resp, err := client.Campaign(c.callContext(ctx), &pb.CampaignRequest{Name: name, Holder: c.opts.instanceID, Priority: cfg.priority, Ttl: durationpb.New(cfg.ttl)})
		if err == nil && resp.Lease != nil {
			return c.startLease(resp.Lease, leaseConfig{holder: c.opts.instanceID, margin: 0.1}, sent), nil
		}
		if err != nil && ctx.Err() == nil {
			c.opts.logger.Debug("baldur.campaign_failed", "name", name, "err", err)
		}
		t := time.NewTimer(cfg.poll)
		select {
		case <-ctx.Done():
			t.Stop()
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, _ = client.Resign(c.callContext(rctx), &pb.ResignRequest{Name: name, Holder: c.opts.instanceID})
			cancel()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// Resign withdraws this client's candidacy and releases leadership of name.
func (c *Client) Resign(ctx context.Context, name string) error {
	_, err := pb.NewCoordinationServiceClient(c.conn).Resign(c.callContext(ctx), &pb.ResignRequest{Name: name, Holder: c.opts.instanceID})
	return err
}

// ElectionInfo describes who leads an election.
type ElectionInfo struct {
	Name         string
	Leader       string // empty when nobody leads
	Since        time.Time
	ExpiresAt    time.Time
	FencingToken uint64
}

func electionInfo(e *pb.Election) ElectionInfo {
	info := ElectionInfo{Name: e.Name}
	if l := e.Leader; l != nil {
		info.Leader, info.Since, info.ExpiresAt, info.FencingToken = l.Holder, l.GrantedAt.AsTime(), l.ExpiresAt.AsTime(), l.FencingToken
	}
	return info
}

// Leader returns who leads name now.
func (c *Client) Leader(ctx context.Context, name string) (ElectionInfo, error) {
	e, err := pb.NewCoordinationServiceClient(c.conn).GetElection(c.callContext(ctx), &pb.GetElectionRequest{Name: name})
	if err != nil {
		return ElectionInfo{}, err
	}
	return electionInfo(e), nil
}

// Observe streams leader changes of name until ctx ends; the first value
// is the current state. The channel closes when ctx ends.
func (c *Client) Observe(ctx context.Context, name string) <-chan ElectionInfo {
	out := make(chan ElectionInfo, 16)
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.runCtx, cancel) // Close ends it too
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer stop()
		defer cancel()
		defer close(out)
		client := pb.NewCoordinationServiceClient(c.conn)
		delay := c.opts.minBackoff
		for ctx.Err() == nil {
			stream, err := client.ObserveElection(c.callContext(ctx), &pb.ObserveElectionRequest{Name: name})
			for err == nil {
				var e *pb.Election
				if e, err = stream.Recv(); err == nil {
					select {
					case out <- electionInfo(e):
					case <-ctx.Done():
						return
					}
				}
			}
			if !c.backoff(ctx, &delay) {
				return
			}
		}
	}()
	return out
}
