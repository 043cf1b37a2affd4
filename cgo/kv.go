//go:build cgo

package kv

import (
	"math"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/grafana/sobek"
)

// handle is the KV object one openKv call returns: it belongs to one VU
// (one runtime, one goroutine) and uses a store shared by the process.
//
// Every method settles its promise before returning it, on the VU's own
// goroutine: a store call takes well under a microsecond, far less than a
// goroutine and an event-loop callback would cost.
type handle struct {
	rt       *sobek.Runtime
	cfg      *config
	codec    *codec
	st       *sharedStore
	errProto *sobek.Object

	closed bool
	// busy is set around every C call, so that closing the store at exit
	// can wait for calls in flight (see registry.closeAll).
	busy atomic.Bool
	// hint is the buffer size tried first when reading a value: the largest
	// value read so far, within limits.
	hint    int
	scratch []byte
}

const (
	minHint = 256
	maxHint = 64 << 10
)

func newHandle(rt *sobek.Runtime, cfg *config) (*handle, *kvError) {
	c, err := newCodec(rt, cfg.serialization)
	if err != nil {
		return nil, err
	}
	h := &handle{rt: rt, cfg: cfg, codec: c, hint: minHint}
	if ctor, ok := rt.Get("Error").(*sobek.Object); ok {
		if p, ok := ctor.Get("prototype").(*sobek.Object); ok {
			h.errProto = p
		}
	}
	return h, nil
}

// object builds the JS object with the KV methods.
func (h *handle) object() *sobek.Object {
	o := h.rt.NewObject()
	methods := map[string]func(sobek.FunctionCall) (sobek.Value, *kvError){
		"get":              h.get,
		"set":              h.set,
		"delete":           h.delete,
		"exists":           h.exists,
		"list":             h.list,
		"clear":            h.clear,
		"size":             h.size,
		"randomKey":        h.randomKey,
		"rebuildKeyList":   h.rebuildKeyList,
		"close":            h.close,
		"incrementBy":      h.incrementBy,
		"compareAndSwap":   h.compareAndSwap,
		"setIfAbsent":      h.setIfAbsent,
		"getOrSet":         h.getOrSet,
		"swap":             h.swap,
		"deleteIfExists":   h.deleteIfExists,
		"compareAndDelete": h.compareAndDelete,
	}
	for name, fn := range methods {
		_ = o.Set(name, h.promised(fn))
	}
	return o
}

// promised wraps a method so that it returns a promise settled with its
// result.
func (h *handle) promised(fn func(sobek.FunctionCall) (sobek.Value, *kvError)) func(sobek.FunctionCall) sobek.Value {
	return func(call sobek.FunctionCall) sobek.Value {
		v, kerr := fn(call)
		p, resolve, reject := h.rt.NewPromise()
		if kerr != nil {
			_ = reject(h.errorValue(kerr))
		} else {
			_ = resolve(v)
		}
		return h.rt.ToValue(p)
	}
}

// errorValue is the rejection value: an object with name and message whose
// prototype is Error.prototype (so String(err) reads "Name: message").
func (h *handle) errorValue(e *kvError) *sobek.Object {
	o := h.rt.NewObject()
	if h.errProto != nil {
		_ = o.SetPrototype(h.errProto)
	}
	_ = o.Set("name", e.Name)
	_ = o.Set("message", e.Message)
	return o
}

var errClosed = &kvError{Name: ErrStoreClosed, Message: "the store is closed"}

// enter is called before a C call and leave after it.
func (h *handle) enter() *kvError {
	if h.closed {
		return errClosed
	}
	h.busy.Store(true)
	if h.st.exiting.Load() {
		h.busy.Store(false)
		return errClosed
	}
	return nil
}

func (h *handle) leave() { h.busy.Store(false) }

func (h *handle) db() backendStore { return h.st.db }

func (h *handle) noteSize(n int) {
	if n > h.hint && n <= maxHint {
		h.hint = n
	}
}

// key validates a key argument: a non-empty string of at most keyMax bytes.
func (h *handle) key(v sobek.Value) (string, *kvError) {
	if !sobek.IsString(v) {
		return "", newErr(ErrInvalidOptions, "key must be a string, got %s", typeName(v))
	}
	s := v.String()
	if s == "" {
		return "", newErr(ErrInvalidOptions, "key must not be empty")
	}
	if len(s) > keyMax {
		return "", newErr(ErrKeyTooLong, "key is %d bytes long; the limit is %d", len(s), keyMax)
	}
	return s, nil
}

