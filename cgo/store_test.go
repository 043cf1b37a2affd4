//go:build cgo

package kv

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var testSeq struct {
	sync.Mutex
	n int
}

// testMemName returns a memory-store name no other test or process uses.
func testMemName(t testing.TB) string {
	testSeq.Lock()
	testSeq.n++
	n := testSeq.n
	testSeq.Unlock()
	name := fmt.Sprintf("gotest-%d-%d", os.Getpid(), n)
	t.Cleanup(func() { _ = os.Remove("/dev/shm/shmkv." + name) })
	return name
}

func openTestDB(t *testing.T, backend Backend, track bool) *db {
	t.Helper()
	p := openParams{backend: backend, track: trackOff, reserve: 64 << 20}
	if track {
		p.track = trackOn
	}
	if backend == BackendMemory {
		p.where = testMemName(t)
	} else {
		p.where = filepath.Join(t.TempDir(), "store.kv")
	}
	d, err := openDB(p)
	if err != nil {
		t.Fatalf("open %s: %v", backend, err)
	}
	t.Cleanup(func() { _ = d.close() })
	return d
}

func mustSize(t *testing.T, d *db) uint64 {
	t.Helper()
	n, err := d.size()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func eachBackend(t *testing.T, f func(t *testing.T, d *db)) {
	for _, b := range []Backend{BackendDisk, BackendMemory} {
		for _, track := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/track=%v", b, track), func(t *testing.T) {
				f(t, openTestDB(t, b, track))
			})
		}
	}
}

// Reads land in a scratch buffer the handle reuses: what they hand back
// must be a slice of its own, or the next read would change a value a
// script still holds.
func TestDBReadsDoNotAliasScratch(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db) {
		for _, kv := range [][2]string{{"a", "first"}, {"b", "SECOND"}, {"c", "third!"}} {
			if err := d.set(kv[0], []byte(kv[1]), KindString); err != nil {
				t.Fatal(err)
			}
		}
		scratch := make([]byte, 64)
		a, _, err := d.get("a", scratch)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := d.get("b", scratch); err != nil {
			t.Fatal(err)
		}
		old, _, _, err := d.swap("c", []byte("swapped"), KindString, scratch)
		if err != nil {
			t.Fatal(err)
		}
		many, buf, err := d.getMany([]string{"b", "a"}, scratch)
		if err != nil || !many[0].Found || !many[1].Found {
			t.Fatalf("getMany: %v %v", many, err)
		}
		if _, _, err := d.getMany([]string{"c", "c"}, buf); err != nil {
			t.Fatal(err)
		}
		for i := range scratch {
			scratch[i] = '#'
		}
		for i := range buf {
			buf[i] = '#'
		}
		if string(a) != "first" || string(old) != "third!" || string(many[0].Value) != "SECOND" ||
			string(many[1].Value) != "first" {
			t.Fatalf("values changed by later reads: %q %q %q %q", a, old, many[0].Value, many[1].Value)
		}
		// Values larger than the scratch are read whole.
		big := bytes.Repeat([]byte("y"), 5000)
		if err := d.set("big", big, KindString); err != nil {
			t.Fatal(err)
		}
		many, _, err = d.getMany([]string{"big", "a", "big"}, make([]byte, 8))
		if err != nil || !bytes.Equal(many[0].Value, big) || string(many[1].Value) != "first" ||
			!bytes.Equal(many[2].Value, big) {
			t.Fatalf("getMany past the scratch: %v", err)
		}
	})
}

