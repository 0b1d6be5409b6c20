package server

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/baldurhq/baldurd/circuit"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/governance"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/raftstore"
)

// Config is baldurd's configuration. Every field set from a flag has an
// environment twin BALDUR_<FLAG_IN_UPPER_SNAKE>; the flag wins.
type Config struct {
	NodeID  string
	DataDir string

	GRPCAddr string
	HTTPAddr string
	RaftAddr string

	GRPCAdvertise string
	HTTPAdvertise string
	RaftAdvertise string

	// Peers is "id=raftaddr,..."; every node of a new cluster gets the same
	// list and bootstraps the same configuration.
	Peers string
	// Join is a comma-separated list of gRPC addresses of running members.
	Join string
	// Token authenticates this node's own calls (join) to other members.
	Token string

	Dev          bool
	TokenFile    string
	AuditKeyFile string
	// AuditRetentionDays: audit records older than this are removed behind
	// a signed anchor (after the PostgreSQL export took them, when
	// --postgres-dsn is set); 0 keeps them all.
	AuditRetentionDays int

	// TLS. CertFile and KeyFile serve the API ports (gRPC and HTTP);
	// ClientCAFile, when set, verifies client certificates API callers
	// present. The peer files put the Raft transport and node-to-node gRPC
	// under mutual TLS: a peer is admitted only with a certificate from
	// PeerCAFile whose common name is a server of the Raft configuration.
	// All files are read again when they change.
	CertFile, KeyFile, ClientCAFile       string
	PeerCertFile, PeerKeyFile, PeerCAFile string
	// ClientCertRoles maps a client certificate's common name to its role
	// (over the role its organizational unit names).
	ClientCertRoles map[string]string
	// TokenPublicKeys is a file of PEM Ed25519 public keys that verify
	// signed tokens (baldurctl token create); several at once for rotation.
	TokenPublicKeys string
	// InsecurePlaintext allows listening on a non-loopback address without
	// TLS (outside --dev); the node says so loudly at start.
	InsecurePlaintext bool

	LogLevel  string
	LogFormat string

	// NotifyCooldown is how long after a notification another event of the
	// same episode (dedup key and category) is suppressed;
	// NotifyRetryDelay the wait between delivery attempts.
	NotifyCooldown, NotifyRetryDelay time.Duration
	// NotifyPerMinute and NotifyPerHour bound each channel's messages.
	NotifyPerMinute, NotifyPerHour int
	// NotifyDLQPendingThreshold: a DLQ domain with this many PENDING entries
	// is an event (0: none).
	NotifyDLQPendingThreshold int

	// ApprovalOperations need a second person's approval (dual control);
	// StrictApprovalOperations too in STRICT mode (governance.Operations).
	ApprovalOperations, StrictApprovalOperations []string

	// CircuitDefaults is the policy of breakers registered on first report
	// and the base for partial policies (BALDUR_CB_*).
	CircuitDefaults circuit.Policy

	// DLQ holds the dead-letter queue's limits (BALDUR_DLQ_*).
	DLQ dlq.Limits
	// DLQBreakers maps a domain to the breakers whose OPEN state pauses its
	// replay (and whose closing resumes it); a domain always maps to the
	// breaker of its own name too.
	DLQBreakers map[string][]string
	// DLQStore is "raft" (default) or "postgres" (PostgresDSN).
	DLQStore string
	// IdempotencyStore is "raft" (default) or "postgres" (PostgresDSN).
	IdempotencyStore string
	// AdmissionRenewInterval is how often SDK instances renew their rate
	// limit shares and report bulkheads and throttles; a share's lease is
	// three of them.
	AdmissionRenewInterval time.Duration
	PostgresDSN            string

	// MaxRestoreBytes caps a snapshot upload.
	MaxRestoreBytes int64
	// Timeouts (timeouts.go).
	HTTPReadTimeout, HTTPWriteTimeout, HTTPIdleTimeout time.Duration
	GRPCMaxConnectionIdle, RaftIdleTimeout             time.Duration
	// MetricsMaxNames bounds the metric series per breaker and per DLQ
	// domain: the first names get their own, the rest share "other".
	MetricsMaxNames int
	// CircuitIdleTimeout: a breaker on the default policy, CLOSED and
	// unpinned, that no instance reported for this long is removed (0:
	// never).
	CircuitIdleTimeout time.Duration
	// MaxBreakers caps the breakers of the cluster; MaxWatchers the watch
	// streams one node serves (limits.go).
	MaxBreakers, MaxWatchers int
	// MaxWatchersPerConn caps the watch streams of one client connection;
	// WatchSendTimeout drops a watch stream whose client has not taken a
	// message for that long.
	MaxWatchersPerConn int
	WatchSendTimeout   time.Duration
	// IdleReportsPerSecond is how many reports of successes only the node
	// takes a second from the instances reporting to it: it asks each to
	// hold such reports for (instances reporting / this), at most the
	// watch heartbeat interval (0: no spreading).
	IdleReportsPerSecond int
	// ReportsPerSecond is how many reports of any kind the node takes a
	// second from the instances reporting to it: it asks each to leave
	// (instances reporting / this) between reports, at most 1 s (0: no
	// spreading).
	ReportsPerSecond int
	// EnablePprof serves Go's profiler at /debug/pprof/ on the HTTP port
	// (admin role).
	EnablePprof bool
	// WatchHeartbeat is how often an idle watch stream sends an empty
	// message (0: 3s). Not a flag: tests shorten it.
	WatchHeartbeat time.Duration
	// CORSOrigins are the browser origins ("https://console.example.com")
	// whose pages may call the REST API; none by default.
	CORSOrigins []string

	// A STAGING non-voter is promoted once its state machine trails the
	// leader's log by at most PromoteMaxTrailing entries for
	// PromoteStabilization without a break (Consul autopilot's defaults).
	PromoteStabilization time.Duration
	PromoteMaxTrailing   uint64

	// Raft timings (--raft-heartbeat-timeout and friends): a follower that
	// hears nothing from the leader for between 1× and 2× the heartbeat
	// timeout starts an election (the leader sends heartbeats at a tenth of
	// it); a leader that cannot reach a quorum for the lease timeout steps
	// down. Pre-vote is on (hashicorp/raft's default), so a node that was
	// cut off does not disrupt the cluster when it comes back.
	RaftHeartbeatTimeout, RaftElectionTimeout, RaftLeaderLeaseTimeout time.Duration
	// RaftCommitTimeout bounds how long a follower may go without learning
	// the leader's commit index when no new entries flow (raft sends an
	// append after a random 1–2× this): followers' watchers and reads see a
	// committed write that much later.
	RaftCommitTimeout time.Duration

	ShutdownTimeout time.Duration
	// LeaderTick is how often the leader checks for due transitions.
	LeaderTick time.Duration

	// Tests only (no flags).
	Timing         raftstore.Timing
	WALSegmentSize int
	WrapConn       func(target string, c net.Conn) (net.Conn, error)
	Now            func() time.Time
	// CommandVersion, when set, is the command version this node advertises
	// instead of the binary's (a rolling upgrade's older voter).
	CommandVersion uint32
}

