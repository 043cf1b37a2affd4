//go:build cgo

package kv

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// writeFiles writes name -> content into a fresh directory and returns it.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// ioFiles are the good and bad inputs the tests below read.
var ioFiles = map[string]string{
	"users.csv":       "id,name,email\n1,Ada,ada@example.com\n2,\"Grace, H\",grace@example.com\n 3 ,\"multi\nline\",x@y\n4,short\n5,extra,e@x,more\n",
	"nohdr.csv":       "u1;Ada\nu2;Bob\n",
	"malformed.csv":   "id,name\n1,ok\n2,\"broken\n",
	"malformed2.csv":  "id,name\n1,ok\n2,bro\"ken\n",
	"dupheader.csv":   "id,name,name\n1,a,b\n",
	"nokey.csv":       "uid,name\n1,a\n",
	"emptykey.csv":    "id,name\n1,a\n ,b\n",
	"badutf8.csv":     "id,name\n1,a\n2,\xff\xfe\n",
	"empty.csv":       "",
	"users.jsonl":     "{\"key\":\"u:1\",\"value\":{\"name\":\"Ada\",\"n\":1.0,\"tags\":[\"a\"]}}\n{\"key\":\"u:2\",\"value\":\"text\"}\r\n{\"key\":\"u:3\",\"value\":null}\n{\"key\":\"u:4\",\"value\":12345678901234567890}",
	"blank.jsonl":     "{\"key\":\"a\",\"value\":1}\n\n{\"key\":\"b\",\"value\":2}\n",
	"badjson.jsonl":   "{\"key\":\"a\",\"value\":1}\n{\"key\":\"b\",\"value\":}\n",
	"nokey.jsonl":     "{\"key\":\"a\",\"value\":1}\n{\"value\":2}\n",
	"novalue.jsonl":   "{\"key\":\"a\",\"value\":1}\n{\"key\":\"b\"}\n",
	"numkey.jsonl":    "{\"key\":7,\"value\":1}\n",
	"array.jsonl":     "[1,2]\n",
	"badutf8.jsonl":   "{\"key\":\"a\",\"value\":\"\xff\"}\n",
	"emptykey.jsonl":  "{\"key\":\"\",\"value\":1}\n",
	"lastbad.jsonl":   "{\"key\":\"a\",\"value\":1}\n{\"key\":\"b\",\"value\":2}\n{\"key\":\"c\",\"value\":[}\n",
	"notcsv.jsonl":    "{\"key\":\"a\",\"value\":1}\n",
	"dup.jsonl":       "{\"key\":\"k\",\"value\":1}\n{\"key\":\"k\",\"value\":2}\n",
	"escape.jsonl":    "{\"key\":\"e\\u0301\",\"value\":\"<tag> & \\u2028\"}\n",
	"sub/nested.csv":  "",
	"semicolon.csv":   "id;v\na;1\n",
	"tab.csv":         "id\tv\na\t1\n",
	"onlyheader.csv":  "id,name\n",
	"hdrutf8.csv":     "id,\xff\n1,2\n",
	"shortrow.csv":    "id,name\nonlyone\n",
	"key0.csv":        "k,v\n",
	"limit.jsonl":     "{\"key\":\"l1\",\"value\":1}\n{\"key\":\"l2\",\"value\":2}\n{\"key\":\"l3\",\"value\":[}\n",
	"spaces.jsonl":    "  {\"key\":\"s\",\"value\":true}  \n",
	"extra.jsonl":     "{\"key\":\"x\",\"value\":1,\"other\":2}\n",
	"unicode.csv":     "id,name\nü,Ünïcödé 😀\n",
	"quotedhdr.csv":   "\"id\",\"na,me\"\n1,2\n",
	"crlf.csv":        "id,name\r\n1,a\r\n",
	"trailing.csv":    "id,name\n1,a\n\n",
	"manyfields.csv":  "a,b,c,d\n1,2,3,4\n",
	"keycol2.csv":     "a,b,c\nx,y,z\n",
	"nohdrshort.csv":  "a\n",
	"objects.jsonl":   "{\"key\":\"o\",\"value\":{\"a\":{\"b\":1}}}\n",
	"bigint.jsonl":    "{\"key\":\"n\",\"value\":41}\n",
	"utf8key.jsonl":   "{\"key\":\"ключ\",\"value\":\"значение\"}\n",
	"ws.jsonl":        "{ \"key\" : \"w\" , \"value\" : { \"a\" : 1 } }\n",
	"nested.jsonl":    "{\"key\":\"deep\",\"value\":{\"x\":[1,{\"y\":null}]}}\n",
	"bool.jsonl":      "{\"key\":\"t\",\"value\":false}\n",
	"str.jsonl":       "{\"key\":\"s1\",\"value\":\"plain\"}\n",
	"validlimit.csv":  "id\n1\n2\n\"bad\n",
	"good.csv":        "id,name\nk1,a\nk2,b\n",
	"keyonly.csv":     "id\nx\n",
	"header1.csv":     "id,name\n",
	"crlfjsonl.jsonl": "{\"key\":\"c\",\"value\":1}\r\n",
	"bom.csv":         "\ufeffid,name\nb1,x\n",
	"bom.jsonl":       "\ufeff{\"key\":\"b2\",\"value\":1}\n",
}

