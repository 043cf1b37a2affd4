// A writer process on a memory store: waits for the reader to be attached,
// then writes m:<process>:0 .. m:<process>:N-1.
import { openKv } from "k6/x/kv";
import { storeOptions, thresholds, ok, guard, pause } from "../lib/t.js";

const N = Number(__ENV.KV_N || 500);

export const options = { iterations: 1, thresholds };

const kv = openKv(storeOptions());

export default async function () {
  await guard("write", async () => {
    const deadline = Date.now() + 60000;
    while (!(await kv.exists("reader-ready")) && Date.now() < deadline) {
      await pause(10);
    }
    ok(await kv.exists("reader-ready"), "the reader attached");
    for (let i = 0; i < N; i++) {
      await kv.set(`m:${__ENV.KV_PROC}:${i}`, { proc: __ENV.KV_PROC, i });
    }
  });
}