// Defaults returns the default configuration.
func Defaults() Config {
	return Config{
		GRPCAddr:           "127.0.0.1:7400",
		MaxRestoreBytes:    16 << 30,
		MaxBreakers:        10000,
		CircuitIdleTimeout: 24 * time.Hour,
		MetricsMaxNames:    1000,
		HTTPReadTimeout:    30 * time.Second, HTTPWriteTimeout: time.Minute, HTTPIdleTimeout: 2 * time.Minute,
		GRPCMaxConnectionIdle: 5 * time.Minute, RaftIdleTimeout: 5 * time.Minute,
		MaxWatchers:          10000,
		PromoteStabilization: 10 * time.Second, PromoteMaxTrailing: 250,
		AuditRetentionDays: 90,
		MaxWatchersPerConn: 100, WatchSendTimeout: 30 * time.Second, IdleReportsPerSecond: 500, ReportsPerSecond: 2000,
		RaftHeartbeatTimeout: 500 * time.Millisecond, RaftElectionTimeout: 500 * time.Millisecond, RaftLeaderLeaseTimeout: 250 * time.Millisecond, RaftCommitTimeout: 10 * time.Millisecond,
		HTTPAddr:                  "127.0.0.1:7401",
		RaftAddr:                  "127.0.0.1:7402",
		LogLevel:                  "info",
		LogFormat:                 "text",
		ShutdownTimeout:           10 * time.Second,
		LeaderTick:                100 * time.Millisecond,
		CircuitDefaults:           circuit.DefaultPolicy(),
		NotifyCooldown:            5 * time.Minute,
		NotifyRetryDelay:          30 * time.Second,
		NotifyPerMinute:           60,
		NotifyPerHour:             300,
		NotifyDLQPendingThreshold: 1000,
		ApprovalOperations:        append([]string{}, governance.DefaultApproval...),
		StrictApprovalOperations:  append([]string{}, governance.StrictApproval...),
		DLQ:                       dlq.DefaultLimits(),
		DLQStore:                  "raft",
		IdempotencyStore:          "raft",
		AdmissionRenewInterval:    2 * time.Second,
	}
}

