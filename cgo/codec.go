//go:build cgo

package kv

import (
	"bytes"
	"math"
	"reflect"
	"strconv"
	"strings"
	"unsafe"

	"github.com/grafana/sobek"
)

// codec turns JS values into stored bytes and back, for one VU's runtime.
//
// json: values are encoded as JSON.stringify would (object keys keep their
// order), except that NaN, Infinity, functions, symbols, BigInts and cycles
// are SerializerErrors instead of being silently dropped or turned into
// null. Strings, numbers, booleans and null take a fast path in Go; objects
// and arrays go through the runtime's JSON.stringify with a checking
// replacer. Decoding uses the runtime's JSON.parse (fast path for the same
// primitives), so a value reads back exactly as it was written.
//
// string: strings are stored as their UTF-8 bytes, numbers and booleans as
// their String() form, ArrayBuffers and typed arrays as raw bytes; anything
// else is a SerializerError. Values are always read back as strings.
type codec struct {
	rt         *sobek.Runtime
	stringMode bool

	json      *sobek.Object
	stringify sobek.Callable
	parse     sobek.Callable
	replacer  sobek.Value
	replErr   *kvError
	// the engine's prototypes of plain data, for parser and fastStringify
	objProto, arrProto *sobek.Object
	parser             jsonParser
}

var (
	typeInt64 = reflect.TypeOf(int64(0))
)

func newCodec(rt *sobek.Runtime, serialization string) (*codec, *kvError) {
	c := &codec{rt: rt, stringMode: serialization == serString}
	jv := rt.Get("JSON")
	jo, ok := jv.(*sobek.Object)
	if !ok {
		return nil, newErr(ErrSerializer, "the global JSON object is missing")
	}
	c.json = jo
	if c.stringify, ok = sobek.AssertFunction(jo.Get("stringify")); !ok {
		return nil, newErr(ErrSerializer, "JSON.stringify is missing")
	}
	if c.parse, ok = sobek.AssertFunction(jo.Get("parse")); !ok {
		return nil, newErr(ErrSerializer, "JSON.parse is missing")
	}
	c.replacer = rt.ToValue(c.replace)
	// The engine's own prototypes, which JSON.parse gives what it makes
	// (a script may have replaced the globals Object and Array).
	c.objProto, c.arrProto = rt.NewObject().Prototype(), rt.NewArray().Prototype()
	c.parser = jsonParser{rt: rt, proto: c.objProto}
	return c, nil
}

// kind is the tag stored with values written through this codec.
func (c *codec) kind() Kind {
	if c.stringMode {
		return KindString
	}
	return KindJSON
}

// jsNonFinite spells NaN or an infinity as JavaScript does.
func jsNonFinite(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case f > 0:
		return "Infinity"
	}
	return "-Infinity"
}

// replace is the JSON.stringify replacer: it refuses what JSON cannot hold.
func (c *codec) replace(call sobek.FunctionCall) sobek.Value {
	v := call.Argument(1)
	bad := ""
	switch {
	case sobek.IsNumber(v):
		f := v.ToFloat()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			bad = v.String()
		}
	case sobek.IsBigInt(v):
		bad = "a BigInt"
	default:
		switch x := v.(type) {
		case *sobek.Symbol:
			bad = "a symbol"
		case *sobek.Object:
			if _, fn := sobek.AssertFunction(x); fn {
				bad = "a function"
			} else if x.ClassName() == "Number" {
				// JSON.stringify unboxes a Number object after the
				// replacer has seen it: a boxed NaN would be null.
				if f := x.ToFloat(); math.IsNaN(f) || math.IsInf(f, 0) {
					bad = "a Number object holding " + jsNonFinite(f)
				}
			}
		}
	}
	if bad != "" {
		where := call.Argument(0).String()
		if where == "" {
			c.replErr = newErr(ErrSerializer, "cannot encode %s as JSON", bad)
		} else {
			c.replErr = newErr(ErrSerializer, "cannot encode %s (at key %q) as JSON", bad, where)
		}
		panic(c.rt.NewTypeError("%s", c.replErr.Message))
	}
	return v
}

