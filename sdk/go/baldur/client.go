package baldur

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
)

// Client is a connection to a baldurd cluster with a local decision cache.
// It is safe for concurrent use. Close it when done.
type Client struct {
	conn *grpc.ClientConn
	opts options

	emergency *Emergency
	config    *Config
	dlq       *DLQ
	ready     chan struct{}
	readyOnce sync.Once

	runCtx context.Context // ends at Close; background work derives from it
	cancel context.CancelFunc
	wg     sync.WaitGroup

	calls      callStatsRegistry // Protect and retry counters by name
	reconnects atomic.Uint64
	snapshots  atomic.Uint64
	deltas     atomic.Uint64

	// Circuit breakers.
	killSwitch  atomic.Bool
	admission   *admissionSet
	epoch       time.Time // the monotonic clock's origin for admission
	breakers    sync.Map  // name → *Breaker
	fleetStates sync.Map  // name → *fleetView, as last pushed
	circuitsAt  atomic.Int64
	answeredAt  atomic.Int64 // Unix nanoseconds of the last answered report
	idleAsked   atomic.Int64 // the idle report interval the member last asked for (ns)
	reportAsked atomic.Int64 // the report interval the member last asked for (ns)
	kick        chan struct{}
	news        chan struct{} // a failure or slow call to report (signalNews)
	newsPending atomic.Bool
	reporter    reporter
	lastReport  time.Time // when the report loop last collected a batch (its goroutine only)
}

type options struct {
	spoolDir       string
	spoolMax       int
	ignoreErrors   []error
	isFailure      func(error) bool
	reportInterval time.Duration
	idleReports    time.Duration
	maxBuffered    int
	instanceID     string
	token          string
	staleAfter     time.Duration
	minBackoff     time.Duration
	maxBackoff     time.Duration
	logger         *slog.Logger
	dialOptions    []grpc.DialOption
	onUpdate       func(Update)
}

// Option configures a Client.
type Option func(*options)

// WithInstanceID names this process (reported with outcomes; default: a
// random id).
func WithInstanceID(id string) Option { return func(o *options) { o.instanceID = id } }

// WithToken sets the bearer token sent with every call.
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithStaleAfter sets the age after which cached state counts as stale.
func WithStaleAfter(d time.Duration) Option { return func(o *options) { o.staleAfter = d } }

// WithBackoff sets the reconnect backoff bounds (default 50 ms .. 5 s).
func WithBackoff(min, max time.Duration) Option {
	return func(o *options) { o.minBackoff, o.maxBackoff = min, max }
}

// WithIgnoredErrors lists errors (matched with errors.Is) that count as
// neither success nor failure for breakers.
func WithIgnoredErrors(errs ...error) Option {
	return func(o *options) { o.ignoreErrors = append(o.ignoreErrors, errs...) }
}

// WithFailureClassifier decides which errors count as breaker failures
// (default: every error but context.Canceled and the ignored ones).
func WithFailureClassifier(f func(error) bool) Option { return func(o *options) { o.isFailure = f } }

// WithReportInterval sets how often outcome batches are sent (default 100
// ms). A member serving many instances may ask for a longer one in its
// answers (its --reports-per-second, at most 1 s); the first failure after
// a quiet spell still goes at once.
func WithReportInterval(d time.Duration) Option { return func(o *options) { o.reportInterval = d } }

// WithIdleReportInterval sets how long outcomes with nothing but successes
// (and rejections) may wait before they are sent (default 1 s): an
// interval with a failure, a slow call or a probe outcome is sent at the
// report interval, the rest at most this often, so a healthy fleet, or one
// whose breakers are open, costs the cluster a tenth of the reports.
// Successes held back go first in the next batch, marked as older. At or
// below the report interval, every interval is sent. A member serving many
// instances may ask for a longer one in its answers (its
// --idle-reports-per-second); the client then holds quiet reports that
// long, up to a third of the stale bound (WithStaleAfter).
func WithIdleReportInterval(d time.Duration) Option { return func(o *options) { o.idleReports = d } }

