package baldur

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// forbiddenModules are the server's dependencies that must never reach an
// application through the SDK.
var forbiddenModules = []string{
	"github.com/hashicorp/raft",
	"github.com/hashicorp/go-metrics",
	"go.etcd.io/bbolt",
	"github.com/jackc/pgx",
	"github.com/spf13/cobra",
	"github.com/prometheus/",
	"github.com/grpc-ecosystem/grpc-gateway",
	"github.com/baldurhq/baldurd", // the server module itself
}

// isForbidden reports whether module path mod is, or lies under, a forbidden
// module path.
func isForbidden(mod string) (string, bool) {
	for _, f := range forbiddenModules {
		if mod == f || strings.HasPrefix(mod, strings.TrimSuffix(f, "/")+"/") {
			if f == "github.com/baldurhq/baldurd" && mod != f {
				continue // the api and sdk modules are allowed
			}
			return f, true
		}
	}
	return "", false
}

// goCmd runs the go command of the toolchain running this test in dir,
// outside any workspace, and returns its combined output.
func goCmd(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	return string(out)
}

// checkSlim fails t for every forbidden module among the words of out
// (the output of `go list -m all` or `go mod graph`; "path@version" words
// are cut at the @).
func checkSlim(t *testing.T, what, out string) {
	t.Helper()
	seen := 0
	for _, word := range strings.Fields(out) {
		mod, _, _ := strings.Cut(word, "@")
		if !strings.Contains(mod, ".") {
			continue // a version or "=>"
		}
		seen++
		if f, bad := isForbidden(mod); bad {
			t.Errorf("%s holds %s (forbidden: %s)", what, mod, f)
		}
	}
	if seen == 0 {
		t.Fatalf("%s lists no module:\n%s", what, out)
	}
}

// TestModuleGraphIsSlim proves the SDK module's own graph holds none of the
// server's dependencies.
func TestModuleGraphIsSlim(t *testing.T) {
	sdkRoot, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	checkSlim(t, "the SDK module graph", goCmd(t, sdkRoot, "list", "-m", "all"))
	checkSlim(t, "the SDK module graph", goCmd(t, sdkRoot, "mod", "graph"))
}

// TestExternalModuleTidiesAndBuilds plays an application: a fresh module
// that imports the SDK, runs `go mod tidy` and `go build`, and ends up with
// none of the server's dependencies. (Before the SDK had a module of its own
// this failed: the application got the server's module graph, whose
// go-metrics replace does not apply outside the server module.) The two
// replace directives stand in for published versions of the SDK and API
// modules.
func TestExternalModuleTidiesAndBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command; skipped with -short")
	}
	sdkRoot, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	apiRoot := filepath.Join(sdkRoot, "..", "..", "api")
	app := t.TempDir()
	gomod := "module example.com/app\n\ngo 1.26.8\n\n" +
		"require github.com/baldurhq/baldurd/sdk/go v0.0.0-00010101000000-000000000000\n\n" +
		"replace github.com/baldurhq/baldurd/sdk/go => " + sdkRoot + "\n\n" +
		"replace github.com/baldurhq/baldurd/api => " + apiRoot + "\n"
	main := `package main

import (
	"context"
	"fmt"
	"time"

	"github.com/baldurhq/baldurd/sdk/go/baldur"
)

func main() {
	ctx := context.Background()
	c, err := baldur.Dial(ctx, "127.0.0.1:7400", baldur.WithInstanceID("app-1"))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	v, err := baldur.Protect(ctx, c, "payments", func(context.Context) (string, error) { return "ok", nil },
		baldur.WithTimeout[string](2*time.Second), baldur.WithRetry[string](baldur.Retry{MaxAttempts: 3}))
	fmt.Println(v, err, c.Emergency().Level(), c.Breaker("payments").Allow())
}
`
	for name, body := range map[string]string{"go.mod": gomod, "main.go": main} {
		if err := os.WriteFile(filepath.Join(app, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	goCmd(t, app, "mod", "tidy")
	goCmd(t, app, "build", "-o", filepath.Join(app, "app"), ".")
	if _, err := os.Stat(filepath.Join(app, "app")); err != nil {
		t.Fatalf("no binary built: %v", err)
	}
	checkSlim(t, "the application's module graph", goCmd(t, app, "list", "-m", "all"))
	gomodAfter, err := os.ReadFile(filepath.Join(app, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(gomodAfter), "google.golang.org/grpc") {
		t.Errorf("tidy left no grpc requirement; go.mod:\n%s", gomodAfter)
	}
}