func TestJSImportCSV(t *testing.T) {
	eachStore(t, func(t *testing.T, opts string) {
		dir := writeFiles(t, ioFiles)
		rt := newJS(t)
		runAsync(t, rt, `const kv = openKv(`+opts+`); const d = `+strconv.Quote(dir)+` + "/";
			let r = await kv.importCSV({fileName: d + "users.csv", keyColumn: "id"});
			eq([r.imported, r.fileName, r.bytesRead], [5, d + "users.csv", `+strconv.Itoa(len(ioFiles["users.csv"]))+`], "result");
			eq(await kv.get("1"), {id: "1", name: "Ada", email: "ada@example.com"}, "row 1");
			eq(await kv.get("2"), {id: "2", name: "Grace, H", email: "grace@example.com"}, "quoted comma");
			eq(await kv.get("3"), {id: " 3 ", name: "multi\nline", email: "x@y"}, "key trimmed, cell kept, quoted newline");
			eq(await kv.get("4"), {id: "4", name: "short", email: ""}, "missing field is empty");
			eq(await kv.get("5"), {id: "5", name: "extra", email: "e@x", column_3: "more"}, "extra field is column_N");
			// Values read back as set() values do: compare-and-swap by value works.
			eq(await kv.compareAndSwap("1", {id: "1", name: "Ada", email: "ada@example.com"}, 1), true, "CAS on an imported row");

			r = await kv.importCSV({fileName: d + "nohdr.csv", keyColumn: "0", hasHeader: false, delimiter: ";"});
			eq(r.imported, 2, "no header");
			eq(await kv.get("u2"), {column_0: "u2", column_1: "Bob"}, "columns by index");
			r = await kv.importCSV({fileName: d + "nohdr.csv", keyColumn: 1, hasHeader: false, delimiter: ";"});
			eq(await kv.get("Bob"), {column_0: "u2", column_1: "Bob"}, "key column as a number");
			r = await kv.importCSV({fileName: d + "tab.csv", keyColumn: "id", delimiter: "\t"});
			eq(await kv.get("a"), {id: "a", v: "1"}, "tab delimiter");
			eq((await kv.importCSV({fileName: d + "empty.csv", keyColumn: "id"})).imported, 0, "empty file");
			eq((await kv.importCSV({fileName: d + "onlyheader.csv", keyColumn: "id"})).imported, 0, "header only");
			eq((await kv.importCSV({fileName: d + "unicode.csv", keyColumn: "id"})).imported, 1, "unicode");
			eq(await kv.get("ü"), {id: "ü", name: "Ünïcödé 😀"}, "unicode row");
			eq((await kv.importCSV({fileName: d + "crlf.csv", keyColumn: "id"})).imported, 1, "CRLF");
			eq(await kv.get("1"), {id: "1", name: "a"}, "CRLF row, and a later import overwrites");
			eq((await kv.importCSV({fileName: d + "trailing.csv", keyColumn: "id"})).imported, 1, "blank last line ignored");
			eq((await kv.importCSV({fileName: d + "bom.csv", keyColumn: "id"})).imported, 1, "byte order mark");
			eq(await kv.get("b1"), {id: "b1", name: "x"}, "no BOM in the column name");
			eq((await kv.importJSONL({fileName: d + "bom.jsonl"})).imported, 1, "byte order mark in JSONL");

			// limit and batchSize.
			await kv.clear();
			r = await kv.importCSV({fileName: d + "users.csv", keyColumn: "id", limit: 2, batchSize: 1});
			eq([r.imported, await kv.size()], [2, 2], "limit");
			// A bad row after the limit is never read.
			eq((await kv.importCSV({fileName: d + "validlimit.csv", keyColumn: "id", limit: 2})).imported, 2, "limit stops before a bad row");
		`)
	})
}

