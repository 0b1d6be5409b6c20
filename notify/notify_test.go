package notify_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/notify"
	"github.com/baldurhq/baldurd/raftstore"
	bolt "go.etcd.io/bbolt"
)

func TestClassifyRouteEscalate(t *testing.T) {
	at := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	ev, ok := notify.Classify(7, "circuit.open", "circuit/payments", "system:leader", "failure threshold", at)
	if !ok || ev.Category != "circuit" || ev.Priority != "high" || ev.Title != "Breaker payments is OPEN" || ev.DedupKey != "circuit/payments/state" || ev.AuditSeq != 7 {
		t.Fatalf("classify: %+v", ev)
	}
	if _, ok := notify.Classify(8, "dlq.store", "dlq/x", "", "", at); ok {
		t.Fatal("a DLQ store is not an event")
	}
	chans := []notify.Channel{
		{Name: "all", MinPriority: "low"},
		{Name: "circuit-crit", Categories: []string{"circuit"}, MinPriority: "critical"},
		{Name: "emergency", Categories: []string{"emergency"}, MinPriority: "low"},
	}
	names := func(cs []notify.Channel) (out []string) {
		for _, c := range cs {
			out = append(out, c.Name)
		}
		return out
	}
	if got := names(notify.Route(chans, ev)); len(got) != 1 || got[0] != "all" {
		t.Fatalf("route: %v", got)
	}
	up := notify.Escalate(ev, 2)
	if up.Priority != "critical" || notify.Escalate(ev, 1).Priority != "high" || notify.Escalate(up, 3).Priority != "critical" {
		t.Fatalf("escalate: %+v", up)
	}
	if got := names(notify.Route(chans, up)); len(got) != 2 {
		t.Fatalf("route escalated: %v", got)
	}
}

func TestChannelValidation(t *testing.T) {
	ok := notify.Channel{Name: "ops", Type: "webhook", URL: "https://hooks.example.com/x", Secret: "0123456789abcdef", MinPriority: "low"}
	if err := ok.Validate(); err != nil || ok.Host() != "hooks.example.com" {
		t.Fatalf("%v %s", err, ok.Host())
	}
	for field, mut := range map[string]func(*notify.Channel){
		"name":          func(c *notify.Channel) { c.Name = "Ops!" },
		"type":          func(c *notify.Channel) { c.Type = "pager" },
		"url":           func(c *notify.Channel) { c.URL = "hooks.example.com" },
		"secret":        func(c *notify.Channel) { c.Secret = "x" },
		"categories[0]": func(c *notify.Channel) { c.Categories = []string{"weather"} },
		"min_priority":  func(c *notify.Channel) { c.MinPriority = "urgent" },
	} {
		c := ok
		mut(&c)
		var ae *fsm.ArgumentError
		if err := c.Validate(); !errors.As(err, &ae) || ae.FieldName != field {
			t.Errorf("%s: %v", field, err)
		}
	}
}

func TestSignature(t *testing.T) {
	// echo -n "1700000000.{}" | openssl dgst -sha256 -hmac key
	if got := notify.Signature("key", 1700000000, []byte("{}")); got != "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae" {
		t.Fatalf("signature %s", got)
	}
}

// Claims cool an episode down and are forgotten once their cooldown ended:
// the claims kept are those of the last cooldown.
func TestClaimsCoolDownAndAreForgotten(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.Update(func(tx *bolt.Tx) error {
		for _, b := range notify.Buckets() {
			tx.CreateBucket(b)
		}
		return nil
	})
	t0 := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	claim := func(index uint64, at time.Duration, key string) bool {
		var r notify.Result
		db.Update(func(tx *bolt.Tx) error {
			r, _ = notify.Apply(raftstore.NewKV(tx), fsm.Meta{Index: index, Time: t0.Add(at)},
				&raftv1.NotifyCommand{Op: raftv1.NotifyCommand_CLAIM, AuditSeq: index, DedupKey: key, CooldownNanos: int64(time.Minute)})
			return nil
		})
		return r.Claimed
	}
	claims := func() (n int) {
		db.View(func(tx *bolt.Tx) error {
			raftstore.NewKV(tx).Scan(notify.BucketClaims, nil, false, func(_, _ []byte) bool { n++; return true })
			return nil
		})
		return n
	}
	if !claim(1, 0, "circuit/a/state") || claim(2, 30*time.Second, "circuit/a/state") {
		t.Fatal("a second event within the cooldown was not suppressed")
	}
	for i := range 10 {
		claim(uint64(3+i), time.Duration(i)*time.Second, fmt.Sprintf("circuit/b%d/state", i))
	}
	if n := claims(); n != 11 {
		t.Fatalf("%d claims, want 11", n)
	}
	if !claim(20, 2*time.Minute, "circuit/a/state") {
		t.Fatal("the episode was not notified again after its cooldown")
	}
	if n := claims(); n != 1 {
		t.Fatalf("%d claims kept after every other cooldown ended, want 1", n)
	}
}
