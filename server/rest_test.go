package server_test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
)

type restClient struct {
	t    *testing.T
	base string
}

func (r restClient) do(method, path, body string) (int, map[string]any) {
	r.t.Helper()
	contentType := "application/json"
	if strings.HasSuffix(path, "/snapshot:restore") {
		contentType = "application/octet-stream"
	}
	code, _, out := r.doAs(method, path, contentType, body, nil)
	return code, out
}

// doAs sends a request with the given Content-Type ("" for none) and extra
// headers, and returns the status, headers and JSON body.
func (r restClient) doAs(method, path, contentType, body string, headers map[string]string) (int, http.Header, map[string]any) {
	r.t.Helper()
	return testcluster.REST{T: r.t, Base: r.base}.DoAs(method, path, contentType, body, headers)
}

func dig(m map[string]any, path ...string) any { return testcluster.Dig(m, path...) }

func TestRESTEmergencyLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	r := restClient{t: t, base: "http://" + c.Nodes[0].HTTPAddr}

	code, body := r.do("POST", "/v1/emergency:trigger", `{"level":"LEVEL_2","reason":"payments outage","duration":"1800s","scope":"global"}`)
	if code != 200 || dig(body, "state", "level") != "LEVEL_2" || dig(body, "state", "active") != true {
		t.Fatalf("trigger: %d %v", code, body)
	}
	rev, _ := dig(body, "revision").(string)
	if rev == "" || rev == "0" {
		t.Fatalf("trigger returned no revision: %v", body)
	}
	code, body = r.do("GET", "/v1/emergency", "")
	if code != 200 || dig(body, "state", "reason") != "payments outage" || dig(body, "state", "expires_at") == nil || dig(body, "state", "revision") != rev {
		t.Fatalf("get: %d %v", code, body)
	}
	// Within the stabilization period a plain release is refused with 409.
	code, body = r.do("POST", "/v1/emergency:release", `{"reason":"recovered"}`)
	if code != http.StatusConflict || body["reason"] != "RECOVERY_BLOCKED" {
		t.Fatalf("release inside stabilization: %d %v, want 409 RECOVERY_BLOCKED", code, body)
	}
	code, body = r.do("POST", "/v1/emergency:release", `{"reason":"recovered","force":true}`)
	if code != 200 || dig(body, "state", "level") != "NORMAL" || dig(body, "state", "active") != false {
		t.Fatalf("forced release: %d %v", code, body)
	}
	code, body = r.do("GET", "/v1/emergency/history?limit=10", "")
	changes, _ := body["changes"].([]any)
	if code != 200 || len(changes) != 2 {
		t.Fatalf("history: %d %v", code, body)
	}
	if a := changes[0].(map[string]any)["action"]; a != "force_release" {
		t.Errorf("newest history action = %v, want force_release", a)
	}
	code, body = r.do("GET", "/v1/emergency?consistency=stale", "")
	if code != 200 || dig(body, "state", "level") != "NORMAL" {
		t.Fatalf("stale read: %d %v", code, body)
	}
	code, body = r.do("GET", "/v1/audit:verify", "")
	if code != 200 || body["ok"] != true {
		t.Fatalf("audit verify: %d %v", code, body)
	}
	code, body = r.do("GET", "/v1/cluster", "")
	if code != 200 || body["leader_id"] != "n1" || dig(body, "members") == nil {
		t.Fatalf("cluster: %d %v", code, body)
	}
	for _, p := range []string{"/livez", "/readyz", "/metrics", "/openapi.json"} {
		if code, _ := r.do("GET", p, ""); code != 200 {
			t.Errorf("GET %s = %d", p, code)
		}
	}
	if code, _ := r.do("GET", "/debug/pprof/", ""); code != 404 {
		t.Errorf("GET /debug/pprof/ without --enable-pprof = %d, want 404", code)
	}
}

