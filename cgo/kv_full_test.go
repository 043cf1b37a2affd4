//go:build cgo

package kv

import (
	"fmt"
	"testing"
)

// Batches on a full store (1 MiB reserve): a setMany rejected as full
// changes nothing, the room it briefly took included, and batch deletes
// still work. Ported from the adversarial tests of branch adv; the C side
// is tests/test_batch.c (failed_set_many_keeps_space,
// deletes_work_on_a_full_store).

func fullStores(t *testing.T, f func(t *testing.T, opts string)) {
	for _, b := range []string{"disk", "memory"} {
		for _, track := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/track=%v", b, track), func(t *testing.T) {
				f(t, storeOptions(t, b, track, `reserve: "1MiB"`))
			})
		}
	}
}

const fullJS = `
	async function fill(prefix) {
		let n = 0;
		for (;; n++) { try { await kv.set(prefix + n, "x".repeat(500)); } catch (e) { eq(e.name, "StoreFullError", "fill"); break; } }
		return n;
	}
	const tooBig = {}; for (let i = 0; i < 3000; i++) tooBig["f:" + i] = "x".repeat(500);
`

// setMany/deleteMany/deleteByPrefix against a full store: the setMany
// rejects and writes nothing, the deletes succeed.
func TestFullStoreBatch(t *testing.T) {
	fullStores(t, func(t *testing.T, opts string) {
		runAsync(t, newJS(t), `const kv = openKv(`+opts+`);`+fullJS+`
			await rejects(kv.setMany(tooBig), "StoreFullError", "too much for 1 MiB");
			eq(await kv.size(), 0, "nothing written");
			const n = await fill("s:");
			if (n < 500) throw new Error("only " + n + " values fit");
			const r = await kv.deleteMany(await kv.listKeys({prefix: "s:"}));
			eq(await kv.size(), 0, "deleteMany emptied a full store (" + JSON.stringify(r) + ")");
			const m = await fill("s:");
			eq(await kv.deleteByPrefix({prefix: "s:", limit: 2**53}), {deleted: m, done: true}, "deleteByPrefix on a full store");
			eq(await kv.size(), 0, "emptied");
			await kv.close();`)
	})
}

// The largest deleteMany a full store accepts is all of its keys, with or
// without a failed setMany before the fill.
func TestFullStoreBatchVariants(t *testing.T) {
	for _, failFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("failFirst=%v", failFirst), func(t *testing.T) {
			fullStores(t, func(t *testing.T, opts string) {
				runAsync(t, newJS(t), `const kv = openKv(`+opts+`);`+fullJS+`
					if (`+fmt.Sprint(failFirst)+`) await rejects(kv.setMany(tooBig), "StoreFullError", "too big");
					await fill("s:");
					const keys = await kv.listKeys({prefix: "s:"});
					let ok = 0;
					for (let size = keys.length; size >= 1; size = Math.floor(size / 2)) {
						try { await kv.deleteMany(keys.slice(0, size)); ok = size; break; } catch (e) { eq(e.name, "StoreFullError", "deleteMany " + size); }
					}
					eq(ok, keys.length, "largest deleteMany batch a full store accepts (of " + keys.length + ")");
					await kv.close();`)
			})
		})
	}
}

// A setMany rejected as full leaves the store as it was: the same number
// of values fits afterwards as before.
func TestFullFailedSetManyKeepsSpace(t *testing.T) {
	fullStores(t, func(t *testing.T, opts string) {
		runAsync(t, newJS(t), `const kv = openKv(`+opts+`);`+fullJS+`
			let before = 0;
			for (let r = 0; r < 3; r++) { before = await fill("s:"); await kv.clear(); }
			const fits = [];
			for (let r = 0; r < 3; r++) {
				await rejects(kv.setMany(tooBig), "StoreFullError", "too big");
				fits.push(await fill("s:"));
				await kv.clear();
			}
			eq(fits, [before, before, before], "values that fit after failed setMany calls (before: " + before + ")");
			await kv.close();`)
	})
}
