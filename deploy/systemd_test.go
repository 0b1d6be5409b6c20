package deploy_test

import (
	"bufio"
	"flag"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/baldurhq/baldurd/server"
)

// Every variable of the example environment file is a baldurd flag's
// twin (BALDUR_<FLAG>), and the values parse; the unit is valid where
// systemd-analyze is installed.
func TestSystemdUnitAndEnvironment(t *testing.T) {
	var cfg server.Config
	fs := flag.NewFlagSet("baldurd", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	f, err := os.Open("systemd/baldurd.env")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !strings.HasPrefix(k, "BALDUR_") {
			t.Fatalf("not a variable: %q", line)
		}
		name := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k, "BALDUR_")), "_", "-")
		if fs.Lookup(name) == nil {
			t.Errorf("%s is no flag's twin (--%s)", k, name)
		}
		env[k] = v
	}
	if err := server.ApplyEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatalf("the example values do not parse: %v", err)
	}
	if cfg.NodeID != "n1" || !strings.Contains(cfg.Peers, "n1=10.0.0.11:7402") {
		t.Fatalf("parsed %+v", cfg)
	}
	if p, err := exec.LookPath("systemd-analyze"); err == nil {
		out, err := exec.Command(p, "verify", "--man=no", "systemd/baldurd.service").CombinedOutput()
		// verify also reports the binary missing on this machine; anything
		// else is a fault in the unit.
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if l != "" && !strings.Contains(l, "/usr/local/bin/baldurd") && !strings.Contains(l, "baldurd.env") {
				t.Errorf("systemd-analyze verify: %s (%v)", l, err)
			}
		}
	}
}
