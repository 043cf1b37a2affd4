//go:build cgo

package kv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// claimPrelude: helpers for the claim tests. sleep waits on the event loop;
// isClaim checks a Claim's shape against the key, value, owner and ttl it
// was asked with.
const claimPrelude = `
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function isClaim(c, key, value, owner, ttl, before, what) {
	if (c === null || typeof c !== "object") throw new Error(what + ": not a claim: " + JSON.stringify(c));
	const want = owner === undefined ? ["id", "key", "token", "expiresAt", "entry"] : ["id", "key", "token", "owner", "expiresAt", "entry"];
	eq(Object.keys(c), want, what + " fields");
	eq([c.key, c.entry, c.owner], [key, {key, value}, owner], what + " key, entry, owner");
	if (typeof c.token !== "number" || !Number.isSafeInteger(c.token) || c.token < 1) throw new Error(what + ": token " + c.token);
	eq(c.id, String(c.token), what + " id");
	const now = Date.now();
	if (!(c.expiresAt >= before + ttl - 50 && c.expiresAt <= now + ttl + 50)) throw new Error(what + ": expiresAt " + c.expiresAt + " for ttl " + ttl + " at " + now);
	return c;
}
`

func claimRun(t *testing.T, opts, body string) {
	t.Helper()
	runAsync(t, newJS(t), claimPrelude+`const kv = openKv(`+opts+`);`+body)
}

func TestJSClaimKey(t *testing.T) {
	eachStore(t, func(t *testing.T, opts string) {
		claimRun(t, opts, `
			await kv.setMany({"u:1": {n: 1}, "u:2": "two", "u:3": null});
			let t0 = Date.now();
			const a = isClaim(await kv.claimKey("u:1"), "u:1", {n: 1}, undefined, 30000, t0, "claimKey default");
			eq(await kv.claimKey("u:1"), null, "claimKey of a held key");
			eq(await kv.claimKey("u:1", {owner: "other", ttl: 10}), null, "held, whatever the options");
			eq(await kv.claimKey("nope"), null, "claimKey of a missing key");
			t0 = Date.now();
			const b = isClaim(await kv.claimKey("u:2", {owner: "vu-7", ttl: 5000}), "u:2", "two", "vu-7", 5000, t0, "claimKey with owner");
			if (!(b.token > a.token)) throw new Error("tokens grow: " + a.token + " then " + b.token);
			isClaim(await kv.claimKey("u:3", {owner: ""}), "u:3", null, "", 30000, t0, "stored null, empty owner");
			eq(await kv.get("u:1"), {n: 1}, "a claimed key reads as any other");
			await kv.set("u:1", {n: 11});
			eq(await kv.claimKey("u:1"), null, "a set keeps the claim");

			eq(await kv.releaseClaim(a), true, "release");
			eq(await kv.releaseClaim(a), false, "release again");
			eq(await kv.completeClaim(a), false, "complete after release");
			eq(await kv.renewClaim(a), false, "renew after release");
			const a2 = await kv.claimKey("u:1");
			eq(a2.entry.value, {n: 11}, "claimed again, with the value set meanwhile");
			if (!(a2.token > b.token)) throw new Error("a new claim has a new, larger token");
			eq(await kv.releaseClaim({key: "u:1", token: a.token}), false, "the old token stays stale");
			eq(await kv.releaseClaim({id: a2.id, key: a2.key, token: a2.token}), true, "a bare ClaimRef");

			await rejects(kv.claimKey(""), "InvalidOptionsError", "empty key");
			await rejects(kv.claimKey("k".repeat(16385)), "KeyTooLongError", "long key");
			await rejects(kv.claimKey(1), "InvalidOptionsError", "key not a string");
			await rejects(kv.claimKey("u\uD800"), "InvalidOptionsError", "lone surrogate");
		`)
	})
}

