// Hostile input from a script (issue #5, part 3): bad keys, bad values and
// bad options each get a clear, typed error, and the store's content is
// unchanged afterwards. Run by tests/reliability/k6-hostile.sh on the memory
// and the disk backend (KV_BACKEND, KV_PATH, KV_NAME as in tests/k6/run.sh).
//
// Before the cases the store is filled with known entries; after all of them
// list() must return exactly those entries and size() their count.
import { openKv } from "k6/x/kv";
import { storeOptions, thresholds, ok, eq, guard } from "../../k6/lib/t.js";

export const options = { iterations: 1, vus: 1, thresholds, setupTimeout: "120s" };

const kv = openKv(storeOptions());
const kvs = openKv(storeOptions({ serialization: "string" }));

// Option errors are thrown by openKv in the init context; record them here
// and check them in the iteration (a check cannot run in the init context).
// [options, expected name, a word the message must contain]
const optionCases = [
  [{ bogus: 1 }, "InvalidOptionsError", "bogus"],
  [{ trackkeys: true }, "InvalidOptionsError", "trackkeys"],
  [{ backend: 1 }, "InvalidOptionsError", "backend"],
  [{ backend: "" }, "InvalidBackendError", "backend"],
  [{ backend: "memory", name: 7 }, "InvalidOptionsError", "name"],
  [{ backend: "memory", name: "" }, "InvalidOptionsError", "name"],
  [{ backend: "memory", name: "x".repeat(201) }, "InvalidOptionsError", "name"],
  [{ backend: "disk", path: 5 }, "InvalidOptionsError", "path"],
  [{ backend: "disk", path: {} }, "InvalidOptionsError", "path"],
  [{ serialization: true }, "InvalidOptionsError", "serialization"],
  [{ trackKeys: 1 }, "InvalidOptionsError", "trackKeys"],
  [{ trackKeys: "true" }, "InvalidOptionsError", "trackKeys"],
  [{ segments: "64" }, "InvalidOptionsError", "segments"],
  [{ segments: 0 }, "InvalidOptionsError", "segments"],
  [{ segments: 8192 }, "InvalidOptionsError", "segments"],
  [{ segments: NaN }, "InvalidOptionsError", "segments"],
  [{ reserve: true }, "InvalidOptionsError", "reserve"],
  [{ reserve: -1 }, "InvalidOptionsError", "reserve"],
  [{ reserve: "12 parsecs" }, "InvalidOptionsError", "reserve"],
  [{ reserve: Infinity }, "InvalidOptionsError", "reserve"],
  [{ memory: 5 }, "InvalidOptionsError", "memory"],
  [{ memory: { shardCount: "4" } }, "InvalidOptionsError", "shardCount"],
  [{ disk: "yes" }, "InvalidOptionsError", "disk"],
  [{ disk: { bogus: 1 } }, "InvalidOptionsError", "bogus"],
  [{ disk: { noSync: 1 } }, "InvalidOptionsError", "noSync"],
  [{ disk: { timeout: {} } }, "InvalidOptionsError", "timeout"],
  [{ metrics: { bogus: true } }, "InvalidOptionsError", "bogus"],
];
const optionErrors = optionCases.map(([o]) => {
  try {
    openKv(o);
    return null;
  } catch (e) {
    return { name: e.name, message: String(e.message) };
  }
});
// openKv with a non-object argument.
const argCases = [
  ["a string", "disk"],
  ["a number", 42],
  ["an array", []],
];
const argErrors = argCases.map(([, a]) => {
  try {
    openKv(a);
    return null;
  } catch (e) {
    return { name: e.name, message: String(e.message) };
  }
});

// The known content, written in setup() and checked at the end.
const known = [];
for (let i = 0; i < 50; i++) {
  const k = `known:${String(i).padStart(3, "0")}`;
  const v = i % 3 === 0 ? i : i % 3 === 1 ? `value ${i}` : { i, tags: ["a", "b"], nested: { ok: true } };
  known.push({ key: k, value: v });
}
// The largest int64, as a JSON string holding an integer: incrementBy by 1
// overflows.
known.push({ key: "known:max", value: "9223372036854775807" });
known.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));

// Bad keys: [label, key, expected name, a word the message must contain].
const badKeys = [
  ["a number", 1, "InvalidOptionsError", "key"],
  ["an object", { a: 1 }, "InvalidOptionsError", "key"],
  ["null", null, "InvalidOptionsError", "key"],
  ["undefined", undefined, "InvalidOptionsError", "key"],
  ["an array", ["known:000"], "InvalidOptionsError", "key"],
  ["empty", "", "InvalidOptionsError", "key"],
  ["16385 bytes", "k".repeat(16385), "KeyTooLongError", "16384"],
  ["16385 UTF-8 bytes", "é".repeat(8192) + "k", "KeyTooLongError", "16384"],
];