// WithMaxBufferedBatches bounds the outcome batches kept while the cluster
// is unreachable (default 600, a minute at 100 ms); older ones are dropped
// and counted in Stats.DroppedBatches.
func WithMaxBufferedBatches(n int) Option { return func(o *options) { o.maxBuffered = n } }

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// UpdateKind is the watch an Update came from.
type UpdateKind int

const (
	// UpdateEmergency: emergency levels, their admission rules or the
	// runtime configuration changed.
	UpdateEmergency UpdateKind = iota + 1
	// UpdateCircuits: the fleet view of breakers changed.
	UpdateCircuits
)

// Update tells a WithOnUpdate callback that the client's cached state
// changed: it is called once the change is applied, so the accessors
// (Level, Breaker.FleetState...) already show it.
type Update struct {
	Kind UpdateKind
	// The cluster revision the client's view of that kind is now at.
	Revision uint64
	// Snapshot: the whole state was replaced (after a connect or a gap),
	// not only what changed.
	Snapshot bool
	// UpdateEmergency: the scopes whose level changed (GlobalScope for the
	// global level). UpdateCircuits: the breakers whose fleet view changed.
	Names []string
}

// WithOnUpdate calls f on the watch goroutine after each pushed change is
// applied (heartbeats call nothing). f must return quickly: the next
// change waits for it.
func WithOnUpdate(f func(Update)) Option { return func(o *options) { o.onUpdate = f } }

// WithDialOptions adds gRPC dial options (e.g. TLS credentials).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// Dial returns a client for the comma-separated endpoints ("host:7400,...")
// and starts its watch stream in the background. It does not wait for the
// cluster: use WaitReady for that. It fails only on bad arguments.
func Dial(ctx context.Context, endpoints string, opts ...Option) (*Client, error) {
	o := options{staleAfter: 10 * time.Second, minBackoff: 50 * time.Millisecond, maxBackoff: 5 * time.Second,
		reportInterval: 100 * time.Millisecond, idleReports: time.Second, maxBuffered: 600}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if o.instanceID == "" {
		o.instanceID = fmt.Sprintf("go-%016x", rand.Uint64())
	}
	if o.reportInterval <= 0 || o.maxBuffered <= 0 {
		return nil, fmt.Errorf("baldur: report interval %v and buffer %d must be positive", o.reportInterval, o.maxBuffered)
	}
	if o.minBackoff <= 0 || o.maxBackoff < o.minBackoff {
		return nil, fmt.Errorf("baldur: backoff bounds %v..%v are invalid", o.minBackoff, o.maxBackoff)
	}
	conn, err := NewConn(endpoints, o.dialOptions...)
	if err != nil {
		return nil, err
	}
	c := &Client{conn: conn, opts: o, ready: make(chan struct{}), kick: make(chan struct{}, 1), news: make(chan struct{}, 1)}
	c.emergency = newEmergency(o.staleAfter)
	c.config = newConfig(o.instanceID)
	c.epoch = time.Now()
	c.admission = newAdmission(c)
	c.config.onChange = c.admission.onConfig
	c.emergency.disabled, c.emergency.dryRun = &c.killSwitch, &c.config.dryRun
	c.emergency.answered = &c.answeredAt
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.runCtx, c.cancel = runCtx, cancel
	if c.dlq, err = newDLQ(c); err != nil {
		cancel()
		conn.Close()
		return nil, err
	}
	for _, loop := range []func(context.Context){c.watchEmergency, c.watchCircuits, c.reportLoop, c.dlq.deliverLoop} {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			loop(runCtx)
		}()
	}
	return c, nil
}

