package server

import (
	"errors"
	"path/filepath"
	"testing"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/raftstore"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
)

// FuzzDecodeCommand feeds arbitrary log entries to the command decoder and,
// when they decode to a supported command, to the dispatcher over a real
// bbolt state: nothing may panic, and a refused command writes nothing.
func FuzzDecodeCommand(f *testing.F) {
	seeds := []*raftv1.Command{
		{Actor: "a", Reason: "r", TimeUnixNano: 1, Version: 1, Body: &raftv1.Command_EmergencyTrigger{EmergencyTrigger: &raftv1.EmergencyTrigger{Level: 2, DurationNanos: 1e10}}},
		{Actor: "a", Reason: "", Version: 1, Body: &raftv1.Command_EmergencyTrigger{EmergencyTrigger: &raftv1.EmergencyTrigger{Level: 9, Scope: "Bad Scope"}}},
		{Actor: "a", Reason: "r", Version: 1, Body: &raftv1.Command_EmergencyRelease{EmergencyRelease: &raftv1.EmergencyRelease{Force: true}}},
		{Version: 1, Body: &raftv1.Command_EmergencyExpire{EmergencyExpire: &raftv1.EmergencyExpire{Scope: "global", ActivationRevision: 3}}},
		{Version: 1, Body: &raftv1.Command_EmergencyStep{EmergencyStep: &raftv1.EmergencyStep{Scope: "global", FromLevel: 3}}},
		{Reason: "r", Version: 1, Body: &raftv1.Command_EmergencyConfig{EmergencyConfig: &raftv1.EmergencyConfig{Levels: []*raftv1.LevelAdmission{{Level: 1, Critical: 2}}}}},
		{Version: 1, Body: &raftv1.Command_MemberUpsert{MemberUpsert: &raftv1.MemberUpsert{Id: "n1", GrpcAddr: "x"}}},
		{Version: 1, Body: &raftv1.Command_MemberRemove{MemberRemove: &raftv1.MemberRemove{Id: "n1"}}},
		{Version: 1, RequestId: "req-1", Body: &raftv1.Command_AuditNote{AuditNote: &raftv1.AuditNote{Action: "x"}}},
		{Version: 2, Ignorable: true},
		{Version: 1, Reason: "r", Body: &raftv1.Command_Circuit{Circuit: &raftv1.CircuitCommand{Op: raftv1.CircuitCommand_UPSERT, Name: "svc", PolicyJson: []byte(`{"failure_threshold":5,"minimum_calls":10,"window_size":100,"window_duration":60000000000,"slow_call_duration":60000000000,"recovery_timeout":60000000000,"half_open_max_calls":3,"success_threshold":2,"half_open_stuck_timeout":60000000000,"min_reporters":1,"report_interval":100000000}`)}}},
		{Version: 1, Body: &raftv1.Command_Circuit{Circuit: &raftv1.CircuitCommand{Op: raftv1.CircuitCommand_TRIP, Name: "svc", EvidenceJson: []byte(`{"trigger":"x"}`)}}},
		{Version: 1, Body: &raftv1.Command_Circuit{Circuit: &raftv1.CircuitCommand{Op: raftv1.CircuitCommand_PROBE, Name: "svc"}}},
		{Version: 1, Reason: "r", Body: &raftv1.Command_Circuit{Circuit: &raftv1.CircuitCommand{Op: raftv1.CircuitCommand_FORCE, Name: "svc", State: 1, TtlNanos: 6e10}}},
		{Version: 1, Reason: "r", Body: &raftv1.Command_Circuit{Circuit: &raftv1.CircuitCommand{Op: raftv1.CircuitCommand_KILL_SWITCH, Enabled: true}}},
	}
	for _, s := range seeds {
		b, _ := proto.Marshal(s)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0x01, 0x02})

	db, err := bolt.Open(filepath.Join(f.TempDir(), "state.db"), 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	db.Update(func(tx *bolt.Tx) error {
		for _, b := range schemaBuckets() {
			tx.CreateBucketIfNotExists(b)
		}
		return nil
	})
	a := &applier{}
	index := uint64(0)
	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, err := decodeCommand(data)
		if err != nil {
			if !errors.Is(err, errUndecodable) && !errors.Is(err, errUnsupported) {
				t.Fatalf("unexpected decode error: %v", err)
			}
			if errors.Is(err, errUnsupported) && !cmd.Ignorable {
				return // Apply stops the node here by design
			}
		}
		index++
		before := snapshotOf(t, db)
		var res applyResult
		db.Update(func(tx *bolt.Tx) error {
			res = a.Apply(raftstore.NewKV(tx), index, 1, data).(applyResult)
			return nil
		})
		if res.Err != nil && snapshotOf(t, db) != before {
			t.Fatalf("a refused command (%v) changed the state", res.Err)
		}
	})
}

func snapshotOf(t *testing.T, db *bolt.DB) string {
	var out []byte
	db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			out = append(out, name...)
			return b.ForEach(func(k, v []byte) error {
				out = append(append(out, k...), v...)
				return nil
			})
		})
	})
	return string(out)
}
