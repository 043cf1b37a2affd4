// slots.js - what the peers' k6 scripts (workload.js, claims.js) share: the
// schedule of measured slots, the counts they add to, and the summary that
// hands those counts to the shell scripts.
//
// Each operation of a script's OPS is a constant-vus scenario of DUR
// seconds, run REPS times over, one after the other, after an optional 1 s
// warm-up. With NPHASE > 1 several processes started together take turns:
// each (rep, op) gets NPHASE consecutive slots, the process with PHASE p
// runs in slot p of them (swapped every other rep), and the SOLO ops (the
// no-store floors) are run by PHASE 0 alone in one slot the others leave
// idle. Every completed operation adds to the Counter
// kv_ops{op:<op>,rep:<rep>}; handleSummary writes the counts per op and rep
// (plus the errors) as JSON to SUMMARY.
import { Counter } from "k6/metrics";

const GAP = 0.3; // seconds between two slots
const WARM = 1; // k6 wants at least 1 s per constant-vus scenario

const kvOps = new Counter("kv_ops");
const kvErrors = new Counter("kv_errors");

// The options' scenarios and thresholds (one threshold per counted series,
// so that the summary has it) for ops, each running exec "run" with the
// env OP and REP.
export function schedule({ ops, vus, dur, reps, phase = 0, nphase = 1, solo = [] }) {
  const scenarios = {};
  const thresholds = { kv_errors: ["count>=0"] };
  const slotLen = dur + GAP;
  const at = (slot, op, rep) => {
    scenarios[`${op}_${rep}`] = {
      executor: "constant-vus", vus, duration: `${dur}s`,
      startTime: `${(base + slot * slotLen).toFixed(2)}s`, gracefulStop: "5s",
      exec: "run", env: { OP: op, REP: `${rep}` },
    };
    thresholds[`kv_ops{op:${op},rep:${rep}}`] = ["count>=0"];
  };
  let base = 0;
  if (ops.includes("warm")) {
    scenarios.warm = {
      executor: "constant-vus", vus, duration: `${WARM}s`, startTime: "0s",
      gracefulStop: "5s", exec: "run", env: { OP: "warm", REP: "0" },
    };
    base = WARM + GAP;
  }
  let slot = 0;
  for (let rep = 0; rep < reps; rep++) {
    const mine = nphase > 1 && rep % 2 === 1 ? nphase - 1 - phase : phase;
    for (const op of ops.filter((o) => o !== "warm")) {
      if (nphase > 1 && solo.includes(op)) {
        if (phase === 0) at(slot, op, rep);
        slot += 1;
      } else {
        at(slot + mine, op, rep);
        slot += nphase;
      }
    }
  }
  return { scenarios, thresholds };
}

// count adds n completed operations of op to this scenario's repetition.
export function count(op, n) {
  kvOps.add(n, { op, rep: __ENV.REP });
}

// failed counts an operation that threw (DEBUG=1 logs why).
export function failed(op, e) {
  kvErrors.add(1, { op });
  if (__ENV.DEBUG) console.error(`${op}: ${e && (e.message || e.name || e)}`);
}

// summary is a script's handleSummary, for its DUR and VUS.
export function summary(dur, vus) {
  return (data) => summarize(data, dur, vus);
}

function summarize(data, dur, vus) {
  const out = { dur, vus, ops: {}, errors: 0 };
  for (const [name, m] of Object.entries(data.metrics)) {
    const mm = /^kv_ops\{op:([a-z]+),rep:([0-9]+)\}$/.exec(name);
    if (mm) (out.ops[mm[1]] = out.ops[mm[1]] || [])[+mm[2]] = m.values.count;
  }
  if (data.metrics.kv_errors) out.errors = data.metrics.kv_errors.values.count;
  const res = { stdout: "" };
  res[__ENV.SUMMARY || "/dev/stdout"] = JSON.stringify(out) + "\n";
  return res;
}
