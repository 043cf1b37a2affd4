//go:build cgo

package kv

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/grafana/sobek"
)

// The methods of xk6-kv's batch, scan, sampling and detailed-compare
// families; registered in the methods table (kv.go).

const (
	maxSample   = 1_000_000 // randomKeys({count}) at most, as in xk6-kv
	maxBatch    = 1_000_000 // keys of one getMany or deleteMany call
	cursorMagic = "c1."     // cursors are "c1." + base64url(last key)
	// A paged scan of a store without the key index turns the index on from
	// this many keys: below it a page's pass over the store is cheap.
	autoIndexKeys = 20_000
)

// ---- argument helpers ---------------------------------------------------

// strings reads argument i as an array of at most maxBatch strings.
func (c *call) strings(i int, what string) []string {
	v := c.args.Argument(i)
	if c.err != nil {
		return nil
	}
	o, ok := v.(*sobek.Object)
	if !ok || typeName(v) != "array" {
		c.invalid("%s must be an array of strings, got %s", what, typeName(v))
		return nil
	}
	// Checked before the array is copied: a sparse [] of length 2^32-1
	// would otherwise be copied whole first.
	if n := o.Get("length").ToFloat(); n > maxBatch {
		c.invalid("%s holds %.0f entries; one call takes at most %d", what, n, maxBatch)
		return nil
	}
	// Element by element, each read once and not converted deeper than a
	// string: an export of the whole array would first convert every
	// element (a nested array of 2^32-1 holes, or getters, before the
	// first bad element is found). Only an element that is not a plain
	// string, or holds U+FFFD (a lone surrogate, maybe), goes to c.str.
	n := int(o.Get("length").ToInteger())
	out := make([]string, n)
	for j := 0; j < n; j++ {
		e := o.Get(itoa(int64(j)))
		if e != nil && sobek.IsString(e) {
			if s := e.String(); !strings.ContainsRune(s, utf8.RuneError) {
				out[j] = s
				continue
			}
		}
		if e == nil {
			e = sobek.Undefined()
		}
		if out[j] = c.str(what+"["+itoa(int64(j))+"]", e); c.err != nil {
			return nil
		}
	}
	return out
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }

// number reads option name of o as a whole number in [lo, hi]; def when
// absent (required: absent is an error).
func (c *call) number(o *sobek.Object, name string, lo, hi, def int64, required bool) int64 {
	if c.err != nil {
		return def
	}
	var v sobek.Value
	if o != nil {
		v = o.Get(name)
	}
	if absent(v) {
		if required {
			c.invalid("%s is required", name)
		}
		return def
	}
	f := math.NaN()
	if sobek.IsNumber(v) { // ToFloat of a Symbol or a BigInt would throw
		f = v.ToFloat()
	}
	if math.IsNaN(f) || f != math.Trunc(f) || f < float64(lo) || f > float64(hi) {
		c.invalid("%s must be a whole number from %d to %d, got %s", name, lo, hi, v.String())
		return def
	}
	return int64(f)
}

// flag reads boolean option name of o.
func (c *call) flag(o *sobek.Object, name string, def bool) bool {
	if c.err != nil || o == nil {
		return def
	}
	v := o.Get(name)
	if absent(v) {
		return def
	}
	if !isBool(v) {
		c.invalid("%s must be a boolean, got %s", name, typeName(v))
		return def
	}
	return v.ToBoolean()
}

// cursor reads the cursor option: "" starts a scan; anything else must be
// a cursor this extension returned.
func (c *call) cursor(o *sobek.Object) string {
	if c.err != nil || o == nil {
		return ""
	}
	v := o.Get("cursor")
	if absent(v) {
		return ""
	}
	if !sobek.IsString(v) {
		c.invalid("cursor must be a string, got %s", typeName(v))
		return ""
	}
	s := v.String()
	if s == "" {
		return ""
	}
	after, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(s, cursorMagic))
	if !strings.HasPrefix(s, cursorMagic) || err != nil || len(after) == 0 || len(after) > keyMax {
		c.fail(newErr(ErrInvalidCursor, "%s: cursor %q is not one that scan returned", c.name, s))
		return ""
	}
	return string(after)
}

// ---- batches -------------------------------------------------------------

// possible reports whether a key could be stored at all: empty keys and
// keys over the limit are never there, so reads and deletes of them are
// answered without asking the store.
func possible(k string) bool { return k != "" && len(k) <= keyMax }

