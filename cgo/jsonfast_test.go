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

// fastParse must make exactly what JSON.parse makes, or step aside: each
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
	for _, text := range texts {
		want, werr := parse(sobek.Undefined(), rt.ToValue(text))
		got, ok := fastParse(rt, []byte(text))
		if !ok {
			continue // JSON.parse decides: nothing to compare
		}
		fast++
		if werr != nil {
			t.Errorf("%q: JSON.parse refuses it (%v), fastParse made %v", text, werr, got)
			continue
		}
		d, err := sameFn(sobek.Undefined(), got, want)
		if err != nil || d.String() != "" {
			t.Errorf("%.80q: %v %v", text, d, err)
		}
	}
	if fast < len(texts)/2 {
		t.Errorf("fastParse took only %d of %d texts", fast, len(texts))
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
