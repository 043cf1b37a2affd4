//go:build cgo

package kv

import (
	"math"
	"strconv"

	"github.com/grafana/sobek"
)

// methods is the script API of a KV object: each body reads its arguments,
// calls the store once through c.do and builds its result (see call).
var methods = map[string]func(*call) sobek.Value{
	"get":              opGet,
	"set":              opSet,
	"delete":           opDelete,
	"exists":           opExists,
	"list":             opList,
	"clear":            opClear,
	"size":             opSize,
	"randomKey":        opRandomKey,
	"rebuildKeyList":   opRebuildKeyList,
	"close":            opClose,
	"incrementBy":      opIncrementBy,
	"compareAndSwap":   opCompareAndSwap,
	"setIfAbsent":      opSetIfAbsent,
	"getOrSet":         opGetOrSet,
	"swap":             opSwap,
	"deleteIfExists":   opDeleteIfExists,
	"compareAndDelete": opCompareAndDelete,

	"getMany":                  opGetMany,
	"setMany":                  opSetMany,
	"deleteMany":               opDeleteMany,
	"deleteByPrefix":           opDeleteByPrefix,
	"scan":                     opScan,
	"scanKeys":                 opScanKeys,
	"listKeys":                 opListKeys,
	"count":                    opCount,
	"randomKeys":               opRandomKeys,
	"compareAndSwapDetailed":   opCompareAndSwapDetailed,
	"compareAndDeleteDetailed": opCompareAndDeleteDetailed,

	"importCSV":       opImportCSV,
	"importJSONL":     opImportJSONL,
	"exportCSV":       opExportCSV,
	"exportJSONL":     opExportJSONL,
	"validateCSV":     opValidateCSV,
	"validateJSONL":   opValidateJSONL,
	"stats":           opStats,
	"allocationStats": opAllocationStats,
	"reportStats":     opReportStats,
	"backup":          opBackup,
	"restore":         opRestore,

	"popRandom":       opPopRandom,
	"popRandomMany":   opPopRandomMany,
	"claimRandom":     opClaimRandom,
	"claimRandomMany": opClaimRandomMany,
	"claimKey":        opClaimKey,
	"claimKeys":       opClaimKeys,
	"releaseClaim":    opReleaseClaim,
	"releaseClaims":   opReleaseClaims,
	"completeClaim":   opCompleteClaim,
	"completeClaims":  opCompleteClaims,
	"renewClaim":      opRenewClaim,
	"renewClaims":     opRenewClaims,
}

// ---- basic operations ---------------------------------------------------

func opGet(c *call) sobek.Value {
	key := c.key(0)
	var b []byte
	var kind Kind
	c.do(func(s backendStore) (err error) { b, kind, err = s.get(key, c.h.readScratch()); return })
	return c.decode(b, kind)
}

func opSet(c *call) sobek.Value {
	key := c.key(0)
	b, kind := c.value(1)
	c.do(func(s backendStore) error { return s.set(key, b, kind) })
	if c.err != nil {
		return nil
	}
	return c.args.Argument(1)
}

// opDelete resolves true whether or not the key was there (deleteIfExists
// tells the two apart).
func opDelete(c *call) sobek.Value {
	key := c.key(0)
	c.do(func(s backendStore) error { _, err := s.del(key); return err })
	return c.result(true)
}

func opDeleteIfExists(c *call) sobek.Value {
	key := c.key(0)
	var existed bool
	c.do(func(s backendStore) (err error) { existed, err = s.del(key); return })
	return c.result(existed)
}

func opExists(c *call) sobek.Value {
	key := c.key(0)
	var ok bool
	c.do(func(s backendStore) (err error) { ok, err = s.exists(key); return })
	return c.result(ok)
}

func opClear(c *call) sobek.Value {
	c.do(backendStore.clear)
	return c.result(true)
}

func opSize(c *call) sobek.Value {
	var n uint64
	c.do(func(s backendStore) (err error) { n, err = s.size(); return })
	return c.result(n)
}

func opRebuildKeyList(c *call) sobek.Value {
	c.do(backendStore.rebuildIndex)
	return c.result(true)
}

// opClose releases this KV object's handle; the store itself is closed by
// its last handle in the process (or when k6 exits). Calling it again is
// harmless.
func opClose(c *call) sobek.Value {
	if !c.h.closed {
		c.h.closed = true
		if err := live.remove(c.h); err != nil {
			c.fail(storeError(c.name, "", 0, err))
		}
	}
	return c.result(true)
}

// ---- listing and sampling -----------------------------------------------

func opList(c *call) sobek.Value {
	o := c.options(0, "prefix", "limit")
	prefix := c.prefix(o)
	limit := c.limit(o)
	var entries []entry
	c.do(func(s backendStore) (err error) { entries, err = s.list(prefix, limit); return })
	if c.err != nil {
		return nil
	}
	items := make([]any, len(entries))
	for i, e := range entries {
		v := c.decodeKey(e.Key, e.Value, e.Kind)
		if c.err != nil {
			return nil
		}
		items[i] = c.object("key", e.Key, "value", v)
	}
	return c.h.rt.NewArray(items...)
}

