//go:build cgo

package kv

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grafana/sobek"
)

// Adversarial probes of the batch/scan/compare methods.

func advRun(t *testing.T, opts, body string) {
	t.Helper()
	runAsync(t, newJS(t), `const kv = openKv(`+opts+`);`+body)
}

// concurrently runs scripts, each in a VU of its own (a runtime on its own
// goroutine, as k6 runs VUs), on one store, and fails the test with the
// first error; the VUs' runtimes, to read what the scripts left.
func concurrently(t *testing.T, scripts ...string) []*sobek.Runtime {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(scripts))
	vus := make([]*sobek.Runtime, len(scripts))
	for i, script := range scripts {
		rt := newJS(t)
		vus[i] = rt.VU.Runtime()
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = runAsyncErr(rt, script)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("VU %d: %v", i, err)
		}
	}
	return vus
}

// compareAndSwap from several VUs at once, each a read-modify-write loop
// on one JSON object: every win is one increment, none lost. The expected
// value is written with its keys in another order than the stored one, so
// every attempt is decided by comparing JSON values, not bytes (the
// comparison and the swap must still be one step for every writer).
func TestAdvCompareAndSwapLoopConcurrent(t *testing.T) {
	eachStore(t, func(t *testing.T, opts string) {
		const vus, wins = 4, 500
		advRun(t, opts, `await kv.set("doc", {n: 0, pad: "p", tags: ["a"]});`)
		loop := `const kv = openKv(` + opts + `);
			let wins = 0, tries = 0;
			while (wins < ` + itoa(wins) + `) {
				if (++tries > 1000000) throw new Error("no progress: " + wins + " wins");
				const v = await kv.get("doc");
				const expect = {tags: v.tags, pad: v.pad, n: v.n};
				if (await kv.compareAndSwap("doc", expect, {n: v.n + 1, pad: v.pad, tags: v.tags})) wins++;
			}
			globalThis.tries = tries;`
		scripts := make([]string, vus)
		for i := range scripts {
			scripts[i] = loop
		}
		tries := int64(0)
		for _, vu := range concurrently(t, scripts...) {
			tries += vu.Get("tries").ToInteger()
		}
		t.Logf("%d tries for %d wins", tries, vus*wins)
		advRun(t, opts, `const d = await kv.get("doc");
			eq([d.n, Object.keys(d)], [`+itoa(vus*wins)+`, ["n", "pad", "tags"]], "every win counted once, in the order last stored");`)
	})
}

// incrementBy of a value stored as a JSON string holding an integer ("41"):
// the shim reads, parses and writes it back as one step under the key's
// lock, while another VU keeps turning the number back into such a string.
// No increment is lost.
func TestAdvIncrementStringValueConcurrent(t *testing.T) {
	eachStore(t, func(t *testing.T, opts string) {
		const vus, each = 4, 300
		advRun(t, opts, `await kv.set("c", "0");`)
		inc := `const kv = openKv(` + opts + `);
			for (let i = 0; i < ` + itoa(each) + `; i++) await kv.incrementBy("c", 1);`
		back := `const kv = openKv(` + opts + `);
			for (let i = 0; i < ` + itoa(each) + `; i++) { const v = await kv.get("c"); await kv.compareAndSwap("c", v, String(v)); }`
		scripts := []string{back}
		for i := 0; i < vus; i++ {
			scripts = append(scripts, inc)
		}
		concurrently(t, scripts...)
		advRun(t, opts, `eq(Number(await kv.get("c")), `+itoa(vus*each)+`, "every increment counted");`)
	})
}

// P-surr: a lone-surrogate key beside the U+FFFD key it converts to.
func TestAdvSetManySurrogateCollision(t *testing.T) {
	advRun(t, storeOptions(t, "memory", true, ""), `
		const e = await rejects(kv.setMany({["a\uD800"]: 1, "a\uFFFD": 2}), "InvalidOptionsError", "lone surrogate beside U+FFFD");
		eq(await kv.size(), 0, "nothing written");
	`)
}

// errors[] must list each bad entry.
func TestAdvSetManyErrorsListEach(t *testing.T) {
	advRun(t, storeOptions(t, "memory", false, ""), `
		let e = await rejects(kv.setMany({["a".repeat(16385)]: 1, ["b".repeat(16385)]: 2, ok: 3}), "InvalidOptionsError", "two long keys");
		eq(e.errors.map((d) => d.name), ["KeyTooLongError", "KeyTooLongError"], "both long keys listed");
	`)
}

