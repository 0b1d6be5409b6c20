package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/baldurhq/baldurd/admission"
	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/canary"
	"github.com/baldurhq/baldurd/circuit"
	"github.com/baldurhq/baldurd/config"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/emergency"
	"github.com/baldurhq/baldurd/governance"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// configVersion is the command version of ConfigSet.
const configVersion = 7

// settings is the runtime configuration in force: each section's values
// as set in the replicated state, or the startup flags' while it was never
// set. The leader reads it for its decisions (breakers registered on first
// report, DLQ limits); watchers send it to SDKs.
type settings struct {
	gen       uint64
	circuit   circuit.Policy
	dlq       dlq.Limits
	retry     config.Retry
	flags     config.FlagSet
	emergency emergency.Config
	// The admission primitives by name (admission_service.go).
	rateLimits map[string]admission.RateLimit
	bulkheads  map[string]admission.Bulkhead
	throttles  map[string]admission.Throttle
	// sections are the sections as set (Version 0: never set).
	sections map[string]config.Section
	// revision is the newest change of a section or a rollout.
	revision uint64
	// rollouts are the rollouts in CANARY, as SDKs receive them.
	rollouts []*pb.ActiveRollout
	// system is the system control as SDKs receive it.
	system *pb.SystemControl
}

// startupSettings are the values of every section before it is set.
func (s *Server) startupSettings() *settings {
	return &settings{circuit: s.cfg.CircuitDefaults, dlq: s.cfg.DLQ, retry: config.DefaultRetry(),
		flags: config.FlagSet{}, emergency: emergency.DefaultConfig(), sections: map[string]config.Section{},
		rateLimits: map[string]admission.RateLimit{}, bulkheads: map[string]admission.Bulkhead{}, throttles: map[string]admission.Throttle{}}
}

// settingsFrom reads the settings in force from a view of the state.
func (s *Server) settingsFrom(kv fsm.KV) *settings {
	st := s.startupSettings()
	st.emergency, _ = emergency.GetConfig(kv)
	for _, name := range config.Sections {
		sec, _ := config.Get(kv, name)
		st.sections[name] = sec
		st.revision = max(st.revision, sec.Revision)
		if sec.Version == 0 || name == config.Emergency {
			continue // the emergency domain keeps its own copy
		}
		if err := st.decode(name, sec.Values); err != nil {
			s.log.Error("config.decode_failed", "section", name, "err", err)
		}
	}
	st.revision = max(st.revision, canary.Revision(kv), systemRevision(kv))
	st.rollouts = s.activeRollouts(kv)
	ks, _ := circuit.KillSwitch(kv)
	sys := governance.Get(kv)
	st.system = &pb.SystemControl{Enabled: !ks, DryRun: sys.DryRun, Mode: sys.Mode()}
	return st
}

// decode sets one section's values from its domain JSON.
func (st *settings) decode(section string, raw []byte) error {
	switch section {
	case config.CircuitDefaults:
		return json.Unmarshal(raw, &st.circuit)
	case config.DLQ:
		return json.Unmarshal(raw, &st.dlq)
	case config.RetryDefaults:
		return json.Unmarshal(raw, &st.retry)
	case config.Flags:
		st.flags = config.FlagSet{}
		return json.Unmarshal(raw, &st.flags)
	case config.Emergency:
		return json.Unmarshal(raw, &st.emergency)
	case config.RateLimits:
		st.rateLimits = map[string]admission.RateLimit{}
		return json.Unmarshal(raw, &st.rateLimits)
	case config.Bulkheads:
		st.bulkheads = map[string]admission.Bulkhead{}
		return json.Unmarshal(raw, &st.bulkheads)
	case config.Throttles:
		st.throttles = map[string]admission.Throttle{}
		return json.Unmarshal(raw, &st.throttles)
	}
	return fmt.Errorf("config: unknown section %q", section)
}

