package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/baldurhq/baldurd/admission"
	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/config"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// entryVersion is the command version of a ConfigSet of one entry.
const entryVersion uint32 = 8

// The admission primitives' configuration in its API form.

func rateLimitToPB(l admission.RateLimit) *pb.RateLimitConfig {
	return &pb.RateLimitConfig{Rate: l.Rate, Per: durPB(l.Per), Burst: int32(l.Burst), Scope: l.Scope, FallbackRate: l.FallbackRate}
}

func rateLimitsToPB(m map[string]admission.RateLimit) map[string]*pb.RateLimitConfig {
	out := make(map[string]*pb.RateLimitConfig, len(m))
	for k, v := range m {
		out[k] = rateLimitToPB(v)
	}
	return out
}

func bulkheadToPB(b admission.Bulkhead) *pb.BulkheadConfig {
	return &pb.BulkheadConfig{MaxConcurrent: int32(b.MaxConcurrent), MaxWait: durPB(b.MaxWait)}
}

func bulkheadsToPB(m map[string]admission.Bulkhead) map[string]*pb.BulkheadConfig {
	out := make(map[string]*pb.BulkheadConfig, len(m))
	for k, v := range m {
		out[k] = bulkheadToPB(v)
	}
	return out
}

func throttleToPB(t admission.Throttle) *pb.ThrottleConfig {
	return &pb.ThrottleConfig{InitialLimit: int32(t.InitialLimit), MinLimit: int32(t.MinLimit), MaxLimit: int32(t.MaxLimit),
		Window: durPB(t.Window), SampleInterval: durPB(t.SampleInterval), SmoothingFactor: t.Smoothing, DecreaseRatio: t.DecreaseRatio,
		IncreaseStep: int32(t.IncreaseStep), SlaWarning: durPB(t.SLAWarning), SlaCritical: durPB(t.SLACritical), Breaker: t.Breaker,
		CbOpenLimitPercent: t.CBOpenPercent, CbHalfOpenLimitPercent: t.CBHalfOpenPercent, Level1Multiplier: t.Level1Multiplier,
		Level2Multiplier: t.Level2Multiplier, RecoveryStepInterval: durPB(t.RecoveryStepInterval)}
}

func throttlesToPB(m map[string]admission.Throttle) map[string]*pb.ThrottleConfig {
	out := make(map[string]*pb.ThrottleConfig, len(m))
	for k, v := range m {
		out[k] = throttleToPB(v)
	}
	return out
}

// durField is an optional duration of a request and where it goes.
type durField struct {
	field string
	v     *durationpb.Duration
	dst   *time.Duration
}

// durations reads optional durations into their destinations (a field
// left out keeps its value).
func durations(prefix string, ds ...durField) error {
	for _, d := range ds {
		if d.v == nil {
			continue
		}
		v, err := checkedDuration(prefix+d.field, d.v)
		if err != nil {
			return err
		}
		*d.dst = v
	}
	return nil
}

// withPrefix names a domain's field error as the request names it.
func withPrefix(prefix string, err error) error {
	var ae *fsm.ArgumentError
	if prefix != "" && errors.As(err, &ae) {
		moved := *ae
		moved.FieldName = prefix + ae.FieldName
		return &moved
	}
	return err
}

func rateLimitFromPB(prefix string, m *pb.RateLimitConfig) (admission.RateLimit, error) {
	l := admission.RateLimit{Rate: m.GetRate(), Burst: int(m.GetBurst()), Scope: m.GetScope(), FallbackRate: m.GetFallbackRate()}
	if err := durations(prefix, durField{"per", m.GetPer(), &l.Per}); err != nil {
		return l, err
	}
	if m.GetPer() != nil && l.Per == 0 {
		return l, invalidField(prefix+"per", "must be above 0")
	}
	l = l.WithDefaults()
	return l, withPrefix(prefix, l.Validate())
}