func opGetMany(c *call) sobek.Value {
	keys := c.strings(0, "keys")
	// The library is asked for the keys that can exist (at: their places
	// in keys); usually that is every key, and then keys itself.
	ask, at := keys, []int(nil)
	if slices.ContainsFunc(keys, func(k string) bool { return !possible(k) }) {
		ask, at = nil, make([]int, 0, len(keys))
		for i, k := range keys {
			if possible(k) {
				ask = append(ask, k)
				at = append(at, i)
			}
		}
	}
	var got []found
	c.do(func(s backendStore) (err error) {
		var buf []byte
		got, buf, err = s.getMany(ask, c.h.manyScratch)
		c.h.keepManyScratch(buf)
		return
	})
	if c.err != nil {
		return nil
	}
	items := make([]manyItem, len(keys))
	for i, k := range keys {
		items[i] = manyItem{Key: k, Value: sobek.Null()}
	}
	for j := range got {
		i := j
		if at != nil {
			i = at[j]
		}
		if got[j].Found {
			items[i].Exists = true
			if items[i].Value = c.decodeKey(keys[i], got[j].Value, got[j].Kind); c.err != nil {
				return nil
			}
		}
	}
	return c.result(items)
}

// manyItem is one result of getMany. A Go struct, as on xk6-kv: handing k6
// a slice of them costs one allocation, where building as many JS objects
// property by property cost more than the store (see docs/benchmarks.md).
type manyItem struct {
	Key    string      `js:"key"`
	Exists bool        `js:"exists"`
	Value  sobek.Value `js:"value"`
}

func opSetMany(c *call) sobek.Value {
	arg := c.args.Argument(0)
	o, ok := arg.(*sobek.Object)
	if !ok || typeName(arg) != "object" {
		c.fail(&kvError{Name: ErrInvalidOptions,
			Message: "setMany: entries must be an object of key-value pairs, got " + typeName(arg),
			Errors:  []entryError{{Name: "InvalidEntries", Message: "entries must be an object"}}})
		return nil
	}
	// Taken in the record's own order: the library orders its locks
	// itself, and sorting here cost a sixth of the call.
	keys := o.Keys()
	vals := make([][]byte, len(keys))
	kinds := make([]Kind, len(keys))
	lone := loneSurrogateSuspects(keys)
	var bad []entryError
	for i, k := range keys {
		v := o.Get(k)
		switch {
		case k == "":
			bad = append(bad, entryError{Key: k, Name: "EmptyKey", Message: "key must be a non-empty string"})
			continue
		case lone[k] < 0:
			continue // a spelling refused below, already listed
		case lone[k] > 1 || (lone[k] == 1 && v == nil):
			// Keys() hands a name holding a lone UTF-16 surrogate over
			// with U+FFFD in its place: read back under that name it is
			// not there, or it is another property of the same spelling
			// (every name so spelled is refused, and listed once).
			bad = append(bad, entryError{Key: k, Name: ErrInvalidOptions,
				Message: "key contains a lone UTF-16 surrogate, which has no UTF-8 form"})
			lone[k] = -1
			continue
		case v == nil:
			// Listed, then gone (a getter deleted it, a Proxy listed a key
			// its target lacks): it reads as undefined, as o[k] would.
			v = sobek.Undefined()
		}
		b, kind, err := c.h.codec.encode(v)
		if err != nil {
			bad = append(bad, entryError{Key: k, Name: err.Name, Message: err.Message})
			continue
		}
		vals[i], kinds[i] = b, kind
		// The library refuses these too (and names the first); listing
		// each one here, against its published limits, is for errors[].
		if len(k) > keyMax {
			e := storeError(c.name, k, 0, &CError{Code: codeKeySize})
			bad = append(bad, entryError{Key: k, Name: e.Name, Message: e.Message})
		}
		if len(b) > valueMax {
			e := storeError(c.name, k, len(b), &CError{Code: codeValSize})
			bad = append(bad, entryError{Key: k, Name: e.Name, Message: e.Message})
		}
	}
	if len(bad) > 0 {
		// Listed in key order, as xk6-kv lists them.
		slices.SortStableFunc(bad, func(a, b entryError) int { return strings.Compare(a.Key, b.Key) })
		c.fail(&kvError{Name: ErrInvalidOptions, Message: invalidEntries(len(bad)), Errors: bad})
		return nil
	}
	c.do(func(s backendStore) error { return s.setMany(keys, vals, kinds) })
	c.entryFailed(keys)
	return c.object("written", len(keys))
}

// loneSurrogateSuspects counts, per name holding U+FFFD, how many of the
// names Keys() gave are spelled that way (nil when none is). A name with a
// lone surrogate is one of those: Keys() converts it to UTF-8 with U+FFFD
// in place of the surrogate. The record's own names are not read again
// through the script's globals (Object.keys), which a script may replace.
func loneSurrogateSuspects(keys []string) map[string]int {
	var n map[string]int
	for _, k := range keys {
		if strings.ContainsRune(k, utf8.RuneError) {
			if n == nil {
				n = make(map[string]int)
			}
			n[k]++
		}
	}
	return n
}

