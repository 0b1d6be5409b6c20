package baldur

import (
	"context"
	"fmt"
	"net/http"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// HTTPOption configures RoundTripper.
type HTTPOption func(*httpConfig)

type httpConfig struct {
	name      func(*http.Request) string
	isFailure func(*http.Response, error) bool
}

// WithHTTPBreakerName picks the breaker per request (default: the fixed
// name given to RoundTripper).
func WithHTTPBreakerName(f func(*http.Request) string) HTTPOption {
	return func(c *httpConfig) { c.name = f }
}

// WithHTTPFailure decides which responses count as breaker failures
// (default: transport errors, 5xx and 429).
func WithHTTPFailure(f func(*http.Response, error) bool) HTTPOption {
	return func(c *httpConfig) { c.isFailure = f }
}

// DefaultHTTPFailure counts transport errors, 5xx and 429 as failures.
func DefaultHTTPFailure(resp *http.Response, err error) bool {
	if err != nil {
		return true
	}
	return resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests
}

type roundTripper struct {
	c    *Client
	next http.RoundTripper
	cfg  httpConfig
}

// RoundTripper guards an http.RoundTripper (nil: http.DefaultTransport)
// with a breaker: a rejected request fails with a *CircuitOpenError without
// leaving the process, and each response is recorded as success or failure.
func RoundTripper(c *Client, name string, next http.RoundTripper, opts ...HTTPOption) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	cfg := httpConfig{name: func(*http.Request) string { return name }, isFailure: DefaultHTTPFailure}
	for _, o := range opts {
		o(&cfg)
	}
	return &roundTripper{c: c, next: next, cfg: cfg}
}

// errHTTPFailure marks a response the classifier counted as a failure.
type errHTTPFailure struct{ status int }

func (e errHTTPFailure) Error() string { return fmt.Sprintf("baldur: HTTP %d", e.status) }

func (rt *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	p, err := rt.c.Breaker(rt.cfg.name(req)).Begin()
	if err != nil {
		return nil, err
	}
	resp, err := rt.next.RoundTrip(req)
	switch {
	case err != nil && req.Context().Err() != nil:
		p.End(req.Context().Err()) // the caller gave up: not the dependency's fault
	case rt.cfg.isFailure(resp, err):
		if err == nil {
			p.End(errHTTPFailure{status: resp.StatusCode})
		} else {
			p.End(err)
		}
	default:
		p.End(nil)
	}
	return resp, err
}

// DefaultGRPCFailureCodes are the status codes a gRPC call counts as a
// breaker failure by default: the dependency is unhealthy, not the request.
var DefaultGRPCFailureCodes = []codes.Code{codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Internal, codes.Unknown, codes.DataLoss}

// UnaryClientInterceptor guards every unary call of a connection with the
// named breaker; codes (default DefaultGRPCFailureCodes) count as failures.
func UnaryClientInterceptor(c *Client, name string, failureCodes ...codes.Code) grpc.UnaryClientInterceptor {
	if len(failureCodes) == 0 {
		failureCodes = DefaultGRPCFailureCodes
	}
	failing := map[codes.Code]bool{}
	for _, code := range failureCodes {
		failing[code] = true
	}
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		p, err := c.Breaker(name).Begin()
		if err != nil {
			return status.Error(codes.Unavailable, err.Error())
		}
		err = invoker(ctx, method, req, reply, cc, opts...)
		switch code := status.Code(err); {
		case err == nil, !failing[code]:
			p.End(nil)
		case code == codes.Canceled || ctx.Err() == context.Canceled:
			p.End(context.Canceled)
		default:
			p.End(err)
		}
		return err
	}
}
