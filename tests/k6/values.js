// Serialization: json round-trips every JSON value exactly and refuses what
// JSON cannot hold; string stores strings as they are.
import { openKv } from "k6/x/kv";
import { storeOptions, thresholds, ok, eq, rejects, guard } from "./lib/t.js";

export const options = { iterations: 1, vus: 1, thresholds };

const kv = openKv(storeOptions());
// The same store, read and written as strings.
const raw = openKv(storeOptions({ serialization: "string" }));

export async function setup() {
  await kv.clear();
}

const values = {
  zero: 0,
  int: 42,
  negative: -17,
  float: 3.141592653589793,
  tiny: 5e-324,
  huge: 1.7976931348623157e308,
  exponent: 1e21,
  maxSafe: 9007199254740991,
  empty: "",
  text: "hello",
  escapes: "quote \" backslash \\ newline \n tab \t nul \u0000 \u001f",
  unicode: "é ü ß 日本語 😀 \u2028",
  html: "</script>&<>",
  yes: true,
  no: false,
  nothing: null,
  emptyArray: [],
  emptyObject: {},
  nested: { b: 1, a: [1, "two", { three: [3] }, null, false], "": "empty key", "日本": "語" },
  order: { z: 1, y: 2, x: 3, "10": "a", "2": "b" },
};

export default async function () {
  await guard("json", async () => {
    for (const [k, v] of Object.entries(values)) {
      await kv.set(k, v);
      const got = await kv.get(k);
      ok(JSON.stringify(got) === JSON.stringify(v) && typeof got === typeof v,
        `json round trip: ${k}`, `got ${JSON.stringify(got)}, want ${JSON.stringify(v)}`);
    }
    const listed = await kv.list();
    eq(listed.length, Object.keys(values).length, "list returns every value");
    ok(listed.every((e) => JSON.stringify(e.value) === JSON.stringify(values[e.key])), "list decodes values");

    // What JSON cannot hold is a SerializerError and nothing is stored.
    const cyclic = { name: "loop" };
    cyclic.self = cyclic;
    const bad = {
      NaN: NaN, Infinity: Infinity, "-Infinity": -Infinity, function: () => 1,
      "nested NaN": { a: [1, NaN] }, "nested function": { f() {} }, cycle: cyclic, BigInt: 10n,
    };
    for (const [label, v] of Object.entries(bad)) {
      await rejects(kv.set("bad", v), "SerializerError", `json refuses ${label}`);
    }
    eq(await kv.exists("bad"), false, "refused values are not stored");

    // undefined is stored as null (as xk6-kv does); Dates through toJSON.
    await kv.set("undef", undefined);
    eq(await kv.get("undef"), null, "undefined is stored as null");
    await kv.set("date", new Date(Date.UTC(2024, 0, 2)));
    eq(await kv.get("date"), "2024-01-02T00:00:00.000Z", "a Date is stored as its JSON string");

    // The bytes behind json values are their JSON text.
    eq(await raw.get("nested"), JSON.stringify(values.nested), "json values are stored as JSON text");
  });

  await guard("string", async () => {
    await raw.set("s", "plain {not json}");
    eq(await raw.get("s"), "plain {not json}", "string mode stores strings as they are");
    eq(await kv.get("s"), "plain {not json}", "a json opener reads string values as strings");
    await raw.set("u", "é 😀");
    eq(await raw.get("u"), "é 😀", "string mode keeps unicode");
    await raw.set("n", 12);
    eq(await raw.get("n"), "12", "string mode stores a number as its text");
    await raw.set("b", false);
    eq(await raw.get("b"), "false", "string mode stores a boolean as its text");
    await raw.set("bytes", new Uint8Array([107, 54]).buffer);
    eq(await raw.get("bytes"), "k6", "string mode stores an ArrayBuffer's bytes");
    for (const [label, v] of Object.entries({ null: null, undefined: undefined, object: { a: 1 }, array: [1] })) {
      await rejects(raw.set("bad", v), "SerializerError", `string mode refuses ${label}`);
    }
    eq(await raw.exists("bad"), false, "refused values are not stored");
    eq(await raw.incrementBy("sc", 2), 2, "incrementBy in string mode");
    eq(await raw.get("sc"), "2", "string mode reads the counter as text");
    eq(await raw.compareAndSwap("s", "plain {not json}", "new"), true, "compareAndSwap in string mode");
    eq(await raw.swap("s", "newer"), { previous: "new", loaded: true }, "swap in string mode");
    eq(await raw.getOrSet("s", "x"), { value: "newer", loaded: true }, "getOrSet in string mode");
  });
}
