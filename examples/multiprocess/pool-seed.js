// Pool demo, seeding step: puts USERS test users (user:0000, user:0001, ...)
// into the store, in one all-or-nothing batch.
import { check } from "k6";
import { openKv } from "k6/x/kv";
import { poolStore, USERS, userKey } from "./pool-store.js";

export const options = { iterations: 1, thresholds: { checks: ["rate==1.0"] } };

const kv = openKv(poolStore);

export default async function () {
  await kv.clear();
  const users = {};
  for (let i = 0; i < USERS; i++) {
    users[userKey(i)] = { id: i, login: `load-user-${i}`, password: `pw-${i}` };
  }
  const { written } = await kv.setMany(users);
  check(written, { "every user is in the pool": (n) => n === USERS });
  console.log(`seeded ${written} users`);
}
