package coordination

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
)

// GetResource returns a resource (an empty one when unknown).
func GetResource(kv fsm.KV, name string) Resource {
	v := kv.Get(BucketResources, []byte(name))
	if v == nil {
		return Resource{Name: name}
	}
	var r Resource
	if err := json.Unmarshal(v, &r); err != nil {
		panic(fmt.Sprintf("coordination: decode %q: %v", name, err))
	}
	return r
}

// Resources lists every resource ordered by name.
func Resources(kv fsm.KV) []Resource {
	var out []Resource
	kv.Scan(BucketResources, nil, false, func(_, v []byte) bool {
		var r Resource
		if err := json.Unmarshal(v, &r); err != nil {
			panic(fmt.Sprintf("coordination: decode resource: %v", err))
		}
		out = append(out, r)
		return true
	})
	return out
}

func jobKey(resource, name string) []byte { return []byte(resource + "\x00" + name) }

// GetJob returns a job.
func GetJob(kv fsm.KV, resource, name string) (Job, bool) {
	v := kv.Get(BucketJobs, jobKey(resource, name))
	if v == nil {
		return Job{}, false
	}
	var j Job
	if err := json.Unmarshal(v, &j); err != nil {
		panic(fmt.Sprintf("coordination: decode job: %v", err))
	}
	return j, true
}

// Jobs lists the jobs of a resource ("" for all), ordered by resource and name.
func Jobs(kv fsm.KV, resource string) []Job {
	var out []Job
	var start []byte
	if resource != "" {
		start = []byte(resource + "\x00")
	}
	kv.Scan(BucketJobs, start, false, func(_, v []byte) bool {
		var j Job
		if err := json.Unmarshal(v, &j); err != nil {
			panic(fmt.Sprintf("coordination: decode job: %v", err))
		}
		if resource != "" && j.Resource != resource {
			return false
		}
		out = append(out, j)
		return true
	})
	return out
}

func putResource(kv fsm.KV, r Resource) {
	if r.Lease == nil && len(r.Candidates) == 0 && r.LockDelayUntil.IsZero() {
		kv.Delete(BucketResources, []byte(r.Name))
		return
	}
	kv.Put(BucketResources, []byte(r.Name), marshal(r))
}

func putJob(kv fsm.KV, j Job) { kv.Put(BucketJobs, jobKey(j.Resource, j.Name), marshal(j)) }

// LiveCandidates drops candidates whose registration lapsed at now.
func LiveCandidates(cs []Candidate, now time.Time) []Candidate {
	var out []Candidate
	for _, c := range cs {
		if now.Before(c.ExpiresAt) {
			out = append(out, c)
		}
	}
	return out
}

// lapse ends a lease that expired at or before now and starts its lock-delay.
func lapse(r Resource, now time.Time) Resource {
	if r.Lease != nil && !now.Before(r.Lease.ExpiresAt) {
		r.LockDelayUntil = r.Lease.ExpiresAt.Add(r.LockDelay)
		r.Lease = nil
	}
	if !r.LockDelayUntil.IsZero() && !now.Before(r.LockDelayUntil) {
		r.LockDelayUntil = time.Time{}
	}
	return r
}

// Apply runs one coordination command.
func Apply(kv fsm.KV, m fsm.Meta, c *raftv1.CoordinationCommand) (Result, error) {
	switch c.GetOp() {
	case raftv1.CoordinationCommand_ACQUIRE, raftv1.CoordinationCommand_CAMPAIGN:
		return acquire(kv, m, c)
	case raftv1.CoordinationCommand_KEEPALIVE:
		return keepAlive(kv, m, c)
	case raftv1.CoordinationCommand_REVOKE, raftv1.CoordinationCommand_RESIGN:
		return revoke(kv, m, c)
	case raftv1.CoordinationCommand_EXPIRE:
		r := GetResource(kv, c.GetName())
		if r.Lease == nil || r.Lease.ID != c.GetLeaseId() || m.Time.Before(r.Lease.ExpiresAt) {
			return Result{}, nil
		}
		before := *r.Lease
		r = lapse(r, m.Time)
		r.Revision = m.Index
		putResource(kv, r)
		return Result{Change: fsm.Change{Changed: true, Action: "lease_expired", Target: "lease/" + r.Name, Before: before}}, nil
	case raftv1.CoordinationCommand_JOB_DECLARE:
		return declareJob(kv, m, c)
	case raftv1.CoordinationCommand_JOB_ENABLE:
		j, ok := GetJob(kv, c.GetName(), c.GetJob())
		if !ok {
			return Result{}, fmt.Errorf("%w: %s/%s", ErrJobNotFound, c.GetName(), c.GetJob())
		}
		if j.Enabled == c.GetEnabled() {
			return Result{}, nil
		}
		before := j
		j.Enabled = c.GetEnabled()
		if j.Enabled && c.GetNextRunUnixNano() != 0 {
			j.NextRunAt = time.Unix(0, c.GetNextRunUnixNano()).UTC()
		}
		j.Revision = m.Index
		putJob(kv, j)
		return Result{Change: fsm.Change{Changed: true, Action: map[bool]string{true: "job_enabled", false: "job_disabled"}[j.Enabled], Target: "job/" + j.Resource + "/" + j.Name, Before: before, After: j}}, nil
	case raftv1.CoordinationCommand_JOB_START:
		return startJob(kv, m, c)
	case raftv1.CoordinationCommand_JOB_FINISH:
		return finishJob(kv, m, c)
	}
	return Result{}, &fsm.ArgumentError{Domain: "coordination", FieldName: "op", Code: "INVALID_ARGUMENT", Msg: fmt.Sprintf("unknown coordination op %v", c.GetOp())}
}

