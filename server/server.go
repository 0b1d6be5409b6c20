package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/canary"
	"github.com/baldurhq/baldurd/circuit"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/idempotency"
	"github.com/baldurhq/baldurd/internal/tlsconf"
	"github.com/baldurhq/baldurd/postgres"
	"github.com/baldurhq/baldurd/raftstore"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
)

// maxGRPCMessage is gRPC's own cap on a received message; between
// maxRequestMessage and this, the codec answers REQUEST_TOO_LARGE.
const maxGRPCMessage = 16 << 20

// flowWindow is the HTTP/2 flow-control window of every gRPC stream and
// connection this node serves or dials (fixed, so no BDP pings).
const flowWindow = 1 << 20

// connBuffer is the read buffer of each client connection and the size of
// the pooled write buffers (grpc.ReadBufferSize, WriteBufferSize).
const connBuffer = 8 << 10

// Server is one baldurd node.
type Server struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	auditKey []byte
	auth     *authenticator
	tls      tlsFiles
	// raftReady is the store once Open returned (peer TLS checks run on
	// raft's goroutines, possibly before).
	raftReady atomic.Pointer[raftstore.Store]
	denials   denialLog
	// circuitGen counts applied batches that changed breakers (the leader's
	// circuit timer rescans only after one, or when a transition is due).
	circuitGen atomic.Uint64
	// configGen counts applied batches that changed the runtime
	// configuration; settingsCache is the settings read at a generation.
	configGen     atomic.Uint64
	settingsCache atomic.Pointer[settings]
	// canaryTracker is the leader's memory of the rollout cohorts'
	// outcomes; canaryWarned the rollout revision last warned about at
	// LEVEL_1.
	canaryTracker *canary.Tracker
	canaryWarned  atomic.Uint64
	// notes is the leader's notification sending state; events the episodes
	// of events the leader notes itself.
	notes  notifier
	events eventNotes
	// promo is the leader's record of staged members' progress.
	promo    promoter
	watchers watchers
	breakerN breakerCount
	// members caches the Raft configuration's server ids for per-call
	// peer checks.
	members struct {
		mu  sync.Mutex
		ids map[string]bool
		at  time.Time
	}

	store  *raftstore.Store
	writes *proposer
	eval   atomic.Pointer[circuit.Evaluator]
	// admit is the leader's admission state (nil on followers).
	admit   atomic.Pointer[admissionState]
	dlq     dlq.Store
	idem    idempotency.Store
	pg      *postgres.DLQ
	hub     *hub
	frames  [numTopics]*frameCache // encoded watch messages, per topic
	beats   [numTopics]*beatCache  // encoded watch heartbeats, per topic
	reports reportMerger           // outcome reports merged for the leader
	peers   peers
	metrics *metrics

	grpcLn, httpLn net.Listener
	// grpcConns are the gRPC port's open connections by remote address (a
	// client stuck on a dropped watch stream is disconnected).
	grpcConns connSet
	grpcSrv   *grpc.Server
	httpSrv   *http.Server
	selfConn  *grpc.ClientConn
	health    *health.Server

	grpcAdvertise, httpAdvertise, raftAdvertise string

	closeOnce sync.Once
}

