// Many VUs of one k6 process on one store: no increment lost, every token
// taken exactly once, one winner per setIfAbsent race.
import exec from "k6/execution";
import { openKv } from "k6/x/kv";
import { storeOptions, thresholds, ok, eq, guard } from "./lib/t.js";

const COUNT = 800;
const TOKENS = 400;
const RACES = 40;

export const options = {
  thresholds,
  scenarios: {
    counter: { executor: "shared-iterations", vus: 8, iterations: COUNT, exec: "counter" },
    tokens: { executor: "per-vu-iterations", vus: 8, iterations: 1, exec: "consume" },
  },
};

const kv = openKv(storeOptions());

export async function setup() {
  await kv.clear();
  for (let i = 0; i < TOKENS; i++) {
    await kv.set(`token:${i}`, i);
  }
}

export async function counter() {
  await guard("counter", async () => {
    await kv.incrementBy("counter", 1);
    // Every iteration races for one of RACES keys; setIfAbsent lets one win.
    const race = exec.scenario.iterationInTest % RACES;
    if (await kv.setIfAbsent(`race:${race}`, exec.vu.idInTest)) {
      await kv.incrementBy("race-wins", 1);
    }
  });
}

export async function consume() {
  await guard("consume", async () => {
    for (;;) {
      const key = await kv.randomKey({ prefix: "token:" });
      if (key === "") {
        break;
      }
      if (await kv.deleteIfExists(key)) {
        // setIfAbsent fails if another VU already recorded this token.
        ok(await kv.setIfAbsent(`taken:${key}`, exec.vu.idInTest), "a token is taken once", key);
      }
    }
  });
}

export async function teardown() {
  await guard("verify", async () => {
    eq(await kv.get("counter"), COUNT, "no increment lost");
    eq(await kv.get("race-wins"), RACES, "one setIfAbsent winner per key");
    eq((await kv.list({ prefix: "race:" })).length, RACES, "every race key set");
    eq((await kv.list({ prefix: "token:" })).length, 0, "every token taken");
    const taken = (await kv.list({ prefix: "taken:" })).map((e) => e.key.slice("taken:".length));
    eq(taken.length, TOKENS, "as many takes as tokens");
    const want = new Set(Array.from({ length: TOKENS }, (_, i) => `token:${i}`));
    ok(taken.every((k) => want.has(k)), "only produced tokens were taken");
    eq(await kv.size(), 2 + RACES + TOKENS, "size counts every key");
  });
}