// domainJSON is one section's values in force, in its domain's JSON.
func (st *settings) domainJSON(section string) json.RawMessage {
	var v any
	switch section {
	case config.CircuitDefaults:
		v = st.circuit
	case config.DLQ:
		v = st.dlq
	case config.RetryDefaults:
		v = st.retry
	case config.Flags:
		v = st.flags
	case config.Emergency:
		v = st.emergency
	case config.RateLimits:
		v = st.rateLimits
	case config.Bulkheads:
		v = st.bulkheads
	case config.Throttles:
		v = st.throttles
	}
	b, _ := json.Marshal(v)
	return b
}

// settings returns the settings in force, read again only after a batch
// that changed a section (or a restore) was applied.
func (s *Server) settings() *settings {
	gen := s.configGen.Load()
	if st := s.settingsCache.Load(); st != nil && st.gen == gen {
		return st
	}
	var st *settings
	_ = s.store.View(func(kv raftstore.KV) error { st = s.settingsFrom(kv); return nil })
	st.gen = gen
	s.settingsCache.Store(st)
	return st
}

// systemRevision is the newest change of the system control (the kill
// switch or a governance change).
func systemRevision(kv fsm.KV) uint64 {
	_, ks := circuit.KillSwitch(kv)
	return max(ks, governance.Get(kv).Revision)
}

// dlqLimits is the DLQ settings in force (the stores' Limits).
func (s *Server) dlqLimits() dlq.Limits { return s.settings().dlq }

// The public form of each section: a message whose protojson form is the
// section's values (the flags section is RuntimeConfig's flags map).

func retryToPB(r config.Retry) *pb.RetryPolicy {
	return &pb.RetryPolicy{MaxAttempts: int32(r.MaxAttempts), Backoff: r.Backoff, BaseDelay: durPB(r.BaseDelay), MaxDelay: durPB(r.MaxDelay),
		Multiplier: r.Multiplier, Jitter: r.Jitter, MaxElapsed: durPB(r.MaxElapsed)}
}

func dlqToPB(l dlq.Limits) *pb.DLQSettings {
	return &pb.DLQSettings{MaxSize: l.MaxSize, MaxSizePerDomain: l.MaxPerDomain, OverflowStrategy: l.OverflowStrategy,
		ExpiryHours: int32(l.ExpiryHours), RetentionDays: int32(l.RetentionDays), MaxReplayAttempts: int32(l.MaxReplayAttempts),
		RequestDataMaxBytes: int32(l.RequestDataMax), FieldMaxBytes: int32(l.FieldMax), TruncateBlocksReplay: l.TruncateBlocks,
		SensitiveFields: append([]string{}, l.SensitiveFields...), MaxDomains: int32(l.MaxDomains)}
}

func flagsToPB(f config.FlagSet) map[string]*pb.FeatureFlag {
	out := make(map[string]*pb.FeatureFlag, len(f))
	for name, fl := range f {
		p := fl.Percentage
		out[name] = &pb.FeatureFlag{Enabled: fl.Enabled, Value: fl.Value, Percentage: &p, Description: fl.Description}
	}
	return out
}

// runtimeToPB is what SDKs receive over their watch.
func runtimeToPB(st *settings) *pb.RuntimeConfig {
	out := &pb.RuntimeConfig{CircuitDefaults: policyToPB(st.circuit), RetryDefaults: retryToPB(st.retry), Flags: flagsToPB(st.flags),
		Dlq: dlqToPB(st.dlq), Versions: map[string]uint64{}, Rollouts: st.rollouts, System: st.system,
		RateLimits: rateLimitsToPB(st.rateLimits), Bulkheads: bulkheadsToPB(st.bulkheads), Throttles: throttlesToPB(st.throttles)}
	for name, sec := range st.sections {
		out.Versions[name] = sec.Version
	}
	return out
}

// publicMessage is a section's values in force as its API message.
func publicMessage(section string, st *settings) proto.Message {
	switch section {
	case config.CircuitDefaults:
		return policyToPB(st.circuit)
	case config.DLQ:
		return dlqToPB(st.dlq)
	case config.RetryDefaults:
		return retryToPB(st.retry)
	case config.Flags:
		return &pb.RuntimeConfig{Flags: flagsToPB(st.flags)}
	case config.RateLimits:
		return &pb.RuntimeConfig{RateLimits: rateLimitsToPB(st.rateLimits)}
	case config.Bulkheads:
		return &pb.RuntimeConfig{Bulkheads: bulkheadsToPB(st.bulkheads)}
	case config.Throttles:
		return &pb.RuntimeConfig{Throttles: throttlesToPB(st.throttles)}
	case config.Emergency:
		return configToPB(st.emergency, 0)
	}
	return nil
}

