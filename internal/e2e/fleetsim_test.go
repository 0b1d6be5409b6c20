package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// baldur-fleetsim against three baldurd processes: 30 instances connect,
// the fleet hears emergency changes and trips a breaker, and the report
// names every node with its figures (one leader among them).
func TestFleetSimulatorReports(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	bin := filepath.Join(t.TempDir(), "baldur-fleetsim")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/baldurhq/baldurd/cmd/baldur-fleetsim").CombinedOutput(); err != nil {
		t.Fatalf("build baldur-fleetsim: %v\n%s", err, out)
	}
	c := startCluster(t, 3)
	c.leader("")
	var grpcs, https []string
	for _, p := range c.nodes {
		grpcs, https = append(grpcs, p.grpc), append(https, p.http)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--endpoints", strings.Join(grpcs, ","), "--metrics", strings.Join(https, ","),
		"--instances", "30", "--breakers", "3", "--leases", "5", "--dlq-rate", "20", "--duration", "4s",
		"--change-every", "500ms", "--trip-every", "1s").CombinedOutput()
	text := string(out)
	if err != nil {
		t.Fatalf("baldur-fleetsim: %v\n%s", err, text)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`30 instances, 3 breakers each`),
		regexp.MustCompile(`fan-out \(write -> instance sees it\), \d+ changes: p50 [0-9.]+m?s`),
		regexp.MustCompile(`fleet trip .*, [1-9]\d* trips: p50 [0-9.]+m?s`),
		regexp.MustCompile(`DLQ stores [1-9]\d* \(0 failed\)`),
	} {
		if !want.MatchString(text) {
			t.Fatalf("the report lacks %q:\n%s", want, text)
		}
	}
	leaders := 0
	for _, p := range c.nodes {
		line := regexp.MustCompile(regexp.QuoteMeta(p.http) + `\s+(\*?)\s+[0-9.]+\s+\d+\s+\d+\s+(\d+)`).FindStringSubmatch(text)
		if line == nil {
			t.Fatalf("no figures for %s:\n%s", p.http, text)
		}
		if line[1] == "*" {
			leaders++
		}
		if line[2] == "0" {
			t.Fatalf("%s serves no watch stream:\n%s", p.http, text)
		}
	}
	if leaders != 1 {
		t.Fatalf("%d leaders in the report:\n%s", leaders, text)
	}
	t.Log(text)
}