func bulkheadFromPB(prefix string, m *pb.BulkheadConfig) (admission.Bulkhead, error) {
	b := admission.Bulkhead{MaxConcurrent: int(m.GetMaxConcurrent())}
	if err := durations(prefix, durField{"max_wait", m.GetMaxWait(), &b.MaxWait}); err != nil {
		return b, err
	}
	return b, withPrefix(prefix, b.Validate())
}

// throttleFromPB reads a throttle; fields left out (zero) take Baldur's
// defaults.
func throttleFromPB(prefix string, m *pb.ThrottleConfig) (admission.Throttle, error) {
	t := admission.DefaultThrottle()
	setInt := func(dst *int, v int32) {
		if v != 0 {
			*dst = int(v)
		}
	}
	setFloat := func(dst *float64, v float64) {
		if v != 0 {
			*dst = v
		}
	}
	setInt(&t.InitialLimit, m.GetInitialLimit())
	setInt(&t.MinLimit, m.GetMinLimit())
	setInt(&t.MaxLimit, m.GetMaxLimit())
	setInt(&t.IncreaseStep, m.GetIncreaseStep())
	setFloat(&t.Smoothing, m.GetSmoothingFactor())
	setFloat(&t.DecreaseRatio, m.GetDecreaseRatio())
	setFloat(&t.CBOpenPercent, m.GetCbOpenLimitPercent())
	setFloat(&t.CBHalfOpenPercent, m.GetCbHalfOpenLimitPercent())
	setFloat(&t.Level1Multiplier, m.GetLevel1Multiplier())
	setFloat(&t.Level2Multiplier, m.GetLevel2Multiplier())
	t.Breaker = m.GetBreaker()
	if m.GetInitialLimit() == 0 {
		t.InitialLimit = min(max(t.InitialLimit, t.MinLimit), t.MaxLimit)
	}
	if err := durations(prefix, durField{"window", m.GetWindow(), &t.Window}, durField{"sample_interval", m.GetSampleInterval(), &t.SampleInterval},
		durField{"sla_warning", m.GetSlaWarning(), &t.SLAWarning}, durField{"sla_critical", m.GetSlaCritical(), &t.SLACritical},
		durField{"recovery_step_interval", m.GetRecoveryStepInterval(), &t.RecoveryStepInterval}); err != nil {
		return t, err
	}
	return t, withPrefix(prefix, t.Validate())
}

// admissionSection reads a whole rate_limits, bulkheads or throttles
// section (PUT /v1/config/{section}).
func admissionSection(section string, m *pb.RuntimeConfig) (any, error) {
	switch section {
	case config.RateLimits:
		out := map[string]admission.RateLimit{}
		for name, v := range m.RateLimits {
			if err := admission.CheckName(name); err != nil {
				return nil, withPrefix("values.", err)
			}
			l, err := rateLimitFromPB("values."+name+".", v)
			if err != nil {
				return nil, err
			}
			out[name] = l
		}
		return out, nil
	case config.Bulkheads:
		out := map[string]admission.Bulkhead{}
		for name, v := range m.Bulkheads {
			if err := admission.CheckName(name); err != nil {
				return nil, withPrefix("values.", err)
			}
			b, err := bulkheadFromPB("values."+name+".", v)
			if err != nil {
				return nil, err
			}
			out[name] = b
		}
		return out, nil
	case config.Throttles:
		out := map[string]admission.Throttle{}
		for name, v := range m.Throttles {
			if err := admission.CheckName(name); err != nil {
				return nil, withPrefix("values.", err)
			}
			t, err := throttleFromPB("values."+name+".", v)
			if err != nil {
				return nil, err
			}
			out[name] = t
		}
		return out, nil
	}
	return nil, fmt.Errorf("config: %s is not an admission section", section)
}

// putEntry proposes one entry of a map section: v as its domain JSON.
func (s *Server) putEntry(ctx context.Context, section, name string, v any, reason string) (config.Result, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return config.Result{}, invalidField("values", err.Error())
	}
	return s.setEntry(ctx, section, name, raw, reason)
}

