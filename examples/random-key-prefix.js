// Random key with a prefix: sample uniformly among the keys of one
// namespace ("user:", "order:", ...) without listing them first.
import { openKv } from "k6/x/kv";

// trackKeys keeps an ordered key index in the store itself, so a prefix
// sample costs O(log n) and reopening the store needs no rebuild.
const kv = openKv({ backend: "disk", trackKeys: true });

export const options = { iterations: 5 };

export async function setup() {
  await kv.clear();
  for (const [id, name] of [[1, "Oleg"], [2, "Alina"], [3, "Anna"]]) {
    await kv.set(`user:${id}`, { id, name });
  }
  await kv.set("order:1", { id: 1, user: 2 });
}

export default async function () {
  // randomKey never throws: it resolves to "" when nothing matches.
  const key = await kv.randomKey({ prefix: "user:" });
  if (key) {
    const user = await kv.get(key);
    console.log(`picked ${key}: ${user.name}`);
  }
  const none = await kv.randomKey({ prefix: "invoice:" });
  console.log(`no invoices: ${JSON.stringify(none)}`);
}
