//go:build cgo

package kv

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// Hostile inputs from JavaScript: Proxies, getters that change the record
// they are read from, boxed primitives, a polluted or frozen prototype,
// replaced globals, huge nested arrays, typed arrays.

// hostileRun runs body as runAsync does and fails the test (instead of the
// whole test binary dying) when the shim lets a Go panic that is not a JS
// exception escape: in k6 that panic is not a rejection but a crash.
func hostileRun(t *testing.T, opts, body string) {
	t.Helper()
	rt := newJS(t)
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("Go panic escaped the method (not a JS exception): %v", r)
		}
	}()
	runAsync(t, rt, `const kv = openKv(`+opts+`);`+body)
}

// A value that vanishes between Keys() and Get() (a getter deletes a later
// property; a Proxy reports a key its target lacks) must not be written as
// an empty byte string nobody gave.
func TestHostileSetManyValueVanishes(t *testing.T) {
	hostileRun(t, storeOptions(t, "memory", false, ""), `
		async function settle(p) { try { return await p; } catch (e) { return e.name; } }
		async function noPhantom(key, what) {
			const r = (await kv.getMany([key]))[0];
			if (r.exists && r.value !== null) throw new Error(what + ": setMany stored " + JSON.stringify(r.value) + " under " + JSON.stringify(key) + ", a value the script never gave");
		}
		const o = {get a() { delete this.b; return 1; }, b: 2};
		await settle(kv.setMany(o));
		await noPhantom("b", "getter deletes a later key");
		const px = new Proxy({}, {ownKeys: () => ["x"], getOwnPropertyDescriptor: () => ({value: 1, enumerable: true, configurable: true})});
		await settle(kv.setMany(px));
		await noPhantom("x", "Proxy key without a value");
	`)
}

// loneSurrogateKeys re-reads the record's names through the script's own
// global Object.keys: replaced, it lets a lone-surrogate key through (and
// stores an empty value); set to null, the shim calls a nil function.
func TestHostileSetManyReplacedObjectKeys(t *testing.T) {
	t.Run("fake", func(t *testing.T) {
		hostileRun(t, storeOptions(t, "memory", false, ""), `
			const real = Object.keys;
			Object.keys = () => [];
			let p;
			try { p = kv.setMany({["a\uD800"]: 1}); } finally { Object.keys = real; }
			await rejects(p, "InvalidOptionsError", "lone surrogate key with Object.keys replaced");
			eq(await kv.size(), 0, "nothing written");
		`)
	})
	t.Run("null", func(t *testing.T) {
		hostileRun(t, storeOptions(t, "memory", false, ""), `
			const real = Object.keys;
			let p;
			try { Object.keys = null; p = kv.setMany({["a\uD800"]: 1}); } finally { Object.keys = real; }
			await rejects(p, "InvalidOptionsError", "lone surrogate key with Object.keys null");
			eq(await kv.size(), 0, "nothing written");
		`)
	})
}

// A lone-surrogate name and a real "a\uFFFD" are one spelling for Keys():
// the spelling is refused once, whatever the value it reads back.
func TestHostileSetManyTwoNamesOneSpelling(t *testing.T) {
	hostileRun(t, storeOptions(t, "memory", false, ""), `
		let err = null;
		try { await kv.setMany({["a\uD800"]: 1, ["a\uFFFD"]: NaN, b: 2}); } catch (e) { err = e; }
		if (!err || err.name !== "InvalidOptionsError") throw new Error("resolved or wrong rejection: " + (err && err.name));
		eq(JSON.stringify(err.errors.map((d) => d.name)), '["InvalidOptionsError"]', "one entry for the spelling");
		eq(await kv.size(), 0, "nothing written");
	`)
}

