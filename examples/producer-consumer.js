// Producer / consumer: one scenario adds tokens, two others take them, all
// through one store shared by every VU.
import { sleep } from "k6";
import { openKv } from "k6/x/kv";

export const options = {
  scenarios: {
    producer: { executor: "shared-iterations", vus: 1, iterations: 12, exec: "producer" },
    consumer: { executor: "shared-iterations", vus: 1, iterations: 6, startTime: "1s", exec: "consumer" },
    randomConsumer: { executor: "shared-iterations", vus: 1, iterations: 6, startTime: "500ms", exec: "randomConsumer" },
  },
};

// A memory store lives in /dev/shm and disappears when the last process
// using it exits. Its name keeps unrelated tests on one host apart.
const kv = openKv({
  backend: "memory",
  name: __ENV.KV_NAME || "producer-consumer",
  trackKeys: true, // randomKey in O(1), or O(log n) with a prefix
});

export async function setup() {
  await kv.clear();
}

export async function producer() {
  // incrementBy is atomic: two producers never get the same number.
  const id = (await kv.incrementBy("next-token-id", 1)) - 1;
  await kv.set(`token-${String(id).padStart(4, "0")}`, { id, by: __VU });
  console.log(`[producer] added token ${id}`);
  sleep(0.1);
}

export async function consumer() {
  // Take the oldest token: list is sorted by key.
  const [first] = await kv.list({ prefix: "token-", limit: 1 });
  // deleteIfExists is true for exactly one taker, even when several race.
  if (first && (await kv.deleteIfExists(first.key))) {
    console.log(`[consumer] took ${first.key} (made by VU ${first.value.by})`);
  } else {
    console.log("[consumer] nothing to take");
  }
  sleep(0.1);
}

export async function randomConsumer() {
  const key = await kv.randomKey({ prefix: "token-" }); // "" when none
  if (key && (await kv.deleteIfExists(key))) {
    console.log(`[randomConsumer] took ${key}`);
  } else {
    console.log("[randomConsumer] nothing to take");
  }
  sleep(0.1);
}

export async function teardown() {
  const left = await kv.list({ prefix: "token-" });
  console.log(`${await kv.get("next-token-id")} tokens produced, ${left.length} left`);
}