func TestAdvSetManyErrorsMixed(t *testing.T) {
	advRun(t, storeOptions(t, "memory", false, ""), `
		let e = await rejects(kv.setMany({["a".repeat(16385)]: 1, f: NaN}), "InvalidOptionsError", "long key + NaN");
		eq(e.errors.map((d) => d.name).sort(), ["KeyTooLongError", "SerializerError"], "both listed");
	`)
}

// A throwing getter / toJSON / proxy trap must reject, not throw synchronously.
func TestAdvSetManyThrowingGetter(t *testing.T) {
	advRun(t, storeOptions(t, "memory", false, ""), `
		const o = {a: 1};
		Object.defineProperty(o, "b", {enumerable: true, get() { throw new Error("boom"); }});
		let p;
		try { p = kv.setMany(o); } catch (e) { throw new Error("threw synchronously: " + e); }
		await p.then(() => { throw new Error("resolved"); }, () => {});
		eq(await kv.size(), 0, "nothing written");
	`)
}

func TestAdvSetManyToJSONThrows(t *testing.T) {
	advRun(t, storeOptions(t, "memory", false, ""), `
		let p;
		try { p = kv.setMany({a: 1, b: {toJSON() { throw new Error("boom"); }}}); } catch (e) { throw new Error("threw synchronously: " + e); }
		const e = await rejects(p, "InvalidOptionsError", "toJSON throws");
		eq(await kv.size(), 0, "nothing written");
	`)
}

func TestAdvSetManyProxyTrapThrows(t *testing.T) {
	advRun(t, storeOptions(t, "memory", false, ""), `
		const px = new Proxy({a: 1}, {ownKeys() { throw new Error("trap"); }});
		let p;
		try { p = kv.setMany(px); } catch (e) { throw new Error("threw synchronously: " + e); }
		await p.then(() => { throw new Error("resolved"); }, () => {});
	`)
}

func TestAdvGetManyThrowingElementGetter(t *testing.T) {
	advRun(t, storeOptions(t, "memory", false, ""), `
		const a = ["x"];
		Object.defineProperty(a, 1, {enumerable: true, get() { throw new Error("boom"); }});
		let p;
		try { p = kv.getMany(a); } catch (e) { throw new Error("threw synchronously: " + e); }
		await p.then(() => { throw new Error("resolved"); }, () => {});
	`)
}

// Odd inputs that should just work (or cleanly reject).
func TestAdvOddInputs(t *testing.T) {
	advRun(t, storeOptions(t, "memory", true, ""), `
		const rec = JSON.parse('{"__proto__": {"x": 1}, "constructor": 2, "a\\u0000b": 3, "é": 4}');
		eq(await kv.setMany(rec), {written: 4}, "own __proto__ etc");
		eq((await kv.getMany(["__proto__", "constructor", "a\0b", "é"])).map((r) => r.value), [{x: 1}, 2, 3, 4], "read back");
		const inh = Object.create({inherited: 1}); inh.own = 1; inh[Symbol("s")] = 2;
		eq(await kv.setMany(inh), {written: 1}, "only own string keys");
		await rejects(kv.getMany(["a", , "b"]), "InvalidOptionsError", "sparse");
		await rejects(kv.getMany({length: 1, 0: "a"}), "InvalidOptionsError", "array-like");
		await rejects(kv.getMany([1]), "InvalidOptionsError", "number key");
		const sc = await kv.scan({prefix: "a\0", limit: 1});
		eq(sc.entries.map((e) => e.key), ["a\0b"], "NUL prefix");
		eq(await kv.count({prefix: "a\0"}), 1, "count NUL prefix");
		eq(await kv.deleteByPrefix({prefix: "a\0", limit: 2**53}), {deleted: 1, done: true}, "limit 2^53");
		await rejects(kv.deleteByPrefix({prefix: "x", limit: "5"}), "InvalidOptionsError", "string limit");
		for (const c of [NaN, "5", 2.5, 0, -1, 1e6 + 1, Infinity])
			await rejects(kv.randomKeys({count: c}), "InvalidOptionsError", "randomKeys count " + c);
		eq((await kv.randomKeys({count: 1e6})).length, await kv.size(), "count 1e6 unique");
		eq((await kv.randomKeys({count: 1000, unique: false})).length, 1000, "with replacement");
	`)
}

