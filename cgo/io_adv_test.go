//go:build cgo

package kv

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Adversarial probes of the imports, exports and validations.

// ioAdv runs body on every store kind with d the folder of files.
func ioAdv(t *testing.T, files map[string]string, body string) {
	t.Helper()
	dir := writeFiles(t, files)
	eachStore(t, func(t *testing.T, opts string) {
		runAsync(t, newJS(t), `const kv = openKv(`+opts+`); const d = `+strconv.Quote(dir)+` + "/";
			async function bad(p, method, o, name, want) {
				const e = await rejects(p, name, JSON.stringify(o));
				for (const w of want) if (!e.message.includes(w)) throw new Error("message " + JSON.stringify(e.message) + " lacks " + JSON.stringify(w));
				eq(await kv.size(), 0, JSON.stringify(o) + ": nothing written");
				return e;
			}
			`+body)
	})
}

// Line numbers stay right after quoted line breaks (LF and CRLF).
func TestAdvImportCSVLinesAfterQuotedBreaks(t *testing.T) {
	ioAdv(t, map[string]string{
		"q.csv": "id,name\n1,\"a\nb\nc\"\n2,\"x\r\ny\"\n,z\n",
	}, `
		const o = {fileName: d + "q.csv", keyColumn: "id", batchSize: 1};
		await bad(kv.importCSV(o), "importCSV", o, "ValueParseError", ["q.csv line 7 (row 4)", "empty"]);
		const v = await kv.validateCSV({fileName: o.fileName, keyColumn: "id"});
		eq([v.valid, v.rows, v.firstError.row, v.firstError.line], [false, 2, 4, 7], "validate");
	`)
}

// Keys at and over the library's limit, after good rows: the over-long one
// rejects with KeyTooLongError before anything is written.
func TestAdvImportKeyLimit(t *testing.T) {
	ok := strings.Repeat("k", keyMax)
	long := strings.Repeat("k", keyMax+1)
	ioAdv(t, map[string]string{
		"long.csv":   "id,v\na,1\n" + long + ",2\n",
		"long.jsonl": `{"key":"a","value":1}` + "\n" + `{"key":"` + long + `","value":2}` + "\n",
		"ok.csv":     "id,v\n" + ok + ",2\n",
		"ok.jsonl":   `{"key":"` + ok + `","value":2}` + "\n",
	}, `
		let o = {fileName: d + "long.csv", keyColumn: "id", batchSize: 1};
		await bad(kv.importCSV(o), "importCSV", o, "KeyTooLongError", ["long.csv line 3 (row 3)"]);
		o = {fileName: d + "long.jsonl", batchSize: 1};
		await bad(kv.importJSONL(o), "importJSONL", o, "KeyTooLongError", ["long.jsonl line 2"]);
		eq((await kv.importCSV({fileName: d + "ok.csv", keyColumn: "id"})).imported, 1, "key at the limit, CSV");
		eq((await kv.importJSONL({fileName: d + "ok.jsonl"})).imported, 1, "key at the limit, JSONL");
		eq(await kv.size(), 1, "one key");
	`)
}

// A JSONL key with a lone surrogate escape ("\ud800") has no UTF-8 form:
// decoding it quietly makes it U+FFFD, so two different keys would become
// one. set() refuses such keys; the import must too, writing nothing.
func TestAdvImportJSONLLoneSurrogateKey(t *testing.T) {
	ioAdv(t, map[string]string{
		"surr.jsonl": `{"key":"ok","value":1}` + "\n" + `{"key":"a\ud800","value":1}` + "\n" + `{"key":"a\udbff","value":2}` + "\n",
		"pair.jsonl": `{"key":"\ud83d\ude00 \\ud800 \ufffd","value":"\ud800"}` + "\n",
	}, `
		const o = {fileName: d + "surr.jsonl", batchSize: 1};
		await bad(kv.importJSONL(o), "importJSONL", o, "ValueParseError", ["surr.jsonl line 2", "surrogate"]);
		const v = await kv.validateJSONL({fileName: o.fileName});
		eq([v.valid, v.records, v.firstError.line], [false, 1, 2], "validate");
		eq((await kv.importJSONL({fileName: d + "pair.jsonl"})).imported, 1, "a pair, an escaped backslash, U+FFFD itself");
		eq(await kv.get("\ud83d\ude00 \\ud800 \ufffd"), "\ufffd", "key as written; a lone surrogate in a value reads back as U+FFFD, as set()'s");
	`)
}

