// One of three k6 processes, each running one execution segment of the same
// test, writing one disk store. Together they write keys w:0 .. w:N-1.
import exec from "k6/execution";
import { openKv } from "k6/x/kv";
import { storeOptions, thresholds, ok, guard } from "../lib/t.js";

const N = Number(__ENV.KV_N || 600);

export const options = {
  thresholds,
  scenarios: {
    write: { executor: "shared-iterations", vus: 6, iterations: N, maxDuration: "5m" },
  },
};

const kv = openKv(storeOptions());

export default async function () {
  await guard("write", async () => {
    const i = exec.scenario.iterationInTest;
    const v = { i, segment: __ENV.KV_SEGMENT, vu: exec.vu.idInTest };
    ok((await kv.set(`w:${i}`, v)).i === i, "set resolves");
    await kv.incrementBy("writes", 1);
  });
}
