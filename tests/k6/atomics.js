// The atomic operations, with the xk6-kv fork's names and result shapes.
import { openKv } from "k6/x/kv";
import { storeOptions, thresholds, eq, rejects, guard } from "./lib/t.js";

export const options = { iterations: 1, vus: 1, thresholds };

const kv = openKv(storeOptions());

export async function setup() {
  await kv.clear();
}

export default async function () {
  await guard("atomics", async () => {
    // incrementBy: a missing key counts as 0; the result is a number, and
    // get reads a number back.
    eq(await kv.incrementBy("counter", 5), 5, "incrementBy creates");
    eq(await kv.incrementBy("counter", -2), 3, "incrementBy with a negative delta");
    eq(await kv.incrementBy("counter", 0), 3, "incrementBy 0");
    eq(await kv.get("counter"), 3, "get after incrementBy is a number");
    await kv.set("n", 10);
    eq(await kv.incrementBy("n", 1), 11, "incrementBy a number that set wrote");
    await kv.set("quoted", "41");
    eq(await kv.incrementBy("quoted", 1), 42, "incrementBy a string holding an integer");
    await kv.set("text", "hello");
    await rejects(kv.incrementBy("text", 1), "ValueParseError", "incrementBy a non-integer value");
    eq(await kv.get("text"), "hello", "failed incrementBy changes nothing");
    await kv.set("float", 1.5);
    await rejects(kv.incrementBy("float", 1), "ValueParseError", "incrementBy a fraction");
    await kv.set("big", 9223372036854775807n.toString());
    await rejects(kv.incrementBy("big", 1), "ValueParseError", "incrementBy past int64");
    for (const bad of [1.5, NaN, Infinity, "1", null, undefined, 1e20, {}]) {
      await rejects(kv.incrementBy("counter", bad), "ValueNumberRequiredError", `incrementBy(${String(bad)})`);
    }
    eq(await kv.get("counter"), 3, "bad deltas change nothing");

    // compareAndSwap: old null/undefined means "only if absent".
    eq(await kv.compareAndSwap("lock", null, "me"), true, "compareAndSwap(null) on an absent key");
    eq(await kv.compareAndSwap("lock", null, "you"), false, "compareAndSwap(null) on a present key");
    eq(await kv.compareAndSwap("lock", undefined, "you"), false, "compareAndSwap(undefined) on a present key");
    eq(await kv.compareAndSwap("lock", "you", "them"), false, "compareAndSwap with the wrong old value");
    eq(await kv.compareAndSwap("lock", "me", "them"), true, "compareAndSwap with the right old value");
    eq(await kv.get("lock"), "them", "compareAndSwap stored");
    await kv.set("doc", { a: 1, b: [1, 2] });
    eq(await kv.compareAndSwap("doc", { a: 1, b: [1, 2] }, { a: 2 }), true, "compareAndSwap compares objects by JSON");
    eq(await kv.compareAndSwap("doc", { a: 1, b: [1, 2] }, { a: 3 }), false, "compareAndSwap after the value changed");
    eq(await kv.compareAndSwap("nokey", "x", "y"), false, "compareAndSwap on a missing key");
    eq(await kv.exists("nokey"), false, "a failed compareAndSwap creates nothing");

    // setIfAbsent
    eq(await kv.setIfAbsent("once", 1), true, "setIfAbsent on an absent key");
    eq(await kv.setIfAbsent("once", 2), false, "setIfAbsent on a present key");
    eq(await kv.get("once"), 1, "setIfAbsent kept the first value");

    // getOrSet -> {value, loaded}
    eq(await kv.getOrSet("cfg", { theme: "dark" }), { value: { theme: "dark" }, loaded: false }, "getOrSet stores");
    eq(await kv.getOrSet("cfg", { theme: "light" }), { value: { theme: "dark" }, loaded: true }, "getOrSet loads");

    // swap -> {previous, loaded}
    eq(await kv.swap("status", "running"), { previous: null, loaded: false }, "swap on an absent key");
    eq(await kv.swap("status", "done"), { previous: "running", loaded: true }, "swap on a present key");
    eq(await kv.get("status"), "done", "swap stored");

    // deleteIfExists -> boolean
    eq(await kv.deleteIfExists("status"), true, "deleteIfExists on a present key");
    eq(await kv.deleteIfExists("status"), false, "deleteIfExists on a missing key");

    // compareAndDelete -> boolean
    await kv.set("job", "failed");
    eq(await kv.compareAndDelete("job", "ok"), false, "compareAndDelete with the wrong value");
    eq(await kv.exists("job"), true, "compareAndDelete kept the key");
    eq(await kv.compareAndDelete("job", "failed"), true, "compareAndDelete with the right value");
    eq(await kv.exists("job"), false, "compareAndDelete removed the key");
    eq(await kv.compareAndDelete("job", "failed"), false, "compareAndDelete on a missing key");
    await kv.set("nothing", null);
    eq(await kv.compareAndDelete("nothing", null), true, "compareAndDelete compares null as a value");
  });
}
