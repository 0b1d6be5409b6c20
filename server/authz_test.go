package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/internal/token"
	"github.com/baldurhq/baldurd/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

var roleOrder = map[string]int{"viewer": 1, "service": 2, "operator": 3, "admin": 4}

// The role matrix, generated from the service descriptors: every public
// method is called with a token of each role; a role below the method's
// declared one gets PERMISSION_DENIED naming the role required, any other
// gets past authorization (to whatever the empty request then earns).
func TestRoleMatrixForEveryRPC(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	dir := t.TempDir()
	tokens := map[string]string{}
	var lines []string
	for role := range roleOrder {
		tokens[role] = "tok-" + role + "-0123456789abcdef"
		lines = append(lines, role+"-caller "+tokens[role]+" "+role)
	}
	file := filepath.Join(dir, "tokens")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	c := testcluster.New(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.TokenFile = file; cfg.EnablePprof = true }))
	conn := dial(t, c.Leader().GRPCAddr)
	checked := 0
	protoregistry.GlobalFiles.RangeFilesByPackage("baldur.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				md := sd.Methods().Get(j)
				opts, _ := proto.GetExtension(md.Options(), pb.E_Rpc).(*pb.RPCOptions)
				need := strings.ToLower(opts.GetRole().String())
				method := "/" + string(sd.FullName()) + "/" + string(md.Name())
				for role, tok := range tokens {
					err := callEmpty(t, conn, md, method, tok)
					denied := status.Code(err) == codes.PermissionDenied
					if roleOrder[role] < roleOrder[need] {
						if !denied || !strings.Contains(status.Convert(err).Message(), "requires role "+need) {
							t.Errorf("%s as %s: %v, want PERMISSION_DENIED naming %s", method, role, err, need)
						}
					} else if denied {
						t.Errorf("%s as %s (needs %s): denied: %v", method, role, need, err)
					}
					checked++
				}
			}
		}
		return true
	})
	if checked < 4*40 {
		t.Fatalf("only %d calls checked", checked)
	}
	// A call without any token is unauthenticated, not forbidden; so are
	// gRPC reflection and /metrics.
	if _, err := pb.NewEmergencyServiceClient(conn).GetEmergency(ctxT(t), &pb.GetEmergencyRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v", err)
	}
	refl, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctxT(t))
	if err == nil {
		_ = refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
		_, err = refl.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("reflection without a token: %v", err)
	}
	r := restClient{t: t, base: "http://" + c.Leader().HTTPAddr}
	if code, _, _ := r.doAs("GET", "/metrics", "", "", nil); code != 401 {
		t.Fatalf("/metrics without a token: %d", code)
	}
	if code, _, _ := r.doAs("GET", "/metrics", "", "", map[string]string{"Authorization": "Bearer " + tokens["viewer"]}); code != 200 {
		t.Fatalf("/metrics as viewer: %d", code)
	}
	// The profiler (--enable-pprof) is the admin's.
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/cmdline"} {
		if code, _, _ := r.doAs("GET", p, "", "", nil); code != 401 {
			t.Errorf("%s without a token: %d", p, code)
		}
		code, _, body := r.doAs("GET", p, "", "", map[string]string{"Authorization": "Bearer " + tokens["operator"]})
		if code != 403 || !strings.Contains(fmt.Sprint(body), "requires role admin") {
			t.Errorf("%s as operator: %d %v", p, code, body)
		}
		if code, _, _ := r.doAs("GET", p, "", "", map[string]string{"Authorization": "Bearer " + tokens["admin"]}); code != 200 {
			t.Errorf("%s as admin: %d", p, code)
		}
	}
}