// Claimed keys are passed by claimRandom and popRandom until released,
// completed or expired.
func TestJSClaimRandomExclusion(t *testing.T) {
	eachStore(t, func(t *testing.T, opts string) {
		claimRun(t, opts, `
			await kv.setMany({"p:1": 1, "p:2": 2, "p:3": 3, "q:1": "other"});
			const held = [];
			for (let i = 0; i < 3; i++) {
				const t0 = Date.now();
				const c = await kv.claimRandom({prefix: "p:", owner: "w", ttl: 10000});
				isClaim(c, c.key, Number(c.key.slice(2)), "w", 10000, t0, "claimRandom " + i);
				held.push(c);
			}
			eq(held.map((c) => c.key).sort(), ["p:1", "p:2", "p:3"], "every key once");
			eq(await kv.claimRandom({prefix: "p:"}), null, "all held: claimRandom");
			eq(await kv.popRandom({prefix: "p:"}), null, "all held: popRandom");
			eq(await kv.claimRandomMany({prefix: "p:", count: 5}), [], "all held: claimRandomMany");
			eq(await kv.popRandomMany({prefix: "p:", count: 5}), [], "all held: popRandomMany");
			eq(await kv.size(), 4, "nothing popped");
			eq(await kv.claimRandom({prefix: "zzz"}), null, "no such prefix");

			// released: claimable again
			eq(await kv.releaseClaim(held[0]), true, "release");
			const again = await kv.claimRandom({prefix: "p:"});
			eq(again.key, held[0].key, "the released key is the one claimable");
			// completed, key kept: claimable again
			eq(await kv.completeClaim(again, {deleteKey: false}), true, "complete, keep the key");
			eq(await kv.exists(again.key), true, "kept");
			eq((await kv.popRandom({prefix: "p:"})).key, again.key, "kept, and poppable");
			eq(await kv.exists(again.key), false, "popped");
			// completed (deleteKey defaults to true): gone
			eq(await kv.completeClaim(held[1]), true, "complete");
			eq(await kv.exists(held[1].key), false, "deleted with its claim");
			eq(await kv.completeClaim(held[1]), false, "complete again");
			eq(await kv.claimRandom({prefix: "p:"}), null, "p:* all gone or held");
			// expired: claimable again, and the old token is stale
			const t1 = Date.now();
			const short = await kv.claimRandom({prefix: "q:", ttl: 300});
			const second = await kv.claimRandom({prefix: "q:"});
			if (second !== null) {
				// only a stall past the 300 ms lease lets a second claim in
				if (Date.now() - t1 < 300) throw new Error("held for now, yet claimed again: " + JSON.stringify(second));
				await kv.releaseClaim(second);
			}
			await sleep(Math.max(0, short.expiresAt - Date.now()) + 30);
			const taken = await kv.claimRandom({prefix: "q:", owner: "next"});
			eq([taken.key, taken.owner], ["q:1", "next"], "claimable once the lease ran out");
			if (!(taken.token > short.token)) throw new Error("take-over token grows");
			eq(await kv.releaseClaim(short), false, "stale after take-over: release");
			eq(await kv.completeClaim(short), false, "stale after take-over: complete");
			eq(await kv.renewClaim(short), false, "stale after take-over: renew");
			eq(await kv.exists("q:1"), true, "a stale complete deletes nothing");
			eq(await kv.completeClaim(taken), true, "the holder completes");
			eq(await kv.exists("q:1"), false, "and deletes");
			eq(await kv.releaseClaim(held[2]), true, "last release");
			eq(await kv.size(), 1, "one key left");
		`)
	})
}

// A lease that runs out without a take-over: the token is stale all the
// same, and a renewal extends a lease past its first end.
func TestJSClaimExpiryAndRenew(t *testing.T) {
	eachStore(t, func(t *testing.T, opts string) {
		claimRun(t, opts, `
			await kv.setMany({a: 1, b: 2});
			const a = await kv.claimKey("a", {ttl: 50});
			await sleep(100);
			eq(await kv.renewClaim(a, {ttl: 1000}), false, "renew after expiry");
			eq(await kv.releaseClaim(a), false, "release after expiry");
			eq(await kv.completeClaim(a), false, "complete after expiry");
			eq(await kv.exists("a"), true, "kept");

			const b = await kv.claimKey("b", {ttl: 400, owner: "o"});
			eq(await kv.renewClaim(b, {ttl: 3000}), true, "renew");
			await sleep(Math.max(0, b.expiresAt - Date.now()) + 50);
			eq(await kv.claimKey("b"), null, "still held past the first end");
			eq(await kv.renewClaim(b), true, "renew without ttl (the default, 30 s)");
			const r = await kv.renewClaims([b, a, {key: "b", token: b.token + 1000}], {ttl: 500});
			eq([r.attempted, r.renewed, r.failed.map((f) => [f.index, f.key, f.id, f.name])],
				[3, 1, [[1, "a", a.id, "ClaimNotUpdated"], [2, "b", String(b.token + 1000), "ClaimNotUpdated"]]], "renewClaims");
			eq(Object.keys(r), ["attempted", "renewed", "failed"], "renewClaims shape");
			eq(Object.keys(r.failed[0]), ["index", "id", "key", "name", "message"], "failure shape");
			if (!/names no live claim/.test(r.failed[0].message)) throw new Error("failure message: " + r.failed[0].message);
			// The renewal set the lease to 500 ms from then (from the 30 s
			// before it): the key is free again after that.
			await sleep(600);
			const b2 = await kv.claimKey("b");
			eq(b2 !== null && b2.token > b.token, true, "free once the renewed lease ran out");
			eq(await kv.releaseClaim(b), false, "b's old ref is stale");
			eq(await kv.releaseClaim(b2), true, "the new holder releases");
		`)
	})
}