// Cursors: from another prefix, after a deleted key, forged.
func TestAdvCursors(t *testing.T) {
	for _, track := range []bool{false, true} {
		t.Run(fmt.Sprint(track), func(t *testing.T) {
			advRun(t, storeOptions(t, "memory", track, ""), `
				await kv.setMany({a1: 1, a2: 2, a3: 3, b1: 1, b2: 2});
				let p = await kv.scanKeys({prefix: "a", limit: 1});
				eq(p.keys, ["a1"], "first");
				await kv.delete("a1");
				p = await kv.scanKeys({prefix: "a", limit: 1, cursor: p.cursor});
				eq(p.keys, ["a2"], "after deleted cursor key");
				const q = await kv.scanKeys({prefix: "b", limit: 5, cursor: p.cursor});
				eq([q.keys, q.done], [["b1", "b2"], true], "cursor from another prefix");
				const z = await kv.scanKeys({prefix: "a", limit: 5, cursor: "c1.enp6"});
				eq([z.keys, z.done], [[], true], "cursor past the prefix");
				await rejects(kv.scanKeys({cursor: "c1."}), "InvalidCursorError", "empty cursor body");
				await rejects(kv.scanKeys({cursor: 5}), "InvalidOptionsError", "number cursor");
			`)
		})
	}
}

// Closed handle and read-only handle call every new method.
func TestAdvClosedAndReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	runAsync(t, newJS(t), fmt.Sprintf(`
		const kv = openKv({path: %q});
		await kv.setMany({a: 1, b: 2});
		const ro = openKv({path: %q, disk: {readOnly: true}});
		eq((await ro.getMany(["a"]))[0].value, 1, "ro getMany");
		eq((await ro.scan({limit: 1})).entries.length, 1, "ro scan");
		eq(await ro.count(), 2, "ro count");
		eq((await ro.randomKeys({count: 2})).length, 2, "ro randomKeys");
		eq(await ro.listKeys(), ["a", "b"], "ro listKeys");
		await rejects(ro.setMany({c: 1}), "StoreReadOnlyError", "ro setMany");
		await rejects(ro.deleteMany(["a"]), "StoreReadOnlyError", "ro deleteMany");
		await rejects(ro.deleteByPrefix({prefix: "a", limit: 1}), "StoreReadOnlyError", "ro deleteByPrefix");
		await rejects(ro.compareAndSwapDetailed("a", 1, 2), "StoreReadOnlyError", "ro casd");
		await rejects(ro.compareAndDeleteDetailed("a", 1), "StoreReadOnlyError", "ro cadd");
		await rejects(ro.compareAndSwap("a", 5, 2), "StoreReadOnlyError", "ro cas mismatch");
		eq(await ro.rebuildKeyList(), true, "ro rebuildKeyList without trackKeys: a no-op");
		eq(await kv.get("a"), 1, "unchanged");
		await ro.close();
		await kv.close();
		const calls = {getMany: [["a"]], setMany: [{a: 1}], deleteMany: [["a"]], deleteByPrefix: [{prefix: "a", limit: 1}],
			scan: [], scanKeys: [], listKeys: [], count: [], randomKeys: [{count: 1}],
			compareAndSwapDetailed: ["a", 1, 2], compareAndDeleteDetailed: ["a", 1]};
		for (const [m, args] of Object.entries(calls)) await rejects(kv[m](...args), "StoreClosedError", "closed " + m);
	`, path, path))
}

// Compare across serializations: a string "1" stored by a string opener.
// Documented limit (docs/api.md): a value written by a "string" opener is
// compared by its bytes by a json opener's compare, with no regard to its
// kind. These pin that behaviour down.
func TestAdvCompareKindMismatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	runAsync(t, newJS(t), fmt.Sprintf(`
		const s = openKv({path: %q, serialization: "string"});
		const j = openKv({path: %q});
		await s.set("k", "1");
		eq(await j.get("k"), "1", "json opener reads the string");
		eq(await j.compareAndSwap("k", 1, 2), true, "compared by bytes: 1 is the bytes of \"1\" written as a string");
		await s.set("k", "1");
		eq(await j.compareAndSwap("k", "1", 2), false, "the JSON string \"1\" is other bytes");
	`, path, path))
}

