// Atomic operations: each one is a single step on the store, so VUs (and
// other k6 processes on the same store) never interleave inside it.
import { openKv } from "k6/x/kv";

const kv = openKv({ backend: "memory", name: __ENV.KV_NAME || "atomics-example" });

export const options = { vus: 4, iterations: 40 };

export async function setup() {
  await kv.clear();
  // getOrSet: the first caller stores the value, later ones read it.
  const { value, loaded } = await kv.getOrSet("config", { mode: "fast" });
  console.log(`config ${loaded ? "was there" : "created"}: ${JSON.stringify(value)}`);
}

export default async function () {
  // A counter no VU can lose an update of.
  const n = await kv.incrementBy("requests", 1);

  // A lock: compareAndSwap(key, null, v) succeeds only if the key is absent.
  const me = `vu-${__VU}`;
  if (await kv.compareAndSwap("lock", null, me)) {
    // ... only one VU at a time gets here ...
    await kv.compareAndDelete("lock", me); // release only our own lock
  }

  // setIfAbsent: the first VU to reach this point is the leader.
  if (await kv.setIfAbsent("leader", me)) {
    console.log(`${me} is the leader (request ${n})`);
  }

  // swap: set a value and learn the one it replaced.
  const { previous } = await kv.swap("last-vu", me);
  if (previous === null) {
    console.log(`${me} was the first to write last-vu`);
  }
}

export async function teardown() {
  console.log(`requests counted: ${await kv.get("requests")}`);
  await kv.deleteIfExists("leader");
}
