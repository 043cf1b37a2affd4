//go:build cgo

package kv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Promises that hold across processes, checked with a second process: this
// test binary run again for TestProcessChild, which runs the script in
// PROCESS_SCRIPT on the store of PROCESS_OPTS (as `kv`) in a loop until
// the file PROCESS_STOP appears, or once when there is none.

func TestProcessChild(t *testing.T) {
	opts, script, stop := os.Getenv("PROCESS_OPTS"), os.Getenv("PROCESS_SCRIPT"), os.Getenv("PROCESS_STOP")
	if opts == "" {
		t.Skip("run by the other tests of this file")
	}
	rt := newJS(t)
	runAsync(t, rt, `globalThis.kv = openKv(`+opts+`);`)
	for {
		runAsync(t, rt, script)
		if stop == "" {
			break
		}
		if _, err := os.Stat(stop); err == nil {
			break
		}
	}
	runAsync(t, rt, `await kv.close();`)
}

// process starts TestProcessChild running script on the store of opts, in
// a loop until stop() is called (loop) or once; wait() waits for it and
// fails the test if it failed. A test that fails first stops it too.
type process struct {
	t    *testing.T
	cmd  *exec.Cmd
	out  strings.Builder
	stop string
}

func startProcess(t *testing.T, opts, script string, loop bool) *process {
	t.Helper()
	p := &process{t: t}
	p.cmd = exec.Command(os.Args[0], "-test.run=^TestProcessChild$", "-test.count=1")
	p.cmd.Env = append(os.Environ(), "PROCESS_OPTS="+opts, "PROCESS_SCRIPT="+script)
	if loop {
		p.stop = filepath.Join(t.TempDir(), "stop")
		p.cmd.Env = append(p.cmd.Env, "PROCESS_STOP="+p.stop)
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	})
	return p
}

