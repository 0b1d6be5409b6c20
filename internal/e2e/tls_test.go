package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/tlsconf"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func tlsFlags(dir string) func(p *proc) []string {
	return func(p *proc) []string {
		node, key, ca := filepath.Join(dir, p.id+".pem"), filepath.Join(dir, p.id+"-key.pem"), filepath.Join(dir, "ca.pem")
		return []string{"--cert-file", node, "--key-file", key, "--client-ca-file", ca,
			"--peer-cert-file", node, "--peer-key-file", key, "--peer-ca-file", ca}
	}
}

// A 3-node cluster under mutual TLS, made with `baldurctl certs init`'s
// files: the SDK, baldurctl and REST work with the CA and a client
// certificate (the audited actor is the certificate's subject); a plain
// client, a plain-TCP Raft peer, a Raft peer or joining node from another
// CA, and a valid API client certificate calling the internal service are
// all refused, and none of them changes anything.
func TestMutualTLSCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	dir, other := t.TempDir(), t.TempDir()
	if _, err := tlsconf.Init(tlsconf.InitOptions{Dir: dir, Nodes: []string{"n1", "n2", "n3", "n4"}, Hosts: []string{"127.0.0.1", "localhost"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := tlsconf.Init(tlsconf.InitOptions{Dir: other, Nodes: []string{"n1", "n4"}, Hosts: []string{"127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	// Tokens are required (no anonymous callers): the client certificate
	// (role admin, from its organizational unit) or a token names the caller.
	tokens := filepath.Join(dir, "tokens")
	const viewerToken, operatorToken = "dashboard-token-0123456789", "oncall-token-0123456789"
	if err := os.WriteFile(tokens, []byte("dashboard "+viewerToken+" viewer\noncall "+operatorToken+" operator\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := startClusterWith(t, 3, func(p *proc) []string {
		return append(tlsFlags(dir)(p), "--token-file", tokens, "--promote-stabilization", "1s")
	})
	cfg, err := baldur.TLSConfig(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	endpoints := c.nodes[0].grpc + "," + c.nodes[1].grpc + "," + c.nodes[2].grpc
	conn, err := baldur.NewConn(c.nodes[1].grpc, baldur.TLSDialOption(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	em := pb.NewEmergencyServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var trig *pb.TriggerEmergencyResponse
	if !eventually(20*time.Second, func() bool {
		trig, err = em.TriggerEmergency(ctx, &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_1, Reason: "mtls"})
		return err == nil
	}) {
		t.Fatalf("trigger through a follower over mTLS: %v", err)
	}
	if trig.State.ActivatedBy != "admin" {
		t.Fatalf("actor %q, want the client certificate's subject", trig.State.ActivatedBy)
	}

	// The SDK, over TLS to all three.
	sdk, err := baldur.Dial(ctx, endpoints, baldur.WithTLS(cfg), baldur.WithSpoolDir(t.TempDir(), 10))
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()
	if err := sdk.WaitReady(ctx); err != nil || !eventually(5*time.Second, func() bool { return sdk.Emergency().Level() == baldur.Level1 }) {
		t.Fatalf("SDK over TLS: %v, level %v", err, sdk.Emergency().Level())
	}

	// Outcome reports through a follower reach the leader merged, over the
	// peers-only Internal.IngestReports under mutual TLS.
	li := c.tlsLeader(ctx, conn)
	fconn, err := baldur.NewConn(c.nodes[(li+1)%3].grpc, baldur.TLSDialOption(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer fconn.Close()
	rep, err := pb.NewCircuitServiceClient(fconn).ReportOutcomes(ctx, &pb.ReportOutcomesRequest{InstanceId: "tls-1", Reports: []*pb.OutcomeReport{{Name: "tls-reported", Successes: 1}}})
	if err != nil || len(rep.Registered) != 1 || rep.Registered[0] != "tls-reported" {
		t.Fatalf("report through a follower over mTLS: %v %v", rep, err)
	}

	// baldurctl with --cacert/--cert/--key.
	ctl := buildCtl(t)
	out, err := exec.Command(ctl, "--addr", c.nodes[2].grpc, "--cacert", filepath.Join(dir, "ca.pem"), "--cert", filepath.Join(dir, "client.pem"),
		"--key", filepath.Join(dir, "client-key.pem"), "emergency", "status").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "LEVEL_1") {
		t.Fatalf("baldurctl over TLS: %v\n%s", err, out)
	}
	// REST with the CA and a token (curl --cacert ca.pem -H "Authorization: Bearer $T").
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cfg.RootCAs}}}
	rest := func(method, path, tok, body string) (int, string) {
		req, _ := http.NewRequest(method, "https://"+c.nodes[0].http+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := rest("GET", "/v1/emergency", viewerToken, ""); code != 200 || !strings.Contains(body, "LEVEL_1") {
		t.Fatalf("REST over TLS with a viewer token: %d %s", code, body)
	}
	if code, body := rest("GET", "/v1/emergency", "", ""); code != 401 {
		t.Fatalf("REST over TLS without a token: %d %s", code, body)
	}
	if code, body := rest("POST", "/v1/emergency:release", viewerToken, `{"reason":"r","force":true}`); code != 403 || !strings.Contains(body, "requires role operator") {
		t.Fatalf("REST write as viewer: %d %s", code, body)
	}

	// Refused: a plaintext API client.
	plain, _ := baldur.NewConn(c.nodes[0].grpc)
	defer plain.Close()
	if _, err := pb.NewEmergencyServiceClient(plain).GetEmergency(ctx, &pb.GetEmergencyRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext client: %v", err)
	}
	// Refused: a valid API client certificate calling the internal service.
	cmd := &raftv1.Command{Actor: "x", Version: 1, Reason: "forged", Body: &raftv1.Command_EmergencyTrigger{EmergencyTrigger: &raftv1.EmergencyTrigger{Level: 3}}}
	data, _ := proto.Marshal(cmd)
	_, err = raftv1.NewInternalClient(conn).Apply(ctx, &raftv1.ApplyRequest{Command: data})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "peer") {
		t.Fatalf("client certificate on the internal service: %v", err)
	}
	tokConn, _ := baldur.NewConn(c.nodes[0].grpc, baldur.TLSDialOption(&tls.Config{RootCAs: cfg.RootCAs}))
	defer tokConn.Close()
	_, err = raftv1.NewInternalClient(tokConn).Apply(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+operatorToken), &raftv1.ApplyRequest{Command: data})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a valid token on the internal service: %v", err)
	}

	// Refused: Raft spoken in plain TCP, and with another CA's node
	// certificate, by a "leader" with a higher term.
	leaderRaft := c.nodes[li].raft
	for name, stream := range map[string]raft.StreamLayer{
		"plain TCP":       plainStream(t),
		"another CA's n1": tlsStream(t, other, "n1"),
	} {
		trans := raft.NewNetworkTransport(stream, 1, 2*time.Second, io.Discard)
		var out raft.AppendEntriesResponse
		err := trans.AppendEntries("n1", raft.ServerAddress(leaderRaft), &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ID: []byte("n1"), Addr: []byte(stream.Addr().String())}, Term: 1 << 40, PrevLogEntry: 0, PrevLogTerm: 0,
			Entries: []*raft.Log{{Index: 1000, Term: 1 << 40, Type: raft.LogCommand, Data: data}}, LeaderCommitIndex: 1000}, &out)
		trans.Close()
		if err == nil {
			t.Fatalf("%s: a forged AppendEntries was answered (success %v)", name, out.Success)
		}
		t.Logf("%s Raft peer refused: %v", name, err)
	}

	// Refused: a node with another CA's certificate asking to join.
	p := &proc{id: "n4", dir: t.TempDir(), grpc: freePort(t), http: freePort(t), raft: freePort(t)}
	n4 := exec.Command(c.bin, "--node-id", "n4", "--data-dir", filepath.Join(p.dir, "data"), "--grpc-addr", p.grpc, "--http-addr", p.http,
		"--raft-addr", p.raft, "--join", c.nodes[0].grpc, "--audit-key-file", c.auditKey)
	n4.Args = append(n4.Args, tlsFlags(other)(p)...)
	logf, _ := os.Create(filepath.Join(p.dir, "log"))
	n4.Stdout, n4.Stderr = logf, logf
	if err := n4.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { n4.Process.Kill(); n4.Wait() }()
	time.Sleep(3 * time.Second)
	cl, err := pb.NewClusterServiceClient(conn).GetCluster(ctx, &pb.GetClusterRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cl.Members) != 3 {
		t.Fatalf("a node from another CA joined: %v", cl.Members)
	}
	if log, _ := os.ReadFile(filepath.Join(p.dir, "log")); !strings.Contains(string(log), "cluster.join_failed") {
		t.Fatalf("the node from another CA did not report a refused join:\n%s", log)
	}
	st, err := em.GetEmergency(ctx, &pb.GetEmergencyRequest{})
	if err != nil || st.State.Level != pb.EmergencyLevel_LEVEL_1 || st.State.Reason != "mtls" {
		t.Fatalf("state after the refused attempts: %v %v", st, err)
	}
	n4.Process.Kill()

	// Admitted: n4 with this cluster's certificate joins as a staged
	// non-voter and is promoted once the leader saw it keep up (the
	// leader asks it over the peers-only Internal service, under mTLS).
	p = &proc{id: "n4", dir: t.TempDir(), grpc: freePort(t), http: freePort(t), raft: freePort(t)}
	good := exec.Command(c.bin, "--node-id", "n4", "--data-dir", filepath.Join(p.dir, "data"), "--grpc-addr", p.grpc, "--http-addr", p.http,
		"--raft-addr", p.raft, "--join", c.nodes[0].grpc, "--audit-key-file", c.auditKey)
	good.Args = append(good.Args, tlsFlags(dir)(p)...)
	logf, _ = os.Create(filepath.Join(p.dir, "log"))
	good.Stdout, good.Stderr = logf, logf
	if err := good.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { good.Process.Kill(); good.Wait() }()
	if !eventually(30*time.Second, func() bool {
		cl, err = pb.NewClusterServiceClient(conn).GetCluster(ctx, &pb.GetClusterRequest{})
		for _, m := range cl.GetMembers() {
			if m.Id == "n4" && m.Suffrage == pb.Member_VOTER && m.RaftAddr == p.raft {
				return true
			}
		}
		return false
	}) {
		log, _ := os.ReadFile(filepath.Join(p.dir, "log"))
		t.Fatalf("n4 with this cluster's certificate was not promoted: %v %v\n%s", cl, err, log)
	}
}

// tlsLeader is the index of the node the cluster reports leading.
func (c *cluster) tlsLeader(ctx context.Context, conn *grpc.ClientConn) int {
	c.t.Helper()
	cl, err := pb.NewClusterServiceClient(conn).GetCluster(ctx, &pb.GetClusterRequest{})
	if err != nil {
		c.t.Fatal(err)
	}
	for i, p := range c.nodes {
		if p.id == cl.LeaderId {
			return i
		}
	}
	c.t.Fatalf("no leader in %v", cl)
	return -1
}

func buildCtl(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "baldurctl")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/baldurhq/baldurd/cmd/baldurctl").CombinedOutput(); err != nil {
		t.Fatalf("build baldurctl: %v\n%s", err, out)
	}
	return bin
}

