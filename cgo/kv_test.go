//go:build cgo

package kv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grafana/sobek"
	"go.k6.io/k6/v2/js/modulestest"
	"go.k6.io/k6/v2/lib"
)

// jsPrelude gives test scripts small assertion helpers.
const jsPrelude = `
function eq(got, want, what) {
	const g = JSON.stringify(got), w = JSON.stringify(want);
	if (g !== w) throw new Error((what || "value") + ": got " + g + ", want " + w);
}
async function rejects(p, name, what) {
	try {
		await p;
	} catch (e) {
		if (e.name !== name) throw new Error((what || "call") + ": rejected with " + e.name + " (" + e.message + "), want " + name);
		if (typeof e.message !== "string" || e.message === "") throw new Error((what || "call") + ": empty message");
		return e;
	}
	throw new Error((what || "call") + ": resolved, want a " + name + " rejection");
}
function throws(f, name, what) {
	try {
		f();
	} catch (e) {
		if (e.name !== name) throw new Error((what || "call") + ": threw " + e.name + " (" + e.message + "), want " + name);
		return e;
	}
	throw new Error((what || "call") + ": did not throw");
}
`

// newJS returns a runtime in the init context with openKv defined.
func newJS(t testing.TB) *modulestest.Runtime {
	t.Helper()
	rt := modulestest.NewRuntime(t)
	mi := new(RootModule).NewModuleInstance(rt.VU)
	if err := rt.VU.Runtime().Set("openKv", mi.Exports().Named["openKv"]); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.VU.Runtime().RunString(jsPrelude); err != nil {
		t.Fatal(err)
	}
	return rt
}

// runAsync runs body inside an async function on the event loop and fails
// the test if it throws.
func runAsync(t testing.TB, rt *modulestest.Runtime, body string) {
	t.Helper()
	if err := runAsyncErr(rt, body); err != nil {
		t.Fatal(err)
	}
}

// runAsyncErr is runAsync for goroutines, which may not call t.Fatal: it
// returns what went wrong instead.
func runAsyncErr(rt *modulestest.Runtime, body string) error {
	code := "(async () => {\n" + body + "\n})().catch((e) => { globalThis.__failure = String(e) + (e && e.stack ? '\\n' + e.stack : ''); });"
	if _, err := rt.RunOnEventLoop(code); err != nil {
		return fmt.Errorf("script error: %w", err)
	}
	if f := rt.VU.Runtime().Get("__failure"); f != nil && !sobek.IsUndefined(f) {
		return fmt.Errorf("script failed: %s", f.String())
	}
	return nil
}

// storeOptions returns openKv options (as JS source) for a fresh store.
func storeOptions(t testing.TB, backend string, track bool, extra string) string {
	t.Helper()
	where := ""
	if backend == "memory" {
		where = fmt.Sprintf("name: %q", testMemName(t))
	} else {
		where = fmt.Sprintf("path: %q", filepath.Join(t.TempDir(), "kv.db"))
	}
	if extra != "" {
		extra = ", " + extra
	}
	return fmt.Sprintf("{backend: %q, %s, trackKeys: %v, reserve: \"64MiB\"%s}", backend, where, track, extra)
}

func eachStore(t *testing.T, f func(t *testing.T, opts string)) {
	for _, b := range []string{"disk", "memory"} {
		for _, track := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/track=%v", b, track), func(t *testing.T) {
				f(t, storeOptions(t, b, track, ""))
			})
		}
	}
}

// eachUntracked runs f on a fresh store of each backend, created without
// trackKeys (for the tests of what turns the index on).
func eachUntracked(t *testing.T, f func(t *testing.T, backend, opts string)) {
	for _, b := range []string{"memory", "disk"} {
		t.Run(b, func(t *testing.T) { f(t, b, storeOptions(t, b, false, "")) })
	}
}