// New builds a node: it validates cfg, opens the listeners (so ":0"
// resolves to real ports) and the Raft store. Run serves it.
func New(cfg Config, log *slog.Logger, reg *prometheus.Registry) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log.With("node_id", cfg.NodeID), now: cfg.Now, hub: newHub(), canaryTracker: canary.NewTracker()}
	s.notes.client = &http.Client{}
	if s.now == nil {
		s.now = time.Now
	}
	var err error
	var keys *tlsconf.KeySet
	if cfg.TokenPublicKeys != "" {
		if keys, err = tlsconf.LoadKeySet(cfg.TokenPublicKeys, func(err error) { s.log.Error("auth.token_keys_reload_failed", "err", err) }); err != nil {
			return nil, fmt.Errorf("--token-public-keys: %w", err)
		}
	}
	if s.auth, err = newAuthenticator(cfg.TokenFile, keys, cfg.Dev); err != nil {
		return nil, fmt.Errorf("--token-file: %w", err)
	}
	if cfg.AuditKeyFile != "" {
		if s.auditKey, err = loadAuditKey(cfg.AuditKeyFile); err != nil {
			return nil, fmt.Errorf("--audit-key-file: %w", err)
		}
	}
	if err := s.loadTLS(); err != nil {
		return nil, err
	}
	s.peers.dial = s.peerDial()
	if s.metrics, err = newMetrics(reg, s); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	for i := range s.frames {
		s.frames[i] = newFrameCache(s.metrics.watchBuilds.Inc)
		s.beats[i] = newBeatCache()
	}
	s.reports.s = s
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create --data-dir: %w", err)
	}

	if s.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		return nil, fmt.Errorf("--grpc-addr: %w", err)
	}
	if s.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		s.grpcLn.Close()
		return nil, fmt.Errorf("--http-addr: %w", err)
	}
	raftAddr := cfg.RaftAddr
	if strings.HasSuffix(raftAddr, ":0") {
		// Raft's address is part of the replicated configuration, so it
		// must be known before raft starts: pick a free port now.
		l, err := net.Listen("tcp", raftAddr)
		if err != nil {
			s.closeListeners()
			return nil, fmt.Errorf("--raft-addr: %w", err)
		}
		raftAddr = l.Addr().String()
		l.Close()
	}
	s.grpcAdvertise = orDefault(cfg.GRPCAdvertise, s.grpcLn.Addr().String())
	s.httpAdvertise = orDefault(cfg.HTTPAdvertise, s.httpLn.Addr().String())
	s.raftAdvertise = orDefault(cfg.RaftAdvertise, raftAddr)

	timing := cfg.Timing
	switch {
	case timing.Heartbeat != 0: // tests
	case cfg.Dev:
		// One voter: nobody to wait for, so elect quickly.
		timing = raftstore.Timing{Heartbeat: 100 * time.Millisecond, Election: 100 * time.Millisecond, LeaderLease: 100 * time.Millisecond, Commit: 10 * time.Millisecond}
	default:
		timing = raftstore.Timing{Heartbeat: cfg.RaftHeartbeatTimeout, Election: cfg.RaftElectionTimeout, LeaderLease: cfg.RaftLeaderLeaseTimeout, Commit: cfg.RaftCommitTimeout}
	}
	raftServerTLS, raftClientTLS := s.raftTLS()
	app := &applier{auditKey: s.auditKey, log: s.log, metrics: s.metrics, applied: func(_ uint64, t topics) {
		if t&topicCircuit != 0 {
			s.circuitGen.Add(1)
		}
		if t&topicConfig != 0 {
			s.configGen.Add(1)
		}
		s.hub.notify(t)
	}}
	s.store, err = raftstore.Open(raftstore.Config{
		NodeID: cfg.NodeID, Dir: cfg.DataDir, BindAddr: raftAddr, Advertise: s.raftAdvertise,
		Buckets: schemaBuckets(), SchemaVersion: SchemaVersion, Applier: app, Logger: s.log,
		Timing: timing, WrapConn: cfg.WrapConn, ServerTLS: raftServerTLS, ClientTLS: raftClientTLS, IdleTimeout: cfg.RaftIdleTimeout, WALSegmentSize: cfg.WALSegmentSize, OnLeader: s.onLeader,
	})
	if err != nil {
		s.closeListeners()
		return nil, err
	}

	s.raftReady.Store(s.store)
	s.writes = newProposer(s)
	if cfg.PostgresDSN != "" { // the DLQ store (--dlq-store=postgres), the audit export
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		s.pg, err = postgres.Open(ctx, cfg.PostgresDSN)
		cancel()
		if err != nil {
			s.shutdownStore(false)
			s.closeListeners()
			return nil, fmt.Errorf("--postgres-dsn: %w", err)
		}
	}
	s.dlq = s.newDLQStore()
	s.idem = s.newIdempotencyStore()

	s.grpcSrv = grpc.NewServer(
		grpc.ChainUnaryInterceptor(s.mapErrors, checkDecoded, s.authenticate, s.forwardToLeader),
		grpc.ChainStreamInterceptor(s.streamAuth, s.forwardStreamToLeader),
		grpc.MaxRecvMsgSize(maxGRPCMessage),
		s.grpcCredentials(),
		s.grpcKeepalive()[0], s.grpcKeepalive()[1],
		grpc.ForceServerCodecV2(newStrictCodec()),
		// Fixed flow-control windows turn off gRPC's bandwidth-delay
		// estimation, which pings on every connection as data arrives: with
		// one caller per connection that doubled the frames of each small
		// call (docs/benchmarks.md, DLQ).
		grpc.InitialWindowSize(flowWindow), grpc.InitialConnWindowSize(flowWindow),
		// Thousands of mostly idle SDK connections: each gives its write
		// buffer back after a flush instead of holding 32 KiB for good.
		grpc.SharedWriteBuffer(true),
		// Each connection's read buffer is its own for good: 8 KiB holds
		// the small messages SDKs send (larger ones are read past it)
		// instead of gRPC's 32 KiB per connection; write buffers of the
		// same size come from the shared pool.
		grpc.ReadBufferSize(connBuffer), grpc.WriteBufferSize(connBuffer),
	)
	pb.RegisterClusterServiceServer(s.grpcSrv, &clusterService{s: s})
	pb.RegisterEmergencyServiceServer(s.grpcSrv, &emergencyService{s: s})
	pb.RegisterAuditServiceServer(s.grpcSrv, &auditService{s: s})
	pb.RegisterCircuitServiceServer(s.grpcSrv, &circuitService{s: s})
	pb.RegisterCoordinationServiceServer(s.grpcSrv, &coordinationService{s: s})
	pb.RegisterDLQServiceServer(s.grpcSrv, &dlqService{s: s})
	pb.RegisterConfigServiceServer(s.grpcSrv, &configService{s: s})
	pb.RegisterCanaryServiceServer(s.grpcSrv, &canaryService{s: s})
	pb.RegisterSystemServiceServer(s.grpcSrv, &systemService{s: s})
	pb.RegisterApprovalServiceServer(s.grpcSrv, &approvalService{s: s})
	pb.RegisterNotifyServiceServer(s.grpcSrv, &notifyService{s: s})
	pb.RegisterIdempotencyServiceServer(s.grpcSrv, &idempotencyService{s: s})
	pb.RegisterAdmissionServiceServer(s.grpcSrv, &admissionService{s: s})
	raftv1.RegisterInternalServer(s.grpcSrv, &internalService{s: s})
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpcSrv, s.health)
	reflection.Register(s.grpcSrv)

	// The gateway calls this node's own gRPC port over loopback, so REST
	// and gRPC share one code path (auth, validation, errors).
	s.selfConn, err = grpc.NewClient(dialable(s.grpcLn.Addr().String()), s.selfDial(), s.selfDialer(),
		grpc.WithInitialWindowSize(flowWindow), grpc.WithInitialConnWindowSize(flowWindow),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxGRPCMessage)))
	if err != nil {
		s.shutdownStore(false)
		s.closeListeners()
		return nil, fmt.Errorf("dial own gRPC port: %w", err)
	}
	h, err := s.newHTTPHandler(context.Background(), s.selfConn, reg)
	if err != nil {
		s.selfConn.Close()
		s.shutdownStore(false)
		s.closeListeners()
		return nil, err
	}
	s.httpSrv = &http.Server{Handler: s.withDeadlines(h), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: cfg.HTTPIdleTimeout}
	if s.tls.api != nil {
		s.httpSrv.TLSConfig = s.apiTLS()
		s.httpLn = tls.NewListener(s.httpLn, s.httpSrv.TLSConfig)
	}
	return s, nil
}

