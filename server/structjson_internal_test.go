package server

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
)

// structJSON writes what encoding/json writes for AsMap, byte for byte.
func TestStructJSONMatchesEncodingJSON(t *testing.T) {
	fixed := map[string]any{
		"html": "<a href='x'>&</a>", "ctrl": "tab\there\x01\u2028", "uni": "ünïcødé 😀",
		"ints": []any{0.0, 1.0, -1.0, 42.0, 1e20, 1e21, 123456789012345678.0}, "fracs": []any{0.5, 1e-6, 1e-7, 1.5e-9, -2.25e-300, 3.14159},
		"nested": map[string]any{"z": nil, "a": []any{true, false, map[string]any{}}, "": "empty key"}, "empty": []any{},
	}
	docs := []map[string]any{fixed, {}}
	r := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		docs = append(docs, randomDoc(r, 3))
	}
	for _, d := range docs {
		s, err := structpb.NewStruct(d)
		if err != nil {
			t.Fatal(err)
		}
		got, err := structJSON("request_data", s)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(s.AsMap())
		if string(got) != string(want) {
			t.Fatalf("structJSON\n%s\nencoding/json\n%s", got, want)
		}
	}
}

func TestStructJSONRefusesNonFiniteNumbersWithTheirPath(t *testing.T) {
	s, _ := structpb.NewStruct(map[string]any{"a": map[string]any{"b": []any{1.0, math.Inf(1)}}})
	_, err := structJSON("request_data", s)
	if err == nil || !strings.Contains(err.Error(), "request_data.a.b[1]") {
		t.Fatalf("got %v", err)
	}
}

func randomDoc(r *rand.Rand, depth int) map[string]any {
	m := map[string]any{}
	for range r.IntN(6) {
		m[randomString(r)] = randomValue(r, depth)
	}
	return m
}

func randomValue(r *rand.Rand, depth int) any {
	switch n := r.IntN(7); {
	case n == 0:
		return nil
	case n == 1:
		return r.IntN(2) == 0
	case n == 2:
		return randomString(r)
	case n == 3:
		return math.Float64frombits(r.Uint64()&^(0x7ff<<52) | uint64(r.IntN(0x7fe))<<52) // any finite float
	case n == 4:
		return float64(r.IntN(1_000_000)) - 500_000
	case depth > 0 && n == 5:
		return randomDoc(r, depth-1)
	case depth > 0:
		l := make([]any, r.IntN(4))
		for i := range l {
			l[i] = randomValue(r, depth-1)
		}
		return l
	}
	return "leaf"
}

func randomString(r *rand.Rand) string {
	const alphabet = "abc<>&\"\\\t\n\x00\u2028\u2029é😀"
	runes := []rune(alphabet)
	var b strings.Builder
	for range r.IntN(8) {
		b.WriteRune(runes[r.IntN(len(runes))])
	}
	return b.String()
}