// Docs: NaN and Infinity reject with SerializerError, nested or not
// (JSON.stringify would write null). A Number object holding one is
// unboxed by JSON.stringify after the replacer looked at it.
func TestHostileBoxedNonFinite(t *testing.T) {
	hostileRun(t, storeOptions(t, "memory", false, ""), `
		const bad = [new Number(NaN), {a: new Number(Infinity)}, [new Number(-Infinity)], {toJSON() { return new Number(NaN); }}];
		for (let i = 0; i < bad.length; i++) {
			await rejects(kv.set("s" + i, bad[i]), "SerializerError", "set boxed non-finite #" + i);
			await rejects(kv.setMany({["m" + i]: bad[i]}), "InvalidOptionsError", "setMany boxed non-finite #" + i);
			await rejects(kv.getOrSet("g" + i, bad[i]), "SerializerError", "getOrSet boxed non-finite #" + i);
		}
		eq(await kv.size(), 0, "nothing stored");
		eq(await kv.set("ok", [new Number(1.5), new String("x"), new Boolean(false)]), [new Number(1.5), new String("x"), new Boolean(false)], "finite boxed values are fine");
		eq(await kv.get("ok"), [1.5, "x", false], "unboxed as JSON does");
	`)
}

// With Object.prototype carrying setters (no getters) for the names of
// result properties, every result must still have them as own data
// properties, as JSON.parse and object literals make them.
func TestHostileResultsOwnProperties(t *testing.T) {
	hostileRun(t, storeOptions(t, "memory", false, ""), `
		await kv.setMany({a: {x: 1}, b: 2, c: "s"});
		const names = ["key", "value", "exists", "entries", "keys", "cursor", "done", "written", "deleted", "missing",
			"loaded", "previous", "swapped", "reason", "existed", "current", "x", "name", "message", "errors"];
		const caught = [];
		for (let i = 0; i < names.length; i++) {
			const d = Object.create(null), p = names[i];
			d.configurable = true; d.set = function () { caught.push(p); };
			Object.defineProperty(Object.prototype, p, d);
		}
		const bad = [];
		function own(o, p, want, what) {
			// (not through getOwnPropertyDescriptor: the engine fills
			// descriptors through the polluted setters itself)
			if (!Object.prototype.hasOwnProperty.call(o, p) || JSON.stringify(o[p]) !== JSON.stringify(want)) bad.push(what + "." + p);
		}
		const g = await kv.get("a"); own(g, "x", 1, "get");
		const gm = await kv.getMany(["b"]); own(gm[0], "key", "b", "getMany[0]"); own(gm[0], "value", 2, "getMany[0]");
		const sm = await kv.setMany({d: 1}); own(sm, "written", 1, "setMany");
		const dm = await kv.deleteMany(["d"]); own(dm, "deleted", 1, "deleteMany"); own(dm, "missing", 0, "deleteMany");
		const gs = await kv.getOrSet("b", 9); own(gs, "value", 2, "getOrSet"); own(gs, "loaded", true, "getOrSet");
		const sw = await kv.swap("c", "t"); own(sw, "previous", "s", "swap"); own(sw, "loaded", true, "swap");
		const sc = await kv.scan({cursor: "", limit: 1}); own(sc, "done", false, "scan");
		if (sc.entries && sc.entries[0]) { own(sc.entries[0], "key", "a", "scan.entries[0]"); own(sc.entries[0], "value", {x: 1}, "scan.entries[0]"); }
		else bad.push("scan.entries");
		const sk = await kv.scanKeys({cursor: ""}); own(sk, "keys", ["a", "b", "c"], "scanKeys");
		const cs = await kv.compareAndSwapDetailed("b", 7, 8, {includeCurrentOnMismatch: true});
		own(cs, "swapped", false, "compareAndSwapDetailed"); own(cs, "current", 2, "compareAndSwapDetailed");
		try { await kv.setMany({"": 1}); } catch (e) {
			own(e, "name", "InvalidOptionsError", "rejection");
			if (e.errors && e.errors[0]) own(e.errors[0], "key", "", "rejection.errors[0]"); else bad.push("rejection.errors");
		}
		for (let i = 0; i < names.length; i++) delete Object.prototype[names[i]];
		if (bad.length) throw new Error("not own data properties: " + bad.join(", ") + "; went to Object.prototype setters: " + caught.join(","));
	`)
}

// A frozen Error.prototype (as a hardened script may have) must not strip
// the name and message of rejections: err.name is the documented contract.
func TestHostileFrozenErrorPrototype(t *testing.T) {
	hostileRun(t, storeOptions(t, "memory", false, ""), `
		Object.freeze(Error.prototype);
		throws(() => openKv({backend: "nope"}), "InvalidBackendError", "openKv with frozen Error.prototype");
		await rejects(kv.get("missing"), "KeyNotFoundError", "get with frozen Error.prototype");
		await rejects(kv.set("x".repeat(16385), 1), "KeyTooLongError", "set with frozen Error.prototype");
	`)
}