// Values json cannot store: [label, value, a word the message must contain].
const cyclic = { a: 1 };
cyclic.self = cyclic;
const cyclicArr = [1, 2];
cyclicArr.push(cyclicArr);
const fn = function hello() {};
const sym = Symbol("s");
const badValues = [
  ["NaN", NaN, "NaN"],
  ["Infinity", Infinity, "Infinity"],
  ["-Infinity", -Infinity, "Infinity"],
  ["a function", fn, "function"],
  ["an arrow function", () => 1, "function"],
  ["a symbol", sym, "symbol"],
  ["a cyclic object", cyclic, "circular"],
  ["a cyclic array", cyclicArr, "circular"],
  ["NaN in an object", { a: 1, b: NaN }, "NaN"],
  ["Infinity in an array", [1, Infinity], "Infinity"],
  ["-Infinity deep", { a: [{ b: [-Infinity] }] }, "Infinity"],
  ["a function in an object", { f: fn }, "function"],
  ["a function in an array", [1, fn], "function"],
  ["a symbol in an object", { s: sym }, "symbol"],
  ["a symbol in an array", [sym], "symbol"],
  ["a cyclic object nested", { outer: [cyclic] }, "circular"],
  ["a BigInt", 10n, "BigInt"],
  ["a BigInt nested", { a: [1, 10n] }, "BigInt"],
];

// check: one typed-error check on a rejection or throw.
function typed(e, name, word, label) {
  const msg = e && typeof e.message === "string" ? e.message : "";
  return ok(e && e.name === name && msg.toLowerCase().includes(word.toLowerCase()), label,
    `got ${e && e.name}: ${msg.slice(0, 200)}, want ${name} naming "${word}"`);
}

async function rejectsTyped(f, name, word, label) {
  let e = null;
  try {
    const v = await f();
    ok(false, label, `resolved with ${String(JSON.stringify(v)).slice(0, 100)}, want ${name}`);
    return;
  } catch (err) {
    e = err;
  }
  typed(e, name, word, label);
}

export async function setup() {
  await kv.clear();
  for (const { key, value } of known) {
    await kv.set(key, value);
  }
}