func TestJSImportCSVBadFiles(t *testing.T) {
	eachStore(t, func(t *testing.T, opts string) {
		dir := writeFiles(t, ioFiles)
		rt := newJS(t)
		runAsync(t, rt, `const kv = openKv(`+opts+`); const d = `+strconv.Quote(dir)+` + "/";
			async function bad(file, name, want, o) {
				const e = await rejects(kv.importCSV(Object.assign({fileName: d + file, keyColumn: "id"}, o || {})), name, file);
				for (const w of want) if (!e.message.includes(w)) throw new Error(file + ": message " + JSON.stringify(e.message) + " lacks " + JSON.stringify(w));
				eq(await kv.size(), 0, file + ": nothing written");
				return e;
			}
			await bad("malformed.csv", "SnapshotReadError", ["malformed.csv line 3 (row 3)", "nothing was written"], {batchSize: 1});
			await bad("malformed2.csv", "SnapshotReadError", ["malformed2.csv line 3 (row 3)", "bare"], {batchSize: 1});
			await bad("dupheader.csv", "ValueParseError", ["dupheader.csv line 1 (row 1)", "\"name\" appears twice"]);
			await bad("nokey.csv", "ValueParseError", ["nokey.csv line 1", "key column \"id\" is not in the header"]);
			await bad("emptykey.csv", "ValueParseError", ["emptykey.csv line 3 (row 3)", "empty"], {batchSize: 1});
			await bad("badutf8.csv", "ValueParseError", ["badutf8.csv line 3 (row 3)", "UTF-8"], {batchSize: 1});
			await bad("hdrutf8.csv", "ValueParseError", ["line 1", "UTF-8"]);
			await bad("shortrow.csv", "ValueParseError", ["line 2 (row 2)", "no key"], {keyColumn: "name"});
			await bad("nohdrshort.csv", "ValueParseError", ["line 1 (row 1)"], {keyColumn: "3", hasHeader: false});
			await bad("missing.csv", "SnapshotNotFoundError", ["missing.csv", "no such file"]);
			await bad("sub", "SnapshotIOError", ["directory"]);
			// Options.
			await rejects(kv.importCSV(), "InvalidOptionsError", "no options");
			await rejects(kv.importCSV({fileName: d + "users.csv"}), "InvalidOptionsError", "no keyColumn");
			await rejects(kv.importCSV({keyColumn: "id"}), "InvalidOptionsError", "no fileName");
			await rejects(kv.importCSV({fileName: "  ", keyColumn: "id"}), "InvalidOptionsError", "blank fileName");
			await rejects(kv.importCSV({fileName: 1, keyColumn: "id"}), "InvalidOptionsError", "fileName a number");
			await rejects(kv.importCSV({fileName: d + "users.csv", keyColumn: "id", delimiter: ";;"}), "InvalidOptionsError", "two-char delimiter");
			await rejects(kv.importCSV({fileName: d + "users.csv", keyColumn: "id", delimiter: "\""}), "InvalidOptionsError", "quote delimiter");
			await rejects(kv.importCSV({fileName: d + "users.csv", keyColumn: "id", hasHeader: false}), "InvalidOptionsError", "named key without header");
			await rejects(kv.importCSV({fileName: d + "users.csv", keyColumn: "id", limit: -1}), "InvalidOptionsError", "negative limit");
			await rejects(kv.importCSV({fileName: d + "users.csv", keyColumn: "id", batchSize: 10001}), "InvalidOptionsError", "batch too large");
			await rejects(kv.importCSV({fileName: d + "users.csv", keyColumn: "id", batchsize: 10}), "InvalidOptionsError", "unknown option");
			eq(await kv.size(), 0, "nothing written by bad options");
		`)
	})
}