// NUL bytes in a cell and in a key are data.
func TestAdvImportNUL(t *testing.T) {
	ioAdv(t, map[string]string{
		"nul.csv":   "id,v\na\x00b,c\x00d\n",
		"nul.jsonl": `{"key":"x\u0000y","value":"\u0000"}` + "\n",
	}, `
		eq((await kv.importCSV({fileName: d + "nul.csv", keyColumn: "id"})).imported, 1, "CSV");
		eq(await kv.get("a\0b"), {id: "a\0b", v: "c\0d"}, "CSV row");
		eq((await kv.importJSONL({fileName: d + "nul.jsonl"})).imported, 1, "JSONL");
		eq(await kv.get("x\0y"), "\0", "JSONL value");
	`)
}

// Duplicate keys in one batch of a CSV import: the later row wins.
func TestAdvImportCSVDuplicateInBatch(t *testing.T) {
	ioAdv(t, map[string]string{"dup.csv": "id,v\nk,1\nj,0\nk,2\n"}, `
		eq((await kv.importCSV({fileName: d + "dup.csv", keyColumn: "id"})).imported, 3, "rows counted");
		eq(await kv.get("k"), {id: "k", v: "2"}, "later row wins");
		eq(await kv.size(), 2, "two keys");
	`)
}

// Options of the wrong type or range reject with InvalidOptionsError and
// write nothing.
func TestAdvImportOptionTypes(t *testing.T) {
	ioAdv(t, map[string]string{"g.csv": "id,v\na,1\n", "g.jsonl": `{"key":"a","value":1}` + "\n"}, `
		const c = {fileName: d + "g.csv", keyColumn: "id"};
		for (const extra of [{limit: 1.5}, {limit: "1"}, {limit: NaN}, {limit: Infinity}, {batchSize: -1}, {batchSize: 2.5},
				{batchSize: "10"}, {batchSize: 1e9}, {hasHeader: "yes"}, {hasHeader: 1}, {delimiter: 5}, {delimiter: ""},
				{delimiter: "\n"}, {delimiter: "\uFFFD"}, {delimiter: "\0"}, {keyColumn: 0}, {keyColumn: ""}, {keyColumn: null, hasHeader: false},
				{keyColumn: 1.5, hasHeader: false}, {keyColumn: -1, hasHeader: false}, {keyColumn: "x", hasHeader: false},
				{fileName: "a\0b"}, {fileName: {}}]) {
			const o = Object.assign({}, c, extra);
			await bad(kv.importCSV(o), "importCSV", o, "InvalidOptionsError", []);
			// importJSONL takes a batchSize <= 0 for the default, as xk6-kv does
			if (!("keyColumn" in extra) && !("delimiter" in extra) && !("hasHeader" in extra) && extra.batchSize !== -1) {
				const j = Object.assign({fileName: d + "g.jsonl"}, extra);
				await bad(kv.importJSONL(j), "importJSONL", j, "InvalidOptionsError", []);
			}
		}
		await bad(kv.importCSV("g.csv"), "importCSV", "string", "InvalidOptionsError", []);
		await bad(kv.importJSONL([d + "g.jsonl"]), "importJSONL", "array", "InvalidOptionsError", []);
		eq((await kv.importCSV(Object.assign({}, c, {limit: 0, batchSize: 0}))).imported, 1, "0: all rows, default batch");
		eq((await kv.importCSV(Object.assign({}, c, {batchSize: 10000}))).imported, 1, "the largest batch");
		eq((await kv.importCSV({fileName: d + "g.csv", keyColumn: 1, hasHeader: false})).imported, 2, "a number column");
		eq(await kv.get("v"), {column_0: "id", column_1: "v"}, "header read as a row");
	`)
}

