package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/notify"
	"github.com/baldurhq/baldurd/server"
)

// receiver is a webhook endpoint on loopback that keeps what it gets.
type receiver struct {
	mu   sync.Mutex
	got  []received
	srv  *httptest.Server
	fail bool
}

type received struct {
	body      []byte
	signature string
	timestamp string
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.fail {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		r.got = append(r.got, received{body: b, signature: req.Header.Get("X-Baldur-Signature"), timestamp: req.Header.Get("X-Baldur-Timestamp")})
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) messages() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received{}, r.got...)
}

const hookSecret = "whsec-0123456789abcdef"

func notifyCluster(t *testing.T, n int) *testcluster.Cluster {
	return testcluster.New(t, n, testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.NotifyRetryDelay = 20 * time.Millisecond }))
}

func tripBreaker(t *testing.T, r restClient, name string) {
	t.Helper()
	if code, body := r.do("POST", "/v1/circuits:report", fmt.Sprintf(`{"instance_id":"i-1","reports":[{"name":%q,"failures":10}]}`, name)); code != 200 {
		t.Fatalf("report: %d %v", code, body)
	}
}

// Channels, the signed envelope, the Slack body, one message per episode
// (a flapping breaker), escalation during an emergency, secrets never
// shown.
func TestNotificationsReachAWebhook(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	hook, slack := newReceiver(t), newReceiver(t)
	c := notifyCluster(t, 1)
	r := restClient{t: t, base: "http://" + c.Nodes[0].HTTPAddr}
	for _, tc := range []struct{ body, field string }{
		{`{"type":"pager","url":"http://x"}`, "type"},
		{`{"type":"webhook","url":"ftp://x","secret":"` + hookSecret + `"}`, "url"},
		{`{"type":"webhook","url":"http://127.0.0.1:1/h","secret":"short"}`, "secret"},
		{`{"type":"webhook","url":"http://127.0.0.1:1/h","secret":"` + hookSecret + `","categories":["weather"]}`, "categories[0]"},
		{`{"type":"slack","url":"http://127.0.0.1:1/h","min_priority":"urgent"}`, "min_priority"},
	} {
		if code, body := r.do("PUT", "/v1/notify/channels/bad", tc.body); code != 400 || body["field"] != tc.field {
			t.Errorf("%s: %d %v, want 400 naming %s", tc.body, code, body, tc.field)
		}
	}
	code, body := r.do("PUT", "/v1/notify/channels/ops", `{"type":"webhook","url":"`+hook.srv.URL+`/hook/s3cret-path","secret":"`+hookSecret+`","categories":["circuit"],"min_priority":"medium"}`)
	if code != 200 || body["has_secret"] != true || strings.Contains(fmt.Sprint(body), "s3cret-path") || strings.Contains(fmt.Sprint(body), hookSecret) {
		t.Fatalf("put channel: %d %v", code, body)
	}
	r.do("PUT", "/v1/notify/channels/chat", `{"type":"slack","url":"`+slack.srv.URL+`/services/T0/B0/x","categories":["circuit"],"min_priority":"critical"}`)
	if _, body = r.do("GET", "/v1/notify/channels", ""); strings.Contains(fmt.Sprint(body), "s3cret-path") || strings.Contains(fmt.Sprint(body), hookSecret) {
		t.Fatalf("channels list shows a secret: %v", body)
	}
	// A flapping breaker: 10 trips, one message while the episode cools down.
	for range 10 {
		tripBreaker(t, r, "payments")
		r.do("POST", "/v1/circuits/payments:reset", `{"reason":"flap"}`)
	}
	if !testcluster.Eventually(5*time.Second, func() bool { return len(hook.messages()) >= 1 }) {
		t.Fatal("no webhook message")
	}
	time.Sleep(500 * time.Millisecond)
	msgs := hook.messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages for one flapping episode, want 1", len(msgs))
	}
	m := msgs[0]
	ts, _ := strconv.ParseInt(m.timestamp, 10, 64)
	if m.signature != notify.Signature(hookSecret, ts, m.body) {
		t.Fatalf("signature %q does not verify", m.signature)
	}
	var env notify.Envelope
	if err := json.Unmarshal(m.body, &env); err != nil || env.Title != "Breaker payments is OPEN" || env.Priority != "high" || env.Category != "circuit" || env.DedupKey != "circuit/payments/state" {
		t.Fatalf("envelope %s: %v", m.body, err)
	}
	if len(slack.messages()) != 0 {
		t.Fatal("a high event reached a critical-only channel")
	}
	// During LEVEL_2 the same event is escalated to critical.
	r.do("POST", "/v1/emergency:trigger", `{"level":"LEVEL_2","reason":"outage","duration":"600s"}`)
	tripBreaker(t, r, "search")
	if !testcluster.Eventually(5*time.Second, func() bool { return len(slack.messages()) == 1 }) {
		t.Fatal("the escalated event did not reach the critical channel")
	}
	var sb struct {
		Text   string           `json:"text"`
		Blocks []map[string]any `json:"blocks"`
	}
	if err := json.Unmarshal(slack.messages()[0].body, &sb); err != nil || sb.Text != "[CRITICAL] Breaker search is OPEN" || len(sb.Blocks) != 2 || sb.Blocks[0]["type"] != "section" {
		t.Fatalf("slack body %s: %v", slack.messages()[0].body, err)
	}
	if !testcluster.Eventually(5*time.Second, func() bool {
		_, body = r.do("GET", "/v1/notifications", "")
		list, _ := body["notifications"].([]any)
		return len(list) >= 2
	}) {
		t.Fatalf("deliveries: %v", body)
	}
}

