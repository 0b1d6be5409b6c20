package server

import "sync"

// hub wakes watchers when the local FSM applies a batch. Watchers re-read
// the state and send what changed since the revision they last sent, so a
// slow watcher never blocks the FSM and never misses a change: it only
// coalesces several into one message.
type hub struct {
	mu     sync.Mutex
	ch     chan struct{}
	closed bool
}

func newHub() *hub { return &hub{ch: make(chan struct{})} }

// notify wakes every current waiter.
func (h *hub) notify() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	close(h.ch)
	h.ch = make(chan struct{})
}

// wait returns a channel closed at the next notify (or at close). Take it
// before reading state, so a change between the read and the wait is seen.
func (h *hub) wait() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ch
}

// close wakes everyone for good; watchers then see stopped.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		close(h.ch)
	}
}

func (h *hub) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}