// setEntry proposes one entry of a map section (raw nil: its removal).
func (s *Server) setEntry(ctx context.Context, section, name string, raw json.RawMessage, reason string) (config.Result, error) {
	if err := s.checkCommandVersion(entryVersion); err != nil {
		return config.Result{}, err
	}
	if len(reason) > maxConfigReason {
		return config.Result{}, invalidField("reason", fmt.Sprintf("at most %d bytes", maxConfigReason))
	}
	set := &raftv1.ConfigSet{Section: section, Entry: name, ValuesJson: raw, DeleteEntry: raw == nil,
		PreviousJson: s.settings().domainJSON(section)}
	cmd := newCommand(ctx, reason)
	cmd.Version = entryVersion
	cmd.Body = &raftv1.Command_ConfigSet{ConfigSet: set}
	r, _, err := proposed[config.Result](s.writes.propose(ctx, cmd, onLeader))
	return r, err
}

// admissionState is the leader's soft state: the rate limits' shares and
// the latest report of each instance's bulkheads and throttles. A new
// leader starts afresh (instances sync again within a renewal period).
type admissionState struct {
	alloc     *admission.Allocator
	mu        sync.Mutex
	bulkheads map[string]map[string]bulkheadReport // name → instance → report
	throttles map[string]map[string]throttleReport
}

type bulkheadReport struct {
	*pb.BulkheadReport
	at time.Time
}

type throttleReport struct {
	*pb.ThrottleReport
	at time.Time
}

func (s *Server) admissionLease() time.Duration { return 3 * s.cfg.AdmissionRenewInterval }

func newAdmissionState(lease time.Duration, now time.Time) *admissionState {
	return &admissionState{alloc: admission.NewAllocator(lease, now), bulkheads: map[string]map[string]bulkheadReport{},
		throttles: map[string]map[string]throttleReport{}}
}

// admissionNow is the leader's admission state (ErrNotLeader elsewhere).
func (s *Server) admissionNow() (*admissionState, error) {
	st := s.admit.Load()
	if st == nil {
		return nil, raftstore.ErrNotReady
	}
	return st, nil
}

type admissionService struct {
	pb.UnimplementedAdmissionServiceServer
	s *Server
}

// Bounds on a sync (an instance reports what it uses) and on the
// instances the leader keeps per limit, bulkhead or throttle.
const (
	maxSyncItems    = 1000
	maxInstanceName = 256
	maxInstances    = 20000
)

// checkRate is a reported rate: finite, 0..admission.MaxRate.
func checkRate(field string, v float64) error {
	if math.IsNaN(v) || v < 0 || v > admission.MaxRate {
		return invalidField(field, fmt.Sprintf("%v: must be 0..%g calls a second", v, float64(admission.MaxRate)))
	}
	return nil
}

