// After the counter processes: the counter holds the exact total.
import { openKv } from "k6/x/kv";
import { storeOptions, thresholds, eq, guard } from "../lib/t.js";

const N = Number(__ENV.KV_N || 1000);
const PROCS = Number(__ENV.KV_PROCS || 3);

export const options = { iterations: 1, thresholds };

const kv = openKv(storeOptions());

export default async function () {
  await guard("verify", async () => {
    eq(await kv.get("counter"), N * PROCS, "no increment lost across processes");
    for (let p = 1; p <= PROCS; p++) {
      eq(await kv.get(`counter:${p}`), N, `process ${p} counted its own`);
    }
  });
}