func (h *handle) encodeValue(v sobek.Value) ([]byte, Kind, *kvError) {
	b, k, err := h.codec.encode(v)
	if err != nil {
		return nil, 0, err
	}
	if len(b) > valueMax {
		return nil, 0, newErr(ErrValueTooLarge, "value is %d bytes once encoded; the limit is %d", len(b), valueMax)
	}
	return b, k, nil
}

// ---- basic operations ---------------------------------------------------

func (h *handle) get(call sobek.FunctionCall) (sobek.Value, *kvError) {
	key, kerr := h.key(call.Argument(0))
	if kerr != nil {
		return nil, kerr
	}
	if kerr := h.enter(); kerr != nil {
		return nil, kerr
	}
	b, kind, err := h.db().get(key, h.hint)
	h.leave()
	if err != nil {
		if codeOf(err) == codeNotFound {
			return nil, newErr(ErrKeyNotFound, "key %q not found", key)
		}
		return nil, mapError("get", err)
	}
	h.noteSize(len(b))
	return h.codec.decode(b, kind)
}

func (h *handle) set(call sobek.FunctionCall) (sobek.Value, *kvError) {
	key, kerr := h.key(call.Argument(0))
	if kerr != nil {
		return nil, kerr
	}
	val := call.Argument(1)
	b, kind, kerr := h.encodeValue(val)
	if kerr != nil {
		return nil, kerr
	}
	if kerr := h.enter(); kerr != nil {
		return nil, kerr
	}
	err := h.db().set(key, b, kind)
	h.leave()
	if err != nil {
		return nil, mapError("set", err)
	}
	return val, nil
}

// keyAnswer runs a store call that takes one key and answers yes or no.
func (h *handle) keyAnswer(method string, call sobek.FunctionCall,
	op func(backendStore, string) (bool, error)) (bool, *kvError) {
	key, kerr := h.key(call.Argument(0))
	if kerr != nil {
		return false, kerr
	}
	if kerr := h.enter(); kerr != nil {
		return false, kerr
	}
	ok, err := op(h.db(), key)
	h.leave()
	if err != nil {
		return false, mapError(method, err)
	}
	return ok, nil
}

// delete resolves true whether or not the key was there (deleteIfExists
// tells the two apart).
func (h *handle) delete(call sobek.FunctionCall) (sobek.Value, *kvError) {
	if _, kerr := h.keyAnswer("delete", call, backendStore.del); kerr != nil {
		return nil, kerr
	}
	return h.rt.ToValue(true), nil
}

func (h *handle) exists(call sobek.FunctionCall) (sobek.Value, *kvError) {
	ok, kerr := h.keyAnswer("exists", call, backendStore.exists)
	if kerr != nil {
		return nil, kerr
	}
	return h.rt.ToValue(ok), nil
}

func (h *handle) clear(sobek.FunctionCall) (sobek.Value, *kvError) {
	if kerr := h.enter(); kerr != nil {
		return nil, kerr
	}
	err := h.db().clear()
	h.leave()
	if err != nil {
		return nil, mapError("clear", err)
	}
	return h.rt.ToValue(true), nil
}

func (h *handle) size(sobek.FunctionCall) (sobek.Value, *kvError) {
	if kerr := h.enter(); kerr != nil {
		return nil, kerr
	}
	n := h.db().size()
	h.leave()
	return h.rt.ToValue(n), nil
}

func (h *handle) rebuildKeyList(sobek.FunctionCall) (sobek.Value, *kvError) {
	if kerr := h.enter(); kerr != nil {
		return nil, kerr
	}
	err := h.db().rebuildIndex()
	h.leave()
	if err != nil {
		return nil, mapError("rebuildKeyList", err)
	}
	return h.rt.ToValue(true), nil
}

// close releases this KV object; the store itself is closed by its last
// user in the process (or when k6 exits). Calling it again is harmless.
func (h *handle) close(sobek.FunctionCall) (sobek.Value, *kvError) {
	if h.closed {
		return h.rt.ToValue(true), nil
	}
	h.closed = true
	if err := reg.release(h); err != nil {
		return nil, mapError("close", err)
	}
	return h.rt.ToValue(true), nil
}

// ---- listing and sampling -----------------------------------------------

// optionObject returns v as an object of method options, nil when absent.
// A key outside known is refused, as openKv refuses unknown options: a
// misspelled {limt: 5} must not quietly list everything.
func optionObject(method string, v sobek.Value, known ...string) (*sobek.Object, *kvError) {
	if absent(v) {
		return nil, nil
	}
	o, ok := v.(*sobek.Object)
	if !ok || typeName(v) != "object" {
		return nil, newErr(ErrInvalidOptions, "%s: options must be an object, got %s", method, typeName(v))
	}
	for _, k := range o.Keys() {
		found := false
		for _, want := range known {
			found = found || k == want
		}
		if !found {
			return nil, newErr(ErrInvalidOptions, "%s: unknown option %q (known: %s)",
				method, k, strings.Join(known, ", "))
		}
	}
	return o, nil
}

