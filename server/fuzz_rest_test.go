package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/baldurhq/baldurd/internal/testcluster"
)

// FuzzRESTDecode posts arbitrary bodies to every REST route that takes
// one, through the real gateway of a running node: the answer is always a
// 2xx or a 4xx with a JSON error, never a 5xx, and the node keeps serving.
func FuzzRESTDecode(f *testing.F) {
	routes := []string{
		"POST /v1/emergency:trigger",
		"POST /v1/emergency:release",
		"PUT /v1/emergency/config",
		"POST /v1/cluster/members",
		"POST /v1/cluster:transferLeadership",
		"POST /v1/circuits:report",
		"PUT /v1/circuits/payments/policy",
		"POST /v1/circuits/payments:forceOpen",
		"POST /v1/circuits/payments:acquireProbe",
	}
	for i := range routes {
		for _, body := range []string{
			`{"level":"LEVEL_2","reason":"payments outage","duration":"1800s","scope":"global"}`,
			`{"level":"LEVEL_9","reason":""}`, `{"reason":"r","force":true,"gradual":true}`,
			`{"config":{"levels":[{"level":"LEVEL_1","admission":{"critical":1}}],"level_step_delay":"1s"},"reason":"r"}`,
			`{"id":"n2","raft_addr":"127.0.0.1:1","nonvoter":true}`, `{"id":"n1"}`,
			`{"instance_id":"i-1","reports":[{"name":"payments","successes":12,"failures":3}]}`,
			`{"failure_rate_threshold":50,"minimum_calls":10,"min_reporters":2}`, `{"reason":"r","ttl":"600s"}`,
			`{"duration":"-5s"}`, `{"level":3.5}`, `[]`, `null`, `{"reason":"\u0000"}`, `{`, ``,
		} {
			f.Add(uint8(i), body)
		}
	}
	// One node per fuzz process (each fuzz worker is its own process).
	base := "http://" + testcluster.New(f, 1).Nodes[0].HTTPAddr
	f.Fuzz(func(t *testing.T, route uint8, body string) {
		method, path, _ := strings.Cut(routes[int(route)%len(routes)], " ")
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json") // reach the decoder, not the 415
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("%s %s %q: status %d: %s", method, path, body, resp.StatusCode, raw)
		}
		if resp.StatusCode >= 400 && !strings.Contains(string(raw), `"reason"`) {
			t.Fatalf("%s %s %q: error without a reason: %s", method, path, body, raw)
		}
	})
}