// mapField is the RuntimeConfig field that holds a section made of named
// entries ("" for a section of settings).
func mapField(section string) string {
	switch section {
	case config.Flags, config.RateLimits, config.Bulkheads, config.Throttles:
		return section
	}
	return ""
}

var publicJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// sectionFields is a section's values in force as a JSON object's fields
// (the emergency config's revision, which is not a setting, left out).
func sectionFields(section string, st *settings) map[string]json.RawMessage {
	b, err := publicJSON.Marshal(publicMessage(section, st))
	if err != nil {
		panic(fmt.Sprintf("server: encode config section %s: %v", section, err))
	}
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(b, &fields)
	if f := mapField(section); f != "" {
		entries := map[string]json.RawMessage{}
		_ = json.Unmarshal(fields[f], &entries)
		return entries
	}
	delete(fields, "revision")
	return fields
}

// valuesStruct is a section's values as the API's Struct.
func valuesStruct(section string, st *settings) *structpb.Struct {
	b, _ := json.Marshal(sectionFields(section, st))
	out := &structpb.Struct{}
	if err := protojson.Unmarshal(b, out); err != nil {
		panic(fmt.Sprintf("server: config section %s as a Struct: %v", section, err))
	}
	return out
}

// parseSection turns a request's values into the section's domain JSON
// (complete and validated) and, for the emergency section, the emergency
// domain's command form. Fields left out take the startup values; a
// field the section does not have is refused by name.
func (s *Server) parseSection(section string, values *structpb.Struct) (json.RawMessage, *raftv1.EmergencyConfig, error) {
	start := s.startupSettings()
	fields := map[string]json.RawMessage{}
	entries := mapField(section)
	if entries == "" {
		fields = sectionFields(section, start)
	}
	known := make([]string, 0, len(fields))
	for k := range fields {
		known = append(known, k)
	}
	sort.Strings(known)
	for k, v := range values.GetFields() {
		if _, ok := fields[k]; !ok && entries == "" {
			return nil, nil, invalidField("values."+k, fmt.Sprintf("is not a setting of section %s; it has %s", section, strings.Join(known, ", ")))
		}
		b, err := protojson.Marshal(v)
		if err != nil {
			return nil, nil, invalidField("values."+k, err.Error())
		}
		fields[k] = b
	}
	doc, _ := json.Marshal(fields)
	if entries != "" {
		doc, _ = json.Marshal(map[string]json.RawMessage{entries: doc})
	}
	msg := publicMessage(section, start)
	proto.Reset(msg)
	if err := protojson.Unmarshal(doc, msg); err != nil {
		// Name the field: the first given one that fails alone.
		field := "values"
		for _, k := range slices.Sorted(maps.Keys(values.GetFields())) {
			one, _ := json.Marshal(map[string]json.RawMessage{k: fields[k]})
			if entries != "" {
				one, _ = json.Marshal(map[string]json.RawMessage{entries: one})
			}
			if protojson.Unmarshal(one, proto.Clone(msg)) != nil {
				field += "." + k
				break
			}
		}
		return nil, nil, protojsonError(field, err)
	}
	var v any
	var body *raftv1.EmergencyConfig
	var err error
	switch m := msg.(type) {
	case *pb.CircuitPolicy:
		var p circuit.Policy
		// Every field is given (the startup values fill the rest), so a
		// zero is the caller's and is checked as such.
		if p, err = policyFromPB(m, start.circuit); err == nil {
			err = p.Validate()
		}
		v = p
	case *pb.DLQSettings:
		l := start.dlq
		l.MaxSize, l.MaxPerDomain, l.OverflowStrategy = m.MaxSize, m.MaxSizePerDomain, m.OverflowStrategy
		l.ExpiryHours, l.RetentionDays, l.MaxReplayAttempts = int(m.ExpiryHours), int(m.RetentionDays), int(m.MaxReplayAttempts)
		l.RequestDataMax, l.FieldMax, l.TruncateBlocks = int(m.RequestDataMaxBytes), int(m.FieldMaxBytes), m.TruncateBlocksReplay
		l.SensitiveFields, l.MaxDomains = m.SensitiveFields, int(m.MaxDomains)
		err, v = l.Validate(), l
	case *pb.RetryPolicy:
		r := config.Retry{MaxAttempts: int(m.MaxAttempts), Backoff: m.Backoff, Multiplier: m.Multiplier, Jitter: m.Jitter}
		for _, d := range []struct {
			field string
			v     *durationpb.Duration
			dst   *time.Duration
		}{{"base_delay", m.BaseDelay, &r.BaseDelay}, {"max_delay", m.MaxDelay, &r.MaxDelay}, {"max_elapsed", m.MaxElapsed, &r.MaxElapsed}} {
			if *d.dst, err = checkedDuration("values."+d.field, d.v); err != nil {
				return nil, nil, err
			}
		}
		err, v = r.Validate(), r
	case *pb.RuntimeConfig:
		if section != config.Flags {
			v, err = admissionSection(section, m)
			break
		}
		f := config.FlagSet{}
		for name, fl := range m.Flags {
			p := 100.0
			if fl.Percentage != nil {
				p = *fl.Percentage
			}
			f[name] = config.Flag{Enabled: fl.Enabled, Value: fl.Value, Percentage: p, Description: fl.Description}
		}
		err, v = f.Validate(), f
	case *pb.EmergencyConfig:
		if body, err = emergencyBody("values", m); err == nil {
			v, err = emergency.ConfigFromCommand(body)
		}
	}
	if err != nil {
		var ae *fsm.ArgumentError
		if errors.As(err, &ae) && !strings.HasPrefix(ae.FieldName, "values") {
			moved := *ae
			moved.FieldName = "values." + strings.TrimPrefix(ae.FieldName, "config.")
			return nil, nil, &moved
		}
		return nil, nil, err
	}
	raw, err := json.Marshal(v)
	return raw, body, err
}

