package server

import (
	"bufio"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

var errUnauthenticated = errors.New("server: unauthenticated")

// Metadata keys.
const (
	mdAuthorization = "authorization"
	mdRequestID     = "baldur-request-id"
	// mdOrigin carries the original caller's address on forwarded calls.
	mdOrigin = "baldur-origin-addr"
	// mdForwardedFor is what the REST gateway sets from the HTTP peer.
	mdForwardedFor = "x-forwarded-for"
)

// identity is who made a call; Name is recorded as the actor.
type identity struct {
	Name string
}

type identityKey struct{}

func withIdentity(ctx context.Context, id identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

func identityFrom(ctx context.Context) identity {
	id, _ := ctx.Value(identityKey{}).(identity)
	return id
}

// authenticator resolves the caller of every gRPC call (and so of every
// REST call, which the gateway turns into a gRPC call). With a token file,
// a valid bearer token is required, except that --dev still admits
// anonymous callers on loopback. Without a token file, anonymous callers
// are admitted on loopback only.
type authenticator struct {
	tokens        map[string]string // token → name
	anonLoopback  bool
	unauthMethods map[string]bool
}

func newAuthenticator(tokenFile string, dev bool) (*authenticator, error) {
	a := &authenticator{anonLoopback: dev || tokenFile == "", unauthMethods: map[string]bool{
		"/grpc.health.v1.Health/Check": true,
		"/grpc.health.v1.Health/Watch": true,
		"/grpc.health.v1.Health/List":  true,
	}}
	if tokenFile != "" {
		t, err := loadTokens(tokenFile)
		if err != nil {
			return nil, err
		}
		a.tokens = t
	}
	return a, nil
}

// loadTokens reads "name token" lines; '#' starts a comment.
func loadTokens(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 2 {
			return nil, fmt.Errorf("%s:%d: want 'name token'", path, line)
		}
		if len(fields[1]) < 16 {
			return nil, fmt.Errorf("%s:%d: token for %q is shorter than 16 characters", path, line, fields[0])
		}
		out[fields[1]] = fields[0]
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no tokens", path)
	}
	return out, nil
}

func isLoopback(addr string) bool {
	addr = strings.TrimSpace(addr)
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	ip, err := netip.ParseAddr(strings.Trim(addr, "[]"))
	return err == nil && ip.IsLoopback()
}

func (a *authenticator) resolve(ctx context.Context) (identity, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if auth := first(md, mdAuthorization); auth != "" {
		token, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok {
			return identity{}, fmt.Errorf("%w: authorization must be 'Bearer <token>'", errUnauthenticated)
		}
		for t, name := range a.tokens {
			if subtle.ConstantTimeCompare([]byte(t), []byte(token)) == 1 {
				return identity{Name: name}, nil
			}
		}
		if !a.anonLoopback || len(a.tokens) > 0 {
			return identity{}, fmt.Errorf("%w: unknown bearer token", errUnauthenticated)
		}
	}
	if !a.anonLoopback {
		return identity{}, fmt.Errorf("%w: a bearer token is required", errUnauthenticated)
	}
	// Every hop the call has taken must be loopback.
	addrs := []string{}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		addrs = append(addrs, p.Addr.String())
	} else {
		return identity{}, fmt.Errorf("%w: caller address unknown", errUnauthenticated)
	}
	if fwd := first(md, mdForwardedFor); fwd != "" {
		parts := strings.Split(fwd, ",")
		addrs = append(addrs, parts[len(parts)-1])
	}
	if o := first(md, mdOrigin); o != "" {
		addrs = append(addrs, o)
	}
	for _, ad := range addrs {
		if !isLoopback(ad) {
			return identity{}, fmt.Errorf("%w: anonymous access is allowed from loopback only (caller %s); present a bearer token", errUnauthenticated, strings.TrimSpace(ad))
		}
	}
	return identity{Name: "anonymous"}, nil
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// The unary interceptors run in this order (server.go chains them), each
// with one concern: mapErrors (outermost: every error leaves as a status
// with a stable reason), checkDecoded (a request the codec refused),
// authenticate (the caller's identity), forwardToLeader (leader-only
// methods, declared in api/proto, go to the leader).

func (s *Server) mapErrors(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	return resp, toStatus(s.log, err)
}

func checkDecoded(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := takeBadRequest(req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (s *Server) authenticate(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if s.auth.unauthMethods[info.FullMethod] {
		return handler(ctx, req)
	}
	if strings.HasPrefix(info.FullMethod, internalPrefix) {
		if err := s.checkPeer(ctx); err != nil {
			return nil, err
		}
	}
	id, err := s.auth.resolve(ctx)
	if err != nil {
		return nil, err
	}
	return handler(withIdentity(ctx, id), req)
}

func (s *Server) forwardToLeader(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if leaderOnly[info.FullMethod] {
		if resp, handled, err := s.forwardUnary(ctx, info.FullMethod, req); handled {
			return resp, err
		}
	}
	return handler(ctx, req)
}

type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w identityStream) Context() context.Context { return w.ctx }

func (s *Server) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ss = checkedStream{ss}
	if s.auth.unauthMethods[info.FullMethod] || strings.HasPrefix(info.FullMethod, "/grpc.reflection.") {
		return handler(srv, ss)
	}
	id, err := s.auth.resolve(ss.Context())
	if err != nil {
		return toStatus(s.log, err)
	}
	return toStatus(s.log, handler(srv, identityStream{ServerStream: ss, ctx: withIdentity(ss.Context(), id)}))
}

// forwardStreamToLeader sends leader-only streaming calls (declared in
// api/proto) to the leader; it runs inside streamAuth.
func (s *Server) forwardStreamToLeader(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if leaderOnly[info.FullMethod] {
		if handled, err := s.forwardStream(ss.Context(), info.FullMethod, info, ss); handled {
			return err
		}
	}
	return handler(srv, ss)
}

// forwardContext carries the caller's credentials and origin to another
// node, so the leader resolves the same identity.
func forwardContext(ctx context.Context) context.Context {
	in, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for _, k := range []string{mdAuthorization, mdRequestID} {
		if v := first(in, k); v != "" {
			out.Set(k, v)
		}
	}
	origin := ""
	if fwd := first(in, mdForwardedFor); fwd != "" {
		parts := strings.Split(fwd, ",")
		origin = strings.TrimSpace(parts[len(parts)-1])
	} else if o := first(in, mdOrigin); o != "" {
		origin = o
	} else if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		origin = p.Addr.String()
	}
	if origin != "" {
		out.Set(mdOrigin, origin)
	}
	return metadata.NewOutgoingContext(ctx, out)
}
