// k6 crash loop: the verifier, run once every writer is dead.
//
// KV_EXPECT names a JSON file the driver wrote from the writers' logs:
//   { "keys": { "<key>": "<value>", ... },          acknowledged sets
//     "counters": { "c:<proc>": [acked, intents] } }
// Checks: every acknowledged key holds its value; each counter is at least
// its acknowledged increments and at most its logged intents; every w: key
// in the store was at least intended by a writer (its value matches its
// name); list() and size() agree, list() is sorted; randomKey() draws
// existing keys.
import { check } from "k6";
import { openKv } from "k6/x/kv";

export const options = { iterations: 1, vus: 1, thresholds: { checks: ["rate==1.0"] } };

const expect = JSON.parse(open(__ENV.KV_EXPECT));
const kv = openKv({ backend: "disk", path: __ENV.KV_PATH, trackKeys: true });

function verdict(label, failures, total) {
  const passed = check(null, { [label]: () => failures.length === 0 });
  const shown = failures.slice(0, 10).join("; ");
  console.log(`${passed ? "ok" : "FAILED"}: ${label}: ${total - failures.length}/${total}` +
    (failures.length ? ` (${failures.length} failures: ${shown})` : ""));
}

export default async function () {
  // 1. acknowledged writes
  const keys = Object.keys(expect.keys);
  let bad = [];
  for (const k of keys) {
    let v;
    try {
      v = await kv.get(k);
    } catch (e) {
      bad.push(`${k}: ${e.name}`);
      continue;
    }
    if (v !== expect.keys[k]) bad.push(`${k} = ${JSON.stringify(v)}, want ${expect.keys[k]}`);
  }
  verdict("every acknowledged set is there", bad, keys.length);

  // 2. counters
  bad = [];
  const cs = Object.keys(expect.counters);
  for (const c of cs) {
    const [acked, intents] = expect.counters[c];
    let v = 0;
    try {
      v = await kv.get(c);
    } catch (e) {
      if (e.name !== "KeyNotFoundError") bad.push(`${c}: ${e.name}`);
    }
    if (v < acked || v > intents) bad.push(`${c} = ${v}, acknowledged ${acked}, intended ${intents}`);
  }
  verdict("counters between acknowledged and intended increments", bad, cs.length);

  // 3. the listing agrees with size(), is sorted, and holds only real writes
  const all = await kv.list();
  const size = await kv.size();
  bad = [];
  if (all.length !== size) bad.push(`list() has ${all.length} entries, size() says ${size}`);
  for (let i = 1; i < all.length; i++) {
    if (!(all[i - 1].key < all[i].key)) bad.push(`list() out of order at ${all[i].key}`);
  }
  let ws = 0;
  for (const e of all) {
    if (!e.key.startsWith("w:")) continue;
    ws++;
    const tail = e.key.split(":")[3];
    if (e.value !== tail) bad.push(`${e.key} holds ${JSON.stringify(e.value)}`);
  }
  if (ws < keys.length) bad.push(`only ${ws} w: keys listed, ${keys.length} acknowledged`);
  verdict("list() and size() agree, sorted, only written values", bad, all.length);

  // 4. randomKey draws existing keys
  bad = [];
  for (let i = 0; i < 200; i++) {
    const k = await kv.randomKey(i % 2 ? { prefix: "w:" } : undefined);
    if (k === "" || !(await kv.exists(k))) bad.push(`randomKey gave ${JSON.stringify(k)}`);
  }
  verdict("randomKey draws existing keys", bad, 200);
  console.log(`stats: ${size} keys, ${keys.length} acknowledged sets, ${ws} w: keys present`);
}
