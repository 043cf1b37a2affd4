// workload.js - the k6-level peers workload (driven by tools/bench/peers/run.sh).
//
// One k6 process runs each operation in OPS as its own constant-vus scenario,
// one after the other, DUR seconds each, REPS times over. Every completed
// operation adds to the Counter kv_ops{op:<op>,rep:<rep>}; handleSummary
// writes those counts (plus errors) as JSON to SUMMARY, and run.sh turns them
// into ops/s (count / DUR) per repetition. With NPHASE=2 two processes
// (PHASE=0 and PHASE=1, same START_AT) take turns slot by slot: a paired,
// time-interleaved comparison on a noisy machine.
//
// Environment:
//   IMPL      kv (k6/x/kv: ours or the xk6-kv fork, whichever the binary has) | redis
//   BACKEND   memory | disk (IMPL=kv)
//   TRACK     1 | 0: trackKeys (IMPL=kv)
//   STORE     memory name or disk path (IMPL=kv)
//   REDIS     redis URL (IMPL=redis), e.g. redis://127.0.0.1:6399
//   OPS       comma list of: warm get set mix rk rkp noop getm setm noopm noopr
//             fparse fstring flit getr
//             (mix = 75% get / 25% set; rk = randomKey(); rkp = randomKey({prefix});
//             warm = a 1 s mix run first so that every measured scenario finds
//             the process warmed up (run.sh does not report it); noop = the same
//             loop awaiting an already-resolved promise instead of the store:
//             the floor that k6 and the JS engine put under every row;
//             getm/setm = getMany/setMany of MANY random keys, counted as
//             MANY operations: keys per second, against get/set's; noopm =
//             the floor under getm: the same keys made, then a resolved promise;
//             noopr = the floor under setm: the same record made, then a
//             resolved promise;
//             fparse/fstring = the codec floor of get/set for SHAPE: the key
//             made as get/set make it, then awaiting a resolved promise of
//             JSON.parse of the stored text, or of JSON.stringify of the
//             value, no store; flit = the construction floor: the key made,
//             then awaiting a resolved promise of the value built from its
//             literal, no store; getr = a get whose value is then read,
//             every field of it, as a script that uses what it got does)
//   VUS, DUR  VUs per scenario and seconds per scenario (at least 1)
//   REPS      repetitions of the OPS sequence (default 1)
//   PHASE, NPHASE  this process's turn and the number of processes taking turns
//   SOLO      comma list of OPS measured by the PHASE 0 process only, in one
//             slot that the others leave idle (the no-store floors)
//   SHAPE     the value: str32 (default), user, doc, nums (see SHAPES)
//   MANY      keys per getMany/setMany (getm, setm, noopm), default 100
//   NKEYS     keys filled in setup() (p<i%10>:<i>), default 10000
//   BATCH     operations per iteration, default 10
//   FILL      1 (default): setup() writes the keys unless they are there already
//   START_AT  epoch ms: setup() waits until then (several processes start together)
//   SUMMARY   where handleSummary writes the JSON counts
import { sleep } from "k6";
import { count, failed, schedule, summary } from "./slots.js";

const IMPL = __ENV.IMPL || "kv";
// Loaded by name so that one script serves k6 v2 binaries (k6/x/kv; no
// built-in Redis module since v2) and the plain k6 v1 that run.sh keeps
// for the Redis rows (k6/experimental/redis).
const redis = IMPL === "redis" ? require("k6/experimental/redis") : null;
const openKv = IMPL === "redis" ? null : require("k6/x/kv").openKv;
const OPS = (__ENV.OPS || "get").split(",").filter((s) => s);
const VUS = parseInt(__ENV.VUS || "1", 10);
const DUR = parseFloat(__ENV.DUR || "3");
const NKEYS = parseInt(__ENV.NKEYS || "10000", 10);
const BATCH = parseInt(__ENV.BATCH || "10", 10);
// SHAPE: the value stored and read (issue 13): str32 (a 32-byte string, the
// default), user (a ~150-byte user record), doc (a ~1 KiB document), nums
// (an array of 20 numbers).
const SHAPES = {
  str32: () => "v".repeat(32),
  user: () => ({ id: 12345, name: "name-12345", email: "user12345@example.com", tags: ["a", "b", "c"],
    active: true, score: 17.5, address: { street: "1 Main St", city: "Springfield", zip: "12345" } }),
  doc: () => ({ id: "order-000123", customer: { id: 77, name: "Grace Hopper", email: "grace@example.com" },
    items: Array.from({ length: 8 }, (_, i) => ({ sku: `SKU-${1000 + i}`, qty: i + 1, price: 9.99 + i,
      title: `Item number ${i} with a longer title` })),
    shipping: { street: "1 Main St", city: "Springfield", zip: "12345", country: "US" },
    notes: "x".repeat(200), created: "2026-12-06T00:00:00Z", paid: true }),
  nums: () => Array.from({ length: 20 }, (_, i) => i * 3.25),
};
// makeValue builds the value anew (the construction floor, op flit).
const makeValue = SHAPES[__ENV.SHAPE || "str32"] || SHAPES.str32;
const VALUE = makeValue();
// The codec floor: what producing the value costs with no store at all.
const VALUE_TEXT = JSON.stringify(VALUE);
const PREFIX = "p3:";
const MANY = parseInt(__ENV.MANY || "100", 10);

