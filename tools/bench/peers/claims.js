// claims.js - the claim cycle from k6 against taking a token with
// deleteIfExists, on one store (driven by tools/bench/peers/claims.sh).
//
// One k6 process runs each operation in OPS as its own constant-vus
// scenario, one after the other, DUR seconds each, REPS times over, on a
// store of NKEYS users u:00000.. (trackKeys on). Every completed cycle adds
// to the Counter kv_ops{op:<op>,rep:<rep>}; handleSummary writes the counts
// as JSON to SUMMARY. Every cycle leaves the store as it found it, so all
// operations see the same store contents:
//   claim    claimRandom({prefix, owner, ttl}) + completeClaim(c, {deleteKey: false})
//            (check a user out of the pool and back in)
//   claimdel claimRandom + completeClaim(c) (the user is deleted) + set(key)
//            back (a consumed token, refilled)
//   take     randomKey({prefix}) + deleteIfExists(key) + set(key) back (a
//            token taken without a lease, refilled; a false deleteIfExists,
//            another VU took it first, is retried and not counted). It does
//            not read the value, which claimRandom hands out with the claim
//            (a taker that needs it adds a get: a fourth call)
//   noop     the same loop awaiting two resolved promises (the claim cycle's
//            two calls) with no store: k6's floor under the claim cycle
//   warm     a 1 s claim cycle first, not reported (not a mix: a take
//            deletes the key, which ends another VU's claim on it, and that
//            VU's completeClaim is then rightly false)
// Environment: BACKEND (memory|disk), STORE (name or path), OPS, VUS, DUR,
// REPS, NKEYS (default 10000), BATCH (cycles per iteration, default 10),
// SUMMARY.
import { openKv } from "k6/x/kv";
import { count, failed, schedule, summary } from "./slots.js";

const OPS = (__ENV.OPS || "claim").split(",").filter((s) => s);
const VUS = parseInt(__ENV.VUS || "1", 10);
const DUR = parseFloat(__ENV.DUR || "1");
const NKEYS = parseInt(__ENV.NKEYS || "10000", 10);
const BATCH = parseInt(__ENV.BATCH || "10", 10);
const REPS = parseInt(__ENV.REPS || "1", 10);

const opts = { backend: __ENV.BACKEND || "memory", trackKeys: true };
if (opts.backend === "memory") opts.name = __ENV.STORE || "claims-bench";
else opts.path = __ENV.STORE || "./claims-bench.kv";
const kv = openKv(opts);

const { scenarios, thresholds } = schedule({ ops: OPS, vus: VUS, dur: DUR, reps: REPS });

export const options = { scenarios, thresholds, setupTimeout: "600s", summaryTrendStats: ["avg"] };

const PREFIX = { prefix: "u:" };
const CLAIM = { prefix: "u:", owner: "bench", ttl: 30000 };
const KEEP = { deleteKey: false };
const user = (i) => ({ id: i, login: `load-user-${i}` });

export async function setup() {
  await kv.clear();
  const rec = {};
  for (let i = 0; i < NKEYS; i++) rec[`u:${String(i).padStart(5, "0")}`] = user(i);
  await kv.setMany(rec);
}

async function cycle(op) {
  if (op === "claim") {
    const c = await kv.claimRandom(CLAIM);
    if (!c) throw new Error("claimRandom found nothing");
    if (!(await kv.completeClaim(c, KEEP))) throw new Error("completeClaim false");
  } else if (op === "claimdel") {
    const c = await kv.claimRandom(CLAIM);
    if (!c) throw new Error("claimRandom found nothing");
    if (!(await kv.completeClaim(c))) throw new Error("completeClaim false");
    await kv.set(c.key, c.entry.value);
  } else if (op === "take") {
    for (;;) {
      const key = await kv.randomKey(PREFIX);
      if (!key) throw new Error("randomKey found nothing");
      if (await kv.deleteIfExists(key)) {
        await kv.set(key, user(Number(key.slice(2))));
        return;
      }
    }
  } else if (op === "noop") {
    const c = await Promise.resolve(CLAIM);
    await Promise.resolve(c);
  } else {
    throw new Error(`unknown op ${op}`);
  }
}

export async function run() {
  const op = __ENV.OP;
  let done = 0;
  for (let b = 0; b < BATCH; b++) {
    try {
      await cycle(op === "warm" ? "claim" : op);
      done++;
    } catch (e) {
      failed(op, e);
    }
  }
  count(op, done);
}

export const handleSummary = summary(DUR, VUS);
