// The store every role opens: a memory store (in /dev/shm) with key
// tracking, so randomKey({ prefix }) costs O(log n). Every process that
// opens the same name shares it.
export const store = {
  backend: "memory",
  name: __ENV.KV_NAME || "multiprocess-demo",
  trackKeys: true,
};

export function pause(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// The monitor marks the store when it is attached; until then a producer
// or consumer could finish alone and the memory store would go with it.
export async function waitForMonitor(kv) {
  const deadline = Date.now() + 60000;
  while (!(await kv.exists("monitor:ready"))) {
    if (Date.now() > deadline) return false;
    await pause(20);
  }
  return true;
}