func invalidEntries(n int) string {
	if n == 1 {
		return "setMany validation failed: 1 invalid entry"
	}
	return "setMany validation failed: " + itoa(int64(n)) + " invalid entries"
}

// entryFailed turns a library rejection of one entry of a batch into the
// batch's rejection: InvalidOptionsError, the entry named in errors.
func (c *call) entryFailed(keys []string) {
	be, ok := c.raw.(*batchError)
	if c.err == nil || !ok || be.Index >= len(keys) {
		return
	}
	e := storeError(c.name, keys[be.Index], 0, &be.CError)
	c.err = &kvError{Name: ErrInvalidOptions, Message: c.name + ": 1 invalid entry: " + e.Message,
		Errors: []entryError{{Key: keys[be.Index], Name: e.Name, Message: e.Message}}}
}

func opDeleteMany(c *call) sobek.Value {
	keys := c.strings(0, "keys")
	for _, k := range keys {
		if k == "" && c.err == nil {
			c.fail(&kvError{Name: ErrInvalidOptions, Message: "deleteMany: keys must be non-empty strings",
				Errors: []entryError{{Key: k, Name: "EmptyKey", Message: "key must be a non-empty string"}}})
		}
	}
	var ask []string
	for _, k := range keys {
		if possible(k) {
			ask = append(ask, k)
		}
	}
	var deleted uint64
	c.do(func(s backendStore) (err error) { deleted, err = s.deleteMany(ask); return })
	return c.object("deleted", deleted, "missing", uint64(len(keys))-deleted)
}

func opDeleteByPrefix(c *call) sobek.Value {
	o := c.options(0, "prefix", "limit")
	if o == nil && c.err == nil {
		c.invalid("options {prefix, limit} are required")
	}
	prefix := c.prefix(o)
	if prefix == "" && c.err == nil {
		c.invalid("prefix must be a non-empty string")
	}
	limit := c.number(o, "limit", 1, 1<<53, 0, true)
	var deleted, left uint64
	c.do(func(s backendStore) (err error) {
		if deleted, err = s.deletePrefix(prefix, uint64(limit)); err != nil || deleted < uint64(limit) {
			return err // fewer than asked: none was left at that moment
		}
		// The keys are deleted: a count that fails now (a lock timeout)
		// must not reject the call as if nothing had changed. done is then
		// false, which only costs the caller one more call.
		if left, err = s.count(prefix); err != nil {
			left = 1
		}
		return nil
	})
	return c.object("deleted", deleted, "done", left == 0)
}

// ---- scan, list, count, sampling ----------------------------------------

// page runs one scan page: at most limit entries after the cursor (limit
// 0: every entry), plus one to know whether more follow.
func (c *call) page(keysOnly bool) ([]entry, string, bool) {
	o := c.options(0, "prefix", "limit", "cursor")
	prefix := c.prefix(o)
	limit := c.countOrAll(o, "limit", math.MaxInt64)
	after := c.cursor(o)
	ask := uint64(0)
	if limit > 0 {
		ask = uint64(min(limit, 1<<53)) + 1
	}
	var es []entry
	c.do(func(s backendStore) (err error) {
		// Paging a store without the key index reads the whole store per
		// page: quadratic over a scan. The first paged scan of a store that
		// large turns the index on instead (once, for every process); a
		// read-only handle cannot, and pays the pass.
		if ask > 0 && !c.h.cfg.readOnly() {
			// No room for the index (a full disk or reserve): this page
			// pays the pass instead; a later one tries again.
			if err = s.ordered(autoIndexKeys); err != nil && !noRoom(err) {
				return err
			}
		}
		es, err = s.scan(prefix, after, ask, keysOnly)
		return
	})
	if c.err != nil || ask == 0 || uint64(len(es)) < ask {
		return es, "", true
	}
	es = es[:len(es)-1]
	return es, cursorMagic + base64.RawURLEncoding.EncodeToString([]byte(es[len(es)-1].Key)), false
}

func opScan(c *call) sobek.Value {
	es, cursor, done := c.page(false)
	items := make([]any, 0, len(es))
	for _, e := range es {
		v := c.decodeKey(e.Key, e.Value, e.Kind)
		if c.err != nil {
			return nil
		}
		items = append(items, c.object("key", e.Key, "value", v))
	}
	return c.object("entries", c.h.rt.NewArray(items...), "cursor", cursor, "done", done)
}

func opScanKeys(c *call) sobek.Value {
	es, cursor, done := c.page(true)
	return c.object("keys", keysOf(es), "cursor", cursor, "done", done)
}

