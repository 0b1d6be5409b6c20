package baldur

import (
	"context"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
)

// BenchmarkEmergency measures the hot-path reads against a cached snapshot
// (LEVEL_2: standard requests are admitted at random with p = 0.1).
func BenchmarkEmergency(b *testing.B) {
	e := newEmergency(0)
	e.apply(&pb.WatchEmergencyResponse{Snapshot: true, Revision: 1,
		States: []*pb.EmergencyState{{Scope: "global", Level: pb.EmergencyLevel_LEVEL_2, Active: true}},
		Config: &pb.EmergencyConfig{Levels: []*pb.LevelRule{{Level: pb.EmergencyLevel_LEVEL_2, Admission: &pb.Admission{Critical: 1, Standard: 0.1}}}}})
	b.Run("Level", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if e.Level() != Level2 {
				b.Fatal("level")
			}
		}
	})
	b.Run("Admit/critical", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				e.Admit(TierCritical)
			}
		})
	})
	b.Run("Admit/standard-fractional", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				e.Admit(TierStandard)
			}
		})
	})
}

// BenchmarkProtect measures the success path of Protect.
func BenchmarkProtect(b *testing.B) {
	c, err := Dial(context.Background(), "127.0.0.1:1")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	ok := func(context.Context) (int, error) { return 1, nil }
	b.Run("circuit", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := Protect(ctx, c, "payments", ok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("circuit+timeout+retry", func(b *testing.B) {
		timeout, retry := WithTimeout[int](2*time.Second), WithRetry[int](Retry{MaxAttempts: 3})
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := Protect(ctx, c, "payments", ok, timeout, retry); err != nil {
				b.Fatal(err)
			}
		}
	})
}
