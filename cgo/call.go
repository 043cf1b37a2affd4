//go:build cgo

package kv

import (
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/grafana/sobek"
	"go.k6.io/k6/v2/js/modules"
)

// handle is the KV object one openKv call returns. It belongs to one VU (one
// runtime, one goroutine) and owns one library handle; the library shares
// one mapping among the handles of a store.
//
// Every method settles its promise before returning it, on the VU's own
// goroutine: a store call takes well under a microsecond, far less than a
// goroutine and an event-loop callback would cost.
type handle struct {
	rt       *sobek.Runtime
	vu       modules.VU // nil in tests that build a handle by hand
	cfg      *config
	codec    *codec
	db       backendStore
	errProto *sobek.Object

	closed bool
	// busy is set around every store call and exiting before the store is
	// closed at exit, so that closing waits for a call in flight and a
	// later call rejects instead of reaching a closed handle.
	busy    atomic.Bool
	exiting atomic.Bool
	// hint is the buffer size tried first when reading a value: the largest
	// value read so far, within limits.
	hint    int
	scratch []byte
	// rbuf and manyScratch are where reads land before each value is
	// copied out at its exact size (see readScratch).
	rbuf        []byte
	manyScratch []byte
	// claimBuf is the scratch space of the claim and pop calls.
	claimBuf claimBuf

	// metrics of the run (nil without a registry); ops is set only with
	// metrics: {operations: true}, and is what object() looks at.
	metrics *kvMetrics
	ops     *opMetrics
}

const (
	minHint = 256
	maxHint = 64 << 10
	// maxManyScratch bounds the getMany buffer a handle keeps.
	maxManyScratch = 1 << 20
)

func newHandle(rt *sobek.Runtime, cfg *config) (*handle, *kvError) {
	c, err := newCodec(rt, cfg.serialization)
	if err != nil {
		return nil, err
	}
	h := &handle{rt: rt, cfg: cfg, codec: c, hint: minHint, errProto: errorPrototype(rt)}
	return h, nil
}

// errorPrototype is the engine's own Error.prototype, found through an
// error the engine makes (a script may have replaced the global Error).
func errorPrototype(rt *sobek.Runtime) *sobek.Object {
	return rt.NewTypeError("").Prototype().Prototype()
}

// plain builds an object of name/value pairs with prototype proto, as
// JSON.parse builds one: the pairs are set while it has no prototype yet,
// so each is an own data property whatever setter or frozen property a
// script put on the prototype.
func (h *handle) plain(proto *sobek.Object, kv ...any) *sobek.Object {
	o := h.rt.CreateObject(nil)
	for i := 0; i+1 < len(kv); i += 2 {
		_ = o.Set(kv[i].(string), kv[i+1])
	}
	_ = o.SetPrototype(proto)
	return o
}

// object builds the JS object with the KV methods of the methods table.
// With operation metrics each method is wrapped in their measurement;
// without, the plain method is installed, so that metrics off cost nothing
// per call.
func (h *handle) object() *sobek.Object {
	o := h.rt.NewObject()
	for name, body := range methods {
		if h.ops != nil {
			_ = o.Set(name, h.measured(name, body))
		} else {
			_ = o.Set(name, h.method(name, body))
		}
	}
	return o
}

// method turns a method body into the JS function: it runs the body and
// returns a promise settled with its result or its first failure.
func (h *handle) method(name string, body func(*call) sobek.Value) func(sobek.FunctionCall) sobek.Value {
	return func(args sobek.FunctionCall) sobek.Value {
		c := call{h: h, name: name, args: args}
		v, thrown := h.run(&c, body)
		return h.settle(&c, v, thrown)
	}
}

// measured is method with the operation metrics of the call emitted.
func (h *handle) measured(name string, body func(*call) sobek.Value) func(sobek.FunctionCall) sobek.Value {
	op := opTag(name)
	return func(args sobek.FunctionCall) sobek.Value {
		start := time.Now()
		c := call{h: h, name: name, args: args}
		v, thrown := h.run(&c, body)
		switch {
		case thrown != nil:
			h.observe(op, start, true, thrownName(thrown), nil)
		case c.err != nil:
			h.observe(op, start, true, c.err.Name, nil)
		default:
			h.observe(op, start, false, "", v)
		}
		return h.settle(&c, v, thrown)
	}
}