func TestJSBasics(t *testing.T) {
	eachStore(t, func(t *testing.T, opts string) {
		rt := newJS(t)
		runAsync(t, rt, `
			const kv = openKv(`+opts+`);
			eq(await kv.clear(), true, "clear");
			eq(await kv.size(), 0, "size empty");
			eq(await kv.set("a", 123), 123, "set resolves to the value");
			eq(await kv.get("a"), 123, "get");
			eq(await kv.exists("a"), true, "exists");
			eq(await kv.exists("b"), false, "exists missing");
			await rejects(kv.get("b"), "KeyNotFoundError", "get missing");
			eq(await kv.delete("a"), true, "delete");
			eq(await kv.delete("a"), true, "delete missing");
			eq(await kv.exists("a"), false, "exists after delete");
			for (const k of ["user:2", "user:1", "order:1", "user:10", "a b c"]) await kv.set(k, {k});
			eq(await kv.size(), 5, "size");
			eq((await kv.list()).map((e) => e.key), ["a b c", "order:1", "user:1", "user:10", "user:2"], "list");
			eq(await kv.list({prefix: "user:", limit: 2}), [{key: "user:1", value: {k: "user:1"}}, {key: "user:10", value: {k: "user:10"}}], "list prefix limit");
			eq((await kv.list({limit: 0})).length, 5, "limit 0");
			eq((await kv.list({limit: -3})).length, 5, "limit negative");
			eq(await kv.list({prefix: "zzz"}), [], "list no match");
			const seen = new Set();
			for (let i = 0; i < 300; i++) {
				const k = await kv.randomKey({prefix: "user:"});
				if (!k.startsWith("user:")) throw new Error("randomKey prefix: " + k);
				seen.add(k);
			}
			eq(seen.size, 3, "randomKey covers the prefix");
			eq(await kv.randomKey({prefix: "nope"}), "", "randomKey no match");
			eq(typeof (await kv.randomKey()), "string", "randomKey");
			eq(await kv.rebuildKeyList(), true, "rebuildKeyList");
			eq(await kv.size(), 5, "size after rebuild");
			eq(await kv.clear(), true, "clear");
			eq(await kv.randomKey(), "", "randomKey empty");
			eq(await kv.list(), [], "list empty");
		`)
	})
}

func TestJSAtomics(t *testing.T) {
	eachStore(t, func(t *testing.T, opts string) {
		rt := newJS(t)
		runAsync(t, rt, `
			const kv = openKv(`+opts+`);
			eq(await kv.incrementBy("n", 5), 5, "incr new");
			eq(await kv.incrementBy("n", -7), -2, "incr negative");
			eq(await kv.get("n"), -2, "incr stores a number");
			eq(await kv.incrementBy("n", 0), -2, "incr 0");
			await kv.set("s", "41");
			eq(await kv.incrementBy("s", 1), 42, "incr a JSON string holding an integer");
			eq(await kv.get("s"), 42, "now a number");
			await kv.set("f", 2.5);
			await rejects(kv.incrementBy("f", 1), "ValueParseError", "incr a float");
			eq(await kv.get("f"), 2.5, "unchanged");
			await kv.set("o", {a: 1});
			await rejects(kv.incrementBy("o", 1), "ValueParseError", "incr an object");
			await kv.set("max", 9007199254740991);
			eq(await kv.incrementBy("max", 1), 9007199254740992, "incr big");
			for (const bad of [1.5, NaN, Infinity, "1", null, undefined, 1e20]) {
				await rejects(kv.incrementBy("n", bad), "ValueNumberRequiredError", "incr by " + String(bad));
			}
			eq(await kv.get("n"), -2, "bad deltas change nothing");

			eq(await kv.compareAndSwap("c", null, {v: 1}), true, "cas absent");
			eq(await kv.compareAndSwap("c", null, {v: 2}), false, "cas absent, present");
			eq(await kv.compareAndSwap("c", undefined, {v: 2}), false, "cas undefined, present");
			eq(await kv.compareAndSwap("c", {v: 9}, {v: 2}), false, "cas mismatch");
			eq(await kv.compareAndSwap("c", {v: 1}, {v: 2}), true, "cas match");
			eq(await kv.get("c"), {v: 2}, "cas result");
			eq(await kv.compareAndSwap("missing", 1, 2), false, "cas missing");
			eq(await kv.exists("missing"), false, "cas missing creates nothing");

			eq(await kv.setIfAbsent("i", "first"), true, "setIfAbsent new");
			eq(await kv.setIfAbsent("i", "second"), false, "setIfAbsent existing");
			eq(await kv.get("i"), "first", "setIfAbsent kept");

			eq(await kv.getOrSet("g", [1, 2]), {value: [1, 2], loaded: false}, "getOrSet new");
			eq(await kv.getOrSet("g", [3]), {value: [1, 2], loaded: true}, "getOrSet existing");

			eq(await kv.swap("w", "one"), {previous: null, loaded: false}, "swap new");
			eq(await kv.swap("w", "two"), {previous: "one", loaded: true}, "swap existing");
			eq(await kv.get("w"), "two", "swap stored");

			eq(await kv.deleteIfExists("w"), true, "deleteIfExists");
			eq(await kv.deleteIfExists("w"), false, "deleteIfExists missing");

			await kv.set("d", {state: "failed"});
			eq(await kv.compareAndDelete("d", {state: "ok"}), false, "cad mismatch");
			eq(await kv.compareAndDelete("d", {state: "failed"}), true, "cad match");
			eq(await kv.exists("d"), false, "cad deleted");
			eq(await kv.compareAndDelete("d", {state: "failed"}), false, "cad missing");
			await kv.set("nul", null);
			eq(await kv.compareAndDelete("nul", null), true, "cad null compares as a value");
		`)
	})
}

