//go:build cgo

package kv

import (
	"errors"
	"strings"
	"testing"
)

// eachStoreJS runs body (JS, with kv open) on both backends, tracked and not.
func eachStoreJS(t *testing.T, body string) {
	eachStore(t, func(t *testing.T, opts string) {
		runAsync(t, newJS(t), `const kv = openKv(`+opts+`);`+body)
	})
}

func TestJSGetSetDeleteMany(t *testing.T) {
	eachStoreJS(t, `
		eq(await kv.setMany({b: {n: 2}, a: 1, c: null, "u:1": "x"}), {written: 4}, "setMany");
		eq(await kv.getMany(["a", "zz", "b", "c", "", "a"]), [
			{key: "a", exists: true, value: 1},
			{key: "zz", exists: false, value: null},
			{key: "b", exists: true, value: {n: 2}},
			{key: "c", exists: true, value: null},
			{key: "", exists: false, value: null},
			{key: "a", exists: true, value: 1},
		], "getMany");
		eq(await kv.getMany([]), [], "getMany of nothing");
		eq(await kv.deleteMany(["a", "a", "nope", "c"]), {deleted: 2, missing: 2}, "deleteMany");
		eq(await kv.size(), 2, "size");
		await rejects(kv.getMany("a"), "InvalidOptionsError", "getMany of a string");
		await rejects(kv.getMany(["a", 1]), "InvalidOptionsError", "getMany with a number");

		// Validated whole: nothing is written when one entry is bad.
		let e = await rejects(kv.setMany({ok: 1, "": 2}), "InvalidOptionsError", "empty key");
		eq(e.errors.map((d) => d.name), ["EmptyKey"], "errors[]");
		e = await rejects(kv.setMany({ok: 1, f: () => 1, g: 10n}), "InvalidOptionsError", "unserializable");
		eq(e.errors.map((d) => [d.key, d.name]), [["f", "SerializerError"], ["g", "SerializerError"]], "errors[] keys");
		// errors[] in key order, whatever the record's order.
		e = await rejects(kv.setMany({zz: NaN, ok: 1, "": 2, aa: () => 1, m: 10n}), "InvalidOptionsError", "three bad");
		eq(e.errors.map((d) => d.key), ["", "aa", "m", "zz"], "errors[] in key order");
		eq(await kv.exists("ok"), false, "nothing written");
		e = await rejects(kv.setMany({ok: 1, ["k".repeat(16385)]: 1}), "InvalidOptionsError", "key too long");
		eq(e.errors[0].name, "KeyTooLongError", "too long");
		await rejects(kv.setMany([1, 2]), "InvalidOptionsError", "an array");
		await rejects(kv.setMany(null), "InvalidOptionsError", "null");
		eq(await kv.exists("ok"), false, "nothing written");
		e = await rejects(kv.deleteMany(["b", ""]), "InvalidOptionsError", "deleteMany empty key");
		eq(e.errors[0].name, "EmptyKey", "deleteMany errors[]");
		eq(await kv.exists("b"), true, "nothing deleted");
	`)
}

func TestJSDeleteByPrefix(t *testing.T) {
	eachStoreJS(t, `
		const rec = {};
		for (let i = 0; i < 25; i++) rec["job:" + String(i).padStart(2, "0")] = i;
		rec["other"] = 1;
		await kv.setMany(rec);
		eq(await kv.deleteByPrefix({prefix: "job:", limit: 10}), {deleted: 10, done: false}, "first 10");
		eq(await kv.count({prefix: "job:"}), 15, "15 left");
		if ((await kv.stats()).trackKeys)
			eq(await kv.listKeys({prefix: "job:", limit: 1}), ["job:10"], "with trackKeys the first 10 in key order went");
		eq(await kv.deleteByPrefix({prefix: "job:", limit: 15}), {deleted: 15, done: true}, "the rest, exactly");
		eq(await kv.deleteByPrefix({prefix: "job:", limit: 5}), {deleted: 0, done: true}, "nothing left");
		eq(await kv.size(), 1, "other stays");
		await rejects(kv.deleteByPrefix({prefix: "", limit: 1}), "InvalidOptionsError", "empty prefix");
		await rejects(kv.deleteByPrefix({prefix: "x"}), "InvalidOptionsError", "no limit");
		await rejects(kv.deleteByPrefix({prefix: "x", limit: 0}), "InvalidOptionsError", "limit 0");
		await rejects(kv.deleteByPrefix({prefix: "x", limit: 1.5}), "InvalidOptionsError", "limit 1.5");
		await rejects(kv.deleteByPrefix(), "InvalidOptionsError", "no options");
	`)
}

