package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func devNode(b *testing.B, dir string) (*exec.Cmd, string, string) {
	grpcAddr, httpAddr, raftAddr := freePort(b), freePort(b), freePort(b)
	cmd := exec.Command(baldurd(b), "--dev", "--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--raft-addr", raftAddr)
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