// The receiver is down: three retries, then a failure anyone can see.
func TestNotificationFailureIsRecorded(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	hook := newReceiver(t)
	hook.fail = true
	c := notifyCluster(t, 1)
	r := restClient{t: t, base: "http://" + c.Nodes[0].HTTPAddr}
	r.do("PUT", "/v1/notify/channels/ops", `{"type":"webhook","url":"`+hook.srv.URL+`/h?token=abc","secret":"`+hookSecret+`"}`)
	tripBreaker(t, r, "payments")
	var n map[string]any
	if !testcluster.Eventually(5*time.Second, func() bool {
		_, body := r.do("GET", "/v1/notifications", "")
		list, _ := body["notifications"].([]any)
		if len(list) == 0 {
			return false
		}
		n = list[0].(map[string]any)
		return true
	}) {
		t.Fatal("no delivery record")
	}
	if n["result"] != "failed" || n["attempts"] != float64(4) || !strings.Contains(n["error"].(string), "HTTP 503") || strings.Contains(n["error"].(string), "token=abc") {
		t.Fatalf("delivery record %v", n)
	}
}

// The leader is killed during an episode: the new leader neither repeats
// the message nor sends another for the same episode.
func TestNotificationsSurviveLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	hook := newReceiver(t)
	c := notifyCluster(t, 3)
	c.WaitForLeader(10 * time.Second)
	follower := c.Followers()[0]
	r := restClient{t: t, base: "http://" + follower.HTTPAddr}
	r.do("PUT", "/v1/notify/channels/ops", `{"type":"webhook","url":"`+hook.srv.URL+`/h","secret":"`+hookSecret+`","categories":["circuit"]}`)
	tripBreaker(t, r, "payments")
	if !testcluster.Eventually(5*time.Second, func() bool { return len(hook.messages()) == 1 }) {
		t.Fatal("no message")
	}
	leader := c.LeaderIndex()
	c.Kill(leader)
	c.WaitForLeader(10 * time.Second)
	if c.Nodes[leader] == follower {
		t.Fatal("killed the node the test talks to")
	}
	r.do("POST", "/v1/circuits/payments:reset", `{"reason":"flap"}`)
	tripBreaker(t, r, "payments")
	time.Sleep(time.Second)
	if got := len(hook.messages()); got != 1 {
		t.Fatalf("%d messages after the leader change, want 1 (same episode)", got)
	}
}

// BenchmarkNotifyLatency: a breaker trip (the report that trips it) to the
// webhook's receipt, over distinct breakers (one episode each), on a
// 3-node cluster; p50 and p99.
func BenchmarkNotifyLatency(b *testing.B) {
	got := make(chan time.Time, 1024)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.Copy(io.Discard, req.Body)
		got <- time.Now()
	}))
	defer srv.Close()
	c := testcluster.New(b, 3, testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.NotifyPerMinute, cfg.NotifyPerHour = 1000, 1000 }))
	c.WaitForLeader(10 * time.Second)
	r := restClient{t: &testing.T{}, base: "http://" + c.Followers()[0].HTTPAddr}
	if code, body := r.do("PUT", "/v1/notify/channels/ops", `{"type":"webhook","url":"`+srv.URL+`/h","secret":"`+hookSecret+`","categories":["circuit"]}`); code != 200 {
		b.Fatalf("channel: %d %v", code, body)
	}
	var lat []time.Duration
	i := 0
	for b.Loop() {
		i++
		start := time.Now()
		if code, _ := r.do("POST", "/v1/circuits:report", fmt.Sprintf(`{"instance_id":"i-1","reports":[{"name":"b-%d","failures":10}]}`, i)); code != 200 {
			b.Fatal("report refused")
		}
		select {
		case at := <-got:
			lat = append(lat, at.Sub(start))
		case <-time.After(10 * time.Second):
			b.Fatal("no webhook")
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// Events the leader notes itself: its election, a member that stops
// answering, a DLQ domain over its PENDING threshold.
func TestLeaderNotedEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	hook := newReceiver(t)
	c := testcluster.New(t, 3, testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.NotifyDLQPendingThreshold = 5 }))
	c.WaitForLeader(10 * time.Second)
	follower := c.Followers()[0]
	r := restClient{t: t, base: "http://" + follower.HTTPAddr}
	r.do("PUT", "/v1/notify/channels/ops", `{"type":"webhook","url":"`+hook.srv.URL+`/h","secret":"`+hookSecret+`","categories":["cluster","dlq"]}`)
	for i := range 5 {
		r.do("POST", "/v1/dlq/entries", fmt.Sprintf(`{"id":"e-%d","domain":"orders","failure_type":"X"}`, i))
	}
	titles := func() string {
		var out []string
		for _, m := range hook.messages() {
			var env notify.Envelope
			json.Unmarshal(m.body, &env)
			out = append(out, env.Title)
		}
		return strings.Join(out, "|")
	}
	if !testcluster.Eventually(10*time.Second, func() bool { return strings.Contains(titles(), "DLQ orders over its PENDING threshold") }) {
		t.Fatalf("no DLQ threshold event: %s", titles())
	}
	old := c.LeaderIndex()
	c.Kill(old)
	leader := c.WaitForLeader(10 * time.Second)
	want := []string{"Member " + leader.ID + " leads", "Member " + c.Nodes[old].ID + " unreachable"}
	if !testcluster.Eventually(30*time.Second, func() bool {
		got := titles()
		return strings.Contains(got, want[0]) && strings.Contains(got, want[1])
	}) {
		t.Fatalf("events after the leader's loss: %s, want %v", titles(), want)
	}
}