func TestJSClaimKeys(t *testing.T) {
	eachStore(t, func(t *testing.T, opts string) {
		claimRun(t, opts, `
			await kv.setMany({a: "A", b: "B", c: "C", d: "D"});
			const t0 = Date.now();
			let res = await kv.claimKeys(["a", "missing", "b"], {owner: "me", ttl: 4000});
			eq(Object.keys(res), ["claimed", "busy", "missing"], "claimKeys shape");
			let got = res.claimed;
			eq(got.map((c) => [c.key, c.entry.value, c.owner]), [["a", "A", "me"], ["b", "B", "me"]], "the keys that could be claimed");
			eq([res.busy, res.missing], [[], ["missing"]], "missing");
			for (const c of got) isClaim(c, c.key, c.entry.value, "me", 4000, t0, "claimKeys");
			eq(new Set(got.map((c) => c.token)).size, 2, "a token each");
			eq(await kv.claimKeys(["c", "a", "gone", "b"]).then((r) => [r.claimed.map((c) => c.key), r.busy, r.missing]),
				[["c"], ["a", "b"], ["gone"]], "busy: held by a live claim");

			// allOrNothing: the first key that cannot be claimed stops the call,
			// and the keys taken before it are released
			eq((await kv.claimKeys(["c"])).busy, ["c"], "c is held by the call before");
			eq(await kv.claimKeys(["d", "b", "missing"], {allOrNothing: true}), {claimed: [], busy: ["b"], missing: []}, "allOrNothing, one held");
			eq(await kv.claimKeys(["d", "missing", "b"], {allOrNothing: true}), {claimed: [], busy: [], missing: ["missing"]}, "allOrNothing, one missing");
			const dd = await kv.claimKeys(["d"]);
			eq(dd.claimed.map((c) => c.key), ["d"], "nothing was left claimed by the failures");
			let rel = await kv.releaseClaims([...got, ...dd.claimed]);
			eq(rel, {attempted: 3, released: 3, failed: []}, "releaseClaims");
			rel = await kv.releaseClaims([got[0], {key: "a", token: 1, id: "1"}]);
			eq([rel.attempted, rel.released, rel.failed.map((f) => [f.index, f.id, f.key, f.name])],
				[2, 0, [[0, got[0].id, "a", "ClaimNotUpdated"], [1, "1", "a", "ClaimNotUpdated"]]], "releaseClaims: stale refs fail");
			eq(Object.keys(rel), ["attempted", "released", "failed"], "releaseClaims shape");
			const all = (await kv.claimKeys(["d", "b", "a"], {allOrNothing: true})).claimed;
			eq(all.map((c) => c.key), ["d", "b", "a"], "allOrNothing, all free");
			eq(await kv.completeClaims(all.slice(0, 2), {deleteKey: false}), {attempted: 2, completed: 2, failed: []}, "completeClaims, keep");
			const done = await kv.completeClaims(all);
			eq([done.attempted, done.completed, done.failed.map((f) => f.index)], [3, 1, [0, 1]], "completeClaims: two ended already");
			eq(Object.keys(done), ["attempted", "completed", "failed"], "completeClaims shape");
			eq(await kv.listKeys(), ["b", "c", "d"], "deleted by default");
			eq(await kv.claimKeys([]), {claimed: [], busy: [], missing: []}, "no keys");
			eq(await kv.claimKeys(["k".repeat(16385)]), {claimed: [], busy: [], missing: ["k".repeat(16385)]}, "a key too long is never there");
			eq(await kv.releaseClaims([]), {attempted: 0, released: 0, failed: []}, "no refs");

			let e = await rejects(kv.claimKeys(["b", ""]), "InvalidOptionsError", "empty key");
			eq(e.errors.map((x) => x.name), ["EmptyKey"], "empty key named");
			e = await rejects(kv.claimKeys(["b", "d", "b"]), "InvalidOptionsError", "a key twice");
			eq(e.errors.map((x) => [x.key, x.name]), [["b", "DuplicateKey"]], "duplicate named");
			await rejects(kv.claimKeys(["b", 1]), "InvalidOptionsError", "not a string");
			await rejects(kv.claimKeys("b"), "InvalidOptionsError", "not an array");
			await rejects(kv.claimKeys(["b"], {allOrNothing: 1}), "InvalidOptionsError", "allOrNothing not a boolean");
			await rejects(kv.claimKeys(["b"], {prefix: "x"}), "InvalidOptionsError", "unknown option");
			await rejects(kv.claimKeys(new Array(1000001).fill("b")), "InvalidOptionsError", "too many keys");
			eq(await kv.claimKey("b") !== null, true, "the failed calls claimed nothing");
			const pc = await kv.claimKey("d", {prefix: "zzz", ttl: 1000});
			eq(pc && pc.key, "d", "claimKey takes xk6-kv's prefix option and does not use it");
		`)
	})
}

