package jsonw

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
)

func TestStringMatchesEncodingJSON(t *testing.T) {
	rnd := rand.New(rand.NewPCG(9, 10))
	for range 20000 {
		b := make([]byte, rnd.IntN(12))
		for i := range b {
			b[i] = byte(rnd.IntN(256))
		}
		s := string(b)
		if rnd.IntN(4) == 0 {
			s += "\u2028é<&>"
		}
		want, _ := json.Marshal(s)
		if got := String(nil, s); string(got) != string(want) {
			t.Fatalf("String(%q) = %s, json.Marshal %s", s, got, want)
		}
	}
}
