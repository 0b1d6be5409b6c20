package server

import (
	"reflect"
	"testing"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
)

// TestEveryCommandBodyHasAHandler keeps the dispatch table complete: a body
// added to the Command envelope without a handler fails here instead of
// panicking on apply.
func TestEveryCommandBodyHasAHandler(t *testing.T) {
	cmd := &raftv1.Command{}
	m := cmd.ProtoReflect()
	body := m.Descriptor().Oneofs().ByName("body")
	if body == nil || body.Fields().Len() == 0 {
		t.Fatal("Command has no body oneof")
	}
	seen := map[reflect.Type]bool{}
	for i := 0; i < body.Fields().Len(); i++ {
		fd := body.Fields().Get(i)
		m.Set(fd, m.NewField(fd))
		typ := reflect.TypeOf(cmd.Body)
		if _, ok := handlers[typ]; !ok {
			t.Errorf("command body %s (%v) has no handler", fd.Name(), typ)
		}
		seen[typ] = true
	}
	for typ := range handlers {
		if !seen[typ] {
			t.Errorf("handler for %v, which is not a Command body", typ)
		}
	}
}