func TestBadInputIsRefusedAndNothingApplied(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	r := restClient{t: t, base: "http://" + c.Nodes[0].HTTPAddr}
	before := contentHashes(t, c)[0]
	t.Logf("applied before: %d", c.Nodes[0].Store().AppliedIndex())
	huge := `{"level":"LEVEL_1","reason":"` + strings.Repeat("x", 2<<20) + `"}`
	cases := []struct {
		name, method, path, body string
		code                     int
		reason, field            string
	}{
		{"unknown level", "POST", "/v1/emergency:trigger", `{"level":"LEVEL_9","reason":"r"}`, 400, "INVALID_ARGUMENT", "level"},
		{"numeric level out of range", "POST", "/v1/emergency:trigger", `{"level":7,"reason":"r"}`, 400, "INVALID_LEVEL", "level"},
		{"NORMAL trigger", "POST", "/v1/emergency:trigger", `{"level":"NORMAL","reason":"r"}`, 400, "INVALID_LEVEL", "level"},
		{"empty reason", "POST", "/v1/emergency:trigger", `{"level":"LEVEL_1","reason":"  "}`, 400, "REASON_REQUIRED", "reason"},
		{"duration too short", "POST", "/v1/emergency:trigger", `{"level":"LEVEL_1","reason":"r","duration":"0.5s"}`, 400, "DURATION_OUT_OF_RANGE", "duration"},
		{"duration too long", "POST", "/v1/emergency:trigger", `{"level":"LEVEL_1","reason":"r","duration":"9999999s"}`, 400, "DURATION_OUT_OF_RANGE", "duration"},
		{"malformed duration", "POST", "/v1/emergency:trigger", `{"level":"LEVEL_1","reason":"r","duration":"soon"}`, 400, "INVALID_ARGUMENT", "duration"},
		{"bad scope", "POST", "/v1/emergency:trigger", `{"level":"LEVEL_1","reason":"r","scope":"Not A Scope!"}`, 400, "INVALID_SCOPE", "scope"},
		{"unknown field", "POST", "/v1/emergency:trigger", `{"level":"LEVEL_1","reason":"r","sevrity":1}`, 400, "INVALID_ARGUMENT", "sevrity"},
		{"malformed JSON", "POST", "/v1/emergency:trigger", `{"level":`, 400, "INVALID_ARGUMENT", ""},
		{"oversize body", "POST", "/v1/emergency:trigger", huge, 400, "REQUEST_TOO_LARGE", ""},
		{"release when normal", "POST", "/v1/emergency:release", `{"reason":"r","force":true}`, 400, "NOT_ACTIVE", ""},
		{"release without reason", "POST", "/v1/emergency:release", `{"force":true}`, 400, "REASON_REQUIRED", "reason"},
		{"history limit", "GET", "/v1/emergency/history?limit=1000", "", 400, "INVALID_ARGUMENT", "limit"},
		{"bad consistency", "GET", "/v1/emergency?consistency=eventual", "", 400, "INVALID_ARGUMENT", "consistency"},
		{"bad page token", "GET", "/v1/audit?page_token=zz", "", 400, "INVALID_PAGE_TOKEN", "page_token"},
		{"remove unknown member", "DELETE", "/v1/cluster/members/n9?reason=gone", "", 404, "MEMBER_NOT_FOUND", ""},
		{"remove without a reason", "DELETE", "/v1/cluster/members/n9", "", 400, "REASON_REQUIRED", "reason"},
		{"add member bad address", "POST", "/v1/cluster/members", `{"id":"n2","raft_addr":"nowhere","reason":"r"}`, 400, "INVALID_ARGUMENT", "raft_addr"},
		{"add member huge address", "POST", "/v1/cluster/members", `{"id":"n2","raft_addr":"` + strings.Repeat("a", 40000) + `:7402","reason":"r"}`, 400, "INVALID_ARGUMENT", "raft_addr"},
		{"add member without a reason", "POST", "/v1/cluster/members", `{"id":"n2","raft_addr":"127.0.0.1:9"}`, 400, "REASON_REQUIRED", "reason"},
		{"re-address a live member", "POST", "/v1/cluster/members", `{"id":"n1","raft_addr":"127.0.0.1:9","reason":"r"}`, 409, "MEMBER_EXISTS", ""},
		{"transfer to unknown", "POST", "/v1/cluster:transferLeadership", `{"id":"n9","reason":"r"}`, 404, "MEMBER_NOT_FOUND", ""},
		{"config out of range", "PUT", "/v1/emergency/config", `{"reason":"r","config":{"levels":[{"level":"LEVEL_1","admission":{"critical":2}},{"level":"LEVEL_2","admission":{}},{"level":"LEVEL_3","admission":{}}],"stabilization_period":"1s","level_step_delay":"1s","auto_duration":"60s"}}`, 400, "INVALID_CONFIG", "config.levels[LEVEL_1].critical"},
		{"restore garbage", "POST", "/v1/cluster/snapshot:restore", "not a snapshot", 400, "INVALID_SNAPSHOT", ""},
		{"unknown path", "GET", "/v1/nothing", "", 404, "NOT_FOUND", ""},
		{"negative duration", "POST", "/v1/dlq:purge", `{"confirm":true,"older_than":"-1s"}`, 400, "INVALID_ARGUMENT", "older_than"},
		{"cron that never fires", "POST", "/v1/jobs", `{"resource":"reports","name":"never","cron":"0 0 30 2 *"}`, 400, "INVALID_SCHEDULE", "cron"},
		{"unknown path outside /v1", "GET", "/nothing", "", 404, "NOT_FOUND", ""},
		{"wrong method", "DELETE", "/v1/emergency", "", 405, "METHOD_NOT_ALLOWED", ""},
		{"stream route, bad scope", "GET", "/v1/emergency:watch?scope=Bad%20Scope!", "", 400, "INVALID_SCOPE", "scope"},
		{"stream route, bad name", "GET", "/v1/elections/Bad%20Name:observe", "", 400, "INVALID_NAME", "name"},
		{"stream route, bad body", "POST", "/v1/dlq:replay", `{"domian":"x"}`, 400, "INVALID_ARGUMENT", "domian"},
		{"huge bad value quoted short", "POST", "/v1/emergency:trigger", `{"level":"LEVEL_1","reason":"r","scope":"` + strings.Repeat("X", 200000) + `"}`, 400, "INVALID_SCOPE", "scope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := restClient{t: t, base: r.base}.do(tc.method, tc.path, tc.body)
			if code != tc.code || body["reason"] != tc.reason {
				t.Fatalf("got %d %v, want %d reason %s", code, body, tc.code, tc.reason)
			}
			if tc.field != "" && body["field"] != tc.field {
				t.Errorf("field = %v, want %s", body["field"], tc.field)
			}
			if msg, _ := body["message"].(string); msg == "" || len(msg) > 600 {
				t.Errorf("message of %d bytes in %v", len(msg), body)
			}
		})
	}
	if after := contentHashes(t, c)[0]; after != before {
		_, aud := r.do("GET", "/v1/audit", "")
		t.Fatalf("refused requests changed the state (applied %d): %v", c.Nodes[0].Store().AppliedIndex(), aud)
	}
	if code, _ := r.do("GET", "/livez", ""); code != 200 {
		t.Fatal("server stopped serving after bad input")
	}
}