// run runs a method body. A getter or Proxy trap of an argument may throw,
// or the engine may (a revoked Proxy): what was thrown is returned, for the
// promise to reject with, as an async function's would, instead of the call
// throwing. Any other panic is a bug of ours and goes on.
func (h *handle) run(c *call, body func(*call) sobek.Value) (v sobek.Value, thrown sobek.Value) {
	defer func() {
		if r := recover(); r != nil {
			switch x := r.(type) {
			case *sobek.Exception:
				thrown = x.Value()
			case sobek.Value:
				// The engine throws its own errors this way (a revoked
				// Proxy's TypeError, say): a throw all the same.
				thrown = x
			default:
				// A conversion the engine refuses (a Symbol or a BigInt
				// read as a number, somewhere an argument is read) panics
				// with one of its unexported string types, which it turns
				// into an error object only when it catches them itself:
				// here they reject the promise, as a TypeError (no global
				// is looked up, which a script could have replaced).
				t := reflect.TypeOf(r)
				if t == nil || t.PkgPath() != "github.com/grafana/sobek" || t.Kind() != reflect.String {
					panic(r)
				}
				thrown = h.rt.NewTypeError("%s", reflect.ValueOf(r).String())
			}
		}
	}()
	return body(c), nil
}

// settle returns the call's promise, settled.
func (h *handle) settle(c *call, v, thrown sobek.Value) sobek.Value {
	p, resolve, reject := h.rt.NewPromise()
	switch {
	case thrown != nil:
		_ = reject(thrown)
	case c.err != nil:
		_ = reject(h.errorValue(c.err))
	default:
		_ = resolve(v)
	}
	return h.rt.ToValue(p)
}

// errorValue is the rejection value: an object with name and message whose
// prototype is Error.prototype (so String(err) reads "Name: message").
func (h *handle) errorValue(e *kvError) *sobek.Object {
	kv := []any{"name", e.Name, "message", e.Message}
	if len(e.Errors) > 0 {
		details := make([]any, len(e.Errors))
		for i, d := range e.Errors {
			details[i] = h.plain(h.codec.objProto, "key", d.Key, "name", d.Name, "message", d.Message)
		}
		kv = append(kv, "errors", h.rt.NewArray(details...))
	}
	return h.plain(h.errProto, kv...)
}

var errClosed = &kvError{Name: ErrStoreClosed, Message: "the store is closed"}

// enter is called before a store call and leave after it.
func (h *handle) enter() *kvError {
	if h.closed {
		return errClosed
	}
	h.busy.Store(true)
	if h.exiting.Load() {
		h.busy.Store(false)
		return errClosed
	}
	return nil
}

func (h *handle) leave() { h.busy.Store(false) }

// readScratch is the buffer a read of one value lands in: as large as the
// largest value read so far (within maxHint), so that a read is one call.
// Only the handle's own calls use it, one at a time, and no value is
// handed out from it.
func (h *handle) readScratch() []byte {
	if len(h.rbuf) < h.hint {
		h.rbuf = make([]byte, h.hint)
	}
	return h.rbuf
}

// keepManyScratch keeps the buffer a getMany used for the next one, unless
// it grew past what a handle should hold on to between calls.
func (h *handle) keepManyScratch(b []byte) {
	if len(b) <= maxManyScratch {
		h.manyScratch = b
	}
}

func (h *handle) noteSize(n int) {
	if n > h.hint && n <= maxHint {
		h.hint = n
	}
}

// call carries one script call from its JS arguments to its result. Each
// step does nothing once a step has failed, and the first failure is what
// the promise rejects with, so a method body reads straight through:
//
//	key := c.key(0)
//	c.do(func(s backendStore) (err error) { v, k, err = s.get(key, c.h.readScratch()); return })
//	return c.decode(v, k)
type call struct {
	h    *handle
	name string
	args sobek.FunctionCall
	err  *kvError
	// what the messages of store errors mention
	keyArg string
	valLen int
	// raw is the store's error behind err, for methods that look closer
	raw error
}

func (c *call) fail(e *kvError) {
	if c.err == nil {
		c.err = e
	}
}

// invalid fails the call with InvalidOptionsError, naming the method.
func (c *call) invalid(format string, args ...any) {
	c.fail(newErr(ErrInvalidOptions, c.name+": "+format, args...))
}