// encode returns the bytes to store for v. The result may share memory
// with a JS string: it must only be read, and not kept past the call.
func (c *codec) encode(v sobek.Value) ([]byte, Kind, *kvError) {
	if c.stringMode {
		return c.encodeString(v)
	}
	b, err := c.encodeJSON(v)
	return b, KindJSON, err
}

func stringBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

func (c *codec) encodeString(v sobek.Value) ([]byte, Kind, *kvError) {
	switch {
	case sobek.IsString(v):
		return stringBytes(v.String()), KindString, nil
	case sobek.IsNumber(v), sobek.IsBigInt(v), isBool(v):
		return []byte(v.String()), KindString, nil
	case absent(v):
		return nil, 0, newErr(ErrSerializer,
			`serialization "string" stores strings, got %s`, typeName(v))
	}
	if o, ok := v.(*sobek.Object); ok {
		if b, ok := binaryBytes(o); ok {
			return b, KindBytes, nil
		}
	}
	return nil, 0, newErr(ErrSerializer,
		`serialization "string" stores strings (or numbers, booleans, ArrayBuffers), got %s`, typeName(v))
}

var typeArrayBuffer = reflect.TypeOf(sobek.ArrayBuffer{})

// binaryBytes is the bytes of an ArrayBuffer, or those a typed array views
// (its elements in this machine's byte order). Nothing else is exported:
// an export of an ordinary array or object would convert all it holds.
func binaryBytes(o *sobek.Object) ([]byte, bool) {
	et := o.ExportType()
	if et == nil || et != typeArrayBuffer && (et.Kind() != reflect.Slice || !numericKind(et.Elem().Kind())) {
		return nil, false
	}
	x := o.Export()
	if ab, ok := x.(sobek.ArrayBuffer); ok {
		return ab.Bytes(), true
	}
	// A typed array exports as a slice of its element type over the
	// viewed memory ([]byte, []int16, []float64, ...).
	rv := reflect.ValueOf(x)
	if rv.Kind() != reflect.Slice {
		return nil, false
	}
	n := rv.Len() * int(rv.Type().Elem().Size())
	return unsafe.Slice((*byte)(rv.UnsafePointer()), n), true
}

