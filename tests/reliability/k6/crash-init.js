// k6 crash loop: creates the store before any writer starts, so that no
// writer is killed while it creates it (that case has its own test,
// test_create_killed.c).
import { openKv } from "k6/x/kv";

export const options = { iterations: 1, vus: 1 };

const kv = openKv({ backend: "disk", path: __ENV.KV_PATH, trackKeys: true });

export default async function () {
  await kv.set("created", true);
}
