//go:build cgo

package kv

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestJSBackupRestore(t *testing.T) {
	eachStore(t, func(t *testing.T, opts string) {
		dir := t.TempDir()
		rt := newJS(t)
		other := storeOptions(t, "memory", false, "")
		head := `const kv = openKv(` + opts + `); const d = ` + strconv.Quote(dir) + ` + "/";
			const dst = openKv(` + other + `);`
		runAsync(t, rt, head+`
			const data = {};
			for (let i = 0; i < 500; i++) data["k:" + String(i).padStart(4, "0")] = {i: i, s: "v" + i};
			await kv.setMany(data);
			await kv.set("text", "plain");
			let r = await kv.backup({fileName: d + "sub/b1.kv"});
			eq([r.totalEntries, r.bestEffort, r.warning], [501, false, undefined], "backup");
			if (!(r.bytesWritten > 0) || !(r.pauseMs >= 0)) throw new Error("backup result " + JSON.stringify(r));
			r = await kv.backup({fileName: d + "b2.kv", allowConcurrentWrites: true});
			eq([r.totalEntries, r.bestEffort], [501, true], "best-effort backup");
			if (!r.warning) throw new Error("no warning on a best-effort backup");
		`)
		// A backup cut short, and a file that is no store.
		whole, err := os.ReadFile(filepath.Join(dir, "b2.kv"))
		if err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(filepath.Join(dir, "b2.kv"))
		if int64(len(whole)) != st.Size() {
			t.Fatal("short read")
		}
		for name, content := range map[string][]byte{
			"cut.kv":     whole[:len(whole)-1],
			"cuthdr.kv":  whole[:100],
			"foreign.kv": []byte("this is not a store, it is text\n"),
		} {
			if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		runAsync(t, rt, head+`
			// restore replaces what the target held
			await dst.clear();
			await dst.set("stale", 1);
			let r = await dst.restore({fileName: d + "sub/b1.kv"});
			eq(r.totalEntries, 501, "restore");
			eq(await dst.get("k:0042"), {i: 42, s: "v42"}, "value back");
			eq(await dst.get("text"), "plain", "string back");
			eq(await dst.exists("stale"), false, "restore replaces");
			eq(await dst.size(), 501, "size");

			// guards refuse before anything changes
			await dst.clear();
			await dst.set("keep", 1);
			let e = await rejects(dst.restore({fileName: d + "b2.kv", maxEntries: 500}), "SnapshotBudgetExceededError", "maxEntries");
			if (!e.message.includes("501")) throw new Error(e.message);
			await rejects(dst.restore({fileName: d + "b2.kv", maxBytes: 1000}), "SnapshotBudgetExceededError", "maxBytes");
			eq([await dst.size(), await dst.get("keep")], [1, 1], "unchanged after refusals");

			// bad files and options
			await rejects(dst.restore({fileName: d + "missing.kv"}), "SnapshotNotFoundError", "missing");
			await rejects(dst.restore({fileName: d + "foreign.kv"}), "SnapshotReadError", "foreign");
			await rejects(dst.restore({fileName: d + "cut.kv"}), "SnapshotReadError", "truncated");
			await rejects(dst.restore({fileName: d + "cuthdr.kv"}), "SnapshotReadError", "truncated in the header");
			await rejects(dst.restore(), "RestoreOptionsRequiredError", "no options");
			await rejects(kv.backup(), "BackupOptionsRequiredError", "no options");
			await rejects(kv.backup({}), "InvalidOptionsError", "no fileName");
			await rejects(kv.backup({fileName: d + "x", other: 1}), "InvalidOptionsError", "unknown option");
			await rejects(dst.restore({fileName: d + "b2.kv", maxEntries: 1.5}), "InvalidOptionsError", "fraction");
			await rejects(kv.backup({fileName: d + "sub/b1.kv/x"}), "SnapshotExportError", "a file in the way");
			eq([await dst.size(), await dst.get("keep")], [1, 1], "unchanged after bad files");

			eq((await dst.restore({fileName: d + "b2.kv", maxEntries: 501, maxBytes: 0})).totalEntries, 501, "guard just met; 0 is no guard");
			eq((await dst.restore({fileName: d + "b2.kv", maxEntries: -1})).totalEntries, 501, "negative is no guard");
			eq(await dst.get("k:0499"), {i: 499, s: "v499"}, "from the best-effort backup");
		`)
		left, _ := filepath.Glob(filepath.Join(dir, "*.tmp.*"))
		if len(left) > 0 {
			t.Fatalf("temporary files left: %v", left)
		}
	})
}

// A disk store's file, copied while no process has it open, restores.
func TestJSRestoreFromClosedStoreFile(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.kv")
	rt := newJS(t)
	runAsync(t, rt, `const kv = openKv({backend: "disk", path: `+strconv.Quote(src)+`, reserve: "64MiB"});
		for (let i = 0; i < 100; i++) await kv.set("c" + i, i);
		kv.close();`)
	whole, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(dir, "copy.kv")
	if err := os.WriteFile(cp, whole, 0o600); err != nil {
		t.Fatal(err)
	}
	runAsync(t, rt, `const dst = openKv(`+storeOptions(t, "memory", true, "")+`);
		eq((await dst.restore({fileName: `+strconv.Quote(cp)+`})).totalEntries, 100, "restore from a copy");
		eq(await dst.get("c77"), 77, "value");`)
}

// TestExportGoldenFiles pins what exportJSONL() and exportCSV() write for
// a set of awkward entries to tests/cli/golden/export.*, which the CLI
// test compares with shmkv-dump --export on the same entries (set by
// tests/cli/mkstore.c "export": keep the two lists in step). Run with
// SHMKV_UPDATE_GOLDEN=1 to rewrite the files.
func TestExportGoldenFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ex.kv")
	d, err := openDB(openParams{backend: BackendDisk, where: path, reserve: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	entries := []struct {
		k, v string
		kind Kind
	}{
		{"cfg", "{ \"name\" : \"demo\", \"n\": 1.5e3, \"ok\": true,\n \"none\": null, \"tags\": [\"a\", \"b\"] }", KindJSON},
		{"text", "say \"hi\", \\ <tag> & done", KindString},
		{"lines", "one\ntwo\r\tthree\x01\b\f\x7f", KindString},
		{"sep", "a\u2028b\u2029c", KindString},
		{"uni:ключ", "знач 😀", KindString},
		{"empty", "", KindBytes},
		{"bytes-text", "plain bytes", KindBytes},
		{"num", "42", KindJSON},
		{"raw2028", "\"x\u2028y\"", KindJSON},
		{"user:1", `{"name":"Ada, L","age":36,"admin":false,"note":null}`, KindJSON},
		{"user:2", `{"name":"first", "age" : 1.5 ,"name":"last \"q\"\nline"}`, KindJSON},
		{"user:3", `{"age":"\u00e9\ud83d\ude00\ud800", "note": " lead", "name": "\\."}`, KindJSON},
		{"user:4", `{}`, KindJSON},
		{"k<&>", "v<&>", KindBytes},
		{"j<&>", `{"a":"<&>"}`, KindJSON},
	}
	for _, e := range entries {
		if err := d.set(e.k, []byte(e.v), e.kind); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
	rt := newJS(t)
	runAsync(t, rt, `const kv = openKv({backend: "disk", path: `+strconv.Quote(path)+`});
		await kv.exportJSONL({fileName: `+strconv.Quote(filepath.Join(dir, "export.jsonl"))+`});
		await kv.exportCSV({fileName: `+strconv.Quote(filepath.Join(dir, "export.csv"))+`, prefix: "user:", columns: ["name", "age", "note", "missing"]});`)
	for _, name := range []string{"export.jsonl", "export.csv"} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		golden := filepath.Join("..", "tests", "cli", "golden", name)
		if os.Getenv("SHMKV_UPDATE_GOLDEN") != "" {
			if err := os.WriteFile(golden, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("%s differs from %s:\n%q\nwant\n%q", name, golden, got, want)
		}
	}
}
