// Multi-process demo, consumer role: several VUs take random orders until
// the producer is done and none is left. Start several consumer processes
// with different CONSUMER names: each order goes to exactly one of them.
import { check } from "k6";
import { openKv } from "k6/x/kv";
import { store, waitForMonitor, pause } from "./store.js";

const me = __ENV.CONSUMER || "consumer";

export const options = {
  scenarios: {
    consume: { executor: "per-vu-iterations", vus: 3, iterations: 1, maxDuration: "2m" },
  },
  thresholds: { checks: ["rate==1.0"] },
};

const kv = openKv(store);

export async function setup() {
  check(await waitForMonitor(kv), { "the monitor holds the store": (ok) => ok });
}

export default async function () {
  for (;;) {
    const key = await kv.randomKey({ prefix: "order:" }); // "" when none
    if (key === "") {
      if ((await kv.exists("producer:done")) && (await kv.randomKey({ prefix: "order:" })) === "") {
        break; // nothing left and nothing more coming
      }
      await pause(5);
      continue;
    }
    // Another VU or process may have taken it since randomKey: only one
    // deleteIfExists per key resolves to true.
    if (await kv.deleteIfExists(key)) {
      // setIfAbsent would be false if anyone had recorded this order before.
      const first = await kv.setIfAbsent(`taken:${key}`, me);
      check(first, { "each order is taken once": (ok) => ok });
      await kv.incrementBy(`consumed:${me}`, 1);
      await kv.incrementBy("consumed", 1);
    }
  }
}