let kv = null;
let client = null;
if (IMPL === "redis") {
  const Client = redis.Client || redis.default.Client;
  client = new Client(__ENV.REDIS || "redis://127.0.0.1:6399");
} else {
  const opts = { backend: __ENV.BACKEND || "memory", trackKeys: __ENV.TRACK === "1" };
  if (opts.backend === "memory") opts.name = __ENV.STORE || "peers";
  else opts.path = __ENV.STORE || "./peers.kv";
  kv = openKv(opts);
}

const { scenarios, thresholds } = schedule({
  ops: OPS, vus: VUS, dur: DUR, reps: parseInt(__ENV.REPS || "1", 10),
  phase: parseInt(__ENV.PHASE || "0", 10), nphase: parseInt(__ENV.NPHASE || "1", 10),
  solo: (__ENV.SOLO || "").split(",").filter((s) => s),
});

export const options = {
  scenarios,
  thresholds,
  setupTimeout: "600s",
  summaryTrendStats: ["avg"],
  discardResponseBodies: true,
};

function keyAt(i) {
  return `p${i % 10}:${i}`;
}

function randomIndex() {
  return Math.floor(Math.random() * NKEYS);
}

async function filled() {
  // Whether the last key is there already (several processes share a store).
  if (client) {
    try {
      return (await client.get(keyAt(NKEYS - 1))) !== null;
    } catch (e) {
      return false;
    }
  }
  return (await kv.size()) >= NKEYS;
}

// The operations, chosen once. Plain (not async) functions that hand back the
// store's own promise: an async wrapper would add a promise and an await of
// its own to every operation, a cost the workload would then charge to the
// store (it was a third of a JS get in an earlier version of this file).
// Redis stores text: its users stringify and parse, so the workload does.
const setKey = client
  ? (typeof VALUE === "string" ? (k) => client.set(k, VALUE, 0) : (k) => client.set(k, JSON.stringify(VALUE), 0))
  : (k) => kv.set(k, VALUE);
const getKey = client
  ? (typeof VALUE === "string" ? (k) => client.get(k) : (k) => client.get(k).then((t) => JSON.parse(t)))
  : (k) => kv.get(k);
const anyKey = client ? () => client.randomKey() : () => kv.randomKey();
const RKP = { prefix: PREFIX };
const noop = (k) => Promise.resolve(k);
// Reads every field of v: what a value that is used costs beyond the get
// (for a store that hands back a lazily converted Go map, that is where the
// conversion happens).
function readAll(v) {
  if (v === null || typeof v !== "object") return 1;
  let n = 0;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) n += readAll(v[i]);
    return n;
  }
  for (const k in v) n += readAll(v[k]);
  return n;
}

function someKeys() {
  const ks = new Array(MANY);
  for (let i = 0; i < MANY; i++) ks[i] = keyAt(randomIndex());
  return ks;
}
function someRecord() {
  const rec = {};
  for (let i = 0; i < MANY; i++) rec[keyAt(randomIndex())] = VALUE;
  return rec;
}

export async function setup() {
  if (__ENV.FILL !== "0" && !(await filled())) {
    for (let i = 0; i < NKEYS; i++) await setKey(keyAt(i));
  }
  const start = parseInt(__ENV.START_AT || "0", 10);
  while (Date.now() < start) sleep(0.005);
}

export async function run() {
  const op = __ENV.OP;
  let done = 0;
  for (let b = 0; b < BATCH; b++) {
    try {
      if (op === "get") {
        await getKey(keyAt(randomIndex()));
      } else if (op === "set") {
        await setKey(keyAt(randomIndex()));
      } else if (op === "mix" || op === "warm") {
        if (Math.random() < 0.75) await getKey(keyAt(randomIndex()));
        else await setKey(keyAt(randomIndex()));
      } else if (op === "rk") {
        const k = await anyKey();
        if (!k) throw new Error("randomKey found nothing");
      } else if (op === "rkp") {
        const k = await kv.randomKey(RKP);
        if (!k) throw new Error("randomKey(prefix) found nothing");
      } else if (op === "noop") {
        await noop(keyAt(randomIndex()));
      } else if (op === "fparse") {
        // The floors make the key their operation makes and drop it: the same
        // loop, without the store, so the key is not charged to the store.
        keyAt(randomIndex());
        await Promise.resolve(JSON.parse(VALUE_TEXT));
      } else if (op === "flit") {
        keyAt(randomIndex());
        await Promise.resolve(makeValue());
      } else if (op === "getr") {
        const v = await getKey(keyAt(randomIndex()));
        if (v === null || readAll(v) === 0) throw new Error("getr: an empty value");
      } else if (op === "fstring") {
        keyAt(randomIndex());
        await Promise.resolve(JSON.stringify(VALUE));
      } else if (op === "noopm") {
        await noop(someKeys());
        done += MANY - 1;
      } else if (op === "noopr") {
        await noop(someRecord());
        done += MANY - 1;
      } else if (op === "getm") {
        await kv.getMany(someKeys());
        done += MANY - 1;
      } else if (op === "setm") {
        await kv.setMany(someRecord());
        done += MANY - 1;
      } else {
        throw new Error(`unknown op ${op}`);
      }
      done++;
    } catch (e) {
      failed(op, e);
    }
  }
  count(op, done);
}

export const handleSummary = summary(DUR, VUS);
