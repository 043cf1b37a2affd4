// claims-crash.sh, verifier step, after every consumer has ended:
//  - no token is left in the pool and no claim is live;
//  - every token's work is recorded once (done:<token>); the records are
//    printed ("DONE <key> <by> <token>") for the driver to match against
//    what the consumers logged;
//  - fencing: for tokens that killed incarnations held (KV_STALE, a JSON
//    file of [key, token] pairs), the key is put back and claimed afresh,
//    and the old token can neither complete, release nor renew it.
import { openKv } from "k6/x/kv";
import { thresholds, ok, guard } from "../lib/t.js";

export const options = { thresholds, iterations: 1 };

const kv = openKv({ backend: "disk", path: __ENV.KV_PATH, trackKeys: true });
const N = Number(__ENV.KV_N);
const stale = __ENV.KV_STALE ? JSON.parse(open(__ENV.KV_STALE)) : [];

export default async function () {
  await guard("verify", async () => {
    const left = await kv.count({ prefix: "token:" });
    ok(left === 0, "no token is left in the pool", `${left} left`);
    const st = await kv.stats();
    ok(st.claims.live === 0, "no claim is live", JSON.stringify(st.claims));

    const done = await kv.list({ prefix: "done:" });
    ok(done.length === N, "the work of every token is recorded", `${done.length} of ${N}`);
    for (const { key, value } of done) {
      console.log(`DONE ${key.slice(5)} ${value.by} ${value.token}`);
    }

    let fenced = 0;
    for (const [key, token] of stale) {
      await kv.set(key, { back: true });
      const fresh = await kv.claimKey(key, { owner: "verifier", ttl: 60000 });
      if (!ok(fresh !== null && fresh.token > token, "a fresh claim gets a larger token",
        `${key}: old ${token}, new ${JSON.stringify(fresh)}`)) continue;
      const old = { id: String(token), key, token };
      ok((await kv.completeClaim(old)) === false, "a stale token cannot complete", `${key} ${token}`);
      ok((await kv.releaseClaim(old)) === false, "a stale token cannot release", `${key} ${token}`);
      ok((await kv.renewClaim(old, { ttl: 1000 })) === false, "a stale token cannot renew", `${key} ${token}`);
      ok((await kv.completeClaim(fresh)) === true, "the live claim completes", `${key} ${fresh.token}`);
      fenced++;
    }
    ok((await kv.count({ prefix: "token:" })) === 0, "the pool is empty again after the fencing checks");
    console.log(`fencing: ${fenced} stale tokens refused`);
  });
}