// Files that are not regular files: a device that never ends must not be
// read into memory without bound.
func TestAdvImportDevZero(t *testing.T) {
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skip("no /dev/zero")
	}
	eachStore(t, func(t *testing.T, opts string) {
		runAsync(t, newJS(t), `const kv = openKv(`+opts+`);
			for (const m of ["importCSV", "importJSONL", "validateCSV", "validateJSONL"]) {
				const o = {fileName: "/dev/zero"};
				if (m.endsWith("CSV")) o.keyColumn = m == "importCSV" ? "id" : undefined;
				if (o.keyColumn === undefined) delete o.keyColumn;
				const p = kv[m](o);
				// a row or line that long cannot hold a value the store takes
				if (m.startsWith("import")) {
					const e = await p.then(() => null, (e) => e);
					if (!e || e.name !== "ValueTooLargeError") throw new Error(m + ": " + e);
				} else {
					const r = await p;
					eq([r.valid, r.firstError.name], [false, "ValueTooLargeError"], m);
				}
			}
			eq(await kv.size(), 0, "nothing written");`)
	})
}

// Exports write a file that the umask governs, as os.Create's would.
func TestAdvExportFileMode(t *testing.T) {
	dir := t.TempDir()
	runAsync(t, newJS(t), `const kv = openKv(`+storeOptions(t, "memory", false, "")+`);
		await kv.set("a", {v: 1});
		await kv.exportJSONL({fileName: `+strconv.Quote(filepath.Join(dir, "x.jsonl"))+`});
		await kv.exportCSV({fileName: `+strconv.Quote(filepath.Join(dir, "x.csv"))+`, columns: ["v"]});`)
	for _, f := range []string{"x.jsonl", "x.csv"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o044 == 0 {
			t.Errorf("%s: mode %v: a plain os.Create under umask 022 gives 0644", f, st.Mode())
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("temporary files left: %v", ents)
	}
}

// A file too large to keep that changes between the check and the write:
// what was written is what the message says, in whole batches.
func TestAdvImportFileChangesBetweenPasses(t *testing.T) {
	saved, savedHook := importBuffer, importBetweenPasses
	t.Cleanup(func() { importBuffer, importBetweenPasses = saved, savedHook })
	importBuffer = 1000 // ten rows of about 100 bytes do not fit
	var rows strings.Builder
	rows.WriteString("id,v\n")
	for i := 0; i < 10; i++ {
		rows.WriteString("k" + strconv.Itoa(i) + "," + strings.Repeat("v", 100) + "\n")
	}
	good := rows.String()
	cases := []struct {
		name, then, want, err string
		written               int
	}{
		{"same", good, "", "", 10},
		{"bad row appended", good + "\"oops\n", "SnapshotReadError", "8 entries were written", 8},
		{"truncated", good[:len(good)/2], "SnapshotReadError", "changed while it was imported", -1},
		{"row appended", good + "k10,x\n", "SnapshotReadError", "changed while it was imported", -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "f.csv")
			if err := os.WriteFile(file, []byte(good), 0o600); err != nil {
				t.Fatal(err)
			}
			importBetweenPasses = func(string) {
				if err := os.WriteFile(file, []byte(tc.then), 0o600); err != nil {
					t.Error(err)
				}
			}
			if tc.want == "" {
				runAsync(t, newJS(t), `const kv = openKv(`+storeOptions(t, "memory", false, "")+`);
					eq((await kv.importCSV({fileName: `+strconv.Quote(file)+`, keyColumn: "id", batchSize: 4})).imported, 10, "imported");
					eq(await kv.size(), 10, "size");`)
				return
			}
			runAsync(t, newJS(t), `const kv = openKv(`+storeOptions(t, "disk", false, "")+`);
				const e = await rejects(kv.importCSV({fileName: `+strconv.Quote(file)+`, keyColumn: "id", batchSize: 4}), `+strconv.Quote(tc.want)+`, "changed");
				if (!e.message.includes(`+strconv.Quote(tc.err)+`)) throw new Error(e.message);
				const m = /(\d+) entries were written/.exec(e.message);
				if (!m) throw new Error("no count in " + e.message);
				eq(await kv.size(), Number(m[1]), "what was written is what it says: " + e.message);
				eq(Number(m[1]) % 4, 0, "whole batches");
				if (`+strconv.Itoa(tc.written)+` >= 0) eq(Number(m[1]), `+strconv.Itoa(tc.written)+`, "count");`)
		})
	}
}