func orDefault(v, d string) string {
	if v != "" {
		return v
	}
	return d
}

// dialable turns a wildcard listen address into a loopback one.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

func (s *Server) closeListeners() {
	if s.grpcLn != nil {
		s.grpcLn.Close()
	}
	if s.httpLn != nil {
		s.httpLn.Close()
	}
}

// GRPCAddr, HTTPAddr and RaftAddr are the advertised addresses.
func (s *Server) GRPCAddr() string { return s.grpcAdvertise }

// HTTPAddr is the HTTP address.
func (s *Server) HTTPAddr() string { return s.httpAdvertise }

// RaftAddr is the Raft address.
func (s *Server) RaftAddr() string { return s.raftAdvertise }

// Store exposes the Raft store to tests in this module.
func (s *Server) Store() *raftstore.Store { return s.store }

// nodeContext is the context of calls this node makes on its own behalf.
func (s *Server) nodeContext(ctx context.Context) context.Context {
	md := metadata.MD{}
	if s.cfg.Token != "" {
		md.Set(mdAuthorization, "Bearer "+s.cfg.Token)
	}
	return withIdentity(metadata.NewIncomingContext(ctx, md), identity{Name: "system:" + s.cfg.NodeID, Role: pb.Role_ADMIN})
}

// Run bootstraps or joins the cluster, serves until ctx ends, then shuts
// down in this order: mark not ready and end watches; hand over leadership
// if leading; stop gRPC and HTTP (bounded by --shutdown-timeout); stop Raft
// and close the state files.
func (s *Server) Run(ctx context.Context) error {
	if err := s.bootstrap(); err != nil {
		s.Close(false)
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := s.grpcSrv.Serve(&trackedListener{Listener: s.grpcLn, set: &s.grpcConns}); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve gRPC: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := s.httpSrv.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve HTTP: %w", err)
		}
		return nil
	})
	g.Go(func() error { s.registerSelf(gctx); return nil })
	if s.cfg.Join != "" {
		g.Go(func() error { return s.join(gctx) })
	}
	s.log.Info("server.started", "grpc_addr", s.grpcAdvertise, "http_addr", s.httpAdvertise, "raft_addr", s.raftAdvertise, "data_dir", s.cfg.DataDir)
	g.Go(func() error {
		<-gctx.Done()
		s.Close(true)
		return nil
	})
	return g.Wait()
}

