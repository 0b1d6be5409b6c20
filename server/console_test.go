package server_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"github.com/baldurhq/baldurd/server"
	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/types/known/structpb"
)

// chromium finds the browser the console tests drive: required when
// BALDUR_TEST_CHROMIUM is set (CI sets it), otherwise the test is skipped
// with a one-line reason when none is installed.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("BALDUR_TEST_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if name == "" || name == "1" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("BALDUR_TEST_CHROMIUM") != "" {
		t.Fatal("BALDUR_TEST_CHROMIUM is set but no chromium is installed (apt-get install chromium)")
	}
	t.Skip("console tests skipped: no chromium (apt-get install chromium, or set BALDUR_TEST_CHROMIUM)")
	return ""
}

// browser is a headless Chromium tab that records the page's errors.
type browser struct {
	t      *testing.T
	ctx    context.Context
	mu     sync.Mutex
	errors []string
	shots  string
	// expected are errors the test provokes (a refused action's failed
	// request, which the browser logs), each allowed once.
	expected []string
}

// expect allows one logged error containing s.
func (b *browser) expect(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expected = append(b.expected, s)
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	b := &browser{t: t, ctx: ctx, shots: os.Getenv("BALDUR_CONSOLE_SCREENSHOTS")}
	if b.shots == "" {
		b.shots = t.TempDir()
	}
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleException || m.Type == "error" {
				b.mu.Lock()
				b.errors = append(b.errors, m.Text)
				b.mu.Unlock()
			}
		}
	}()
	return b
}

func (b *browser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// text waits up to d until the element's text satisfies ok.
func (b *browser) text(sel string, d time.Duration, ok func(string) bool) string {
	b.t.Helper()
	deadline := time.Now().Add(d)
	var s string
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 500*time.Millisecond)
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, sel)))
		cancel()
		if err == nil {
			s = v
			if ok(s) {
				return s
			}
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s: %q after %v", sel, s, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *browser) screenshot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) noErrors() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var unexpected []string
	for _, e := range b.errors {
		i := slices.IndexFunc(b.expected, func(x string) bool { return strings.Contains(e, x) })
		if i < 0 {
			unexpected = append(unexpected, e)
			continue
		}
		b.expected = slices.Delete(b.expected, i, i+1)
	}
	if len(unexpected) > 0 {
		b.t.Fatalf("the page logged errors: %v", unexpected)
	}
}

