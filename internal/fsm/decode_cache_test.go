package fsm_test

import (
	"testing"

	"github.com/baldurhq/baldurd/internal/fsm"
)

type rec struct {
	Name string `json:"name"`
	N    int    `json:"n"`
}

func TestJSONCacheFollowsTheStoredBytes(t *testing.T) {
	var c fsm.JSONCache[rec]
	raw := []byte(`{"name":"a","n":1}`)
	v, err := c.Decode("k", raw)
	if err != nil || v != (rec{"a", 1}) {
		t.Fatalf("first decode: %+v %v", v, err)
	}
	// The store reuses its pages: the bytes given before change under the
	// cache, which must have kept its own copy.
	copy(raw, `{"name":"b","n":2}`)
	v, err = c.Decode("k", []byte(`{"name":"a","n":1}`))
	if err != nil || v != (rec{"a", 1}) {
		t.Fatalf("same bytes again: %+v %v", v, err)
	}
	v, err = c.Decode("k", []byte(`{"name":"a","n":7}`))
	if err != nil || v != (rec{"a", 7}) {
		t.Fatalf("changed record: %+v %v", v, err)
	}
	v.N = 99 // the caller's copy
	if v, _ = c.Decode("k", []byte(`{"name":"a","n":7}`)); v.N != 7 {
		t.Fatalf("a caller's change reached the cache: %+v", v)
	}
	if _, err = c.Decode("k", []byte(`{"name":`)); err == nil {
		t.Fatal("a broken record decoded")
	}
	if v, _ = c.Decode("other", []byte(`{"name":"o","n":3}`)); v != (rec{"o", 3}) {
		t.Fatalf("second key: %+v", v)
	}
}