// limit reads the limit option of o: 0 (everything) when absent or below 1.
func (c *call) limit(o *sobek.Object) uint64 {
	if c.err != nil || o == nil {
		return 0
	}
	v := o.Get("limit")
	if absent(v) {
		return 0
	}
	if !sobek.IsNumber(v) || math.IsNaN(v.ToFloat()) {
		c.invalid("limit must be a number, got %s", typeName(v))
		return 0
	}
	if f := v.ToFloat(); f >= 1 && !math.IsInf(f, 1) {
		return uint64(math.Min(f, 1<<62))
	}
	return 0
}

func opRandomKey(c *call) sobek.Value {
	prefix := c.prefix(c.options(0, "prefix"))
	if c.h.scratch == nil {
		c.h.scratch = make([]byte, keyMax)
	}
	var k string
	c.do(func(s backendStore) (err error) { k, _, err = s.randomKey(prefix, c.h.scratch); return })
	return c.result(k)
}

// ---- atomic operations --------------------------------------------------

// delta reads incrementBy's delta: a number holding a 64-bit integer.
func (c *call) delta(i int) int64 {
	v := c.args.Argument(i)
	if c.err != nil {
		return 0
	}
	if !sobek.IsNumber(v) {
		c.fail(newErr(ErrValueNumberRequired, "incrementBy: delta must be an integer number, got %s", typeName(v)))
		return 0
	}
	if v.ExportType() == typeInt64 {
		return v.ToInteger()
	}
	f := v.ToFloat()
	if math.IsNaN(f) || math.IsInf(f, 0) || f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
		c.fail(newErr(ErrValueNumberRequired, "incrementBy: delta must be an integer within the 64-bit range, got %s", v.String()))
		return 0
	}
	return int64(f)
}

func opIncrementBy(c *call) sobek.Value {
	key := c.key(0)
	delta := c.delta(1)
	var n int64
	c.do(func(s backendStore) (err error) {
		n, err = s.incr(key, delta, c.h.codec.kind())
		if codeOf(err) == codeNotInt && !c.h.codec.stringMode {
			n, err = incrementSlow(s, key, delta, c.h.readScratch())
		}
		return err
	})
	return c.result(n)
}

// incrementSlow handles JSON values the library does not read as integers
// (a string "41", a number written 41.0 or 4.1e1): read, add, and
// compare-and-swap the canonical decimal back, retrying on a race.
func incrementSlow(s backendStore, key string, delta int64, scratch []byte) (int64, error) {
	for {
		raw, kind, err := s.get(key, scratch)
		if codeOf(err) == codeNotFound {
			// Deleted meanwhile: the plain increment creates it.
		} else if err != nil {
			return 0, err
		} else {
			cur, ok := int64(0), false
			if kind == KindJSON {
				cur, ok = decodeInt(raw)
			}
			if !ok {
				return 0, &CError{Code: codeNotInt}
			}
			sum := cur + delta
			if (delta > 0 && sum < cur) || (delta < 0 && sum > cur) {
				return 0, &CError{Code: codeOverflow}
			}
			swapped, err := s.cas(key, raw, strconv.AppendInt(nil, sum, 10), kind)
			if err != nil {
				return 0, err
			}
			if swapped {
				return sum, nil
			}
		}
		n, err := s.incr(key, delta, KindJSON)
		if codeOf(err) != codeNotInt {
			return n, err
		}
	}
}

func opSetIfAbsent(c *call) sobek.Value {
	key := c.key(0)
	val, kind := c.value(1)
	var ok bool
	c.do(func(s backendStore) (err error) { ok, err = s.setIfAbsent(key, val, kind); return })
	return c.result(ok)
}

func opGetOrSet(c *call) sobek.Value {
	v, loaded := c.exchange(backendStore.getOrSet, false)
	return c.object("value", v, "loaded", loaded)
}

func opSwap(c *call) sobek.Value {
	prev, loaded := c.exchange(backendStore.swap, true)
	if !loaded {
		prev = sobek.Null()
	}
	return c.object("previous", prev, "loaded", loaded)
}

// exchange runs a store call that writes argument 1 under the key in
// argument 0 and hands back a stored value (nil bytes: none), decoded;
// swap: the call replaced that value.
func (c *call) exchange(op func(s backendStore, key string, val []byte, kind Kind, scratch []byte) ([]byte, Kind, bool, error), swap bool) (sobek.Value, bool) {
	key := c.key(0)
	val, kind := c.value(1)
	var b []byte
	var bkind Kind
	var loaded bool
	c.do(func(s backendStore) (err error) {
		b, bkind, loaded, err = op(s, key, val, kind, c.h.readScratch())
		return
	})
	if b == nil {
		return nil, loaded
	}
	v := c.decode(b, bkind)
	if c.err != nil && swap {
		// The old value does not decode (another program wrote it), and
		// the call rejects: it must not have replaced it. The old bytes go
		// back unless the key was written again meanwhile.
		back := false
		if c.h.enter() == nil {
			back, _ = c.h.db.cas(key, val, b, bkind)
			c.h.leave()
		}
		if back {
			c.err.Message += "; the value is left as it was"
		} else {
			c.err.Message += "; the new value stays (the key was written again meanwhile)"
		}
	}
	return v, loaded
}