func acquire(kv fsm.KV, m fsm.Meta, c *raftv1.CoordinationCommand) (Result, error) {
	if err := CheckName("name", c.GetName()); err != nil {
		return Result{}, err
	}
	if err := CheckHolder(c.GetHolder()); err != nil {
		return Result{}, err
	}
	ttl, err := CheckTTL(time.Duration(c.GetTtlNanos()))
	if err != nil {
		return Result{}, err
	}
	if err := CheckLockDelay(time.Duration(c.GetLockDelayNanos())); err != nil {
		return Result{}, err
	}
	campaign := c.GetOp() == raftv1.CoordinationCommand_CAMPAIGN
	prio := 0
	if campaign {
		if prio, err = CheckPriority(int(c.GetPriority())); err != nil {
			return Result{}, err
		}
	}
	orig := GetResource(kv, c.GetName())
	r := lapse(orig, m.Time)
	r.LockDelay = time.Duration(c.GetLockDelayNanos())
	action := "lease_granted"
	if campaign {
		// Register or refresh the candidate.
		r.Candidates = LiveCandidates(r.Candidates, m.Time)
		found := false
		for i := range r.Candidates {
			if r.Candidates[i].Holder == c.GetHolder() {
				r.Candidates[i].Priority, r.Candidates[i].ExpiresAt, found = prio, m.Time.Add(ttl), true
			}
		}
		if !found {
			r.Candidates = append(r.Candidates, Candidate{Holder: c.GetHolder(), Priority: prio, ExpiresAt: m.Time.Add(ttl)})
		}
		sort.SliceStable(r.Candidates, func(i, j int) bool { return r.Candidates[i].Priority < r.Candidates[j].Priority })
		action = "elected"
	}
	if l := r.Held(m.Time); l != nil {
		if l.Holder == c.GetHolder() {
			// The holder asking again renews its own lease.
			l.ExpiresAt = m.Time.Add(l.TTL)
			r.Revision = m.Index
			putResource(kv, r)
			return Result{Change: fsm.Change{Changed: true, Action: "lease_renewed", Target: "lease/" + r.Name}, Lease: l}, nil
		}
		if campaign {
			r.Revision = m.Index
			putResource(kv, r) // the candidate registration is still a change
			return Result{Change: fsm.Change{Changed: true, Action: "candidate_registered", Target: "election/" + r.Name, After: r.Candidates}}, nil
		}
		return Result{}, &HeldError{Holder: l.Holder, ExpiresAt: l.ExpiresAt}
	}
	if !r.LockDelayUntil.IsZero() && m.Time.Before(r.LockDelayUntil) {
		if campaign {
			r.Revision = m.Index
			putResource(kv, r)
			return Result{Change: fsm.Change{Changed: true, Action: "candidate_registered", Target: "election/" + r.Name, After: r.Candidates}}, nil
		}
		return Result{}, &LockDelayError{Until: r.LockDelayUntil}
	}
	if campaign && len(r.Candidates) > 0 && r.Candidates[0].Holder != c.GetHolder() && r.Candidates[0].Priority < prio {
		// A preferred candidate is waiting: it gets the lease.
		r.Revision = m.Index
		putResource(kv, r)
		return Result{Change: fsm.Change{Changed: true, Action: "candidate_registered", Target: "election/" + r.Name, After: r.Candidates}}, nil
	}
	l := &Lease{ID: m.Index, Name: r.Name, Holder: c.GetHolder(), FencingToken: m.Index, TTL: ttl, GrantedAt: m.Time, ExpiresAt: m.Time.Add(ttl), Priority: prio, Owner: m.Actor}
	var before any
	if orig.Lease != nil {
		before = *orig.Lease
	}
	r.Lease = l
	r.Revision = m.Index
	putResource(kv, r)
	return Result{Change: fsm.Change{Changed: true, Action: action, Target: "lease/" + r.Name, Before: before, After: *l}, Lease: l}, nil
}

