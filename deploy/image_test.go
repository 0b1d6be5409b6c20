package deploy_test

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// root is the repository root (this package is deploy/).
const root = ".."

// The Dockerfile's build stage runs scripts/build-static.sh, whose
// binaries are statically linked; its final stage is distroless, non-root.
func TestImageBuildsStaticBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	doc, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	for _, want := range []string{"RUN ./scripts/build-static.sh /out", "FROM gcr.io/distroless/static-debian12:nonroot",
		"USER 65532:65532", "COPY --from=build /out/baldurd /out/baldurctl /", `ENTRYPOINT ["/baldurd"]`} {
		if !strings.Contains(text, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	out := t.TempDir()
	cmd := exec.Command("./scripts/build-static.sh", out)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build-static.sh: %v\n%s", err, b)
	}
	for _, name := range []string{"baldurd", "baldurctl"} {
		f, err := elf.Open(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("%s is dynamically linked (%v)", name, p.Type)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("%s needs %v", name, libs)
		}
		f.Close()
	}
}