func TestJSScanCountSample(t *testing.T) {
	eachStoreJS(t, `
		const rec = {};
		for (let i = 0; i < 10; i++) rec["k" + i] = {i};
		rec["z"] = 0;
		await kv.setMany(rec);
		// Pages of 3 return every key once, in order.
		let cursor = "", keys = [], pages = 0;
		for (;;) {
			const p = await kv.scan({prefix: "k", limit: 3, cursor});
			pages++;
			keys.push(...p.entries.map((e) => e.key));
			for (const e of p.entries) eq(e.value, {i: Number(e.key.slice(1))}, "value of " + e.key);
			if (p.done) { eq(p.cursor, "", "last cursor"); break; }
			cursor = p.cursor;
		}
		eq(keys, ["k0","k1","k2","k3","k4","k5","k6","k7","k8","k9"], "scan");
		eq(pages, 4, "pages");
		const all = await kv.scan({prefix: "k"});
		eq([all.entries.length, all.done, all.cursor], [10, true, ""], "no limit: one page");
		for (const l of [0, -3]) eq((await kv.scan({prefix: "k", limit: l})).entries.length, 10, "limit " + l + ": one page");
		for (const l of [2.5, -Infinity, Infinity, NaN, "5"]) await rejects(kv.scan({limit: l}), "InvalidOptionsError", "scan limit " + l);
		eq((await kv.scan({limit: -1e300})).done, true, "any negative limit: one page of all");
		const sk = await kv.scanKeys({limit: 10});
		eq([sk.keys.length, sk.done], [10, false], "scanKeys page");
		eq((await kv.scanKeys({cursor: sk.cursor})).keys, ["z"], "scanKeys rest");
		eq(await kv.listKeys({prefix: "k", limit: 2}), ["k0", "k1"], "listKeys");
		eq((await kv.listKeys()).length, 11, "listKeys all");
		await rejects(kv.scan({cursor: "garbage"}), "InvalidCursorError", "bad cursor");
		await rejects(kv.scan({cursor: "c1.@@"}), "InvalidCursorError", "bad base64");
		await rejects(kv.scan({limt: 1}), "InvalidOptionsError", "unknown option");

		eq(await kv.count(), 11, "count");
		eq(await kv.count({prefix: "k"}), 10, "count prefix");
		eq(await kv.count({prefix: "nope"}), 0, "count none");

		let r = await kv.randomKeys({prefix: "k", count: 4});
		eq(new Set(r).size, 4, "unique by default");
		for (const k of r) if (!k.startsWith("k")) throw new Error("prefix: " + k);
		r = await kv.randomKeys({prefix: "k", count: 50});
		eq(r.slice().sort(), keys, "all matches when count exceeds them");
		r = await kv.randomKeys({prefix: "k", count: 30, unique: false});
		eq(r.length, 30, "with replacement");
		eq(await kv.randomKeys({prefix: "none", count: 3}), [], "no match");
		await rejects(kv.randomKeys({count: 0}), "InvalidOptionsError", "count 0");
		await rejects(kv.randomKeys({count: 1000001}), "InvalidOptionsError", "count over the limit");
		await rejects(kv.randomKeys({}), "InvalidOptionsError", "no count");
	`)
}

