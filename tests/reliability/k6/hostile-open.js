// Hostile store paths (issue #5, part 3): openKv on a path that cannot be a
// store throws a clear, typed error in the init context. The error is
// recorded there and checked in the iteration (a check cannot run in the
// init context). Run by tests/reliability/k6-hostile.sh, which prepares the
// fixture and passes KV_CASE (a row of the table below), KV_BAD_PATH, and
// KV_NAME (a memory store opened after the failure, to show the extension
// still works). The shell script checks the fixture itself is unchanged.
import { openKv } from "k6/x/kv";
import { thresholds, ok, eq, guard } from "../../k6/lib/t.js";

export const options = { iterations: 1, vus: 1, thresholds };

// KV_CASE -> [expected error name, words the message must contain].
const cases = {
  // A directory where the store file should be.
  dir: ["DiskPathError", ["Is a directory"]],
  // An existing file the user may not read (run as an unprivileged user).
  unreadable: ["DiskStoreOpenError", ["Permission denied"]],
  // A path on a read-only filesystem.
  ro: ["DiskStoreOpenError", ["Read-only file system"]],
  // A BoltDB-like file (xk6-kv's .k6.kv): refused, not touched.
  bolt: ["DiskStoreOpenError", ["not a shmkv store", "BoltDB"]],
};

const which = __ENV.KV_CASE || "";
const path = __ENV.KV_BAD_PATH || "";
let caught = null;
let opened = false;
for (const o of [{ backend: "disk", path }, { backend: "disk", disk: { path } }, { path, trackKeys: true }]) {
  try {
    openKv(o);
    opened = true;
  } catch (e) {
    // Keep the first one; the others must match it (checked below).
    const got = { name: e.name, message: String(e.message) };
    if (caught === null) caught = [got];
    else caught.push(got);
  }
}
const good = openKv({ backend: "memory", name: __ENV.KV_NAME || "hostile-open" });

export default async function () {
  await guard(`hostile-open ${which}`, async () => {
    const c = cases[which];
    ok(c !== undefined, `KV_CASE ${JSON.stringify(which)} is a known case`);
    if (c === undefined) return;
    const [name, words] = c;
    ok(!opened, `${which}: openKv(${path}) did not succeed`);
    ok(caught !== null && caught.length === 3, `${which}: all three spellings of the path throw`, JSON.stringify(caught));
    for (const e of caught || []) {
      ok(e.name === name && e.name !== "Error" && e.name !== "", `${which}: openKv throws ${name}`, JSON.stringify(e));
      ok(e.message.includes(path), `${which}: the message names the path`, JSON.stringify(e));
      for (const w of words) {
        ok(e.message.includes(w), `${which}: the message says "${w}"`, JSON.stringify(e));
      }
    }

    // The extension still works after the failed opens.
    await good.clear();
    await good.set("after", { which });
    eq(await good.get("after"), { which }, `${which}: a memory store opened afterwards works`);
    await good.clear();
  });
}
