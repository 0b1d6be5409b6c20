package server_test

import (
	"strings"
	"testing"

	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/server"
)

// A page on another origin cannot drive an anonymous loopback node: the
// writes a browser sends without a preflight (text/plain, form, multipart
// bodies) get 415 and change nothing, preflights are not answered unless
// --cors-origins lists the origin, responses are not sniffed and carry no
// gRPC metadata.
func TestBrowserCannotDriveANode(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) {
		cfg.CORSOrigins = []string{"https://console.example.com"}
	}))
	r := restClient{t: t, base: "http://" + c.Nodes[0].HTTPAddr}
	before := contentHashes(t, c)[0]
	body := `{"enabled":true,"reason":"csrf"}`
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""} {
		code, h, resp := r.doAs("POST", "/v1/circuits:killSwitch", ct, body, map[string]string{"Origin": "https://evil.example"})
		if code != 415 || resp["reason"] != "UNSUPPORTED_MEDIA_TYPE" || !strings.Contains(resp["message"].(string), "application/json") {
			t.Fatalf("Content-Type %q: %d %v", ct, code, resp)
		}
		if h.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("CORS granted to an unlisted origin: %v", h)
		}
	}
	if code, _, resp := r.doAs("POST", "/v1/cluster/snapshot:restore", "text/plain", "x", nil); code != 415 {
		t.Fatalf("restore as text/plain: %d %v", code, resp)
	}
	if after := contentHashes(t, c)[0]; after != before {
		t.Fatal("a refused cross-site write changed the state")
	}

	// The same write as JSON works, and the answer is plain.
	code, h, resp := r.doAs("POST", "/v1/circuits:killSwitch", "application/json; charset=utf-8", `{"enabled":false,"reason":"json"}`, nil)
	if code != 200 {
		t.Fatalf("JSON write: %d %v", code, resp)
	}
	if h.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("no nosniff: %v", h)
	}
	for k := range h {
		if strings.HasPrefix(strings.ToLower(k), "grpc-") {
			t.Errorf("gRPC header leaked: %s: %v", k, h[k])
		}
	}

	// Preflight: answered for a listed origin only.
	pre := map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
	if _, h, _ := r.doAs("OPTIONS", "/v1/circuits:killSwitch", "", "", pre); h.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("preflight granted to an unlisted origin: %v", h)
	}
	pre["Origin"] = "https://console.example.com"
	code, h, _ = r.doAs("OPTIONS", "/v1/circuits:killSwitch", "", "", pre)
	if code != 204 || h.Get("Access-Control-Allow-Origin") != "https://console.example.com" || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight for a listed origin: %d %v", code, h)
	}
}
