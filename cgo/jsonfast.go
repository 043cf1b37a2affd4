//go:build cgo

package kv

import (
	"bytes"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/grafana/sobek"
)

// jsonParser builds the JS value of a stored JSON text in one pass, without
// the engine's JSON.parse (which tokenizes through an io.Reader and costs
// most of a get of a small object). It takes the common case only: objects,
// arrays, numbers, true, false, null, and strings whose escapes are the
// short ones. Anything else (a \u escape, a syntax error, nesting deeper
// than maxDepth) answers ok false, and the caller uses
// JSON.parse, whose result and errors are then the reference. The values
// made are what JSON.parse makes: plain objects in key order, arrays,
// numbers (integers as integers), strings, booleans, null. proto is the
// engine's own Object.prototype. A codec keeps its parser from one decode
// to the next, for the scratch space; it holds nothing of a text between
// parses.
type jsonParser struct {
	rt    *sobek.Runtime
	proto *sobek.Object // Object.prototype, given to each object once it is filled
	b     []byte
	i     int
	buf   []byte // unescaped string bytes
	stack []any  // the elements of the arrays being read, innermost last
}

const maxDepth = 256

func (p *jsonParser) parse(b []byte) (v sobek.Value, ok bool) {
	p.b, p.i = b, 0
	defer func() {
		clear(p.stack)
		p.b, p.stack = nil, p.stack[:0]
		if cap(p.stack) > 1<<12 {
			p.stack = nil // not kept after a long array
		}
	}()
	p.space()
	v, ok = p.value(0)
	if !ok {
		return nil, false
	}
	p.space()
	return v, p.i == len(p.b)
}

func (p *jsonParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) value(depth int) (sobek.Value, bool) {
	if p.i >= len(p.b) || depth > maxDepth {
		return nil, false
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"':
		s, ok := p.str()
		if !ok {
			return nil, false
		}
		return p.rt.ToValue(s), true
	case c == 't':
		return p.word("true", p.rt.ToValue(true))
	case c == 'f':
		return p.word("false", p.rt.ToValue(false))
	case c == 'n':
		return p.word("null", sobek.Null())
	default:
		return p.number()
	}
}

func (p *jsonParser) word(w string, v sobek.Value) (sobek.Value, bool) {
	if len(p.b)-p.i < len(w) || string(p.b[p.i:p.i+len(w)]) != w {
		return nil, false
	}
	p.i += len(w)
	return v, true
}

func (p *jsonParser) object(depth int) (sobek.Value, bool) {
	// Filled without a prototype, then given Object.prototype: a property
	// set on an object with no prototype is an own data property, as
	// JSON.parse creates it (no setter a script put on Object.prototype
	// runs, "__proto__" is a key like any other), and setting one costs
	// less than defining it through a descriptor.
	o := p.rt.CreateObject(nil)
	p.i++ // {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return o, o.SetPrototype(p.proto) == nil
	}
	for {
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return nil, false
		}
		k, ok := p.str()
		if !ok {
			return nil, false
		}
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return nil, false
		}
		p.i++
		p.space()
		v, ok := p.value(depth + 1)
		if !ok {
			return nil, false
		}
		if o.Set(k, v) != nil {
			return nil, false
		}
		p.space()
		if p.i >= len(p.b) {
			return nil, false
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return o, o.SetPrototype(p.proto) == nil
		default:
			return nil, false
		}
	}
}

func (p *jsonParser) array(depth int) (sobek.Value, bool) {
	p.i++ // [
	p.space()
	mark := len(p.stack)
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return p.rt.NewArray(), true
	}
	for {
		p.space()
		v, ok := p.value(depth + 1)
		if !ok {
			return nil, false
		}
		p.stack = append(p.stack, v)
		p.space()
		if p.i >= len(p.b) {
			return nil, false
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			a := p.rt.NewArray(p.stack[mark:]...)
			clear(p.stack[mark:])
			p.stack = p.stack[:mark]
			return a, true
		default:
			return nil, false
		}
	}
}