// CheckKeepAlive reports why lease id of r cannot be kept alive at now.
func CheckKeepAlive(r Resource, id uint64, now time.Time) error {
	switch {
	case r.Lease == nil || r.Lease.ID != id:
		return &LostError{Why: fmt.Sprintf("lease %d of %q is not current (revoked, expired or unknown)", id, r.Name)}
	case r.Held(now) == nil:
		return &LostError{Why: fmt.Sprintf("lease %d of %q lapsed at %s", id, r.Name, r.Lease.ExpiresAt.Format(time.RFC3339Nano))}
	}
	return nil
}

// CheckRevoke reports why lease id of r cannot be revoked by holder,
// asked by actor (the authenticated caller): only the holder, as the
// identity that acquired the lease, may release it; force (an operator's,
// authorized by the server) skips both checks.
func CheckRevoke(r Resource, id uint64, holder, actor string, force bool) error {
	if r.Lease == nil || r.Lease.ID != id {
		return fmt.Errorf("%w: %d of %q", ErrNotFound, id, r.Name)
	}
	if force {
		return nil
	}
	if r.Lease.Holder != holder {
		return fmt.Errorf("%w: %q holds lease %d, not %q", ErrNotHolder, r.Lease.Holder, r.Lease.ID, holder)
	}
	if r.Lease.Owner != "" && r.Lease.Owner != actor {
		return fmt.Errorf("%w: lease %d was acquired by %s, not %s", ErrNotHolder, r.Lease.ID, r.Lease.Owner, actor)
	}
	return nil
}

func keepAlive(kv fsm.KV, m fsm.Meta, c *raftv1.CoordinationCommand) (Result, error) {
	r := GetResource(kv, c.GetName())
	if err := CheckKeepAlive(r, c.GetLeaseId(), m.Time); err != nil {
		return Result{}, err
	}
	l := r.Lease
	l.ExpiresAt = m.Time.Add(l.TTL)
	r.Revision = m.Index
	putResource(kv, r)
	// Keepalives are frequent and unremarkable: not audited.
	return Result{Lease: l}, nil
}

func revoke(kv fsm.KV, m fsm.Meta, c *raftv1.CoordinationCommand) (Result, error) {
	r := GetResource(kv, c.GetName())
	if c.GetOp() == raftv1.CoordinationCommand_RESIGN {
		if err := CheckHolder(c.GetHolder()); err != nil {
			return Result{}, err
		}
		before := r.Candidates
		var kept []Candidate
		for _, cd := range LiveCandidates(r.Candidates, m.Time) {
			if cd.Holder != c.GetHolder() {
				kept = append(kept, cd)
			}
		}
		r.Candidates = kept
		var lease any
		if l := r.Held(m.Time); l != nil && l.Holder == c.GetHolder() {
			lease = *l
			r.Lease = nil
		}
		r.Revision = m.Index
		putResource(kv, r)
		return Result{Change: fsm.Change{Changed: true, Action: "resigned", Target: "election/" + r.Name, Before: map[string]any{"candidates": before, "lease": lease}}}, nil
	}
	if err := CheckRevoke(r, c.GetLeaseId(), c.GetHolder(), m.Actor, c.GetForce()); err != nil {
		return Result{}, err
	}
	before := *r.Lease
	r.Lease = nil // a voluntary release: no lock-delay
	r.Revision = m.Index
	putResource(kv, r)
	return Result{Change: fsm.Change{Changed: true, Action: "lease_revoked", Target: "lease/" + r.Name, Before: before}}, nil
}

func declareJob(kv fsm.KV, m fsm.Meta, c *raftv1.CoordinationCommand) (Result, error) {
	if err := CheckName("resource", c.GetName()); err != nil {
		return Result{}, err
	}
	if err := CheckName("name", c.GetJob()); err != nil {
		return Result{}, err
	}
	interval := time.Duration(c.GetIntervalNanos())
	if err := CheckSchedule(interval, c.GetCron()); err != nil {
		return Result{}, err
	}
	if c.GetNextRunUnixNano() == 0 {
		return Result{}, &fsm.ArgumentError{Domain: "coordination", FieldName: "cron", Code: "INVALID_SCHEDULE", Msg: "the schedule has no next run"}
	}
	j, exists := GetJob(kv, c.GetName(), c.GetJob())
	if exists && j.Interval == interval && j.Cron == c.GetCron() && j.CatchUp == c.GetCatchUp() {
		return Result{}, nil // declared again by another client: nothing to change
	}
	before := j
	if !exists {
		j = Job{Resource: c.GetName(), Name: c.GetJob(), Enabled: true}
	}
	scheduleChanged := !exists || j.Interval != interval || j.Cron != c.GetCron()
	j.Interval, j.Cron, j.CatchUp = interval, c.GetCron(), c.GetCatchUp()
	if scheduleChanged {
		j.NextRunAt = time.Unix(0, c.GetNextRunUnixNano()).UTC()
	}
	j.Revision = m.Index
	putJob(kv, j)
	var b any
	if exists {
		b = before
	}
	return Result{Change: fsm.Change{Changed: true, Action: "job_declared", Target: "job/" + j.Resource + "/" + j.Name, Before: b, After: j}}, nil
}