func TestJSRoundTrip(t *testing.T) {
	rt := newJS(t)
	runAsync(t, rt, `
		const kv = openKv(`+storeOptions(t, "memory", false, "")+`);
		const values = [
			0, 1, -1, 42, 3.14159, -2.5e-8, 1e21, 1.7976931348623157e308, 5e-324, 9007199254740993,
			"", "plain", "quote \" backslash \\ newline \n tab \t nul \u0000 bell \u0007",
			"unicode: é ü 日本語 😀 \u2028 \u2029", "</script>&<>",
			true, false, null,
			[], [1, "two", [3, [4]], {five: 5}, null, true],
			{}, {b: 1, a: 2, c: {z: 1, y: [1, 2]}}, {"": "empty key", "日本": "語"},
			{"123": "numeric key", x: "after"},
		];
		for (let i = 0; i < values.length; i++) {
			const v = values[i];
			await kv.set("v" + i, v);
			const got = await kv.get("v" + i);
			if (JSON.stringify(got) !== JSON.stringify(v)) {
				throw new Error("round trip " + i + ": got " + JSON.stringify(got) + ", want " + JSON.stringify(v));
			}
			if (typeof got !== typeof v) throw new Error("type of " + i + ": " + typeof got);
		}
	`)
}

func TestJSSerializerErrors(t *testing.T) {
	rt := newJS(t)
	runAsync(t, rt, `
		const kv = openKv(`+storeOptions(t, "memory", false, "")+`);
		const cyc = {}; cyc.self = cyc;
		const bad = [NaN, Infinity, -Infinity, () => 1, {f() {}}, [1, NaN], {deep: {x: [Infinity]}}, cyc, 10n, Symbol("s")];
		for (let i = 0; i < bad.length; i++) {
			await rejects(kv.set("bad", bad[i]), "SerializerError", "set bad value " + i);
		}
		eq(await kv.exists("bad"), false, "nothing stored");
		await rejects(kv.compareAndSwap("bad", NaN, 1), "SerializerError", "cas bad old");
		await rejects(kv.setIfAbsent("bad", NaN), "SerializerError", "setIfAbsent");
		await rejects(kv.getOrSet("bad", NaN), "SerializerError", "getOrSet");
		await rejects(kv.swap("bad", NaN), "SerializerError", "swap");
		await rejects(kv.compareAndDelete("bad", NaN), "SerializerError", "compareAndDelete");
		eq(await kv.exists("bad"), false, "still nothing stored");
		// undefined stores null, as in xk6-kv; Dates go through toJSON.
		await kv.set("u", undefined);
		eq(await kv.get("u"), null, "undefined");
		await kv.set("date", new Date(0));
		eq(await kv.get("date"), "1970-01-01T00:00:00.000Z", "date");
	`)
}

func TestJSBadArguments(t *testing.T) {
	rt := newJS(t)
	runAsync(t, rt, `
		const kv = openKv(`+storeOptions(t, "memory", true, "")+`);
		for (const k of [undefined, null, 1, {}, [], ""]) {
			await rejects(kv.get(k), "InvalidOptionsError", "get key " + String(k));
			await rejects(kv.set(k, 1), "InvalidOptionsError", "set key " + String(k));
			await rejects(kv.delete(k), "InvalidOptionsError", "delete key " + String(k));
			await rejects(kv.incrementBy(k, 1), "InvalidOptionsError", "incr key " + String(k));
		}
		await rejects(kv.set("x".repeat(16385), 1), "KeyTooLongError", "long key");
		await kv.set("x".repeat(16384), 1);
		eq(await kv.get("x".repeat(16384)), 1, "longest key");
		await rejects(kv.list("prefix"), "InvalidOptionsError", "list with a string");
		await rejects(kv.list({prefix: 1}), "InvalidOptionsError", "list prefix number");
		await rejects(kv.list({limit: "1"}), "InvalidOptionsError", "list limit string");
		await rejects(kv.randomKey({prefix: 1}), "InvalidOptionsError", "randomKey prefix number");
		eq(await kv.size(), 1, "nothing else stored");
	`)
}