// The console in a real browser against a 3-node cluster, through a
// follower: every page loads without errors; the overview shows the
// leader; a breaker forced open through the API shows OPEN within a
// second; forcing it closed from the page changes the cluster and the
// audit trail; an emergency triggered from the page shows on the
// overview, and a refused trigger (no reason) shows the API's message and
// changes nothing.
func TestConsoleInABrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("drives a browser against a cluster")
	}
	b := newBrowser(t)
	c := testcluster.New(t, 3)
	leader := c.WaitForLeader(10 * time.Second)
	node := c.Followers()[0]
	r := restClient{t: t, base: "http://" + node.HTTPAddr}
	base := "http://" + node.HTTPAddr + "/ui/"

	b.do(chromedp.Navigate(base + "#/overview"))
	b.text("#leader", 5*time.Second, func(s string) bool { return s == leader.ID })
	b.text("#level", time.Second, func(s string) bool { return s == "NORMAL" })
	b.screenshot("overview")

	// A breaker forced open elsewhere appears OPEN within a second.
	b.do(chromedp.Navigate(base+"#/circuits"), chromedp.WaitVisible(chromedp.CSS("#circuit-action")))
	b.text("#live", 5*time.Second, func(s string) bool { return s == "live" })
	if code, body := r.do("PUT", "/v1/circuits/psp/policy", `{"failure_threshold":5}`); code != 200 {
		t.Fatalf("policy: %d %v", code, body)
	}
	b.text(`tr[data-name="psp"] td.state`, time.Second, func(s string) bool { return s == "CLOSED" })
	if code, body := r.do("POST", "/v1/circuits/psp:forceOpen", `{"reason":"provider outage","ttl":"600s"}`); code != 200 {
		t.Fatalf("force open: %d %v", code, body)
	}
	start := time.Now()
	b.text(`tr[data-name="psp"] td.state`, time.Second, func(s string) bool { return s == "OPEN" })
	t.Logf("OPEN on the page %v after the API answered", time.Since(start))
	b.screenshot("circuits")

	// Force it closed from the page, with a reason.
	b.do(chromedp.SetValue(chromedp.CSS(`select[name="action"]`), "forceClose"),
		chromedp.SendKeys(chromedp.CSS("#act-name"), "psp"),
		chromedp.SendKeys(chromedp.CSS("#act-reason"), "provider back"),
		chromedp.Click(chromedp.CSS(`#circuit-action button[type="submit"]`)))
	b.text("#circuit-action .ok", 5*time.Second, func(s string) bool { return s == "done" })
	b.text(`tr[data-name="psp"] td.state`, time.Second, func(s string) bool { return s == "CLOSED" })
	if code, body := r.do("GET", "/v1/circuits/psp", ""); code != 200 || body["state"] != "CLOSED" || body["pin_reason"] != "provider back" {
		t.Fatalf("after force close from the page: %d %v", code, body)
	}
	// The policy, viewed and edited from the page.
	b.do(chromedp.Click(chromedp.CSS(`button[aria-label="Policy of psp"]`)), chromedp.WaitVisible(chromedp.CSS("#policy-json")))
	if cur := b.text("#policy-json", time.Second, func(s string) bool { return strings.Contains(s, `"failure_threshold": 5`) }); cur == "" {
		t.Fatal("policy not shown")
	}
	b.do(chromedp.SetValue(chromedp.CSS("#policy-json"), `{"failure_threshold": 7, "minimum_calls": 20}`),
		chromedp.SendKeys(chromedp.CSS("#policy-reason"), "tune psp"),
		chromedp.Click(chromedp.CSS(`form[aria-label="Save policy"] button[type="submit"]`)))
	b.text(`form[aria-label="Save policy"] .ok`, 5*time.Second, func(s string) bool { return s == "done" })
	if _, body := r.do("GET", "/v1/circuits/psp", ""); dig(body, "policy", "failure_threshold") != 7.0 || dig(body, "policy", "minimum_calls") != 20.0 {
		t.Fatalf("policy after the edit: %v", body["policy"])
	}
	_, audit := r.do("GET", "/v1/audit?page_size=50", "")
	if !strings.Contains(fmt.Sprint(audit), "provider back") {
		t.Fatalf("the audit trail does not show the page's action: %v", audit)
	}

	// Trigger an emergency from the page: refused without a reason (the
	// API's message shown, nothing changed), then triggered.
	b.expect("status of 400")
	b.do(chromedp.Navigate(base+"#/emergency"), chromedp.WaitVisible(chromedp.CSS("#trigger-reason")),
		chromedp.SetValue(chromedp.CSS("#trigger-level"), "LEVEL_2"),
		chromedp.Click(chromedp.CSS(`form[aria-label="Trigger"] button[type="submit"]`)))
	msg := b.text(`form[aria-label="Trigger"] .error`, 5*time.Second, func(s string) bool { return s != "" })
	if !strings.Contains(msg, "reason") {
		t.Fatalf("refusal shown: %q", msg)
	}
	if _, body := r.do("GET", "/v1/emergency", ""); dig(body, "state", "level") != "NORMAL" {
		t.Fatalf("a refused trigger changed the level: %v", body)
	}
	b.do(chromedp.SendKeys(chromedp.CSS("#trigger-reason"), "game day drill"),
		chromedp.Click(chromedp.CSS(`form[aria-label="Trigger"] button[type="submit"]`)))
	b.text(`form[aria-label="Trigger"] .ok`, 5*time.Second, func(s string) bool { return s == "done" })
	b.text("#emergency-now .LEVEL_2", 2*time.Second, func(s string) bool { return s == "LEVEL_2" })
	b.screenshot("emergency")
	b.do(chromedp.Navigate(base + "#/overview"))
	b.text("#level", 2*time.Second, func(s string) bool { return s == "LEVEL_2" })
	if code, body := r.do("POST", "/v1/emergency:release", `{"reason":"drill over","force":true}`); code != 200 {
		t.Fatalf("release: %d %v", code, body)
	}

	// A DLQ entry stored by an SDK appears, opens with its payload masked,
	// and replays from the page.
	sdk, err := baldur.Dial(context.Background(), node.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()
	data, _ := structpb.NewStruct(map[string]any{"order": "A-17", "password": "hunter2"})
	stored, err := sdk.DLQ().Store(context.Background(), &baldur.Entry{Domain: "payment", FailureType: "MAX_RETRIES_TIMEOUT",
		ErrorMessage: "psp timed out", RequestData: data})
	if err != nil {
		t.Fatal(err)
	}
	b.do(chromedp.Navigate(base + "#/dlq"))
	b.text(fmt.Sprintf(`tr[data-id=%q] td.state`, stored.ID), 5*time.Second, func(s string) bool { return s == "PENDING" })
	b.do(chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-id=%q] button`, stored.ID))))
	payload := b.text("#dlq-entry-json", 5*time.Second, func(s string) bool { return strings.Contains(s, "A-17") })
	if strings.Contains(payload, "hunter2") {
		t.Fatalf("the entry shows the password unmasked:\n%s", payload)
	}
	b.screenshot("dlq")
	b.do(chromedp.SendKeys(chromedp.CSS("#dlq-replay-reason"), "psp is back"),
		chromedp.Click(chromedp.CSS(`form[aria-label="Replay"] button[type="submit"]`)))
	b.text(`form[aria-label="Replay"] .ok`, 5*time.Second, func(s string) bool { return s == "done" })
	if code, body := r.do("GET", "/v1/dlq/entries/"+stored.ID, ""); code != 200 || body["replay_origin"] != "manual" {
		t.Fatalf("after replay from the page: %d %v", code, body)
	}

	// The other pages load.
	for _, page := range []string{"coordination", "audit", "rollouts"} {
		b.do(chromedp.Navigate(base + "#/" + page))
		b.text(`main[data-ready="true"] h1`, 5*time.Second, func(s string) bool { return s != "" })
		b.screenshot(page)
	}
	b.do(chromedp.Navigate(base + "#/audit"))
	b.do(chromedp.Click(chromedp.CSS("#audit-verify-button")))
	b.text("#audit-verify", 5*time.Second, func(s string) bool { return strings.HasPrefix(s, "intact") })

	// Usable: every control has a name; at 420 px nothing overflows the
	// page (wide tables scroll in their own box).
	for _, page := range []string{"overview", "circuits", "emergency", "dlq", "coordination", "audit", "rollouts"} {
		b.do(chromedp.Navigate(base + "#/" + page))
		b.text(`main[data-ready="true"] h1`, 5*time.Second, func(s string) bool { return s != "" })
		unnamed, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`[...document.querySelectorAll("main button, main input, main select, main textarea")].filter(e =>
			!(e.getAttribute("aria-label") || e.closest("label") || (e.tagName === "BUTTON" && e.textContent.trim()))).length`))
		if err != nil || unnamed != 0 {
			t.Fatalf("%s: %d controls without an accessible name (%v)", page, unnamed, err)
		}
	}
	b.do(chromedp.EmulateViewport(420, 800), chromedp.Navigate(base+"#/circuits"))
	b.text(`main[data-ready="true"] h1`, 5*time.Second, func(s string) bool { return s != "" })
	// (Left mid-load, the previous page leaves nothing behind.)
	b.text("main", time.Second, func(s string) bool { return !strings.Contains(s, "Notification channels") })
	overflow, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth + 1`))
	if err != nil || overflow {
		t.Fatalf("the circuits page overflows a 420 px window (%v)", err)
	}
	b.screenshot("narrow")
	b.do(chromedp.EmulateViewport(1280, 900))

	// The node serving the page goes away: the page says so, and follows
	// again when it is back.
	idx := slices.IndexFunc(c.Nodes, func(n *testcluster.Node) bool { return n == node })
	b.do(chromedp.Navigate(base + "#/circuits"))
	b.text("#live", 5*time.Second, func(s string) bool { return s == "live" })
	b.expect("ERR_CONNECTION_REFUSED")
	c.Kill(idx)
	b.text("#live", 5*time.Second, func(s string) bool { return strings.HasPrefix(s, "disconnected") })
	c.Restart(idx)
	b.text("#live", 15*time.Second, func(s string) bool { return s == "live" })
	b.noErrors()
}

