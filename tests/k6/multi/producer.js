// Produces tokens token:0 .. token:N-1 while consumer processes take them,
// then marks the production done.
import { openKv } from "k6/x/kv";
import { storeOptions, thresholds, guard, pause } from "../lib/t.js";

const N = Number(__ENV.KV_N || 1500);

export const options = {
  thresholds,
  scenarios: {
    produce: { executor: "shared-iterations", vus: 2, iterations: N, maxDuration: "5m" },
  },
};

const kv = openKv(storeOptions());

export default async function () {
  await guard("produce", async () => {
    // incrementBy hands out unique numbers across VUs.
    const n = (await kv.incrementBy("produced", 1)) - 1;
    await kv.set(`token:${n}`, { n });
    if (n % 100 === 0) {
      await pause(5); // let the consumers catch up now and then
    }
  });
}

export async function teardown() {
  await kv.set("producer-done", true);
}
