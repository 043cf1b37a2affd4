// Pool demo, checker step (after the workers): every user was completed
// exactly once or is back in the pool, and the users the killed process
// held when it died came back and were completed by the others.
import { check } from "k6";
import { openKv } from "k6/x/kv";
import { poolStore, USERS, userKey } from "./pool-store.js";

export const options = { iterations: 1, thresholds: { checks: ["rate==1.0"] } };

const kv = openKv(poolStore);
const KILLED = __ENV.KILLED || "";
const HELD = (__ENV.HELD || "").split(",").filter((k) => k !== "");

export default async function () {
  const pool = new Set((await kv.list({ prefix: "user:" })).map((e) => e.key));
  const done = new Map((await kv.list({ prefix: "done:" })).map((e) => [e.key.slice(5), e.value]));
  const byProcess = {};
  let completed = 0;
  let inPool = 0;
  const wrong = [];
  for (let i = 0; i < USERS; i++) {
    const key = userKey(i);
    const rec = done.get(key);
    if (pool.has(key)) {
      inPool++;
      // Back in the pool: never done, or done by a holder killed before it
      // could complete (the next holder will complete it).
      if (rec && rec.by !== KILLED) wrong.push(`${key} is done and still in the pool`);
    } else if (rec) {
      completed++;
      byProcess[rec.by] = (byProcess[rec.by] || 0) + 1;
    } else {
      wrong.push(`${key} left the pool with no record of its work`);
    }
  }
  const held = [];
  for (const key of HELD) {
    const by = await kv.get(`completedBy:${key}`).catch(() => null);
    held.push(`${key} -> ${by}`);
    if (pool.has(key)) continue; // came back, not taken yet
    if (by === null || by === KILLED) wrong.push(`${key}, held by the killed process, was not completed by another`);
  }
  const live = (await kv.stats()).claims.live;

  console.log(`users: ${USERS}; completed: ${completed}; back in the pool: ${inPool}; live claims: ${live}`);
  console.log(`completed per process (from the done: records): ${JSON.stringify(byProcess)}`);
  if (KILLED) {
    console.log(`held by ${KILLED} when it was killed, and completed after their lease by: ${held.join(", ") || "(none seen)"}`);
  }
  for (const w of wrong.slice(0, 20)) console.error(`FAILED: ${w}`);
  check(null, {
    "every user was completed exactly once or is back in the pool": () => wrong.length === 0 && completed + inPool === USERS,
    "no claim is left live": () => live === 0,
  });
}