// openKv builds its exception with whatever the global Error is when it
// throws.
func TestHostileReplacedErrorConstructor(t *testing.T) {
	hostileRun(t, storeOptions(t, "memory", false, ""), `
		const real = Error;
		let got;
		globalThis.Error = function () { return Object.freeze({}); };
		try { openKv({backend: "nope"}); } catch (e) { got = e; } finally { globalThis.Error = real; }
		eq([got && got.name, typeof (got && got.message)], ["InvalidBackendError", "string"], "openKv's exception with the global Error replaced");
	`)
}

// A non-string element of a key array must be refused without being
// exported whole: a nested sparse array of length 2^32-1 would take
// ~1000 s and 64 GiB; a getter inside it must not even run. The same holds
// for a string opener's set (which exports any object it is given).
func TestHostileNestedHugeArray(t *testing.T) {
	for _, c := range []struct{ name, serialization, call, want string }{
		{"getMany", "json", `kv.getMany(["a", big])`, "InvalidOptionsError"},
		{"deleteMany", "json", `kv.deleteMany(["a", big])`, "InvalidOptionsError"},
		{"claimKeys", "json", `kv.claimKeys([big], {ttl: 1000})`, "InvalidOptionsError"},
		{"stringSet", "string", `kv.set("k", big)`, "SerializerError"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rt := newJS(t)
			runAsync(t, rt, `globalThis.kv = openKv(`+storeOptions(t, "memory", false, fmt.Sprintf("serialization: %q", c.serialization))+`);
				globalThis.big = []; big.length = 2 ** 22;`)
			var a, b runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&a)
			start := time.Now()
			runAsync(t, rt, fmt.Sprintf(`await rejects(%s, %q, "huge nested array");`, c.call, c.want))
			d := time.Since(start)
			runtime.ReadMemStats(&b)
			if alloc := b.TotalAlloc - a.TotalAlloc; d > slow*200*time.Millisecond || alloc > 16<<20 {
				t.Errorf("refusing a nested sparse array of length 2^22 took %v and allocated %d MiB (x1024 at length 2^32-1)", d, alloc>>20)
			}
			if err := runAsyncErr(rt, fmt.Sprintf(`let ran = 0;
				await rejects(%s, %q, "object with a getter");
				eq(ran, 0, "getters run of an argument that is refused for its type");`,
				replaceBig(c.call, `{get x() { ran++; return 1; }}`), c.want)); err != nil {
				t.Error(err)
			}
		})
	}
}

func replaceBig(call, with string) string {
	out := ""
	for i := 0; i < len(call); i++ {
		if i+3 <= len(call) && call[i:i+3] == "big" {
			out += with
			i += 2
			continue
		}
		out += call[i : i+1]
	}
	return out
}

// Docs (serialization "string"): "an ArrayBuffer or typed array is stored
// as its bytes". Every typed array kind, and views with an offset.
func TestHostileStringModeTypedArrays(t *testing.T) {
	hostileRun(t, storeOptions(t, "memory", false, `serialization: "string"`), `
		const ab = new Uint8Array([65, 66, 67, 68, 69, 70, 71, 72]).buffer; // "ABCDEFGH"
		const cases = [
			["Uint8Array", new Uint8Array(ab), "ABCDEFGH"],
			["Uint8Array view", new Uint8Array(ab, 2, 3), "CDE"],
			["Uint8ClampedArray", new Uint8ClampedArray(ab), "ABCDEFGH"],
			["Int8Array", new Int8Array(ab), "ABCDEFGH"],
			["Uint16Array", new Uint16Array(ab), "ABCDEFGH"],
			["Uint16Array view", new Uint16Array(ab, 2, 2), "CDEF"],
			["Int16Array", new Int16Array(ab), "ABCDEFGH"],
			["Uint32Array", new Uint32Array(ab), "ABCDEFGH"],
			["Int32Array", new Int32Array(ab), "ABCDEFGH"],
			["Float32Array", new Float32Array(ab), "ABCDEFGH"],
			["Float64Array", new Float64Array(ab), "ABCDEFGH"],
			["BigInt64Array", new BigInt64Array(ab), "ABCDEFGH"],
			["BigUint64Array", new BigUint64Array(ab), "ABCDEFGH"],
		];
		const failed = [];
		for (let i = 0; i < cases.length; i++) {
			const [name, v, want] = cases[i];
			try { await kv.set("t", v); const got = await kv.get("t"); if (got !== want) failed.push(name + " read back " + JSON.stringify(got)); }
			catch (e) { failed.push(name + ": " + e.name); }
		}
		if (failed.length) throw new Error("typed arrays not stored as their bytes: " + failed.join("; "));
		// Go data seen from JS that is a slice but not of bytes: refused,
		// not stored as the memory of its items.
		await kv.set("a", "x");
		await rejects(kv.set("t", await kv.getMany(["a"])), "SerializerError", "getMany's result in string mode");
		await rejects(kv.set("t", new DataView(ab)), "SerializerError", "a DataView");
	`)
}