// anyStrings is ss as the []any that the engine's conversions take.
func anyStrings(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func keysOf(es []entry) []any {
	keys := make([]any, len(es))
	for i, e := range es {
		keys[i] = e.Key
	}
	return keys
}

func opListKeys(c *call) sobek.Value {
	o := c.options(0, "prefix", "limit")
	prefix := c.prefix(o)
	limit := c.limit(o)
	var es []entry
	c.do(func(s backendStore) (err error) { es, err = s.scan(prefix, "", limit, true); return })
	return c.result(keysOf(es))
}

func opCount(c *call) sobek.Value {
	prefix := c.prefix(c.options(0, "prefix"))
	var n uint64
	c.do(func(s backendStore) (err error) { n, err = s.count(prefix); return })
	return c.result(n)
}

func opRandomKeys(c *call) sobek.Value {
	o := c.options(0, "prefix", "count", "unique")
	if o == nil && c.err == nil {
		c.invalid("options {count} are required")
	}
	prefix := c.prefix(o)
	n := c.number(o, "count", 1, maxSample, 0, true)
	unique := c.flag(o, "unique", true)
	var keys []string
	c.do(func(s backendStore) (err error) { keys, err = s.randomKeys(prefix, uint64(n), unique); return })
	return c.result(anyStrings(keys))
}

// ---- compare as JSON, and the detailed forms -----------------------------

// compared is the outcome of a compare-and-swap or -delete.
type compared struct {
	done    bool
	existed bool
	current []byte // on a mismatch with the key present
	kind    Kind
}

// compareAndWrite swaps val in (del false) or deletes (del true) when the
// stored value equals expect (nil expect: when the key is absent). JSON
// values are compared as values, not bytes: {"a":1,"b":2} equals
// {"b":2,"a":1}. The store compares bytes, so a mismatch is read back and,
// when it equals expect as JSON, the write is tried again against exactly
// the bytes read: the outcome is decided on one value that was current at
// one moment, whoever writes meanwhile.
func compareAndWrite(s backendStore, key string, expect, val []byte, kind Kind, del, asJSON bool, scratch []byte) (compared, error) {
	var r compared
	for try := 0; try < 64; try++ {
		var ok bool
		var err error
		switch {
		case expect == nil:
			ok, err = s.setIfAbsent(key, val, kind)
		case del:
			ok, err = s.compareAndDelete(key, expect)
		default:
			ok, err = s.cas(key, expect, val, kind)
		}
		if err != nil || ok {
			return compared{done: ok, existed: expect != nil}, err
		}
		cur, ck, err := s.get(key, scratch)
		if codeOf(err) == codeNotFound {
			if expect == nil {
				continue // deleted since: the key is absent after all
			}
			return compared{}, nil
		}
		if err != nil {
			return r, err
		}
		r = compared{existed: true, current: cur, kind: ck}
		if expect == nil {
			return r, nil
		}
		if bytes.Equal(cur, expect) {
			continue // changed and changed back: try again
		}
		if !asJSON || ck != KindJSON || !jsonEqual(cur, expect) {
			return r, nil
		}
		expect = cur
	}
	return r, nil // outpaced by writers 64 times: the last value seen differed
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// compare runs compareAndWrite for the method's arguments: key, expected
// value (absent: "key absent", for swaps only) and, for swaps, the value.
func (c *call) compare(del bool, absentMeansMissing bool) compared {
	key := c.key(0)
	var expect []byte
	if old := c.args.Argument(1); !absentMeansMissing || !absent(old) {
		if expect, _ = c.encode(old); expect == nil {
			expect = []byte{}
		}
	}
	var val []byte
	var kind Kind
	if !del {
		val, kind = c.value(2)
	}
	var r compared
	c.do(func(s backendStore) (err error) {
		r, err = compareAndWrite(s, key, expect, val, kind, del, !c.h.codec.stringMode, c.h.readScratch())
		return
	})
	return r
}

func opCompareAndSwap(c *call) sobek.Value {
	return c.result(c.compare(false, true).done)
}

func opCompareAndDelete(c *call) sobek.Value {
	return c.result(c.compare(true, false).done)
}

// detailed builds the result of the detailed forms; include was read (and
// checked) before anything was written.
func (c *call) detailed(r compared, doneName, doneReason string, include bool) sobek.Value {
	if c.err != nil {
		return nil
	}
	if r.done {
		return c.object(doneName, true, "reason", doneReason)
	}
	kv := []any{doneName, false, "reason", "mismatch", "existed", r.existed}
	if include && r.existed {
		kv = append(kv, "current", c.decode(r.current, r.kind))
	}
	return c.object(kv...)
}

func opCompareAndSwapDetailed(c *call) sobek.Value {
	include := c.flag(c.options(3, "includeCurrentOnMismatch"), "includeCurrentOnMismatch", false)
	return c.detailed(c.compare(false, true), "swapped", "swapped", include)
}

func opCompareAndDeleteDetailed(c *call) sobek.Value {
	include := c.flag(c.options(2, "includeCurrentOnMismatch"), "includeCurrentOnMismatch", false)
	return c.detailed(c.compare(true, false), "deleted", "deleted", include)
}