func TestDBBasics(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db) {
		if err := d.set("a", []byte(`1`), KindJSON); err != nil {
			t.Fatal(err)
		}
		v, k, err := d.get("a", make([]byte, 1))
		if err != nil || string(v) != "1" || k != KindJSON {
			t.Fatalf("get: %q %v %v", v, k, err)
		}
		big := bytes.Repeat([]byte("x"), 100000)
		if err := d.set("big", big, KindString); err != nil {
			t.Fatal(err)
		}
		v, k, err = d.get("big", make([]byte, 16))
		if err != nil || !bytes.Equal(v, big) || k != KindString {
			t.Fatalf("get big: %d %v %v", len(v), k, err)
		}
		if _, _, err := d.get("missing", make([]byte, 16)); codeOf(err) != codeNotFound {
			t.Fatalf("missing: %v", err)
		}
		if err := d.set("empty", nil, KindString); err != nil {
			t.Fatal(err)
		}
		if v, _, err := d.get("empty", nil); err != nil || len(v) != 0 {
			t.Fatalf("empty: %q %v", v, err)
		}
		if ok, _ := d.exists("a"); !ok {
			t.Fatal("exists")
		}
		if n, err := d.size(); n != 3 || err != nil {
			t.Fatalf("size %d, %v", n, err)
		}
		existed, err := d.del("a")
		if err != nil || !existed {
			t.Fatal("del", err)
		}
		existed, _ = d.del("a")
		if existed {
			t.Fatal("del twice")
		}
		n, err := d.incr("n", 5, KindJSON)
		if err != nil || n != 5 {
			t.Fatal(n, err)
		}
		n, _ = d.incr("n", -7, KindJSON)
		if n != -2 {
			t.Fatal(n)
		}
		if _, err := d.incr("big", 1, KindJSON); codeOf(err) != codeNotInt {
			t.Fatal(err)
		}
		ok, _ := d.cas("c", nil, []byte("1"), KindJSON)
		if !ok {
			t.Fatal("cas absent")
		}
		ok, _ = d.cas("c", nil, []byte("2"), KindJSON)
		if ok {
			t.Fatal("cas absent twice")
		}
		ok, _ = d.cas("c", []byte("1"), []byte("2"), KindJSON)
		if !ok {
			t.Fatal("cas 1->2")
		}
		ok, _ = d.setIfAbsent("c", []byte("3"), KindJSON)
		if ok {
			t.Fatal("setIfAbsent existing")
		}
		v, _, loaded, err := d.getOrSet("c", []byte("9"), KindJSON, make([]byte, 1))
		if err != nil || !loaded || string(v) != "2" {
			t.Fatal("getOrSet", string(v), loaded, err)
		}
		v, _, loaded, _ = d.getOrSet("g", []byte("99"), KindJSON, nil)
		if loaded || string(v) != "99" {
			t.Fatal("getOrSet new", string(v), loaded)
		}
		prev, _, loaded, _ := d.swap("g", []byte("100"), KindJSON, make([]byte, 1))
		if !loaded || string(prev) != "99" {
			t.Fatal("swap", string(prev), loaded)
		}
		_, _, loaded, _ = d.swap("s", []byte("1"), KindJSON, make([]byte, 1))
		if loaded {
			t.Fatal("swap new")
		}
		ok, _ = d.compareAndDelete("g", []byte("99"))
		if ok {
			t.Fatal("cad mismatch")
		}
		ok, _ = d.compareAndDelete("g", []byte("100"))
		if !ok {
			t.Fatal("cad")
		}
		if err := d.clear(); err != nil || mustSize(t, d) != 0 {
			t.Fatal("clear", err)
		}
	})
}

