//go:build cgo

package kv

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.k6.io/k6/v2/js/modulestest"
)

// Adversarial probes of the claim and pop methods.

// A ref or an options object whose getter or Proxy trap throws rejects the
// promise (it does not throw), and nothing is claimed or ended.
func TestAdvClaimThrowingRefs(t *testing.T) {
	claimRun(t, storeOptions(t, "memory", true, ""), `
		await kv.set("a", 1);
		const c = await kv.claimKey("a");
		const boom = {get key() { throw new Error("boom"); }, token: c.token};
		const trap = new Proxy({}, {get() { throw new Error("trap"); }});
		for (const [what, f] of [
			["release, throwing getter", () => kv.releaseClaim(boom)],
			["releaseClaims, throwing getter", () => kv.releaseClaims([c, boom])],
			["complete, proxy", () => kv.completeClaim(trap)],
			["renew, proxy options", () => kv.renewClaim(c, trap)],
			["claimRandom, proxy options", () => kv.claimRandom(trap)],
			["claimKeys, proxy array", () => kv.claimKeys(new Proxy(["a"], {get() { throw new Error("arr"); }}))],
		]) {
			let p;
			try { p = f(); } catch (e) { throw new Error(what + ": threw synchronously: " + e); }
			let rejected = false;
			await p.then(() => {}, () => { rejected = true; });
			if (!rejected) throw new Error(what + ": resolved");
		}
		eq(await kv.claimKey("a"), null, "still held: releaseClaims stopped before releasing anything");
		eq(await kv.releaseClaim(c), true, "the claim is intact");
	`)
}

// Huge counts and arrays are refused at once, before anything is copied or
// claimed.
func TestAdvClaimHugeCounts(t *testing.T) {
	claimRun(t, storeOptions(t, "memory", false, ""), `
		await kv.setMany({a: 1, b: 2});
		const sparse = []; sparse.length = 2 ** 32 - 1;
		const many = new Array(1000001).fill({key: "a", token: 1});
		const t0 = Date.now();
		await rejects(kv.releaseClaims(sparse), "InvalidOptionsError", "sparse refs");
		await rejects(kv.completeClaims(sparse), "InvalidOptionsError", "sparse refs");
		await rejects(kv.renewClaims(sparse), "InvalidOptionsError", "sparse refs");
		await rejects(kv.claimKeys(sparse), "InvalidOptionsError", "sparse keys");
		await rejects(kv.releaseClaims(many), "InvalidOptionsError", "1000001 refs");
		for (const n of [1e9, 2 ** 53, 2 ** 64, -0.5, 1000001]) {
			await rejects(kv.claimRandomMany({count: n}), "InvalidOptionsError", "count " + n);
			await rejects(kv.popRandomMany({count: n}), "InvalidOptionsError", "count " + n);
		}
		if (Date.now() - t0 > 2000) throw new Error("refusing took " + (Date.now() - t0) + " ms");
		eq(await kv.size(), 2, "nothing popped");
		eq((await kv.stats()).claims, {live: 0, expired: 0}, "nothing claimed");
		// The largest count is fine, and stops at what there is.
		eq((await kv.claimRandomMany({count: 1000000})).length, 2, "count 1000000 of 2 keys");
		const r = await kv.releaseClaims(new Array(100001).fill({key: "a", token: 1}));
		eq([r.attempted, r.released, r.failed.length], [100001, 0, 100001], "more refs than the 100,000 of earlier versions");
	`)
}

// Keys and refs of the wrong type; lone surrogates; String objects.
func TestAdvClaimWrongTypes(t *testing.T) {
	claimRun(t, storeOptions(t, "disk", true, ""), `
		await kv.set("a", 1);
		for (const keys of [[1], [null], [{}], [new String("a")], ["a", undefined], ["a\uDC00"]]) {
			await rejects(kv.claimKeys(keys), "InvalidOptionsError", "claimKeys " + String(keys));
		}
		for (const key of [1, null, undefined, {}, new String("a"), ["a"]]) {
			await rejects(kv.claimKey(key), "InvalidOptionsError", "claimKey " + String(key));
		}
		for (const ref of [{key: new String("a"), token: 1}, {key: "a", token: new Number(1)}, {key: "a\uD800", token: 1},
			{key: "a", token: true}, {key: "a", token: Infinity}, {key: "a", token: [1]}, {key: "a", token: Symbol("t")}, new Date(), () => 1, Symbol("x")]) {
			await rejects(kv.releaseClaim(ref), "InvalidOptionsError", "ref " + String(ref && ref.key));
		}
		await rejects(kv.claimRandom({owner: "o\uD800"}), "InvalidOptionsError", "owner with a lone surrogate");
		await rejects(kv.claimRandom({ttl: Symbol("t")}), "InvalidOptionsError", "ttl a symbol");
		await rejects(kv.claimRandom({prefix: "\uDFFF"}), "InvalidOptionsError", "prefix with a lone surrogate");
		const c = await kv.claimKey("a", {owner: "é".repeat(128)});
		eq(c.owner.length, 128, "256 bytes of owner");
		eq(await kv.releaseClaim({key: "a", token: 2 ** 53 - 1}), false, "the largest token: well formed, not live");
		eq(await kv.releaseClaim({key: "a", token: c.token, id: undefined}), true, "id undefined counts as absent");
	`)
}