// getMany's result is, as on xk6-kv, a Go slice of items seen from JS
// (docs/api.md): read, iterated, spread and stringified like plain data,
// and a copy made with map and spread is plain data a script can change.
func TestHostileGetManyResultReadsAsData(t *testing.T) {
	hostileRun(t, storeOptions(t, "memory", false, ""), `
		await kv.set("a", {n: 1});
		const r = await kv.getMany(["a", "b"]);
		eq(r.length, 2, "length");
		eq(JSON.stringify(r), '[{"key":"a","exists":true,"value":{"n":1}},{"key":"b","exists":false,"value":null}]', "stringified");
		const seen = [];
		for (const {key, exists, value} of r) seen.push(key + ":" + exists + ":" + JSON.stringify(value));
		eq(seen.join(","), 'a:true:{"n":1},b:false:null', "for-of with destructuring");
		eq(r.filter((x) => x.exists).map((x) => x.value.n).join(), "1", "filter and map");
		r[0].value.n = 2;
		eq(r[0].value.n, 2, "a value is a plain JS value");
		const copy = r.map((x) => ({...x}));
		copy.push("marker");
		copy[0].note = "seen";
		eq(copy.length + ":" + copy[0].note + ":" + (Object.getPrototypeOf(copy[0]) === Object.prototype), "3:seen:true", "a copy is plain data");
	`)
}

// Behaviour that holds, pinned down.

// What get (and the other readers) return is what JSON.parse of the stored
// text makes: key order, integer-like keys, duplicate keys, __proto__ as an
// own key, -0, on the Go fast parser and on the JSON.parse fallback (a \u
// escape), with Object.prototype carrying a setter for every key used.
func TestHostileDecodeMatchesJSONParse(t *testing.T) {
	hostileRun(t, storeOptions(t, "memory", false, ""), `
		const texts = ['{"b":1,"2":2,"1":3,"a":4,"4294967295":5,"01":6,"-1":7}',
			'{"__proto__":{"x":1},"a":[-0,1e21,5e-324,12345678901234567890,9007199254740993]}',
			'{"a":1,"a":2,"b":3}', '{"__proto__":1,"__proto__":2}', '[-0.0,{"constructor":{"prototype":1}}]',
			'{"a":"\\u2028\\u00e9\\ud83d\\ude00","__proto__":{"q":"\\u0041"}}'];
		const setters = ["a", "b", "x", "q", "1", "2", "constructor", "prototype"];
		const hits = [];
		function describe(v) {
			if (v === null || typeof v !== "object") return Object.is(v, -0) ? "-0" : JSON.stringify(v);
			const proto = Object.getPrototypeOf(v) === (Array.isArray(v) ? Array.prototype : Object.prototype) ? "" : "!proto";
			return proto + (Array.isArray(v) ? "[" : "{") + Reflect.ownKeys(v).map((k) => {
				const d = Object.getOwnPropertyDescriptor(v, k);
				const flags = (d.writable ? "w" : "") + (d.enumerable ? "e" : "") + (d.configurable ? "c" : "");
				return JSON.stringify(k) + (k === "length" ? "" : flags) + ":" + describe(d.value);
			}).join(",") + (Array.isArray(v) ? "]" : "}");
		}
		for (let i = 0; i < texts.length; i++) {
			const want = describe(JSON.parse(JSON.stringify(JSON.parse(texts[i]))));
			await kv.set("t", JSON.parse(texts[i]));
			for (let j = 0; j < setters.length; j++) {
				const d = Object.create(null), p = setters[j];
				d.configurable = true; d.set = function () { hits.push(p); };
				Object.defineProperty(Object.prototype, p, d);
			}
			const got = [describe(await kv.get("t")), describe((await kv.getMany(["t"]))[0].value),
				describe((await kv.scan({cursor: ""})).entries[0].value)];
			for (let j = 0; j < setters.length; j++) delete Object.prototype[setters[j]];
			for (let j = 0; j < got.length; j++) eq(got[j], want, "reader " + j + " of " + texts[i]);
		}
		eq(hits, [], "Object.prototype setters run by decoding");
	`)
}