func TestJSValueTooLarge(t *testing.T) {
	rt := newJS(t)
	runAsync(t, rt, `
		const kv = openKv(`+storeOptions(t, "memory", false, "serialization: \"string\", reserve: \"256MiB\"")+`);
		const big = "x".repeat(64 * 1024 * 1024);
		await kv.set("max", big);
		eq((await kv.get("max")).length, big.length, "largest value");
		await rejects(kv.set("big", big + "y"), "ValueTooLargeError", "too large");
		eq(await kv.exists("big"), false, "not stored");
	`)
}

func TestJSStringSerialization(t *testing.T) {
	rt := newJS(t)
	opts := storeOptions(t, "disk", false, `serialization: "string"`)
	runAsync(t, rt, `
		const kv = openKv(`+opts+`);
		await kv.set("s", "plain text {not json}");
		eq(await kv.get("s"), "plain text {not json}", "string");
		await kv.set("n", 42);
		eq(await kv.get("n"), "42", "number becomes its string");
		await kv.set("b", true);
		eq(await kv.get("b"), "true", "boolean");
		await kv.set("u", "unicode é 😀");
		eq(await kv.get("u"), "unicode é 😀", "unicode");
		await kv.set("bin", new Uint8Array([104, 105]).buffer);
		eq(await kv.get("bin"), "hi", "ArrayBuffer bytes");
		for (const bad of [null, undefined, {a: 1}, [1], () => 1]) {
			await rejects(kv.set("bad", bad), "SerializerError", "string mode " + String(bad));
		}
		eq(await kv.incrementBy("ctr", 3), 3, "incr");
		eq(await kv.get("ctr"), "3", "incr stores decimal text");
		await rejects(kv.incrementBy("s", 1), "ValueParseError", "incr text");
		eq(await kv.compareAndSwap("s", "plain text {not json}", "new"), true, "cas strings");
		eq(await kv.getOrSet("s", "x"), {value: "new", loaded: true}, "getOrSet");
	`)
	// A json opener of the same store sees the string-kind values as strings.
	rt2 := newJS(t)
	runAsync(t, rt2, `
		const kv = openKv(`+strings.Replace(opts, `serialization: "string"`, `serialization: "json"`, 1)+`);
		eq(await kv.get("s"), "new", "string kind read by a json opener");
	`)
}

func TestJSSharedBetweenVUs(t *testing.T) {
	opts := storeOptions(t, "memory", true, "")
	a, b := newJS(t), newJS(t)
	runAsync(t, a, `const kv = openKv(`+opts+`); await kv.set("from-a", [1]);`)
	runAsync(t, b, `const kv = openKv(`+opts+`); eq(await kv.get("from-a"), [1], "b sees a");`)
}

func TestJSInitContext(t *testing.T) {
	rt := newJS(t)
	rt.MoveToVUContext(&lib.State{})
	runAsync(t, rt, `
		const e = throws(() => openKv({backend: "memory"}), "InitContextError", "openKv in a VU");
		if (!(e instanceof Error)) throw new Error("not an Error");
	`)
}

func TestJSClose(t *testing.T) {
	name := testMemName(t)
	opts := fmt.Sprintf(`{backend: "memory", name: %q}`, name)
	before := liveCount()
	a, b := newJS(t), newJS(t)
	runAsync(t, a, `globalThis.kv = openKv(`+opts+`); await kv.set("k", 1);`)
	runAsync(t, b, `globalThis.kv = openKv(`+opts+`);`)
	runAsync(t, a, `
		eq(await kv.close(), true, "close");
		eq(await kv.close(), true, "close again");
		await rejects(kv.get("k"), "StoreClosedError", "get after close");
		await rejects(kv.set("k", 2), "StoreClosedError", "set after close");
	`)
	// The other VU still uses the store; its close is the last one.
	runAsync(t, b, `eq(await kv.get("k"), 1, "other VU"); await kv.close();`)
	if n := liveCount(); n != before {
		t.Fatalf("%d handles open after both users closed theirs, %d before", n, before)
	}
	if _, err := os.Stat("/dev/shm/shmkv." + name); err == nil {
		t.Fatal("memory store not removed by its last close")
	}
}

// wrapStore replaces the store of every live handle of rt's runtime by
// wrap of it: a test's way to make one store call fail.
func wrapStore(rt *modulestest.Runtime, wrap func(backendStore) backendStore) {
	live.mu.Lock()
	defer live.mu.Unlock()
	for h := range live.handles {
		if h.rt == rt.VU.Runtime() {
			h.db = wrap(h.db)
		}
	}
}

