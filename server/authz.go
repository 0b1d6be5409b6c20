package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/token"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Authorization: every public method declares the least role it needs, and
// the resource a scoped credential must cover, next to the API
// (`option (baldur.v1.rpc) = {role: OPERATOR, scope: "circuit:name"}`).
// Roles are ordered viewer < service < operator < admin.

var errPermissionDenied = errors.New("server: permission denied")

// methodRule is what a method requires.
type methodRule struct {
	role      pb.Role
	kind      string   // the scope kind ("circuit"), "" for none
	fieldPath []string // the request field holding the resource ("entry", "domain")
}

// methodRules is every public method's rule, read from the descriptors.
var methodRules = readMethodRules()

func readMethodRules() map[string]methodRule {
	out := map[string]methodRule{}
	protoregistry.GlobalFiles.RangeFilesByPackage("baldur.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				md := sd.Methods().Get(j)
				o, _ := proto.GetExtension(md.Options(), pb.E_Rpc).(*pb.RPCOptions)
				r := methodRule{role: o.GetRole()}
				if kind, field, ok := strings.Cut(o.GetScope(), ":"); ok {
					r.kind, r.fieldPath = kind, strings.Split(field, ".")
				}
				out["/"+string(sd.FullName())+"/"+string(md.Name())] = r
			}
		}
		return true
	})
	return out
}

func parseRole(s string) (pb.Role, error) {
	r, ok := pb.Role_value[strings.ToUpper(strings.TrimSpace(s))]
	if !ok || r == 0 {
		return 0, fmt.Errorf("role %q: use viewer, service, operator or admin", s)
	}
	return pb.Role(r), nil
}

func roleName(r pb.Role) string { return strings.ToLower(r.String()) }

// authorize decides whether id may call method with req (nil for a stream,
// whose requests are not seen here: streams declare no scope).
func (s *Server) authorize(ctx context.Context, method string, req any, id identity) error {
	rule, ok := methodRules[method]
	if !ok {
		return nil // health, reflection (authenticated), the internal service (peers only)
	}
	if id.JoinAs != "" && method == methodAddMember {
		if r, ok := req.(*pb.AddMemberRequest); ok && r.Id == id.JoinAs {
			return nil // a node certificate from the peer CA adds its own node
		}
	}
	if id.Role < rule.role {
		return s.deny(ctx, id, method, fmt.Sprintf("%s requires role %s; %s has %s", shortMethod(method), roleName(rule.role), id.Name, roleName(id.Role)))
	}
	if len(id.Scopes) == 0 || rule.kind == "" {
		return nil
	}
	m, ok := req.(proto.Message)
	if !ok {
		return nil
	}
	values := fieldValues(m.ProtoReflect(), rule.fieldPath)
	if len(values) == 0 {
		return s.deny(ctx, id, method, fmt.Sprintf("%s with a scoped credential must name the %s (%s)", shortMethod(method), rule.kind, strings.Join(rule.fieldPath, ".")))
	}
	for _, v := range values {
		if !token.Covers(id.Scopes, rule.kind, v) {
			return s.deny(ctx, id, method, fmt.Sprintf("%s on %s:%s needs a scope covering it; %s has %s", shortMethod(method), rule.kind, v, id.Name, strings.Join(id.Scopes, ",")))
		}
	}
	return nil
}

// methodAddMember may be called by a node with a certificate from the peer
// CA for itself (its common name is the id it asks to add), whatever its
// role: the peer CA is what makes a machine a node (Consul, Nomad).
var methodAddMember = "/" + string(pb.ClusterService_ServiceDesc.ServiceName) + "/AddMember"

func shortMethod(m string) string { return m[strings.LastIndexByte(m, '/')+1:] }

// fieldValues collects the string values at a field path of m (through
// repeated messages and repeated strings).
func fieldValues(m protoreflect.Message, p []string) []string {
	fd := m.Descriptor().Fields().ByName(protoreflect.Name(p[0]))
	if fd == nil {
		return nil
	}
	var out []string
	add := func(v protoreflect.Value) {
		if len(p) == 1 {
			if s := v.String(); s != "" {
				out = append(out, s)
			}
			return
		}
		if fd.Message() != nil {
			out = append(out, fieldValues(v.Message(), p[1:])...)
		}
	}
	if fd.IsList() {
		l := m.Get(fd).List()
		for i := 0; i < l.Len(); i++ {
			add(l.Get(i))
		}
		return out
	}
	if fd.Message() != nil && !m.Has(fd) {
		return nil
	}
	add(m.Get(fd))
	return out
}

