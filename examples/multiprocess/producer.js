// Multi-process demo, producer role: adds orders to the shared store.
// Run it together with consumer.js (one or more processes) and monitor.js.
import { check } from "k6";
import { openKv } from "k6/x/kv";
import { store, waitForMonitor } from "./store.js";

const ORDERS = Number(__ENV.ORDERS || 3000);

export const options = {
  scenarios: {
    produce: { executor: "shared-iterations", vus: 2, iterations: ORDERS, maxDuration: "2m" },
  },
  thresholds: { checks: ["rate==1.0"] },
};

const kv = openKv(store);

export async function setup() {
  check(await waitForMonitor(kv), { "the monitor holds the store": (ok) => ok });
}

export default async function () {
  // incrementBy hands out unique order numbers, even across processes.
  const n = await kv.incrementBy("produced", 1);
  await kv.set(`order:${String(n).padStart(6, "0")}`, { n, producer: __ENV.ROLE || "producer" });
}

export async function teardown() {
  await kv.set("producer:done", true);
}
