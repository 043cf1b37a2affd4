// Pool demo, worker role: VUs check test users out of the shared pool.
//
// claimRandom gives this VU a lease on one user: until the lease ends, no
// other VU of any process gets it. The VU "uses" the user for a while,
// then either hands it back (releaseClaim: a simulated failure, somebody
// else will try again) or completes it (completeClaim: deleted from the
// pool, used up). A process killed while it holds users loses them for no
// longer than the lease: they become claimable again when it runs out.
//
// Work is recorded before the claim is completed, under done:<user>, so
// that it is never lost: a holder killed between the two leaves the record
// and an uncompleted claim, and whoever gets the user after the lease
// finds the record and only completes it (the work is not done twice).
import { check } from "k6";
import { openKv } from "k6/x/kv";
import { poolStore, TTL_MS, pause } from "./pool-store.js";

const ME = __ENV.WORKER || "worker";
const KILLED = __ENV.KILLED || ""; // the process the driver kills, if any
const FAIL_RATE = Number(__ENV.FAIL_RATE || 0.1);

export const options = {
  scenarios: {
    work: { executor: "per-vu-iterations", vus: 4, iterations: 1, maxDuration: "2m" },
  },
  thresholds: { checks: ["rate==1.0"] },
};

const kv = openKv(poolStore);

export default async function () {
  const owner = `${ME}/vu${__VU}`;
  const deadline = Date.now() + 60000;
  while (Date.now() < deadline) {
    const claim = await kv.claimRandom({ prefix: "user:", owner, ttl: TTL_MS });
    if (claim === null) {
      // Nothing claimable: done when the pool is empty; otherwise the
      // users left are held by someone (maybe a killed process, until its
      // leases run out).
      if ((await kv.count({ prefix: "user:" })) === 0) break;
      await pause(50);
      continue;
    }
    console.log(`claimed ${claim.key} ${claim.token}`);
    await pause(30 + Math.random() * 50); // log in as the user, run requests...

    if (Math.random() < FAIL_RATE) {
      console.log(`releasing ${claim.key} ${claim.token}`);
      check(await kv.releaseClaim(claim), { "a live claim is released": (ok) => ok });
      continue;
    }
    const first = await kv.setIfAbsent(`done:${claim.key}`, { by: ME, token: claim.token });
    if (!first) {
      // Only a holder that died after recording and before completing
      // leaves a record behind; its token is older than ours.
      const prev = await kv.get(`done:${claim.key}`);
      check(prev, {
        "an earlier record comes from the killed process": (p) => p.by === KILLED && p.token < claim.token,
      });
    }
    console.log(`completing ${claim.key} ${claim.token}`);
    check(await kv.completeClaim(claim), { "a live claim is completed": (ok) => ok });
    await kv.set(`completedBy:${claim.key}`, ME);
  }
  check(Date.now() < deadline, { "the pool was emptied in time": (ok) => ok });
}
