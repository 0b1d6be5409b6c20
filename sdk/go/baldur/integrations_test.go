package baldur

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func TestRoundTripperCountsServerErrorsAndRejectsLocally(t *testing.T) {
	var hits, code atomic.Int32
	code.Store(404)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.WriteHeader(int(code.Load()))
	}))
	defer srv.Close()
	c := localClient(t)
	hc := &http.Client{Transport: RoundTripper(c, "partner-api", nil)}
	for i := 0; i < 10; i++ { // 404 is the request's fault, not the dependency's
		resp, err := hc.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if c.Breaker("partner-api").LocalState() != StateClosed {
		t.Fatal("4xx responses tripped the breaker")
	}
	code.Store(503)
	for i := 0; i < 5; i++ {
		resp, err := hc.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	before := hits.Load()
	_, err := hc.Get(srv.URL)
	if !errors.Is(err, ErrCircuitOpen) || hits.Load() != before {
		t.Fatalf("after 5 × 503: err %v, server hit %d more times", err, hits.Load()-before)
	}
}

func TestUnaryClientInterceptor(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	gs := grpc.NewServer(grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error {
		calls.Add(1)
		return status.Error(codes.Unavailable, "dependency down")
	}))
	go gs.Serve(ln)
	defer gs.Stop()
	c := localClient(t)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(UnaryClientInterceptor(c, "inventory")))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	for i := 0; i < 5; i++ {
		if _, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	_, err = hc.Check(context.Background(), &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unavailable || calls.Load() != 5 {
		t.Fatalf("after 5 failures: %v; server saw %d calls, want 5", err, calls.Load())
	}
}
