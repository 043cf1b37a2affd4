// A process stopped (SIGSTOP) while it holds the store's only segment lock:
// every call of this script must reject with LockTimeoutError after about
// lockTimeout, never hang. Run by k6-hostile.sh with KV_PATH and PHASE:
// "stopped" while the holder is stopped, "resumed" after it went on.
import { openKv } from "k6/x/kv";

const kv = openKv({ path: __ENV.KV_PATH, lockTimeout: 300 });

export default async function () {
  if (__ENV.PHASE === "resumed") {
    const v = await kv.get("held");
    if (v !== 1) throw new Error(`after SIGCONT the held set should have landed, got ${v}`);
    // the refused calls changed nothing
    for (const k of ["z", "y", "n"]) if (await kv.exists(k)) throw new Error(`a refused call wrote ${k}`);
    await kv.set("k", 2);
    if ((await kv.size()) !== 2) throw new Error("size after resuming");
    console.log("resumed: ok");
    return;
  }
  const calls = {
    get: () => kv.get("held"),
    set: () => kv.set("k", 1),
    exists: () => kv.exists("k"),
    size: () => kv.size(),
    delete: () => kv.delete("k"),
    incrementBy: () => kv.incrementBy("n", 1),
    list: () => kv.list(),
    setMany: () => kv.setMany({ z: 1, y: 2 }),
    getMany: () => kv.getMany(["held", "k"]),
    deleteMany: () => kv.deleteMany(["held"]),
    deleteByPrefix: () => kv.deleteByPrefix({ prefix: "h", limit: 10 }),
    compareAndSwap: () => kv.compareAndSwap("held", 1, 2),
    scan: () => kv.scan({ limit: 10 }),
    count: () => kv.count(),
    randomKey: () => kv.randomKey(),
    claimRandom: () => kv.claimRandom({ ttl: 60000 }),
    popRandom: () => kv.popRandom(),
  };
  for (const [name, f] of Object.entries(calls)) {
    const t0 = Date.now();
    let err = null;
    try {
      await f();
    } catch (e) {
      err = e;
    }
    const ms = Date.now() - t0;
    if (!err) throw new Error(`${name} resolved while a stopped process holds the lock`);
    if (err.name !== "LockTimeoutError") throw new Error(`${name}: ${err.name}: ${err.message}`);
    if (ms < 250 || ms > 5000) throw new Error(`${name} gave up after ${ms} ms; lockTimeout is 300`);
  }
  console.log("stopped: ok");
}