func TestAdvCompareNumbers(t *testing.T) {
	advRun(t, storeOptions(t, "memory", false, ""), `
		await kv.set("z", 0);
		eq(await kv.compareAndSwap("z", -0, 1), true, "-0 equals 0");
		await kv.set("s", "1");
		eq(await kv.compareAndSwap("s", 1, 2), false, "string 1 vs number 1");
		await kv.set("big", 1e21);
		eq(await kv.compareAndSwap("big", 1000000000000000000000, 2), true, "1e21");
		await rejects(kv.compareAndSwap("big", NaN, 2), "SerializerError", "NaN expected");
		await kv.incrementBy("i", 2**53); await kv.incrementBy("i", 1);
		const cur = await kv.get("i");
		eq(await kv.compareAndSwap("i", cur, "x"), true, "value get returned");
	`)
}

// Documented limit: JSON nested deeper than 10,000 levels compares by its
// bytes (the JSON decoder stops there).
func TestAdvCompareDeepNesting(t *testing.T) {
	advRun(t, storeOptions(t, "memory", false, ""), `
		let deep = 1; for (let i = 0; i < 10001; i++) deep = [deep];
		await kv.set("d", {a: 1, b: deep});
		eq(await kv.compareAndSwap("d", {b: deep, a: 1}, 2), false, "too deep to compare as JSON: by bytes");
		eq(await kv.compareAndSwap("d", {a: 1, b: deep}, 2), true, "the same bytes");
	`)
}

// lockTimeout beyond int64 nanoseconds.
func TestAdvLockTimeoutHuge(t *testing.T) {
	for _, v := range []string{"1e13", "1e300", "Number.MAX_VALUE"} {
		c, err := parseOptions(mustJS(t, "({lockTimeout: "+v+"})"))
		if err != nil {
			t.Errorf("%s: %v", v, err)
			continue
		}
		if c.lockTimeoutMs < 1000 {
			t.Errorf("lockTimeout %s: parsed as %d ms", v, c.lockTimeoutMs)
		}
	}
}

func mustJS(t *testing.T, src string) sobek.Value {
	t.Helper()
	v, err := sobek.New().RunString(src)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Keys at the limit, big batches, big values.
func TestAdvLimits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	start := time.Now()
	runAsync(t, newJS(t), fmt.Sprintf(`
		const kv = openKv({path: %q, reserve: "1GiB"});
		const k16 = "k".repeat(16384), k17 = "k".repeat(16385), e16 = "é".repeat(8192), e17 = "é".repeat(8192) + "x";
		eq(await kv.setMany({[k16]: 1, [e16]: 2}), {written: 2}, "16384-byte keys");
		let e = await rejects(kv.setMany({[e17]: 1}), "InvalidOptionsError", "16385 bytes of UTF-8");
		eq(e.errors[0].name, "KeyTooLongError", "errors[]");
		eq((await kv.getMany([k16, k17, e16])).map((r) => r.exists), [true, false, true], "getMany at the limit");
		let p = await kv.scanKeys({limit: 1});
		p = await kv.scanKeys({limit: 1, cursor: p.cursor});
		eq(p.keys.length, 1, "cursor of a 16384-byte key");
		eq(await kv.deleteMany([k16, k17]), {deleted: 1, missing: 1}, "deleteMany at the limit");
		const rec = {};
		for (let i = 0; i < 100000; i++) rec["b:" + i] = i;
		eq(await kv.setMany(rec), {written: 100000}, "100k setMany");
		const keys = Object.keys(rec);
		const got = await kv.getMany(keys);
		eq(got.length, 100000, "100k getMany");
		if (!got.every((r, i) => r.exists && r.value === i)) throw new Error("100k getMany values");
		eq(await kv.count({prefix: "b:"}), 100000, "count");
		eq(await kv.deleteMany(keys), {deleted: 100000, missing: 0}, "100k deleteMany");
		const big = "x".repeat(64 * 1024 * 1024 - 2); // + 2 quotes = 64 MiB
		eq(await kv.setMany({big}), {written: 1}, "64 MiB value");
		eq((await kv.get("big")).length, big.length, "read back");
		e = await rejects(kv.setMany({big2: big + "y", ok: 1}), "InvalidOptionsError", "64 MiB + 1");
		eq(e.errors.map((d) => d.name), ["ValueTooLargeError"], "errors[] names ValueTooLargeError");
		eq(await kv.exists("ok"), false, "nothing written");
	`, path))
	t.Logf("took %v", time.Since(start))
}