func TestJSClaimRandomMany(t *testing.T) {
	eachStore(t, func(t *testing.T, opts string) {
		claimRun(t, opts, `
			const pool = {};
			for (let i = 0; i < 10; i++) pool["t:" + i] = {i};
			await kv.setMany(pool);
			await kv.set("other", 1);
			const t0 = Date.now();
			const first = await kv.claimRandomMany({prefix: "t:", count: 6, owner: "x", ttl: 2000});
			eq(first.length, 6, "six");
			eq(new Set(first.map((c) => c.key)).size, 6, "distinct keys");
			for (const c of first) isClaim(c, c.key, {i: Number(c.key.slice(2))}, "x", 2000, t0, "claimRandomMany");
			const rest = await kv.claimRandomMany({prefix: "t:", count: 10});
			eq(rest.length, 4, "up to count: the four left");
			eq(new Set([...first, ...rest].map((c) => c.key)).size, 10, "none twice across calls");
			eq(await kv.claimRandomMany({prefix: "t:", count: 1}), [], "none left");
			eq((await kv.claimRandomMany({count: 3})).map((c) => c.key), ["other"], "without prefix");

			const popped = await kv.popRandomMany({prefix: "t:", count: 3});
			eq(popped, [], "pop passes claimed keys by");
			eq(await kv.releaseClaims(rest), {attempted: 4, released: 4, failed: []}, "release four");
			const p = await kv.popRandomMany({prefix: "t:", count: 3});
			eq(p.length, 3, "popRandomMany");
			for (const e of p) eq([Object.keys(e), e.value], [["key", "value"], {i: Number(e.key.slice(2))}], "entry " + e.key);
			eq(p.every((e) => rest.some((c) => c.key === e.key)), true, "popped among the released");
			const last = await kv.popRandom({prefix: "t:"});
			eq(Object.keys(last), ["key", "value"], "popRandom shape");
			eq(await kv.popRandom({prefix: "t:"}), null, "popRandom, the rest held");
			eq(await kv.count({prefix: "t:"}), 6, "the six held are left");
		`)
	})
}