// A ref from another store names no claim there: each store starts its
// tokens at its own random point (see docs/api.md), so two stores' first
// tokens differ but for a one-in-a-million chance.
func TestAdvClaimRefFromAnotherStore(t *testing.T) {
	rt := newJS(t)
	runAsync(t, rt, `
		const a = openKv(`+storeOptions(t, "memory", true, "")+`), b = openKv(`+storeOptions(t, "disk", false, "")+`);
		await a.setMany({k: "in a", x: 1});
		await b.setMany({k: "in b"});
		await a.claimKey("x");
		const ca = await a.claimKey("k");
		const cb = await b.claimKey("k");
		eq([ca.entry.value, cb.entry.value], ["in a", "in b"], "each store's value");
		if (ca.token === cb.token) throw new Error("two stores issued the same token " + ca.token);
		if (!Number.isSafeInteger(ca.token) || !Number.isSafeInteger(cb.token)) throw new Error("tokens past 2^53");
		eq(await b.releaseClaim(ca), false, "a's ref on b");
		eq(await b.completeClaim(ca), false, "a's ref on b");
		eq(await b.renewClaim(ca), false, "a's ref on b");
		eq(await b.exists("k"), true, "b's key kept");
		eq(await a.completeClaim(ca), true, "a completes its own");
		eq(await b.completeClaim(cb), true, "b completes its own");
		eq([await a.exists("k"), await b.exists("k")], [false, false], "each deleted by its own claim");
	`)
}

// With a lease shorter than the time one call takes, claimRandomMany may
// claim a key twice (its first lease ran out): the key is returned once,
// with its latest claim, the live one.
func TestAdvClaimRandomManyShortLease(t *testing.T) {
	claimRun(t, storeOptions(t, "memory", true, ""), `
		await kv.setMany({a: 1, b: 2, c: 3});
		for (let round = 0; round < 20; round++) {
			const got = await kv.claimRandomMany({count: 3000, ttl: 1});
			const keys = got.map((c) => c.key);
			eq(new Set(keys).size, keys.length, "distinct keys, round " + round);
			if (keys.length < 1 || keys.length > 3) throw new Error("got " + keys.length);
			await sleep(3);
		}
	`)
}