// Values at and over the store's limit: at it imports, over it rejects
// before anything is written.
func TestAdvImportValueLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	dir := t.TempDir()
	at := `{"key":"a","value":"` + strings.Repeat("x", valueMax-2) + `"}` + "\n"
	over := `{"key":"b","value":"` + strings.Repeat("x", valueMax-1) + `"}` + "\n"
	csvOver := "id,v\nb," + strings.Repeat("x", valueMax) + "\n"
	for name, content := range map[string]string{"at.jsonl": at, "over.jsonl": `{"key":"z","value":1}` + "\n" + over, "over.csv": "id,v\nz,1\n" + csvOver[5:]} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, backend := range []string{"memory", "disk"} {
		t.Run(backend, func(t *testing.T) {
			runAsync(t, newJS(t), `const kv = openKv(`+storeOptions(t, backend, false, `reserve: "512MiB"`)+`); const d = `+strconv.Quote(dir+"/")+`;
				let e = await rejects(kv.importJSONL({fileName: d + "over.jsonl", batchSize: 1}), "ValueTooLargeError", "over, JSONL");
				if (!e.message.includes("over.jsonl line 2")) throw new Error(e.message);
				e = await rejects(kv.importCSV({fileName: d + "over.csv", keyColumn: "id", batchSize: 1}), "ValueTooLargeError", "over, CSV");
				if (!e.message.includes("over.csv line 3 (row 3)")) throw new Error(e.message);
				eq(await kv.size(), 0, "nothing written");
				eq((await kv.importJSONL({fileName: d + "at.jsonl"})).imported, 1, "at the limit");
				eq((await kv.get("a")).length, `+strconv.Itoa(valueMax-2)+`, "read back");`)
		})
	}
}

// jsRandom is a seeded generator of awkward strings and values, in JS.
const jsRandom = `
	let seed = 12345;
	const rnd = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
	const parts = ["a", "Z", " ", ",", ";", "\"", "'", "\n", "\t", "\\", "{", "}", "[", "\u00e9", "\u0301", "\u2028",
		"\ud83d\ude00", "\u0000", "\ufffd", "key", "value", "<", "&", "null", "1e3", "-0"];
	const str = (max) => { let s = ""; const n = rnd(max); for (let i = 0; i < n; i++) s += parts[rnd(parts.length)]; return s; };
	const val = (depth) => {
		switch (rnd(depth > 2 ? 5 : 7)) {
		case 0: return str(12);
		case 1: return rnd(2000000) - 1000000;
		case 2: return (rnd(2000000) - 1000000) / 64;
		case 3: return rnd(2) == 0;
		case 4: return null;
		case 5: { const a = []; for (let i = rnd(4); i > 0; i--) a.push(val(depth + 1)); return a; }
		default: { const o = {}; for (let i = rnd(4); i > 0; i--) o[str(5) || "k"] = val(depth + 1); return o; }
		}
	};
	function same(got, want, what) {
		const gk = Object.keys(got).sort(), wk = Object.keys(want).sort();
		eq(gk, wk, what + ": keys");
		for (const k of wk) eq(got[k], want[k], what + ": key " + JSON.stringify(k));
	}
	async function dump(kv) {
		const out = {};
		let r = {cursor: "", done: false};
		do { r = await kv.scan({cursor: r.cursor, limit: 100}); for (const e of r.entries) out[e.key] = e.value; } while (!r.done);
		return out;
	}
`