// callEmpty calls method with an empty request as tok's holder.
func callEmpty(t *testing.T, conn *grpc.ClientConn, md protoreflect.MethodDescriptor, method, tok string) error {
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok), 5*time.Second)
	defer cancel()
	in, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
	if err != nil {
		t.Fatal(err)
	}
	outT, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		t.Fatal(err)
	}
	req, resp := in.New().Interface(), outT.New().Interface()
	if !md.IsStreamingClient() && !md.IsStreamingServer() {
		return conn.Invoke(ctx, method, req, resp)
	}
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: md.IsStreamingServer(), ClientStreams: md.IsStreamingClient()}, method)
	if err != nil {
		return err
	}
	if !md.IsStreamingClient() {
		if err := st.SendMsg(req); err != nil && err != io.EOF {
			return err
		}
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	err = st.RecvMsg(resp)
	if err == io.EOF {
		return nil
	}
	return err
}

// Signed tokens: verified with any of several public keys (rotation);
// expired, unknown-key and tampered tokens are unauthenticated and change
// nothing; a scoped service token reaches only its resources, and the
// denial is audited.
func TestSignedTokensWithRolesAndScopes(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	dir := t.TempDir()
	keyA, keyB, keyC := newKey(t), newKey(t), newKey(t)
	pubs := filepath.Join(dir, "keys.pem")
	if err := os.WriteFile(pubs, append(pemPub(t, keyA), pemPub(t, keyB)...), 0o600); err != nil {
		t.Fatal(err)
	}
	c := testcluster.New(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.TokenPublicKeys = pubs }))
	conn := dial(t, c.Leader().GRPCAddr)
	circuits := pb.NewCircuitServiceClient(conn)
	em := pb.NewEmergencyServiceClient(conn)
	as := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(ctxT(t), "authorization", "Bearer "+tok)
	}
	now := time.Now()
	sign := func(k ed25519.PrivateKey, subject, role string, ttl time.Duration, scopes ...string) string {
		tok, err := token.Sign(k, subject, role, scopes, ttl, now)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	// Both keys of the file verify.
	for name, k := range map[string]ed25519.PrivateKey{"A": keyA, "B": keyB} {
		resp, err := em.TriggerEmergency(as(sign(k, "oncall-"+name, "operator", time.Hour)), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_1, Reason: "key " + name})
		if err != nil || resp.State.ActivatedBy != "oncall-"+name {
			t.Fatalf("token signed with key %s: %v %v", name, resp, err)
		}
	}
	before, _ := em.GetEmergency(as(sign(keyA, "viewer", "viewer", time.Hour)), &pb.GetEmergencyRequest{})
	good := sign(keyA, "x", "admin", time.Hour)
	for name, tok := range map[string]string{
		"expired":     sign(keyA, "x", "admin", -time.Minute),
		"unknown key": sign(keyC, "x", "admin", time.Hour),
		"tampered":    good[:len(good)-4] + "AAAA",
		"not a token": "a.b.c",
	} {
		_, err := em.TriggerEmergency(as(tok), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_3, Reason: name})
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("%s token: %v, want UNAUTHENTICATED", name, err)
		}
	}
	if after, _ := em.GetEmergency(as(good), &pb.GetEmergencyRequest{}); after.State.Level != before.State.Level || after.Revision != before.Revision {
		t.Fatalf("refused tokens changed the state: %v → %v", before.State, after.State)
	}

	// A service token scoped to payments-* breakers.
	svc := sign(keyB, "payments-api", "service", time.Hour, "circuit:payments-*")
	if _, err := circuits.ReportOutcomes(as(svc), &pb.ReportOutcomesRequest{InstanceId: "i-1", Reports: []*pb.OutcomeReport{{Name: "payments-eu", Successes: 1}}}); err != nil {
		t.Fatalf("in scope: %v", err)
	}
	_, err := circuits.ReportOutcomes(as(svc), &pb.ReportOutcomesRequest{InstanceId: "i-1", Reports: []*pb.OutcomeReport{{Name: "payments-eu", Successes: 1}, {Name: "orders", Failures: 1}}})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "circuit:orders") {
		t.Fatalf("out of scope: %v", err)
	}
	// The same on the report stream: scopes hold per batch.
	st, err := circuits.StreamOutcomes(as(svc))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&pb.ReportOutcomesRequest{InstanceId: "i-1", Reports: []*pb.OutcomeReport{{Name: "payments-eu", Successes: 1}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("in scope on the stream: %v", err)
	}
	_ = st.Send(&pb.ReportOutcomesRequest{InstanceId: "i-1", Reports: []*pb.OutcomeReport{{Name: "orders", Failures: 1}}})
	if _, err := st.Recv(); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "circuit:orders") {
		t.Fatalf("out of scope on the stream: %v", err)
	}
	if _, err := circuits.ForceOpen(as(svc), &pb.ForceRequest{Name: "payments-eu", Reason: "r"}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "requires role operator") {
		t.Fatalf("service forcing a breaker: %v", err)
	}
	if _, err := circuits.GetCircuit(as(svc), &pb.GetCircuitRequest{Name: "orders"}); status.Code(err) == codes.PermissionDenied {
		t.Fatalf("reads are not scoped: %v", err)
	}
	if !testcluster.Eventually(5*time.Second, func() bool {
		recs, err := pb.NewAuditServiceClient(conn).ListAudit(as(good), &pb.ListAuditRequest{Action: "authorization_denied"})
		if err != nil {
			return false
		}
		for _, r := range recs.Records {
			if r.Actor == "payments-api" && strings.Contains(r.Reason, "circuit:orders") {
				return true
			}
		}
		return false
	}) {
		t.Fatal("the scope denial is not in the audit trail")
	}
}