func TestJSImportJSONL(t *testing.T) {
	eachStore(t, func(t *testing.T, opts string) {
		dir := writeFiles(t, ioFiles)
		rt := newJS(t)
		runAsync(t, rt, `const kv = openKv(`+opts+`); const d = `+strconv.Quote(dir)+` + "/";
			let r = await kv.importJSONL({fileName: d + "users.jsonl"});
			eq([r.imported, r.bytesRead], [4, `+strconv.Itoa(len(ioFiles["users.jsonl"]))+`], "result");
			eq(await kv.get("u:1"), {name: "Ada", n: 1, tags: ["a"]}, "object");
			eq(await kv.get("u:2"), "text", "string, CRLF line");
			eq(await kv.get("u:3"), null, "null");
			eq(await kv.get("u:4"), 12345678901234567890, "big number, as JSON.parse reads it");
			eq(await kv.incrementBy("u:1", 0).catch((e) => e.name), "ValueParseError", "an object is no counter");
			await kv.importJSONL({fileName: d + "bigint.jsonl"});
			eq(await kv.incrementBy("n", 1), 42, "an imported number counts");
			await kv.importJSONL({fileName: d + "dup.jsonl", batchSize: 1});
			eq(await kv.get("k"), 2, "the later line wins");
			await kv.importJSONL({fileName: d + "dup.jsonl"});
			eq(await kv.get("k"), 2, "the later line wins in one batch");
			await kv.importJSONL({fileName: d + "escape.jsonl"});
			eq(await kv.get("e\u0301"), "<tag> & \u2028", "escapes");
			for (const f of ["spaces", "extra", "utf8key", "ws", "nested", "bool", "str", "crlfjsonl", "objects"])
				eq((await kv.importJSONL({fileName: d + f + ".jsonl"})).imported, 1, f);
			eq(await kv.get("ключ"), "значение", "UTF-8 key");
			eq(await kv.get("w"), {a: 1}, "spaces in the record");
			eq(await kv.get("deep"), {x: [1, {y: null}]}, "nested");
			eq(await kv.get("x"), 1, "extra fields ignored");
			await kv.clear();
			r = await kv.importJSONL({fileName: d + "limit.jsonl", limit: 2});
			eq([r.imported, await kv.size()], [2, 2], "limit stops before a bad line");
			// A limit or batchSize <= 0 means none (the default), as in xk6-kv.
			await kv.clear();
			r = await kv.importJSONL({fileName: d + "users.jsonl", limit: -1, batchSize: -5});
			eq([r.imported, await kv.size()], [4, 4], "limit and batchSize below 0");
			eq((await kv.validateJSONL({fileName: d + "users.jsonl", limit: -1})).checkedAll, true, "validateJSONL, limit below 0");
		`)
	})
}