// NewConn returns a gRPC connection to the comma-separated endpoints that
// uses the first one answering and moves to the next when it fails (the
// pick-first policy over a fixed address list). Its unary calls ride out a
// leader change (failover.go): writes carry a request id and are sent again
// after a failure that did not apply them, or whose outcome is unknown,
// while the caller's deadline allows. It does not connect yet.
// Without a transport-credentials option it dials in plaintext.
func NewConn(endpoints string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	var addrs []resolver.Address
	for _, e := range strings.Split(endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			// Over TLS each node's certificate is checked against the host
			// dialled, not the connection's shared target name.
			host := e
			if h, _, err := net.SplitHostPort(e); err == nil {
				host = h
			}
			addrs = append(addrs, resolver.Address{Addr: e, ServerName: host})
		}
	}
	if len(addrs) == 0 {
		return nil, errors.New("baldur: no endpoints given")
	}
	r := manual.NewBuilderWithScheme("baldur")
	r.InitialState(resolver.State{Addresses: addrs})
	dialOpts := append([]grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Fixed 1 MiB windows, as baldurd serves: no bandwidth-delay pings,
		// which cost a round of frames per small call.
		grpc.WithInitialWindowSize(1 << 20), grpc.WithInitialConnWindowSize(1 << 20),
		// Writes carry a request id and ride out a leader change (failover.go).
		grpc.WithChainUnaryInterceptor(failoverInterceptor),
	}, opts...)
	conn, err := grpc.NewClient(r.Scheme()+":///baldurd", dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("baldur: %w", err)
	}
	return conn, nil
}

// Close stops the background streams and closes the connection.
func (c *Client) Close() error {
	c.cancel()
	c.wg.Wait()
	return c.conn.Close()
}

// WaitReady waits until the first snapshot has arrived or ctx ends.
func (c *Client) WaitReady(ctx context.Context) error {
	select {
	case <-c.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("baldur: no snapshot from the cluster yet: %w", ctx.Err())
	}
}

// InstanceID is the id this client reports as.
func (c *Client) InstanceID() string { return c.opts.instanceID }

// Conn is the underlying gRPC connection, for calling the admin APIs.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Emergency is the emergency-level view.
func (c *Client) Emergency() *Emergency { return c.emergency }

// Stats is what this process counted since Dial: stream and report
// events, and by name the protected calls, their retries and breakers.
type Stats struct {
	Reconnects uint64 // emergency stream re-opened after a failure
	Snapshots  uint64 // emergency snapshots received
	Deltas     uint64 // emergency updates received

	BatchesSent     uint64 // outcome batches delivered
	BatchesBuffered int    // outcome batches waiting for the cluster
	DroppedBatches  uint64 // outcome batches dropped because the buffer was full

	Protect  map[string]ProtectStats // by the name given to Protect
	Retry    map[string]RetryStats   // by the name given to Protect
	Breakers map[string]BreakerStats // by breaker name

	RateLimits map[string]RateLimitStats // by rate limit name
	Bulkheads  map[string]BulkheadState  // by bulkhead name
	Throttles  map[string]ThrottleState  // by throttle name
}

// Stats returns the counters.
func (c *Client) Stats() Stats {
	sent, buffered, dropped := c.reporter.stats()
	st := Stats{Reconnects: c.reconnects.Load(), Snapshots: c.snapshots.Load(), Deltas: c.deltas.Load(),
		BatchesSent: sent, BatchesBuffered: buffered, DroppedBatches: dropped,
		Protect: map[string]ProtectStats{}, Retry: map[string]RetryStats{}, Breakers: map[string]BreakerStats{}}
	c.calls.m.Range(func(k, v any) bool {
		cs := v.(*callStats)
		st.Protect[k.(string)], st.Retry[k.(string)] = cs.protectStats(), cs.retryStats()
		return true
	})
	c.breakers.Range(func(k, v any) bool {
		st.Breakers[k.(string)] = v.(*Breaker).Stats()
		return true
	})
	st.RateLimits, st.Bulkheads, st.Throttles = c.admission.stats()
	return st
}

func (c *Client) callContext(ctx context.Context) context.Context {
	if c.opts.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.opts.token)
	}
	return ctx
}

// backoff sleeps for the current delay (with jitter) and doubles it.
func (c *Client) backoff(ctx context.Context, delay *time.Duration) bool {
	d := *delay/2 + rand.N(*delay/2+1)
	*delay = min(*delay*2, c.opts.maxBackoff)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Reason returns the stable reason of an error from baldurd
// (ErrorInfo.reason, e.g. "RECOVERY_BLOCKED"), or the canonical gRPC code
// name when the error carries none, or "" for nil.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	st, ok := status.FromError(err)
	if !ok {
		return "UNKNOWN"
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.Reason
		}
	}
	var b strings.Builder
	for i, r := range st.Code().String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}
