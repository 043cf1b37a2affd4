// files.js - one timed run of a file method of k6/x/kv, for files.sh.
// OP: importCSV | importJSONL | validateCSV | exportJSONL | exportCSV |
// backup | restore. Every run starts from a fresh memory store; exports,
// backups and restores first import the JSONL file (not timed). Prints one
// line "files: OP ROWS SECONDS".
import { openKv } from "k6/x/kv";

export const options = { vus: 1, iterations: 1 };

const OP = __ENV.OP;
const DIR = __ENV.DIR;
const kv = openKv({ backend: "memory", name: __ENV.STORE });

export default async function () {
  await kv.clear();
  const seed = OP.startsWith("export") || OP === "backup" || OP === "restore";
  if (seed) await kv.importJSONL({ fileName: `${DIR}/rows.jsonl`, batchSize: 5000 });
  if (OP === "restore") await kv.backup({ fileName: `${DIR}/store.bak` });
  const t0 = Date.now();
  let rows;
  switch (OP) {
    case "importCSV":
      rows = (await kv.importCSV({ fileName: `${DIR}/rows.csv`, keyColumn: "id", batchSize: 5000 })).imported;
      break;
    case "importJSONL":
      rows = (await kv.importJSONL({ fileName: `${DIR}/rows.jsonl`, batchSize: 5000 })).imported;
      break;
    case "validateCSV":
      rows = (await kv.validateCSV({ fileName: `${DIR}/rows.csv`, keyColumn: "id" })).rows;
      break;
    case "exportJSONL":
      rows = (await kv.exportJSONL({ fileName: `${DIR}/out.jsonl` })).exported;
      break;
    case "exportCSV":
      rows = (await kv.exportCSV({ fileName: `${DIR}/out.csv`, columns: ["id", "name", "email", "age"] })).exported;
      break;
    case "backup":
      rows = (await kv.backup({ fileName: `${DIR}/store.bak` })).totalEntries;
      break;
    case "restore":
      rows = (await kv.restore({ fileName: `${DIR}/store.bak` })).totalEntries;
      break;
    default:
      throw new Error(`unknown OP ${OP}`);
  }
  console.log(`files: ${OP} ${rows} ${(Date.now() - t0) / 1000}`);
}