export default async function () {
  await guard("hostile", async () => {
    eq(await kv.size(), known.length, "the known entries are in place before the cases");

    optionCases.forEach(([o, name, word], i) => {
      const e = optionErrors[i];
      ok(e && e.name === name && e.message.includes(word),
        `openKv(${JSON.stringify(o)}) throws ${name} naming ${word}`, JSON.stringify(e));
    });
    argCases.forEach(([label], i) => {
      const e = argErrors[i];
      ok(e && e.name === "InvalidOptionsError" && e.message !== "",
        `openKv with ${label} throws InvalidOptionsError`, JSON.stringify(e));
    });

    // Bad keys on every method that takes one.
    for (const [label, k, name, word] of badKeys) {
      const calls = [
        ["set", () => kv.set(k, "x")],
        ["get", () => kv.get(k)],
        ["delete", () => kv.delete(k)],
        ["exists", () => kv.exists(k)],
        ["incrementBy", () => kv.incrementBy(k, 1)],
        ["compareAndSwap", () => kv.compareAndSwap(k, null, 1)],
        ["setIfAbsent", () => kv.setIfAbsent(k, 1)],
        ["getOrSet", () => kv.getOrSet(k, 1)],
        ["swap", () => kv.swap(k, 1)],
        ["deleteIfExists", () => kv.deleteIfExists(k)],
        ["compareAndDelete", () => kv.compareAndDelete(k, 1)],
      ];
      for (const [m, f] of calls) {
        await rejectsTyped(f, name, word, `${m} with ${label} as key: ${name}`);
      }
    }

    // Values json cannot store, on every method that stores one; the target
    // key exists, so a write that slipped through would change the store.
    const target = known[1].key;
    for (const [label, v, word] of badValues) {
      const calls = [
        ["set", () => kv.set(target, v)],
        ["set (new key)", () => kv.set("hostile:new", v)],
        ["setIfAbsent", () => kv.setIfAbsent("hostile:new", v)],
        ["getOrSet", () => kv.getOrSet("hostile:new", v)],
        ["swap", () => kv.swap(target, v)],
        ["compareAndSwap", () => kv.compareAndSwap(target, known[1].value, v)],
      ];
      for (const [m, f] of calls) {
        await rejectsTyped(f, "SerializerError", word, `${m} with ${label}: SerializerError`);
      }
    }

    // A bad value as the expected old value of a compare.
    for (const [label, v, word] of badValues) {
      await rejectsTyped(() => kv.compareAndSwap(target, v, "x"), "SerializerError", word,
        `compareAndSwap with ${label} as the old value: SerializerError`);
      await rejectsTyped(() => kv.compareAndDelete(target, v), "SerializerError", word,
        `compareAndDelete with ${label} as the old value: SerializerError`);
    }

    // The string serialization refuses what is not text (on the same store).
    for (const [label, v] of [["null", null], ["undefined", undefined], ["an object", { a: 1 }], ["an array", [1]],
      ["a function", fn], ["a symbol", sym]]) {
      await rejectsTyped(() => kvs.set(target, v), "SerializerError", "string",
        `string serialization: set with ${label}: SerializerError`);
      await rejectsTyped(() => kvs.swap(target, v), "SerializerError", "string",
        `string serialization: swap with ${label}: SerializerError`);
    }

    // incrementBy: bad deltas, values that are not integers, overflow.
    const numKey = known.find((e) => typeof e.value === "number").key;
    for (const [label, d] of [["a string", "1"], ["null", null], ["1.5", 1.5], ["NaN", NaN], ["Infinity", Infinity],
      ["2^64", 2 ** 64], ["an object", {}]]) {
      await rejectsTyped(() => kv.incrementBy(numKey, d), "ValueNumberRequiredError", "delta",
        `incrementBy with ${label} as delta: ValueNumberRequiredError`);
    }
    const strKey = known.find((e) => typeof e.value === "string" && e.key !== "known:max").key;
    const objKey = known.find((e) => typeof e.value === "object").key;
    await rejectsTyped(() => kv.incrementBy(strKey, 1), "ValueParseError", "not an integer",
      "incrementBy on a string value: ValueParseError");
    await rejectsTyped(() => kv.incrementBy(objKey, 1), "ValueParseError", "not an integer",
      "incrementBy on an object value: ValueParseError");
    await rejectsTyped(() => kv.incrementBy("known:max", 1), "ValueParseError", "overflow",
      "incrementBy past int64: ValueParseError");

    // Bad list/randomKey arguments.
    await rejectsTyped(() => kv.list("known:"), "InvalidOptionsError", "object", "list with a string: InvalidOptionsError");
    await rejectsTyped(() => kv.list({ prefix: 5 }), "InvalidOptionsError", "prefix", "list with a number prefix");
    await rejectsTyped(() => kv.list({ limit: "3" }), "InvalidOptionsError", "limit", "list with a string limit");
    await rejectsTyped(() => kv.randomKey({ prefix: [] }), "InvalidOptionsError", "prefix", "randomKey with an array prefix");
    await rejectsTyped(() => kv.randomKey("x"), "InvalidOptionsError", "object", "randomKey with a string");

    // A value over the size limit (64 MiB + 1 byte encoded).
    const big = "v".repeat(64 * 1024 * 1024 + 1 - 2); // json adds two quotes
    const bigRaw = "v".repeat(64 * 1024 * 1024 + 1);
    for (const [label, v] of [["a 64 MiB + 1 byte encoding", big], ["a 64 MiB + 1 byte string", bigRaw]]) {
      await rejectsTyped(() => kv.set(target, v), "ValueTooLargeError", "67108864", `set with ${label}: ValueTooLargeError`);
      await rejectsTyped(() => kv.set("hostile:big", v), "ValueTooLargeError", "67108864",
        `set (new key) with ${label}: ValueTooLargeError`);
      await rejectsTyped(() => kv.swap(target, v), "ValueTooLargeError", "67108864", `swap with ${label}: ValueTooLargeError`);
      await rejectsTyped(() => kv.setIfAbsent("hostile:big", v), "ValueTooLargeError", "67108864",
        `setIfAbsent with ${label}: ValueTooLargeError`);
    }

    // The store is exactly as it was.
    const listed = await kv.list();
    eq(listed, known, "list() returns exactly the known entries after the cases");
    eq(await kv.size(), known.length, "size() is the known count after the cases");
    for (const { key, value } of known) {
      const got = await kv.get(key);
      if (JSON.stringify(got) !== JSON.stringify(value)) {
        eq(got, value, `get(${key}) unchanged`);
      }
    }
    eq(await kv.exists("hostile:new"), false, "no hostile key was created");
    eq(await kv.exists("hostile:big"), false, "no big key was created");
    eq(await kv.randomKey({ prefix: "hostile:" }), "", "randomKey finds no hostile key");
  });
}
