// After a writer was SIGKILLed: every write it saw resolve is there, the
// survivor's writes are all there, and the store is consistent and usable.
import { openKv } from "k6/x/kv";
import { storeOptions, thresholds, ok, eq, guard } from "../lib/t.js";

const LAST = Number(__ENV.KV_LAST); // last write the killed process logged
const N = Number(__ENV.KV_N);       // writes of the survivor

export const options = { iterations: 1, thresholds };

const kv = openKv(storeOptions());

export default async function () {
  await guard("verify", async () => {
    ok(LAST > 0, "the killed writer logged progress", LAST);
    let missing = 0;
    for (let i = 0; i <= LAST; i++) {
      if (!(await kv.exists(`c:killed:${i}`))) missing++;
    }
    eq(missing, 0, "no write the killed process saw resolve is lost");
    const killed = await kv.list({ prefix: "c:killed:" });
    ok(killed.length >= LAST + 1, "the killed writer's keys are listed", killed.length);
    ok(killed.every((e) => e.value.i === Number(e.key.split(":")[2])), "the killed writer's values are whole");
    const count = await kv.get("count:killed");
    ok(count >= LAST + 1 && count >= killed.length - 1 && count <= killed.length, "its counter matches its writes",
      `count ${count}, keys ${killed.length}`);

    eq((await kv.list({ prefix: "c:survivor:" })).length, N, "the survivor's writes are all there");
    eq(await kv.get("count:survivor"), N, "the survivor's counter");

    const size = await kv.size();
    eq((await kv.list()).length, size, "size matches list");
    eq(await kv.rebuildKeyList(), true, "rebuildKeyList");
    eq((await kv.list()).length, size, "list after rebuildKeyList");
    ok((await kv.randomKey({ prefix: "c:killed:" })).startsWith("c:killed:"), "randomKey after the crash");
    await kv.set("after-crash", 1);
    eq(await kv.get("after-crash"), 1, "the store takes writes after the crash");
  });
}