// seconds is a duration flag that also accepts a bare number of seconds,
// as Baldur's BALDUR_CB_* variables are written ("60").
type seconds struct{ d *time.Duration }

func (s seconds) String() string {
	if s.d == nil {
		return ""
	}
	return s.d.String()
}

func (s seconds) Set(v string) error {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		*s.d = time.Duration(f * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("want a duration (30s) or seconds (30)")
	}
	*s.d = d
	return nil
}

// RegisterFlags binds c's fields to fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.NodeID, "node-id", c.NodeID, "unique node id (required unless --dev)")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for raft/ and state.db (required unless --dev)")
	fs.StringVar(&c.GRPCAddr, "grpc-addr", c.GRPCAddr, "gRPC listen address")
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "HTTP listen address (REST, /metrics, /livez, /readyz)")
	fs.StringVar(&c.RaftAddr, "raft-addr", c.RaftAddr, "Raft listen address")
	fs.StringVar(&c.GRPCAdvertise, "grpc-advertise", c.GRPCAdvertise, "gRPC address other nodes and clients dial (default --grpc-addr)")
	fs.StringVar(&c.HTTPAdvertise, "http-advertise", c.HTTPAdvertise, "HTTP address published in the member table (default --http-addr)")
	fs.StringVar(&c.RaftAdvertise, "raft-advertise", c.RaftAdvertise, "Raft address peers dial (default --raft-addr)")
	fs.StringVar(&c.Peers, "peers", c.Peers, "initial cluster: id=raftaddr,... (same on every node of a new cluster; with --join, a node it does not list joins instead)")
	fs.StringVar(&c.CertFile, "cert-file", c.CertFile, "PEM certificate the gRPC and HTTP ports serve (TLS)")
	fs.StringVar(&c.KeyFile, "key-file", c.KeyFile, "PEM key of --cert-file")
	fs.StringVar(&c.ClientCAFile, "client-ca-file", c.ClientCAFile, "PEM CA certificates that sign API client certificates (verified when presented)")
	fs.StringVar(&c.PeerCertFile, "peer-cert-file", c.PeerCertFile, "PEM certificate this node presents to other nodes (Raft and node-to-node gRPC); its common name is the node id")
	fs.StringVar(&c.PeerKeyFile, "peer-key-file", c.PeerKeyFile, "PEM key of --peer-cert-file")
	fs.StringVar(&c.PeerCAFile, "peer-ca-file", c.PeerCAFile, "PEM CA certificates that sign node certificates (may be the client CA)")
	fs.Var(roleMap{&c.ClientCertRoles}, "client-cert-roles", "name=role,...: the role of a client certificate by its common name (default: the role its organizational unit names, else viewer)")
	fs.StringVar(&c.TokenPublicKeys, "token-public-keys", c.TokenPublicKeys, "PEM Ed25519 public keys verifying signed tokens (one or more; re-read when the file changes)")
	fs.BoolVar(&c.InsecurePlaintext, "insecure-plaintext", c.InsecurePlaintext, "allow listening on a non-loopback address without TLS")
	fs.StringVar(&c.Join, "join", c.Join, "gRPC address(es) of running members to ask for admission, comma-separated")
	fs.StringVar(&c.Token, "token", c.Token, "bearer token this node presents when joining")
	fs.BoolVar(&c.Dev, "dev", c.Dev, "single self-bootstrapping node, data under ./baldurd-data, anonymous admin on loopback")
	fs.StringVar(&c.TokenFile, "token-file", c.TokenFile, "file of bearer tokens, one 'name token' pair per line")
	fs.StringVar(&c.AuditKeyFile, "audit-key-file", c.AuditKeyFile, "HMAC key for the audit chain (same file on every node)")
	fs.IntVar(&c.AuditRetentionDays, "audit-retention-days", c.AuditRetentionDays, "audit records older than this are removed behind a signed anchor, after the PostgreSQL export took them when --postgres-dsn is set (0: keep all)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "bound on graceful shutdown")
	cb := &c.CircuitDefaults
	fs.IntVar(&cb.FailureThreshold, "cb-failure-threshold", cb.FailureThreshold, "default breaker policy: consecutive failures that trip")
	fs.Float64Var(&cb.FailureRateThreshold, "cb-failure-rate-threshold", cb.FailureRateThreshold, "default breaker policy: failure rate (%) that trips; 0 disables")
	fs.IntVar(&cb.MinimumCalls, "cb-minimum-calls", cb.MinimumCalls, "default breaker policy: calls needed before rate triggers apply")
	fs.IntVar(&cb.WindowSize, "cb-sliding-window-size", cb.WindowSize, "default breaker policy: calls in the count window")
	fs.Float64Var(&cb.SlowCallRateThreshold, "cb-slow-call-rate-threshold", cb.SlowCallRateThreshold, "default breaker policy: slow-call rate (%) that trips; 0 disables")
	fs.Var(seconds{&cb.SlowCallDuration}, "cb-slow-call-duration", "default breaker policy: a call slower than this is slow")
	fs.Var(seconds{&cb.RecoveryTimeout}, "cb-recovery-timeout", "default breaker policy: OPEN dwell before trial calls")
	fs.IntVar(&cb.HalfOpenMaxCalls, "cb-half-open-max-calls", cb.HalfOpenMaxCalls, "default breaker policy: trial permits per HALF_OPEN window, fleet-wide")
	fs.IntVar(&cb.SuccessThreshold, "cb-success-threshold", cb.SuccessThreshold, "default breaker policy: trial successes that close")
	fs.IntVar(&cb.MinReporters, "cb-min-reporters", cb.MinReporters, "default breaker policy: distinct instances a fleet trip needs")
	fs.Var(seconds{&cb.ReportInterval}, "cb-report-interval", "default breaker policy: SDK outcome batch interval")
	fs.DurationVar(&c.NotifyCooldown, "notify-cooldown", c.NotifyCooldown, "after a notification, events of the same episode (dedup key and category) are suppressed for this long")
	fs.DurationVar(&c.NotifyRetryDelay, "notify-retry-delay", c.NotifyRetryDelay, "wait between notification delivery attempts (3 retries)")
	fs.IntVar(&c.NotifyPerMinute, "notify-rate-per-minute", c.NotifyPerMinute, "messages one notification channel may receive a minute")
	fs.IntVar(&c.NotifyDLQPendingThreshold, "notify-dlq-pending-threshold", c.NotifyDLQPendingThreshold, "a DLQ domain with this many PENDING entries is a notification event (0: never)")
	fs.IntVar(&c.NotifyPerHour, "notify-rate-per-hour", c.NotifyPerHour, "messages one notification channel may receive an hour")
	fs.Var(csvList{&c.ApprovalOperations}, "approval-operations", "operations that need a second person's approval (dual control): "+strings.Join(governance.Operations, ", "))
	fs.Var(csvList{&c.StrictApprovalOperations}, "strict-approval-operations", "operations that need approval in STRICT mode too")
	fs.StringVar(&c.DLQStore, "dlq-store", c.DLQStore, "where DLQ entries live: raft (replicated state) or postgres")
	fs.DurationVar(&c.AdmissionRenewInterval, "admission-renew-interval", c.AdmissionRenewInterval, "how often SDK instances renew rate-limit shares (a share's lease is 3 intervals) and report bulkheads and throttles")
	fs.StringVar(&c.IdempotencyStore, "idempotency-store", c.IdempotencyStore, "where idempotency gate records live: raft (replicated state) or postgres")
	fs.DurationVar(&c.HTTPReadTimeout, "http-read-timeout", c.HTTPReadTimeout, "a REST request (headers and body) must arrive within this (a snapshot restore gets an hour)")
	fs.DurationVar(&c.HTTPWriteTimeout, "http-write-timeout", c.HTTPWriteTimeout, "a REST answer must be written within this (streams excepted)")
	fs.DurationVar(&c.HTTPIdleTimeout, "http-idle-timeout", c.HTTPIdleTimeout, "an idle keep-alive HTTP connection is closed after this")
	fs.DurationVar(&c.RaftHeartbeatTimeout, "raft-heartbeat-timeout", c.RaftHeartbeatTimeout, "a follower that hears no leader for 1-2x this starts an election (raise it across a WAN)")
	fs.DurationVar(&c.RaftElectionTimeout, "raft-election-timeout", c.RaftElectionTimeout, "a candidate without a majority for 1-2x this starts another election")
	fs.DurationVar(&c.RaftCommitTimeout, "raft-commit-timeout", c.RaftCommitTimeout, "a follower learns the commit index within 1-2x this when no new entries flow (what a write costs followers' watchers and reads)")
	fs.DurationVar(&c.RaftLeaderLeaseTimeout, "raft-leader-lease-timeout", c.RaftLeaderLeaseTimeout, "a leader that cannot reach a quorum for this long steps down (at most the heartbeat timeout)")
	fs.DurationVar(&c.RaftIdleTimeout, "raft-idle-timeout", c.RaftIdleTimeout, "an accepted Raft connection that receives nothing is closed after this")
	fs.DurationVar(&c.GRPCMaxConnectionIdle, "grpc-max-connection-idle", c.GRPCMaxConnectionIdle, "a gRPC connection without streams is closed after this")
	fs.IntVar(&c.MetricsMaxNames, "metrics-max-names", c.MetricsMaxNames, "breakers and DLQ domains with metric series of their own (the rest are counted as \"other\")")
	fs.DurationVar(&c.CircuitIdleTimeout, "circuit-idle-timeout", c.CircuitIdleTimeout, "remove a CLOSED, unpinned breaker on the default policy that no instance reported for this long (0: never)")
	fs.IntVar(&c.MaxBreakers, "max-breakers", c.MaxBreakers, "breakers the cluster keeps (registration past it is refused)")
	fs.DurationVar(&c.PromoteStabilization, "promote-stabilization", c.PromoteStabilization, "a joining node is promoted to voter after it has kept up with the log for this long")
	fs.Uint64Var(&c.PromoteMaxTrailing, "promote-max-trailing", c.PromoteMaxTrailing, "entries a joining node may trail the leader's log by and count as caught up")
	fs.BoolVar(&c.EnablePprof, "enable-pprof", c.EnablePprof, "serve Go's profiler at /debug/pprof/ on the HTTP port (admin role)")
	fs.IntVar(&c.MaxWatchers, "max-watchers", c.MaxWatchers, "watch streams one node serves at once")
	fs.IntVar(&c.MaxWatchersPerConn, "max-watchers-per-connection", c.MaxWatchersPerConn, "watch streams one gRPC client connection may hold")
	fs.DurationVar(&c.WatchSendTimeout, "watch-send-timeout", c.WatchSendTimeout, "a watch stream whose client takes no message for this long is dropped")
	fs.IntVar(&c.ReportsPerSecond, "reports-per-second", c.ReportsPerSecond, "reports this node takes a second: instances reporting to it are asked to leave (instances / this) between reports, at most 1s (0: no spreading)")
	fs.IntVar(&c.IdleReportsPerSecond, "idle-reports-per-second", c.IdleReportsPerSecond, "reports of successes only this node takes a second: instances reporting to it are asked to hold theirs for (instances / this), at most 3s (0: no spreading)")
	fs.Int64Var(&c.MaxRestoreBytes, "max-restore-bytes", c.MaxRestoreBytes, "largest snapshot a restore accepts")
	fs.Var(originList{&c.CORSOrigins}, "cors-origins", "origin,...: browser origins (scheme://host[:port]) allowed to call the REST API; none by default")
	fs.Var(breakerMap{&c.DLQBreakers}, "dlq-replay-breakers", "domain=breaker1|breaker2,...: breakers whose OPEN state pauses a domain's replay")
	fs.StringVar(&c.PostgresDSN, "postgres-dsn", c.PostgresDSN, "PostgreSQL DSN: the DLQ store with --dlq-store=postgres, the idempotency gate with --idempotency-store=postgres, and the audit trail's export")
	d := &c.DLQ
	fs.Int64Var(&d.MaxSize, "dlq-max-size", d.MaxSize, "DLQ entries kept in total")
	fs.Int64Var(&d.MaxPerDomain, "dlq-max-size-per-domain", d.MaxPerDomain, "DLQ entries kept per domain")
	fs.IntVar(&d.MaxDomains, "dlq-max-domains", d.MaxDomains, "DLQ domains holding entries (a store starting one more is refused)")
	fs.IntVar(&d.MaxMetadataKeys, "dlq-max-metadata-keys", d.MaxMetadataKeys, "metadata keys of one DLQ entry")
	fs.StringVar(&d.OverflowStrategy, "dlq-overflow-strategy", d.OverflowStrategy, "drop_oldest or reject (never evicts entries being replayed)")
	fs.IntVar(&d.ExpiryHours, "dlq-expiry-hours", d.ExpiryHours, "PENDING entries expire after this many hours (1..720)")
	fs.IntVar(&d.RetentionDays, "dlq-retention-days", d.RetentionDays, "RESOLVED entries are archived after this many days (1..365)")
	fs.IntVar(&d.MaxReplayAttempts, "dlq-max-replay-attempts", d.MaxReplayAttempts, "replay attempts before REQUIRES_REVIEW")
	fs.IntVar(&d.RequestDataMax, "dlq-request-data-max-bytes", d.RequestDataMax, "request_data above this is truncated")
	fs.IntVar(&d.FieldMax, "dlq-field-max-bytes", d.FieldMax, "snapshot/response data above this is truncated")
	fs.BoolVar(&d.TruncateBlocks, "dlq-truncate-blocks-replay", d.TruncateBlocks, "never auto-replay entries whose request_data was truncated")
	fs.Var(csvList{&d.SensitiveFields}, "dlq-sensitive-fields", "comma-separated field names masked before storage")
}

