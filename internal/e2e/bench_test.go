package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func devNode(b testing.TB, dir string, extra ...string) (*exec.Cmd, string, string) {
	grpcAddr, httpAddr, raftAddr := freePort(b), freePort(b), freePort(b)
	cmd := exec.Command(baldurd(b), append([]string{"--dev", "--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--raft-addr", raftAddr}, extra...)...)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	return cmd, grpcAddr, httpAddr
}

func stop(cmd *exec.Cmd) {
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
}

// BenchmarkDevStartToReady: `baldurd --dev` in a fresh directory, from
// exec to /readyz answering 200.
func BenchmarkDevStartToReady(b *testing.B) {
	var total time.Duration
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		start := time.Now()
		cmd, _, httpAddr := devNode(b, dir)
		p := &proc{http: httpAddr}
		for !p.ready() {
			time.Sleep(2 * time.Millisecond)
			if time.Since(start) > 10*time.Second {
				b.Fatal("not ready after 10s")
			}
		}
		total += time.Since(start)
		b.StopTimer()
		stop(cmd)
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-to-ready")
}

// BenchmarkIdleRSS reports the resident memory of an idle dev node after a
// few writes and 3 s of idling.
func BenchmarkIdleRSS(b *testing.B) {
	var worst float64
	for i := 0; i < b.N; i++ {
		cmd, _, httpAddr := devNode(b, b.TempDir())
		p := &proc{http: httpAddr}
		if !eventually(10*time.Second, p.ready) {
			b.Fatal("not ready")
		}
		for j := 0; j < 20; j++ {
			p.trigger([]string{"LEVEL_1", "LEVEL_2"}[j%2], "warm up")
		}
		time.Sleep(3 * time.Second)
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.Atoi(f[1])
				worst = max(worst, float64(kb)/1024)
			}
		}
		stop(cmd)
	}
	b.ReportMetric(worst, "max-RSS-MiB")
}

// BenchmarkCLIRoundTrip runs the built `baldurctl emergency status` against
// a dev node: process start, dial, linearizable read, print.
func BenchmarkCLIRoundTrip(b *testing.B) {
	dir := b.TempDir()
	ctl := filepath.Join(dir, "baldurctl")
	if out, err := exec.Command("go", "build", "-o", ctl, "github.com/baldurhq/baldurd/cmd/baldurctl").CombinedOutput(); err != nil {
		b.Fatalf("build baldurctl: %v\n%s", err, out)
	}
	cmd, grpcAddr, httpAddr := devNode(b, dir)
	defer stop(cmd)
	if !eventually(10*time.Second, (&proc{http: httpAddr}).ready) {
		b.Fatal("not ready")
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if out, err := exec.Command(ctl, "--addr", grpcAddr, "emergency", "status").CombinedOutput(); err != nil {
			b.Fatalf("baldurctl: %v\n%s", err, out)
		}
	}
}

// BenchmarkIdleWith10kBreakers: a dev node holding 10,000 breakers and 100
// DLQ domains that nothing reports to, serving 1,000 watch streams (each
// gets a heartbeat every 3 s): its CPU over 10 s of idling and its resident
// memory.
func BenchmarkIdleWith10kBreakers(b *testing.B) {
	for range b.N {
		cmd, grpcAddr, httpAddr := devNode(b, b.TempDir())
		if !eventually(10*time.Second, func() bool {
			resp, err := httpClient.Get("http://" + httpAddr + "/readyz")
			if err == nil {
				resp.Body.Close()
			}
			return err == nil && resp.StatusCode == 200
		}) {
			b.Fatal("dev node not ready")
		}
		for batch := 0; batch < 20; batch++ {
			var reports []string
			for i := range 500 {
				reports = append(reports, fmt.Sprintf(`{"name":"svc-%05d","successes":1}`, batch*500+i))
			}
			body := `{"instance_id":"bench","reports":[` + strings.Join(reports, ",") + `]}`
			resp, err := httpClient.Post("http://"+httpAddr+"/v1/circuits:report", "application/json", strings.NewReader(body))
			if err != nil || resp.StatusCode != 200 {
				b.Fatalf("report batch %d: %v %v", batch, err, resp)
			}
			resp.Body.Close()
		}
		for d := range 100 {
			body := fmt.Sprintf(`{"id":"e-%03d","domain":"domain_%03d","failure_type":"X"}`, d, d)
			resp, err := httpClient.Post("http://"+httpAddr+"/v1/dlq/entries", "application/json", strings.NewReader(body))
			if err != nil || resp.StatusCode != 200 {
				b.Fatalf("store %d: %v %v", d, err, resp)
			}
			resp.Body.Close()
		}
		// 1,000 watchers (900 of the emergency level, 100 of the breakers),
		// on 10 connections, each reading what it is sent.
		ctx, cancel := context.WithCancel(context.Background())
		for c := range 10 {
			conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			for w := range 100 {
				var recv func() error
				if w < 10 {
					st, err := pb.NewCircuitServiceClient(conn).WatchCircuits(ctx, &pb.WatchCircuitsRequest{})
					if err != nil {
						b.Fatalf("watcher %d/%d: %v", c, w, err)
					}
					recv = func() error { _, err := st.Recv(); return err }
				} else {
					st, err := pb.NewEmergencyServiceClient(conn).WatchEmergency(ctx, &pb.WatchEmergencyRequest{})
					if err != nil {
						b.Fatalf("watcher %d/%d: %v", c, w, err)
					}
					recv = func() error { _, err := st.Recv(); return err }
				}
				go func() {
					for recv() == nil {
					}
				}()
			}
		}
		if !eventually(60*time.Second, func() bool { return metric(b, httpAddr, "baldur_watchers") == 1000 }) {
			b.Fatalf("watchers: %v", metric(b, httpAddr, "baldur_watchers"))
		}
		time.Sleep(5 * time.Second) // let the writes and the first snapshots settle
		cpu0 := procCPU(b, cmd.Process.Pid)
		time.Sleep(10 * time.Second)
		cpu := procCPU(b, cmd.Process.Pid) - cpu0
		b.ReportMetric(float64(cpu)/float64(10*time.Second)*100, "idle-cpu-%")
		b.ReportMetric(float64(procRSS(b, cmd.Process.Pid))/(1<<20), "rss-MiB")
		b.ReportMetric(metric(b, httpAddr, "go_memstats_heap_inuse_bytes")/(1<<20), "heap-inuse-MiB")
		b.ReportMetric(metric(b, httpAddr, "go_memstats_heap_alloc_bytes")/(1<<20), "heap-alloc-MiB")
		cancel()
		stop(cmd)
	}
}