// protojsonError is protojson's complaint about field, without its
// position prefix and with fields by their proto names (it speaks of
// failureThreshold for failure_threshold).
func protojsonError(field string, err error) error {
	msg := err.Error()
	if i := strings.Index(msg, "): "); i >= 0 && strings.HasPrefix(msg, "proto:") {
		msg = msg[i+3:]
	}
	return invalidField(field, protojsonCamel.ReplaceAllStringFunc(msg, func(w string) string {
		var b strings.Builder
		for _, r := range w {
			if unicode.IsUpper(r) {
				b.WriteByte('_')
				r = unicode.ToLower(r)
			}
			b.WriteRune(r)
		}
		return b.String()
	}))
}

var protojsonCamel = regexp.MustCompile(`\b[a-z]+[A-Z][A-Za-z0-9]*\b`)

// emergencyBody converts an API emergency config into the command form,
// naming fields under prefix.
func emergencyBody(prefix string, c *pb.EmergencyConfig) (*raftv1.EmergencyConfig, error) {
	body := &raftv1.EmergencyConfig{}
	for i, l := range c.Levels {
		if l.Admission == nil {
			return nil, invalidField(fieldIndex(prefix+".levels", i)+".admission", "is required")
		}
		body.Levels = append(body.Levels, &raftv1.LevelAdmission{Level: int32(l.Level), Critical: l.Admission.Critical, Standard: l.Admission.Standard, NonEssential: l.Admission.NonEssential})
	}
	for _, d := range []struct {
		field string
		v     *durationpb.Duration
		dst   *int64
	}{
		{prefix + ".stabilization_period", c.StabilizationPeriod, &body.StabilizationNanos},
		{prefix + ".level_step_delay", c.LevelStepDelay, &body.StepDelayNanos},
		{prefix + ".auto_duration", c.AutoDuration, &body.AutoDurationNanos},
	} {
		if d.v == nil {
			return nil, invalidField(d.field, "is required")
		}
		v, err := checkedDuration(d.field, d.v)
		if err != nil {
			return nil, err
		}
		*d.dst = int64(v)
	}
	return body, nil
}