// getMany sizes its buffer as keys x (largest value read so far, up to
// 1 KiB): after one 1 KiB read, asking for many absent keys allocates
// ~1 KiB per key.
func TestAdvGetManyBufferAmplification(t *testing.T) {
	rt := newJS(t)
	runAsync(t, rt, `globalThis.kv = openKv(`+storeOptions(t, "memory", false, "")+`);
		await kv.set("v", "x".repeat(2000)); await kv.get("v");
		globalThis.keys = []; for (let i = 0; i < 200000; i++) keys.push("absent:" + i);`)
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	runAsync(t, rt, `eq((await kv.getMany(keys)).length, 200000, "all answered");`)
	runtime.ReadMemStats(&b)
	if d := b.TotalAlloc - a.TotalAlloc; d > 100<<20 {
		t.Errorf("getMany of 200k absent keys allocated %d MiB", d>>20)
	}
}

// A sparse array is exported whole before the first hole is refused.
func TestAdvGetManySparseHugeLength(t *testing.T) {
	rt := newJS(t)
	start := time.Now()
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	runAsync(t, rt, `const kv = openKv(`+storeOptions(t, "memory", false, "")+`);
		const arr = []; arr.length = 2 ** 24;
		await rejects(kv.getMany(arr), "InvalidOptionsError", "holes");`)
	runtime.ReadMemStats(&b)
	if d := b.TotalAlloc - a.TotalAlloc; d > 64<<20 || time.Since(start) > slow*time.Second {
		t.Errorf("getMany of an empty array of length 2^24 allocated %d MiB in %v; length 2^32-1 would need ~128 GiB", d>>20, time.Since(start))
	}
}

// A paged scan of >= 20,000 keys turns the index on: a read-only
// trackKeys:true opener (refused on an untracked store) then succeeds.
func TestAdvAutoIndex(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	runAsync(t, newJS(t), fmt.Sprintf(`
		const kv = openKv({path: %q});
		const rec = {}; for (let i = 0; i < 19999; i++) rec["k" + i] = i;
		await kv.setMany(rec);
		await kv.scan({limit: 10});
		throws(() => openKv({path: %q, trackKeys: true, disk: {readOnly: true}}), "KVOptionsConflictError", "19,999: no index");
		await kv.set("last", 1);
		const p = await kv.scanKeys({limit: 10});
		const ro = openKv({path: %q, trackKeys: true, disk: {readOnly: true}});
		eq(await ro.count(), 20000, "indexed");
		let n = 0, cursor = "";
		for (;;) { const q = await kv.scanKeys({limit: 999, cursor}); n += q.keys.length; if (q.done) break; cursor = q.cursor; }
		eq(n, 20000, "paged all");
		eq((await ro.randomKeys({count: 5})).length, 5, "ro sample");
	`, path, path, path))
}

// randomKeys with replacement on an untracked store, for a prefix that is
// rare or absent: docs say count x randomKey; each miss is a full scan.
func TestAdvRandomKeysRarePrefixUntracked(t *testing.T) {
	count := os.Getenv("ADV_COUNT")
	if count == "" {
		count = "20000"
	}
	rt := newJS(t)
	runAsync(t, rt, `globalThis.kv = openKv(`+storeOptions(t, "memory", false, "")+`);
		const rec = {}; for (let i = 0; i < 19000; i++) rec["k" + i] = i; rec["rare"] = 1;
		await kv.setMany(rec);`)
	for _, c := range []struct{ prefix, want string }{{"rare", `["rare","rare"]`}, {"none", `[]`}} {
		start := time.Now()
		runAsync(t, rt, fmt.Sprintf(`const r = await kv.randomKeys({prefix: %q, count: %s, unique: false});
			eq(r.slice(0, 2), %s, "sample");`, c.prefix, count, c.want))
		if d := time.Since(start); d > slow*time.Second {
			t.Errorf("randomKeys({prefix: %q, count: %s, unique: false}) on 19k untracked keys took %v", c.prefix, count, d)
		}
	}
}