func TestMalformedAndOversizeProtobufRequests(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	conn := dial(t, c.Nodes[0].GRPCAddr)
	before := contentHashes(t, c)[0]
	// Raw bytes that are not a TriggerEmergencyRequest (field 2 claims 100 bytes).
	garbage := &rawMessage{data: []byte{0x12, 0x64, 0x01}}
	err := conn.Invoke(ctxT(t), "/baldur.v1.EmergencyService/TriggerEmergency", garbage, &rawMessage{}, grpc.ForceCodecV2(rawCodec{}))
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "malformed protobuf") {
		t.Fatalf("garbage body: %v", err)
	}
	big := &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_1, Reason: strings.Repeat("x", 2<<20)}
	_, err = pb.NewEmergencyServiceClient(conn).TriggerEmergency(ctxT(t), big)
	if reasonOf(err) != "REQUEST_TOO_LARGE" {
		t.Fatalf("2 MiB request: %v", err)
	}
	// A streamed chunk that does not decode fails the restore the same way.
	cs, err := conn.NewStream(ctxT(t), &grpc.StreamDesc{ClientStreams: true}, "/baldur.v1.ClusterService/RestoreSnapshot", grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	cs.SendMsg(garbage)
	cs.CloseSend()
	if err := cs.RecvMsg(&rawMessage{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("garbage stream chunk: %v", err)
	}
	if after := contentHashes(t, c)[0]; after != before {
		t.Fatal("malformed requests changed the state")
	}
}

// rawMessage and rawCodec send bytes as they are.
type rawMessage struct{ data []byte }

type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.(*rawMessage).data)}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	v.(*rawMessage).data = data.Materialize()
	return nil
}

// A backup downloaded over REST is the snapshot baldurctl saves over gRPC,
// byte for byte, and restores over REST on every replica.
func TestRESTSnapshotRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	em := emergencyClient(t, c.Leader())
	if _, err := em.TriggerEmergency(ctxT(t), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_1, Reason: "before backup"}); err != nil {
		t.Fatal(err)
	}
	c.WaitForApplied(c.Leader().Store().AppliedIndex(), 5*time.Second)
	resp, err := http.Get("http://" + c.Followers()[0].HTTPAddr + "/v1/cluster/snapshot")
	if err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("download: %d %s", resp.StatusCode, resp.Header)
	}
	stream, err := pb.NewClusterServiceClient(dial(t, c.Followers()[0].GRPCAddr)).SaveSnapshot(ctxT(t), &pb.SaveSnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var grpcBytes []byte
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		grpcBytes = append(grpcBytes, chunk.Data...)
	}
	if !bytes.Equal(rest, grpcBytes) {
		t.Fatalf("REST download (%d bytes) differs from the gRPC snapshot (%d bytes)", len(rest), len(grpcBytes))
	}
	if _, err := em.TriggerEmergency(ctxT(t), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_3, Reason: "after backup"}); err != nil {
		t.Fatal(err)
	}
	r := restClient{t: t, base: "http://" + c.Leader().HTTPAddr}
	code, _, body := r.doAs("POST", "/v1/cluster/snapshot:restore", "application/octet-stream", string(rest), nil)
	if code != 200 {
		t.Fatalf("restore of the REST download: %d %v", code, body)
	}
	st, err := em.GetEmergency(ctxT(t), &pb.GetEmergencyRequest{})
	if err != nil || st.State.Level != pb.EmergencyLevel_LEVEL_1 || st.State.Reason != "before backup" {
		t.Fatalf("state after restore: %v %v", st, err)
	}
	c.WaitForApplied(c.Leader().Store().AppliedIndex(), 5*time.Second)
	if h := contentHashes(t, c); h[0] != h[1] || h[1] != h[2] {
		t.Fatalf("replicas differ after the restore: %v", h)
	}
}
