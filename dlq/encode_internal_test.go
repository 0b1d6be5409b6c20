package dlq

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

// encodeEntry writes the bytes json.Marshal writes, for any entry whose
// documents are compact JSON.
func TestEncodeEntryMatchesEncodingJSON(t *testing.T) {
	rnd := rand.New(rand.NewPCG(5, 6))
	pieces := []string{"", "a", "order-1", "\"", "\\", "<b>&</b>", "\n\r\t\b\f", "\x00\x01\x1f\x7f", "é", "日本", "\u2028\u2029",
		"\xff", "a\xc3", "\xed\xa0\x80", "😀", " ", "{}"}
	str := func() string {
		var b []byte
		for range rnd.IntN(4) {
			b = append(b, pieces[rnd.IntN(len(pieces))]...)
		}
		return string(b)
	}
	tm := func() time.Time {
		switch rnd.IntN(3) {
		case 0:
			return time.Time{}
		case 1:
			return time.Unix(rnd.Int64N(4e9), rnd.Int64N(1e9)).UTC()
		}
		return time.Unix(rnd.Int64N(4e9), 0).In(time.FixedZone("x", 3600))
	}
	doc := func() json.RawMessage {
		if rnd.IntN(2) == 0 {
			return nil
		}
		raw, _ := json.Marshal(map[string]any{str(): str(), "n": rnd.Float64(), "l": []any{str(), true, nil}})
		return raw
	}
	for range 5000 {
		e := Entry{ID: str(), Domain: str(), FailureType: str(), Status: Status(str()), EntityType: str(), EntityID: str(), UserID: str(),
			ErrorCode: str(), ErrorMessage: str(), RequestData: doc(), SnapshotData: doc(), ResponseData: doc(),
			RetryCount: rnd.IntN(5) - 1, MaxRetries: rnd.IntN(5), LastRetryAt: tm(), ResolvedAt: tm(), ResolvedBy: str(),
			ResolutionType: str(), ResolutionNote: str(), NextActionHint: str(), RecommendedAct: str(), CreatedAt: tm(),
			UpdatedAt: tm(), ExpiresAt: tm(), Truncated: rnd.IntN(2) == 0, ReplayLeaseUntil: tm(), ReplayWorker: str(),
			Revision: rnd.Uint64()}
		if n := rnd.IntN(3); n > 0 {
			e.Metadata = map[string]string{}
			for range n {
				e.Metadata[str()] = str()
			}
		}
		want, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if got := encodeEntry(e); !bytes.Equal(got, want) {
			t.Fatalf("encodeEntry\n%s\njson.Marshal\n%s", got, want)
		}
	}
}

func BenchmarkEncodeEntry(b *testing.B) {
	raw, _ := json.Marshal(map[string]any{"order": "o-1", "blob": string(bytes.Repeat([]byte("x"), 1000))})
	e := Entry{ID: "018f2a3c-7d4e-7b00-8000-0123456789ab", Domain: "payment", FailureType: "MAX_RETRIES_TIMEOUT", Status: Pending,
		RequestData: raw, Metadata: map[string]string{"origin_trace_id": "t-1"}, MaxRetries: 2,
		CreatedAt: time.Now().UTC(), UpdatedAt: time.Now().UTC(), ExpiresAt: time.Now().UTC()}
	b.Run("encodeEntry", func(b *testing.B) {
		for b.Loop() {
			encodeEntry(e)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			marshal(e)
		}
	})
}