func newKey(t *testing.T) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemPub(t *testing.T, k ed25519.PrivateKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// A lease is released only by the identity that acquired it (naming its
// holder is not enough), or forced by an admin with a reason.
func TestLeaseRevokeTrustsTheCredentialNotTheHolderName(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "tokens")
	toks := map[string]string{"a": "tok-a-0123456789abcdef", "b": "tok-b-0123456789abcdef", "root": "tok-root-0123456789abcdef"}
	if err := os.WriteFile(file, []byte("svc-a "+toks["a"]+" service\nsvc-b "+toks["b"]+" service\nroot "+toks["root"]+" admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := testcluster.New(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.TokenFile = file }))
	co := pb.NewCoordinationServiceClient(dial(t, c.Leader().GRPCAddr))
	as := func(who string) context.Context {
		return metadata.AppendToOutgoingContext(ctxT(t), "authorization", "Bearer "+toks[who])
	}
	acquire := func() *pb.Lease {
		resp, err := co.AcquireLease(as("a"), &pb.AcquireLeaseRequest{Name: "billing", Holder: "h1", Ttl: durationOf(30 * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Lease
	}
	l := acquire()
	if _, err := co.RevokeLease(as("b"), &pb.RevokeLeaseRequest{Name: "billing", Id: l.Id, Holder: "h1"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("another identity naming the holder: %v", err)
	}
	if _, err := co.RevokeLease(as("b"), &pb.RevokeLeaseRequest{Name: "billing", Id: l.Id, Force: true, Reason: "mine now"}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "requires role admin") {
		t.Fatalf("a service forcing: %v", err)
	}
	if _, err := co.RevokeLease(as("a"), &pb.RevokeLeaseRequest{Name: "billing", Id: l.Id, Holder: "h1"}); err != nil {
		t.Fatalf("the owner releasing: %v", err)
	}
	l = acquire()
	if _, err := co.RevokeLease(as("root"), &pb.RevokeLeaseRequest{Name: "billing", Id: l.Id, Force: true}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("admin force without a reason: %v", err)
	}
	if _, err := co.RevokeLease(as("root"), &pb.RevokeLeaseRequest{Name: "billing", Id: l.Id, Force: true, Reason: "stuck holder"}); err != nil {
		t.Fatalf("admin force with a reason: %v", err)
	}
}
