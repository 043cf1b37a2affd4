// Keep a store's state as a backup file, and bring it back (TypeScript;
// k6 runs .ts files as they are).
//
// setup() seeds a few accounts and takes a consistent backup while nothing
// else runs; the VUs move money between accounts;
// teardown() takes a best-effort backup, then restores the first one and
// checks the total. Files are written in the directory k6 runs in; check one
// with `shmkv-dump --check ./backups/seeded.kv`.
// Type-checked against cgo/index.d.ts by the test suite (tests/ts/run.sh).
import { openKv, type BackupSummary, type KVError, type RestoreSummary } from "k6/x/kv";

const kv = openKv({ backend: "memory", name: __ENV.KV_NAME || "backup-restore" });
const ACCOUNTS = 20;
const SEEDED = "./backups/seeded.kv";

export const options = { vus: 4, iterations: 200 };

export async function setup(): Promise<void> {
  await kv.clear();
  const seed: Record<string, number> = {};
  for (let i = 0; i < ACCOUNTS; i++) seed[`acct:${i}`] = 100;
  await kv.setMany(seed);
  const b: BackupSummary = await kv.backup({ fileName: SEEDED });
  console.log(`backup: ${b.totalEntries} entries, ${b.bytesWritten} bytes, writers paused ${b.pauseMs} ms`);
}

export default async function (): Promise<void> {
  const from = `acct:${Math.floor(Math.random() * ACCOUNTS)}`;
  const to = `acct:${Math.floor(Math.random() * ACCOUNTS)}`;
  if (from === to) return;
  // Two atomic increments: the total is back to the seeded one once both
  // are done (a consistent backup may fall between them).
  await kv.incrementBy(from, -1);
  await kv.incrementBy(to, 1);
}

export async function teardown(): Promise<void> {
  const live: BackupSummary = await kv.backup({ fileName: "./backups/live.kv", allowConcurrentWrites: true });
  if (live.bestEffort) console.log(`best-effort backup: ${live.warning}`);
  try {
    await kv.restore({ fileName: SEEDED, maxEntries: 5 });
  } catch (e) {
    console.log(`a guard refuses before anything changes: ${(e as KVError).name}`); // SnapshotBudgetExceededError
  }
  const r: RestoreSummary = await kv.restore({ fileName: SEEDED, maxEntries: 1000 });
  let total = 0;
  for (let i = 0; i < ACCOUNTS; i++) total += (await kv.get(`acct:${i}`)) as number;
  console.log(`restored ${r.totalEntries} entries; total ${total}`);
  if (r.totalEntries !== ACCOUNTS || total !== ACCOUNTS * 100) {
    throw new Error(`restored ${r.totalEntries} entries totalling ${total}, want ${ACCOUNTS} totalling ${ACCOUNTS * 100}`);
  }
}