func TestJSImportJSONLBadFiles(t *testing.T) {
	eachStore(t, func(t *testing.T, opts string) {
		dir := writeFiles(t, ioFiles)
		rt := newJS(t)
		runAsync(t, rt, `const kv = openKv(`+opts+`); const d = `+strconv.Quote(dir)+` + "/";
			async function bad(file, name, want, o) {
				const e = await rejects(kv.importJSONL(Object.assign({fileName: d + file, batchSize: 1}, o || {})), name, file);
				for (const w of want) if (!e.message.includes(w)) throw new Error(file + ": message " + JSON.stringify(e.message) + " lacks " + JSON.stringify(w));
				eq(await kv.size(), 0, file + ": nothing written");
			}
			await bad("blank.jsonl", "ValueParseError", ["blank.jsonl line 2", "blank line", "nothing was written"]);
			await bad("badjson.jsonl", "ValueParseError", ["badjson.jsonl line 2", "not valid JSON"]);
			await bad("nokey.jsonl", "ValueParseError", ["line 2", "no \"key\""]);
			await bad("novalue.jsonl", "ValueParseError", ["line 2", "no \"value\""]);
			await bad("numkey.jsonl", "ValueParseError", ["line 1", "must be a string"]);
			await bad("emptykey.jsonl", "ValueParseError", ["line 1", "empty"]);
			await bad("array.jsonl", "ValueParseError", ["line 1", "JSON object"]);
			await bad("badutf8.jsonl", "ValueParseError", ["line 1", "UTF-8"]);
			await bad("lastbad.jsonl", "ValueParseError", ["line 3"]);
			await bad("users.csv", "ValueParseError", ["users.csv line 1"]);
			await bad("missing.jsonl", "SnapshotNotFoundError", ["missing.jsonl"]);
			await rejects(kv.importJSONL({}), "InvalidOptionsError", "no fileName");
			await rejects(kv.importJSONL({fileName: d + "users.jsonl", keyColumn: "x"}), "InvalidOptionsError", "CSV option");
		`)
	})
}

func TestJSValidate(t *testing.T) {
	eachStore(t, func(t *testing.T, opts string) {
		dir := writeFiles(t, ioFiles)
		rt := newJS(t)
		runAsync(t, rt, `const kv = openKv(`+opts+`); const d = `+strconv.Quote(dir)+` + "/";
			let r = await kv.validateCSV({fileName: d + "users.csv", keyColumn: "id"});
			eq(r, {valid: true, rows: 5, bytesRead: `+strconv.Itoa(len(ioFiles["users.csv"]))+`, checkedAll: true}, "valid CSV");
			r = await kv.validateCSV({fileName: d + "users.csv", limit: 2});
			eq([r.valid, r.rows, r.checkedAll], [true, 2, false], "limit");
			r = await kv.validateCSV({fileName: d + "users.csv", limit: -2});
			eq([r.valid, r.rows, r.checkedAll], [true, 5, true], "limit below 0: all rows");
			r = await kv.validateCSV({fileName: d + "malformed.csv", keyColumn: "id"});
			eq([r.valid, r.rows, r.checkedAll, r.firstError.row, r.firstError.line, r.firstError.name], [false, 1, false, 3, 3, "ValueParseError"], "malformed");
			if (!r.firstError.message.includes("malformed.csv line 3")) throw new Error(r.firstError.message);
			r = await kv.validateCSV({fileName: d + "dupheader.csv"});
			eq([r.valid, r.firstError.row, r.firstError.name], [false, 1, "ValueParseError"], "duplicate header");
			r = await kv.validateCSV({fileName: d + "emptykey.csv", keyColumn: "id"});
			eq([r.valid, r.rows, r.firstError.row], [false, 1, 3], "empty key");
			r = await kv.validateCSV({fileName: d + "emptykey.csv"});
			eq(r.valid, true, "no key column: no key checks");
			r = await kv.validateCSV({fileName: d + "notcsv.jsonl", keyColumn: "id"});
			eq(r.valid, false, "JSONL is no CSV with an id column");
			await rejects(kv.validateCSV({fileName: d + "missing.csv"}), "SnapshotNotFoundError", "missing");
			await rejects(kv.validateCSV(null), "InvalidOptionsError", "null options");

			r = await kv.validateJSONL({fileName: d + "users.jsonl"});
			eq(r, {valid: true, records: 4, bytesRead: `+strconv.Itoa(len(ioFiles["users.jsonl"]))+`, checkedAll: true}, "valid JSONL");
			r = await kv.validateJSONL({fileName: d + "lastbad.jsonl"});
			eq([r.valid, r.records, r.checkedAll, r.firstError.line, r.firstError.name], [false, 2, false, 3, "ValueParseError"], "bad line");
			r = await kv.validateJSONL({fileName: d + "lastbad.jsonl", limit: 2});
			eq([r.valid, r.records, r.checkedAll], [true, 2, false], "limit");
			r = await kv.validateJSONL({fileName: d + "users.csv"});
			eq([r.valid, r.firstError.line], [false, 1], "CSV is no JSONL");
			await rejects(kv.validateJSONL({fileName: 123}), "InvalidOptionsError", "fileName a number");
			await rejects(kv.validateJSONL({fileName: d + "missing.jsonl"}), "SnapshotNotFoundError", "missing");
			eq(await kv.size(), 0, "validation writes nothing");
		`)
	})
}