// A NUL byte in the disk path truncates it silently: the store is made at
// the path before the NUL.
func TestAdvDiskPathNUL(t *testing.T) {
	base := t.TempDir()
	runAsync(t, newJS(t), fmt.Sprintf(`throws(() => openKv({path: %q + "/nul\0x.kv"}), "InvalidOptionsError", "NUL in path");`, base))
	if _, err := os.Stat(filepath.Join(base, "nul")); err == nil {
		t.Errorf("a store was created at %s/nul", base)
	}
}

// "a/../b/c.kv" creates folder b (a cleaned path) and then fails to open
// because a does not exist; "trail/" creates a folder and then fails with
// "Is a directory". A failed open should create nothing (or succeed).
func TestAdvDiskPathFoldersOnFailure(t *testing.T) {
	base := t.TempDir()
	rt := newJS(t)
	_ = rt.VU.Runtime().Set("log", func(a ...any) { t.Log(a...) })
	runAsync(t, rt, fmt.Sprintf(`for (const p of ["/a/../b/c.kv", "/trail/"]) {
			try { const kv = openKv({path: %q + p}); await kv.close(); } catch (e) { log(p, e.name, e.message); }
		}`, base))
	for _, d := range []string{"b", "trail"} {
		if _, err := os.Stat(filepath.Join(base, d)); err == nil {
			if _, err := os.Stat(filepath.Join(base, d, "c.kv")); err != nil {
				t.Errorf("failed open left folder %q behind", d)
			}
		}
	}
}

// A bad includeCurrentOnMismatch is noticed before the write: the call
// rejects and the key is as it was.
func TestAdvDetailedBadFlagWrites(t *testing.T) {
	t.Run("swap", func(t *testing.T) {
		advRun(t, storeOptions(t, "memory", false, ""), `
			await kv.set("k", 1);
			await rejects(kv.compareAndSwapDetailed("k", 1, 2, {includeCurrentOnMismatch: "yes"}), "InvalidOptionsError", "non-boolean flag");
			eq(await kv.get("k"), 1, "rejected compareAndSwapDetailed changed nothing");`)
	})
	t.Run("delete", func(t *testing.T) {
		advRun(t, storeOptions(t, "memory", false, ""), `
			await kv.set("k", 1);
			await rejects(kv.compareAndDeleteDetailed("k", 1, {includeCurrentOnMismatch: 1}), "InvalidOptionsError", "non-boolean flag");
			eq(await kv.exists("k"), true, "rejected compareAndDeleteDetailed changed nothing");`)
	})
}

func TestAdvOptionsGetterThrows(t *testing.T) {
	advRun(t, storeOptions(t, "memory", false, ""), `
		const o = {}; Object.defineProperty(o, "prefix", {enumerable: true, get() { throw new Error("boom"); }});
		for (const m of ["scan", "scanKeys", "listKeys", "count", "deleteByPrefix", "randomKeys"]) {
			let p;
			try { p = kv[m](o); } catch (e) { throw new Error(m + " threw synchronously: " + e); }
			await p.then(() => { throw new Error(m + " resolved"); }, () => {});
		}
	`)
}

// A paged scan of a full untracked store of >= 20,000 keys tries to build
// the index (which needs space): the read must not fail for it.
func TestAdvAutoIndexOnFullStore(t *testing.T) {
	rt := newJS(t)
	_ = rt.VU.Runtime().Set("log", func(a ...any) { t.Log(a...) })
	runAsync(t, rt, `const kv = openKv(`+storeOptions(t, "disk", false, `reserve: "2MiB"`)+`);
		let n = 0;
		for (;;) {
			const rec = {}; for (let i = 0; i < 500; i++) rec["k" + (n + i)] = 1;
			try { await kv.setMany(rec); n += 500; } catch (e) { eq(e.name, "StoreFullError", "fill"); break; }
		}
		for (;; n++) { try { await kv.set("k" + n, 1); } catch (e) { break; } }
		log("keys", await kv.size());
		if (await kv.size() < 20000) throw new Error("not enough keys: " + (await kv.size()));
		const p = await kv.scanKeys({limit: 10});
		eq(p.keys.length, 10, "a page of a full store");
	`)
}