// setSection proposes a section's new values (raw, from parseSection).
// expected nil means any version.
func (s *Server) setSection(ctx context.Context, section string, raw json.RawMessage, body *raftv1.EmergencyConfig, expected *uint64, reason string) (config.Result, uint64, error) {
	if err := s.checkCommandVersion(configVersion); err != nil {
		return config.Result{}, 0, err
	}
	set := &raftv1.ConfigSet{Section: section, ValuesJson: raw, PreviousJson: s.settings().domainJSON(section), Emergency: body}
	if expected != nil {
		set.ExpectedVersion, set.CheckVersion = *expected, true
	}
	cmd := newCommand(ctx, reason)
	cmd.Version = configVersion
	cmd.Body = &raftv1.Command_ConfigSet{ConfigSet: set}
	return proposed[config.Result](s.writes.propose(ctx, cmd, onLeader))
}

// applyConfigSet is the dispatcher's handler of ConfigSet: the section's
// new version and history, and the domains that keep a section of their
// own follow (the emergency config; breakers on the old circuit
// defaults). Everything is checked before anything is written.
//
// holder is the rollout completing (it may change the section it holds);
// any other change of a held section is refused.
func applyConfigSet(kv fsm.KV, m fsm.Meta, c *raftv1.ConfigSet, holder string) (fsm.Applied, error) {
	if err := config.Check(kv, c); err != nil {
		return fsm.Applied{}, err
	}
	if h := canary.Holder(kv, c.GetSection()); h != "" && h != holder {
		return fsm.Applied{}, &canary.ConflictError{Section: c.GetSection(), Holder: h}
	}
	var follow func() []fsm.Change
	switch c.GetSection() {
	case config.Emergency:
		if c.GetEmergency() == nil {
			return fsm.Applied{}, &fsm.ArgumentError{Domain: "config", FieldName: "emergency", Code: "INVALID_CONFIG", Msg: "the emergency section needs its command form"}
		}
		if _, err := emergency.SetConfig(kv, m, c.GetEmergency()); err != nil {
			return fsm.Applied{}, err
		}
	case config.CircuitDefaults:
		var old, next circuit.Policy
		prev := c.GetPreviousJson()
		if sec, ok := config.Get(kv, config.CircuitDefaults); ok {
			prev = sec.Values
		}
		if err := json.Unmarshal(c.GetValuesJson(), &next); err != nil {
			return fsm.Applied{}, &fsm.ArgumentError{Domain: "config", FieldName: "values", Code: "INVALID_CONFIG", Msg: err.Error()}
		}
		if err := next.Validate(); err != nil {
			return fsm.Applied{}, err
		}
		if json.Unmarshal(prev, &old) == nil {
			follow = func() []fsm.Change { return circuit.FollowDefaults(kv, m, old, next) }
		}
	}
	r, err := config.Set(kv, m, c)
	if err != nil {
		return fsm.Applied{}, err
	}
	ap := r.Applied()
	if follow != nil {
		if moved := follow(); len(moved) > 0 {
			ap.Batch = append([]fsm.Change{ap.Change}, moved...)
		}
	}
	return ap, nil
}

type configService struct {
	pb.UnimplementedConfigServiceServer
	s *Server
}

func sectionToPB(name string, st *settings) *pb.ConfigSection {
	sec := st.sections[name]
	return &pb.ConfigSection{Section: name, Version: sec.Version, Values: valuesStruct(name, st), UpdatedAt: ts(sec.Time),
		UpdatedBy: sec.Actor, Reason: sec.Reason, Revision: sec.Revision}
}

// read returns the settings after the read barrier of consistency.
func (c *configService) read(ctx context.Context, consistency string) (*settings, error) {
	if err := c.s.readBarrier(ctx, consistency); err != nil {
		return nil, err
	}
	var st *settings
	err := c.s.store.View(func(kv raftstore.KV) error { st = c.s.settingsFrom(kv); return nil })
	return st, err
}