// str reads argument v as a string that maps one-to-one onto UTF-8 bytes.
// A JS string may hold a lone UTF-16 surrogate, which UTF-8 cannot encode:
// the conversion would turn "\uD800" and "\uDBFF" both into U+FFFD and make
// two keys one. Such strings are refused. The check costs nothing for
// strings without U+FFFD, and a genuine U+FFFD survives the round trip.
func (c *call) str(what string, v sobek.Value) string {
	if c.err != nil {
		return ""
	}
	if !sobek.IsString(v) {
		c.invalid("%s must be a string, got %s", what, typeName(v))
		return ""
	}
	s := v.String()
	if strings.ContainsRune(s, utf8.RuneError) && !c.h.rt.ToValue(s).StrictEquals(v) {
		c.invalid("%s contains a lone UTF-16 surrogate (such as \"\\uD800\" without its pair), "+
			"which has no UTF-8 form: keys and prefixes must be well-formed Unicode", what)
		return ""
	}
	return s
}

// key reads argument i as a key. Its length is the library's to judge.
func (c *call) key(i int) string {
	k := c.str("key", c.args.Argument(i))
	c.keyArg = k
	return k
}

// value encodes argument i with the store's serialization.
func (c *call) value(i int) ([]byte, Kind) {
	return c.encode(c.args.Argument(i))
}

func (c *call) encode(v sobek.Value) ([]byte, Kind) {
	if c.err != nil {
		return nil, 0
	}
	b, k, err := c.h.codec.encode(v)
	if err != nil {
		c.fail(err)
		return nil, 0
	}
	c.valLen = max(c.valLen, len(b))
	return b, k
}

// options reads argument i as an object of method options (nil when
// absent). A key outside known is refused, as openKv refuses unknown
// options: a misspelled {limt: 5} must not quietly list everything.
func (c *call) options(i int, known ...string) *sobek.Object {
	v := c.args.Argument(i)
	if c.err != nil || absent(v) {
		return nil
	}
	o, ok := v.(*sobek.Object)
	if !ok || typeName(v) != "object" {
		c.invalid("options must be an object, got %s", typeName(v))
		return nil
	}
	for _, k := range o.Keys() {
		found := false
		for _, want := range known {
			found = found || k == want
		}
		if !found {
			c.invalid("unknown option %q (known: %s)", k, strings.Join(known, ", "))
			return nil
		}
	}
	return o
}

// prefix reads the prefix option of o ("" when absent).
func (c *call) prefix(o *sobek.Object) string {
	if c.err != nil || o == nil {
		return ""
	}
	v := o.Get("prefix")
	if absent(v) {
		return ""
	}
	return c.str("prefix", v)
}

// do runs one store call between enter and leave; its error becomes the
// call's failure, named from the library's code.
func (c *call) do(fn func(s backendStore) error) {
	if c.err != nil {
		return
	}
	if e := c.h.enter(); e != nil {
		c.fail(e)
		return
	}
	err := fn(c.h.db)
	c.h.leave()
	if err != nil {
		c.raw = err
		c.fail(storeError(c.name, c.keyArg, c.valLen, err))
	}
}

// decode turns stored bytes into a JS value.
func (c *call) decode(b []byte, k Kind) sobek.Value {
	if c.err != nil {
		return nil
	}
	c.h.noteSize(len(b))
	v, err := c.h.codec.decode(b, k)
	if err != nil {
		c.fail(err)
		return nil
	}
	return v
}

// decodeKey is decode for the methods that read many keys: a value that
// does not decode names its key ("list: key \"k\": ...").
func (c *call) decodeKey(key string, b []byte, k Kind) sobek.Value {
	v := c.decode(b, k)
	if c.err != nil {
		c.err.Message = c.name + ": key " + strconv.Quote(key) + ": " + c.err.Message
	}
	return v
}

// result converts a Go value for the promise.
func (c *call) result(v any) sobek.Value {
	if c.err != nil {
		return nil
	}
	return c.h.rt.ToValue(v)
}

// object builds a result object from name/value pairs (see plain).
func (c *call) object(kv ...any) sobek.Value {
	if c.err != nil {
		return nil
	}
	return c.h.plain(c.h.codec.objProto, kv...)
}