// Option and argument errors: each rejects with InvalidOptionsError and
// changes nothing.
func TestJSClaimOptionErrors(t *testing.T) {
	claimRun(t, storeOptions(t, "memory", true, ""), `
		await kv.setMany({a: 1, b: 2});
		const bad = [
			["claimRandom ttl 0", () => kv.claimRandom({ttl: 0})],
			["claimRandom ttl -1", () => kv.claimRandom({ttl: -1})],
			["claimRandom ttl NaN", () => kv.claimRandom({ttl: NaN})],
			["claimRandom ttl Infinity", () => kv.claimRandom({ttl: Infinity})],
			["claimRandom ttl string", () => kv.claimRandom({ttl: "1000"})],
			["claimRandom ttl over 24 h", () => kv.claimRandom({ttl: 86400001})],
			["claimRandom owner number", () => kv.claimRandom({owner: 5})],
			["claimRandom owner 257 bytes", () => kv.claimRandom({owner: "o".repeat(257)})],
			["claimRandom owner 129 two-byte chars", () => kv.claimRandom({owner: "é".repeat(129)})],
			["claimRandom prefix number", () => kv.claimRandom({prefix: 1})],
			["claimRandom unknown option", () => kv.claimRandom({count: 2})],
			["claimRandom options not an object", () => kv.claimRandom("a")],
			["claimKey unknown option", () => kv.claimKey("a", {count: 1})],
			["claimKey prefix not a string", () => kv.claimKey("a", {prefix: 1})],
			["claimKey ttl", () => kv.claimKey("a", {ttl: 0})],
			["claimRandomMany count missing", () => kv.claimRandomMany({prefix: "a"})],
			["claimRandomMany no options", () => kv.claimRandomMany()],
			["claimRandomMany count 0", () => kv.claimRandomMany({count: 0})],
			["claimRandomMany count 1.5", () => kv.claimRandomMany({count: 1.5})],
			["claimRandomMany count 1000001", () => kv.claimRandomMany({count: 1000001})],
			["claimRandomMany count 1e12", () => kv.claimRandomMany({count: 1e12})],
			["claimRandomMany count string", () => kv.claimRandomMany({count: "2"})],
			["popRandomMany count missing", () => kv.popRandomMany({})],
			["popRandomMany no options", () => kv.popRandomMany()],
			["popRandomMany count -1", () => kv.popRandomMany({count: -1})],
			["popRandomMany owner", () => kv.popRandomMany({count: 1, owner: "x"})],
			["popRandom ttl", () => kv.popRandom({ttl: 5})],
			["releaseClaim nothing", () => kv.releaseClaim()],
			["releaseClaim null", () => kv.releaseClaim(null)],
			["releaseClaim string", () => kv.releaseClaim("1")],
			["releaseClaim array", () => kv.releaseClaim([1])],
			["releaseClaim no key", () => kv.releaseClaim({token: 1})],
			["releaseClaim key number", () => kv.releaseClaim({key: 1, token: 1})],
			["releaseClaim no token", () => kv.releaseClaim({key: "a"})],
			["releaseClaim token 0", () => kv.releaseClaim({key: "a", token: 0})],
			["releaseClaim token -1", () => kv.releaseClaim({key: "a", token: -1})],
			["releaseClaim token 1.5", () => kv.releaseClaim({key: "a", token: 1.5})],
			["releaseClaim token string", () => kv.releaseClaim({key: "a", token: "1"})],
			["releaseClaim token 2^53", () => kv.releaseClaim({key: "a", token: 2 ** 53})],
			["releaseClaim token NaN", () => kv.releaseClaim({key: "a", token: NaN})],
			["releaseClaim token bigint", () => kv.releaseClaim({key: "a", token: 1n})],
			["releaseClaims not an array", () => kv.releaseClaims({key: "a", token: 1})],
			["releaseClaims a bad ref", () => kv.releaseClaims([{key: "a", token: 1}, {key: "b"}])],
			["completeClaim deleteKey", () => kv.completeClaim({key: "a", token: 1}, {deleteKey: "yes"})],
			["completeClaim unknown option", () => kv.completeClaim({key: "a", token: 1}, {delete: true})],
			["completeClaims bad ref", () => kv.completeClaims([null])],
			["renewClaim ttl 0", () => kv.renewClaim({key: "a", token: 1}, {ttl: 0})],
			["renewClaim ttl over", () => kv.renewClaim({key: "a", token: 1}, {ttl: 1e9})],
			["renewClaims bad ref", () => kv.renewClaims([{key: "a", token: 1.25}])],
		];
		const held = await kv.claimKey("a");
		for (const [what, f] of bad) {
			const e = await rejects(f(), "InvalidOptionsError", what);
		}
		eq(await kv.size(), 2, "nothing popped");
		eq(await kv.claimKey("b") !== null, true, "b never claimed by a failed call");
		eq(await kv.releaseClaim(held), true, "a still held by its claim");
		// What an option error says.
		let e = await rejects(kv.claimRandom({ttl: 0}), "InvalidOptionsError");
		if (!e.message.includes("claimRandom") || !e.message.includes("ttl")) throw new Error(e.message);
		e = await rejects(kv.releaseClaims([{key: "a", token: 1}, {key: "b", token: "x"}]), "InvalidOptionsError");
		if (!e.message.includes("refs[1].token")) throw new Error(e.message);
	`)
}

// A ref whose id is not String(token) names no claim: false, and
// the claim it might look like stays.
func TestJSClaimRefID(t *testing.T) {
	claimRun(t, storeOptions(t, "disk", false, ""), `
		await kv.set("a", 1);
		const c = await kv.claimKey("a");
		eq(await kv.releaseClaim({id: "x", key: "a", token: c.token}), false, "id differs");
		eq(await kv.releaseClaim({id: c.token, key: "a", token: c.token}), false, "id a number");
		eq(await kv.releaseClaim({id: null, key: "a", token: c.token}), false, "id null");
		eq(await kv.completeClaim({...c, id: "0"}), false, "complete, id differs");
		eq(await kv.renewClaim({...c, id: ""}), false, "renew, id differs");
		const r = await kv.renewClaims([{...c, id: "z"}]);
		eq([r.renewed, r.failed.map((f) => [f.index, f.id, f.key, f.name])], [0, [[0, "z", "a", "ClaimNotUpdated"]]], "renewClaims, id differs");
		eq(await kv.releaseClaim({...c, key: "b"}), false, "another key");
		eq(await kv.releaseClaim({key: "a", token: c.token + 1}), false, "another token");
		eq(await kv.releaseClaim({key: "", token: c.token}), false, "empty key");
		eq(await kv.releaseClaim({key: "a".repeat(16385), token: c.token}), false, "key too long");
		eq(await kv.claimKey("a"), null, "still held");
		eq(await kv.releaseClaim({key: "a", token: c.token}), true, "no id: fine");
	`)
}