// ApplyEnv sets every flag not given on the command line from its
// BALDUR_* twin. It reports the first environment value that does not parse.
func ApplyEnv(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		name := EnvName(f.Name)
		if v, ok := lookup(name); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %v", name, v, e)
			}
		}
	})
	return err
}

// EnvName is the environment twin of a flag: --raft-addr → BALDUR_RAFT_ADDR.
func EnvName(flagName string) string {
	return "BALDUR_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Validate fills dev-mode defaults and checks the configuration, naming the
// flag at fault.
func (c *Config) Validate() error {
	if c.Dev {
		if c.NodeID == "" {
			c.NodeID = "dev"
		}
		if c.DataDir == "" {
			c.DataDir = "baldurd-data"
		}
		if c.Peers != "" || c.Join != "" {
			return errors.New("--dev starts a single node; do not combine it with --peers or --join")
		}
	}
	if c.NodeID == "" {
		return errors.New("--node-id is required (or use --dev)")
	}
	if !nodeIDPattern.MatchString(c.NodeID) {
		return fmt.Errorf("--node-id %q: use letters, digits, '.', '_' or '-' (at most 63)", c.NodeID)
	}
	if c.DataDir == "" {
		return errors.New("--data-dir is required (or use --dev)")
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return fmt.Errorf("--data-dir %q: %v", c.DataDir, err)
	}
	c.DataDir = abs
	for _, a := range []struct{ flag, v string }{{"--grpc-addr", c.GRPCAddr}, {"--http-addr", c.HTTPAddr}, {"--raft-addr", c.RaftAddr}} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			return fmt.Errorf("%s %q: %v", a.flag, a.v, err)
		}
	}
	if _, err := c.PeerList(); err != nil {
		return err
	}
	if err := c.checkTLS(); err != nil {
		return err
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("--log-format %q: use text or json", c.LogFormat)
	}
	if _, err := ParseLogLevel(c.LogLevel); err != nil {
		return err
	}
	if err := c.CircuitDefaults.Validate(); err != nil {
		var ae *fsm.ArgumentError
		if errors.As(err, &ae) {
			return fmt.Errorf("--cb-%s: %s", strings.ReplaceAll(ae.FieldName, "_", "-"), ae.Msg)
		}
		return err
	}
	if err := checkDLQ(c.DLQ); err != nil {
		return err
	}
	if c.NotifyCooldown < 0 || c.NotifyCooldown > 24*time.Hour {
		return fmt.Errorf("--notify-cooldown %v: use 0..24h", c.NotifyCooldown)
	}
	if c.NotifyDLQPendingThreshold < 0 || c.NotifyDLQPendingThreshold > 10_000_000 {
		return fmt.Errorf("--notify-dlq-pending-threshold %d: use 0..10000000", c.NotifyDLQPendingThreshold)
	}
	if c.NotifyPerMinute < 1 || c.NotifyPerHour < c.NotifyPerMinute {
		return fmt.Errorf("--notify-rate-per-minute %d, --notify-rate-per-hour %d: use 1 or more, the hour's at least the minute's", c.NotifyPerMinute, c.NotifyPerHour)
	}
	if c.NotifyRetryDelay < 10*time.Millisecond || c.NotifyRetryDelay > 10*time.Minute {
		return fmt.Errorf("--notify-retry-delay %v: use 10ms..10m", c.NotifyRetryDelay)
	}
	for flag, ops := range map[string][]string{"--approval-operations": c.ApprovalOperations, "--strict-approval-operations": c.StrictApprovalOperations} {
		for _, op := range ops {
			if !slices.Contains(governance.Operations, op) {
				return fmt.Errorf("%s: %q is not an operation dual control holds; use %s", flag, op, strings.Join(governance.Operations, ", "))
			}
		}
	}
	for _, st := range []struct{ flag, value string }{{"dlq-store", c.DLQStore}, {"idempotency-store", c.IdempotencyStore}} {
		switch st.value {
		case "raft":
		case "postgres":
			if c.PostgresDSN == "" {
				return fmt.Errorf("--%s=postgres needs --postgres-dsn", st.flag)
			}
		default:
			return fmt.Errorf("--%s %q: use raft or postgres", st.flag, st.value)
		}
	}
	if c.AdmissionRenewInterval < 50*time.Millisecond || c.AdmissionRenewInterval > time.Minute {
		return fmt.Errorf("--admission-renew-interval %v: must be 50ms..1m", c.AdmissionRenewInterval)
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("--shutdown-timeout %v: must be positive", c.ShutdownTimeout)
	}
	if c.RaftHeartbeatTimeout < 5*time.Millisecond || c.RaftElectionTimeout < 5*time.Millisecond || c.RaftLeaderLeaseTimeout < 5*time.Millisecond {
		return fmt.Errorf("--raft-heartbeat-timeout, --raft-election-timeout and --raft-leader-lease-timeout must be at least 5ms (%v, %v, %v)", c.RaftHeartbeatTimeout, c.RaftElectionTimeout, c.RaftLeaderLeaseTimeout)
	}
	if c.RaftCommitTimeout < time.Millisecond || c.RaftCommitTimeout > c.RaftHeartbeatTimeout {
		return fmt.Errorf("--raft-commit-timeout %v must be between 1ms and --raft-heartbeat-timeout %v", c.RaftCommitTimeout, c.RaftHeartbeatTimeout)
	}
	if c.RaftLeaderLeaseTimeout > c.RaftHeartbeatTimeout {
		return fmt.Errorf("--raft-leader-lease-timeout %v must not exceed --raft-heartbeat-timeout %v", c.RaftLeaderLeaseTimeout, c.RaftHeartbeatTimeout)
	}
	if c.WatchSendTimeout < 0 {
		return fmt.Errorf("--watch-send-timeout %v: must not be negative", c.WatchSendTimeout)
	}
	if c.IdleReportsPerSecond < 0 {
		return fmt.Errorf("--idle-reports-per-second %d: must not be negative (0: no spreading)", c.IdleReportsPerSecond)
	}
	if c.ReportsPerSecond < 0 {
		return fmt.Errorf("--reports-per-second %d: must not be negative (0: no spreading)", c.ReportsPerSecond)
	}
	if c.PromoteStabilization < 0 {
		return fmt.Errorf("--promote-stabilization %v: must not be negative", c.PromoteStabilization)
	}
	if c.LeaderTick <= 0 {
		c.LeaderTick = 100 * time.Millisecond
	}
	if c.TokenFile != "" {
		if _, err := loadTokens(c.TokenFile); err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
	}
	if c.AuditRetentionDays < 0 || c.AuditRetentionDays > 36500 {
		return fmt.Errorf("--audit-retention-days %d: between 0 (keep all) and 36500", c.AuditRetentionDays)
	}
	if c.AuditKeyFile != "" {
		if _, err := loadAuditKey(c.AuditKeyFile); err != nil {
			return fmt.Errorf("--audit-key-file: %w", err)
		}
	}
	return nil
}