func TestAdvScanNULOrderPaging(t *testing.T) {
	for _, track := range []bool{false, true} {
		t.Run(fmt.Sprint(track), func(t *testing.T) {
			advRun(t, storeOptions(t, "disk", track, ""), `
				const want = ["a", "a\0", "a\0\0", "a\0\x01", "a\x01", "a\uFFFD", "a" + String.fromCodePoint(0x10FFFF), "b"];
				await kv.setMany(Object.fromEntries(want.map((k) => [k, k])));
				for (const limit of [1, 2, 3]) {
					let cursor = "", got = [];
					for (;;) { const p = await kv.scan({limit, cursor}); got.push(...p.entries.map((e) => e.key)); if (p.done) break; cursor = p.cursor; }
					eq(got, want, "paged by " + limit);
				}
				eq(await kv.listKeys({prefix: "a\0"}), ["a\0", "a\0\0", "a\0\x01"], "listKeys NUL prefix");
				eq(await kv.count({prefix: "a\0"}), 3, "count NUL prefix");
				eq((await kv.randomKeys({prefix: "a\0", count: 10})).sort(), ["a\0", "a\0\0", "a\0\x01"], "randomKeys NUL prefix");
				eq(await kv.deleteByPrefix({prefix: "a\0", limit: 2}), {deleted: 2, done: false}, "deleteByPrefix NUL");
				eq(await kv.count({prefix: "a"}), 5, "rest");
			`)
		})
	}
}

// randomKeys must be uniform among matching keys (docs), tracked or not,
// with or without replacement, with or without a prefix.
func TestAdvRandomKeysUniform(t *testing.T) {
	for _, track := range []bool{false, true} {
		t.Run(fmt.Sprint(track), func(t *testing.T) {
			rt := newJS(t)
			_ = rt.VU.Runtime().Set("log", func(a ...any) { t.Log(a...) })
			runAsync(t, rt, `const kv = openKv(`+storeOptions(t, "memory", track, "")+`);
				const rec = {};
				for (let i = 0; i < 200; i++) rec["u:" + i] = i;
				for (let i = 0; i < 2000; i++) rec["o:" + i] = i;
				await kv.setMany(rec);
				const cases = [["u:", false, 100000], ["", false, 440000], ["u:", true, 1]];
				for (const [prefix, unique, count] of cases) {
					const freq = {};
					const rounds = unique ? 100000 : 1;
					for (let r = 0; r < rounds; r++) for (const k of await kv.randomKeys({prefix, count, unique})) freq[k] = (freq[k] || 0) + 1;
					const n = prefix ? 200 : 2200, total = rounds * count, exp = total / n;
					let chi = 0;
					for (const k of Object.keys(rec)) if (k.startsWith(prefix)) chi += ((freq[k] || 0) - exp) ** 2 / exp;
					const z = (chi - (n - 1)) / Math.sqrt(2 * (n - 1));
					log(JSON.stringify({prefix, unique, chi: Math.round(chi), df: n - 1, z: z.toFixed(1)}));
					if (z > 6) throw new Error("not uniform: prefix " + JSON.stringify(prefix) + " unique " + unique + ": chi2 " + Math.round(chi) + " for " + (n - 1) + " df");
				}
			`)
		})
	}
}

func TestAdvLoneSurrogatePrefixes(t *testing.T) {
	advRun(t, storeOptions(t, "memory", true, ""), `
		await kv.setMany({"tok\uFFFDa": 1, "x": 2});
		for (const p of ["tok\uD800", "\uDC00", "tok\uDBFF"]) {
			await rejects(kv.scan({prefix: p}), "InvalidOptionsError", "scan " + p);
			await rejects(kv.scanKeys({prefix: p, limit: 1}), "InvalidOptionsError", "scanKeys");
			await rejects(kv.listKeys({prefix: p}), "InvalidOptionsError", "listKeys");
			await rejects(kv.randomKeys({prefix: p, count: 1}), "InvalidOptionsError", "randomKeys");
			await rejects(kv.deleteByPrefix({prefix: p, limit: 5}), "InvalidOptionsError", "deleteByPrefix");
			await rejects(kv.compareAndSwapDetailed(p, 1, 2), "InvalidOptionsError", "casd");
			await rejects(kv.compareAndDeleteDetailed(p, 1), "InvalidOptionsError", "cadd");
		}
		eq(await kv.size(), 2, "nothing deleted");
	`)
}

