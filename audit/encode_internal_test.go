package audit

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

// encode writes the bytes json.Marshal writes for any record, so hashes of
// records written by either verify alike.
func TestEncodeMatchesEncodingJSON(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 8))
	pieces := []string{"", "alice", "dlq.stored", `{"id":"x","n":1}`, "\"", "\\", "<&>", "\n\t\b\f\x00\x1f", "é", "\u2028", "\xff", "😀"}
	str := func() string {
		var b []byte
		for range rnd.IntN(4) {
			b = append(b, pieces[rnd.IntN(len(pieces))]...)
		}
		return string(b)
	}
	for range 5000 {
		r := Record{Seq: rnd.Uint64(), Revision: rnd.Uint64(), Time: time.Unix(rnd.Int64N(4e9), rnd.Int64N(1e9)).UTC(),
			Actor: str(), Reason: str(), Action: str(), Target: str(), Before: str(), After: str(), PrevHash: str(), Hash: str()}
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := encode(r); !bytes.Equal(got, want) {
			t.Fatalf("encode\n%s\njson.Marshal\n%s", got, want)
		}
	}
}