func (c *configService) ListConfig(ctx context.Context, req *pb.ListConfigRequest) (*pb.ListConfigResponse, error) {
	st, err := c.read(ctx, req.Consistency)
	if err != nil {
		return nil, err
	}
	out := &pb.ListConfigResponse{}
	for _, name := range config.Sections {
		out.Sections = append(out.Sections, sectionToPB(name, st))
	}
	return out, nil
}

func (c *configService) GetConfig(ctx context.Context, req *pb.GetConfigRequest) (*pb.ConfigSection, error) {
	if err := config.CheckSection(req.Section); err != nil {
		return nil, err
	}
	st, err := c.read(ctx, req.Consistency)
	if err != nil {
		return nil, err
	}
	return sectionToPB(req.Section, st), nil
}

// maxConfigReason bounds a change's reason.
const maxConfigReason = 1024

func (c *configService) UpdateConfig(ctx context.Context, req *pb.UpdateConfigRequest) (*pb.ConfigSection, error) {
	if err := config.CheckSection(req.Section); err != nil {
		return nil, err
	}
	if req.Values == nil {
		return nil, invalidField("values", "is required: the section's values as a JSON object")
	}
	if req.ExpectedVersion == nil && !req.Force {
		return nil, invalidField("expected_version", "is required (the version you read; 0 for a section never set), or set force to apply over any version")
	}
	if len(req.Reason) > maxConfigReason {
		return nil, invalidField("reason", fmt.Sprintf("is %d bytes: at most %d", len(req.Reason), maxConfigReason))
	}
	if req.Section == config.Emergency {
		// The emergency domain's rule: its config changes carry a reason.
		if err := emergency.CheckReason(req.Reason); err != nil {
			return nil, err
		}
	}
	raw, body, err := c.s.parseSection(req.Section, req.Values)
	if err != nil {
		return nil, err
	}
	if _, _, err := c.s.setSection(ctx, req.Section, raw, body, req.ExpectedVersion, req.Reason); err != nil {
		return nil, err
	}
	return sectionToPB(req.Section, c.s.settings()), nil
}

// configPageSize is ListConfigHistory's default page and maxConfigPage its
// largest.
const (
	configPageSize = 20
	maxConfigPage  = 100
)

func (c *configService) ListConfigHistory(ctx context.Context, req *pb.ListConfigHistoryRequest) (*pb.ListConfigHistoryResponse, error) {
	if err := config.CheckSection(req.Section); err != nil {
		return nil, err
	}
	size := int(req.PageSize)
	switch {
	case size < 0 || size > maxConfigPage:
		return nil, invalidField("page_size", fmt.Sprintf("%d is outside 0..%d", size, maxConfigPage))
	case size == 0:
		size = configPageSize
	}
	var before uint64
	if req.PageToken != "" {
		v, err := strconv.ParseUint(req.PageToken, 10, 64)
		if err != nil || v == 0 {
			return nil, invalidField("page_token", "is not a token this method returned")
		}
		before = v
	}
	if err := c.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	var changes []config.Change
	_ = c.s.store.View(func(kv raftstore.KV) error { changes = config.History(kv, req.Section, before, size+1); return nil })
	out := &pb.ListConfigHistoryResponse{}
	if len(changes) > size {
		changes = changes[:size]
		out.NextPageToken = strconv.FormatUint(changes[size-1].Version, 10)
	}
	for _, ch := range changes {
		out.Changes = append(out.Changes, &pb.ConfigChange{Version: ch.Version, Before: c.s.sectionValues(req.Section, ch.Before),
			After: c.s.sectionValues(req.Section, ch.After), Time: ts(ch.Time), Actor: ch.Actor, Reason: ch.Reason, Revision: ch.Revision})
	}
	return out, nil
}

// sectionValues renders a section's domain JSON (from its history, or a
// rollout's values) in the API's form (nil when there is none).
func (s *Server) sectionValues(section string, raw json.RawMessage) *structpb.Struct {
	if len(raw) == 0 {
		return nil
	}
	st := s.startupSettings()
	if err := st.decode(section, raw); err != nil {
		return nil
	}
	return valuesStruct(section, st)
}
