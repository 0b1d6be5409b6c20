package config_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/config"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/raftstore"
	bolt "go.etcd.io/bbolt"
)

// state is a real bbolt file with the package's buckets; each step runs in
// its own write transaction, as the FSM does.
func newState(t *testing.T) func(fn func(kv fsm.KV) error) error {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range config.Buckets() {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return func(fn func(kv fsm.KV) error) error {
		var out error
		if err := db.Update(func(tx *bolt.Tx) error { out = fn(raftstore.NewKV(tx)); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
}

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func set(do func(func(fsm.KV) error) error, index uint64, c *raftv1.ConfigSet) (config.Result, error) {
	var r config.Result
	err := do(func(kv fsm.KV) error {
		var err error
		r, err = config.Set(kv, fsm.Meta{Index: index, Time: t0.Add(time.Duration(index) * time.Second), Actor: "alice", Reason: fmt.Sprint("change ", index)}, c)
		return err
	})
	return r, err
}

func TestSetChecksTheVersionAndKeepsHistory(t *testing.T) {
	do := newState(t)
	r, err := set(do, 10, &raftv1.ConfigSet{Section: config.RetryDefaults, ValuesJson: []byte(`{"max_attempts":4}`), CheckVersion: true, PreviousJson: []byte(`{"max_attempts":3}`)})
	if err != nil || r.Section.Version != 1 || !r.Changed || string(r.Before.(json.RawMessage)) != `{"max_attempts":3}` {
		t.Fatalf("first set: %+v %v", r, err)
	}
	if ap := r.Applied(); ap.Action != "config.set" || ap.Target != "config/retry_defaults" {
		t.Fatalf("applied: %+v", ap.Change)
	}
	_, err = set(do, 11, &raftv1.ConfigSet{Section: config.RetryDefaults, ValuesJson: []byte(`{"max_attempts":5}`), CheckVersion: true, ExpectedVersion: 0})
	var ve *config.VersionError
	if !errors.As(err, &ve) || ve.Current != 1 || ve.Expected != 0 {
		t.Fatalf("stale version: %v", err)
	}
	// A set without the check applies over any version; its before is the
	// stored values, not previous_json.
	r, err = set(do, 12, &raftv1.ConfigSet{Section: config.RetryDefaults, ValuesJson: []byte(`{"max_attempts":6}`), PreviousJson: []byte(`{"ignored":true}`)})
	if err != nil || r.Section.Version != 2 || string(r.Before.(json.RawMessage)) != `{"max_attempts":4}` {
		t.Fatalf("forced set: %+v %v", r, err)
	}
	var hist []config.Change
	var sec config.Section
	do(func(kv fsm.KV) error {
		hist = config.History(kv, config.RetryDefaults, 0, 10)
		sec, _ = config.Get(kv, config.RetryDefaults)
		return nil
	})
	if len(hist) != 2 || hist[0].Version != 2 || hist[1].Version != 1 || string(hist[1].After) != `{"max_attempts":4}` || hist[0].Reason != "change 12" {
		t.Fatalf("history: %+v", hist)
	}
	if sec.Version != 2 || sec.Revision != 12 || sec.Actor != "alice" {
		t.Fatalf("section: %+v", sec)
	}
	// Another section's history is its own.
	if _, err := set(do, 13, &raftv1.ConfigSet{Section: config.Flags, ValuesJson: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	do(func(kv fsm.KV) error { hist = config.History(kv, config.RetryDefaults, 2, 10); return nil })
	if len(hist) != 1 || hist[0].Version != 1 {
		t.Fatalf("history before version 2: %+v", hist)
	}
}

func TestSetRefusesBadInputAndWritesNothing(t *testing.T) {
	do := newState(t)
	for _, c := range []*raftv1.ConfigSet{
		{Section: "nope", ValuesJson: []byte(`{}`)},
		{Section: config.Flags, ValuesJson: []byte(`[1]`)},
		{Section: config.Flags, ValuesJson: []byte(`{`)},
		{Section: config.Flags},
	} {
		if _, err := set(do, 5, c); err == nil {
			t.Errorf("%v accepted", c)
		}
	}
	do(func(kv fsm.KV) error {
		for _, name := range config.Sections {
			if _, ok := config.Get(kv, name); ok {
				t.Errorf("section %s written by refused input", name)
			}
		}
		return nil
	})
}

func TestHistoryKeepsTheNewest(t *testing.T) {
	do := newState(t)
	for i := uint64(1); i <= config.MaxHistory+5; i++ {
		if _, err := set(do, i, &raftv1.ConfigSet{Section: config.Flags, ValuesJson: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	var hist []config.Change
	do(func(kv fsm.KV) error { hist = config.History(kv, config.Flags, 0, 1000); return nil })
	if len(hist) != config.MaxHistory || hist[0].Version != config.MaxHistory+5 || hist[len(hist)-1].Version != 6 {
		t.Fatalf("%d changes kept, newest %d, oldest %d", len(hist), hist[0].Version, hist[len(hist)-1].Version)
	}
}

func TestRetryAndFlagRules(t *testing.T) {
	ok := config.DefaultRetry()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for field, r := range map[string]config.Retry{
		"values.max_attempts": func() config.Retry { r := ok; r.MaxAttempts = 0; return r }(),
		"values.backoff":      func() config.Retry { r := ok; r.Backoff = "fibonacci"; return r }(),
		"values.base_delay":   func() config.Retry { r := ok; r.BaseDelay = 0; return r }(),
		"values.max_delay":    func() config.Retry { r := ok; r.MaxDelay = time.Millisecond; return r }(),
		"values.multiplier":   func() config.Retry { r := ok; r.Multiplier = 0.5; return r }(),
		"values.jitter":       func() config.Retry { r := ok; r.Jitter = 1.5; return r }(),
		"values.max_elapsed":  func() config.Retry { r := ok; r.MaxElapsed = -time.Second; return r }(),
	} {
		var ae *fsm.ArgumentError
		if err := r.Validate(); !errors.As(err, &ae) || ae.FieldName != field {
			t.Errorf("%s: %v", field, err)
		}
	}
	for field, f := range map[string]config.FlagSet{
		"values.Bad":               {"Bad": {Enabled: true, Percentage: 100}},
		"values.x.percentage":      {"x": {Percentage: -1}},
		"values.x.value":           {"x": {Percentage: 1, Value: string(make([]byte, config.MaxFlagValue+1))}},
		"values.x.description":     {"x": {Percentage: 1, Description: string(make([]byte, config.MaxFlagDescription+1))}},
		"values.-starts-with-dash": {"-starts-with-dash": {Percentage: 1}},
	} {
		var ae *fsm.ArgumentError
		if err := f.Validate(); !errors.As(err, &ae) || ae.FieldName != field {
			t.Errorf("%s: %v", field, err)
		}
	}
	if err := (config.FlagSet{"new-checkout": {Enabled: true, Percentage: 12.5}}).Validate(); err != nil {
		t.Fatal(err)
	}
}

// previous_json that is not JSON is left out rather than breaking the
// history (the FSM never panics on a command's content).
func TestPreviousThatIsNotJSONIsLeftOut(t *testing.T) {
	do := newState(t)
	r, err := set(do, 3, &raftv1.ConfigSet{Section: config.Flags, ValuesJson: []byte(`{}`), PreviousJson: []byte(`{not json`)})
	if err != nil || r.Before != nil {
		t.Fatalf("%+v %v", r, err)
	}
}