func liveCount() int {
	live.mu.Lock()
	defer live.mu.Unlock()
	return len(live.handles)
}

func TestJSCloseAllAtExit(t *testing.T) {
	opts := storeOptions(t, "memory", false, "")
	rt := newJS(t)
	runAsync(t, rt, `globalThis.kv = openKv(`+opts+`); await kv.set("k", 1);`)
	live.closeAll()
	runAsync(t, rt, `await rejects(kv.get("k"), "StoreClosedError", "after exit");`)
}

func TestJSOptionErrors(t *testing.T) {
	cases := []struct{ opts, name, msg string }{
		{`{backend: "redis"}`, ErrInvalidBackend, `"backend"`},
		{`{backend: 1}`, ErrInvalidOptions, `"backend" must be a string`},
		{`{serialization: "yaml"}`, ErrInvalidSerializer, `"serialization"`},
		{`{trackKeys: "yes"}`, ErrInvalidOptions, `"trackKeys" must be a boolean`},
		{`{trackKey: true}`, ErrInvalidOptions, `unknown option "trackKey"`},
		{`{path: ""}`, ErrInvalidOptions, `"path"`},
		{`{path: 3}`, ErrInvalidOptions, `"path" must be a string`},
		{`{backend: "memory", name: "a/b"}`, ErrInvalidOptions, `"name"`},
		{`{backend: "memory", name: ""}`, ErrInvalidOptions, `"name"`},
		{`{segments: 3}`, ErrInvalidOptions, `"segments"`},
		{`{segments: 8192}`, ErrInvalidOptions, `"segments"`},
		{`{segments: "8"}`, ErrInvalidOptions, `"segments" must be a number`},
		{`{reserve: "lots"}`, ErrInvalidOptions, `"reserve"`},
		{`{reserve: "16XB"}`, ErrInvalidOptions, `unknown unit`},
		{`{reserve: 1000}`, ErrInvalidOptions, `"reserve" (1000 bytes): reserve must be from`},
		{`{memory: 4}`, ErrInvalidOptions, `"memory" must be an object`},
		{`{memory: {shards: 4}}`, ErrInvalidOptions, `unknown option "shards" in "memory"`},
		{`{memory: {shardCount: "4"}}`, ErrInvalidOptions, `"memory.shardCount" must be a number`},
		{`{disk: {readOnly: 1}}`, ErrInvalidOptions, `"disk.readOnly" must be a boolean`},
		{`{disk: {timeout: true}}`, ErrInvalidOptions, `"disk.timeout"`},
		{`{disk: {bogus: 1}}`, ErrInvalidOptions, `unknown option "bogus" in "disk"`},
		{`{path: "./a", disk: {path: "./b"}}`, ErrInvalidOptions, `disagree`},
		{`{metrics: {operations: "yes"}}`, ErrInvalidOptions, `"metrics.operations"`},
		{`"disk"`, ErrInvalidOptions, `options object`},
		{`{lockTimeout: 0}`, ErrInvalidOptions, `"lockTimeout" must be a positive number`},
		{`{lockTimeout: -5}`, ErrInvalidOptions, `"lockTimeout" must be a positive number`},
		{`{lockTimeout: "soon"}`, ErrInvalidOptions, `cannot read "soon"`},
		{`{lockTimeout: true}`, ErrInvalidOptions, `"lockTimeout" must be a number`},
	}
	for _, c := range cases {
		t.Run(c.opts, func(t *testing.T) {
			rt := newJS(t)
			runAsync(t, rt, fmt.Sprintf(`
				const e = throws(() => openKv(%s), %q, "openKv");
				if (!e.message.includes(%q)) throw new Error("message: " + e.message);
			`, c.opts, c.name, c.msg))
		})
	}
}

