// One of two consumer processes: several VUs take random tokens until the
// producer is done and none is left. Each token taken is recorded under
// taken:<token>:<process>, so that the verifier can spot a token taken twice.
import { openKv } from "k6/x/kv";
import { storeOptions, thresholds, ok, guard, pause } from "../lib/t.js";

export const options = {
  thresholds,
  scenarios: {
    consume: { executor: "per-vu-iterations", vus: 3, iterations: 1, maxDuration: "5m" },
  },
};

const kv = openKv(storeOptions());
const deadline = Date.now() + 120000;

export default async function () {
  await guard("consume", async () => {
    let took = 0;
    while (Date.now() < deadline) {
      const key = await kv.randomKey({ prefix: "token:" });
      if (key === "") {
        if (await kv.exists("producer-done")) {
          // Production is over: one last look, then stop.
          if ((await kv.randomKey({ prefix: "token:" })) === "") break;
          continue;
        }
        await pause(2);
        continue;
      }
      if (await kv.deleteIfExists(key)) {
        await kv.set(`taken:${key}:${__ENV.KV_PROC}`, 1);
        took++;
      }
    }
    ok(Date.now() < deadline, "consumer finished before its deadline");
    console.log(`consumer ${__ENV.KV_PROC} VU ${__VU} took ${took} tokens`);
  });
}