// deny answers PERMISSION_DENIED naming what was required, and records the
// denial in the audit trail (once a minute per caller and method, so a
// caller retrying in a loop cannot fill the log).
func (s *Server) deny(ctx context.Context, id identity, method, why string) error {
	if s.denials.first(id.Name + " " + method) {
		cmd := &raftv1.Command{Actor: orDefault(id.Name, "unauthenticated"), Reason: why, Version: 1,
			Body: &raftv1.Command_AuditNote{AuditNote: &raftv1.AuditNote{Action: "authorization_denied", Target: "rpc/" + shortMethod(method), Detail: why}}}
		// Recorded before the answer (once a minute per caller and method,
		// so the cost is rare), not by a goroutine left behind.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(s.nodeContext(ctx)), 2*time.Second)
		if _, err := s.writes.propose(pctx, cmd, anyNode); err != nil {
			s.log.Debug("audit.denial_note_failed", "err", err)
		}
		cancel()
	}
	s.log.Info("authz.denied", "actor", id.Name, "method", method, "why", why)
	return fmt.Errorf("%w: %s", errPermissionDenied, why)
}

// denialLog remembers which denials were audited in the last minute.
type denialLog struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

func (d *denialLog) first(key string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	if d.seen == nil || len(d.seen) > 4096 {
		d.seen = map[string]time.Time{}
	}
	if t, ok := d.seen[key]; ok && now.Sub(t) < time.Minute {
		return false
	}
	d.seen[key] = now
	return true
}

// verifySigned checks a signed token against the public keys of
// --token-public-keys. A verified token is remembered for up to a minute
// (never past its expiry), so a client sending the same token on every
// call pays the signature check about once a minute; a public key removed
// from the file stops admitting its tokens within that minute.
func (a *authenticator) verifySigned(tok string) (identity, error) {
	now := time.Now()
	if id, ok := a.verified.get(tok, now); ok {
		return id, nil
	}
	c, err := token.Verify(tok, a.keys.Keys())
	if err != nil {
		return identity{}, fmt.Errorf("%w: token: %v", errUnauthenticated, err)
	}
	role, _ := parseRole(c.Role)
	id := identity{Name: c.Subject, Role: role, Scopes: c.Scopes}
	until := now.Add(time.Minute)
	if c.ExpiresAt.Time.Before(until) {
		until = c.ExpiresAt.Time
	}
	a.verified.put(tok, id, until)
	return id, nil
}

// tokenCache remembers verified tokens until a deadline.
type tokenCache struct {
	mu sync.Mutex
	m  map[string]cachedToken
}

type cachedToken struct {
	id    identity
	until time.Time
}

func (c *tokenCache) get(tok string, now time.Time) (identity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[tok]
	if !ok || !now.Before(e.until) {
		return identity{}, false
	}
	return e.id, true
}

func (c *tokenCache) put(tok string, id identity, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= 10000 {
		c.m = map[string]cachedToken{} // bounded: start over rather than grow
	}
	c.m[tok] = cachedToken{id: id, until: until}
}

// encodeIdentity and decodeIdentity carry an identity on a forwarded call.
func encodeIdentity(id identity) string {
	b, _ := json.Marshal(struct {
		N string   `json:"n"`
		R int32    `json:"r"`
		S []string `json:"s,omitempty"`
		J string   `json:"j,omitempty"`
	}{id.Name, int32(id.Role), id.Scopes, id.JoinAs})
	return string(b)
}

func decodeIdentity(s string) (identity, error) {
	var v struct {
		N string   `json:"n"`
		R int32    `json:"r"`
		S []string `json:"s"`
		J string   `json:"j"`
	}
	if err := json.Unmarshal([]byte(s), &v); err != nil || v.N == "" {
		return identity{}, fmt.Errorf("%w: malformed forwarded identity", errUnauthenticated)
	}
	return identity{Name: v.N, Role: pb.Role(v.R), Scopes: v.S, JoinAs: v.J}, nil
}