func TestJSClaimStringSerialization(t *testing.T) {
	claimRun(t, storeOptions(t, "memory", false, `serialization: "string"`), `
		await kv.set("s", "plain {text}");
		await kv.set("n", 12);
		const c = await kv.claimKey("s", {owner: "me"});
		eq(c.entry, {key: "s", value: "plain {text}"}, "string value");
		eq((await kv.popRandom({prefix: "n"})), {key: "n", value: "12"}, "pop: a string");
		const big = "x".repeat(300000);
		await kv.set("big", big);
		const b = await kv.claimRandom({prefix: "big"});
		eq(b.entry.value === big, true, "a value larger than the first buffer");
		eq(await kv.completeClaim(b), true, "complete");
		await kv.set("big2", big + "y");
		eq((await kv.popRandom({prefix: "big2"})).value === big + "y", true, "pop a large value");
		eq(await kv.size(), 1, "left: s");
	`)
}

// Values of every JSON shape come back decoded as get decodes them, from
// each claim and pop method.
func TestJSClaimValues(t *testing.T) {
	claimRun(t, storeOptions(t, "memory", true, ""), `
		const vals = {n: 1, f: 2.5, s: "str", e: "esc\"aped\n", b: true, z: null, o: {a: [1, {b: "c"}]}, arr: [1, "2", null], u: "ünï", big: "x".repeat(100000)};
		const pool = {};
		for (const [k, v] of Object.entries(vals)) pool["v:" + k] = v;
		await kv.setMany(pool);
		for (const [k, v] of Object.entries(vals)) eq((await kv.claimKey("v:" + k)).entry.value, v, "claimKey " + k);
		eq(await kv.claimKeys(Object.keys(pool)), {claimed: [], busy: Object.keys(pool), missing: []}, "all held by the claimKey calls");
		eq(await kv.claimRandomMany({prefix: "v:", count: 20}), [], "all held");
	`)
	claimRun(t, storeOptions(t, "disk", false, ""), `
		const vals = {n: 1, o: {a: [1, {b: "c"}]}, big: "y".repeat(70000)};
		const pool = {};
		for (const [k, v] of Object.entries(vals)) pool["v:" + k] = v;
		await kv.setMany(pool);
		for (const c of await kv.claimRandomMany({prefix: "v:", count: 3})) eq(c.entry.value, vals[c.key.slice(2)], "claimRandomMany " + c.key);
		await kv.clear();
		await kv.setMany(pool);
		for (const e of await kv.popRandomMany({prefix: "v:", count: 3})) eq(e.value, vals[e.key.slice(2)], "popRandomMany " + e.key);
		eq(await kv.size(), 0, "all popped");
	`)
}

func TestJSClaimReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ro.kv")
	claimRun(t, fmt.Sprintf(`{path: %q}`, path), `await kv.setMany({a: 1, b: 2}); globalThis.c = await kv.claimKey("a"); await kv.close();`)
	claimRun(t, fmt.Sprintf(`{path: %q, disk: {readOnly: true}}`, path), `
		const ref = {key: "a", token: 1};
		for (const [what, p] of [
			["popRandom", kv.popRandom()], ["popRandomMany", kv.popRandomMany({count: 1})],
			["claimRandom", kv.claimRandom()], ["claimRandomMany", kv.claimRandomMany({count: 1})],
			["claimKey", kv.claimKey("b")], ["claimKeys", kv.claimKeys(["b"])],
			["releaseClaim", kv.releaseClaim(ref)], ["releaseClaims", kv.releaseClaims([ref])],
			["completeClaim", kv.completeClaim(ref)], ["completeClaims", kv.completeClaims([ref])],
			["renewClaim", kv.renewClaim(ref)], ["renewClaims", kv.renewClaims([ref])],
		]) await rejects(p, "StoreReadOnlyError", what);
		await rejects(kv.claimRandom({ttl: 0}), "InvalidOptionsError", "arguments are checked first");
		// The library counts claims under the segment locks, which a
		// read-only handle cannot take: unknown, not 0.
		eq((await kv.stats()).claims, null, "stats of a read-only handle");
		eq(await kv.allocationStats(), {prefix: "", total: 2, claimable: null, claimedLive: null, claimedExpired: null,
			backend: "disk", trackKeys: false}, "allocationStats of a read-only handle");
		eq(await kv.size(), 2, "unchanged");
	`)
}