func (x *admissionService) SyncAdmission(ctx context.Context, req *pb.SyncAdmissionRequest) (*pb.SyncAdmissionResponse, error) {
	if req.Instance == "" || len(req.Instance) > maxInstanceName {
		return nil, invalidField("instance", fmt.Sprintf("1..%d bytes", maxInstanceName))
	}
	if len(req.RateLimits) > maxSyncItems || len(req.Bulkheads) > maxSyncItems || len(req.Throttles) > maxSyncItems {
		return nil, invalidField("rate_limits", fmt.Sprintf("at most %d rate limits, bulkheads and throttles each", maxSyncItems))
	}
	if !utf8.ValidString(req.Instance) || strings.ContainsFunc(req.Instance, unicode.IsControl) {
		return nil, invalidField("instance", "must be printable UTF-8")
	}
	demands := make([]admission.Demand, 0, len(req.RateLimits))
	for i, d := range req.RateLimits {
		f := fmt.Sprintf("rate_limits[%d].", i)
		for _, v := range []struct {
			field string
			v     float64
		}{{"demand", d.Demand}, {"has", d.Has}, {"admitted", d.Admitted}, {"rejected", d.Rejected}} {
			if err := checkRate(f+v.field, v.v); err != nil {
				return nil, err
			}
		}
		demands = append(demands, admission.Demand{Name: d.Name, Wanted: d.Demand, Has: d.Has, Admitted: d.Admitted, Refused: d.Rejected})
	}
	st, err := x.s.admissionNow()
	if err != nil {
		return nil, err
	}
	now := x.s.now()
	set := x.s.settings()
	if st.alloc.Instances() >= maxInstances && !st.alloc.Holds(req.Instance) && !req.Leaving {
		x.s.metrics.limitRefusals.WithLabelValues("admission_instances").Inc()
		return nil, status.Errorf(codes.ResourceExhausted, "admission: %d instances hold shares already, the most the leader keeps", maxInstances)
	}
	shares := st.alloc.Sync(now, req.Instance, demands, set.rateLimits, req.Leaving)
	st.mu.Lock()
	for _, byInstance := range st.bulkheads {
		delete(byInstance, req.Instance)
	}
	for _, byInstance := range st.throttles {
		delete(byInstance, req.Instance)
	}
	if !req.Leaving {
		for _, b := range req.Bulkheads {
			if _, ok := set.bulkheads[b.Name]; !ok || len(st.bulkheads[b.Name]) >= maxInstances {
				continue
			}
			if st.bulkheads[b.Name] == nil {
				st.bulkheads[b.Name] = map[string]bulkheadReport{}
			}
			st.bulkheads[b.Name][req.Instance] = bulkheadReport{BulkheadReport: b, at: now}
		}
		for _, t := range req.Throttles {
			if _, ok := set.throttles[t.Name]; !ok || len(st.throttles[t.Name]) >= maxInstances {
				continue
			}
			if st.throttles[t.Name] == nil {
				st.throttles[t.Name] = map[string]throttleReport{}
			}
			st.throttles[t.Name][req.Instance] = throttleReport{ThrottleReport: t, at: now}
		}
	}
	st.mu.Unlock()
	out := &pb.SyncAdmissionResponse{RenewAfter: durPB(x.s.cfg.AdmissionRenewInterval)}
	for _, sh := range shares {
		out.Shares = append(out.Shares, &pb.RateShare{Name: sh.Name, Rate: sh.Rate, Burst: int32(sh.Burst), Lease: durPB(sh.Lease), Instances: int32(sh.Instances)})
	}
	return out, nil
}

func (x *admissionService) rateLimitStatus(name string, l admission.RateLimit, version uint64) *pb.RateLimitStatus {
	out := &pb.RateLimitStatus{Name: name, Limit: rateLimitToPB(l), Version: version, Instances: []*pb.RateLimitShare{}}
	st, err := x.s.admissionNow()
	if err != nil {
		return out
	}
	per := l.Per.Seconds()
	for _, h := range st.alloc.Status(name, x.s.now()) {
		out.Instances = append(out.Instances, &pb.RateLimitShare{Instance: h.Instance, Share: h.Share * per, Demand: h.Wanted * per,
			Admitted: h.Admitted * per, Rejected: h.Refused * per, LeaseExpires: ts(h.Expires)})
		out.Allocated += h.Share * per
		out.Demand += h.Wanted * per
	}
	return out
}

func (x *admissionService) PutRateLimit(ctx context.Context, req *pb.PutRateLimitRequest) (*pb.RateLimitStatus, error) {
	if err := admission.CheckName(req.Name); err != nil {
		return nil, err
	}
	l, err := rateLimitFromPB("", &pb.RateLimitConfig{Rate: req.Rate, Per: req.Per, Burst: req.Burst, Scope: req.Scope, FallbackRate: req.FallbackRate})
	if err != nil {
		return nil, err
	}
	r, err := x.s.putEntry(ctx, config.RateLimits, req.Name, l, req.Reason)
	if err != nil {
		return nil, err
	}
	return x.rateLimitStatus(req.Name, l, r.Section.Version), nil
}

