// claims-crash.sh, seeding step: KV_N tokens token:00000.. in the store.
import { openKv } from "k6/x/kv";
import { thresholds, ok, guard } from "../lib/t.js";

export const options = { thresholds, iterations: 1 };

const kv = openKv({ backend: "disk", path: __ENV.KV_PATH, trackKeys: true });
const N = Number(__ENV.KV_N);

export default async function () {
  await guard("seed", async () => {
    const rec = {};
    for (let i = 0; i < N; i++) rec[`token:${String(i).padStart(5, "0")}`] = { n: i };
    const { written } = await kv.setMany(rec);
    ok(written === N, "every token is seeded", `${written} of ${N}`);
  });
}
