// Import, export, validate, stats and k6 metrics in one run, on the store
// the runner picks (KV_BACKEND, KV_PATH, KV_NAME; KV_DIR: this folder;
// KV_OUT: a scratch folder). run.sh then reads the --summary-export file:
// the operation metrics and the state gauges must be in it.
import { openKv } from "k6/x/kv";
import { storeOptions, ok, eq, rejects, guard } from "../lib/t.js";

export const options = {
  iterations: 1,
  vus: 1,
  thresholds: {
    checks: ["rate==1.0"],
    // Sub-metrics by op: they appear in the summary export by these names.
    "xk6_kv_operations_total{op:import_csv}": ["count==2"],
    "xk6_kv_operations_total{op:import_jsonl}": ["count==1"],
    "xk6_kv_operations_total{op:export_jsonl}": ["count==1"],
    "xk6_kv_errors_total{error_type:SnapshotReadError}": ["count==1"],
    "xk6_kv_keys": ["value==4"],
    // xk6-kv's quickstart sets this one: k6 refuses to start when a
    // threshold names a metric nobody registered.
    "xk6_kv_async_in_flight": ["value<1000"],
  },
};

const kv = openKv(storeOptions({ trackKeys: true, metrics: { operations: true } }));
const dir = __ENV.KV_DIR;
const out = __ENV.KV_OUT;

export async function setup() {
  await kv.clear();
}

export default async function () {
  await guard("metrics", async () => {
    const v = await kv.validateCSV({ fileName: `${dir}/users.csv`, keyColumn: "id" });
    eq([v.valid, v.rows, v.checkedAll], [true, 3, true], "validateCSV");
    const bad = await kv.validateCSV({ fileName: `${dir}/bad.csv`, keyColumn: "id" });
    eq([bad.valid, bad.firstError.row, bad.firstError.line], [false, 3, 3], "validateCSV of a bad file");
    const e = await rejects(kv.importCSV({ fileName: `${dir}/bad.csv`, keyColumn: "id" }), "SnapshotReadError", "importCSV of a bad file");
    ok(e && e.message.includes("bad.csv line 3"), "the message names the file and line", e && e.message);
    eq(await kv.size(), 0, "a bad file writes nothing");

    const r = await kv.importCSV({ fileName: `${dir}/users.csv`, keyColumn: "id", batchSize: 2 });
    eq(r.imported, 3, "importCSV");
    eq(await kv.get("u2"), { id: "u2", name: "Hopper, Grace", plan: "free" }, "an imported row");
    await kv.set("counter", 1);
    const x = await kv.exportJSONL({ fileName: `${out}/all.jsonl` });
    eq(x.exported, 4, "exportJSONL");
    await kv.clear();
    eq((await kv.importJSONL({ fileName: `${out}/all.jsonl` })).imported, 4, "importJSONL of the export");
    eq(await kv.get("u1"), { id: "u1", name: "Ada", plan: "pro" }, "round trip");
    const c = await kv.exportCSV({ fileName: `${out}/users.csv`, prefix: "u", columns: ["name", "plan"] });
    eq(c.exported, 3, "exportCSV");

    const s = await kv.stats();
    eq([s.count, s.trackKeys, s.index.consistent, s.store.processes], [4, true, true, 1], "stats");
    eq((await kv.allocationStats({ prefix: "u" })).total, 3, "allocationStats");
    await kv.reportStats();
  });
}