func (s *Server) bootstrap() error {
	peers, _ := s.cfg.PeerList()
	if s.cfg.Dev && !s.store.HasState() {
		peers = []raftstore.Server{{ID: s.cfg.NodeID, Address: s.raftAdvertise, Voter: true}}
	}
	if len(peers) > 0 {
		if err := s.store.Bootstrap(peers); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
		return nil
	}
	if !s.store.HasState() && s.cfg.Join == "" {
		return errors.New("this node has no cluster state: pass --peers to form a new cluster, --join to join one, or --dev")
	}
	return nil
}

// join asks running members to add this node until one accepts.
func (s *Server) join(ctx context.Context) error {
	if s.store.HasState() {
		if servers, err := s.store.Servers(); err == nil {
			for _, sv := range servers {
				if sv.ID == s.cfg.NodeID {
					return nil // already a member; nothing to ask
				}
			}
		}
	}
	addrs := strings.Split(s.cfg.Join, ",")
	delay := 200 * time.Millisecond
	for attempt := 0; ; attempt++ {
		addr := strings.TrimSpace(addrs[attempt%len(addrs)])
		err := s.joinOnce(ctx, addr)
		if err == nil {
			s.log.Info("cluster.joined", "via", addr)
			return nil
		}
		s.log.Warn("cluster.join_failed", "via", addr, "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

func (s *Server) joinOnce(ctx context.Context, addr string) error {
	conn, err := s.peers.conn(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if s.cfg.Token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, mdAuthorization, "Bearer "+s.cfg.Token)
	}
	_, err = pb.NewClusterServiceClient(conn).AddMember(ctx, &pb.AddMemberRequest{Id: s.cfg.NodeID, RaftAddr: s.raftAdvertise, Reason: "node " + s.cfg.NodeID + " joins (--join)"})
	return err
}

// Close shuts the node down (see Run for the order). With transfer unset it
// skips the leadership hand-over, which tests use to simulate a crash.
func (s *Server) Close(transfer bool) {
	s.closeOnce.Do(func() {
		s.hub.close()
		s.health.Shutdown()
		if transfer && s.store.IsLeader() && s.hasOtherVoters() {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout/2)
			if err := s.store.TransferLeadership(ctx, ""); err != nil {
				s.log.Warn("raft.leadership_transfer_failed", "err", err)
			} else {
				s.log.Info("raft.leadership_transferred")
			}
			cancel()
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout/2)
		defer cancel()
		done := make(chan struct{})
		go func() { s.grpcSrv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			s.grpcSrv.Stop()
		}
		_ = s.httpSrv.Shutdown(ctx)
		s.httpSrv.Close()
		s.selfConn.Close()
		s.peers.close()
		s.shutdownStore(false)
		if s.pg != nil {
			s.pg.Close()
		}
		s.log.Info("server.stopped")
	})
}

func (s *Server) hasOtherVoters() bool {
	servers, err := s.store.Servers()
	if err != nil {
		return false
	}
	for _, sv := range servers {
		if sv.Voter && sv.ID != s.cfg.NodeID {
			return true
		}
	}
	return false
}

func (s *Server) shutdownStore(transfer bool) {
	if err := s.store.Shutdown(transfer); err != nil {
		s.log.Warn("raft.shutdown_error", "err", err)
	}
}

// DataDir is the absolute data directory.
func (s *Server) DataDir() string { return filepath.Clean(s.cfg.DataDir) }
