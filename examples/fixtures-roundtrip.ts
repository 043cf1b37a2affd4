// Keep a seeded store as a fixture file between runs (TypeScript; k6 runs
// .ts files as they are).
//
// Writes a few orders, exports them to JSON Lines and CSV, checks the
// JSON Lines file, and imports it into an empty store again; then reads the
// store's counters. Files are written in the directory k6 runs in.
// Type-checked against cgo/index.d.ts by the test suite (tests/ts/run.sh).
import {
  openKv,
  type ExportResult,
  type ImportResult,
  type KVError,
  type KVStats,
  type ValidateJSONLResult,
} from "k6/x/kv";

interface Order {
  id: number;
  item: string;
  qty: number;
  paid: boolean;
}

const kv = openKv({ backend: "memory", name: __ENV.KV_NAME || "fixtures-roundtrip", trackKeys: true });
const FIXTURE = "./fixtures/orders.jsonl";

export default async function (): Promise<void> {
  await kv.clear();
  const orders: Record<string, Order> = {};
  for (let i = 1; i <= 50; i++) {
    orders[`order:${String(i).padStart(3, "0")}`] = { id: i, item: i % 2 ? "book" : "pen", qty: i % 5, paid: i % 3 === 0 };
  }
  await kv.setMany(orders);

  // The fixture: every entry, one JSON object per line, in key order.
  const saved: ExportResult = await kv.exportJSONL({ fileName: FIXTURE, prefix: "order:" });
  console.log(`exported ${saved.exported} orders (${saved.bytesWritten} bytes) to ${saved.fileName}`);
  // The same orders as a table, for a spreadsheet.
  await kv.exportCSV({ fileName: "./fixtures/orders.csv", prefix: "order:", columns: ["item", "qty", "paid"] });

  // Next run: check the fixture, then load it into an empty store.
  const check: ValidateJSONLResult = await kv.validateJSONL({ fileName: FIXTURE });
  if (!check.valid) {
    throw new Error(`fixture unusable: ${check.firstError?.message}`);
  }
  await kv.clear();
  const loaded: ImportResult = await kv.importJSONL({ fileName: FIXTURE, batchSize: 20 });
  const first = await kv.get<Order>("order:001");
  console.log(`imported ${loaded.imported} orders; order:001 is ${first.qty} x ${first.item}`);

  try {
    await kv.importJSONL({ fileName: "./fixtures/missing.jsonl" });
  } catch (err) {
    console.log(`a missing fixture rejects with ${(err as KVError).name}`); // SnapshotNotFoundError
  }

  const s: KVStats = await kv.stats();
  console.log(`${s.count} keys; ${s.store.usedBytes} of ${s.store.fileBytes} bytes used; ${s.store.processes} process(es)`);
}
