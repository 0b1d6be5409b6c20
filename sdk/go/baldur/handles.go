package baldur

import "context"

// Each primitive has a handle on the client, named like the cluster's
// service: c.Circuits(), c.Emergency(), c.DLQ(), c.Leases(), c.Elections(),
// c.Scheduler(resource). The shorthands on Client (c.Breaker, c.KillSwitch,
// c.Elect, c.Resign, c.Leader, c.Observe) call the same code.

// Circuits is the circuit-breaker API: breakers decided from the local,
// push-updated cache.
type Circuits struct{ c *Client }

// Circuits returns the circuit-breaker API.
func (c *Client) Circuits() *Circuits { return &Circuits{c: c} }

// Breaker returns the named breaker (Client.Breaker).
func (h *Circuits) Breaker(name string) *Breaker { return h.c.Breaker(name) }

// KillSwitch reports whether the cluster's kill switch is on.
func (h *Circuits) KillSwitch() bool { return h.c.KillSwitch() }

// Elections is the leader-election API: campaigns over fenced leases.
type Elections struct{ c *Client }

// Elections returns the leader-election API.
func (c *Client) Elections() *Elections { return &Elections{c: c} }

// Campaign blocks until this client leads name (Client.Elect).
func (h *Elections) Campaign(ctx context.Context, name string, opts ...ElectOption) (*Lease, error) {
	return h.c.Elect(ctx, name, opts...)
}

// Resign withdraws this client's candidacy for name.
func (h *Elections) Resign(ctx context.Context, name string) error { return h.c.Resign(ctx, name) }

// Leader returns who leads name now.
func (h *Elections) Leader(ctx context.Context, name string) (ElectionInfo, error) {
	return h.c.Leader(ctx, name)
}

// Observe streams leader changes of name until ctx ends.
func (h *Elections) Observe(ctx context.Context, name string) <-chan ElectionInfo {
	return h.c.Observe(ctx, name)
}