func TestJSExport(t *testing.T) {
	eachStore(t, func(t *testing.T, opts string) {
		dir := t.TempDir()
		rt := newJS(t)
		runAsync(t, rt, `const kv = openKv(`+opts+`); const d = `+strconv.Quote(dir)+` + "/";
			await kv.setMany({"u:2": {name: "Grace, H", age: 85, admin: true, tags: ["x"]}, "u:1": {name: "Ada", age: 36.5, note: null},
				"u:3": {name: "multi\nline \"q\""}, "other": "text", "n": 41, "uni": {name: "ü😀 <&>"}});
			let r = await kv.exportJSONL({fileName: d + "all.jsonl"});
			eq([r.exported, r.fileName], [6, d + "all.jsonl"], "exportJSONL");
			r = await kv.exportJSONL({fileName: d + "out/users.jsonl", prefix: "u:", limit: 2});
			eq(r.exported, 2, "prefix and limit, folder made");
			r = await kv.exportCSV({fileName: d + "users.csv", prefix: "u:", columns: ["name", "age", "admin", "note", "missing"]});
			eq(r.exported, 3, "exportCSV");
			r = await kv.exportCSV({fileName: d + "users2.csv", prefix: "u:", columns: ["name"], includeKey: false, delimiter: ";", limit: 1});
			eq(r.exported, 1, "exportCSV without key");
			// Round trips: what was exported imports back the same.
			await kv.clear();
			eq((await kv.importJSONL({fileName: d + "all.jsonl"})).imported, 6, "re-import");
			eq(await kv.get("u:2"), {name: "Grace, H", age: 85, admin: true, tags: ["x"]}, "object back");
			eq(await kv.get("other"), "text", "string back");
			eq(await kv.get("uni"), {name: "ü😀 <&>"}, "unicode back");
			await kv.clear();
			eq((await kv.importCSV({fileName: d + "users.csv", keyColumn: "key"})).imported, 3, "CSV back");
			eq(await kv.get("u:3"), {key: "u:3", name: "multi\nline \"q\"", age: "", admin: "", note: "", missing: ""}, "CSV row back");
			eq(await kv.get("u:2"), {key: "u:2", name: "Grace, H", age: "85", admin: "true", note: "", missing: ""}, "cells are text");

			// Values that are no flat rows: the export fails and leaves no file.
			await kv.setMany({"u:9": {name: {first: "x"}}});
			let e = await rejects(kv.exportCSV({fileName: d + "bad.csv", columns: ["name"]}), "ValueParseError", "nested field");
			if (!e.message.includes('"u:9"')) throw new Error(e.message);
			await kv.set("n", 41);
			e = await rejects(kv.exportCSV({fileName: d + "bad.csv", columns: ["name"], prefix: "n"}), "ValueParseError", "a number value");
			await kv.set("s", "plain");
			await rejects(kv.exportCSV({fileName: d + "bad.csv", columns: ["name"], prefix: "s"}), "ValueParseError", "a string value");
			await rejects(kv.exportCSV({fileName: d + "x.csv"}), "InvalidOptionsError", "no columns");
			await rejects(kv.exportCSV({fileName: d + "x.csv", columns: []}), "InvalidOptionsError", "empty columns");
			await rejects(kv.exportCSV({fileName: d + "x.csv", columns: ["a", "a"]}), "InvalidOptionsError", "duplicate columns");
			await rejects(kv.exportCSV({fileName: d + "x.csv", columns: ["key"]}), "InvalidOptionsError", "key with includeKey");
			eq((await kv.exportCSV({fileName: d + "x.csv", columns: ["key"], includeKey: false, prefix: "zzz"})).exported, 0, "key column without includeKey, nothing matches");
			await rejects(kv.exportJSONL({}), "InvalidOptionsError", "no fileName");
			await rejects(kv.exportJSONL({fileName: d + "x.jsonl", columns: ["a"]}), "InvalidOptionsError", "CSV option");
			await rejects(kv.exportJSONL({fileName: d + "users.csv/x.jsonl"}), "SnapshotExportError", "a file in the way");
		`)
		all, _ := os.ReadFile(filepath.Join(dir, "all.jsonl"))
		want := `{"key":"n","value":41}
{"key":"other","value":"text"}
{"key":"u:1","value":{"name":"Ada","age":36.5,"note":null}}
{"key":"u:2","value":{"name":"Grace, H","age":85,"admin":true,"tags":["x"]}}
{"key":"u:3","value":{"name":"multi\nline \"q\""}}
{"key":"uni","value":{"name":"ü😀 <&>"}}
`
		if string(all) != want {
			t.Fatalf("all.jsonl:\n%s\nwant:\n%s", all, want)
		}
		users, _ := os.ReadFile(filepath.Join(dir, "users.csv"))
		wantCSV := "key,name,age,admin,note,missing\nu:1,Ada,36.5,,,\nu:2,\"Grace, H\",85,true,,\nu:3,\"multi\nline \"\"q\"\"\",,,,\n"
		if string(users) != wantCSV {
			t.Fatalf("users.csv:\n%q\nwant:\n%q", users, wantCSV)
		}
		users2, _ := os.ReadFile(filepath.Join(dir, "users2.csv"))
		if string(users2) != "name\nAda\n" {
			t.Fatalf("users2.csv: %q", users2)
		}
		if _, err := os.Stat(filepath.Join(dir, "bad.csv")); !os.IsNotExist(err) {
			t.Fatalf("a failed export left bad.csv: %v", err)
		}
		left, _ := filepath.Glob(filepath.Join(dir, ".*.tmp"))
		if len(left) > 0 {
			t.Fatalf("temporary files left: %v", left)
		}
	})
}

