//go:build cgo

package kv

import (
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// sharedStore is one libshmkv handle, opened once per process for a
// (backend, path or name, read-only) triple and used by every VU that opens
// the same store.
type sharedStore struct {
	key    string
	params openParams
	db     backendStore
	// handles are the VU-side KV objects using this store; the store is
	// closed when the last one is closed, or when k6 exits.
	handles map[*handle]struct{}
	// exiting is set before the store is closed at exit; an operation that
	// sees it rejects with StoreClosedError instead of calling C.
	exiting atomic.Bool
}

type registry struct {
	mu     sync.Mutex
	stores map[string]*sharedStore
	warned map[string]bool
}

var reg = &registry{stores: map[string]*sharedStore{}, warned: map[string]bool{}}

func storeKey(c *config) string {
	where := c.where()
	if c.backend == BackendDisk {
		if abs, err := filepath.Abs(where); err == nil {
			where = abs
		}
	}
	ro := ""
	if c.flags&flagReadOnly != 0 {
		ro = "|ro"
	}
	return c.backend.String() + "|" + where + ro
}

func paramsOf(c *config) openParams {
	return openParams{
		backend:  c.backend,
		where:    c.where(),
		track:    c.track,
		segments: c.segments,
		reserve:  c.reserve,
		flags:    c.flags,
	}
}

// acquire opens (or joins) the store c asks for and registers h as one of
// its users.
func (r *registry) acquire(c *config, h *handle) (*sharedStore, *kvError) {
	key := storeKey(c)
	p := paramsOf(c)
	r.mu.Lock()
	defer r.mu.Unlock()
	if st, ok := r.stores[key]; ok {
		// Same store, already open in this process. When this opener asks
		// for other creation options, let the library judge them against
		// the store's (it refuses a conflict with SHMKV_EINCOMPAT).
		if p.track != st.params.track || p.segments != st.params.segments || p.reserve != st.params.reserve {
			probe, err := openDB(p)
			if err != nil {
				return nil, openError(c, err)
			}
			_ = probe.close()
		}
		st.handles[h] = struct{}{}
		return st, nil
	}
	d, err := openDB(p)
	if err != nil {
		return nil, openError(c, err)
	}
	st := &sharedStore{key: key, params: p, db: d, handles: map[*handle]struct{}{h: {}}}
	r.stores[key] = st
	return st, nil
}

func openError(c *config, err error) *kvError {
	e := mapError("openKv: cannot open "+c.describe(), err)
	return e
}

// release unregisters h; the last user closes the store.
func (r *registry) release(h *handle) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := h.st
	if _, ok := st.handles[h]; !ok {
		return nil
	}
	delete(st.handles, h)
	if len(st.handles) > 0 || r.stores[st.key] != st {
		return nil
	}
	delete(r.stores, st.key)
	st.exiting.Store(true)
	return st.db.close()
}

// closeAll closes every store, waiting for operations in flight. k6 calls
// it (through the Exit event) when the test run is over.
func (r *registry) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for key, st := range r.stores {
		st.exiting.Store(true)
		for h := range st.handles {
			for h.busy.Load() {
				time.Sleep(50 * time.Microsecond)
			}
		}
		_ = st.db.close()
		delete(r.stores, key)
	}
}

// newlyIgnored returns the names in ignored not warned about before in this
// process, and marks them warned.
func (r *registry) newlyIgnored(ignored []string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var fresh []string
	for _, n := range ignored {
		if !r.warned[n] {
			r.warned[n] = true
			fresh = append(fresh, n)
		}
	}
	sort.Strings(fresh)
	return strings.Join(fresh, ", ")
}