// str reads a string literal. Without escapes it is the stored bytes
// themselves, not copied (the caller's bytes are not changed afterwards).
func (p *jsonParser) str() (string, bool) {
	p.i++ // opening quote
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			if !utf8.Valid(s) {
				return "", false
			}
			return unsafe.String(unsafe.SliceData(s), len(s)), true
		case c == '\\':
			return p.escaped(start)
		case c < 0x20:
			return "", false
		}
		p.i++
	}
	return "", false
}

func (p *jsonParser) escaped(start int) (string, bool) {
	p.buf = append(p.buf[:0], p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			if !utf8.Valid(p.buf) {
				return "", false
			}
			return string(p.buf), true
		case c < 0x20:
			return "", false
		case c != '\\':
			p.buf = append(p.buf, c)
			p.i++
			continue
		}
		if p.i+1 >= len(p.b) {
			return "", false
		}
		var r byte
		switch p.b[p.i+1] {
		case '"':
			r = '"'
		case '\\':
			r = '\\'
		case '/':
			r = '/'
		case 'b':
			r = '\b'
		case 'f':
			r = '\f'
		case 'n':
			r = '\n'
		case 'r':
			r = '\r'
		case 't':
			r = '\t'
		default:
			return "", false // \u and anything else: JSON.parse decides
		}
		p.buf = append(p.buf, r)
		p.i += 2
	}
	return "", false
}

// number reads a JSON number; integers that a float64 holds exactly become
// integers, as JSON.parse makes them.
func (p *jsonParser) number() (sobek.Value, bool) {
	start := p.i
	if p.i < len(p.b) && p.b[p.i] == '-' {
		p.i++
	}
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	intStart := p.i
	if n := digits(); n == 0 || (n > 1 && p.b[intStart] == '0') {
		return nil, false
	}
	isInt := true
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return nil, false
		}
		isInt = false
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return nil, false
		}
		isInt = false
	}
	text := unsafe.String(unsafe.SliceData(p.b[start:p.i]), p.i-start)
	if isInt && p.i-start <= 16 {
		if n, err := strconv.ParseInt(text, 10, 64); err == nil && n >= -(1<<53) && n <= 1<<53 &&
			!(n == 0 && text[0] == '-') {
			return p.rt.ToValue(n), true
		}
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return nil, false // out of range: JSON.parse refuses it, with its message
	}
	return p.rt.ToValue(f), true
}

// fastStringify writes the JSON text of v as JSON.stringify with this
// codec's replacer would. It writes plain data itself: objects whose
// prototype is Object.prototype (and no toJSON), arrays, strings without
// lone surrogates, finite numbers, booleans, null, and undefined where
// JSON.stringify leaves a property out or writes null. A value inside that
// it does not write (a Date, a class instance, a function, NaN, a lone
// surrogate, what lies deeper than maxDepth) goes to JSON.stringify alone,
// and its text is put in place; only when v itself is such a value does it
// answer ok false, having read nothing of it, and the caller uses
// JSON.stringify. Either way each property is read once: a getter runs
// once, as under JSON.stringify.
func (c *codec) fastStringify(v sobek.Value) ([]byte, bool, *kvError) {
	return c.appendJSON(make([]byte, 0, 256), v, 0)
}