func (x *admissionService) GetRateLimit(ctx context.Context, req *pb.GetRateLimitRequest) (*pb.RateLimitStatus, error) {
	if err := admission.CheckName(req.Name); err != nil {
		return nil, err
	}
	set := x.s.settings()
	l, ok := set.rateLimits[req.Name]
	if !ok {
		return nil, fmt.Errorf("%w: rate limit %q", admission.ErrNotFound, req.Name)
	}
	return x.rateLimitStatus(req.Name, l, set.sections[config.RateLimits].Version), nil
}

func (x *admissionService) ListRateLimits(ctx context.Context, _ *pb.ListRateLimitsRequest) (*pb.ListRateLimitsResponse, error) {
	set := x.s.settings()
	out := &pb.ListRateLimitsResponse{RateLimits: []*pb.RateLimitStatus{}}
	for _, name := range slices.Sorted(maps.Keys(set.rateLimits)) {
		out.RateLimits = append(out.RateLimits, x.rateLimitStatus(name, set.rateLimits[name], set.sections[config.RateLimits].Version))
	}
	return out, nil
}

func (x *admissionService) remove(ctx context.Context, section, what string, req *pb.DeleteAdmissionRequest) (*pb.DeleteAdmissionResponse, error) {
	if err := admission.CheckName(req.Name); err != nil {
		return nil, err
	}
	r, err := x.s.setEntry(ctx, section, req.Name, nil, req.Reason)
	if errors.Is(err, config.ErrEntryNotFound) {
		return nil, fmt.Errorf("%w: %s %q", admission.ErrNotFound, what, req.Name)
	}
	if err != nil {
		return nil, err
	}
	return &pb.DeleteAdmissionResponse{Version: r.Section.Version}, nil
}

func (x *admissionService) DeleteRateLimit(ctx context.Context, req *pb.DeleteAdmissionRequest) (*pb.DeleteAdmissionResponse, error) {
	return x.remove(ctx, config.RateLimits, "rate limit", req)
}

func (x *admissionService) DeleteBulkhead(ctx context.Context, req *pb.DeleteAdmissionRequest) (*pb.DeleteAdmissionResponse, error) {
	return x.remove(ctx, config.Bulkheads, "bulkhead", req)
}

func (x *admissionService) DeleteThrottle(ctx context.Context, req *pb.DeleteAdmissionRequest) (*pb.DeleteAdmissionResponse, error) {
	return x.remove(ctx, config.Throttles, "throttle", req)
}

func (x *admissionService) bulkheadStatus(name string, b admission.Bulkhead, version uint64) *pb.BulkheadStatus {
	out := &pb.BulkheadStatus{Name: name, Config: bulkheadToPB(b), Version: version, PerInstance: []*pb.BulkheadInstance{}}
	st, err := x.s.admissionNow()
	if err != nil {
		return out
	}
	now, fresh := x.s.now(), x.s.admissionLease()
	st.mu.Lock()
	defer st.mu.Unlock()
	capacity := 0
	for _, id := range slices.Sorted(maps.Keys(st.bulkheads[name])) {
		r := st.bulkheads[name][id]
		if now.Sub(r.at) > fresh {
			continue
		}
		util := 0.0
		if r.MaxConcurrent > 0 {
			util = 100 * float64(r.Active) / float64(r.MaxConcurrent)
		}
		out.PerInstance = append(out.PerInstance, &pb.BulkheadInstance{Instance: id, MaxConcurrent: r.MaxConcurrent, Active: r.Active,
			Waiting: r.Waiting, RejectedTotal: r.RejectedTotal, UtilizationPercent: util, ReportedAt: ts(r.at)})
		out.Instances++
		out.Active += r.Active
		out.Waiting += r.Waiting
		out.RejectedTotal += r.RejectedTotal
		capacity += int(r.MaxConcurrent)
	}
	if capacity > 0 {
		out.UtilizationPercent = 100 * float64(out.Active) / float64(capacity)
	}
	return out
}