func prefixOption(method string, o *sobek.Object) (string, *kvError) {
	if o == nil {
		return "", nil
	}
	v := o.Get("prefix")
	if absent(v) {
		return "", nil
	}
	if !sobek.IsString(v) {
		return "", newErr(ErrInvalidOptions, "%s: prefix must be a string, got %s", method, typeName(v))
	}
	return v.String(), nil
}

func (h *handle) list(call sobek.FunctionCall) (sobek.Value, *kvError) {
	o, kerr := optionObject("list", call.Argument(0), "prefix", "limit")
	if kerr != nil {
		return nil, kerr
	}
	prefix, kerr := prefixOption("list", o)
	if kerr != nil {
		return nil, kerr
	}
	var limit uint64
	if o != nil {
		if v := o.Get("limit"); !absent(v) {
			if !sobek.IsNumber(v) || math.IsNaN(v.ToFloat()) {
				return nil, newErr(ErrInvalidOptions, "list: limit must be a number, got %s", typeName(v))
			}
			if f := v.ToFloat(); f >= 1 && !math.IsInf(f, 1) {
				limit = uint64(math.Min(f, 1<<62))
			}
		}
	}
	if kerr := h.enter(); kerr != nil {
		return nil, kerr
	}
	entries, err := h.db().list(prefix, limit)
	h.leave()
	if err != nil {
		return nil, mapError("list", err)
	}
	items := make([]any, len(entries))
	for i, e := range entries {
		v, kerr := h.codec.decode(e.Value, e.Kind)
		if kerr != nil {
			kerr.Message = "list: key " + strconv.Quote(e.Key) + ": " + kerr.Message
			return nil, kerr
		}
		item := h.rt.NewObject()
		_ = item.Set("key", e.Key)
		_ = item.Set("value", v)
		items[i] = item
	}
	return h.rt.NewArray(items...), nil
}

func (h *handle) randomKey(call sobek.FunctionCall) (sobek.Value, *kvError) {
	o, kerr := optionObject("randomKey", call.Argument(0), "prefix")
	if kerr != nil {
		return nil, kerr
	}
	prefix, kerr := prefixOption("randomKey", o)
	if kerr != nil {
		return nil, kerr
	}
	if h.scratch == nil {
		h.scratch = make([]byte, keyMax)
	}
	if kerr := h.enter(); kerr != nil {
		return nil, kerr
	}
	k, _, err := h.db().randomKey(prefix, h.scratch)
	h.leave()
	if err != nil {
		return nil, mapError("randomKey", err)
	}
	return h.rt.ToValue(k), nil
}

// ---- atomic operations --------------------------------------------------

// intArg reads incrementBy's delta: a number holding a 64-bit integer.
func intArg(v sobek.Value) (int64, *kvError) {
	if !sobek.IsNumber(v) {
		return 0, newErr(ErrValueNumberRequired, "incrementBy: delta must be an integer number, got %s", typeName(v))
	}
	if v.ExportType() == typeInt64 {
		return v.ToInteger(), nil
	}
	f := v.ToFloat()
	if math.IsNaN(f) || math.IsInf(f, 0) || f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
		return 0, newErr(ErrValueNumberRequired, "incrementBy: delta must be an integer within the 64-bit range, got %s", v.String())
	}
	return int64(f), nil
}

func (h *handle) incrementBy(call sobek.FunctionCall) (sobek.Value, *kvError) {
	key, kerr := h.key(call.Argument(0))
	if kerr != nil {
		return nil, kerr
	}
	delta, kerr := intArg(call.Argument(1))
	if kerr != nil {
		return nil, kerr
	}
	if kerr := h.enter(); kerr != nil {
		return nil, kerr
	}
	n, err := h.db().incr(key, delta, h.codec.kind())
	if codeOf(err) == codeNotInt && !h.codec.stringMode {
		n, err = h.incrementSlow(key, delta)
	}
	h.leave()
	if err != nil {
		switch codeOf(err) {
		case codeNotInt:
			return nil, newErr(ErrValueParse, "incrementBy: the value of key %q is not an integer", key)
		case codeOverflow:
			return nil, newErr(ErrValueParse, "incrementBy: adding %d to key %q overflows a 64-bit integer", delta, key)
		}
		return nil, mapError("incrementBy", err)
	}
	return h.rt.ToValue(n), nil
}

