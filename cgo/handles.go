//go:build cgo

package kv

import (
	"sort"
	"strings"
	"sync"
	"time"
)

// liveHandles is every KV object of this process whose store is open. The
// library keeps the one registry of open stores (by device and inode) and
// shares one mapping among the handles of a store; this set exists only so
// that k6's Exit event can close what scripts left open.
type liveHandles struct {
	mu      sync.Mutex
	handles map[*handle]struct{}
	warned  map[string]bool
}

var live = &liveHandles{handles: map[*handle]struct{}{}, warned: map[string]bool{}}

func (l *liveHandles) add(h *handle) {
	l.mu.Lock()
	l.handles[h] = struct{}{}
	l.mu.Unlock()
}

// remove closes h's store handle unless closeAll already did.
func (l *liveHandles) remove(h *handle) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.handles[h]; !ok {
		return nil
	}
	delete(l.handles, h)
	h.exiting.Store(true)
	return h.db.close()
}

// closeAll closes every handle, waiting for the call each may have in
// flight on its VU's goroutine. k6 calls it through the Exit event.
func (l *liveHandles) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for h := range l.handles {
		h.exiting.Store(true)
		for h.busy.Load() {
			time.Sleep(50 * time.Microsecond)
		}
		_ = h.db.close()
		delete(l.handles, h)
	}
}

// newlyIgnored returns the names in ignored not warned about before in this
// process, and marks them warned.
func (l *liveHandles) newlyIgnored(ignored []string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var fresh []string
	for _, n := range ignored {
		if !l.warned[n] {
			l.warned[n] = true
			fresh = append(fresh, n)
		}
	}
	sort.Strings(fresh)
	return strings.Join(fresh, ", ")
}
