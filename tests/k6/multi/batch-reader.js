// Reads the ten-key group of batch-writer.js while two other processes
// rewrite it: each getMany must see the whole group with one value, or
// none of it.
import { openKv } from "k6/x/kv";
import { storeOptions, thresholds, ok, guard } from "../lib/t.js";

const N = Number(__ENV.KV_N || 600);
const GROUP = Array.from({ length: 10 }, (_, i) => `grp:${i}`);

export const options = {
  thresholds,
  scenarios: {
    read: { executor: "shared-iterations", vus: 2, iterations: N * 4, maxDuration: "5m" },
  },
};

const kv = openKv(storeOptions());

export default async function () {
  await guard("batch-read", async () => {
    const items = await kv.getMany(GROUP);
    const present = items.filter((it) => it.exists).length;
    const values = new Set(items.filter((it) => it.exists).map((it) => JSON.stringify(it.value)));
    ok((present === 0 || present === GROUP.length) && values.size <= 1,
      "a batch is seen whole or not at all", `${present} of ${GROUP.length} present, ${values.size} values`);
  });
}