func (p *process) wait() {
	p.t.Helper()
	if p.stop != "" {
		if err := os.WriteFile(p.stop, nil, 0o600); err != nil {
			p.t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			p.t.Fatalf("the other process: %v\n%s", err, p.out.String())
		}
	case <-time.After(120 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
		p.t.Fatalf("the other process did not end within 120 s\n%s", p.out.String())
	}
}

// trackKeys: true from another process turns tracking on for the store; a
// process that opened it before keeps the index current from then on.
func TestProcessTrackKeysTurnedOnByAnother(t *testing.T) {
	eachUntracked(t, func(t *testing.T, backend, opts string) {
		rt := newJS(t)
		runAsync(t, rt, `globalThis.kv = openKv(`+opts+`);
			for (let i = 0; i < 50; i++) await kv.set("u:" + i, i);
			eq((await kv.stats()).trackKeys, false, "untracked");`)
		tracked := strings.Replace(opts, "trackKeys: false", "trackKeys: true", 1)
		startProcess(t, tracked, `eq((await kv.list({prefix: "u:1"})).length, 11, "the other process lists through the index");`, false).wait()
		runAsync(t, rt, `for (let i = 50; i < 60; i++) await kv.set("u:" + i, i);
			await kv.delete("u:0");
			const s = await kv.stats();
			eq([s.trackKeys, s.index.keysList, s.index.consistent], [true, 59, true], "tracked, and current with this process's writes");
			eq((await kv.list({prefix: "u:5"})).map((e) => e.key), ["u:5", "u:50", "u:51", "u:52", "u:53", "u:54", "u:55", "u:56", "u:57", "u:58", "u:59"], "listed through the index");
			eq(await kv.count({prefix: "u:"}), 59, "count");`)
	})
}

// A paged scan while another process writes between its pages: every key
// that exists for the whole scan comes exactly once, in order, whatever the
// other process adds and removes; the store is larger than autoIndexKeys,
// so the first page of an untracked store turns the index on, under the
// writer.
func TestProcessScanWhileAnotherWrites(t *testing.T) {
	eachUntracked(t, func(t *testing.T, backend, opts string) {
		rt := newJS(t)
		runAsync(t, rt, `globalThis.kv = openKv(`+opts+`);
			const rec = {};
			for (let i = 0; i < 25000; i++) rec["s:" + String(i).padStart(5, "0")] = i;
			await kv.setMany(rec);`)
		// between the base keys: "s:00012w" sorts after "s:00012"
		writer := startProcess(t, opts, `const r = {};
			for (let i = 0; i < 20; i++) r["s:" + String(Math.floor(Math.random() * 25000)).padStart(5, "0") + "w"] = "w";
			await kv.setMany(r);
			await kv.set("writer", 1);
			await kv.deleteMany(Object.keys(r));`, true)
		runAsync(t, rt, `for (let i = 0; i < 3000 && !(await kv.exists("writer")); i++) await new Promise((r) => setTimeout(r, 10));
			eq(await kv.exists("writer"), true, "the other process writes");
			for (const [what, page] of [["scanKeys", 997], ["scan", 500]]) {
				let cursor = "", last = "", base = 0, pages = 0;
				for (;;) {
					const p = what === "scan" ? await kv.scan({prefix: "s:", limit: page, cursor})
						: await kv.scanKeys({prefix: "s:", limit: page, cursor});
					const keys = what === "scan" ? p.entries.map((e) => e.key) : p.keys;
					for (const k of keys) {
						if (!(k > last)) throw new Error(what + ": " + k + " after " + last);
						last = k;
						if (!k.endsWith("w")) {
							if (k !== "s:" + String(base).padStart(5, "0")) throw new Error(what + ": " + k + " where s:" + base + " was due");
							base++;
						}
					}
					pages++;
					if (p.done) break;
					cursor = p.cursor;
				}
				eq(base, 25000, what + ": every key that stayed, once");
				if (pages < 25000 / page) throw new Error(what + ": " + pages + " pages");
			}
			eq((await kv.stats()).trackKeys, true, "the first paged scan turned the index on");`)
		writer.wait()
	})
}

// popRandom, popRandomMany and claimRandom with completeClaim, from three
// processes at once on one pool: every token is taken exactly once. Each
// taker records its take with setIfAbsent, so a token handed out twice is
// found by the second taker; "taken:" keys by taker show that all three
// took some (logged).
func TestProcessPoolTakenOnce(t *testing.T) {
	eachStore(t, func(t *testing.T, opts string) {
		const n = 3000
		rt := newJS(t)
		runAsync(t, rt, `globalThis.kv = openKv(`+opts+`);
			const rec = {};
			for (let i = 0; i < `+itoa(n)+`; i++) rec["t:" + i] = i;
			await kv.setMany(rec);`)
		// the three start together: each waits until all are ready
		take := `const me = Math.random().toString(36).slice(2);
			await kv.set("ready:" + me, 1);
			for (let i = 0; (await kv.count({prefix: "ready:"})) < 3; i++) {
				if (i > 12000) throw new Error("the other takers did not come");
				await new Promise((r) => setTimeout(r, 5));
			}
			const took = async (key, value) => {
				if (value !== Number(key.slice(2))) throw new Error(key + " came with " + JSON.stringify(value));
				if (!(await kv.setIfAbsent("taken:" + key, me))) throw new Error(key + " taken twice");
			};
			for (let round = 0; ; round++) {
				let got = 0;
				if (round % 3 === 0) {
					const p = await kv.popRandom({prefix: "t:"});
					if (p) { await took(p.key, p.value); got++; }
				} else if (round % 3 === 1) {
					for (const p of await kv.popRandomMany({prefix: "t:", count: 5})) { await took(p.key, p.value); got++; }
				} else {
					const c = await kv.claimRandom({prefix: "t:", ttl: 60000});
					if (c && await kv.completeClaim(c)) { await took(c.key, c.entry.value); got++; }
					else if (c) throw new Error("a live claim could not be completed: " + c.key);
				}
				if (got === 0 && (await kv.count({prefix: "t:"})) === 0) break;
			}`
		a := startProcess(t, opts, take, false)
		b := startProcess(t, opts, take, false)
		runAsync(t, rt, take)
		a.wait()
		b.wait()
		runAsync(t, rt, `eq([await kv.count({prefix: "t:"}), await kv.count({prefix: "taken:"})], [0, `+itoa(n)+`], "every token taken once, none left");
			const by = {};
			for (const e of await kv.list({prefix: "taken:"})) by[e.value] = (by[e.value] || 0) + 1;
			globalThis.by = JSON.stringify(Object.values(by));`)
		t.Logf("tokens taken by each process: %s", rt.VU.Runtime().Get("by").String())
	})
}
