package dlq

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

// mayHoldKey may answer true for a document without sensitive keys, never
// false for one with them.
func TestMayHoldKeyNeverMissesAKey(t *testing.T) {
	sensitive := map[string]bool{}
	for _, f := range DefaultLimits().SensitiveFields {
		sensitive[f] = true
	}
	words := []string{"password", "PassWord", "order", "tok", "token", "x", "ÄPI_KEY", "passwd2", "SSN", "card_number", "a\"b", strings.Repeat("y", 80)}
	rnd := rand.New(rand.NewPCG(3, 4))
	var build func(depth int) any
	build = func(depth int) any {
		switch k := rnd.IntN(4); {
		case depth > 2 || k == 0:
			return words[rnd.IntN(len(words))]
		case k == 1:
			l := make([]any, rnd.IntN(3))
			for i := range l {
				l[i] = build(depth + 1)
			}
			return l
		default:
			m := map[string]any{}
			for range rnd.IntN(4) {
				m[words[rnd.IntN(len(words))]] = build(depth + 1)
			}
			return m
		}
	}
	var hasKey func(v any) bool
	hasKey = func(v any) bool {
		switch t := v.(type) {
		case map[string]any:
			for k, x := range t {
				if sensitive[strings.ToLower(k)] || hasKey(x) {
					return true
				}
			}
		case []any:
			for _, x := range t {
				if hasKey(x) {
					return true
				}
			}
		}
		return false
	}
	falses := 0
	for range 20000 {
		doc := map[string]any{"k": build(0)}
		raw, _ := json.Marshal(doc)
		if !mayHoldKey(raw, sensitive) {
			falses++
			if hasKey(doc) {
				t.Fatalf("mayHoldKey missed a sensitive key in %s", raw)
			}
		}
	}
	if falses == 0 {
		t.Fatal("mayHoldKey never answered false: the fast path is never taken")
	}
}
