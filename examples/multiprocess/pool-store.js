// The pool demo's shared settings: one disk store (it outlives each
// process, so the seeding step can exit before the workers start), with
// key tracking so that claimRandom({prefix}) costs O(log n).
export const poolStore = {
  backend: "disk",
  path: __ENV.KV_POOL_PATH || "./.k6-pool.kv",
  trackKeys: true,
};

export const USERS = Number(__ENV.USERS || 200);
// The lease: a user claimed by a process that dies comes back this long
// after it was claimed. Short here, so that the demo shows it in seconds.
export const TTL_MS = Number(__ENV.POOL_TTL_MS || 1500);

export function userKey(i) {
  return `user:${String(i).padStart(4, "0")}`;
}

export function pause(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