// numericKind: the element kinds of typed arrays (a Go slice of anything
// else, such as getMany's items, holds pointers, not bytes to store).
func numericKind(k reflect.Kind) bool {
	switch k {
	case reflect.Int8, reflect.Uint8, reflect.Int16, reflect.Uint16, reflect.Int32, reflect.Uint32,
		reflect.Int64, reflect.Uint64, reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

func (c *codec) encodeJSON(v sobek.Value) ([]byte, *kvError) {
	switch {
	case v == nil || sobek.IsUndefined(v) || sobek.IsNull(v):
		// set(key) and set(key, undefined) store null, as xk6-kv does.
		return []byte("null"), nil
	case sobek.IsString(v):
		// Stored as UTF-8: a lone UTF-16 surrogate (not valid Unicode)
		// becomes U+FFFD, as it would through JSON.stringify and JSON.parse.
		s := v.String()
		return appendJSONString(make([]byte, 0, len(s)+2), s), nil
	case sobek.IsNumber(v):
		if v.ExportType() == typeInt64 {
			return strconv.AppendInt(nil, v.ToInteger(), 10), nil
		}
		f := v.ToFloat()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, newErr(ErrSerializer, "cannot encode %s as JSON", v.String())
		}
		// JS number formatting, which is also JSON.stringify's.
		return []byte(v.String()), nil
	case isBool(v):
		if v.ToBoolean() {
			return []byte("true"), nil
		}
		return []byte("false"), nil
	}
	b, ok, kerr := c.fastStringify(v)
	if kerr != nil || ok {
		return b, kerr
	}
	text, absent, kerr := c.stringifyValue(v)
	if kerr != nil {
		return nil, kerr
	}
	if absent {
		return nil, newErr(ErrSerializer, "cannot encode %s as JSON", typeName(v))
	}
	return []byte(text), nil
}

// stringifyValue is JSON.stringify(v) with the codec's replacer: its text,
// or absent when JSON.stringify gives undefined (a function, say), or the
// rejection it threw.
func (c *codec) stringifyValue(v sobek.Value) (string, bool, *kvError) {
	c.replErr = nil
	out, err := c.stringify(c.json, v, c.replacer)
	if err != nil {
		if c.replErr != nil {
			e := c.replErr
			c.replErr = nil
			return "", false, e
		}
		msg := err.Error()
		if ex, ok := err.(*sobek.Exception); ok {
			msg = ex.Value().String()
		}
		return "", false, newErr(ErrSerializer, "cannot encode value as JSON: %s", msg)
	}
	if absent(out) {
		return "", true, nil
	}
	return out.String(), false, nil
}

// appendJSONString appends s as a JSON string literal, escaping what
// JSON.stringify escapes: '"', '\\' and control characters.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch >= 0x20 && ch != '"' && ch != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch ch {
		case '"':
			dst = append(dst, '\\', '"')
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[ch>>4], hex[ch&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// decode turns stored bytes into a JS value. b must not be modified
// afterwards: a returned string may share its memory.
func (c *codec) decode(b []byte, kind Kind) (sobek.Value, *kvError) {
	if c.stringMode || kind != KindJSON {
		return c.rt.ToValue(unsafe.String(unsafe.SliceData(b), len(b))), nil
	}
	return c.decodeJSON(b)
}

func (c *codec) decodeJSON(b []byte) (sobek.Value, *kvError) {
	n := len(b)
	if n > 0 {
		switch b[0] {
		case '"':
			// A string without escapes is its bytes between the quotes.
			if n >= 2 && b[n-1] == '"' && bytes.IndexByte(b[1:n-1], '\\') < 0 &&
				bytes.IndexByte(b[1:n-1], '"') < 0 && noControl(b[1:n-1]) {
				return c.rt.ToValue(unsafe.String(unsafe.SliceData(b[1:]), n-2)), nil
			}
		case 't':
			if string(b) == "true" {
				return c.rt.ToValue(true), nil
			}
		case 'f':
			if string(b) == "false" {
				return c.rt.ToValue(false), nil
			}
		case 'n':
			if string(b) == "null" {
				return sobek.Null(), nil
			}
		default:
			// Integers that a float64 holds exactly.
			if n <= 16 && isDecimalInt(b) && !(n > 1 && (b[0] == '0' || b[0] == '-' && b[1] == '0')) {
				if i, err := strconv.ParseInt(unsafe.String(unsafe.SliceData(b), n), 10, 64); err == nil &&
					i >= -(1<<53) && i <= 1<<53 {
					return c.rt.ToValue(i), nil
				}
			}
		}
	}
	if v, ok := c.parser.parse(b); ok {
		return v, nil
	}
	v, err := c.parse(c.json, c.rt.ToValue(unsafe.String(unsafe.SliceData(b), n)))
	if err != nil {
		msg := err.Error()
		if ex, ok := err.(*sobek.Exception); ok {
			msg = ex.Value().String()
		}
		return nil, newErr(ErrValueParse, "stored value is not valid JSON: %s", msg)
	}
	return v, nil
}

func isDecimalInt(b []byte) bool {
	i := 0
	if len(b) > 0 && b[0] == '-' {
		i = 1
	}
	if i == len(b) {
		return false
	}
	for ; i < len(b); i++ {
		if b[i] < '0' || b[i] > '9' {
			return false
		}
	}
	return true
}

func noControl(b []byte) bool {
	for _, ch := range b {
		if ch < 0x20 {
			return false
		}
	}
	return true
}

// decodeInt reads a stored value as an int64 for incrementBy's slow path: a
// JSON number with an integer value (5, 5.0, 1e3) or a JSON string holding a
// decimal integer ("41").
func decodeInt(b []byte) (int64, bool) {
	s := strings.TrimSpace(string(b))
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
		i, err := strconv.ParseInt(s, 10, 64)
		return i, err == nil
	}
	if !jsonNumberRE(s) {
		return 0, false
	}
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i, true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
		return 0, false
	}
	return int64(f), true
}

// jsonNumberRE reports whether s has JSON number syntax.
func jsonNumberRE(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	digits := func() int {
		j := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - j
	}
	if digits() == 0 {
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}
