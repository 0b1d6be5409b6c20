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
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/tlsconf"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
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
	// mdIdentity carries the caller's authenticated identity on a call a
	// node forwards; it is believed only from a peer that proved itself
	// with a node certificate.
	mdIdentity = "baldur-identity"
)

// identity is who made a call: Name is recorded as the actor, Role and
// Scopes bound what it may do (authz.go).
type identity struct {
	Name   string
	Role   pb.Role
	Scopes []string
	// JoinAs is the node id of a certificate from the peer CA whose node
	// is not a member (yet): it may add itself (authz.go).
	JoinAs string
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
	tokens        map[string]identity // static token → who
	keys          *tlsconf.KeySet     // token verification keys (signed tokens)
	verified      tokenCache
	anonLoopback  bool
	unauthMethods map[string]bool
}

func newAuthenticator(tokenFile string, keys *tlsconf.KeySet, dev bool) (*authenticator, error) {
	a := &authenticator{keys: keys, anonLoopback: dev || (tokenFile == "" && keys == nil), unauthMethods: map[string]bool{
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

// loadTokens reads "name token [role]" lines (role default admin, as
// before roles existed); '#' starts a comment.
func loadTokens(path string) (map[string]identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]identity{}
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 2 && len(fields) != 3 {
			return nil, fmt.Errorf("%s:%d: want 'name token [role]'", path, line)
		}
		if len(fields[1]) < 16 {
			return nil, fmt.Errorf("%s:%d: token for %q is shorter than 16 characters", path, line, fields[0])
		}
		role := pb.Role_ADMIN
		if len(fields) == 3 {
			r, err := parseRole(fields[2])
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %v", path, line, err)
			}
			role = r
		}
		out[fields[1]] = identity{Name: fields[0], Role: role}
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
		if a.keys != nil && strings.Count(token, ".") == 2 {
			return a.verifySigned(token)
		}
		for t, id := range a.tokens {
			if subtle.ConstantTimeCompare([]byte(t), []byte(token)) == 1 {
				return id, nil
			}
		}
		if !a.anonLoopback || len(a.tokens) > 0 || a.keys != nil {
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
	return identity{Name: "anonymous", Role: pb.Role_ADMIN}, nil
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

// mapErrors turns errors into statuses (errors.go) and counts each call
// by method and code.
func (s *Server) mapErrors(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	err = toStatus(s.log, err)
	if s.metrics != nil {
		method := strings.TrimPrefix(info.FullMethod[strings.LastIndexByte(info.FullMethod[:strings.LastIndexByte(info.FullMethod, '/')], '.')+1:], "/")
		s.metrics.rpcs.WithLabelValues(method, status.Code(err).String()).Inc()
		s.metrics.rpcDuration.WithLabelValues(method).Observe(time.Since(start).Seconds())
	}
	return resp, err
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
	id, err := s.resolve(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.authorize(ctx, info.FullMethod, req, id); err != nil {
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
	if s.auth.unauthMethods[info.FullMethod] {
		return handler(srv, ss)
	}
	id, err := s.resolve(ss.Context())
	if err != nil {
		return toStatus(s.log, err)
	}
	if err := s.authorize(ss.Context(), info.FullMethod, nil, id); err != nil {
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

// resolve is the caller's identity: on a call another node forwarded over
// mutual TLS, the identity that node authenticated; otherwise a bearer
// token, then a client certificate from the client CA, then anonymous on
// loopback (authenticator.resolve).
func (s *Server) resolve(ctx context.Context) (identity, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if node := s.peerIdentity(ctx); node != "" {
		if fwd := first(md, mdIdentity); fwd != "" {
			return decodeIdentity(fwd)
		}
		if first(md, mdAuthorization) == "" {
			return identity{Name: "system:" + node, Role: pb.Role_ADMIN}, nil
		}
	}
	if first(md, mdAuthorization) == "" {
		id, ok := s.clientCertIdentity(ctx)
		if node := s.nodeCertName(ctx); node != "" {
			if !ok {
				id, ok = identity{Name: node, Role: pb.Role_VIEWER}, true
			}
			id.JoinAs = node
		}
		if ok {
			return id, nil
		}
	}
	return s.auth.resolve(ctx)
}

// forwardContext carries the caller's credentials, identity and origin to
// another node, so the leader resolves the same identity.
func forwardContext(ctx context.Context) context.Context {
	in, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	if id := identityFrom(ctx); id.Name != "" {
		out.Set(mdIdentity, encodeIdentity(id))
	}
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
