// One of several k6 processes adding to one counter at the same time.
import { openKv } from "k6/x/kv";
import { storeOptions, thresholds, guard } from "../lib/t.js";

const N = Number(__ENV.KV_N || 1000);

export const options = {
  thresholds,
  scenarios: {
    add: { executor: "shared-iterations", vus: 4, iterations: N, maxDuration: "5m" },
  },
};

const kv = openKv(storeOptions());

export default async function () {
  await guard("add", async () => {
    await kv.incrementBy("counter", 1);
    await kv.incrementBy(`counter:${__ENV.KV_PROC}`, 1);
  });
}