func TestParseOptions(t *testing.T) {
	rt := sobek.New()
	parse := func(src string) *config {
		t.Helper()
		v, err := rt.RunString("(" + src + ")")
		if err != nil {
			t.Fatal(err)
		}
		c, kerr := parseOptions(v)
		if kerr != nil {
			t.Fatalf("%s: %v", src, kerr)
		}
		return c
	}
	c := parse(`undefined`)
	if c.backend != BackendDisk || c.path != defaultPath || c.serialization != serJSON || c.track != trackDefault {
		t.Fatalf("defaults: %+v", c)
	}
	c = parse(`{backend: "memory"}`)
	if c.where() != defaultName {
		t.Fatalf("memory default name: %+v", c)
	}
	c = parse(`{backend: "memory", name: "x", trackKeys: false, memory: {shardCount: 5}}`)
	if c.name != "x" || c.track != trackOff || c.segments != 8 {
		t.Fatalf("%+v", c)
	}
	c = parse(`{backend: "memory", memory: {shardCount: 100000}}`)
	if c.segments != maxSegments {
		t.Fatalf("shardCount cap: %+v", c)
	}
	c = parse(`{backend: "memory", memory: {shardCount: 0}}`)
	if c.segments != 0 {
		t.Fatalf("shardCount 0: %+v", c)
	}
	for js, want := range map[string]uint32{
		`{}`: 0, `{lockTimeout: 250}`: 250, `{lockTimeout: "10s"}`: 10000, `{lockTimeout: 0.1}`: 1,
		`{lockTimeout: "1m30s"}`: 90000, `{lockTimeout: Infinity}`: lockTimeoutNone, `{lockTimeout: "none"}`: lockTimeoutNone,
	} {
		if c = parse(js); c.lockTimeoutMs != want {
			t.Errorf("%s: lockTimeoutMs %d, want %d", js, c.lockTimeoutMs, want)
		}
	}
	c = parse(`{segments: 16, reserve: "1GiB", trackKeys: true}`)
	if c.segments != 16 || c.reserve != 1<<30 || c.track != trackOn {
		t.Fatalf("%+v", c)
	}
	c = parse(`{reserve: 1048576}`)
	if c.reserve != 1<<20 {
		t.Fatalf("%+v", c)
	}
	c = parse(`{reserve: "2 GB"}`)
	if c.reserve != 2e9 {
		t.Fatalf("%+v", c)
	}
	c = parse(`{disk: {path: "/tmp/x.kv", readOnly: true, noSync: true, timeout: "1s", mlock: false, freelistType: "map"}, metrics: {operations: true}}`)
	if c.path != "/tmp/x.kv" || c.flags != flagReadOnly|flagNoSync {
		t.Fatalf("%+v", c)
	}
	if strings.Join(c.ignored, ",") != "disk.timeout,disk.freelistType,disk.mlock" || !c.opMetrics {
		t.Fatalf("ignored: %v, opMetrics %v", c.ignored, c.opMetrics)
	}
	c = parse(`{path: null, backend: undefined}`)
	if c.path != defaultPath || c.backend != BackendDisk {
		t.Fatalf("null options: %+v", c)
	}
}

func TestOptionsConflict(t *testing.T) {
	opts := storeOptions(t, "memory", true, "segments: 16")
	a := newJS(t)
	runAsync(t, a, `globalThis.kv = openKv(`+opts+`); await kv.set("k", 1);`)
	b := newJS(t)
	// segments and reserve are fixed at creation: a different value throws.
	conflicting := strings.Replace(opts, "segments: 16", "segments: 8", 1)
	runAsync(t, b, `throws(() => openKv(`+conflicting+`), "KVOptionsConflictError", "segments conflict");`)
	conflicting = strings.Replace(opts, `reserve: "64MiB"`, `reserve: "128MiB"`, 1)
	runAsync(t, b, `throws(() => openKv(`+conflicting+`), "KVOptionsConflictError", "reserve conflict");`)
	// left out, they are taken from the store
	omitted := strings.Replace(strings.Replace(opts, `, reserve: "64MiB"`, "", 1), ", segments: 16", "", 1)
	runAsync(t, b, `const kv = openKv(`+omitted+`); const s = (await kv.stats()).store;
		eq([s.segments, s.reserveBytes], [16, 64 * 1024 * 1024], "creation options taken from the store");`)
	// trackKeys is reconciled, as on the fork: false joins the tracked store.
	joining := strings.Replace(opts, "trackKeys: true", "trackKeys: false", 1)
	runAsync(t, b, `const kv = openKv(`+joining+`); eq(await kv.size(), 1, "joined");`)
}

