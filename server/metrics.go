package server

import (
	"maps"
	"slices"
	"strconv"
	"sync"

	"github.com/baldurhq/baldurd/canary"
	"github.com/baldurhq/baldurd/circuit"
	"github.com/baldurhq/baldurd/coordination"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/emergency"
	"github.com/baldurhq/baldurd/governance"
	"github.com/baldurhq/baldurd/raftstore"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are registered on the injected registry, never globally.
type metrics struct {
	forwarded   prometheus.Counter
	changes     *prometheus.CounterVec
	transitions *prometheus.CounterVec
	reports     *prometheus.CounterVec
	rejections  *prometheus.CounterVec
	evalSeconds prometheus.Histogram
	leases      *prometheus.CounterVec
	jobs        *prometheus.CounterVec

	dlqCreated           *prometheus.CounterVec
	dlqEvicted           prometheus.Counter
	dlqRedrives          prometheus.Counter
	dlqReplays           *prometheus.CounterVec
	dlqReplayBlocked     prometheus.Counter
	dlqGroupSize         prometheus.Histogram
	commandGroupSize     prometheus.Histogram
	rpcs                 *prometheus.CounterVec
	rpcDuration          *prometheus.HistogramVec
	auditVerifyFailures  prometheus.Counter
	limitRefusals        *prometheus.CounterVec
	auditExported        prometheus.Gauge
	watchersDropped      prometheus.Counter
	watchBuilds          prometheus.Counter
	reportMergeSize      prometheus.Histogram
	canaryStarted        prometheus.Counter
	canaryAdvanced       *prometheus.CounterVec
	canaryCompleted      prometheus.Counter
	canaryRollbacks      *prometheus.CounterVec
	canaryBlocked        prometheus.Counter
	canaryStuck          prometheus.Counter
	canaryInterlock      *prometheus.CounterVec
	governanceBlocked    *prometheus.CounterVec
	governanceBreakGlass *prometheus.CounterVec
	systemChanges        *prometheus.CounterVec
	notifySent           *prometheus.CounterVec
	notifySuppressed     *prometheus.CounterVec
	// Series per breaker, per DLQ domain and per rollout stage name are
	// bounded.
	breakerLabels, domainLabels, stageLabels labelBudget
}

func newMetrics(reg prometheus.Registerer, s *Server) (*metrics, error) {
	m := &metrics{
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baldur_forwarded_writes_total", Help: "Writes this node forwarded to the leader.",
		}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baldur_state_changes_total", Help: "State changes applied by this node's FSM, by action (one audit record each).",
		}, []string{"action"}),
	}
	m.transitions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "baldur_circuit_transitions_total", Help: "Breaker state transitions applied by this node, by breaker, new state and trigger.",
	}, []string{"name", "to_state", "trigger"})
	m.reports = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "baldur_circuit_reports_total", Help: "Outcome reports evaluated by this node as leader, by breaker.",
	}, []string{"name"})
	m.rejections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "baldur_circuit_blocked_total", Help: "Calls SDKs reported rejecting, by breaker (reported to the leader).",
	}, []string{"name"})
	m.evalSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "baldur_circuit_evaluator_lag_seconds", Help: "Time the leader spent evaluating one report batch, proposals included.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
	})
	m.leases = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "baldur_lease_operations_total", Help: "Lease operations served by this node as leader, by outcome (acquired, kept_alive, keepalive_failed, revoked, expired).",
	}, []string{"outcome"})
	m.jobs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "baldur_job_runs_total", Help: "Scheduled job runs by resource, job and outcome (started, succeeded, failed).",
	}, []string{"resource", "job", "outcome"})
	m.dlqCreated = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baldur_dlq_created_total", Help: "DLQ entries stored (leader), by domain."}, []string{"domain"})
	m.dlqEvicted = prometheus.NewCounter(prometheus.CounterOpts{Name: "baldur_dlq_evicted_total", Help: "DLQ entries dropped by drop_oldest overflow (leader)."})
	m.dlqRedrives = prometheus.NewCounter(prometheus.CounterOpts{Name: "baldur_dlq_force_redrive_total", Help: "Force-redrives."})
	m.dlqReplays = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baldur_dlq_replay_dispatch_total", Help: "Replay attempts completed, by outcome."}, []string{"outcome"})
	m.dlqGroupSize = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "baldur_dlq_store_group_size", Help: "DLQ stores committed per Raft entry on the leader (group commit; 1 when alone).",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}})
	m.rpcs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baldur_grpc_requests_total",
		Help: "Unary gRPC calls served (REST calls included: the gateway calls the same methods), by method and status code."}, []string{"method", "code"})
	m.rpcDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "baldur_grpc_request_duration_seconds",
		Help: "Time to serve unary gRPC calls, by method.", Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"method"})
	m.auditVerifyFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "baldur_audit_verify_failures_total",
		Help: "Audit verifications (audit:verify) that found the chain broken on some member."})
	m.commandGroupSize = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "baldur_command_group_size", Help: "Idempotency gate commands committed per Raft entry on the leader (group commit; 1 when alone).",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}})
	m.dlqReplayBlocked = prometheus.NewCounter(prometheus.CounterOpts{Name: "baldur_dlq_replay_blocked_total", Help: "Replay pauses: a domain's replay blocked by emergency >= LEVEL_2 or an OPEN breaker, counted when the pause starts or its reason changes."})
	m.breakerLabels.max, m.domainLabels.max = s.cfg.MetricsMaxNames, s.cfg.MetricsMaxNames
	m.limitRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baldur_limit_refusals_total",
		Help: "Requests refused by a resource limit (breakers, dlq_domains, watchers, ...)."}, []string{"limit"})
	m.auditExported = prometheus.NewGauge(prometheus.GaugeOpts{Name: "baldur_audit_exported_seq",
		Help: "Last audit record the leader copied to PostgreSQL (--postgres-dsn)."})
	m.watchersDropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "baldur_watchers_dropped_total",
		Help: "Watch streams dropped because the client took no message for --watch-send-timeout."})
	m.watchBuilds = prometheus.NewCounter(prometheus.CounterOpts{Name: "baldur_watch_messages_built_total",
		Help: "Watch messages built and encoded; streams at the same revision and filter share one."})
	m.reportMergeSize = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "baldur_report_merge_size",
		Help:    "Instances' report batches this member merged into one for the leader.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}})
	m.canaryStarted = prometheus.NewCounter(prometheus.CounterOpts{Name: "baldur_canary_rollout_started_total", Help: "Rollouts started (applied on this node)."})
	m.canaryAdvanced = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baldur_canary_stage_advanced_total",
		Help: "Rollout promotions to a next stage, by the stage reached."}, []string{"stage_name"})
	m.canaryCompleted = prometheus.NewCounter(prometheus.CounterOpts{Name: "baldur_canary_rollout_completed_total", Help: "Rollouts completed (the section took the new values)."})
	m.canaryRollbacks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baldur_canary_rollback_total",
		Help: "Rollouts rolled back, by the stage they were in."}, []string{"stage_name"})
	m.canaryBlocked = prometheus.NewCounter(prometheus.CounterOpts{Name: "baldur_canary_governance_blocked_total",
		Help: "Rollout starts, promotions and resumes refused by the kill switch or emergency gate."})
	m.canaryStuck = prometheus.NewCounter(prometheus.CounterOpts{Name: "baldur_canary_stuck_total",
		Help: "Rollouts the watchdog flagged as stuck (CANARY over twice its stage's duration, PAUSED over 30 minutes)."})
	m.canaryInterlock = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baldur_canary_interlock_total",
		Help: "Emergency interlock actions on rollouts (warn at LEVEL_1, pause at LEVEL_2, rollback at LEVEL_3)."}, []string{"action"})
	m.governanceBlocked = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baldur_governance_blocked_total",
		Help: "Operations the pre-action gate refused, by operation and reason (kill_switch, emergency_mode)."}, []string{"operation", "reason"})
	m.governanceBreakGlass = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baldur_governance_break_glass_actions_total",
		Help: "Gated operations allowed by break glass (flagged for review), by operation."}, []string{"operation"})
	m.systemChanges = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baldur_system_control_state_changes_total",
		Help: "System control changes applied on this node, by action."}, []string{"action"})
	m.notifySent = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baldur_notification_sent_total",
		Help: "Notification deliveries by channel, priority and result (sent, failed)."}, []string{"channel", "priority", "result"})
	m.notifySuppressed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baldur_notification_suppressed_total",
		Help: "Notifications not sent, by reason (cooldown, rate_limit, stale)."}, []string{"reason"})
	m.stageLabels.max = 100
	for _, c := range []prometheus.Collector{m.notifySent, m.notifySuppressed, m.governanceBlocked, m.governanceBreakGlass, m.systemChanges, m.canaryStarted, m.canaryAdvanced, m.canaryCompleted, m.canaryRollbacks, m.canaryBlocked, m.canaryStuck, m.canaryInterlock,
		m.watchersDropped, m.watchBuilds, m.reportMergeSize, m.auditExported, m.forwarded, m.changes, m.transitions, m.reports, m.rejections, m.evalSeconds, m.leases, m.jobs,
		m.dlqCreated, m.dlqEvicted, m.dlqRedrives, m.dlqReplays, m.dlqReplayBlocked, m.dlqGroupSize, m.commandGroupSize, m.rpcs, m.rpcDuration, m.auditVerifyFailures, m.limitRefusals, &stateCollector{s: s}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// stateCollector reads Raft and emergency state at scrape time.
type stateCollector struct{ s *Server }

var (
	descApplied         = prometheus.NewDesc("baldur_node_applied_index", "Index of the last entry applied to state.db (the revision).", nil, nil)
	descCommit          = prometheus.NewDesc("baldur_node_commit_index", "Raft commit index known to this node.", nil, nil)
	descTerm            = prometheus.NewDesc("baldur_node_term", "Current Raft term.", nil, nil)
	descLeader          = prometheus.NewDesc("baldur_node_is_leader", "1 if this node is the leader.", nil, nil)
	descPeers           = prometheus.NewDesc("baldur_cluster_servers", "Servers in the Raft configuration.", nil, nil)
	descSnapshot        = prometheus.NewDesc("baldur_node_snapshot_index", "Index of this node's last Raft snapshot (applied index minus it: entries since).", nil, nil)
	descReachable       = prometheus.NewDesc("baldur_cluster_member_reachable", "On the leader: 1 if the member answered its last probe (every 5 s), 0 if not.", []string{"member"}, nil)
	descLevel           = prometheus.NewDesc("baldur_emergency_mode_level", "Current emergency level per scope (0 NORMAL .. 3 LEVEL_3).", []string{"scope"}, nil)
	descActive          = prometheus.NewDesc("baldur_emergency_mode_active", "1 while an emergency is active in the scope.", []string{"scope"}, nil)
	descRecovering      = prometheus.NewDesc("baldur_emergency_mode_recovery_active", "1 while gradual recovery runs in the scope.", []string{"scope"}, nil)
	descCircuit         = prometheus.NewDesc("baldur_circuit_state", "Breaker state (0 CLOSED, 1 OPEN, 2 HALF_OPEN).", []string{"name"}, nil)
	descCircuitsByState = prometheus.NewDesc("baldur_circuits", "Breakers by state (every breaker, whatever --metrics-max-names).", []string{"state"}, nil)
	descPinned          = prometheus.NewDesc("baldur_circuit_pinned", "1 while the breaker is forced open or closed.", []string{"name"}, nil)
	descLeases          = prometheus.NewDesc("baldur_lease_held", "Leases in force.", nil, nil)
	descJobNext         = prometheus.NewDesc("baldur_job_next_run_timestamp_seconds", "When each job runs next.", []string{"resource", "job"}, nil)
	descDLQStatus       = prometheus.NewDesc("baldur_dlq_items_by_status", "DLQ entries by status.", []string{"status"}, nil)
	descDLQDomain       = prometheus.NewDesc("baldur_dlq_items_by_domain", "DLQ entries by domain.", []string{"domain"}, nil)
	descWatchers        = prometheus.NewDesc("baldur_watchers", "Watch streams this node serves.", nil, nil)
	descSystemEnabled   = prometheus.NewDesc("baldur_system_control_enabled", "1 while the system is enabled (the kill switch off).", nil, nil)
	descSystemDryRun    = prometheus.NewDesc("baldur_system_control_dry_run", "1 while the system is in dry run.", nil, nil)
	descSystemStrict    = prometheus.NewDesc("baldur_system_control_strict", "1 while the operating mode is STRICT.", nil, nil)
	descBreakGlass      = prometheus.NewDesc("baldur_governance_break_glass_active", "1 while break glass is engaged.", nil, nil)
	descPendingApproval = prometheus.NewDesc("baldur_governance_pending_approval_requests", "Change requests waiting for a second person.", nil, nil)
	descOldestApproval  = prometheus.NewDesc("baldur_governance_oldest_pending_approval_age_seconds", "Age of the oldest change request still pending (0: none).", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descApplied, descCommit, descTerm, descLeader, descPeers, descSnapshot, descReachable, descLevel, descActive, descRecovering, descCircuit, descCircuitsByState, descPinned, descLeases, descJobNext, descDLQStatus, descDLQDomain, descWatchers, descSystemEnabled, descSystemDryRun, descSystemStrict, descBreakGlass, descPendingApproval, descOldestApproval} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.store
	if st == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(descWatchers, prometheus.GaugeValue, float64(c.s.watchers.n.Load()))
	ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(st.AppliedIndex()))
	ch <- prometheus.MustNewConstMetric(descCommit, prometheus.GaugeValue, float64(st.CommitIndex()))
	ch <- prometheus.MustNewConstMetric(descTerm, prometheus.GaugeValue, float64(st.Term()))
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, b2f(st.IsLeader()))
	if servers, err := st.Servers(); err == nil {
		ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(len(servers)))
	}
	if idx, err := strconv.ParseUint(st.Stats()["last_snapshot_index"], 10, 64); err == nil {
		ch <- prometheus.MustNewConstMetric(descSnapshot, prometheus.GaugeValue, float64(idx))
	}
	if st.IsLeader() {
		for member, misses := range c.s.events.unreachableCounts() {
			ch <- prometheus.MustNewConstMetric(descReachable, prometheus.GaugeValue, b2f(misses == 0), member)
		}
	}
	_ = st.View(func(kv raftstore.KV) error {
		ks, _ := circuit.KillSwitch(kv)
		sys := governance.Get(kv)
		ch <- prometheus.MustNewConstMetric(descSystemEnabled, prometheus.GaugeValue, b2f(!ks))
		ch <- prometheus.MustNewConstMetric(descSystemDryRun, prometheus.GaugeValue, b2f(sys.DryRun))
		ch <- prometheus.MustNewConstMetric(descSystemStrict, prometheus.GaugeValue, b2f(sys.Strict))
		ch <- prometheus.MustNewConstMetric(descBreakGlass, prometheus.GaugeValue, b2f(sys.BreakGlassActive(c.s.now())))
		pending, oldest := 0, 0.0
		for _, a := range governance.ListApprovals(kv) {
			if a.State == governance.Pending {
				pending++
				oldest = max(oldest, c.s.now().Sub(a.RequestedAt).Seconds())
			}
		}
		ch <- prometheus.MustNewConstMetric(descPendingApproval, prometheus.GaugeValue, float64(pending))
		ch <- prometheus.MustNewConstMetric(descOldestApproval, prometheus.GaugeValue, oldest)
		for _, s := range emergency.List(kv) {
			level := s.Level
			if !s.Active {
				level = emergency.Normal
			}
			ch <- prometheus.MustNewConstMetric(descLevel, prometheus.GaugeValue, float64(level), s.Scope)
			ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, b2f(s.Active), s.Scope)
			ch <- prometheus.MustNewConstMetric(descRecovering, prometheus.GaugeValue, b2f(s.Recovering), s.Scope)
		}
		byState := map[string]int{}
		for i, b := range circuit.List(kv) {
			byState[b.State.String()]++
			if max := c.s.cfg.MetricsMaxNames; max > 0 && i >= max {
				continue // the first names (by name) get series of their own
			}
			ch <- prometheus.MustNewConstMetric(descCircuit, prometheus.GaugeValue, float64(b.State), b.Name)
			ch <- prometheus.MustNewConstMetric(descPinned, prometheus.GaugeValue, b2f(b.Pinned), b.Name)
		}
		for _, st := range []string{"CLOSED", "OPEN", "HALF_OPEN"} {
			ch <- prometheus.MustNewConstMetric(descCircuitsByState, prometheus.GaugeValue, float64(byState[st]), st)
		}
		held := 0
		now := c.s.now()
		for _, r := range coordination.Resources(kv) {
			if r.Held(now) != nil {
				held++
			}
		}
		ch <- prometheus.MustNewConstMetric(descLeases, prometheus.GaugeValue, float64(held))
		st := dlq.GetStats(kv)
		for k, n := range st.ByStatus {
			ch <- prometheus.MustNewConstMetric(descDLQStatus, prometheus.GaugeValue, float64(n), k)
		}
		other := int64(0)
		domains := slices.Sorted(maps.Keys(st.ByDomain))
		for i, k := range domains {
			if max := c.s.cfg.MetricsMaxNames; max > 0 && i >= max {
				other += st.ByDomain[k]
				continue
			}
			ch <- prometheus.MustNewConstMetric(descDLQDomain, prometheus.GaugeValue, float64(st.ByDomain[k]), k)
		}
		if other > 0 {
			ch <- prometheus.MustNewConstMetric(descDLQDomain, prometheus.GaugeValue, float64(other), "other")
		}
		for _, j := range coordination.Jobs(kv, "") {
			ch <- prometheus.MustNewConstMetric(descJobNext, prometheus.GaugeValue, float64(j.NextRunAt.Unix()), j.Resource, j.Name)
		}
		return nil
	})
}

// labelBudget bounds the metric series a family of names (breakers, DLQ
// domains) can create: the first max distinct names get series of their
// own, later ones share "other" (--metrics-max-names).
type labelBudget struct {
	mu    sync.Mutex
	max   int
	names map[string]bool
}

func (b *labelBudget) label(name string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.names == nil {
		b.names = map[string]bool{}
	}
	if b.names[name] || b.max <= 0 {
		return name
	}
	if len(b.names) >= b.max {
		return "other"
	}
	b.names[name] = true
	return name
}

// canaryApplied counts an applied rollout change.
func (m *metrics) canaryApplied(action string, r canary.Rollout) {
	stage := func(i int) string {
		if i < 0 || i >= len(r.Stages) {
			return "none"
		}
		return m.stageLabels.label(r.Stages[i].Name)
	}
	switch action {
	case "canary.start":
		m.canaryStarted.Inc()
	case "canary.promote":
		m.canaryAdvanced.WithLabelValues(stage(r.Stage)).Inc()
	case "canary.complete":
		m.canaryCompleted.Inc()
	case "canary.rollback":
		m.canaryRollbacks.WithLabelValues(stage(r.Stage)).Inc()
	case "canary.stuck":
		m.canaryStuck.Inc()
	}
}
