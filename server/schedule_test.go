package server

import (
	"testing"
	"time"

	"github.com/baldurhq/baldurd/coordination"
)

func TestScheduleSkipsOrCatchesUpMissedRuns(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name            string
		job             coordination.Job
		now             time.Time
		scheduled, next time.Time
		skipped         int64
	}{
		{"on time", coordination.Job{Interval: time.Minute, NextRunAt: t0}, t0.Add(2 * time.Second), t0, t0.Add(time.Minute), 0},
		{"three missed, skipped", coordination.Job{Interval: time.Minute, NextRunAt: t0}, t0.Add(3*time.Minute + 10*time.Second),
			t0.Add(3 * time.Minute), t0.Add(4 * time.Minute), 3},
		{"three missed, caught up once", coordination.Job{Interval: time.Minute, NextRunAt: t0, CatchUp: true}, t0.Add(3*time.Minute + 10*time.Second),
			t0, t0.Add(4 * time.Minute), 0},
		{"cron, two missed hours skipped", coordination.Job{Cron: "@hourly", NextRunAt: t0}, t0.Add(2*time.Hour + time.Minute),
			t0.Add(2 * time.Hour), t0.Add(3 * time.Hour), 2},
		{"cron, caught up", coordination.Job{Cron: "0 * * * *", NextRunAt: t0, CatchUp: true}, t0.Add(2*time.Hour + time.Minute),
			t0, t0.Add(3 * time.Hour), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			scheduled, next, skipped, err := coordination.Schedule(tc.job, tc.now, cronNext)
			if err != nil || !scheduled.Equal(tc.scheduled) || !next.Equal(tc.next) || skipped != tc.skipped {
				t.Fatalf("got %v %v %d %v, want %v %v %d", scheduled, next, skipped, err, tc.scheduled, tc.next, tc.skipped)
			}
		})
	}
}
