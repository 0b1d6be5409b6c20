package server_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/baldurhq/baldurd/internal/testcluster"
)

// The gate's REST contract.
func TestIdempotencyREST(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	r := restClient{t: t, base: "http://" + c.Nodes[0].HTTPAddr}
	code, body := r.do("POST", "/v1/idempotency/pay-7:acquire", `{"execution_ttl":"60s"}`)
	if code != 200 || body["decision"] != "CONTINUE" || dig(body, "record", "status") != "executing" {
		t.Fatalf("acquire: %d %v", code, body)
	}
	token := dig(body, "record", "token").(string)
	if code, body = r.do("POST", "/v1/idempotency/pay-7:acquire", `{}`); code != 200 || body["decision"] != "ABORT" {
		t.Fatalf("second acquire: %d %v", code, body)
	}
	if code, body = r.do("POST", "/v1/idempotency/pay-7:complete", `{"token":"999","result":{"ok":true}}`); code != http.StatusConflict || body["reason"] != "NOT_EXECUTION_HOLDER" {
		t.Fatalf("complete with another token: %d %v", code, body)
	}
	if code, body = r.do("POST", "/v1/idempotency/pay-7:complete", fmt.Sprintf(`{"token":%q,"result":{"charge":"ch_1"}}`, token)); code != 200 || body["status"] != "completed" {
		t.Fatalf("complete: %d %v", code, body)
	}
	if code, body = r.do("POST", "/v1/idempotency/pay-7:acquire", `{}`); code != 200 || body["decision"] != "SKIP" || dig(body, "record", "result", "charge") != "ch_1" {
		t.Fatalf("acquire after completion: %d %v", code, body)
	}
	if code, body = r.do("GET", "/v1/idempotency/pay-7", ""); code != 200 || body["status"] != "completed" {
		t.Fatalf("get: %d %v", code, body)
	}
	for _, tc := range []struct{ path, body, field string }{
		{"/v1/idempotency/bad%20key:acquire", `{}`, "key"},
		{"/v1/idempotency/k:acquire", `{"execution_ttl":"-1s"}`, "execution_ttl"},
		{"/v1/idempotency/k:acquire", `{"execution_ttl":"0s"}`, "execution_ttl"},
		{"/v1/idempotency/k:acquire", `{"memory_ttl":"0s"}`, "memory_ttl"},
		{"/v1/idempotency/" + strings.Repeat("k", 257) + ":acquire", `{}`, "key"},
		{"/v1/idempotency/k:acquire", `{"memory_ttl":"700000s"}`, "memory_ttl"},
	} {
		if code, body := r.do("POST", tc.path, tc.body); code != 400 || body["field"] != tc.field {
			t.Errorf("%s %s: %d %v, want 400 naming %s", tc.path, tc.body, code, body, tc.field)
		}
	}
	if code, _ := r.do("GET", "/v1/idempotency/never", ""); code != http.StatusNotFound {
		t.Fatalf("an unknown key: %d", code)
	}
}

// Concurrent gate commands share Raft entries (group commit), each with
// its own outcome; two acquires of one key never share an entry, so of
// those exactly one is told to run.
func TestIdempotencyGroupCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	r := restClient{t: t, base: "http://" + c.Nodes[0].HTTPAddr}
	const callers = 64
	decisions := make(chan string, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("order-%d", i%32) // two callers per key
			code, body := r.do("POST", "/v1/idempotency/"+key+":acquire", `{}`)
			if code != 200 {
				t.Errorf("acquire %s: %d %v", key, code, body)
				return
			}
			decisions <- key + "=" + body["decision"].(string)
		}()
	}
	wg.Wait()
	close(decisions)
	perKey := map[string][]string{}
	for d := range decisions {
		k, dec, _ := strings.Cut(d, "=")
		perKey[k] = append(perKey[k], dec)
	}
	for k, ds := range perKey {
		slices.Sort(ds)
		if !slices.Equal(ds, []string{"ABORT", "CONTINUE"}) {
			t.Errorf("%s: decisions %v, want one CONTINUE and one ABORT", k, ds)
		}
	}
	sum, count := testcluster.MetricSum(t, c.Nodes[0].HTTPAddr, "baldur_command_group_size")
	if sum != callers || count >= callers {
		t.Fatalf("group sizes: %v commands in %v entries; want %d commands in fewer entries", sum, count, callers)
	}
	t.Logf("%v gate commands in %v entries", sum, count)
}