// exportJSONL then importJSONL gives back the store exactly; exportCSV then
// importCSV gives back the rows, every cell a string.
func TestAdvRoundTrip(t *testing.T) {
	dir := t.TempDir()
	eachStore(t, func(t *testing.T, opts string) {
		runAsync(t, newJS(t), jsRandom+`const kv = openKv(`+opts+`); const d = `+strconv.Quote(dir+"/")+` + Math.random();
			const want = {};
			for (let i = 0; i < 400; i++) { const k = str(10) || "e"; want[k] = val(0); }
			await kv.setMany(want);
			eq((await kv.exportJSONL({fileName: d + ".jsonl"})).exported, Object.keys(want).length, "exported");
			await kv.clear();
			eq((await kv.importJSONL({fileName: d + ".jsonl", batchSize: 7})).imported, Object.keys(want).length, "imported");
			same(await dump(kv), want, "JSONL round trip");

			// CSV: rows of strings, keys without spaces around them.
			await kv.clear();
			const rows = {};
			for (let i = 0; i < 300; i++) {
				const k = "r" + i + str(6).trim();
				rows[k] = {key: k, a: str(8), b: str(8)};
			}
			await kv.setMany(Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, {a: v.a, b: v.b}])));
			for (const delimiter of [",", ";", "\t", "\u00e9"]) {
				await kv.exportCSV({fileName: d + ".csv", columns: ["a", "b"], delimiter});
				await kv.clear();
				await kv.importCSV({fileName: d + ".csv", keyColumn: "key", delimiter});
				same(await dump(kv), rows, "CSV round trip, delimiter " + JSON.stringify(delimiter));
				await kv.clear();
				await kv.setMany(Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, {a: v.a, b: v.b}])));
			}`)
	})
}

// Through a "string" opener: text and ArrayBuffer values.
func TestAdvRoundTripStringMode(t *testing.T) {
	dir := t.TempDir()
	runAsync(t, newJS(t), `const kv = openKv(`+storeOptions(t, "memory", false, `serialization: "string"`)+`); const d = `+strconv.Quote(dir+"/")+`;
		await kv.set("t", "text \u2028 \"q\"");
		await kv.set("n", 12);
		await kv.set("b", new Uint8Array([104, 105]).buffer);
		// written as JSON.stringify writes it, not HTML-escaped (6 bytes a
		// character: this 12 MiB value's line would be 72 MiB, too long to
		// import back)
		await kv.set("lt", "<&>".repeat(4 << 20));
		const x = await kv.exportJSONL({fileName: d + "s.jsonl"});
		if (x.bytesWritten > 13 << 20) throw new Error("exported " + x.bytesWritten + " bytes");
		await kv.clear();
		await kv.importJSONL({fileName: d + "s.jsonl"});
		eq(await kv.get("lt") === "<&>".repeat(4 << 20), true, "the 12 MiB value back");
		eq(await kv.get("t"), "text \u2028 \"q\"", "text");
		eq(await kv.get("n"), "12", "a number is stored as its text");
		const b = await kv.get("b");
		eq(typeof b, "string", "an ArrayBuffer value comes back as its text");
		eq(b, "hi", "its text");`)
}

// What exportCSV then importCSV does not give back: a "\r\n" in a cell
// (encoding/csv reads it as "\n"), and spaces around a key (trimmed).
func TestAdvRoundTripCSVLimits(t *testing.T) {
	dir := t.TempDir()
	runAsync(t, newJS(t), `const kv = openKv(`+storeOptions(t, "memory", false, "")+`); const d = `+strconv.Quote(dir+"/")+`;
		await kv.set(" k ", {a: "x\r\ny", b: "lone\rcr"});
		await kv.exportCSV({fileName: d + "r.csv", columns: ["a", "b"]});
		await kv.clear();
		await kv.importCSV({fileName: d + "r.csv", keyColumn: "key"});
		eq(await kv.get("k"), {key: " k ", a: "x\ny", b: "lone\rcr"}, "CRLF in a cell reads back as LF; the key is trimmed");`)
}