// incrementSlow handles JSON values the library does not read as integers
// (a string "41", a number written 41.0 or 4.1e1): read, add, and
// compare-and-swap the canonical decimal back, retrying on a race.
func (h *handle) incrementSlow(key string, delta int64) (int64, error) {
	for {
		raw, kind, err := h.db().get(key, h.hint)
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
			swapped, err := h.db().cas(key, raw, strconv.AppendInt(nil, sum, 10), kind)
			if err != nil {
				return 0, err
			}
			if swapped {
				return sum, nil
			}
		}
		n, err := h.db().incr(key, delta, KindJSON)
		if codeOf(err) != codeNotInt {
			return n, err
		}
	}
}

func (h *handle) compareAndSwap(call sobek.FunctionCall) (sobek.Value, *kvError) {
	key, kerr := h.key(call.Argument(0))
	if kerr != nil {
		return nil, kerr
	}
	// null or undefined as the old value: "only if the key is absent".
	var expect []byte
	if old := call.Argument(1); !absent(old) {
		if expect, _, kerr = h.encodeValue(old); kerr != nil {
			return nil, kerr
		}
		if expect == nil {
			expect = []byte{}
		}
	}
	val, kind, kerr := h.encodeValue(call.Argument(2))
	if kerr != nil {
		return nil, kerr
	}
	if kerr := h.enter(); kerr != nil {
		return nil, kerr
	}
	ok, err := h.db().cas(key, expect, val, kind)
	h.leave()
	if err != nil {
		return nil, mapError("compareAndSwap", err)
	}
	return h.rt.ToValue(ok), nil
}

func (h *handle) setIfAbsent(call sobek.FunctionCall) (sobek.Value, *kvError) {
	key, kerr := h.key(call.Argument(0))
	if kerr != nil {
		return nil, kerr
	}
	val, kind, kerr := h.encodeValue(call.Argument(1))
	if kerr != nil {
		return nil, kerr
	}
	if kerr := h.enter(); kerr != nil {
		return nil, kerr
	}
	ok, err := h.db().setIfAbsent(key, val, kind)
	h.leave()
	if err != nil {
		return nil, mapError("setIfAbsent", err)
	}
	return h.rt.ToValue(ok), nil
}

func (h *handle) getOrSet(call sobek.FunctionCall) (sobek.Value, *kvError) {
	key, kerr := h.key(call.Argument(0))
	if kerr != nil {
		return nil, kerr
	}
	val, kind, kerr := h.encodeValue(call.Argument(1))
	if kerr != nil {
		return nil, kerr
	}
	if kerr := h.enter(); kerr != nil {
		return nil, kerr
	}
	b, bkind, loaded, err := h.db().getOrSet(key, val, kind, h.hint)
	h.leave()
	if err != nil {
		return nil, mapError("getOrSet", err)
	}
	h.noteSize(len(b))
	v, kerr := h.codec.decode(b, bkind)
	if kerr != nil {
		return nil, kerr
	}
	res := h.rt.NewObject()
	_ = res.Set("value", v)
	_ = res.Set("loaded", loaded)
	return res, nil
}

func (h *handle) swap(call sobek.FunctionCall) (sobek.Value, *kvError) {
	key, kerr := h.key(call.Argument(0))
	if kerr != nil {
		return nil, kerr
	}
	val, kind, kerr := h.encodeValue(call.Argument(1))
	if kerr != nil {
		return nil, kerr
	}
	if kerr := h.enter(); kerr != nil {
		return nil, kerr
	}
	b, bkind, loaded, err := h.db().swap(key, val, kind, h.hint)
	h.leave()
	if err != nil {
		return nil, mapError("swap", err)
	}
	prev := sobek.Null()
	if loaded {
		h.noteSize(len(b))
		if prev, kerr = h.codec.decode(b, bkind); kerr != nil {
			return nil, kerr
		}
	}
	res := h.rt.NewObject()
	_ = res.Set("previous", prev)
	_ = res.Set("loaded", loaded)
	return res, nil
}

func (h *handle) deleteIfExists(call sobek.FunctionCall) (sobek.Value, *kvError) {
	existed, kerr := h.keyAnswer("deleteIfExists", call, backendStore.del)
	if kerr != nil {
		return nil, kerr
	}
	return h.rt.ToValue(existed), nil
}

func (h *handle) compareAndDelete(call sobek.FunctionCall) (sobek.Value, *kvError) {
	key, kerr := h.key(call.Argument(0))
	if kerr != nil {
		return nil, kerr
	}
	expect, _, kerr := h.encodeValue(call.Argument(1))
	if kerr != nil {
		return nil, kerr
	}
	if kerr := h.enter(); kerr != nil {
		return nil, kerr
	}
	ok, err := h.db().compareAndDelete(key, expect)
	h.leave()
	if err != nil {
		return nil, mapError("compareAndDelete", err)
	}
	return h.rt.ToValue(ok), nil
}
