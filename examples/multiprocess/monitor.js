// Multi-process demo, monitor role: attaches first (a memory store lives as
// long as one process has it open), shows progress while the producer and
// consumer processes work, then checks that every order was taken once.
import { check } from "k6";
import { openKv } from "k6/x/kv";
import { store, pause } from "./store.js";

const ORDERS = Number(__ENV.ORDERS || 3000);

export const options = {
  iterations: 1,
  thresholds: { checks: ["rate==1.0"] },
};

const kv = openKv(store);

async function count(key) {
  return (await kv.exists(key)) ? await kv.get(key) : 0;
}

export default async function () {
  await kv.clear();
  await kv.set("monitor:ready", true);
  const deadline = Date.now() + 120000;
  let last = "";
  for (;;) {
    const produced = await count("produced");
    const consumed = await count("consumed");
    const line = `produced ${produced}, consumed ${consumed}, waiting ${produced - consumed}`;
    if (line !== last) {
      console.log(line);
      last = line;
    }
    if ((await kv.exists("producer:done")) && consumed >= produced) break;
    if (Date.now() > deadline) break;
    await pause(200);
  }

  const produced = await count("produced");
  const taken = await kv.list({ prefix: "taken:" });
  const byConsumer = {};
  for (const { value } of taken) {
    byConsumer[value] = (byConsumer[value] || 0) + 1;
  }
  console.log(`orders produced: ${produced}`);
  console.log(`orders taken per consumer process: ${JSON.stringify(byConsumer)}`);
  check(null, {
    "every order was produced": () => produced === ORDERS,
    "every order was taken exactly once": () => taken.length === produced,
  });
  check(await kv.list({ prefix: "order:" }), { "no order left over": (left) => left.length === 0 });
  check(byConsumer, { "more than one consumer process took orders": (b) => Object.keys(b).length > 1 });
}