// A failed export leaves the target as it was and no temporary file.
func TestAdvExportFailures(t *testing.T) {
	eachStore(t, func(t *testing.T, opts string) {
		dir := writeFiles(t, map[string]string{"old.csv": "old", "afile": "x", "adir/keep": "k"})
		runAsync(t, newJS(t), `const kv = openKv(`+opts+`); const d = `+strconv.Quote(dir+"/")+`;
			await kv.set("a", {v: 1});
			await kv.set("b", [1, 2]);
			let e = await rejects(kv.exportCSV({fileName: d + "old.csv", columns: ["v"]}), "ValueParseError", "an array value");
			if (!e.message.includes('"b"')) throw new Error(e.message);
			eq((await kv.validateCSV({fileName: d + "old.csv"})).bytesRead, 3, "the failed export left old.csv as it was");
			await rejects(kv.exportJSONL({fileName: d + "adir"}), "SnapshotExportError", "a directory as the target");
			await rejects(kv.exportJSONL({fileName: d + "afile/x.jsonl"}), "SnapshotExportError", "a file as the folder");
			eq((await kv.exportJSONL({fileName: d + "x.jsonl", limit: -1})).exported, 2, "a negative limit: all, as xk6-kv");
			eq((await kv.exportCSV({fileName: d + "x.csv", columns: ["v"], prefix: "a", limit: -5})).exported, 1, "exportCSV too");
			await rejects(kv.exportJSONL({fileName: d + "x.jsonl", prefix: 1}), "InvalidOptionsError", "prefix a number");
			await rejects(kv.exportCSV({fileName: d + "x.csv", columns: "v"}), "InvalidOptionsError", "columns a string");
			await rejects(kv.exportCSV({fileName: d + "x.csv", columns: [1]}), "InvalidOptionsError", "columns of numbers");
			await rejects(kv.exportCSV({fileName: d + "x.csv", columns: ["key"]}), "InvalidOptionsError", "key twice");
			eq((await kv.exportCSV({fileName: d + "x.csv", columns: ["key"], includeKey: false, prefix: "a"})).exported, 1, "a column named key");
			eq((await kv.exportJSONL({fileName: d + "new/deeper/x.jsonl", prefix: "zz"})).exported, 0, "no entry, folders created");
			eq((await kv.exportJSONL({fileName: d + "old.csv"})).exported, 2, "over an existing file");`)
		if b, _ := os.ReadFile(filepath.Join(dir, "new/deeper/x.jsonl")); len(b) != 0 {
			t.Errorf("an export of nothing wrote %q", b)
		}
		// The value {v: 1} has no field "key": one empty cell, quoted so
		// that the row is no blank line.
		if b, _ := os.ReadFile(filepath.Join(dir, "x.csv")); string(b) != "key\n\"\"\n" {
			t.Errorf("x.csv: %q", b)
		}
		var left []string
		_ = filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
			if strings.HasSuffix(p, ".tmp") {
				left = append(left, p)
			}
			return nil
		})
		if len(left) > 0 {
			t.Errorf("temporary files left: %v", left)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "adir/keep")); string(b) != "k" {
			t.Errorf("adir/keep: %q", b)
		}
	})
}

