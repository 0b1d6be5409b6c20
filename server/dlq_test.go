package server_test

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/pgtest"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/server"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestDLQOverRESTAndBadInput runs one suite against both stores: the
// Raft-replicated state and PostgreSQL.
func TestDLQOverRESTAndBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	t.Run("store=raft", func(t *testing.T) { dlqSuite(t, testcluster.New(t, 3), false) })
	t.Run("store=postgres", func(t *testing.T) {
		dsn := pgtest.Schema(t, "baldur_test")
		dlqSuite(t, testcluster.New(t, 3, testcluster.WithConfig(func(_ int, cfg *server.Config) {
			cfg.DLQStore, cfg.PostgresDSN = "postgres", dsn
		})), true)
	})
}

func dlqSuite(t *testing.T, c *testcluster.Cluster, pg bool) {
	r := restClient{t: t, base: "http://" + c.Followers()[0].HTTPAddr}
	big := strings.Repeat("x", 10000)
	stored := map[string]any{}
	for i := 0; i < 5; i++ {
		body := fmt.Sprintf(`{"id":"01J%03d","domain":"payment","failure_type":"MAX_RETRIES_TIMEOUT","error_code":"TimeoutError","error_message":"upstream timed out",
			"entity_id":"order-%d","request_data":{"amount":12,"password":"hunter2","blob":"%s"},"metadata":{"origin_trace_id":"abc"}}`, i, i, map[bool]string{true: big, false: "small"}[i == 4])
		code, resp := r.do("POST", "/v1/dlq/entries", body)
		if code != 200 || resp["created"] != true || dig(resp, "entry", "status") != "PENDING" {
			t.Fatalf("store %d: %d %v", i, code, resp)
		}
		if strings.Contains(fmt.Sprint(resp), "hunter2") {
			t.Fatalf("sensitive field stored unmasked: %v", resp)
		}
		stored[fmt.Sprintf("01J%03d", i)] = resp["entry"]
	}
	// The store's answer is the entry as stored.
	for id, want := range stored {
		if code, got := r.do("GET", "/v1/dlq/entries/"+id, ""); code != 200 || !reflect.DeepEqual(got, want) {
			t.Fatalf("store answered\n%v\nGET %s gives\n%v", want, id, got)
		}
	}
	// A retried store creates nothing.
	code, resp := r.do("POST", "/v1/dlq/entries", `{"id":"01J000","domain":"payment","failure_type":"X"}`)
	if code != 200 || resp["created"] != false {
		t.Fatalf("retried store: %d %v", code, resp)
	}
	// The oversize one is truncated, not refused.
	code, resp = r.do("GET", "/v1/dlq/entries/01J004", "")
	if code != 200 || resp["truncated"] != true || dig(resp, "request_data", "_truncated") != true {
		t.Fatalf("oversize entry: %d %v", code, resp)
	}
	// An invalid domain is kept under OTHER_DOMAIN.
	code, resp = r.do("POST", "/v1/dlq/entries", `{"id":"01JBAD","domain":"Not A Domain!","failure_type":"X"}`)
	if code != 200 || dig(resp, "entry", "domain") != "OTHER_DOMAIN" || dig(resp, "entry", "metadata", "original_domain") != "Not A Domain!" {
		t.Fatalf("invalid domain: %d %v", code, resp)
	}
	// Paging.
	code, resp = r.do("GET", "/v1/dlq/entries?domain=payment&status=PENDING&page_size=2", "")
	if entries, _ := resp["entries"].([]any); code != 200 || len(entries) != 2 || resp["next_page_token"] == "" {
		t.Fatalf("page 1: %d %v", code, resp)
	}
	token := resp["next_page_token"].(string)
	code, resp = r.do("GET", "/v1/dlq/entries?domain=payment&status=PENDING&page_size=10&page_token="+token, "")
	if entries, _ := resp["entries"].([]any); code != 200 || len(entries) != 3 || resp["next_page_token"] != "" {
		t.Fatalf("page 2: %d %v", code, resp)
	}
	// Replay through a worker lease, over REST.
	code, resp = r.do("POST", "/v1/dlq:acquire", `{"domains":["payment"],"worker":"py-1","lease":"30s"}`)
	if code != 200 || dig(resp, "entry", "id") != "01J000" || resp["idempotency_key"] != "payment:01J000:1" {
		t.Fatalf("acquire: %d %v", code, resp)
	}
	code, resp = r.do("POST", "/v1/dlq/entries/01J000:complete", `{"worker":"py-1","success":true}`)
	if code != 200 || resp["status"] != "RESOLVED" || resp["resolution_type"] != "automatic_replay" || resp["replay_origin"] != "automatic" {
		t.Fatalf("complete: %d %v", code, resp)
	}
	code, resp = r.do("POST", "/v1/dlq/entries/01J001:resolve", `{"reason":"handled by hand"}`)
	if code != 200 || resp["status"] != "RESOLVED" {
		t.Fatalf("resolve: %d %v", code, resp)
	}
	code, resp = r.do("GET", "/v1/dlq/stats", "")
	if code != 200 || resp["total"] != "6" || dig(resp, "by_status", "RESOLVED") != "2" || dig(resp, "by_domain", "payment") != "5" {
		t.Fatalf("stats: %d %v", code, resp)
	}
	before := contentHashes(t, c)
	cases := []struct {
		name, method, path, body string
		code                     int
		reason, field            string
	}{
		{"unknown id", "GET", "/v1/dlq/entries/NOPE", "", 404, "DLQ_ENTRY_NOT_FOUND", ""},
		{"resolve twice", "POST", "/v1/dlq/entries/01J001:resolve", `{}`, 409, "DLQ_STATE_CONFLICT", ""},
		{"redrive without reason", "POST", "/v1/dlq/entries/01J002:redrive", `{}`, 400, "REASON_REQUIRED", "reason"},
		{"redrive a resolved entry", "POST", "/v1/dlq/entries/01J001:redrive", `{"reason":"again"}`, 409, "DLQ_STATE_CONFLICT", ""},
		{"purge without confirmation", "POST", "/v1/dlq:purge", `{"ids":["01J001"]}`, 400, "PURGE_NOT_CONFIRMED", "confirm"},
		{"malformed page token", "GET", "/v1/dlq/entries?page_token=zz", "", 400, "INVALID_PAGE_TOKEN", "page_token"},
		{"bad status filter", "GET", "/v1/dlq/entries?status=LOST", "", 400, "INVALID_STATUS", "status"},
		{"missing failure type", "POST", "/v1/dlq/entries", `{"id":"01JX","domain":"payment"}`, 400, "INVALID_ARGUMENT", "failure_type"},
		{"bad id", "POST", "/v1/dlq/entries", `{"id":"has space","failure_type":"X"}`, 400, "INVALID_ID", "id"},
		{"acquire without worker", "POST", "/v1/dlq:acquire", `{"domains":["payment"]}`, 400, "INVALID_ARGUMENT", "worker"},
		{"complete by a stranger", "POST", "/v1/dlq/entries/01J002:complete", `{"worker":"nobody","success":true}`, 409, "DLQ_STATE_CONFLICT", ""},
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
	if after := contentHashes(t, c); after[0] != before[0] && !pg {
		t.Fatal("refused DLQ requests changed the state")
	}
	if pg {
		// The entries live in PostgreSQL, not in the replicated state.
		code, resp := r.do("GET", "/v1/dlq/stats", "")
		if code != 200 || resp["total"] != "6" {
			t.Fatalf("stats after refused requests: %d %v", code, resp)
		}
	}
	if msg := fmt.Sprint(restClient{t: t, base: r.base}.do("POST", "/v1/dlq/entries/01J001:resolve", `{}`)); !strings.Contains(msg, "RESOLVED") {
		t.Fatalf("a 409 should name the current status: %s", msg)
	}
	// view=BASIC answers without the documents; an unknown view stores nothing.
	code, resp = r.do("POST", "/v1/dlq/entries?view=BASIC", `{"id":"01JB01","domain":"views","failure_type":"X","request_data":{"a":1}}`)
	if code != 200 || resp["created"] != true || dig(resp, "entry", "id") != "01JB01" || dig(resp, "entry", "request_data") != nil {
		t.Fatalf("store with view=BASIC: %d %v", code, resp)
	}
	if code, resp = r.do("GET", "/v1/dlq/entries/01JB01", ""); code != 200 || dig(resp, "request_data", "a") != 1.0 {
		t.Fatalf("entry stored with view=BASIC: %d %v", code, resp)
	}
	code, resp = r.do("POST", "/v1/dlq/entries?view=ALL", `{"id":"01JB02","domain":"views","failure_type":"X"}`)
	if code != 400 || !strings.Contains(fmt.Sprint(resp), "view") {
		t.Fatalf("store with an unknown view: %d %v", code, resp)
	}
	if code, _ = r.do("GET", "/v1/dlq/entries/01JB02", ""); code != 404 {
		t.Fatalf("a store refused for its view was kept: %d", code)
	}
}

func TestDLQExpiryOnceAcrossLeaderChange(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	r := restClient{t: t, base: "http://" + c.Leader().HTTPAddr}
	if code, body := r.do("POST", "/v1/dlq/entries", `{"id":"exp-1","domain":"payment","failure_type":"X"}`); code != 200 {
		t.Fatalf("store: %d %v", code, body)
	}
	c.WaitForApplied(c.Leader().Store().AppliedIndex(), 5*time.Second)
	c.Kill(c.LeaderIndex())
	nl := c.WaitForLeader(10 * time.Second)
	c.Clock.Advance(72*time.Hour + time.Minute) // past the default 72 h expiry
	r = restClient{t: t, base: "http://" + nl.HTTPAddr}
	if !testcluster.Eventually(10*time.Second, func() bool {
		_, body := r.do("GET", "/v1/dlq/entries/exp-1", "")
		return body["status"] == "EXPIRED"
	}) {
		_, body := r.do("GET", "/v1/dlq/entries/exp-1", "")
		t.Fatalf("not expired: %v", body)
	}
	time.Sleep(1500 * time.Millisecond) // more leader sweeps
	_, body := r.do("GET", "/v1/audit?action=dlq.expired", "")
	if recs, _ := body["records"].([]any); len(recs) != 1 {
		t.Fatalf("expiries in the audit trail: %v", body)
	}
}

// Concurrent stores leave the leader in groups (one Raft entry each), every
// store audited in its caller's name; while a voter advertises an older
// command version, stores go one per entry.
func TestDLQStoresAreGroupCommitted(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	for _, older := range []bool{false, true} {
		t.Run(fmt.Sprintf("older_voter=%v", older), func(t *testing.T) {
			c := testcluster.New(t, 3, testcluster.WithConfig(func(i int, cfg *server.Config) {
				if older && i == 2 {
					cfg.CommandVersion = 1
				}
			}))
			leader := c.Leader()
			client := pb.NewDLQServiceClient(dial(t, leader.GRPCAddr))
			const stores, callers = 200, 64
			var next atomic.Int64
			var wg sync.WaitGroup
			for w := 0; w < callers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := next.Add(1); i <= stores; i = next.Add(1) {
						_, err := client.StoreEntry(ctxT(t), &pb.StoreEntryRequest{Entry: &pb.DLQEntry{Id: fmt.Sprintf("g-%03d", i), Domain: "payment", FailureType: "X"}})
						if err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			sum, count := testcluster.MetricSum(t, leader.HTTPAddr, "baldur_dlq_store_group_size")
			if sum != stores {
				t.Fatalf("stores through the group committer: %v, want %d", sum, stores)
			}
			if older && count != stores {
				t.Fatalf("with a voter at command version 1: %v groups for %d stores, want one each", count, stores)
			}
			if !older && count >= stores/2 {
				t.Fatalf("%v groups for %d stores from %d concurrent callers: no group commit", count, stores, callers)
			}
			t.Logf("%d stores in %v groups", stores, count)
			r := restClient{t: t, base: "http://" + leader.HTTPAddr}
			if code, body := r.do("GET", "/v1/dlq/stats", ""); code != 200 || body["total"] != fmt.Sprint(stores) {
				t.Fatalf("stats: %d %v", code, body)
			}
			_, body := r.do("GET", "/v1/audit?action=dlq.stored&page_size=1000", "")
			recs, _ := body["records"].([]any)
			if len(recs) != stores {
				t.Fatalf("%d dlq.stored audit records, want %d", len(recs), stores)
			}
			for _, rec := range recs {
				if a := rec.(map[string]any)["actor"]; a == "" || a == "system" {
					t.Fatalf("a store audited as %q: %v", a, rec)
				}
			}
			c.WaitForApplied(leader.Store().AppliedIndex(), 5*time.Second)
			if h := contentHashes(t, c); h[0] != h[1] || h[1] != h[2] {
				t.Fatalf("replicas differ: %v", h)
			}
		})
	}
}

// A worker leases up to max_entries entries in one call (one BATCH entry),
// concurrent completions are committed together, and each is audited in
// its worker's name with its own reason. With a voter at command version
// 2 or 1 the same calls work one entry per command.
func TestDLQReplayLeasesInBatchesAndGroupsCompletions(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	for _, older := range []uint32{0, 2, 1} {
		t.Run(fmt.Sprintf("older_voter=%d", older), func(t *testing.T) {
			c := testcluster.New(t, 3, testcluster.WithConfig(func(i int, cfg *server.Config) {
				if i == 2 {
					cfg.CommandVersion = older
				}
			}))
			leader := c.Leader()
			client := pb.NewDLQServiceClient(dial(t, leader.GRPCAddr))
			for i := range 40 {
				if _, err := client.StoreEntry(ctxT(t), &pb.StoreEntryRequest{Entry: &pb.DLQEntry{Id: fmt.Sprintf("r-%03d", i), Domain: "payment", FailureType: "X"}}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := client.AcquireReplay(ctxT(t), &pb.AcquireReplayRequest{Domains: []string{"payment"}, Worker: "w1", MaxEntries: 101}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "max_entries") {
				t.Fatalf("max_entries 101: %v", err)
			}
			seen := map[string]string{}
			for _, w := range []string{"w1", "w2"} {
				resp, err := client.AcquireReplay(ctxT(t), &pb.AcquireReplayRequest{Domains: []string{"payment"}, Worker: w, MaxEntries: 16})
				if err != nil {
					t.Fatal(err)
				}
				if len(resp.Leased) != 16 || resp.Entry.GetId() != resp.Leased[0].Entry.Id {
					t.Fatalf("%s leased %d entries (first %v)", w, len(resp.Leased), resp.Entry.GetId())
				}
				for _, l := range resp.Leased {
					if l.Entry.Status != "REPLAYING" || l.Entry.ReplayWorker != w || l.IdempotencyKey != "payment:"+l.Entry.Id+":1" {
						t.Fatalf("%s: leased %+v key %q", w, l.Entry, l.IdempotencyKey)
					}
					if prev, dup := seen[l.Entry.Id]; dup {
						t.Fatalf("%s leased %s, already leased to %s", w, l.Entry.Id, prev)
					}
					seen[l.Entry.Id] = w
				}
			}
			_, groups0 := testcluster.MetricSum(t, leader.HTTPAddr, "baldur_dlq_store_group_size")
			var wg sync.WaitGroup
			for id, w := range seen {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := client.CompleteReplay(ctxT(t), &pb.CompleteReplayRequest{Id: id, Worker: w, Success: true}); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			_, groups1 := testcluster.MetricSum(t, leader.HTTPAddr, "baldur_dlq_store_group_size")
			if older == 0 && groups1-groups0 >= 32 {
				t.Fatalf("32 concurrent completions in %v entries: not grouped", groups1-groups0)
			}
			r := restClient{t: t, base: "http://" + leader.HTTPAddr}
			if _, body := r.do("GET", "/v1/dlq/stats", ""); dig(body, "by_status", "RESOLVED") != "32" || dig(body, "by_status", "PENDING") != "8" {
				t.Fatalf("stats after 32 completions: %v", body)
			}
			_, body := r.do("GET", "/v1/audit?action=dlq.replay_succeeded&page_size=100", "")
			recs, _ := body["records"].([]any)
			if len(recs) != 32 {
				t.Fatalf("%d dlq.replay_succeeded records, want 32", len(recs))
			}
			for _, rec := range recs {
				m := rec.(map[string]any)
				if m["reason"] != "replay result" || m["actor"] == "" || m["actor"] == "system:leader" {
					t.Fatalf("completion audited as %v", m)
				}
			}
			c.WaitForApplied(leader.Store().AppliedIndex(), 5*time.Second)
			if h := contentHashes(t, c); h[0] != h[1] || h[1] != h[2] {
				t.Fatalf("replicas differ: %v", h)
			}
		})
	}
}
