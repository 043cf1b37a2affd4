// Writes c:<proc>:0, c:<proc>:1, ... and logs "durable <proc> <i>" after the
// write of i resolved. The runner SIGKILLs one such process in the middle of
// its writes while another one runs to the end.
import { openKv } from "k6/x/kv";
import { storeOptions, thresholds, ok, guard } from "../lib/t.js";

const N = Number(__ENV.KV_N || 1000000);

export const options = { iterations: 1, thresholds };

const kv = openKv(storeOptions());

export default async function () {
  await guard("write", async () => {
    const p = __ENV.KV_PROC;
    for (let i = 0; i < N; i++) {
      await kv.set(`c:${p}:${i}`, { i, pad: "x".repeat(i % 200) });
      await kv.incrementBy(`count:${p}`, 1);
      if (i % 500 === 499) {
        console.log(`durable ${p} ${i}`);
      }
    }
    ok(true, "finished");
  });
}
