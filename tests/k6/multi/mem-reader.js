// The reader process on a memory store: attaches first, then polls until it
// sees everything the writer processes wrote.
import { openKv } from "k6/x/kv";
import { storeOptions, thresholds, ok, eq, guard, pause } from "../lib/t.js";

const N = Number(__ENV.KV_N || 500);
const WRITERS = Number(__ENV.KV_PROCS || 2);

export const options = { iterations: 1, thresholds };

const kv = openKv(storeOptions());

export default async function () {
  await guard("read", async () => {
    await kv.set("reader-ready", true);
    const deadline = Date.now() + 90000;
    let seen = 0;
    while (Date.now() < deadline) {
      seen = (await kv.list({ prefix: "m:" })).length;
      if (seen >= N * WRITERS) break;
      await pause(10);
    }
    eq(seen, N * WRITERS, "the reader sees every write of the writer processes");
    let bad = 0;
    for (let p = 1; p <= WRITERS; p++) {
      for (let i = 0; i < N; i++) {
        const v = await kv.get(`m:${p}:${i}`);
        if (v.i !== i || v.proc !== String(p)) bad++;
      }
    }
    eq(bad, 0, "every value is the one written");
    ok((await kv.randomKey({ prefix: "m:1:" })).startsWith("m:1:"), "randomKey over another process's keys");
  });
}
