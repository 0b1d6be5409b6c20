package server

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkGate is what the pre-action gate costs a gated call on the
// leader when it lets the call through (the common case): one read
// transaction over the system control, the kill switch and the global
// emergency level.
func BenchmarkGate(b *testing.B) {
	cfg := Defaults()
	cfg.NodeID, cfg.DataDir, cfg.Peers = "n1", b.TempDir(), ""
	cfg.GRPCAddr, cfg.HTTPAddr, cfg.RaftAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Dev, cfg.LogLevel = true, "error"
	s, err := New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for !s.store.Ready() {
		if time.Now().After(deadline) {
			b.Fatal("no leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	call := withIdentity(context.Background(), identity{Name: "bench"})
	b.ReportAllocs()
	for b.Loop() {
		if err := s.gate(call, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}