// A named pipe is read once: what does not fit in importBuffer cannot be
// read a second time, so it rejects (nothing written) instead of waiting
// for a writer that never comes.
func TestAdvImportFIFO(t *testing.T) {
	saved := importBuffer
	t.Cleanup(func() { importBuffer = saved })
	dir := t.TempDir()
	fifo := filepath.Join(dir, "p.csv")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip(err)
	}
	content := "id,v\n" + strings.Repeat("k,"+strings.Repeat("v", 100)+"\n", 20)
	feed := func() {
		go func() {
			f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
			if err != nil {
				return
			}
			_, _ = f.WriteString(content)
			_ = f.Close()
		}()
	}
	opts := storeOptions(t, "memory", false, "")
	// Small enough to keep: one reading.
	feed()
	runAsync(t, newJS(t), `const kv = openKv(`+opts+`);
		eq((await kv.importCSV({fileName: `+strconv.Quote(fifo)+`, keyColumn: "id"})).imported, 20, "from a pipe");`)
	importBuffer = 1000
	feed()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runAsync(t, newJS(t), `const kv = openKv(`+opts+`); await kv.clear();
			const e = await rejects(kv.importCSV({fileName: `+strconv.Quote(fifo)+`, keyColumn: "id"}), "SnapshotIOError", "too large for a pipe");
			if (!e.message.includes("not a regular file")) throw new Error(e.message);
			eq(await kv.size(), 0, "nothing written");`)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		// Unblock the second open so that the test ends.
		if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			_ = f.Close()
		}
		<-done
		t.Fatal("the import waited on the pipe for a second reading")
	}
}

// An export while other handles write and delete: no key twice, every key
// that nobody touched is there, in key order.
func TestAdvExportWhileWriting(t *testing.T) {
	dir := t.TempDir()
	for _, track := range []bool{false, true} {
		for _, backend := range []string{"memory", "disk"} {
			t.Run(backend+"/"+strconv.FormatBool(track), func(t *testing.T) {
				opts := storeOptions(t, backend, track, "")
				file := filepath.Join(dir, backend+strconv.FormatBool(track)+".jsonl")
				runAsync(t, newJS(t), `const kv = openKv(`+opts+`); const m = {};
					for (let i = 0; i < 3000; i++) m["s" + String(i).padStart(5, "0")] = i;
					await kv.setMany(m);`)
				var stop atomic.Bool
				var failed atomic.Value
				var wg sync.WaitGroup
				for w := 0; w < 2; w++ {
					wg.Add(1)
					rt := newJS(t)
					go func(w int) {
						defer wg.Done()
						_, _ = rt.RunOnEventLoop(`globalThis.kv = openKv(` + opts + `);`)
						for i := 0; !stop.Load(); i++ {
							if err := runAsyncErr(rt, `
								const m = {}; for (let j = 0; j < 20; j++) m["s" + String(j * 150).padStart(5, "0") + "w`+strconv.Itoa(w)+`"] = j;
								await kv.setMany(m);
								await kv.deleteMany(Object.keys(m));
							`); err != nil {
								failed.Store(err.Error())
								return
							}
						}
					}(w)
				}
				runAsync(t, newJS(t), `const kv = openKv(`+opts+`);
					for (let i = 0; i < 5; i++) await kv.exportJSONL({fileName: `+strconv.Quote(file)+`, prefix: "s"});`)
				stop.Store(true)
				wg.Wait()
				if f := failed.Load(); f != nil {
					t.Fatalf("writer: %v", f)
				}
				b, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				seen := map[string]bool{}
				prev, base := "", 0
				for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
					var rec struct{ Key string }
					if err := json.Unmarshal([]byte(line), &rec); err != nil {
						t.Fatalf("%q: %v", line, err)
					}
					if seen[rec.Key] || rec.Key <= prev {
						t.Fatalf("key %q twice or out of order (after %q)", rec.Key, prev)
					}
					seen[rec.Key], prev = true, rec.Key
					if len(rec.Key) == 6 {
						base++
					}
				}
				if base != 3000 {
					t.Errorf("%d of the 3000 untouched keys exported", base)
				}
			})
		}
	}
}

