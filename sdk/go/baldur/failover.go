package baldur

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Failover as the SDK does it, for every unary call on a connection from
// NewConn (and so for baldurctl): a write gets a Baldur-Request-Id unless
// it has one, so sending it again applies it once; a call that fails
// because no leader took it (NO_LEADER, NOT_LEADER, LEADER_UNREACHABLE,
// LEADER_NOT_READY) or whose outcome is unknown (RESULT_UNKNOWN,
// SHUTTING_DOWN) is sent again with backoff while the caller's deadline
// allows (10 s without one). A node that cannot be reached is tried again
// for at most transportWindow, long enough for the connection to move to
// the next endpoint, so a wrong address or a TLS mismatch still fails fast
// with its own error. Anything else is the caller's answer.

const (
	requestIDHeader = "baldur-request-id"
	// defaultFailoverBound bounds the retries of a call without a deadline.
	defaultFailoverBound = 10 * time.Second
	// transportWindow bounds the retries after transport failures.
	transportWindow = 2 * time.Second
)

// retryClass says how a failed call may be sent again.
type retryClass int

const (
	noRetry        retryClass = iota
	untilDeadline             // the cluster is between leaders
	transportRetry            // the node was not reached, or the connection broke
)

func classify(err error) retryClass {
	switch Reason(err) {
	case "NO_LEADER", "NOT_LEADER", "LEADER_UNREACHABLE", "LEADER_NOT_READY":
		return untilDeadline
	case "RESULT_UNKNOWN", "SHUTTING_DOWN":
		return untilDeadline // a write carries its request id: it applies once
	case "UNAVAILABLE":
		if status.Code(err) != codes.Unavailable {
			return noRetry
		}
		msg := status.Convert(err).Message()
		// A TLS mismatch does not heal: say so at once.
		if strings.Contains(msg, "server preface") || strings.Contains(msg, "handshake") || strings.Contains(msg, "certificate") {
			return noRetry
		}
		return transportRetry
	}
	return noRetry
}

// failFast is a call option for calls with a fallback of their own (the
// DLQ spool, the buffered outcome reports): a node that cannot be reached
// is the caller's answer at once; leader changes are still ridden out.
type failFast struct{ grpc.EmptyCallOption }

func hasFailFast(opts []grpc.CallOption) bool {
	for _, o := range opts {
		if _, ok := o.(failFast); ok {
			return true
		}
	}
	return false
}

// isWrite tells a write from a read by the method's name (reads are Get*,
// List*, Verify*, Watch* and Observe*).
func isWrite(method string) bool {
	name := method[strings.LastIndexByte(method, '/')+1:]
	for _, p := range []string{"Get", "List", "Verify", "Watch", "Observe"} {
		if strings.HasPrefix(name, p) {
			return false
		}
	}
	return true
}

// newRequestID is a random id for a write sent without one.
func newRequestID() string {
	return fmt.Sprintf("sdk-%016x%016x", rand.Uint64(), rand.Uint64())
}

// failoverInterceptor is installed by NewConn.
func failoverInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if isWrite(method) {
		if md, _ := metadata.FromOutgoingContext(ctx); len(md.Get(requestIDHeader)) == 0 {
			ctx = metadata.AppendToOutgoingContext(ctx, requestIDHeader, newRequestID())
		}
	}
	start := time.Now()
	bound := start.Add(defaultFailoverBound)
	if d, ok := ctx.Deadline(); ok {
		bound = d
	}
	backoff := 25 * time.Millisecond
	for {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if err == nil || ctx.Err() != nil {
			return err
		}
		until := bound
		switch classify(err) {
		case noRetry:
			return err
		case transportRetry:
			if hasFailFast(opts) {
				return err
			}
			if w := start.Add(transportWindow); w.Before(until) {
				until = w
			}
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		if time.Until(until) < wait {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		backoff = min(2*backoff, time.Second)
	}
}
