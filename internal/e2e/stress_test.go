package e2e

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestCarelessClientsAreBounded replays, against a real baldurd process
// with its default limits, what a careless or hostile client did to an
// unbounded node: 12,000 distinct breaker names (100,000 took 2 GB before),
// then 500 watchers that never read while 1,000 changes are applied (1.75
// GB before). Past the cap registration is refused; a page of breakers and
// the metrics stay small; the silent watchers are dropped and their
// connections closed; the node's memory stays under stated bounds.
func TestCarelessClientsAreBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	cmd, grpcAddr, httpAddr := devNode(t, t.TempDir(), "--watch-send-timeout", "3s")
	defer stop(cmd)
	if !eventually(10*time.Second, func() bool { return (&proc{http: httpAddr}).ready() }) {
		t.Fatal("dev node not ready")
	}
	post := func(path, body string) (int, string) {
		resp, err := httpClient.Post("http://"+httpAddr+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	start := time.Now()
	refused := 0
	for batch := range 24 {
		var reports []string
		for i := range 500 {
			reports = append(reports, fmt.Sprintf(`{"name":"careless-%05d","failures":1}`, batch*500+i))
		}
		code, body := post("/v1/circuits:report", `{"instance_id":"careless","reports":[`+strings.Join(reports, ",")+`]}`)
		switch {
		case code == 200:
		case code == 429 && strings.Contains(body, "LIMIT_REACHED") && strings.Contains(body, "--max-breakers"):
			refused++
		default:
			t.Fatalf("batch %d: %d %s", batch, code, body)
		}
	}
	if refused < 4 {
		t.Fatalf("%d of 24 batches refused; the cap of 10,000 should refuse the last 4", refused)
	}
	t.Logf("%v: 24 report batches", time.Since(start))
	resp, err := httpClient.Get("http://" + httpAddr + "/v1/circuits")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(page) > 1<<20 || !strings.Contains(string(page), "next_page_token") {
		t.Fatalf("GET /v1/circuits: %d bytes", len(page))
	}
	resp, err = httpClient.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(metrics) > 2<<20 {
		t.Fatalf("/metrics is %d bytes", len(metrics))
	}
	if rss := procRSS(t, cmd.Process.Pid); rss > 400<<20 {
		t.Fatalf("RSS %d MiB with 10,000 breakers", rss>>20)
	}

	// 500 watchers that never read, on 5 connections with fixed windows,
	// while 1,000 changes are applied.
	var conns []*grpc.ClientConn
	for range 5 {
		conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conns = append(conns, conn)
		for range 100 {
			if _, err := pb.NewEmergencyServiceClient(conn).WatchEmergency(context.Background(), &pb.WatchEmergencyRequest{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("%v: 500 watchers opened", time.Since(start))
	if !eventually(20*time.Second, func() bool { return metric(t, httpAddr, "baldur_watchers") == 500 }) {
		t.Fatalf("watchers: %v", metric(t, httpAddr, "baldur_watchers"))
	}
	var peak int64
	reason := strings.Repeat("r", 400)
	for i := range 1000 {
		code, body := post("/v1/emergency:trigger", fmt.Sprintf(`{"level":"LEVEL_%d","scope":"svc-%d","reason":"%s %d"}`, 1+i%3, i%10, reason, i))
		if code != 200 {
			t.Fatalf("change %d: %d %s", i, code, body)
		}
		if i%100 == 0 {
			peak = max(peak, procRSS(t, cmd.Process.Pid))
		}
	}
	t.Logf("%v: 1,000 changes", time.Since(start))
	if !eventually(30*time.Second, func() bool { return metric(t, httpAddr, "baldur_watchers") == 0 }) {
		t.Fatalf("silent watchers not dropped: %v open", metric(t, httpAddr, "baldur_watchers"))
	}
	peak = max(peak, procRSS(t, cmd.Process.Pid))
	// Each drop closes the client's connection, ending its other streams.
	if dropped := metric(t, httpAddr, "baldur_watchers_dropped_total"); dropped < 5 {
		t.Fatalf("dropped %v silent watchers, want one per connection at least", dropped)
	}
	if peak > 600<<20 {
		t.Fatalf("RSS peaked at %d MiB with 500 silent watchers", peak>>20)
	}
	t.Logf("%v: RSS peak %d MiB", time.Since(start), peak>>20)
}