// A store created without trackKeys, joined with trackKeys: true, is
// tracked from then on, for the opener that came first too.
func TestTrackKeysTurnedOnByALaterOpener(t *testing.T) {
	eachUntracked(t, func(t *testing.T, backend, opts string) {
		a := newJS(t)
		runAsync(t, a, `globalThis.kv = openKv(`+opts+`);
			for (let i = 0; i < 50; i++) await kv.set("u:" + i, i);`)
		b := newJS(t)
		tracked := strings.Replace(opts, "trackKeys: false", "trackKeys: true", 1)
		runAsync(t, b, `globalThis.kv = openKv(`+tracked+`);
			eq((await kv.list({prefix: "u:1"})).length, 11, "list through the new index");`)
		runAsync(t, a, `for (let i = 50; i < 60; i++) await kv.set("u:" + i, i);`)
		runAsync(t, b, `eq((await kv.list({prefix: "u:5"})).length, 11, "the first opener's later writes are indexed");
			eq(await kv.size(), 60, "size");`)
	})
}

func TestReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ro.kv")
	rw := newJS(t)
	runAsync(t, rw, fmt.Sprintf(`const kv = openKv({path: %q}); await kv.set("k", "v");`, path))
	ro := newJS(t)
	runAsync(t, ro, fmt.Sprintf(`
		const kv = openKv({path: %q, disk: {readOnly: true}});
		eq(await kv.get("k"), "v", "read");
		await rejects(kv.set("k", "w"), "StoreReadOnlyError", "write");
		await rejects(kv.clear(), "StoreReadOnlyError", "clear");
		eq(await kv.get("k"), "v", "unchanged");
	`, path))
}

func TestNotAStoreFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bolt.kv")
	if err := os.WriteFile(path, []byte(strings.Repeat("bolt", 2048)), 0o600); err != nil {
		t.Fatal(err)
	}
	rt := newJS(t)
	runAsync(t, rt, fmt.Sprintf(`
		const e = throws(() => openKv({path: %q}), "DiskStoreOpenError", "open a non-store");
		if (!e.message.includes("not a shmkv store")) throw new Error(e.message);
	`, path))
}

func TestMapError(t *testing.T) {
	cases := map[int]string{
		codeNotFound: ErrKeyNotFound,
		codeKeySize:  ErrKeyTooLong,
		codeValSize:  ErrValueTooLarge,
		codeNotInt:   ErrValueParse,
		codeOverflow: ErrValueParse,
		codeFull:     ErrStoreFull,
		codeNoSpace:  ErrStoreFull,
		codeReadOnly: ErrStoreReadOnly,
		codeIncompat: ErrOptionsConflict,
		codeName:     ErrInvalidOptions,
		codeSegments: ErrInvalidOptions,
		codeReserve:  ErrInvalidOptions,
		codeTimedOut: ErrLockTimeout,
		codeNotStore: ErrStore,
		codeVersion:  ErrStore,
		codeABI:      ErrStore,
		codeNoMem:    ErrStore,
	}
	for code, name := range cases {
		e := storeError("op", "k", 1, &CError{Code: code})
		if e.Name != name || !strings.HasPrefix(e.Message, "op: ") || len(e.Message) < 8 {
			t.Errorf("code %d: %+v, want %s", code, e, name)
		}
	}
	if e := storeError("op", "k", 1, fmt.Errorf("plain")); e.Name != ErrStore {
		t.Errorf("plain error: %+v", e)
	}
}

func TestDecodeInt(t *testing.T) {
	good := map[string]int64{`41`: 41, `"41"`: 41, `-3`: -3, `4.0`: 4, `4.1e1`: 41, `"-9"`: -9}
	for s, want := range good {
		if got, ok := decodeInt([]byte(s)); !ok || got != want {
			t.Errorf("%s: %d %v", s, got, ok)
		}
	}
	for _, s := range []string{`4.5`, `"4.5"`, `"x"`, `{}`, `null`, `1e400`, `0x10`, `Infinity`, `"1 "`} {
		if _, ok := decodeInt([]byte(s)); ok {
			t.Errorf("%s accepted", s)
		}
	}
}

func TestAppendJSONString(t *testing.T) {
	rt := sobek.New()
	for _, s := range []string{"", "abc", "a\"b\\c", "\x00\x01\x1f\n\r\t\b\f", "é😀", "</>&", "\u2028"} {
		want, err := rt.RunString("JSON.stringify(" + string(appendJSONString(nil, s)) + ")")
		if err != nil {
			t.Fatal(err)
		}
		if got := string(appendJSONString(nil, s)); got != want.String() {
			t.Errorf("%q: got %s, want %s", s, got, want.String())
		}
	}
}

