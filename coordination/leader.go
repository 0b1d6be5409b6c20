package coordination

import (
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
)

// Proposals lists the commands the leader proposes at now: leases whose TTL
// passed expire. Each names the lease it ends, so one proposed twice (or
// after a keepalive) applies at most once.
func Proposals(kv fsm.KV, now time.Time) []*raftv1.Command {
	var out []*raftv1.Command
	for _, d := range DueExpiries(kv, now) {
		out = append(out, &raftv1.Command{Reason: "lease TTL elapsed", Version: 1,
			Body: &raftv1.Command_Coordination{Coordination: &Command{Op: raftv1.CoordinationCommand_EXPIRE, Name: d.Name, LeaseId: d.LeaseID}}})
	}
	return out
}

// CronNext returns the first time after `after` that a cron expression
// names. The domain receives it so it needs no cron parser of its own.
type CronNext func(expr string, after time.Time) (time.Time, error)

// FirstRun is a schedule's first run after now: now for an interval, the
// cron expression's next time otherwise (a job declared or re-enabled
// starts from now, not from runs missed meanwhile).
func FirstRun(cron string, now time.Time, next CronNext) (time.Time, error) {
	if cron == "" {
		return now, nil
	}
	return next(cron, now)
}

// Schedule computes the run a claim of j at now gets: the scheduled time,
// the run after it, and how many runs were skipped (none with CatchUp: the
// oldest missed run is served first).
func Schedule(j Job, now time.Time, next CronNext) (scheduled, following time.Time, skipped int64, err error) {
	due := j.NextRunAt
	if j.Cron == "" {
		missed := int64(now.Sub(due) / j.Interval)
		latest := due.Add(time.Duration(missed) * j.Interval)
		following = latest.Add(j.Interval)
		if j.CatchUp {
			return due, following, 0, nil
		}
		return latest, following, missed, nil
	}
	latest := due
	for {
		n, err := next(j.Cron, latest)
		if err != nil {
			return time.Time{}, time.Time{}, 0, err
		}
		if n.After(now) || skipped > 100000 {
			break
		}
		latest = n
		skipped++
	}
	following, err = next(j.Cron, latest)
	if err != nil {
		return time.Time{}, time.Time{}, 0, err
	}
	if j.CatchUp {
		return due, following, 0, nil
	}
	return latest, following, skipped, nil
}

// StartCommand is the JOB_START a claim of j at now proposes, holding
// fencing token; nil when no run is due (disabled, or before NextRunAt).
// The FSM starts the run only if the job's next run is still the one this
// claim saw.
func StartCommand(j Job, now time.Time, token uint64, next CronNext) (*Command, error) {
	if !j.Enabled || now.Before(j.NextRunAt) {
		return nil, nil
	}
	scheduled, following, skipped, err := Schedule(j, now, next)
	if err != nil {
		return nil, err
	}
	return &Command{Op: raftv1.CoordinationCommand_JOB_START, Name: j.Resource, Job: j.Name,
		FencingToken: token, ScheduledUnixNano: scheduled.UnixNano(), NextRunUnixNano: following.UnixNano(), Skipped: skipped,
		ExpectedNextUnixNano: j.NextRunAt.UnixNano()}, nil
}

// ResourceOfLease names the resource lease id is held on, if any.
func ResourceOfLease(kv fsm.KV, id uint64) (string, bool) {
	for _, r := range Resources(kv) {
		if r.Lease != nil && r.Lease.ID == id {
			return r.Name, true
		}
	}
	return "", false
}