// A Symbol or a BigInt where a method reads a number, or where the engine
// converts one (an array's length, through a Proxy), rejects the promise;
// it never throws at the call (found by a review: c.number converted
// before it checked).
func TestAdvNumberOptionsSymbolAndBigInt(t *testing.T) {
	rt := newJS(t)
	runAsync(t, rt, `
		const kv = openKv(`+storeOptions(t, "memory", false, "")+`);
		await kv.set("a", 1);
		const calls = {
			"randomKeys count Symbol": [() => kv.randomKeys({count: Symbol("x")}), "InvalidOptionsError"],
			"randomKeys count 5n": [() => kv.randomKeys({count: 5n}), "InvalidOptionsError"],
			"scan limit 5n": [() => kv.scan({limit: 5n}), "InvalidOptionsError"],
			"deleteByPrefix limit Symbol": [() => kv.deleteByPrefix({prefix: "a", limit: Symbol()}), "InvalidOptionsError"],
			"popRandomMany count 1n": [() => kv.popRandomMany({count: 1n}), "InvalidOptionsError"],
			"exportJSONL limit Symbol": [() => kv.exportJSONL({fileName: "/nonexistent/x", limit: Symbol()}), "InvalidOptionsError"],
			"restore maxEntries 1n": [() => kv.restore({fileName: "/nonexistent", maxEntries: 1n}), "InvalidOptionsError"],
		};
		for (const [what, [f, name]] of Object.entries(calls)) {
			let p;
			try { p = f(); } catch (e) { throw new Error(what + ": threw at the call: " + e); }
			await rejects(p, name, what);
		}
		eq(await kv.get("a"), 1, "unchanged");
		// An array too long to encode stops at the value limit (it would
		// be 20 GB of nulls), and a Proxy's Symbol length is refused.
		await rejects(kv.set("x", Object.assign([], {length: 2 ** 32 - 1})), "ValueTooLargeError", "a sparse array of 2^32-1");
		await rejects(kv.set("y", {a: new Proxy([], {get: (t, p) => p === "length" ? Symbol() : t[p]})}), "SerializerError", "a Proxy");
		eq(await kv.exists("x") || await kv.exists("y"), false, "nothing written");`)
	// Wherever else the engine is asked to convert a Symbol (no method is
	// known to do it now), the call rejects with the TypeError.
	rt2 := newJS(t)
	h := &handle{rt: rt2.VU.Runtime()}
	v, thrown := h.run(&call{h: h}, func(*call) sobek.Value {
		return h.rt.ToValue(h.rt.ToValue(sobek.NewSymbol("s")).ToFloat())
	})
	if v != nil || thrown == nil || !strings.Contains(thrown.String(), "TypeError") {
		t.Fatalf("run: %v, thrown %v", v, thrown)
	}
}

// A swap whose old value does not decode (another program wrote it)
// rejects, and leaves that value in place: the rejection means nothing
// changed (found by a review: the new value stayed).
func TestAdvSwapUndecodableOldValue(t *testing.T) {
	name := testMemName(t)
	d, err := openDB(openParams{backend: BackendMemory, where: name, track: trackOff, reserve: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	if err := d.set("bad", []byte("{oops"), KindJSON); err != nil {
		t.Fatal(err)
	}
	runAsync(t, newJS(t), `const kv = openKv({backend: "memory", name: "`+name+`"});
		const e = await rejects(kv.swap("bad", 5), "ValueParseError", "swap");
		if (!e.message.includes("left as it was")) throw new Error(e.message);
		await rejects(kv.get("bad"), "ValueParseError", "the old value is still there");
		eq(await kv.swap("good", 1), {previous: null, loaded: false}, "a swap of a new key");`)
	b, _, err := d.get("bad", nil)
	if err != nil || string(b) != "{oops" {
		t.Fatalf("after the failed swap the store holds %q (%v), want the old bytes", b, err)
	}
}

// An openKv error whose message holds a % is thrown as it is, not
// formatted a second time.
func TestAdvOpenErrorWithPercent(t *testing.T) {
	runAsync(t, newJS(t), `
		let msg = "";
		try { openKv({backend: "memory", name: "bad%dname/x"}); } catch (e) { msg = String(e.message); }
		if (!msg.includes("bad%dname/x") || msg.includes("MISSING")) throw new Error("message: " + msg);`)
}
