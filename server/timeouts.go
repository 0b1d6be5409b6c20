package server

import (
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Timeouts on every listener, so idle, slow or abandoned connections do not
// hold memory and descriptors forever.

// streamingPath reports whether a REST route streams its answer (watches,
// snapshot download, batch replay) or its request (snapshot restore): they
// get no write deadline, or a long read deadline.
func streamingPath(path string) bool {
	return isStreamRoute(path) || path == "/v1/cluster/snapshot"
}

// withDeadlines gives each HTTP request a read deadline (the body must
// arrive within --http-read-timeout; a restore upload gets an hour) and,
// unless it streams, a write deadline (--http-write-timeout).
func (s *Server) withDeadlines(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		now := time.Now()
		read := s.cfg.HTTPReadTimeout
		if r.URL.Path == "/v1/cluster/snapshot:restore" {
			read = time.Hour
		}
		if read > 0 {
			_ = rc.SetReadDeadline(now.Add(read))
		}
		if s.cfg.HTTPWriteTimeout > 0 && !streamingPath(r.URL.Path) {
			_ = rc.SetWriteDeadline(now.Add(s.cfg.HTTPWriteTimeout))
		}
		next.ServeHTTP(w, r)
	})
}

// grpcKeepalive closes gRPC connections idle (no stream) for
// --grpc-max-connection-idle, pings quiet ones, and refuses clients that
// ping more often than every 10 s.
func (s *Server) grpcKeepalive() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: s.cfg.GRPCMaxConnectionIdle, Time: 2 * time.Minute, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
}
