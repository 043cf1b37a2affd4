// Rebuild the key index: with trackKeys the index (used by randomKey and
// list) lives in the store and is kept up to date by every write, in every
// process. rebuildKeyList() rebuilds it from the data, for peace of mind
// after a crash or a store written without key tracking.
import { openKv } from "k6/x/kv";

const kv = openKv({ backend: "disk", trackKeys: true });

export const options = { iterations: 3 };

export async function setup() {
  for (let i = 0; i < 100; i++) {
    await kv.set(`item:${i}`, i);
  }
  // O(n) and it pauses writers while it runs: call it in setup(), not in
  // every iteration.
  const done = await kv.rebuildKeyList(); // true
  console.log(`index rebuilt: ${done}, ${await kv.size()} keys`);
}

export default async function () {
  const key = await kv.randomKey(); // "" if the store is empty
  if (key) {
    console.log(`random key: ${key} = ${await kv.get(key)}`);
  }
}