// TestLibrarySources checks that cgo/ compiles every source file meson
// lists for the library, and nothing else.
func TestLibrarySources(t *testing.T) {
	meson, err := os.ReadFile("../libshmkv/meson.build")
	if err != nil {
		t.Skip("no libshmkv/meson.build")
	}
	var want []string
	for _, line := range strings.Split(string(meson), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "'src/") && strings.HasSuffix(strings.TrimSuffix(line, ","), ".c'") {
			want = append(want, strings.Trim(strings.TrimSuffix(line, ","), "'")[len("src/"):])
		}
	}
	got, _ := filepath.Glob("lib_*.c")
	have := map[string]bool{}
	for _, g := range got {
		have[strings.TrimPrefix(g, "lib_")] = true
	}
	for _, w := range want {
		if !have[w] {
			t.Errorf("libshmkv source %s is not compiled: add cgo/lib_%s", w, w)
		}
		delete(have, w)
	}
	for extra := range have {
		t.Errorf("cgo/lib_%s compiles a file meson does not list", extra)
	}
}

// Keys are stored as UTF-8. A JS string with a lone UTF-16 surrogate has no
// UTF-8 form; converting it would turn "\uD800" and "\uDBFF" alike into
// U+FFFD and make two keys one, so such keys and prefixes are refused.
func TestJSLoneSurrogateKeys(t *testing.T) {
	for _, backend := range []string{"memory", "disk"} {
		t.Run(backend, func(t *testing.T) {
			rt := newJS(t)
			runAsync(t, rt, `const kv = openKv(`+storeOptions(t, backend, true, "")+`);
				for (const k of ["tok\uD800", "tok\uDBFF", "\uDC00", "a\uD800b", "\uDE00\uD83D"]) {
					await rejects(kv.set(k, 1), "InvalidOptionsError", "set " + JSON.stringify(k));
					await rejects(kv.get(k), "InvalidOptionsError", "get " + JSON.stringify(k));
					await rejects(kv.incrementBy(k, 1), "InvalidOptionsError", "incrementBy " + JSON.stringify(k));
				}
				await rejects(kv.list({prefix: "tok\uD800"}), "InvalidOptionsError", "list prefix");
				await rejects(kv.getMany(["ok", "tok\uD800"]), "InvalidOptionsError", "getMany");
				await rejects(kv.deleteMany(["tok\uDBFF"]), "InvalidOptionsError", "deleteMany");
				const e = await rejects(kv.setMany({ok: 1, ["tok\uD800"]: 2}), "InvalidOptionsError", "setMany");
				eq(e.errors.length, 1, "setMany names the one bad key");
				await rejects(kv.count({prefix: "\uDC00"}), "InvalidOptionsError", "count prefix");
				await rejects(kv.randomKey({prefix: "tok\uDBFF"}), "InvalidOptionsError", "randomKey prefix");
				eq(await kv.size(), 0, "size after refused writes");
				// U+FFFD itself and a proper surrogate pair are keys like any other.
				await kv.set("tok\uFFFD", 1);
				await kv.set("tok\uD83D\uDE00", 2);
				eq(await kv.get("tok\uFFFD"), 1, "U+FFFD key");
				eq(await kv.get("tok\uD83D\uDE00"), 2, "pair key");
				// Listed in UTF-8 byte order (EF BF BD before F0 9F 98 80),
				// which is not JS's UTF-16 order.
				eq((await kv.list({prefix: "tok"})).map((e) => e.key), ["tok\uFFFD", "tok\uD83D\uDE00"], "list");
			`)
		})
	}
}

// A disk path whose folders do not exist gets them, owner-only, as on
// xk6-kv; a read-only open creates nothing.
func TestJSDiskPathFoldersCreated(t *testing.T) {
	base := t.TempDir()
	path := filepath.Join(base, "data", "deep", "custom.kv")
	rt := newJS(t)
	runAsync(t, rt, fmt.Sprintf(`const kv = openKv({path: %q}); await kv.set("k", 1); eq(await kv.get("k"), 1, "works");`, path))
	st, err := os.Stat(filepath.Join(base, "data"))
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("data/: %v %v", st, err)
	}
	ro := filepath.Join(base, "other", "ro.kv")
	runAsync(t, newJS(t), fmt.Sprintf(`throws(() => openKv({path: %q, disk: {readOnly: true}}), "DiskStoreOpenError", "missing, read-only");`, ro))
	if _, err := os.Stat(filepath.Join(base, "other")); !os.IsNotExist(err) {
		t.Fatalf("a read-only open created a folder: %v", err)
	}
	blocker := filepath.Join(base, "file")
	if err := os.WriteFile(blocker, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	runAsync(t, newJS(t), fmt.Sprintf(`throws(() => openKv({path: %q}), "DiskPathError", "a file where a folder should be");`, filepath.Join(blocker, "sub", "s.kv")))
}