// PeerList parses --peers.
func (c *Config) PeerList() ([]raftstore.Server, error) {
	if strings.TrimSpace(c.Peers) == "" {
		return nil, nil
	}
	var out []raftstore.Server
	seen := map[string]bool{}
	for _, p := range strings.Split(c.Peers, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("--peers entry %q: want id=raftaddr", p)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("--peers entry %q: %v", p, err)
		}
		if seen[id] {
			return nil, fmt.Errorf("--peers: node id %q listed twice", id)
		}
		seen[id] = true
		out = append(out, raftstore.Server{ID: id, Address: addr, Voter: true})
	}
	if !seen[c.NodeID] {
		if c.Join != "" {
			// One set of arguments for every pod of a StatefulSet: the
			// first pods form the cluster, a pod added later joins it.
			return nil, nil
		}
		return nil, fmt.Errorf("--peers does not list this node (--node-id %q)", c.NodeID)
	}
	return out, nil
}

func loadAuditKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key := []byte(strings.TrimSpace(string(b)))
	if len(key) < 16 {
		return nil, fmt.Errorf("%s: key is %d bytes, want at least 16", path, len(key))
	}
	return key, nil
}

// ParseLogLevel parses --log-level.
func ParseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: use debug, info, warn or error", s)
	}
	return l, nil
}

