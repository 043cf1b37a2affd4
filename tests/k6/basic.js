// Every basic method and its edge cases, on the store the runner picks
// (memory or disk, trackKeys on, off or unset).
import { openKv } from "k6/x/kv";
import { storeOptions, thresholds, ok, eq, rejects, guard } from "./lib/t.js";

export const options = { iterations: 1, vus: 1, thresholds };

const kv = openKv(storeOptions());

export async function setup() {
  await kv.clear();
}

export default async function () {
  await guard("basic", async () => {
    eq(await kv.size(), 0, "empty at start");
    eq(await kv.randomKey(), "", "randomKey on an empty store");
    eq(await kv.randomKey({ prefix: "x" }), "", "randomKey with prefix on an empty store");
    eq(await kv.list(), [], "list on an empty store");

    // set resolves to the value; get reads it back.
    eq(await kv.set("foo", "bar"), "bar", "set resolves to the value");
    eq(await kv.get("foo"), "bar", "get a string");
    await kv.set("abc", 123);
    eq(await kv.get("abc"), 123, "get a number");
    await kv.set("easy as", [1, 2, 3]);
    eq(await kv.get("easy as"), [1, 2, 3], "get an array");
    await kv.set("user:1", { name: "Alice" });
    await kv.set("user:2", { name: "Bob" });
    eq(await kv.get("user:2"), { name: "Bob" }, "get an object");
    await kv.set("foo", "baz");
    eq(await kv.get("foo"), "baz", "set overwrites");

    // get of a missing key rejects with KeyNotFoundError.
    const e = await rejects(kv.get("missing"), "KeyNotFoundError", "get a missing key");
    ok(e instanceof Error, "rejections are Error objects");
    ok(String(e).startsWith("KeyNotFoundError: "), "String(error) names the error", String(e));

    eq(await kv.exists("foo"), true, "exists");
    eq(await kv.exists("missing"), false, "exists on a missing key");
    eq(await kv.size(), 5, "size");

    // list: sorted by key, prefix and limit.
    eq((await kv.list()).map((x) => x.key), ["abc", "easy as", "foo", "user:1", "user:2"], "list is sorted");
    eq(await kv.list({ prefix: "user:" }),
      [{ key: "user:1", value: { name: "Alice" } }, { key: "user:2", value: { name: "Bob" } }],
      "list with prefix returns entries");
    eq((await kv.list({ limit: 2 })).map((x) => x.key), ["abc", "easy as"], "list with limit");
    eq((await kv.list({ prefix: "user:", limit: 1 })).map((x) => x.key), ["user:1"], "list with prefix and limit");
    eq((await kv.list({ limit: 0 })).length, 5, "limit 0 is no limit");
    eq((await kv.list({ limit: -1 })).length, 5, "negative limit is no limit");
    eq(await kv.list({ prefix: "nothing" }), [], "list with no match");

    // randomKey: any key, or one with the prefix, or "".
    const seen = new Set();
    for (let i = 0; i < 200; i++) {
      const k = await kv.randomKey({ prefix: "user:" });
      if (k !== "user:1" && k !== "user:2") {
        ok(false, "randomKey honours the prefix", k);
        break;
      }
      seen.add(k);
    }
    eq(seen.size, 2, "randomKey reaches every key with the prefix");
    ok(["abc", "easy as", "foo", "user:1", "user:2"].includes(await kv.randomKey()), "randomKey without prefix");
    eq(await kv.randomKey({ prefix: "zzz" }), "", "randomKey with no match");

    // delete resolves to true, present or not.
    eq(await kv.delete("foo"), true, "delete");
    eq(await kv.delete("foo"), true, "delete a missing key");
    eq(await kv.exists("foo"), false, "deleted");
    eq(await kv.size(), 4, "size after delete");

    // rebuildKeyList: true, and nothing changes.
    eq(await kv.rebuildKeyList(), true, "rebuildKeyList");
    eq(await kv.size(), 4, "size after rebuildKeyList");
    eq((await kv.list()).map((x) => x.key), ["abc", "easy as", "user:1", "user:2"], "list after rebuildKeyList");
    ok((await kv.randomKey({ prefix: "user:" })).startsWith("user:"), "randomKey after rebuildKeyList");

    // Keys are bytes: unicode, spaces and the longest key.
    const long = "k".repeat(16384);
    await kv.set(long, 1);
    eq(await kv.get(long), 1, "a 16384-byte key");
    await kv.set("ключ 🔑", "значение");
    eq(await kv.get("ключ 🔑"), "значение", "a unicode key");
    ok((await kv.list({ prefix: "ключ" })).length === 1, "list with a unicode prefix");

    // clear resolves to true and empties the store.
    eq(await kv.clear(), true, "clear");
    eq(await kv.size(), 0, "size after clear");
    eq(await kv.list(), [], "list after clear");
    eq(await kv.randomKey(), "", "randomKey after clear");
  });
}
