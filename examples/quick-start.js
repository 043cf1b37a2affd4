// Quick start: the basic calls. Every method returns a Promise.
import { openKv } from "k6/x/kv";

// The default store is the disk backend at ./.k6.kv. Every VU of this run,
// and any other k6 process on this host opening the same path, shares it.
const kv = openKv();
// Other choices:
//   openKv({ backend: "memory" })                   // /dev/shm, gone when the last process exits
//   openKv({ backend: "memory", name: "checkout" }) // several independent memory stores
//   openKv({ path: "./data/run.kv", trackKeys: true })

export async function setup() {
  await kv.clear(); // start from an empty store
}

export default async function () {
  await kv.set("greeting", "hello");
  await kv.set("answer", 42);
  await kv.set("primes", [2, 3, 5, 7]);
  await kv.set("user:1", { name: "Ada" });
  await kv.set("user:2", { name: "Grace" });

  console.log(`answer = ${await kv.get("answer")}`);

  // A random key, from the whole store or from a prefix ("" when none).
  const someone = await kv.randomKey({ prefix: "user:" });
  if (someone) {
    console.log(`${someone} is ${JSON.stringify(await kv.get(someone))}`);
  }

  if (!(await kv.exists("visits"))) {
    await kv.set("visits", 0);
  }
  await kv.incrementBy("visits", 1);

  for (const { key, value } of await kv.list({ prefix: "user:" })) {
    console.log(`listed ${key} -> ${JSON.stringify(value)}`);
  }
  console.log(`${await kv.size()} keys in the store`);

  try {
    await kv.get("no such key");
  } catch (err) {
    console.log(`get of a missing key rejects: ${err.name}`); // KeyNotFoundError
  }

  await kv.delete("greeting");
}