// metric scrapes one unlabelled series from a node's /metrics.
func metric(b testing.TB, httpAddr, name string) float64 {
	resp, err := httpClient.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

func procCPU(b testing.TB, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100)
}

func procRSS(b testing.TB, pid int) int64 { return procStatus(b, pid, "VmRSS:") }

// BenchmarkSnapshot1GB: a dev node whose state file holds 1 GiB (DLQ
// entries of ~750 KB, stored over REST by 4 clients); the time to save a
// snapshot over REST (GET /v1/cluster/snapshot to a file) and to restore
// it (POST /v1/cluster/snapshot:restore), and the sizes.
func BenchmarkSnapshot1GB(b *testing.B) {
	for range b.N {
		dir := b.TempDir()
		cmd, _, httpAddr := devNode(b, dir, "--dlq-request-data-max-bytes", "262144", "--dlq-field-max-bytes", "262144", "--http-read-timeout", "5m", "--http-write-timeout", "5m")
		if !eventually(10*time.Second, func() bool {
			resp, err := httpClient.Get("http://" + httpAddr + "/readyz")
			if err == nil {
				resp.Body.Close()
			}
			return err == nil && resp.StatusCode == 200
		}) {
			b.Fatal("dev node not ready")
		}
		state := filepath.Join(dir, "baldurd-data", "state.db")
		blob := strings.Repeat("x", 250_000)
		var next atomic.Int64
		var g errgroup.Group
		fill0 := time.Now()
		for range 4 {
			g.Go(func() error {
				client := &http.Client{Timeout: time.Minute}
				for {
					if st, err := os.Stat(state); err == nil && st.Size() >= 1<<30 {
						return nil
					}
					i := next.Add(1)
					body := fmt.Sprintf(`{"id":"big-%06d","domain":"bulk","failure_type":"X","request_data":{"blob":"%s"},"snapshot_data":{"blob":"%s"},"response_data":{"blob":"%s"}}`, i, blob, blob, blob)
					resp, err := client.Post("http://"+httpAddr+"/v1/dlq/entries", "application/json", strings.NewReader(body))
					if err != nil {
						return err
					}
					out, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						return fmt.Errorf("store %d: %d %s", i, resp.StatusCode, out)
					}
				}
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		fill := time.Since(fill0)
		anonFilled := procStatus(b, cmd.Process.Pid, "RssAnon:")
		file := filepath.Join(dir, "state.snap")
		client := &http.Client{Timeout: 10 * time.Minute}
		save0 := time.Now()
		resp, err := client.Get("http://" + httpAddr + "/v1/cluster/snapshot")
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("save: %v %v", resp, err)
		}
		f, err := os.Create(file)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(f, resp.Body)
		resp.Body.Close()
		if err != nil || f.Sync() != nil || f.Close() != nil {
			b.Fatalf("save: %v", err)
		}
		save := time.Since(save0)
		restore0 := time.Now()
		in, err := os.Open(file)
		if err != nil {
			b.Fatal(err)
		}
		req, _ := http.NewRequest("POST", "http://"+httpAddr+"/v1/cluster/snapshot:restore", in)
		req.Header.Set("Content-Type", "application/octet-stream")
		req.ContentLength = n
		resp, err = client.Do(req)
		in.Close()
		if err != nil {
			b.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("restore: %d %s", resp.StatusCode, out)
		}
		restore := time.Since(restore0)
		b.ReportMetric(float64(n)/(1<<20), "snapshot-MiB")
		b.ReportMetric(fill.Seconds(), "fill-s")
		b.ReportMetric(save.Seconds(), "save-s")
		b.ReportMetric(restore.Seconds(), "restore-s")
		b.ReportMetric(float64(anonFilled)/(1<<20), "anon-filled-MiB")
		b.ReportMetric(float64(procStatus(b, cmd.Process.Pid, "RssAnon:"))/(1<<20), "anon-after-MiB")
		b.ReportMetric(float64(procStatus(b, cmd.Process.Pid, "RssFile:"))/(1<<20), "file-mapped-MiB")
		stop(cmd)
	}
}

// procStatus is a /proc/PID/status size field (RssAnon:, RssFile:) in bytes.
func procStatus(b testing.TB, pid int, field string) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