func TestJSCompareDetailed(t *testing.T) {
	eachStoreJS(t, `
		await kv.set("obj", {a: 1, b: [1, 2], c: {d: "x"}});
		// JSON compared as JSON: key order does not matter, array order does.
		eq(await kv.compareAndSwap("obj", {c: {d: "x"}, b: [1, 2], a: 1}, {v: 2}), true, "reordered keys match");
		eq(await kv.get("obj"), {v: 2}, "swapped");
		eq(await kv.compareAndSwap("obj", {v: 2.0}, {v: 3}), true, "2 and 2.0 are one number");
		eq(await kv.compareAndDelete("obj", {v: [1]}), false, "different value");
		eq(await kv.compareAndSwapDetailed("obj", {v: 3}, {v: 4}), {swapped: true, reason: "swapped"}, "detailed swap");
		eq(await kv.compareAndSwapDetailed("obj", {v: 0}, {v: 5}),
			{swapped: false, reason: "mismatch", existed: true}, "mismatch, no current");
		eq(await kv.compareAndSwapDetailed("obj", {v: 0}, {v: 5}, {includeCurrentOnMismatch: true}),
			{swapped: false, reason: "mismatch", existed: true, current: {v: 4}}, "mismatch with current");
		eq(await kv.compareAndSwapDetailed("missing", 1, 2, {includeCurrentOnMismatch: true}),
			{swapped: false, reason: "mismatch", existed: false}, "absent key");
		eq(await kv.compareAndSwapDetailed("fresh", null, 1), {swapped: true, reason: "swapped"}, "null: only if absent");
		eq(await kv.compareAndSwapDetailed("fresh", null, 2, {includeCurrentOnMismatch: true}),
			{swapped: false, reason: "mismatch", existed: true, current: 1}, "null but present");
		eq(await kv.compareAndDeleteDetailed("obj", {v: 1}, {includeCurrentOnMismatch: true}),
			{deleted: false, reason: "mismatch", existed: true, current: {v: 4}}, "delete mismatch");
		eq(await kv.compareAndDeleteDetailed("obj", {v: 4}), {deleted: true, reason: "deleted"}, "delete");
		eq(await kv.compareAndDeleteDetailed("obj", {v: 4}), {deleted: false, reason: "mismatch", existed: false}, "gone");
		await kv.set("n", null);
		eq(await kv.compareAndDeleteDetailed("n", null), {deleted: true, reason: "deleted"}, "null is a value for delete");
		await rejects(kv.compareAndSwapDetailed("k", 1, 2, {includeCurrent: true}), "InvalidOptionsError", "unknown option");
		eq(await kv.exists("k"), false, "nothing written on a bad option");
	`)
}

// Paging through a large store without the key index turns the index on
// (once, for the store): pages then cost O(log n + page) instead of a pass
// over the store each, and every key still comes back once, in order.
func TestJSPagedScanTurnsIndexOn(t *testing.T) {
	eachUntracked(t, func(t *testing.T, backend, opts string) {
		rt := newJS(t)
		runAsync(t, rt, `globalThis.kv = openKv(`+opts+`);
			for (let b = 0; b < 25; b++) {
				const rec = {};
				for (let i = 0; i < 1000; i++) rec["u:" + String(b * 1000 + i).padStart(6, "0")] = i;
				await kv.setMany(rec);
			}`)
		d, err := openDB(openParams{backend: map[string]Backend{"memory": BackendMemory, "disk": BackendDisk}[backend],
			where: extractWhere(opts)})
		if err != nil {
			t.Fatal(err)
		}
		defer d.close()
		if info, _ := d.stat(); info.TrackKeys {
			t.Fatal("tracked before any scan")
		}
		runAsync(t, rt, `
			let cursor = "", n = 0, last = "";
			for (;;) {
				const p = await kv.scanKeys({prefix: "u:", limit: 1000, cursor});
				for (const k of p.keys) { if (k <= last) throw new Error("order at " + k); last = k; n++; }
				if (p.done) break;
				cursor = p.cursor;
			}
			eq(n, 25000, "every key once");`)
		if info, _ := d.stat(); !info.TrackKeys {
			t.Fatal("a paged scan of 25,000 keys left the store without its index")
		}
	})
}

// extractWhere pulls the name or path out of storeOptions' JS text.
func extractWhere(opts string) string {
	for _, field := range []string{`name: "`, `path: "`} {
		if i := strings.Index(opts, field); i >= 0 {
			rest := opts[i+len(field):]
			return rest[:strings.Index(rest, `"`)]
		}
	}
	return ""
}

// countFails is a store whose count fails (as a lock timeout would), for
// the calls that count after they wrote.
type countFails struct{ backendStore }

func (countFails) count(string) (uint64, error) { return 0, errors.New("count failed (injected)") }

// deleteByPrefix deletes, then counts what is left: a count that fails
// must not turn the deletes into a rejection that says nothing changed.
func TestJSDeleteByPrefixCountFailsAfterDeletes(t *testing.T) {
	rt := newJS(t)
	runAsync(t, rt, `globalThis.kv = openKv(`+storeOptions(t, "memory", true, "")+`);
		await kv.setMany({"p:1": 1, "p:2": 2, "p:3": 3});`)
	wrapStore(rt, func(s backendStore) backendStore { return countFails{s} })
	runAsync(t, rt, `eq(await kv.deleteByPrefix({prefix: "p:", limit: 2}), {deleted: 2, done: false}, "deleted, done unknown");
		eq(await kv.listKeys(), ["p:3"], "two deleted");`)
}