func TestJSClaimClosed(t *testing.T) {
	claimRun(t, storeOptions(t, "memory", false, ""), `
		await kv.set("a", 1);
		await kv.close();
		await rejects(kv.claimKey("a"), "StoreClosedError", "claimKey after close");
		await rejects(kv.releaseClaims([{key: "a", token: 1}]), "StoreClosedError", "releaseClaims after close");
		await rejects(kv.popRandom(), "StoreClosedError", "popRandom after close");
	`)
}

// stats().claims and allocationStats count live and expired claims.
func TestJSClaimStats(t *testing.T) {
	eachStore(t, func(t *testing.T, opts string) {
		claimRun(t, opts, `
			await kv.setMany({"u:1": 1, "u:2": 2, "u:3": 3, "u:4": 4, "x": 5});
			eq((await kv.stats()).claims, {live: 0, expired: 0}, "none");
			const o = `+opts+`;
			const long = (await kv.claimKeys(["u:1", "u:2", "x"], {ttl: 10000})).claimed;
			const t1 = Date.now();
			const short = await kv.claimKey("u:3", {ttl: 300});
			const four = (await kv.stats()).claims;
			if (Date.now() - t1 < 300) eq(four, {live: 4, expired: 0}, "four live");
			else eq(four.live + four.expired, 4, "four, the short one maybe run out (a stall)");
			await sleep(Math.max(0, short.expiresAt - Date.now()) + 30);
			eq((await kv.stats()).claims, {live: 3, expired: 1}, "one ran out");
			eq(await kv.allocationStats({prefix: "u:"}), {prefix: "u:", total: 4, claimable: 2, claimedLive: 2, claimedExpired: 1,
				backend: o.backend, trackKeys: o.trackKeys}, "allocationStats");
			eq((await kv.allocationStats()).claimable, 2, "all keys: u:3, u:4");
			await kv.releaseClaims(long);
			eq((await kv.stats()).claims, {live: 0, expired: 1}, "released");
			await kv.claimKey("u:3");
			eq((await kv.stats()).claims, {live: 1, expired: 0}, "an expired claim, claimed again, is live");
		`)
	})
}

func TestJSClaimReportStatsAndMetrics(t *testing.T) {
	rt := newJS(t)
	// The lease runs out in the init context: timers of a VU context wait
	// for the end of an iteration that a test never ends.
	runAsync(t, rt, claimPrelude+`globalThis.kv = openKv(`+storeOptions(t, "memory", true, "metrics: {operations: true}")+`);
		await kv.setMany({a: 1, b: 2, c: 3});
		await kv.claimKey("a", {ttl: 30});
		await kv.claimKey("b");
		await sleep(80);`)
	ch, _ := vuContext(t, rt)
	runAsync(t, rt, `
		eq(await kv.reportStats(), undefined, "reportStats");
		eq(await kv.popRandom({prefix: "c"}) !== null, true, "pop c");
		eq(await kv.popRandom({prefix: "c"}), null, "pop none");
		eq(await kv.claimRandom({prefix: "b"}), null, "claim none");
		eq(await kv.claimRandomMany({prefix: "a", count: 2}) .then((r) => r.length), 1, "claim many: a");
		eq(await kv.popRandomMany({prefix: "zz", count: 2}), [], "pop many none");
		await rejects(kv.claimKey(""), "InvalidOptionsError", "a failure");
	`)
	got := strings.Join(drain(ch), "\n")
	base := "backend=memory,scenario=test,serialization=json,track_keys=true}"
	for _, want := range []string{
		"xk6_kv_claims_live{" + base + " 1",
		"xk6_kv_claims_expired{" + base + " 1",
		"xk6_kv_empty_result{backend=memory,op=pop_random,scenario=test,serialization=json,track_keys=true} 0",
		"xk6_kv_empty_result{backend=memory,op=pop_random,scenario=test,serialization=json,track_keys=true} 1",
		"xk6_kv_empty_result{backend=memory,op=claim_random,scenario=test,serialization=json,track_keys=true} 1",
		"xk6_kv_empty_result{backend=memory,op=claim_random_many,scenario=test,serialization=json,track_keys=true} 0",
		"xk6_kv_empty_result{backend=memory,op=pop_random_many,scenario=test,serialization=json,track_keys=true} 1",
		"xk6_kv_errors_total{backend=memory,error_type=InvalidOptionsError,op=claim_key,scenario=test,serialization=json,track_keys=true} 1",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in\n%s", want, got)
		}
	}
	if strings.Contains(got, "xk6_kv_empty_result{backend=memory,op=claim_key") {
		t.Errorf("claimKey is not a sampling method: no empty_result\n%s", got)
	}
}

