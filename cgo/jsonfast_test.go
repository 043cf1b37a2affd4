//go:build cgo

package kv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/grafana/sobek"
)

// The fast parser must make exactly what JSON.parse makes, or step aside: each
// text is parsed both ways and compared by a JS function that checks types,
// numbers with Object.is, key order, own properties and prototypes.
func TestFastParseMatchesJSONParse(t *testing.T) {
	rt := newJS(t).VU.Runtime()
	same, err := rt.RunString(`(function same(a, b) {
		if (typeof a !== typeof b) return "type " + typeof a + " vs " + typeof b;
		if (a === null || typeof a !== "object") return Object.is(a, b) ? "" : "value " + String(a) + " vs " + String(b);
		if (b === null) return "null";
		if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return "prototype";
		if (Array.isArray(a) !== Array.isArray(b)) return "array";
		const ka = Reflect.ownKeys(a), kb = Reflect.ownKeys(b);
		if (ka.join("\u0001") !== kb.join("\u0001")) return "keys " + JSON.stringify(ka) + " vs " + JSON.stringify(kb);
		for (const k of ka) {
			const da = Object.getOwnPropertyDescriptor(a, k), db = Object.getOwnPropertyDescriptor(b, k);
			if (da.writable !== db.writable || da.enumerable !== db.enumerable || da.configurable !== db.configurable) return "descriptor of " + String(k);
			const d = same(a[k], b[k]);
			if (d) return String(k) + ": " + d;
		}
		return "";
	})`)
	if err != nil {
		t.Fatal(err)
	}
	sameFn, _ := sobek.AssertFunction(same)
	parse, _ := sobek.AssertFunction(rt.Get("JSON").ToObject(rt).Get("parse"))
	// A setter on Object.prototype must not run, as for JSON.parse.
	if _, err := rt.RunString(`Object.defineProperty(Object.prototype, "trap", {set() { throw new Error("setter ran"); }, configurable: true});`); err != nil {
		t.Fatal(err)
	}
	texts := []string{
		`{}`, `[]`, `{"a":1,"b":[1,2,{"c":null}],"d":"x"}`, `{"b":1,"a":2,"10":3,"2":4,"-1":5}`,
		`{"__proto__":{"x":1},"y":2}`, `{"trap":1}`, `{"a":1,"a":2,"b":3}`, ` { "a" : [ 1 , 2 ] } `,
		`-0`, `0`, `1.0`, `1e3`, `1E+3`, `-1.5e-7`, `9007199254740993`, `123456789012345678901234567890`,
		`1e400`, `-1e400`, `0.1`, `[-0,0.0,-0.0]`, `"a\"b\\c\/d\b\f\n\r\t"`, `"\u00e9\ud83d\ude00"`, `"\ud800"`,
		`"é😀"`, `"` + strings.Repeat("x", 1000) + `"`, `[[[[[[[[[[1]]]]]]]]]]`, `true`, `false`, `null`,
		`{"a":true,"b":false,"c":null}`, `{"":1}`, `[1,]`, `{"a":1,}`, `01`, `1.`, `.5`, `+1`, `nul`,
		`"\x"`, "\"a\x01\"", `{"a" 1}`, `[1 2]`, `"`, `{"a":1}x`, "\"\xff\"",
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 3000; i++ {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(i%2 == 0)
		_ = enc.Encode(randomJSON(r, 0))
		texts = append(texts, strings.TrimSpace(buf.String()))
	}
	fast := 0
	// One parser for every text, as a codec keeps one: nothing of a text
	// (a failed one included) may leak into the next.
	p := jsonParser{rt: rt, proto: rt.NewObject().Prototype()}
	for _, text := range texts {
		want, werr := parse(sobek.Undefined(), rt.ToValue(text))
		got, ok := p.parse([]byte(text))
		if !ok {
			continue // JSON.parse decides: nothing to compare
		}
		fast++
		if werr != nil {
			t.Errorf("%q: JSON.parse refuses it (%v), the fast parser made %v", text, werr, got)
			continue
		}
		d, err := sameFn(sobek.Undefined(), got, want)
		if err != nil || d.String() != "" {
			t.Errorf("%.80q: %v %v", text, d, err)
		}
	}
	if fast < len(texts)/2 {
		t.Errorf("the fast parser took only %d of %d texts", fast, len(texts))
	}
}

func randomJSON(r *rand.Rand, depth int) any {
	switch n := r.IntN(10); {
	case n == 0 && depth < 5:
		m := map[string]any{}
		for i := r.IntN(6); i > 0; i-- {
			m[randomKey(r)] = randomJSON(r, depth+1)
		}
		return m
	case n == 1 && depth < 5:
		a := make([]any, r.IntN(6))
		for i := range a {
			a[i] = randomJSON(r, depth+1)
		}
		return a
	case n == 2:
		return r.NormFloat64() * 1e6
	case n == 3:
		return r.Int64N(1<<60) - 1<<59
	case n == 4:
		return r.IntN(2) == 0
	case n == 5:
		return nil
	default:
		return randomKey(r)
	}
}

func randomKey(r *rand.Rand) string {
	parts := []string{"a", "b", "0", "1", "10", "__proto__", "é", "😀", "\"", "\\", "\n", "<", "&", " ", "\u2028", "x"}
	var sb strings.Builder
	for i := r.IntN(4); i >= 0; i-- {
		sb.WriteString(parts[r.IntN(len(parts))])
	}
	return fmt.Sprint(sb.String())
}

// fastStringify must write exactly what JSON.stringify writes, or step
// aside: random values made in JS, plus edge cases.
func TestFastStringifyMatchesJSONStringify(t *testing.T) {
	rt, c := jsonCodec(t)
	vals, err := rt.RunString(`(() => {
		let seed = 7;
		const rnd = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
		const strs = ["", "a", "é", "😀", "\"q\"", "back\\slash", "\n\t\r\b\f", "\u0001\u001f", "\u2028\u2029",
			"<&>", "__proto__", "0", "10", "-1", "\ud800", "x\udfff", "\uffff"];
		const nums = [0, -0, 1, -1, 0.1, 1e21, 1e-7, 5e-324, 2 ** 53, 2 ** 53 + 2, -(2 ** 63), 1.5, 123456.789,
			NaN, Infinity, 2 ** 64];
		function gen(d) {
			switch (rnd(d > 4 ? 4 : 7)) {
			case 0: return strs[rnd(strs.length)];
			case 1: return nums[rnd(nums.length)];
			case 2: return rnd(2) === 0;
			case 3: return null;
			case 4: { const a = []; for (let i = rnd(5); i > 0; i--) a.push(gen(d + 1)); return a; }
			case 5: { const o = {}; for (let i = rnd(5); i > 0; i--) o[strs[rnd(strs.length)]] = gen(d + 1); return o; }
			default: return JSON.parse(JSON.stringify({ b: 1, a: [gen(d + 1)], "2": 2, "1": 1 }));
			}
		}
		const out = [];
		for (let i = 0; i < 3000; i++) out.push(gen(0));
		const withToJSON = { a: 1, toJSON() { return 5; } };
		const getter = {}; Object.defineProperty(getter, "g", { get() { return 3; }, enumerable: true });
		const sparse = [1, , 3];
		const nested = [{ k: [{ k: [{}] }] }];
		out.push(withToJSON, getter, sparse, nested, new Date(0), { u: undefined }, [undefined], () => 1,
			Object.create(null), JSON.parse('{"__proto__": {"x": 1}, "y": 2}'), { s: Symbol("x") }, { n: 10n });
		return out;
	})()`)
	if err != nil {
		t.Fatal(err)
	}
	stringify, _ := sobek.AssertFunction(rt.Get("JSON").ToObject(rt).Get("stringify"))
	arr := vals.ToObject(rt)
	n := arr.Get("length").ToInteger()
	fast := 0
	for i := int64(0); i < n; i++ {
		v := arr.Get(fmt.Sprint(i))
		got, ok, kerr := c.fastStringify(v)
		if !ok || kerr != nil {
			continue // JSON.stringify's answer (or our replacer's refusal)
		}
		fast++
		want, err := stringify(sobek.Undefined(), v)
		if err != nil || sobek.IsUndefined(want) {
			t.Errorf("value %d: JSON.stringify gives %v (%v), fastStringify %q", i, want, err, got)
			continue
		}
		if string(got) != want.String() {
			t.Errorf("value %d: fastStringify %q, JSON.stringify %q", i, got, want.String())
		}
	}
	if fast < int(n)/3 {
		t.Errorf("fastStringify took only %d of %d values", fast, n)
	}
}

// What fastStringify does not write itself, inside plain data, is written
// by JSON.stringify and put in place: the whole text must be JSON.stringify's
// (toJSON called with the property's own name, undefined left out or null,
// the cut of a left-out first, middle and last property), and a refusal of
// the replacer deep inside names its key.
func TestStringifySplicesWhatItDoesNotWrite(t *testing.T) {
	rt, c := jsonCodec(t)
	vals, err := rt.RunString(`(() => {
		class A { constructor() { this.x = 1; this.y = [2]; } }
		const named = { toJSON(k) { return "key=" + k; } };
		const gone = { toJSON() { return undefined; } };
		let deep = [1];
		for (let i = 0; i < 400; i++) deep = [deep, { d: i }];
		return [
			{ a: 1, d: new Date(0), b: [1, undefined, new Date(1)] },
			{ a: named, b: [named, named], c: { named } },
			{ u: undefined, v: 1, w: undefined },
			[undefined, 1, undefined],
			{ s: "x\ud800y", t: ["\udc00"] },
			{ i: new A(), m: new Map([[1, 2]]), n: new Number(5), str: new String("x"), bool: new Boolean(false) },
			{ o: Object.assign(Object.create(null), { z: 1, q: [named] }) },
			{ a: gone, b: 2 },
			{ a: 1, b: gone, c: 3 },
			{ a: 1, b: gone },
			{ a: gone },
			[gone, 1, gone],
			deep,
		];
	})()`)
	if err != nil {
		t.Fatal(err)
	}
	sameAsStringify(t, rt, c, vals.ToObject(rt), nil)
	for _, c2 := range []struct{ js, want string }{
		{`({ a: [1, { b: NaN }] })`, `"b"`},
		{`({ a: { f() {} } })`, `"f"`},
		{`({ a: [1, 2n] })`, `"1"`},
	} {
		v, err := rt.RunString(c2.js)
		if err != nil {
			t.Fatal(err)
		}
		_, kerr := c.encodeJSON(v)
		if kerr == nil || kerr.Name != ErrSerializer || !strings.Contains(kerr.Message, c2.want) {
			t.Errorf("%s: got %v, want a %s naming key %s", c2.js, kerr, ErrSerializer, c2.want)
		}
	}
	cyc, err := rt.RunString(`(() => { const o = { a: [] }; o.a.push({ o }); return o; })()`)
	if err != nil {
		t.Fatal(err)
	}
	if _, kerr := c.encodeJSON(cyc); kerr == nil || kerr.Name != ErrSerializer {
		t.Errorf("a cycle: got %v, want a %s", kerr, ErrSerializer)
	}
}

// Random values that mix plain data with what the fast path hands to
// JSON.stringify (Dates, class instances, toJSON, boxed primitives, Maps,
// undefined, lone surrogates, getters), nested: encodeJSON must write
// JSON.stringify's text, and run each getter as many times as it does.
func TestEncodeJSONMixedMatchesJSONStringify(t *testing.T) {
	rt, c := jsonCodec(t)
	_, err := rt.RunString(`
		globalThis.calls = 0;
		let seed = 11;
		const rnd = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
		class P { constructor(d) { this.p = d > 3 ? 1 : gen(d + 1); this.q = "x"; } }
		const leaves = [() => "s\ud800", () => new Date(rnd(1e9)), () => new Number(rnd(9)), () => new String("b"),
			() => new Boolean(true), () => new Map([[1, 2]]), () => undefined, () => null, () => rnd(100) / 7,
			() => "plain", () => true];
		function gen(d) {
			const r = rnd(d > 4 ? 3 : 9);
			if (r < 3) return leaves[rnd(leaves.length)]();
			if (r === 3) { const a = []; for (let i = rnd(4); i > 0; i--) a.push(gen(d + 1)); return a; }
			if (r === 4) return new P(d);
			if (r === 5) { const inner = gen(d + 1); return { toJSON(k) { return [k, inner]; } }; }
			if (r === 6) {
				const o = {}, inner = gen(d + 1);
				Object.defineProperty(o, "g" + rnd(3), { get() { calls++; return inner; }, enumerable: true });
				o.after = gen(d + 1);
				return o;
			}
			const o = {};
			for (let i = rnd(4); i > 0; i--) o["k" + rnd(6)] = gen(d + 1);
			return o;
		}
		globalThis.vals = [];
		for (let i = 0; i < 2000; i++) vals.push({ top: gen(0), more: [gen(1), gen(1)] });
	`)
	if err != nil {
		t.Fatal(err)
	}
	sameAsStringify(t, rt, c, rt.Get("vals").ToObject(rt), func() int64 { return rt.Get("calls").ToInteger() })
}

// jsonCodec is a runtime and a JSON codec on it.
func jsonCodec(t *testing.T) (*sobek.Runtime, *codec) {
	rt := newJS(t).VU.Runtime()
	c, kerr := newCodec(rt, serJSON)
	if kerr != nil {
		t.Fatal(kerr)
	}
	return rt, c
}

// sameAsStringify checks that encodeJSON writes JSON.stringify's text for
// every element of arr and, when calls counts getter runs, runs the getters
// as often as JSON.stringify does.
func sameAsStringify(t *testing.T, rt *sobek.Runtime, c *codec, arr *sobek.Object, calls func() int64) {
	t.Helper()
	if calls == nil {
		calls = func() int64 { return 0 }
	}
	stringify, _ := sobek.AssertFunction(rt.Get("JSON").ToObject(rt).Get("stringify"))
	for i := int64(0); i < arr.Get("length").ToInteger(); i++ {
		v := arr.Get(fmt.Sprint(i))
		before := calls()
		want, err := stringify(sobek.Undefined(), v)
		if err != nil {
			t.Fatalf("value %d: JSON.stringify: %v", i, err)
		}
		byStringify := calls() - before
		before = calls()
		got, kerr := c.encodeJSON(v)
		byUs := calls() - before
		if kerr != nil {
			t.Errorf("value %d: %s: %s (JSON.stringify: %s)", i, kerr.Name, kerr.Message, want.String())
			continue
		}
		if string(got) != want.String() {
			t.Errorf("value %d: encodeJSON %q, JSON.stringify %q", i, got, want.String())
		}
		if byUs != byStringify {
			t.Errorf("value %d: getters ran %d times, under JSON.stringify %d", i, byUs, byStringify)
		}
	}
}
