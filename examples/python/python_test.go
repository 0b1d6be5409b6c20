package python

import (
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/internal/testcluster"
)

func TestPythonClientTakesPartInFleetBreakers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node and a Python process")
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is needed for this test (apt-get install python3)")
	}
	c := testcluster.New(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, "baldur_client.py", "--base", "http://"+c.Nodes[0].HTTPAddr, "--demo").CombinedOutput()
	if err != nil {
		t.Fatalf("python client: %v\n%s", err, out)
	}
	text := string(out)
	if !strings.Contains(text, "state CLOSED") || !strings.Contains(text, "rejecting calls: fleet breaker py-payments is OPEN") {
		t.Fatalf("unexpected output:\n%s", text)
	}
	resp, err := http.Get("http://" + c.Nodes[0].HTTPAddr + "/v1/circuits/py-payments")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		State    string `json:"state"`
		Evidence struct {
			Trigger string `json:"trigger"`
		} `json:"evidence"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || got.State != "OPEN" || got.Evidence.Trigger == "" {
		t.Fatalf("server state: %+v %v", got, err)
	}
}