func TestDBListRandom(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db) {
		if _, found, err := d.randomKey("", nil); found || err != nil {
			t.Fatal("random on empty", found, err)
		}
		for i := range 50 {
			_ = d.set(fmt.Sprintf("user:%02d", i), []byte(fmt.Sprint(i)), KindJSON)
			_ = d.set(fmt.Sprintf("order:%02d", i), []byte(fmt.Sprint(i)), KindJSON)
		}
		long := "user:" + strings.Repeat("z", 1000)
		_ = d.set(long, []byte("1"), KindJSON)
		es, err := d.list("user:", 0)
		if err != nil || len(es) != 51 {
			t.Fatal(len(es), err)
		}
		for i := range 50 {
			if es[i].Key != fmt.Sprintf("user:%02d", i) || string(es[i].Value) != fmt.Sprint(i) {
				t.Fatal(es[i])
			}
		}
		es, _ = d.list("", 3)
		if len(es) != 3 || es[0].Key != "order:00" {
			t.Fatal(es)
		}
		seen := map[string]bool{}
		scratch := make([]byte, keyMax)
		for range 2000 {
			k, found, err := d.randomKey("user:", scratch)
			if err != nil || !found || !strings.HasPrefix(k, "user:") {
				t.Fatal(k, found, err)
			}
			seen[k] = true
		}
		if !seen[long] || len(seen) < 45 {
			t.Fatalf("random keys: saw %d", len(seen))
		}
		if _, found, _ := d.randomKey("nope", nil); found {
			t.Fatal("random nope")
		}
		if err := d.rebuildIndex(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestDBSharedAcrossHandles(t *testing.T) {
	name := testMemName(t)
	a, err := openDB(openParams{backend: BackendMemory, where: name})
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	b, err := openDB(openParams{backend: BackendMemory, where: name})
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	_ = a.set("k", []byte("v"), KindString)
	v, _, err := b.get("k", make([]byte, 8))
	if err != nil || string(v) != "v" {
		t.Fatal(string(v), err)
	}
	if _, err := openDB(openParams{backend: BackendMemory, where: "bad/name"}); codeOf(err) != codeName {
		t.Fatal("bad name", err)
	}
}

func TestDBNotAStore(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bolt.db")
	junk := bytes.Repeat([]byte{0xde, 0xad}, 4096)
	if err := os.WriteFile(p, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := openDB(openParams{backend: BackendDisk, where: p})
	if codeOf(err) != codeNotStore {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(p)
	if !bytes.Equal(after, junk) {
		t.Fatal("file was changed")
	}
}

func TestDBConcurrentIncrement(t *testing.T) {
	d := openTestDB(t, BackendMemory, true)
	const workers, each = 8, 2000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := d.incr("ctr", 1, KindJSON); err != nil {
					t.Error(err)
					return
				}
				_ = d.set(fmt.Sprintf("w%d:%d", w, i), []byte("1"), KindJSON)
			}
		}()
	}
	wg.Wait()
	v, _, err := d.get("ctr", make([]byte, 32))
	if err != nil || string(v) != fmt.Sprint(workers*each) {
		t.Fatalf("counter %s, %v", v, err)
	}
	if n := mustSize(t, d); n != workers*each+1 {
		t.Fatalf("size %d", n)
	}
}

// TestCloseAllWaitsForCalls runs store calls on several goroutines while
// the registry closes the store, as k6's Exit event does: no call may reach
// a closed handle.
func TestCloseAllWaitsForCalls(t *testing.T) {
	name := testMemName(t)
	cfg := &config{backend: BackendMemory, name: name, serialization: serJSON}
	open := func() *handle {
		d, err := openDB(paramsOf(cfg))
		if err != nil {
			t.Fatal(err)
		}
		h := &handle{cfg: cfg, hint: minHint, db: d}
		live.add(h)
		return h
	}
	var hs []*handle
	for range 8 {
		hs = append(hs, open())
	}
	var wg sync.WaitGroup
	closedSeen := make([]bool, len(hs))
	for i, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				if kerr := h.enter(); kerr != nil {
					closedSeen[i] = kerr.Name == ErrStoreClosed
					return
				}
				key := fmt.Sprintf("k%d", n%100)
				_ = h.db.set(key, []byte("1"), KindJSON)
				_, _, _ = h.db.get(key, make([]byte, 16))
				h.leave()
			}
		}()
	}
	// Let them run a little (not a measurement: any amount works), watching
	// through a handle of its own: each handle belongs to one goroutine.
	for h := open(); ; {
		if kerr := h.enter(); kerr == nil {
			n, _ := h.db.size()
			h.leave()
			if n >= 50 {
				break
			}
		}
	}
	live.closeAll()
	wg.Wait()
	for i, ok := range closedSeen {
		if !ok {
			t.Errorf("goroutine %d did not see StoreClosedError", i)
		}
	}
}
