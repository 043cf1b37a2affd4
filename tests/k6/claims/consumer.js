// claims-crash.sh, one consumer process (incarnation KV_INC): 4 VUs claim
// random tokens with a lease of KV_TTL ms, work on each for a moment,
// release about one in ten (a simulated failure), and otherwise record the
// work (setIfAbsent done:<token>, {by, token}) and complete the claim. The
// driver SIGKILLs consumers at random moments and starts new incarnations.
//
// Logged (console.log, sent to a file per incarnation), the driver's
// verifier reads them:
//   G <key> <token>        a claim was granted
//   I <key> <token>        about to complete (the work is recorded)
//   A <key> <token> <ok>   completeClaim resolved with ok
// A VU stops when nothing is claimable and no token is left.
import { openKv } from "k6/x/kv";
import { thresholds, ok, guard, pause } from "../lib/t.js";

export const options = {
  thresholds,
  scenarios: {
    consume: { executor: "per-vu-iterations", vus: 4, iterations: 1, maxDuration: "10m" },
  },
};

const kv = openKv({ backend: "disk", path: __ENV.KV_PATH, trackKeys: true });
const ME = __ENV.KV_INC;
const TTL = Number(__ENV.KV_TTL || 2000);
const WORK = Number(__ENV.KV_WORK_MS || 20);

export default async function () {
  await guard("consume", async () => {
    const owner = `${ME}/${__VU}`;
    const deadline = Date.now() + 300000;
    while (Date.now() < deadline) {
      const c = await kv.claimRandom({ prefix: "token:", owner, ttl: TTL });
      if (c === null) {
        if ((await kv.count({ prefix: "token:" })) === 0) return;
        await pause(20);
        continue;
      }
      console.log(`G ${c.key} ${c.token}`);
      ok(c.id === String(c.token) && c.owner === owner && c.entry.key === c.key, "a claim's fields",
        JSON.stringify(c));
      await pause(Math.random() * 2 * WORK);
      if (Math.random() < 0.1) {
        await kv.releaseClaim(c);
        continue;
      }
      // A record left by a holder that died before completing (or whose
      // lease ran out) stays: the work is not recorded twice.
      await kv.setIfAbsent(`done:${c.key}`, { by: ME, token: c.token });
      console.log(`I ${c.key} ${c.token}`);
      const done = await kv.completeClaim(c);
      console.log(`A ${c.key} ${c.token} ${done}`);
    }
    ok(false, "the consumer finished before its deadline");
  });
}
