// scan.js - a full scanKeys of N keys (default 1,000,000) in pages of PAGE
// (default 1,000), and count({prefix}), timed from k6. Seeds the store with
// setMany first (N / 1000 batches). TRACK=1 opens with trackKeys; without
// it the first paged scan turns the index on (docs/api.md), and that cost is
// reported apart. Prints one JSON line (to SUMMARY if set, else stdout).
//
//   k6 run -q -e BACKEND=memory -e N=1000000 tools/bench/peers/scan.js
import { openKv } from "k6/x/kv";
import { Gauge } from "k6/metrics";

// handleSummary runs apart from the iteration: the figures reach it as gauges.
const FIGS = ["seedMs", "firstPageMs", "otherPagesMs", "pages", "countPrefixUs", "counted", "keys"];
const gauges = Object.fromEntries(FIGS.map((f) => [f, new Gauge(`scan_${f}`)]));

const N = parseInt(__ENV.N || "1000000", 10);
const PAGE = parseInt(__ENV.PAGE || "1000", 10);
const opts = { backend: __ENV.BACKEND || "memory", trackKeys: __ENV.TRACK === "1" };
if (opts.backend === "memory") opts.name = __ENV.STORE || `scan-bench-${Date.now()}`;
else opts.path = __ENV.STORE || `./scan-bench-${Date.now()}.kv`;
const kv = openKv(opts);

export const options = { iterations: 1, setupTimeout: "600s", teardownTimeout: "60s" };

export default async function () {
  let t = Date.now();
  for (let b = 0; b < N / 1000; b++) {
    const rec = {};
    for (let i = 0; i < 1000; i++) rec[`u:${String(b * 1000 + i).padStart(8, "0")}`] = i;
    await kv.setMany(rec);
  }
  const seedMs = Date.now() - t;

  t = Date.now();
  const first = await kv.scanKeys({ prefix: "u:", limit: PAGE });
  const firstMs = Date.now() - t;
  let cursor = first.cursor, n = first.keys.length, pages = 1;
  t = Date.now();
  while (cursor) {
    const p = await kv.scanKeys({ prefix: "u:", limit: PAGE, cursor });
    n += p.keys.length;
    pages++;
    cursor = p.cursor;
  }
  const restMs = Date.now() - t;

  t = Date.now();
  const reps = 1000;
  let c = 0;
  for (let i = 0; i < reps; i++) c = await kv.count({ prefix: "u:0000" });
  const countUs = ((Date.now() - t) * 1000) / reps;

  if (n !== N) throw new Error(`scanned ${n} keys of ${N}`);
  const figs = { seedMs, firstPageMs: firstMs, otherPagesMs: restMs, pages, countPrefixUs: countUs,
    counted: c, keys: n };
  for (const f of FIGS) gauges[f].add(figs[f]);
  await kv.clear();
}

export function handleSummary(data) {
  const out = { backend: opts.backend, track: opts.trackKeys, page: PAGE };
  for (const f of FIGS) {
    const m = data.metrics[`scan_${f}`];
    out[f] = m ? m.values.value : null;
  }
  const res = { stdout: "" };
  res[__ENV.SUMMARY || "/dev/stdout"] = JSON.stringify(out) + "\n";
  return res;
}