// With tokens on, the console asks for one; a viewer's sees no action
// forms, and a write forged from the page's own context is refused.
func TestConsoleWithAViewerToken(t *testing.T) {
	if testing.Short() {
		t.Skip("drives a browser against a cluster")
	}
	b := newBrowser(t)
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("node tok-node-0123456789abcdef admin\nvera tok-vera-0123456789abcdef viewer\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := testcluster.New(t, 3, testcluster.WithConfig(func(_ int, cfg *server.Config) {
		cfg.TokenFile, cfg.Token = file, "tok-node-0123456789abcdef"
	}))
	c.WaitForLeader(10 * time.Second)
	base := "http://" + c.Followers()[0].HTTPAddr + "/ui/"
	b.expect("status of 401") // the first call, without a token, asks for one
	b.do(chromedp.Navigate(base+"#/circuits"), chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), "tok-vera-0123456789abcdef"),
		chromedp.Click(chromedp.CSS(`#login-form button[type="submit"]`)))
	b.text("#who", 5*time.Second, func(s string) bool { return s == "vera (viewer)" })
	b.text(`main[data-ready="true"]`, 5*time.Second, func(s string) bool { return strings.Contains(s, "Read only") })
	for _, page := range []string{"circuits", "emergency", "dlq"} {
		b.do(chromedp.Navigate(base + "#/" + page))
		b.text(`main[data-ready="true"] h1`, 5*time.Second, func(s string) bool { return s != "" })
		n, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`document.querySelectorAll("main form:not([aria-label^='Filter']) button[type=submit]").length`))
		if err != nil || n != 0 {
			t.Fatalf("%s: %d action buttons for a viewer (%v)", page, n, err)
		}
	}
	b.screenshot("viewer")
	status, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`fetch("/v1/emergency:trigger", {method: "POST",
		headers: {"Content-Type": "application/json", "Authorization": "Bearer " + sessionStorage.getItem("baldur-token")},
		body: JSON.stringify({level: "LEVEL_3", reason: "forged from the page"})}).then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil || status != 403 {
		t.Fatalf("a forged write from the page: %d (%v), want 403", status, err)
	}
	r := restClient{t: t, base: "http://" + c.Leader().HTTPAddr}
	if code, _, body := r.doAs("GET", "/v1/emergency", "", "", map[string]string{"Authorization": "Bearer tok-node-0123456789abcdef"}); code != 200 || dig(body, "state", "level") != "NORMAL" {
		t.Fatalf("after the forged write: %d %v", code, body)
	}
	b.expect("status of 403")
	b.noErrors()
}