// A stored value that does not decode: the claim is released and the pop
// put back, then the call rejects with ValueParseError naming the key.
func TestAdvClaimUndecodableValue(t *testing.T) {
	name := testMemName(t)
	d, err := openDB(openParams{backend: BackendMemory, where: name, track: trackOn, reserve: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d.close() }()
	if err := d.set("bad", []byte("{not json"), KindJSON); err != nil {
		t.Fatal(err)
	}
	claimRun(t, fmt.Sprintf(`{backend: "memory", name: %q}`, name), `
		let e = await rejects(kv.claimKey("bad"), "ValueParseError", "claimKey");
		if (!e.message.includes('"bad"')) throw new Error(e.message);
		eq((await kv.stats()).claims, {live: 0, expired: 0}, "claimKey: released again");
		await rejects(kv.claimRandom(), "ValueParseError", "claimRandom");
		await rejects(kv.claimKeys(["bad"]), "ValueParseError", "claimKeys");
		await rejects(kv.claimRandomMany({count: 2}), "ValueParseError", "claimRandomMany");
		eq((await kv.stats()).claims, {live: 0, expired: 0}, "released again");
		await rejects(kv.popRandom(), "ValueParseError", "popRandom");
		eq(await kv.exists("bad"), true, "popRandom: put back");
		// and so does every read that decodes it; those over many keys name it
		for (const [what, call, names] of [["get", () => kv.get("bad"), false], ["getOrSet", () => kv.getOrSet("bad", 1), false],
			["list", () => kv.list(), true], ["getMany", () => kv.getMany(["bad"]), true], ["scan", () => kv.scan({limit: 1}), true]]) {
			e = await rejects(call(), "ValueParseError", what);
			if (names && !e.message.includes('"bad"')) throw new Error(what + " does not name the key: " + e.message);
		}
		eq(await kv.exists("bad"), true, "reads changed nothing");
		await kv.set("good", 1);
		await rejects(kv.popRandomMany({count: 5}), "ValueParseError", "popRandomMany");
		eq(await kv.listKeys(), ["bad", "good"], "popRandomMany: every entry put back");
		await kv.delete("bad");
		eq(await kv.popRandomMany({count: 5}), [{key: "good", value: 1}], "the rest pops");
	`)
}

// VUs racing for one pool: with long leases every key is claimed by one VU
// exactly once, and every key popped by one VU exactly once.
func TestAdvClaimRace(t *testing.T) {
	for _, track := range []bool{false, true} {
		t.Run(fmt.Sprintf("track=%v", track), func(t *testing.T) {
			opts := storeOptions(t, "memory", track, "")
			const n, vus = 400, 4
			seed := newJS(t)
			runAsync(t, seed, `globalThis.kv = openKv(`+opts+`); const m = {}; for (let i = 0; i < `+itoa(n)+`; i++) m["c:" + i] = i, m["p:" + i] = i; await kv.setMany(m);`)
			rts := make([]*modulestest.Runtime, vus)
			for i := range rts {
				rts[i] = newJS(t)
			}
			var wg sync.WaitGroup
			errs := make([]error, vus)
			for i, rt := range rts {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = runAsyncErr(rt, claimPrelude+`const kv = openKv(`+opts+`);
						const claimed = [], popped = [];
						for (;;) {
							const c = (await kv.claimRandomMany({prefix: "c:", count: 3, ttl: 60000})).concat(await kv.claimRandom({prefix: "c:", ttl: 60000}) || []);
							const p = await kv.popRandom({prefix: "p:"});
							if (p) { if (p.value !== Number(p.key.slice(2))) throw new Error("popped value " + JSON.stringify(p)); popped.push(p.key); }
							for (const x of c) { if (x.entry.value !== Number(x.key.slice(2))) throw new Error("claimed value"); claimed.push(x.key); }
							if (c.length === 0 && !p) break;
						}
						globalThis.out = JSON.stringify({claimed, popped});`)
				}()
			}
			wg.Wait()
			claimed, popped := map[string]int{}, map[string]int{}
			for i, rt := range rts {
				if errs[i] != nil {
					t.Fatal(errs[i])
				}
				var got struct{ Claimed, Popped []string }
				if err := json.Unmarshal([]byte(rt.VU.Runtime().Get("out").String()), &got); err != nil {
					t.Fatal(err)
				}
				for _, k := range got.Claimed {
					claimed[k]++
				}
				for _, k := range got.Popped {
					popped[k]++
				}
			}
			for i := 0; i < n; i++ {
				if c, p := claimed["c:"+itoa(int64(i))], popped["p:"+itoa(int64(i))]; c != 1 || p != 1 {
					t.Errorf("key %d claimed %d times, popped %d times", i, c, p)
				}
			}
			runAsync(t, seed, `eq((await kv.stats()).claims, {live: `+itoa(n)+`, expired: 0}, "every c: key held"); eq(await kv.count({prefix: "p:"}), 0, "every p: key popped");`)
		})
	}
}

// Every claim method is declared in index.d.ts and documented in api.md.
func TestAdvClaimMethodsDocumented(t *testing.T) {
	dts, err := os.ReadFile("index.d.ts")
	if err != nil {
		t.Fatal(err)
	}
	api, err := os.ReadFile(filepath.Join("..", "docs", "api.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"popRandom", "popRandomMany", "claimRandom", "claimRandomMany", "claimKey", "claimKeys",
		"releaseClaim", "releaseClaims", "completeClaim", "completeClaims", "renewClaim", "renewClaims"} {
		if _, ok := methods[m]; !ok {
			t.Errorf("%s: not in the methods table", m)
		}
		if !strings.Contains(string(dts), "    "+m+"(") && !strings.Contains(string(dts), "    "+m+"<") {
			t.Errorf("%s: not declared in index.d.ts", m)
		}
		if !strings.Contains(string(api), "| `"+m+"(") {
			t.Errorf("%s: no row in docs/api.md", m)
		}
	}
}

// endFailsAt is a store whose n-th claim end fails (as a lock timeout
// would), the ones before it done.
type endFailsAt struct {
	*db
	n int
}

func (s *endFailsAt) endClaim(key string, token uint64, complete, deleteKey bool) (bool, error) {
	if s.n--; s.n == 0 {
		return false, errors.New("end failed (injected)")
	}
	return s.db.endClaim(key, token, complete, deleteKey)
}

// A batch of ends that fails part way rejects, and says how many refs it
// ended before: those stay ended (xk6-kv's messages say the same).
func TestAdvClaimBatchFailsPartWay(t *testing.T) {
	rt := newJS(t)
	runAsync(t, rt, claimPrelude+`globalThis.kv = openKv(`+storeOptions(t, "memory", true, "")+`);
		await kv.setMany({a: 1, b: 2, c: 3});
		globalThis.cs = (await kv.claimKeys(["a", "b", "c"])).claimed;`)
	wrapStore(rt, func(s backendStore) backendStore { return &endFailsAt{s.(*db), 3} })
	runAsync(t, rt, `const e = await rejects(kv.completeClaims(cs), "StoreError", "the third end fails");
		if (!e.message.includes("2 of 3 refs were completed before it")) throw new Error(e.message);
		eq(await kv.listKeys(), ["c"], "the first two completed (deleted)");`)
}
