// Batches and scans (TypeScript; k6 runs .ts files as they are).
//
// Seeds a pool of test users in one atomic setMany, pages through them with
// scan, counts and samples them, and retires a batch with deleteMany.
// Type-checked against cgo/index.d.ts by the test suite (tests/ts/run.sh).
import { openKv, type KVError, type ScanResult } from "k6/x/kv";

interface User {
  id: number;
  name: string;
  tags: string[];
}

const kv = openKv({ backend: "memory", name: __ENV.KV_NAME || "batch-scan", trackKeys: true });

export async function setup(): Promise<void> {
  await kv.deleteByPrefix({ prefix: "user:", limit: 1_000_000 });
  const users: Record<string, User> = {};
  for (let i = 0; i < 250; i++) {
    users[`user:${String(i).padStart(4, "0")}`] = { id: i, name: `name-${i}`, tags: ["a", "b"] };
  }
  // One call, one cgo call, and every process sees all 250 or none.
  const { written } = await kv.setMany(users);
  console.log(`seeded ${written} users`);
}

export default async function (): Promise<void> {
  // Page through the pool, 100 at a time, in key order.
  let cursor = "";
  let seen = 0;
  for (;;) {
    const page: ScanResult<User> = await kv.scan<User>({ prefix: "user:", limit: 100, cursor });
    seen += page.entries.length;
    if (page.done) break;
    cursor = page.cursor;
  }
  console.log(`scanned ${seen} users, count() says ${await kv.count({ prefix: "user:" })}`);

  // Ten distinct users at random, then their records in one read.
  const picked = await kv.randomKeys({ prefix: "user:", count: 10 });
  const records = await kv.getMany<User>(picked);
  for (const r of records) {
    if (!r.exists || r.value === null) throw new Error(`${r.key} vanished`);
  }

  // A batch is validated whole: nothing is written when one entry is bad.
  try {
    await kv.setMany({ "user:ok": { id: -1, name: "ok", tags: [] }, "": { id: -2, name: "", tags: [] } });
  } catch (e) {
    const err = e as KVError;
    console.log(`refused: ${err.name}, bad entries: ${(err.errors ?? []).map((d) => d.name).join(", ")}`);
  }

  const { deleted, missing } = await kv.deleteMany(picked);
  console.log(`retired ${deleted} users (${missing} already gone)`);

  const swapped = await kv.compareAndSwapDetailed("config", null, { mode: "fast" }, { includeCurrentOnMismatch: true });
  console.log(swapped.swapped ? "config created" : `config was ${JSON.stringify(swapped.current)}`);
}