// Relative paths are taken from the working directory (as openKv's path).
func TestJSFilePathsRelativeToWorkingDir(t *testing.T) {
	dir := writeFiles(t, map[string]string{"seed.csv": "id,v\na,1\n"})
	t.Chdir(dir)
	rt := newJS(t)
	runAsync(t, rt, `const kv = openKv(`+storeOptions(t, "memory", false, "")+`);
		eq((await kv.importCSV({fileName: "seed.csv", keyColumn: "id"})).imported, 1, "relative import");
		eq((await kv.exportJSONL({fileName: "./out/seed.jsonl"})).exported, 1, "relative export");
		eq((await kv.validateJSONL({fileName: "out/seed.jsonl"})).valid, true, "relative validate");
		await kv.close();
		await rejects(kv.importCSV({fileName: "seed.csv", keyColumn: "id"}), "StoreClosedError", "import after close");
		await rejects(kv.exportJSONL({fileName: "x.jsonl"}), "StoreClosedError", "export after close");
		await rejects(kv.validateCSV({fileName: "seed.csv"}), "StoreClosedError", "validate after close");
		await rejects(kv.stats(), "StoreClosedError", "stats after close");`)
	if _, err := os.Stat(filepath.Join(dir, "out", "seed.jsonl")); err != nil {
		t.Fatal(err)
	}
}

