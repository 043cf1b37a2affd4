// k6-ops.js - operations per second of k6/x/kv as a script sees them:
// set, get and randomKey, with 1 and with 8 VUs, one after the other.
//
//   k6 run --address= tools/bench/k6-ops.js
//   k6 run --address= -e BACKEND=disk -e KV_PATH=/tmp/bench.kv -e DURATION=10 -e OUT=ops.json tools/bench/k6-ops.js
//
// Environment (all optional):
//   BACKEND   memory (default) or disk
//   KV_NAME   memory store name (default k6-bench-ops)
//   KV_PATH   disk store path (default ./.k6-bench.kv)
//   TRACK     trackKeys, true (default) or false
//   DURATION  seconds per measurement (default 5)
//   BATCH     operations per iteration (default 1000), to keep k6's own
//             per-iteration cost out of the figure
//   KEYS      keys preloaded for get and randomKey (default 100000)
//   VALUE     bytes of each value (default 64)
//   OUT       also write the results as JSON to this file
//
// Every operation is awaited, as a script would. The figure for a
// measurement is the operations it counted divided by DURATION.
import { Counter } from "k6/metrics";
import { openKv } from "k6/x/kv";

const DURATION = Number(__ENV.DURATION || 5);
const BATCH = Number(__ENV.BATCH || 1000);
const KEYS = Number(__ENV.KEYS || 100000);
const VALUE = "v".repeat(Number(__ENV.VALUE || 64));
const GAP = 1; // seconds between measurements

const kvOptions = { backend: __ENV.BACKEND || "memory", trackKeys: (__ENV.TRACK || "true") === "true" };
if (kvOptions.backend === "disk") {
  kvOptions.path = __ENV.KV_PATH || "./.k6-bench.kv";
} else {
  // Removed when the run ends. Every VU's init context computes this, so
  // it must not be random: give concurrent runs different KV_NAMEs.
  kvOptions.name = __ENV.KV_NAME || "k6-bench-ops";
}

const kv = openKv(kvOptions);
const ops = new Counter("kv_ops");

const MEASUREMENTS = [
  ["set", 1], ["set", 8],
  ["get", 1], ["get", 8],
  ["randomKey", 1], ["randomKey", 8],
];

function scenarioName(op, vus) {
  return `${op}_${vus}vu`;
}

const scenarios = {};
const thresholds = {};
MEASUREMENTS.forEach(([op, vus], i) => {
  const name = scenarioName(op, vus);
  scenarios[name] = {
    executor: "constant-vus",
    exec: op,
    vus,
    duration: `${DURATION}s`,
    startTime: `${i * (DURATION + GAP)}s`,
    gracefulStop: "5s",
  };
  // A threshold makes the summary keep the per-scenario count.
  thresholds[`kv_ops{scenario:${name}}`] = ["count>=0"];
});

export const options = { scenarios, thresholds, setupTimeout: "5m" };

function keyFor(i) {
  return `bench:${i}`;
}

export async function setup() {
  await kv.clear();
  for (let i = 0; i < KEYS; i++) {
    await kv.set(keyFor(i), VALUE);
  }
}

// Each VU walks the key space from its own starting point.
let cursor = Math.floor(Math.random() * KEYS);

export async function set() {
  for (let i = 0; i < BATCH; i++) {
    cursor = (cursor + 1) % KEYS;
    await kv.set(keyFor(cursor), VALUE);
  }
  ops.add(BATCH);
}

export async function get() {
  for (let i = 0; i < BATCH; i++) {
    cursor = (cursor + 7919) % KEYS;
    await kv.get(keyFor(cursor));
  }
  ops.add(BATCH);
}

export async function randomKey() {
  for (let i = 0; i < BATCH; i++) {
    await kv.randomKey();
  }
  ops.add(BATCH);
}

export function handleSummary(data) {
  const results = {
    backend: kvOptions.backend,
    trackKeys: kvOptions.trackKeys,
    durationSeconds: DURATION,
    batch: BATCH,
    keys: KEYS,
    valueBytes: VALUE.length,
    opsPerSecond: {},
  };
  const lines = [`k6/x/kv ops/s (${kvOptions.backend}, trackKeys=${kvOptions.trackKeys}, ${DURATION}s each)`];
  for (const [op, vus] of MEASUREMENTS) {
    const name = scenarioName(op, vus);
    const m = data.metrics[`kv_ops{scenario:${name}}`];
    const count = m ? m.values.count : 0;
    const rate = Math.round(count / DURATION);
    results.opsPerSecond[name] = rate;
    lines.push(`  ${op.padEnd(10)} ${String(vus).padStart(2)} VU  ${String(rate).padStart(10)} ops/s`);
  }
  const out = { stdout: lines.join("\n") + "\n" };
  if (__ENV.OUT) {
    out[__ENV.OUT] = JSON.stringify(results, null, 2) + "\n";
  }
  return out;
}
