#!/usr/bin/env python3
"""Add up test results from every runner the test command used.

Arguments are files: meson testlog.json files (one JSON object per line),
or text files whose lines say 'NAME: N passed, N failed'. A Criterion
binary counts its individual tests (from its Synthesis line); any other
meson test counts as one. Prints one line per source (for a meson log, with
its counts per suite: unit, multiproc, crash, reliability, cli, fuzz,
bench) and a final 'N passed, N failed'. Exits 1 if anything failed or
nothing ran.
For each failed meson test it also prints the lines that say why (a
Criterion assertion or crash, a child process's failed check), so that a
CI log that keeps only this summary still names the failure.
"""
import json
import re
import sys

SYN = re.compile(r"Synthesis: Tested: (\d+) \| Passing: (\d+) \| Failing: (\d+) \| Crashing: (\d+)")
PLAIN = re.compile(r"^(?:[\w./-]+: )?(\d+) passed, (\d+) failed", re.M)
WHY = re.compile(r"Assertion Failed|\[FAIL\]|CRASH|[Tt]imed out|check failed|Sanitizer|panic:")
WHY_LINES = 24  # per failed test: enough for a few assertions and their messages


SEED = re.compile(r"\[NOTE\] (\S+::\S+): random seed: (SHMKV_TEST_SEED=\w+)")
FAILED = re.compile(r"\[FAIL\] (\S+::\S+):")


def why(out):
    """The lines of a failed test's output that explain it, each with the
    two lines after it (Criterion puts an assertion's message there), and
    the random seed of each failed Criterion test that drew one (to rerun
    it with the same draws)."""
    lines = out.splitlines()
    keep = []
    for i, line in enumerate(lines):
        if WHY.search(line):
            keep.extend(j for j in range(i, min(i + 3, len(lines))) if j not in keep)
    failed = {m.group(1) for m in map(FAILED.search, lines) if m}
    seeds = ["%s: rerun with %s" % m.groups() for m in map(SEED.search, lines)
             if m and m.group(1) in failed]
    return ([lines[j] for j in keep] + seeds)[:WHY_LINES]


def meson_log(path, suites):
    passed = failed = 0
    bad = []
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.strip()
        if not line:
            continue
        t = json.loads(line)
        before = (passed, failed)
        out = (t.get("stdout") or "") + (t.get("stderr") or "")
        ok = t.get("result") in ("OK", "EXPECTEDFAIL")
        skipped = t.get("result") == "SKIP"
        m = SYN.findall(out)
        p = PLAIN.findall(out)
        if m:
            tested, passing, failing, crashing = map(int, m[-1])
            passed += passing
            failed += tested - passing
            if not ok and tested == passing:
                failed += 1  # the binary itself failed (exit code, timeout)
        elif p and t.get("protocol") != "tap":
            np_, nf = map(int, p[-1])
            passed += np_
            failed += nf
            if not ok and nf == 0:
                failed += 1
        elif skipped:
            failed += 1  # nothing here is allowed to skip
            bad.append(t["name"] + " (skipped)")
        elif ok:
            passed += 1
        else:
            failed += 1
        if not ok:
            bad.append(t["name"])
            for line in why(out):
                print(f"    {t['name']}: {line}")
        # "project:suite / name"
        suite = t["name"].split(" / ")[0].split(":")[-1]
        sp, sf = suites.get(suite, (0, 0))
        suites[suite] = (sp + passed - before[0], sf + failed - before[1])
    return passed, failed, bad


def main(argv):
    total_p = total_f = 0
    for path in argv[1:]:
        suites = {}
        try:
            if path.endswith(".json"):
                p, f, bad = meson_log(path, suites)
            else:
                text = open(path, encoding="utf-8", errors="replace").read()
                found = PLAIN.findall(text)
                p, f = (sum(int(a) for a, _ in found), sum(int(b) for _, b in found)) if found else (0, 1)
                bad = [] if found else ["no result line"]
        except (OSError, ValueError) as e:
            p, f, bad = 0, 1, [str(e)]
        total_p += p
        total_f += f
        per = ", ".join(f"{k} {sp}/{sf}" for k, (sp, sf) in suites.items())
        print(f"  {path}: {p} passed, {f} failed" + (f" (suites, passed/failed: {per})" if per else "")
              + (f"  [{', '.join(bad)}]" if bad else ""))
    print(f"{total_p} passed, {total_f} failed")
    return 0 if total_f == 0 and total_p > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
