package baldur

import (
	"testing"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"google.golang.org/protobuf/proto"
)

// The bucket is FNV-1a (32 bit) of "name:key" modulo 10000, so other
// languages compute the same cohorts; these values come from a Python
// one-liner (docs/config.md).
func TestFlagBucketIsStableAcrossLanguages(t *testing.T) {
	for _, tc := range []struct {
		name, key string
		want      uint32
	}{{"new-checkout", "user-1", 4063}, {"new-checkout", "user-2", 1682}, {"dark-mode", "42", 7077}} {
		if got := FlagBucket(tc.name, tc.key); got != tc.want {
			t.Errorf("FlagBucket(%q, %q) = %d, want %d", tc.name, tc.key, got, tc.want)
		}
	}
}

func TestFlagPercentageEdges(t *testing.T) {
	h := newConfig("i-1")
	h.apply(&pb.RuntimeConfig{Flags: map[string]*pb.FeatureFlag{
		"all":  {Enabled: true},
		"none": {Enabled: true, Percentage: proto.Float64(0)},
		"off":  {Enabled: false, Percentage: proto.Float64(100)},
		"some": {Enabled: true, Percentage: proto.Float64(40.63)}, // user-1's bucket is 4063
		"more": {Enabled: true, Percentage: proto.Float64(40.64)},
	}})
	for _, tc := range []struct {
		flag string
		want bool
	}{{"all", true}, {"none", false}, {"off", false}, {"some", false}, {"more", true}, {"missing", false}} {
		name := tc.flag
		if tc.flag == "some" || tc.flag == "more" {
			name = "new-checkout" // the bucket depends on the name
			h.snap.Load().flags[name] = h.snap.Load().flags[tc.flag]
		}
		if got := h.Flag(name).Enabled("user-1"); got != tc.want {
			t.Errorf("%s: Enabled(user-1) = %v, want %v", tc.flag, got, tc.want)
		}
	}
}

// A call's retry settings win; what it leaves out comes from the
// cluster's retry_defaults once set, from the built-in defaults before.
func TestRetryForFillsFromTheCluster(t *testing.T) {
	h := newConfig("i-1")
	if r := h.retryFor(Retry{}); r.MaxAttempts != 3 || r.Jitter != 0.2 {
		t.Fatalf("built-in defaults: %+v", r)
	}
	h.apply(&pb.RuntimeConfig{Versions: map[string]uint64{"retry_defaults": 1}, RetryDefaults: &pb.RetryPolicy{MaxAttempts: 6, Backoff: "linear", Multiplier: 2, Jitter: 0}})
	r := h.retryFor(Retry{MaxAttempts: 2})
	if r.MaxAttempts != 2 || r.Backoff != BackoffLinear || r.Jitter != 0 {
		t.Fatalf("call's attempts with the cluster's backoff and zero jitter: %+v", r)
	}
	if r := h.retryFor(Retry{}); r.MaxAttempts != 6 {
		t.Fatalf("cluster's attempts: %+v", r)
	}
}