// A longer row's extra cell is named column_N: a header that already has
// that name must not make the row's object hold one name twice (JSON.parse
// would keep the last, losing a cell).
func TestAdvImportCSVExtraColumnNameClash(t *testing.T) {
	ioAdv(t, map[string]string{"clash.csv": "column_2,id\nx,k1\ny,k2,z\n"}, `
		const o = {fileName: d + "clash.csv", keyColumn: "id", batchSize: 1};
		await bad(kv.importCSV(o), "importCSV", o, "ValueParseError", ["clash.csv line 3 (row 3)", "column_2"]);
		const v = await kv.validateCSV({fileName: d + "clash.csv", keyColumn: "id"});
		eq([v.valid, v.rows, v.firstError.line], [false, 1, 3], "validate");
	`)
}

// A byte order mark is skipped without a header too, and a file that is
// only one is empty.
func TestAdvImportBOM(t *testing.T) {
	ioAdv(t, map[string]string{
		"nohdr.csv":  "\ufeffu1;Ada\n",
		"only.csv":   "\ufeff",
		"onlynl.csv": "\ufeff\r\n",
		"only.jsonl": "\ufeff",
		"quoted.csv": "\ufeff\"id\",v\nq,1\n",
		"second.csv": "id,v\n\ufeffb,1\n",
	}, `
		eq((await kv.importCSV({fileName: d + "nohdr.csv", keyColumn: 0, hasHeader: false, delimiter: ";"})).imported, 1, "no header");
		eq(await kv.get("u1"), {column_0: "u1", column_1: "Ada"}, "no BOM in the key");
		for (const f of ["only.csv", "onlynl.csv"]) eq((await kv.importCSV({fileName: d + f, keyColumn: "id"})).imported, 0, f);
		eq((await kv.importJSONL({fileName: d + "only.jsonl"})).imported, 0, "only a BOM, JSONL");
		eq((await kv.validateJSONL({fileName: d + "only.jsonl"})).valid, true, "validate");
		eq((await kv.importCSV({fileName: d + "quoted.csv", keyColumn: "id"})).imported, 1, "BOM before a quoted header");
		eq(await kv.get("q"), {id: "q", v: "1"}, "quoted header name");
		eq((await kv.importCSV({fileName: d + "second.csv", keyColumn: "id"})).imported, 1, "a BOM later is data");
		eq(await kv.exists("\ufeffb"), true, "kept in the key");
	`)
}

// "key" and "value" are matched without regard to case, so a record with
// both "key" and "Key" (or "value" twice) is ambiguous: encoding/json would
// quietly keep the later one. It rejects; the names inside a value are
// data.
func TestAdvImportJSONLNameTwice(t *testing.T) {
	ioAdv(t, map[string]string{
		"keytwice.jsonl": `{"key":"a","value":1}` + "\n" + `{"key":"b","value":1,"Key":"c"}` + "\n",
		"valtwice.jsonl": `{"key":"a","value":1,"VALUE":2}` + "\n",
		"exact.jsonl":    `{"key":"a","key":"b","value":1}` + "\n",
		"nested.jsonl":   `{"key":"n","value":{"key":"x","Key":"y","value":[{"VALUE":1}]},"note":"\"key\""}` + "\n",
	}, `
		let o = {fileName: d + "keytwice.jsonl", batchSize: 1};
		await bad(kv.importJSONL(o), "importJSONL", o, "ValueParseError", ["keytwice.jsonl line 2", "\"Key\""]);
		o = {fileName: d + "valtwice.jsonl"};
		await bad(kv.importJSONL(o), "importJSONL", o, "ValueParseError", ["line 1", "\"VALUE\""]);
		o = {fileName: d + "exact.jsonl"};
		await bad(kv.importJSONL(o), "importJSONL", o, "ValueParseError", ["line 1", "twice"]);
		eq((await kv.importJSONL({fileName: d + "nested.jsonl"})).imported, 1, "names inside the value");
		eq(await kv.get("n"), {key: "x", Key: "y", value: [{VALUE: 1}]}, "the value");
	`)
}
