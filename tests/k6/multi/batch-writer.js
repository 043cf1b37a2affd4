// One of two k6 processes writing a group of ten keys as one batch, over
// and over, while another process reads the group (batch-reader.js): every
// setMany writes all ten with one value, deleteMany and deleteByPrefix
// remove all ten. No reader anywhere may see some changed and others not.
import { openKv } from "k6/x/kv";
import { storeOptions, thresholds, guard } from "../lib/t.js";

const N = Number(__ENV.KV_N || 600);
const GROUP = Array.from({ length: 10 }, (_, i) => `grp:${i}`);

export const options = {
  thresholds,
  scenarios: {
    write: { executor: "shared-iterations", vus: 2, iterations: N, maxDuration: "5m" },
  },
};

const kv = openKv(storeOptions());

export default async function () {
  await guard("batch-write", async () => {
    const v = { proc: Number(__ENV.KV_PROC), vu: __VU, iter: __ITER, pad: "x".repeat(__ITER % 200) };
    const rec = {};
    for (const k of GROUP) rec[k] = v;
    await kv.setMany(rec);
    if (__ITER % 7 === 3) await kv.deleteMany(GROUP);
    if (__ITER % 11 === 5) await kv.deleteByPrefix({ prefix: "grp:", limit: 100 });
  });
}
