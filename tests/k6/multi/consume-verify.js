// After producer and consumers: every produced token was taken exactly once.
import { openKv } from "k6/x/kv";
import { storeOptions, thresholds, ok, eq, guard } from "../lib/t.js";

const N = Number(__ENV.KV_N || 1500);

export const options = { iterations: 1, thresholds };

const kv = openKv(storeOptions());

export default async function () {
  await guard("verify", async () => {
    eq(await kv.get("produced"), N, "the producer made every token");
    eq((await kv.list({ prefix: "token:" })).length, 0, "no token left");
    const count = new Map();
    const byProc = new Map();
    for (const e of await kv.list({ prefix: "taken:" })) {
      // taken:token:<n>:<proc>
      const parts = e.key.split(":");
      const token = `${parts[1]}:${parts[2]}`;
      count.set(token, (count.get(token) || 0) + 1);
      byProc.set(parts[3], (byProc.get(parts[3]) || 0) + 1);
    }
    let dup = 0;
    let unknown = 0;
    for (const [token, c] of count) {
      if (c > 1) dup++;
      const n = Number(token.slice("token:".length));
      if (!(n >= 0 && n < N)) unknown++;
    }
    eq(dup, 0, "no token taken twice");
    eq(unknown, 0, "only produced tokens taken");
    eq(count.size, N, "every token taken");
    console.log(`taken per consumer process: ${JSON.stringify(Object.fromEntries(byProc))}`);
    ok(byProc.size >= 1, "consumers recorded their takes");
  });
}
