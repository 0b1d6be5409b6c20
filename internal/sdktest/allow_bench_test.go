package sdktest_test

import (
	"context"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/sdk/go/baldur"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/sony/gobreaker/v2"
)

// BenchmarkAllow measures Allow+Record of a success on a closed breaker,
// for baldurd's SDK (cached fleet state, local view) beside sony/gobreaker
// (two-step form) and failsafe-go in the same run.
func BenchmarkAllow(b *testing.B) {
	b.Run("baldurd", func(b *testing.B) {
		c, err := baldur.Dial(context.Background(), "127.0.0.1:1")
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		br := c.Breaker("payments")
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := br.Allow(); err != nil {
					b.Fatal(err)
				}
				br.Record(nil)
			}
		})
	})
	b.Run("gobreaker", func(b *testing.B) {
		cb := gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{Name: "payments", Timeout: time.Minute})
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				done, err := cb.Allow()
				if err != nil {
					b.Fatal(err)
				}
				done(nil)
			}
		})
	})
	b.Run("failsafe", func(b *testing.B) {
		cb := circuitbreaker.NewBuilder[any]().WithFailureThreshold(5).WithDelay(time.Minute).Build()
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !cb.TryAcquirePermit() {
					b.Fatal("rejected")
				}
				cb.RecordSuccess()
			}
		})
	})
}
