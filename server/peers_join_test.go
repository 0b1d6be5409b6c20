package server_test

import (
	"testing"

	"github.com/baldurhq/baldurd/server"
)

// One set of arguments serves every pod of a StatefulSet: a node --peers
// lists bootstraps with them, one it does not list joins through --join.
func TestPeersWithJoin(t *testing.T) {
	peers := "baldurd-0=baldurd-0.h:7402,baldurd-1=baldurd-1.h:7402,baldurd-2=baldurd-2.h:7402"
	listed := server.Config{NodeID: "baldurd-1", Peers: peers, Join: "baldurd:7400"}
	if l, err := listed.PeerList(); err != nil || len(l) != 3 {
		t.Fatalf("a listed node: %v %v", l, err)
	}
	later := server.Config{NodeID: "baldurd-3", Peers: peers, Join: "baldurd:7400"}
	if l, err := later.PeerList(); err != nil || l != nil {
		t.Fatalf("a node added later joins: %v %v", l, err)
	}
	alone := server.Config{NodeID: "baldurd-3", Peers: peers}
	if _, err := alone.PeerList(); err == nil {
		t.Fatal("a node --peers does not list, without --join, was accepted")
	}
}
