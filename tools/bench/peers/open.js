// open.js - time openKv() in the init context (driven by run.sh).
// Every init context (the options pass __VU=0, then each VU) logs
// "OPENKV_MS <ms> vu=<n>"; the first one in a process does the real open.
import { openKv } from "k6/x/kv";

const t0 = Date.now();
const kv = openKv({ backend: "disk", path: __ENV.STORE, trackKeys: true });
console.log(`OPENKV_MS ${Date.now() - t0} vu=${__VU}`);

export const options = { vus: 1, iterations: 1 };

export default async function () {
  const k = await kv.randomKey();
  if (!k) throw new Error("empty store");
}
