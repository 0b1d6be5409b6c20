// Package coordination holds fenced leases, elections and the fleet job
// scheduler's replicated records (Baldur §9, with fencing by default).
//
// Every grant carries a fencing token: the Raft index of the grant, so it
// strictly increases per resource (and globally). A lease lapses at its
// expiry by the leader's clock as stamped into commands: an acquire after
// the expiry treats the old lease as gone even before the leader's EXPIRE
// command removes it, and EXPIRE names the lease it ends, so a late or
// repeated one is a no-op. An optional lock-delay keeps a lapsed resource
// ungrantable for a while (a holder that lost its lease without knowing may
// still be finishing).
//
// Elections are leases with candidates: a candidate with a lower priority
// number wins when several are waiting. Jobs record their schedule and runs
// so a new scheduler holder keeps the cadence; the leader computes schedule
// times with [Schedule] and [StartCommand] (the cron parser is a [CronNext]
// the caller passes in) and stamps them into the command. [Proposals] lists
// the lease expiries the leader proposes.
//
// Imports: the standard library and the internal command protos only.
package coordination
