package sdktest_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/internal/pgtest"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"github.com/baldurhq/baldurd/server"
)

// BenchmarkIdempotency is acquire + complete of fresh keys through the
// SDK (baldur.Idempotent, two Raft writes each) by 64 concurrent callers
// on 3 nodes: operations a second and p99, with the records in the
// replicated state and in PostgreSQL.
func BenchmarkIdempotency(b *testing.B) {
	b.Run("store=raft", func(b *testing.B) { benchIdempotency(b, testcluster.New(b, 3)) })
	b.Run("store=postgres", func(b *testing.B) {
		dsn := pgtest.Schema(b, "baldur_bench")
		benchIdempotency(b, testcluster.New(b, 3, testcluster.WithConfig(func(_ int, cfg *server.Config) {
			cfg.IdempotencyStore, cfg.PostgresDSN = "postgres", dsn
		})))
	})
}

func benchIdempotency(b *testing.B, c *testcluster.Cluster) {
	c.WaitForLeader(10 * time.Second)
	var clients []*baldur.Client
	for i := range 4 {
		cl, err := baldur.Dial(context.Background(), endpoints(c), baldur.WithInstanceID(fmt.Sprintf("bench-%d", i)))
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		clients = append(clients, cl)
	}
	const callers = 64
	var next atomic.Int64
	lat := make([][]time.Duration, callers)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := clients[w%len(clients)]
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				t0 := time.Now()
				if _, err := baldur.Idempotent(context.Background(), cl, fmt.Sprintf("k-%d-%d", b.N, i), func(context.Context) (int, error) { return 1, nil }); err != nil {
					b.Error(err)
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	if len(all) == 0 {
		return
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
}