// Getters of a setMany record run before anything is written: one that
// writes re-entrantly, one that closes the store. Proxies as values and
// keys. Each settles cleanly.
func TestHostileReentrantRecord(t *testing.T) {
	hostileRun(t, storeOptions(t, "memory", false, ""), `
		const o = {a: 1, get b() { kv.set("side", 1); return 2; }, c: 3};
		eq(await kv.setMany(o), {written: 3}, "re-entrant write from a getter");
		eq((await kv.getMany(["a", "b", "c", "side"])).map((r) => r.value), [1, 2, 3, 1], "all written");
		eq(await kv.set("px", new Proxy([1, {y: 2}], {})), [1, {y: 2}], "a Proxy array value");
		eq(await kv.get("px"), [1, {y: 2}], "read back as an array");
		await rejects(kv.getMany(new Proxy(["a"], {})), "InvalidOptionsError", "a Proxy of an array as keys");
		await rejects(kv.deleteMany(new Proxy(["a"], {})), "InvalidOptionsError", "a Proxy of an array as keys");
		eq(await kv.exists("a"), true, "nothing deleted");
		const closing = {x: 1, get y() { kv.close(); return 2; }};
		await rejects(kv.setMany(closing), "StoreClosedError", "a getter closes the store");
		await rejects(kv.get("x"), "StoreClosedError", "closed");
		const g = kv.get;
		await rejects(g("a"), "StoreClosedError", "detached method");
	`)
}

// A method whose argument makes the engine itself raise a TypeError (a
// revoked Proxy, an ownKeys trap breaking its invariants) must reject, as
// for a trap that throws: h.run recovers only *sobek.Exception, and the
// engine's own TypeErrors come as *sobek.Object, re-panicked, and turned by
// the engine into a synchronous throw.
func TestHostileEngineTypeErrorsReject(t *testing.T) {
	hostileRun(t, storeOptions(t, "memory", false, ""), `
		const revoked = () => { const r = Proxy.revocable({}, {}); r.revoke(); return r.proxy; };
		const dup = new Proxy({}, {ownKeys: () => ["d", "d"], getOwnPropertyDescriptor: () => ({value: 1, enumerable: true, configurable: true})});
		const calls = [
			["setMany(revoked)", () => kv.setMany(revoked())],
			["setMany(duplicate ownKeys)", () => kv.setMany(dup)],
			["set(k, revoked)", () => kv.set("k", revoked())],
			["set(k, {a: revoked})", () => kv.set("k", {a: revoked()})],
			["scan(revoked)", () => kv.scan(revoked())],
			["compareAndSwap(k, revoked, 1)", () => kv.compareAndSwap("k", revoked(), 1)],
		];
		const sync = [];
		for (let i = 0; i < calls.length; i++) {
			let p;
			try { p = calls[i][1](); } catch (e) { sync.push(calls[i][0] + " threw " + e.name + ": " + e.message); continue; }
			await p.then(() => sync.push(calls[i][0] + " resolved"), () => {});
		}
		eq(await kv.size(), 0, "nothing written");
		if (sync.length) throw new Error("did not return a rejected promise: " + sync.join("; "));
	`)
}

// set encodes as JSON.stringify does, which reads each property once. The
// Go fast path reads them, gives up at the first undefined (or anything it
// does not take) and hands the value to JSON.stringify, which reads them
// all again: a getter with a side effect (a counter, a re-entrant write)
// runs twice.
func TestHostileGetterRunsOnce(t *testing.T) {
	hostileRun(t, storeOptions(t, "memory", false, ""), `
		let n = 0;
		await kv.set("k", {get a() { n++; return 1; }, b: undefined});
		eq(await kv.get("k"), {a: 1}, "stored");
		eq(n, 1, "getter calls for one set");
	`)
}
