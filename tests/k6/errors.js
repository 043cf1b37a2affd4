// Bad arguments, bad options, openKv outside the init context, and a closed
// KV object.
import { openKv } from "k6/x/kv";
import { storeOptions, thresholds, ok, eq, rejects, throws, guard } from "./lib/t.js";

export const options = { iterations: 1, vus: 1, thresholds };

const kv = openKv(storeOptions());
const closing = openKv(storeOptions());

// Option errors are thrown by openKv in the init context; record them here
// and check them in the iteration (a check cannot run in the init context).
const optionCases = [
  [{ backend: "redis" }, "InvalidBackendError", "backend"],
  [{ serialization: "yaml" }, "InvalidSerializationError", "serialization"],
  [{ trackKeys: "yes" }, "InvalidOptionsError", "trackKeys"],
  [{ trackKey: true }, "InvalidOptionsError", "trackKey"],
  [{ backend: "memory", name: "no/slashes" }, "InvalidOptionsError", "name"],
  [{ path: "" }, "InvalidOptionsError", "path"],
  [{ segments: 3 }, "InvalidOptionsError", "segments"],
  [{ reserve: "a lot" }, "InvalidOptionsError", "reserve"],
  [{ memory: { shards: 2 } }, "InvalidOptionsError", "shards"],
  [{ disk: { readOnly: "no" } }, "InvalidOptionsError", "disk.readOnly"],
  [{ metrics: { operations: 1 } }, "InvalidOptionsError", "metrics.operations"],
  // Missing folders are created, but not under a file.
  [{ path: "/proc/version/sub/store.kv" }, "DiskPathError", "not a directory"],
];
const optionErrors = optionCases.map(([o]) => {
  try {
    openKv(o);
    return null;
  } catch (e) {
    return { name: e.name, message: e.message };
  }
});

// trackKeys is reconciled (true turns key tracking on for the store, false
// joins a tracked store as it is); a segment count that differs from the
// store's cannot be, and throws.
let joined = "not tried";
let conflict = "not tried";
if (__ENV.KV_TRACK === "true" || __ENV.KV_TRACK === "false") {
  try {
    openKv(storeOptions({ trackKeys: __ENV.KV_TRACK !== "true" }));
    joined = "joined";
  } catch (e) {
    joined = e.name;
  }
  try {
    openKv(storeOptions({ segments: 8 }));
    conflict = "no error";
  } catch (e) {
    conflict = e.name;
  }
}

export async function setup() {
  await kv.clear();
}

export default async function () {
  await guard("errors", async () => {
    optionCases.forEach(([o, name, word], i) => {
      const e = optionErrors[i];
      ok(e && e.name === name && e.message.includes(word), `openKv(${JSON.stringify(o)}) throws ${name} naming ${word}`,
        JSON.stringify(e));
    });

    if (conflict !== "not tried") {
      eq(joined, "joined", "openKv with the other trackKeys joins the store");
      eq(conflict, "KVOptionsConflictError", "openKv with other segments throws KVOptionsConflictError");
    }

    // openKv outside the init context throws.
    throws(() => openKv(storeOptions()), "InitContextError", "openKv in a VU function");

    // Keys must be non-empty strings.
    for (const [label, k] of [["undefined", undefined], ["null", null], ["a number", 1], ["an object", {}], ["empty", ""]]) {
      await rejects(kv.get(k), "InvalidOptionsError", `get with ${label} as key`);
      await rejects(kv.set(k, 1), "InvalidOptionsError", `set with ${label} as key`);
      await rejects(kv.delete(k), "InvalidOptionsError", `delete with ${label} as key`);
      await rejects(kv.exists(k), "InvalidOptionsError", `exists with ${label} as key`);
      await rejects(kv.incrementBy(k, 1), "InvalidOptionsError", `incrementBy with ${label} as key`);
      await rejects(kv.compareAndSwap(k, null, 1), "InvalidOptionsError", `compareAndSwap with ${label} as key`);
      await rejects(kv.setIfAbsent(k, 1), "InvalidOptionsError", `setIfAbsent with ${label} as key`);
      await rejects(kv.getOrSet(k, 1), "InvalidOptionsError", `getOrSet with ${label} as key`);
      await rejects(kv.swap(k, 1), "InvalidOptionsError", `swap with ${label} as key`);
      await rejects(kv.deleteIfExists(k), "InvalidOptionsError", `deleteIfExists with ${label} as key`);
      await rejects(kv.compareAndDelete(k, 1), "InvalidOptionsError", `compareAndDelete with ${label} as key`);
    }
    await rejects(kv.set("k".repeat(16385), 1), "KeyTooLongError", "a key over 16384 bytes");
    await rejects(kv.list("user:"), "InvalidOptionsError", "list with a string argument");
    await rejects(kv.list({ prefix: 5 }), "InvalidOptionsError", "list with a number prefix");
    await rejects(kv.list({ limit: "10" }), "InvalidOptionsError", "list with a string limit");
    await rejects(kv.randomKey({ prefix: [] }), "InvalidOptionsError", "randomKey with an array prefix");
    await rejects(kv.list({ limt: 5 }), "InvalidOptionsError", "list with a misspelled option");
    await rejects(kv.randomKey({ prefx: "a" }), "InvalidOptionsError", "randomKey with a misspelled option");
    eq(await kv.size(), 0, "bad calls stored nothing");

    // close(): this KV object refuses further calls; others keep working.
    await closing.set("shared", 1);
    eq(await closing.close(), true, "close");
    eq(await closing.close(), true, "close twice");
    await rejects(closing.get("shared"), "StoreClosedError", "get after close");
    await rejects(closing.set("shared", 2), "StoreClosedError", "set after close");
    eq(await kv.get("shared"), 1, "another KV object on the same store still works");
  });
}