// CheckSchedule validates that a job has exactly one of an interval (1s..31d)
// or a cron expression (parsed by the server).
func CheckSchedule(interval time.Duration, cron string) error {
	if (interval == 0) == (cron == "") {
		return &fsm.ArgumentError{Domain: "coordination", FieldName: "interval", Code: "INVALID_SCHEDULE", Msg: "give exactly one of interval or cron"}
	}
	if cron == "" && (interval < MinJobInterval || interval > MaxJobInterval) {
		return &fsm.ArgumentError{Domain: "coordination", FieldName: "interval", Code: "INVALID_SCHEDULE", Msg: fmt.Sprintf("%v is outside %v..%v", interval, MinJobInterval, MaxJobInterval)}
	}
	return nil
}

// currentToken is the fencing token of the scheduler resource's lease in
// force at now, or 0.
func currentToken(kv fsm.KV, resource string, now time.Time) uint64 {
	if l := GetResource(kv, resource).Held(now); l != nil {
		return l.FencingToken
	}
	return 0
}

func startJob(kv fsm.KV, m fsm.Meta, c *raftv1.CoordinationCommand) (Result, error) {
	j, ok := GetJob(kv, c.GetName(), c.GetJob())
	if !ok {
		return Result{}, fmt.Errorf("%w: %s/%s", ErrJobNotFound, c.GetName(), c.GetJob())
	}
	if tok := currentToken(kv, c.GetName(), m.Time); tok == 0 || tok != c.GetFencingToken() {
		return Result{}, fmt.Errorf("%w: token %d, current %d", ErrStaleToken, c.GetFencingToken(), tok)
	}
	if !j.Enabled || j.NextRunAt.UnixNano() != c.GetExpectedNextUnixNano() || m.Time.Before(j.NextRunAt) {
		return Result{Change: fsm.Change{Action: "job_not_due"}}, nil // already claimed, disabled or not due: no run
	}
	before := j
	j.Running = c.GetScheduledUnixNano() != 0
	if j.Running {
		j.LastScheduledAt = time.Unix(0, c.GetScheduledUnixNano()).UTC()
		j.LastFencingToken = c.GetFencingToken()
	}
	j.SkippedRuns += uint64(max(c.GetSkipped(), 0))
	j.NextRunAt = time.Unix(0, c.GetNextRunUnixNano()).UTC()
	j.Revision = m.Index
	putJob(kv, j)
	return Result{Change: fsm.Change{Changed: true, Action: "job_started", Target: "job/" + j.Resource + "/" + j.Name, Before: before, After: j}, Started: j.Running}, nil
}

func finishJob(kv fsm.KV, m fsm.Meta, c *raftv1.CoordinationCommand) (Result, error) {
	j, ok := GetJob(kv, c.GetName(), c.GetJob())
	if !ok {
		return Result{}, fmt.Errorf("%w: %s/%s", ErrJobNotFound, c.GetName(), c.GetJob())
	}
	if !j.Running || j.LastFencingToken != c.GetFencingToken() {
		return Result{}, fmt.Errorf("%w: run of token %d is not the running one", ErrStaleToken, c.GetFencingToken())
	}
	j.Running = false
	j.RunCount++
	j.LastRunAt = m.Time
	j.LastDuration = time.Duration(c.GetDurationNanos())
	if c.GetError() != "" {
		j.ErrorCount++
		j.LastError = c.GetError()
	}
	j.Revision = m.Index
	putJob(kv, j)
	return Result{Change: fsm.Change{Changed: true, Action: "job_finished", Target: "job/" + j.Resource + "/" + j.Name, After: j}}, nil
}

// DueExpiry is a lease the leader should expire.
type DueExpiry struct {
	Name    string
	LeaseID uint64
}

// DueExpiries lists leases whose expiry passed at now.
func DueExpiries(kv fsm.KV, now time.Time) []DueExpiry {
	var out []DueExpiry
	for _, r := range Resources(kv) {
		if r.Lease != nil && !now.Before(r.Lease.ExpiresAt) {
			out = append(out, DueExpiry{Name: r.Name, LeaseID: r.Lease.ID})
		}
	}
	return out
}