// A file larger than what an import keeps in memory is read twice: checked
// whole, then written; a bad last row still writes nothing.
func TestJSImportLargeFile(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	dir := t.TempDir()
	const rows = 1200
	big := strings.Repeat("x", 120_000) // 1200 rows * 120 KB > importBuffer
	var b strings.Builder
	b.WriteString("id,payload\n")
	for i := 0; i < rows; i++ {
		fmt.Fprintf(&b, "k%d,%s\n", i, big)
	}
	good := b.String()
	if err := os.WriteFile(filepath.Join(dir, "big.csv"), []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bigbad.csv"), []byte(good+"\"oops\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if len(good) <= importBuffer {
		t.Fatalf("the file (%d bytes) must be larger than importBuffer", len(good))
	}
	rt := newJS(t)
	runAsync(t, rt, `const kv = openKv(`+storeOptions(t, "memory", false, `reserve: "1GiB"`)+`); const d = `+strconv.Quote(dir)+` + "/";
		await rejects(kv.importCSV({fileName: d + "bigbad.csv", keyColumn: "id"}), "SnapshotReadError", "bad last row");
		eq(await kv.size(), 0, "nothing written");
		eq((await kv.importCSV({fileName: d + "big.csv", keyColumn: "id", batchSize: 100})).imported, `+strconv.Itoa(rows)+`, "imported");
		eq(await kv.size(), `+strconv.Itoa(rows)+`, "size");
		eq((await kv.get("k7")).payload.length, 120000, "a row");`)
}

// A store that fills up in the middle of an import keeps the batches
// written before, and says how many.
func TestJSImportStoreFull(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	for i := 0; i < 400; i++ {
		fmt.Fprintf(&b, "{\"key\":\"k%04d\",\"value\":%q}\n", i, strings.Repeat("v", 20_000))
	}
	if err := os.WriteFile(filepath.Join(dir, "fill.jsonl"), []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	rt := newJS(t)
	runAsync(t, rt, `const kv = openKv(`+storeOptions(t, "memory", false, `reserve: "4MiB"`)+`);
		const e = await rejects(kv.importJSONL({fileName: `+strconv.Quote(filepath.Join(dir, "fill.jsonl"))+`, batchSize: 10}), "StoreFullError", "full");
		const m = /(\d+) entries were written before it, in batches of 10/.exec(e.message);
		if (!m) throw new Error(e.message);
		eq(await kv.size(), Number(m[1]), "what was written is what it says");
		eq(Number(m[1]) % 10, 0, "whole batches");`)
}

// A read-only handle imports nothing, and exports.
func TestJSImportReadOnly(t *testing.T) {
	dir := writeFiles(t, ioFiles)
	path := filepath.Join(t.TempDir(), "ro.kv")
	rt := newJS(t)
	runAsync(t, rt, `const kv = openKv({path: `+strconv.Quote(path)+`}); await kv.set("a", {v: 1}); await kv.close();`)
	rt = newJS(t)
	runAsync(t, rt, `const kv = openKv({path: `+strconv.Quote(path)+`, disk: {readOnly: true}}); const d = `+strconv.Quote(dir)+` + "/";
		await rejects(kv.importJSONL({fileName: d + "users.jsonl"}), "StoreReadOnlyError", "import");
		eq((await kv.exportJSONL({fileName: d + "ro.jsonl"})).exported, 1, "export");
		eq((await kv.exportCSV({fileName: d + "ro.csv", columns: ["v"]})).exported, 1, "export CSV");`)
}

// Imports through a "string" opener store JSON strings as text.
func TestJSImportStringSerialization(t *testing.T) {
	dir := writeFiles(t, ioFiles)
	rt := newJS(t)
	opts := storeOptions(t, "memory", false, `serialization: "string"`)
	runAsync(t, rt, `globalThis.kv = openKv(`+opts+`); const d = `+strconv.Quote(dir)+` + "/";
		await kv.importJSONL({fileName: d + "users.jsonl"});
		eq(await kv.get("u:2"), "text", "a string is its text");
		eq(await kv.get("u:1"), '{"name":"Ada","n":1.0,"tags":["a"]}', "an object is its JSON text");
		await kv.importCSV({fileName: d + "good.csv", keyColumn: "id"});
		eq(await kv.get("k1"), '{"id":"k1","name":"a"}', "a row is its JSON text");`)
}