// NewLogger builds the process logger from --log-level and --log-format.
func (c *Config) NewLogger(w io.Writer) *slog.Logger {
	level, _ := ParseLogLevel(c.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// csvList is a comma-separated string-list flag.
type csvList struct{ v *[]string }

func (c csvList) String() string {
	if c.v == nil {
		return ""
	}
	return strings.Join(*c.v, ",")
}

func (c csvList) Set(s string) error {
	*c.v = nil
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			*c.v = append(*c.v, f)
		}
	}
	return nil
}

func checkDLQ(d dlq.Limits) error {
	if err := d.Validate(); err != nil {
		var ae *fsm.ArgumentError
		if errors.As(err, &ae) {
			field, _, _ := strings.Cut(ae.FieldName, "[")
			return fmt.Errorf("--dlq-%s: %s", strings.ReplaceAll(field, "_", "-"), ae.Msg)
		}
		return err
	}
	return nil
}

// breakerMap parses "domain=b1|b2,domain2=b3".
type breakerMap struct{ m *map[string][]string }

func (b breakerMap) String() string {
	if b.m == nil {
		return ""
	}
	var parts []string
	for d, bs := range *b.m {
		parts = append(parts, d+"="+strings.Join(bs, "|"))
	}
	return strings.Join(parts, ",")
}