// Two VUs (two runtimes, one store): a claim of one excludes the other.
func TestJSClaimTwoVUs(t *testing.T) {
	opts := storeOptions(t, "memory", true, "")
	a, b := newJS(t), newJS(t)
	runAsync(t, a, claimPrelude+`globalThis.kv = openKv(`+opts+`); await kv.setMany({k1: 1, k2: 2});
		globalThis.held = (await kv.claimKeys(["k1", "k2"], {owner: "a", ttl: 10000})).claimed;
		eq(held.length, 2, "a holds both");`)
	runAsync(t, b, claimPrelude+`globalThis.kv = openKv(`+opts+`);
		eq(await kv.claimKey("k1"), null, "b: held by a");
		eq(await kv.claimRandom(), null, "b: claimRandom");
		eq(await kv.popRandom(), null, "b: popRandom");`)
	runAsync(t, a, `eq(await kv.releaseClaim(held[0]), true, "a releases k1");`)
	runAsync(t, b, `globalThis.mine = await kv.claimRandom({owner: "b"}); eq(mine.key, "k1", "b claims k1");
		eq(await kv.releaseClaim({key: "k2", token: mine.token}), false, "b's token on a's key");`)
	runAsync(t, a, `eq(await kv.completeClaim(held[1]), true, "a completes k2"); eq(await kv.releaseClaim(held[0]), false, "a's k1 token is stale");`)
	runAsync(t, b, `eq(await kv.completeClaim(mine), true, "b completes k1"); eq(await kv.size(), 0, "both used up");`)
}

// TestJSClaimChild is the other process of TestJSClaimOtherProcess: it
// claims p:1 for a minute and p:2 for 300 ms, writes the claims and exits
// without releasing them, as a killed holder would.
func TestJSClaimChild(t *testing.T) {
	opts, out := os.Getenv("CLAIM14_OPTS"), os.Getenv("CLAIM14_OUT")
	if opts == "" {
		t.Skip("run by TestJSClaimOtherProcess")
	}
	rt := newJS(t)
	runAsync(t, rt, `const kv = openKv(`+opts+`);
		const long = await kv.claimKey("p:1", {owner: "child", ttl: 60000});
		const short = await kv.claimKey("p:2", {owner: "child", ttl: 300});
		eq([long !== null, short !== null], [true, true], "child claims both");
		globalThis.claims = JSON.stringify([long, short]);`)
	if err := os.WriteFile(out, []byte(rt.VU.Runtime().Get("claims").String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Claims hold across processes: a child process claims two keys and exits
// without releasing them. This process cannot claim them while their
// leases last; once the short one ran out its key is claimable and the
// child's token for it is stale; the long one's ref, handed over, releases
// it from this process.
func TestJSClaimOtherProcess(t *testing.T) {
	for _, backend := range []string{"memory", "disk"} {
		t.Run(backend, func(t *testing.T) {
			opts := storeOptions(t, backend, backend == "disk", "")
			out := filepath.Join(t.TempDir(), "claims")
			rt := newJS(t)
			// This process keeps the store open (a memory store lives while
			// a process has it open).
			runAsync(t, rt, claimPrelude+`globalThis.kv = openKv(`+opts+`); await kv.setMany({"p:1": 1, "p:2": 2, "p:3": 3});`)
			cmd := exec.Command(os.Args[0], "-test.run=^TestJSClaimChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), "CLAIM14_OPTS="+opts, "CLAIM14_OUT="+out)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("child: %v\n%s", err, b)
			}
			claims, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			runAsync(t, rt, claimPrelude+`const [long, short] = `+string(claims)+`;
				eq([long.owner, short.owner, long.entry.value], ["child", "child", 1], "the child's claims");
				eq(await kv.claimKey("p:1"), null, "held by the other process");
				// p:2 too once its lease ran out (a slow child: -race)
				const free = await kv.claimRandomMany({prefix: "p:", count: 3});
				const keys = free.map((c) => c.key);
				if (!keys.includes("p:3") || keys.includes("p:1")) throw new Error("claimable: " + keys);
				eq(await kv.releaseClaims(free), {attempted: free.length, released: free.length, failed: []}, "release them");
				await sleep(Math.max(0, short.expiresAt - Date.now()) + 50);
				const back = await kv.claimKey("p:2", {owner: "parent"});
				eq(back.key, "p:2", "claimable once the lease ran out");
				if (!(back.token > long.token && back.token > short.token)) throw new Error("tokens grow across processes");
				eq(await kv.completeClaim(short), false, "the dead holder's token is stale");
				eq(await kv.exists("p:2"), true, "and deletes nothing");
				eq(await kv.completeClaim(back), true, "the new holder completes");
				eq(await kv.claimKey("p:1"), null, "still held");
				eq(await kv.releaseClaim(long), true, "a ref works from any process");
				eq((await kv.claimKey("p:1")).key, "p:1", "released");`)
		})
	}
}
