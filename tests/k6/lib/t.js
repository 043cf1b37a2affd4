// Helpers shared by the end-to-end scripts. Every script fails its run
// through `thresholds: { checks: ["rate==1.0"] }` when any check fails, and
// guard() turns an exception into a failed check (k6 itself only logs
// exceptions thrown by an iteration).
import { check } from "k6";

// openKv options from the runner's environment: KV_BACKEND (memory|disk),
// KV_PATH, KV_NAME, KV_TRACK (true|false|unset).
export function storeOptions(extra) {
  const backend = __ENV.KV_BACKEND || "memory";
  const o = { backend };
  if (backend === "disk") {
    o.path = __ENV.KV_PATH || "./.k6.kv";
  } else {
    o.name = __ENV.KV_NAME || "k6kv";
  }
  if (__ENV.KV_TRACK === "true" || __ENV.KV_TRACK === "false") {
    o.trackKeys = __ENV.KV_TRACK === "true";
  }
  return Object.assign(o, extra || {});
}

export const thresholds = { checks: ["rate==1.0"] };

// ok records one check; a failure is also logged with its details.
export function ok(cond, label, details) {
  const passed = check(null, { [label]: () => !!cond });
  if (!passed) {
    console.error(`FAILED: ${label}${details === undefined ? "" : ": " + details}`);
  }
  return passed;
}

// eq checks that got and want have the same JSON text.
export function eq(got, want, label) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  return ok(g === w, label, `got ${g}, want ${w}`);
}

// rejects checks that promise rejects with an error named name.
export async function rejects(promise, name, label) {
  try {
    const v = await promise;
    ok(false, label, `resolved with ${JSON.stringify(v)}, want a ${name} rejection`);
    return null;
  } catch (e) {
    ok(e && e.name === name && typeof e.message === "string" && e.message !== "", label,
      `rejected with ${e && e.name}: ${e && e.message}, want ${name}`);
    return e;
  }
}

// throws checks that f() throws an error named name.
export function throws(f, name, label) {
  try {
    f();
    ok(false, label, `did not throw, want ${name}`);
    return null;
  } catch (e) {
    ok(e && e.name === name, label, `threw ${e && e.name}: ${e && e.message}, want ${name}`);
    return e;
  }
}

// guard runs an async body; an exception becomes a failed check.
export async function guard(label, body) {
  try {
    await body();
  } catch (e) {
    ok(false, `${label}: no exception`, `${e && e.name}: ${e && e.message}\n${e && e.stack}`);
  }
}

// pause waits a little without k6's sleep() blocking the event loop.
export function pause(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