func (b breakerMap) Set(s string) error {
	out := map[string][]string{}
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		d, bs, ok := strings.Cut(part, "=")
		if !ok || d == "" || bs == "" {
			return fmt.Errorf("%q: want domain=breaker1|breaker2", part)
		}
		out[d] = append(out[d], strings.Split(bs, "|")...)
	}
	*b.m = out
	return nil
}

// originList is --cors-origins: comma-separated origins, each
// scheme://host[:port] without a path.
type originList struct{ v *[]string }

func (o originList) String() string {
	if o.v == nil {
		return ""
	}
	return strings.Join(*o.v, ",")
}

func (o originList) Set(s string) error {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		u, err := url.Parse(part)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return fmt.Errorf("%q: want an origin such as https://console.example.com", part)
		}
		out = append(out, u.Scheme+"://"+u.Host)
	}
	*o.v = out
	return nil
}

// APITLS and PeerTLS report whether the API ports and the peer links run
// TLS.
func (c *Config) APITLS() bool  { return c.CertFile != "" }
func (c *Config) PeerTLS() bool { return c.PeerCertFile != "" }

// checkTLS checks the TLS flags come in whole groups, and refuses plaintext
// on a non-loopback address unless --insecure-plaintext says so (--dev
// binds loopback by default and stays zero-config there).
func (c *Config) checkTLS() error {
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("--cert-file and --key-file go together")
	}
	if c.ClientCAFile != "" && c.CertFile == "" {
		return errors.New("--client-ca-file needs --cert-file and --key-file (client certificates are checked over TLS)")
	}
	peer := []string{c.PeerCertFile, c.PeerKeyFile, c.PeerCAFile}
	if set := len(slices.DeleteFunc(slices.Clone(peer), func(s string) bool { return s == "" })); set != 0 && set != 3 {
		return errors.New("--peer-cert-file, --peer-key-file and --peer-ca-file go together")
	}
	if c.PeerTLS() && !c.APITLS() {
		return errors.New("--peer-cert-file needs --cert-file and --key-file too: nodes reach each other on the gRPC port (the node certificate may serve both)")
	}
	for _, f := range []struct{ flag, path string }{{"--cert-file", c.CertFile}, {"--key-file", c.KeyFile}, {"--client-ca-file", c.ClientCAFile},
		{"--peer-cert-file", c.PeerCertFile}, {"--peer-key-file", c.PeerKeyFile}, {"--peer-ca-file", c.PeerCAFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("%s: %v", f.flag, err)
		}
	}
	if c.InsecurePlaintext {
		return nil
	}
	for _, a := range []struct {
		flag, addr string
		tls        bool
	}{{"--grpc-addr", c.GRPCAddr, c.APITLS()}, {"--http-addr", c.HTTPAddr, c.APITLS()}, {"--raft-addr", c.RaftAddr, c.PeerTLS()}} {
		if !a.tls && !loopbackBind(a.addr) {
			return fmt.Errorf("%s %s listens beyond this machine without TLS: give --cert-file/--key-file and --peer-cert-file/--peer-key-file/--peer-ca-file (baldurctl certs init makes them), or --insecure-plaintext", a.flag, a.addr)
		}
	}
	return nil
}

// loopbackBind reports whether a listen address binds loopback only.
func loopbackBind(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// roleMap is --client-cert-roles: name=role,...
type roleMap struct{ m *map[string]string }

func (r roleMap) String() string {
	if r.m == nil {
		return ""
	}
	var parts []string
	for n, role := range *r.m {
		parts = append(parts, n+"="+role)
	}
	return strings.Join(parts, ",")
}

func (r roleMap) Set(s string) error {
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		name, role, ok := strings.Cut(part, "=")
		if !ok || name == "" {
			return fmt.Errorf("%q: want name=role", part)
		}
		if _, err := parseRole(role); err != nil {
			return fmt.Errorf("%q: %v", part, err)
		}
		out[name] = role
	}
	*r.m = out
	return nil
}
