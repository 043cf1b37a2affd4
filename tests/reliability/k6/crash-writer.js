// k6 crash loop: one writer process. The driver (../k6-crashloop.sh) kills
// it with SIGKILL at a random moment and starts another incarnation.
//
// Every VU iteration writes a key of its own that is never overwritten or
// deleted (w:<proc>:<incarnation>:<vu>.<iter> = "<vu>.<iter>") and adds 1 to
// the process slot's counter c:<proc>. Around each awaited write it logs
// "I <op> <key>" (intent, before) and "A <op> <key>" (acknowledged, after
// the promise resolved) with console.log, which the driver sends to a file
// per process with --console-output. A shared pool of keys (s:0..199) is
// overwritten and deleted as well, so that deletes, tombstones and rehashes
// happen while processes die.
import { openKv } from "k6/x/kv";

const P = __ENV.KV_PROC;
const I = __ENV.KV_INC;

export const options = {
  scenarios: {
    // bounded, so that writers end by themselves even if the driver is
    // killed before it could kill them
    write: { executor: "constant-vus", vus: 4, duration: __ENV.KV_DURATION || "10m", gracefulStop: "0s" },
  },
};

const kv = openKv({ backend: "disk", path: __ENV.KV_PATH, trackKeys: true });

export default async function () {
  const n = `${__VU}.${__ITER}`;
  const key = `w:${P}:${I}:${n}`;
  console.log(`I set ${key}`);
  await kv.set(key, n);
  console.log(`A set ${key}`);

  console.log(`I incr c:${P}`);
  await kv.incrementBy(`c:${P}`, 1);
  console.log(`A incr c:${P}`);

  const s = `s:${Math.floor(Math.random() * 200)}`;
  if (Math.random() < 0.3) {
    await kv.delete(s);
  } else {
    await kv.set(s, { by: key });
  }
}
