// Runs after the three segment writers: every key is there, once.
import { openKv } from "k6/x/kv";
import { storeOptions, thresholds, ok, eq, guard } from "../lib/t.js";

const N = Number(__ENV.KV_N || 600);

export const options = { iterations: 1, thresholds };

const kv = openKv(storeOptions());

export default async function () {
  await guard("verify", async () => {
    let missing = 0;
    let wrong = 0;
    const segments = new Set();
    for (let i = 0; i < N; i++) {
      try {
        const v = await kv.get(`w:${i}`);
        if (v.i !== i) wrong++;
        segments.add(v.segment);
      } catch (e) {
        missing++;
      }
    }
    eq(missing, 0, "no write lost");
    eq(wrong, 0, "every value is the one written");
    eq(segments.size, 3, "all three processes wrote");
    eq((await kv.list({ prefix: "w:" })).length, N, "no extra key");
    eq(await kv.get("writes"), N, "the write counter matches");
  });
}
