package server_test

import (
	"testing"

	"github.com/baldurhq/baldurd/internal/testcluster"
)

func TestCoordinationOverRESTAndBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	r := restClient{t: t, base: "http://" + c.Nodes[0].HTTPAddr}
	code, body := r.do("POST", "/v1/leases", `{"name":"billing-export","holder":"a","ttl":"30s"}`)
	lease, _ := body["lease"].(map[string]any)
	if code != 200 || lease["holder"] != "a" || lease["fencing_token"] == nil || lease["expires_at"] == nil {
		t.Fatalf("acquire: %d %v", code, body)
	}
	id := lease["id"].(string)
	code, body = r.do("POST", "/v1/leases", `{"name":"billing-export","holder":"b","ttl":"30s"}`)
	if code != 409 || body["reason"] != "LEASE_HELD" {
		t.Fatalf("held: %d %v", code, body)
	}
	if msg, _ := body["message"].(string); !contains(msg, `"a"`) {
		t.Fatalf("LEASE_HELD should name the holder: %v", body)
	}
	code, body = r.do("POST", "/v1/leases/"+id+":keepAlive", `{"name":"billing-export"}`)
	if code != 200 {
		t.Fatalf("keepalive: %d %v", code, body)
	}
	before := contentHashes(t, c)[0]
	cases := []struct {
		name, method, path, body string
		code                     int
		reason, field            string
	}{
		{"ttl too short", "POST", "/v1/leases", `{"name":"x","holder":"a","ttl":"1s"}`, 400, "TTL_OUT_OF_RANGE", "ttl"},
		{"ttl too long", "POST", "/v1/leases", `{"name":"x","holder":"a","ttl":"301s"}`, 400, "TTL_OUT_OF_RANGE", "ttl"},
		{"empty holder", "POST", "/v1/leases", `{"name":"x","holder":" ","ttl":"30s"}`, 400, "INVALID_HOLDER", "holder"},
		{"empty name", "POST", "/v1/leases", `{"holder":"a"}`, 400, "INVALID_NAME", "name"},
		{"lock delay too long", "POST", "/v1/leases", `{"name":"x","holder":"a","lock_delay":"120s"}`, 400, "INVALID_ARGUMENT", "lock_delay"},
		{"keepalive unknown", "POST", "/v1/leases/999:keepAlive", `{"name":"billing-export"}`, 409, "LEASE_LOST", ""},
		{"revoke by non-holder", "DELETE", "/v1/leases/" + id + "?name=billing-export&holder=b", "", 403, "NOT_HOLDER", ""},
		{"revoke unknown", "DELETE", "/v1/leases/999?name=billing-export&holder=a", "", 404, "LEASE_NOT_FOUND", ""},
		{"bad cron", "POST", "/v1/jobs", `{"resource":"r","name":"j","cron":"61 * * * *"}`, 400, "INVALID_SCHEDULE", "cron"},
		{"both schedules", "POST", "/v1/jobs", `{"resource":"r","name":"j","cron":"* * * * *","interval":"5s"}`, 400, "INVALID_SCHEDULE", "interval"},
		{"interval too short", "POST", "/v1/jobs", `{"resource":"r","name":"j","interval":"0.5s"}`, 400, "INVALID_SCHEDULE", "interval"},
		{"enable unknown job", "POST", "/v1/jobs/r/nope:setEnabled", `{"enabled":true}`, 404, "JOB_NOT_FOUND", ""},
		{"priority out of range", "POST", "/v1/elections/e:campaign", `{"holder":"a","priority":5000}`, 400, "INVALID_ARGUMENT", "priority"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := restClient{t: t, base: r.base}.do(tc.method, tc.path, tc.body)
			if code != tc.code || body["reason"] != tc.reason {
				t.Fatalf("got %d %v, want %d %s", code, body, tc.code, tc.reason)
			}
			if tc.field != "" && body["field"] != tc.field {
				t.Errorf("field = %v, want %s", body["field"], tc.field)
			}
		})
	}
	if after := contentHashes(t, c)[0]; after != before {
		t.Fatal("refused coordination requests changed the state")
	}
	code, _ = r.do("DELETE", "/v1/leases/"+id+"?name=billing-export&holder=a", "")
	if code != 200 {
		t.Fatalf("revoke by the holder: %d", code)
	}
	code, body = r.do("POST", "/v1/leases", `{"name":"billing-export","holder":"b","ttl":"30s"}`)
	if code != 200 {
		t.Fatalf("acquire after release: %d %v", code, body)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
