package archtest

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/baldurhq/baldurd"

type pkg struct {
	ImportPath string
	Doc        string
	Name       string
	Imports    []string
	Deps       []string
	Standard   bool
}

func list(t *testing.T, patterns ...string) []pkg {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list", "-json"}, patterns...)...).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func isStd(path string) bool { return !strings.Contains(strings.Split(path, "/")[0], ".") }

func TestDomainsImportOnlyStdlibAndTheInternalProto(t *testing.T) {
	for _, p := range list(t, module+"/emergency", module+"/audit", module+"/circuit", module+"/coordination", module+"/dlq", module+"/config", module+"/canary", module+"/governance", module+"/notify", module+"/idempotency") {
		for _, imp := range p.Imports {
			if isStd(imp) || imp == module+"/api/gen/baldur/raft/v1" || imp == module+"/internal/jsonw" || imp == module+"/internal/fsm" {
				continue
			}
			t.Errorf("%s imports %s; domains may import the standard library, api/gen/baldur/raft/v1, internal/fsm and internal/jsonw only", p.ImportPath, imp)
		}
	}
}

// TestVocabularyIsALeaf: internal/fsm, which every domain imports, and
// internal/tlsconf, which handles the node's keys, import the standard
// library only.
func TestVocabularyIsALeaf(t *testing.T) {
	for _, leaf := range []string{"internal/fsm", "internal/tlsconf"} {
		pkgs := list(t, module+"/"+leaf)
		if len(pkgs) != 1 {
			t.Fatalf("go list %s: %d packages", leaf, len(pkgs))
		}
		for _, imp := range pkgs[0].Imports {
			if !isStd(imp) {
				t.Errorf("%s imports %s; it may import the standard library only", leaf, imp)
			}
		}
	}
}

func TestRaftstoreKnowsNoDomain(t *testing.T) {
	for _, p := range list(t, module+"/raftstore") {
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, module+"/") && imp != module+"/api/gen/baldur/raft/v1" {
				t.Errorf("raftstore imports %s", imp)
			}
		}
	}
}

func TestSDKStaysThin(t *testing.T) {
	forbidden := []string{
		"github.com/hashicorp/raft", "go.etcd.io/bbolt", "github.com/jackc/pgx",
		module + "/server", module + "/raftstore", "github.com/grpc-ecosystem/grpc-gateway",
	}
	for _, p := range list(t, module+"/sdk/go/...") {
		for _, dep := range p.Deps {
			for _, f := range forbidden {
				if strings.HasPrefix(dep, f) {
					t.Errorf("the SDK depends on %s", dep)
				}
			}
			if strings.HasPrefix(dep, module+"/") && !strings.HasPrefix(dep, module+"/api/gen/baldur/v1") && !strings.HasPrefix(dep, module+"/sdk/go/") {
				t.Errorf("the SDK depends on %s; it may use api/gen only", dep)
			}
		}
	}
}

func TestEveryPackageHasADocComment(t *testing.T) {
	for _, p := range list(t, module+"/...", module+"/sdk/go/...") {
		if strings.HasPrefix(p.ImportPath, module+"/api/gen") || p.ImportPath == module+"/internal/gateway" {
			continue // generated
		}
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("package %s has no doc comment", p.ImportPath)
		}
	}
}
