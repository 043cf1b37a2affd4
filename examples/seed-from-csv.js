// Seed a store from a CSV file in setup(), use it in the test, and report
// what the store holds in teardown().
//
//   cd examples && k6 run seed-from-csv.js
//
// File names are taken from the directory k6 runs in (as openKv's path),
// hence the cd. Each row becomes an object of its cells, stored under its
// "id" column: {id: "user-001", name: "Ada Lovelace", email: ..., plan: "pro"}.
import { check } from "k6";
import { openKv } from "k6/x/kv";

export const options = {
  vus: 2,
  iterations: 20,
  thresholds: { checks: ["rate==1.0"] },
};

const SEED = __ENV.SEED_FILE || "./seed-users.csv";

// A memory store: gone when the last k6 process using it exits.
// metrics.operations adds xk6_kv_operations_total, xk6_kv_operation_duration,
// ... to the end-of-test summary, tagged with each method's name.
const kv = openKv({
  backend: "memory",
  name: __ENV.KV_NAME || "seed-from-csv",
  trackKeys: true,
  metrics: { operations: true },
});

export async function setup() {
  // Check the whole file first: a bad row is reported with its line, and
  // nothing is written. (importCSV checks too, and rejects instead.)
  const v = await kv.validateCSV({ fileName: SEED, keyColumn: "id" });
  if (!v.valid) {
    throw new Error(`${SEED} cannot be imported: ${v.firstError.name}: ${v.firstError.message}`);
  }
  await kv.clear();
  const r = await kv.importCSV({ fileName: SEED, keyColumn: "id" });
  console.log(`seeded ${r.imported} users from ${r.fileName} (${r.bytesRead} bytes)`);
}

export default async function () {
  const id = await kv.randomKey({ prefix: "user-" });
  const user = await kv.get(id);
  check(user, {
    "a seeded user": (u) => u.id === id && u.email.includes("@"),
  });
  await kv.incrementBy(`visits:${user.plan}`, 1);
}

export async function teardown() {
  const s = await kv.stats();
  console.log(
    `store: ${s.count} keys, ${s.store.usedBytes} bytes used of ${s.store.fileBytes}, ` +
      `${s.store.processes} process(es) attached, index consistent: ${s.index ? s.index.consistent : "no index"}`,
  );
  const users = await kv.allocationStats({ prefix: "user-" });
  console.log(`${users.total} users`);
  // The same counters as k6 gauges (xk6_kv_keys, xk6_kv_used_bytes, ...).
  await kv.reportStats();
}