func (x *admissionService) PutBulkhead(ctx context.Context, req *pb.PutBulkheadRequest) (*pb.BulkheadStatus, error) {
	if err := admission.CheckName(req.Name); err != nil {
		return nil, err
	}
	b, err := bulkheadFromPB("", &pb.BulkheadConfig{MaxConcurrent: req.MaxConcurrent, MaxWait: req.MaxWait})
	if err != nil {
		return nil, err
	}
	r, err := x.s.putEntry(ctx, config.Bulkheads, req.Name, b, req.Reason)
	if err != nil {
		return nil, err
	}
	return x.bulkheadStatus(req.Name, b, r.Section.Version), nil
}

func (x *admissionService) GetBulkhead(ctx context.Context, req *pb.GetBulkheadRequest) (*pb.BulkheadStatus, error) {
	if err := admission.CheckName(req.Name); err != nil {
		return nil, err
	}
	set := x.s.settings()
	b, ok := set.bulkheads[req.Name]
	if !ok {
		return nil, fmt.Errorf("%w: bulkhead %q", admission.ErrNotFound, req.Name)
	}
	return x.bulkheadStatus(req.Name, b, set.sections[config.Bulkheads].Version), nil
}

func (x *admissionService) ListBulkheads(ctx context.Context, _ *pb.ListBulkheadsRequest) (*pb.ListBulkheadsResponse, error) {
	set := x.s.settings()
	out := &pb.ListBulkheadsResponse{Bulkheads: []*pb.BulkheadStatus{}}
	for _, name := range slices.Sorted(maps.Keys(set.bulkheads)) {
		out.Bulkheads = append(out.Bulkheads, x.bulkheadStatus(name, set.bulkheads[name], set.sections[config.Bulkheads].Version))
	}
	return out, nil
}

func (x *admissionService) throttleStatus(name string, t admission.Throttle, version uint64) *pb.ThrottleStatus {
	out := &pb.ThrottleStatus{Name: name, Config: throttleToPB(t), Version: version, Instances: []*pb.ThrottleInstance{}}
	st, err := x.s.admissionNow()
	if err != nil {
		return out
	}
	now, fresh := x.s.now(), x.s.admissionLease()
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(st.throttles[name])) {
		r := st.throttles[name][id]
		if now.Sub(r.at) > fresh {
			continue
		}
		out.Instances = append(out.Instances, &pb.ThrottleInstance{Instance: id, Limit: r.Limit, Regime: r.Regime, InWindow: r.InWindow,
			RttMs: r.RttMs, Gradient: r.Gradient, ReportedAt: ts(r.at)})
	}
	return out
}

func (x *admissionService) PutThrottle(ctx context.Context, req *pb.PutThrottleRequest) (*pb.ThrottleStatus, error) {
	if err := admission.CheckName(req.Name); err != nil {
		return nil, err
	}
	cfg := req.Config
	if cfg == nil {
		cfg = &pb.ThrottleConfig{}
	}
	t, err := throttleFromPB("config.", cfg)
	if err != nil {
		return nil, err
	}
	r, err := x.s.putEntry(ctx, config.Throttles, req.Name, t, req.Reason)
	if err != nil {
		return nil, err
	}
	return x.throttleStatus(req.Name, t, r.Section.Version), nil
}

func (x *admissionService) GetThrottleStatus(ctx context.Context, _ *pb.GetThrottleStatusRequest) (*pb.GetThrottleStatusResponse, error) {
	set := x.s.settings()
	out := &pb.GetThrottleStatusResponse{Throttles: []*pb.ThrottleStatus{}}
	for _, name := range slices.Sorted(maps.Keys(set.throttles)) {
		out.Throttles = append(out.Throttles, x.throttleStatus(name, set.throttles[name], set.sections[config.Throttles].Version))
	}
	return out, nil
}
