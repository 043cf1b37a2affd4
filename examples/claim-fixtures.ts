// Reserving named fixtures with claims (TypeScript; k6 runs .ts files as
// they are).
//
// Each iteration reserves two accounts it needs together (a payer and a
// payee) with claimKeys, does its work, and hands them back with
// releaseClaims. The claims hold for every VU of every k6 process on the
// host, so two iterations never hold the same account, wherever they run.
// The result shapes are xk6-kv's: claimKeys sorts the keys into claimed,
// busy and missing, and the batch ends report the refs that were not live.
// Type-checked against cgo/index.d.ts by the test suite (tests/ts/run.sh).
import { sleep } from "k6";
import { openKv, type Claim, type ClaimKeysResult, type ReleaseClaimsResult } from "k6/x/kv";

interface Account {
  id: number;
  balance: number;
}

const ACCOUNTS = 20;
const kv = openKv({ backend: "memory", name: __ENV.KV_NAME || "claim-fixtures", trackKeys: true });

export const options = { vus: 4, iterations: 40 };

export async function setup(): Promise<void> {
  await kv.clear();
  const accounts: Record<string, Account> = {};
  for (let i = 0; i < ACCOUNTS; i++) accounts[`account:${i}`] = { id: i, balance: 100 };
  await kv.setMany(accounts);
}

function pair(): [string, string] {
  const a = Math.floor(Math.random() * ACCOUNTS);
  const b = (a + 1 + Math.floor(Math.random() * (ACCOUNTS - 1))) % ACCOUNTS;
  return [`account:${a}`, `account:${b}`];
}

export default async function (): Promise<void> {
  // Both accounts or neither: with allOrNothing the first one that is busy
  // (held by another VU or process) releases the other and stops the call.
  let got: ClaimKeysResult<Account>;
  for (;;) {
    got = await kv.claimKeys<Account>(pair(), { owner: `vu-${__VU}`, ttl: 10_000, allOrNothing: true });
    if (got.claimed.length === 2) break;
    if (got.missing.length > 0) throw new Error(`no such account: ${got.missing.join(", ")}`);
    sleep(0.01); // busy: try another pair
  }
  const [payer, payee]: Claim<Account>[] = got.claimed;
  // While the claims are live, no other claim on these keys succeeds, so
  // this read-modify-write is the only one on them.
  await kv.set(payer.key, { ...payer.entry.value, balance: payer.entry.value.balance - 1 });
  await kv.set(payee.key, { ...payee.entry.value, balance: payee.entry.value.balance + 1 });

  const done: ReleaseClaimsResult = await kv.releaseClaims(got.claimed);
  if (done.released !== 2) {
    // A ref that was not live any more: its lease ran out and another
    // iteration may have taken the account meanwhile.
    for (const f of done.failed) console.warn(`${f.key}: ${f.name}: ${f.message}`);
    throw new Error(`released ${done.released} of ${done.attempted}`);
  }
}

export async function teardown(): Promise<void> {
  // Every unit moved from one account to another: the total is unchanged.
  let total = 0;
  for (const e of await kv.list({ prefix: "account:" })) total += (e.value as Account).balance;
  if (total !== ACCOUNTS * 100) throw new Error(`total ${total}, want ${ACCOUNTS * 100}`);
  console.log(`40 transfers between ${ACCOUNTS} accounts; total still ${total}`);
}