// appendJSON appends v's text to dst. ok false: v was not read into (not
// a getter of it ran) and dst is as it was.
func (c *codec) appendJSON(dst []byte, v sobek.Value, depth int) ([]byte, bool, *kvError) {
	if depth > maxDepth {
		return dst, false, nil
	}
	switch {
	case v == nil || sobek.IsUndefined(v):
		return dst, false, nil
	case sobek.IsNull(v):
		return append(dst, "null"...), true, nil
	case sobek.IsString(v):
		s := v.String()
		if strings.ContainsRune(s, utf8.RuneError) && !c.rt.ToValue(s).StrictEquals(v) {
			return dst, false, nil // a lone surrogate: JSON.stringify escapes it as \udxxx
		}
		return appendJSONString(dst, s), true, nil
	case sobek.IsNumber(v):
		if v.ExportType() == typeInt64 {
			return strconv.AppendInt(dst, v.ToInteger(), 10), true, nil
		}
		f := v.ToFloat()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return dst, false, nil
		}
		return append(dst, v.String()...), true, nil
	case isBool(v):
		if v.ToBoolean() {
			return append(dst, "true"...), true, nil
		}
		return append(dst, "false"...), true, nil
	}
	o, isObj := v.(*sobek.Object)
	if !isObj {
		return dst, false, nil
	}
	if _, fn := sobek.AssertFunction(o); fn {
		return dst, false, nil
	}
	proto := o.Prototype()
	switch {
	case proto == c.arrProto && o.ClassName() == "Array":
		n := o.Get("length").ToInteger()
		dst = append(dst, '[')
		for i := int64(0); i < n; i++ {
			if len(dst) > valueMax {
				// A sparse array of 2^32-1 holes would be 20 GB of nulls.
				return nil, false, tooLarge(len(dst))
			}
			if i > 0 {
				dst = append(dst, ',')
			}
			name := strconv.FormatInt(i, 10)
			e := o.Get(name)
			if e == nil || sobek.IsUndefined(e) {
				dst = append(dst, "null"...) // as JSON.stringify writes a hole
				continue
			}
			var err *kvError
			if dst, err = c.appendPart(dst, name, e, depth, true); err != nil {
				return nil, false, err
			}
		}
		return append(dst, ']'), true, nil
	case proto == c.objProto && o.ClassName() == "Object":
		if t := o.Get("toJSON"); t != nil && !sobek.IsUndefined(t) {
			return dst, false, nil
		}
		keys := o.Keys()
		for _, k := range keys {
			if strings.ContainsRune(k, utf8.RuneError) {
				return dst, false, nil // maybe a lone surrogate, lost by Keys()
			}
		}
		dst = append(dst, '{')
		first := true
		for _, k := range keys {
			if len(dst) > valueMax {
				return nil, false, tooLarge(len(dst))
			}
			e := o.Get(k)
			if e == nil || sobek.IsUndefined(e) {
				continue // left out, as JSON.stringify leaves it
			}
			mark := len(dst)
			if !first {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, k)
			dst = append(dst, ':')
			var err *kvError
			if dst, err = c.appendPart(dst, k, e, depth, false); err != nil {
				return nil, false, err
			}
			if len(dst) == mark {
				continue // JSON.stringify left it out
			}
			first = false
		}
		return append(dst, '}'), true, nil
	}
	return dst, false, nil
}

// appendPart appends the text of e, the value of property name of an array
// (inArray) or an object, whose "name": the caller has written. What
// appendJSON does not write, JSON.stringify writes: e is put alone under
// name in an object with no prototype (so that toJSON and the replacer see
// the property's own name, and no getter of e runs twice) and the text
// between `{"name":` and `}` is taken. JSON.stringify may leave it out: in
// an array that is null; in an object the caller's `,"name":` is cut (dst
// comes back as long as it was before it).
func (c *codec) appendPart(dst []byte, name string, e sobek.Value, depth int, inArray bool) ([]byte, *kvError) {
	before := dst
	dst, ok, err := c.appendJSON(dst, e, depth+1)
	if err != nil || ok {
		return dst, err
	}
	dst = before
	w := c.rt.CreateObject(nil)
	_ = w.Set(name, e)
	text, absent, err := c.stringifyValue(w)
	if err != nil {
		return nil, err
	}
	head := append(append([]byte{'{'}, appendJSONString(nil, name)...), ':')
	switch {
	case absent || text == "{}":
		if inArray {
			return append(dst, "null"...), nil
		}
		// cut `,"name":`
		if !bytes.HasSuffix(dst, head[1:]) {
			return nil, newErr(ErrSerializer, "cannot encode value as JSON: property %q", name)
		}
		dst = dst[:len(dst)-(len(head)-1)]
		if n := len(dst); n > 0 && dst[n-1] == ',' {
			dst = dst[:n-1]
		}
		return dst, nil
	case strings.HasPrefix(text, string(head)) && strings.HasSuffix(text, "}"):
		return append(dst, text[len(head):len(text)-1]...), nil
	}
	return nil, newErr(ErrSerializer, "cannot encode value as JSON: property %q", name)
}

// tooLarge is the failure of an encoding stopped once it passed valueMax.
func tooLarge(n int) *kvError {
	return newErr(ErrValueTooLarge, "value is more than %d bytes once encoded (the encoding stopped there); the limit is %d", n-1, valueMax)
}