// plainStream is raft's own TCP stream layer.
func plainStream(t *testing.T) raft.StreamLayer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &dialStream{Listener: l}
}

// tlsStream dials with node's certificate from dir's CA.
func tlsStream(t *testing.T, dir, node string) raft.StreamLayer {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, node+".pem"), filepath.Join(dir, node+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &dialStream{Listener: l, tls: &tls.Config{Certificates: []tls.Certificate{pair}, InsecureSkipVerify: true}}
}

type dialStream struct {
	net.Listener
	tls *tls.Config
}

func (d *dialStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil || d.tls == nil {
		return c, err
	}
	tc := tls.Client(c, d.tls)
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// Node certificates renewed on disk while writes run are served from then
// on without a restart, and no acknowledged write is lost.
func TestCertificateRotationDuringWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	dir := t.TempDir()
	hosts := []string{"127.0.0.1", "localhost"}
	if _, err := tlsconf.Init(tlsconf.InitOptions{Dir: dir, Nodes: []string{"n1", "n2", "n3"}, Hosts: hosts}); err != nil {
		t.Fatal(err)
	}
	c := startClusterWith(t, 3, tlsFlags(dir))
	cfg, err := baldur.TLSConfig(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := baldur.NewConn(c.nodes[0].grpc+","+c.nodes[1].grpc+","+c.nodes[2].grpc, baldur.TLSDialOption(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	em := pb.NewEmergencyServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	served := func(p *proc) string {
		tc, err := tls.Dial("tcp", p.grpc, &tls.Config{RootCAs: cfg.RootCAs, ServerName: "127.0.0.1", NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatalf("TLS dial %s: %v", p.id, err)
		}
		defer tc.Close()
		return tc.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	if !eventually(20*time.Second, func() bool {
		_, err := em.TriggerEmergency(ctx, &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_1, Reason: "up"})
		return err == nil
	}) {
		t.Fatal("the TLS cluster did not take a write")
	}
	before := map[string]string{}
	for _, p := range c.nodes {
		before[p.id] = served(p)
	}

	stop := make(chan struct{})
	acked := make(chan int, 1)
	go func() {
		n := 0
		for i := 0; ; i++ {
			select {
			case <-stop:
				acked <- n
				return
			default:
			}
			if _, err := em.TriggerEmergency(ctx, &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_Value(1 + i%3), Reason: "rotation"}); err == nil {
				n++
			}
		}
	}()
	time.Sleep(time.Second)
	for _, p := range c.nodes {
		if err := tlsconf.IssueNode(dir, dir, p.id, hosts, 24*time.Hour); err != nil {
			t.Fatal(err)
		}
		time.Sleep(700 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	close(stop)
	n := <-acked
	for _, p := range c.nodes {
		if after := served(p); after == before[p.id] {
			t.Errorf("%s still serves the certificate it started with", p.id)
		}
	}
	if n < 20 {
		t.Fatalf("only %d writes acknowledged during the rotation", n)
	}
	// Every acknowledged write is in the audit trail (each changed the level).
	au := pb.NewAuditServiceClient(conn)
	got, token := 0, ""
	for {
		page, err := au.ListAudit(ctx, &pb.ListAuditRequest{Action: "emergency.trigger", PageSize: 1000, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Records {
			if r.Reason == "rotation" {
				got++
			}
		}
		if token = page.NextPageToken; token == "" {
			break
		}
	}
	if got < n {
		t.Fatalf("%d writes acknowledged, %d in the audit trail", n, got)
	}
	t.Logf("%d writes acknowledged across the rotation of three node certificates", n)
}
