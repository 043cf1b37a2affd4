//go:build cgo

package kv

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/grafana/sobek"
)

// importCSV, importJSONL, exportCSV, exportJSONL, validateCSV and
// validateJSONL: the xk6-kv fork's options and results. Files are parsed and
// written with encoding/csv and encoding/json.
//
// Paths are taken as given: a relative one is relative to the directory k6
// runs in (as openKv's path is, and as on the fork), not to the script.
//
// An import reads the whole file (up to limit rows) and checks every row
// before it writes anything, so a bad file writes nothing. The rows are then
// written in batches of batchSize, each batch through setMany (all or
// nothing, at once for every process). Up to importBuffer bytes of rows are
// kept from the check for the writing; a larger file is read a second time.

const (
	defaultBatch = 1000
	maxFileBatch = 10_000
	exportPage   = 1000
	// the longest JSONL line read: a value at the store's limit, its key
	// and some room for escapes.
	maxLine = valueMax + 4*keyMax + 1<<20
)

// importBuffer bounds the checked rows an import keeps for the writing; a
// larger file is read a second time. Variables for the tests, which lower
// the bound and change the file between the two readings.
var (
	importBuffer        = 128 << 20
	importBetweenPasses = func(file string) {}
)

// fileError is a problem with a file's content, at a place in it.
type fileError struct {
	name string
	msg  string
	row  int64 // CSV: the record, 1-based, the header counting as row 1
	line int64 // the line of the file where the record starts
}

func (e *fileError) where(file string) string {
	if e.row > 0 {
		return fmt.Sprintf("%s line %d (row %d)", file, e.line, e.row)
	}
	return fmt.Sprintf("%s line %d", file, e.line)
}

// item is one entry read from a file, encoded for the store.
type item struct {
	key  string
	val  []byte
	kind Kind
}

// sink takes each good entry of a file; an error stops the reading.
type sink func(item) error

// countReader counts the bytes read from the file. With max > 0 it stops
// with errRowTooLong once more than max bytes were read since mark (the end
// of the last record): encoding/csv keeps a whole record in memory, and a
// file without line ends (/dev/zero) would otherwise be read without bound.
type countReader struct {
	r         io.Reader
	n         int64
	mark, max int64
}

var errRowTooLong = errors.New("row too long")

func (r *countReader) Read(p []byte) (int, error) {
	if r.max > 0 && r.n-r.mark > r.max {
		return 0, errRowTooLong
	}
	n, err := r.r.Read(p)
	r.n += int64(n)
	return n, err
}

// maxRow bounds the bytes of one CSV record: a record's JSON form is at
// least as long as its text less its line end, so a longer record cannot
// be a value (the slack covers the reader's read-ahead).
const maxRow = valueMax + 1<<20

// arena hands out value buffers from large chunks: one allocation per MiB
// of values instead of one per row.
type arena struct{ buf []byte }

func (a *arena) keep(b []byte) []byte {
	if len(b) > cap(a.buf)-len(a.buf) {
		a.buf = make([]byte, 0, max(1<<20, len(b)))
	}
	start := len(a.buf)
	a.buf = append(a.buf, b...)
	return a.buf[start:len(a.buf):len(a.buf)]
}

// ---- options --------------------------------------------------------------

// fileName reads the required fileName option.
func (c *call) fileName(o *sobek.Object) string {
	if c.err != nil {
		return ""
	}
	if o == nil {
		c.invalid("options {fileName, ...} are required")
		return ""
	}
	v := o.Get("fileName")
	if absent(v) {
		c.invalid("fileName is required")
		return ""
	}
	s := c.str("fileName", v)
	if c.err == nil && (strings.TrimSpace(s) == "" || strings.IndexByte(s, 0) >= 0) {
		c.invalid("fileName must be a non-empty path without NUL characters, got %q", s)
	}
	return s
}

// delimiter reads the delimiter option: one character, "," by default.
func (c *call) delimiter(o *sobek.Object) rune {
	if c.err != nil || o == nil || absent(o.Get("delimiter")) {
		return ','
	}
	s := c.str("delimiter", o.Get("delimiter"))
	r, size := utf8.DecodeRuneInString(s)
	if c.err == nil && (s == "" || size != len(s) || r == '"' || r == '\r' || r == '\n' || r == 0 || r == utf8.RuneError) {
		c.invalid("delimiter must be one character other than a quote, a line break or NUL, got %q", s)
	}
	return r
}

// countOption reads limit (0: no limit) or batchSize (0: the default).
func (c *call) countOption(o *sobek.Object, name string, hi int64) int64 {
	return c.number(o, name, 0, hi, 0, false)
}

// countOrAll is countOption where xk6-kv takes any number <= 0 for "no
// limit" (or "the default"): a negative whole number reads as 0.
func (c *call) countOrAll(o *sobek.Object, name string, hi int64) int64 {
	if c.err != nil || o == nil {
		return 0
	}
	v := o.Get(name) // read once: a getter runs once
	if absent(v) {
		return 0
	}
	f := math.NaN()
	if sobek.IsNumber(v) {
		f = v.ToFloat()
	}
	if math.IsNaN(f) || math.IsInf(f, 0) || f != math.Trunc(f) || f > float64(hi) {
		c.invalid("%s must be a whole number up to %d (0 or below: none), got %s", name, hi, describe(v))
		return 0
	}
	return int64(max(0, f))
}

// keyColumn reads importCSV's and validateCSV's keyColumn: a header name,
// or with hasHeader false a field index (a string or a number). -1 and ""
// when absent and not required.
func (c *call) keyColumn(o *sobek.Object, header, required bool) (string, int) {
	if c.err != nil {
		return "", -1
	}
	var v sobek.Value
	if o != nil {
		v = o.Get("keyColumn")
	}
	if absent(v) {
		if required {
			c.invalid("keyColumn is required")
		}
		return "", -1
	}
	var s string
	if !header && sobek.IsNumber(v) {
		s = v.String()
	} else {
		s = c.str("keyColumn", v)
	}
	if c.err != nil {
		return "", -1
	}
	if strings.TrimSpace(s) == "" {
		c.invalid("keyColumn must be a non-empty string")
		return "", -1
	}
	if header {
		return s, -1
	}
	i, err := strconv.Atoi(s)
	if err != nil || i < 0 {
		c.invalid("keyColumn must be a field index (0, 1, ...) when hasHeader is false, got %q", s)
		return "", -1
	}
	return s, i
}

// ---- reading -------------------------------------------------------------

// openInput opens a file to read, naming what went wrong as the fork does.
func openInput(method, file string) (*os.File, *kvError) {
	f, err := os.Open(file)
	switch {
	case err == nil:
		if st, serr := f.Stat(); serr == nil && st.IsDir() {
			_ = f.Close()
			return nil, newErr(ErrFileIO, "%s: %s is a directory", method, file)
		}
		return f, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, newErr(ErrFileNotFound, "%s: %s: no such file (a relative path is taken from the directory k6 runs in)", method, file)
	case errors.Is(err, fs.ErrPermission):
		return nil, newErr(ErrFilePermission, "%s: %s: permission denied", method, file)
	}
	return nil, newErr(ErrFileIO, "%s: cannot open %s: %v", method, file, err)
}

// csvSpec is how a CSV file is read.
type csvSpec struct {
	file   string
	comma  rune
	header bool
	keyCol string // "" (validateCSV without keyColumn): no key checks
	keyIdx int    // without header: the key's field
	limit  int64
	// the name of a syntax error: SnapshotReadError for an import,
	// ValueParseError for a validation (as on the fork)
	syntax string
}

// readCSV reads records and hands each to to (nil: check only). It returns
// the records read, the bytes read, whether it reached the end, the first
// problem with the content, or an error that stopped it.
func (c *call) readCSV(sp csvSpec, to sink) (rows, read int64, all bool, bad *fileError, stop error) {
	f, kerr := openInput(c.name, sp.file)
	if kerr != nil {
		return 0, 0, false, nil, kerr
	}
	defer f.Close()
	cr := &countReader{r: f, max: maxRow}
	r := csv.NewReader(skipBOM(cr))
	r.Comma = sp.comma
	r.FieldsPerRecord = -1 // ragged rows: missing fields are "", extra ones column_N
	r.ReuseRecord = true

	var row int64    // records read, the header included
	next := int64(1) // the line after the last record (blank lines aside)
	readErr := func(err error) (*fileError, error) {
		var pe *csv.ParseError
		if errors.Is(err, errRowTooLong) {
			return &fileError{name: ErrValueTooLarge, row: row + 1, line: next,
				msg: fmt.Sprintf("the row is longer than %d bytes, more than a value may hold as JSON (%d bytes)", maxRow, valueMax)}, nil
		}
		if errors.As(err, &pe) {
			return &fileError{name: sp.syntax, row: row + 1, line: int64(pe.StartLine),
				msg: fmt.Sprintf("malformed CSV: %v (line %d, column %d)", pe.Err, pe.Line, pe.Column)}, nil
		}
		return nil, newErr(ErrFileRead, "%s: reading %s: %v", c.name, sp.file, err)
	}
	var names [][]byte // "name": of each header column, as JSON
	var seen map[string]bool
	keyIdx := sp.keyIdx
	if sp.header {
		rec, err := r.Read()
		if err == io.EOF {
			return 0, cr.n, true, nil, nil
		}
		if err != nil {
			bad, stop = readErr(err)
			return 0, cr.n, false, bad, stop
		}
		row = 1
		cr.mark = cr.n
		next = endLine(r, rec)
		hdrBad := func(format string, args ...any) *fileError {
			return &fileError{name: ErrValueParse, row: 1, line: 1, msg: "header: " + fmt.Sprintf(format, args...)}
		}
		seen = make(map[string]bool, len(rec))
		for i, h := range rec {
			switch {
			case !utf8.ValidString(h):
				return 0, cr.n, false, hdrBad("column %d is not valid UTF-8", i), nil
			case strings.TrimSpace(h) == "":
				return 0, cr.n, false, hdrBad("column %d has no name", i), nil
			case seen[h]:
				return 0, cr.n, false, hdrBad("column %q appears twice", h), nil
			}
			seen[h] = true
			names = append(names, append(appendJSONString(nil, h), ':'))
			if h == sp.keyCol && sp.keyCol != "" {
				keyIdx = i
			}
		}
		if sp.keyCol != "" && keyIdx < 0 {
			return 0, cr.n, false, hdrBad("key column %q is not in the header (%s)", sp.keyCol, strings.Join(rec, ", ")), nil
		}
	}
	var val []byte
	for sp.limit <= 0 || rows < sp.limit {
		rec, err := r.Read()
		if err == io.EOF {
			return rows, cr.n, true, nil, nil
		}
		if err != nil {
			bad, stop = readErr(err)
			return rows, cr.n, false, bad, stop
		}
		row++
		cr.mark = cr.n
		line, _ := r.FieldPos(0)
		next = endLine(r, rec)
		rowBad := func(name, format string, args ...any) *fileError {
			return &fileError{name: name, row: row, line: int64(line), msg: fmt.Sprintf(format, args...)}
		}
		for i, cell := range rec {
			if !utf8.ValidString(cell) {
				return rows, cr.n, false, rowBad(ErrValueParse, "field %d is not valid UTF-8", i), nil
			}
		}
		var key string
		if sp.keyCol != "" {
			if keyIdx >= len(rec) {
				return rows, cr.n, false, rowBad(ErrValueParse, "the row has %d fields and no key (field %d)", len(rec), keyIdx), nil
			}
			key = strings.TrimSpace(rec[keyIdx])
			switch {
			case key == "":
				return rows, cr.n, false, rowBad(ErrValueParse, "the key (column %s) is empty", sp.keyCol), nil
			case len(key) > keyMax:
				return rows, cr.n, false, rowBad(ErrKeyTooLong, "the key is %d bytes long; the limit is %d", len(key), keyMax), nil
			}
		}
		// The row as a JSON object, fields in file order, each a string:
		// what set(key, {column: "cell", ...}) would store.
		val = append(val[:0], '{')
		n := max(len(rec), len(names))
		for i := 0; i < n; i++ {
			if i > 0 {
				val = append(val, ',')
			}
			if i < len(names) {
				val = append(val, names[i]...)
			} else {
				name := "column_" + strconv.Itoa(i)
				if seen[name] {
					// The object would hold the name twice, and a reader
					// keep one of the two cells.
					return rows, cr.n, false, rowBad(ErrValueParse, "the row has %d fields, more than the header's %d, and field %d would be named %q, a name the header already uses",
						len(rec), len(names), i, name), nil
				}
				val = append(appendJSONString(val, name), ':')
			}
			cell := ""
			if i < len(rec) {
				cell = rec[i]
			}
			val = appendJSONString(val, cell)
		}
		val = append(val, '}')
		if len(val) > valueMax {
			return rows, cr.n, false, rowBad(ErrValueTooLarge, "the row is %d bytes as JSON; the limit is %d", len(val), valueMax), nil
		}
		if to != nil {
			if err := to(item{key: strings.Clone(key), val: val, kind: KindJSON}); err != nil {
				return rows, cr.n, false, nil, err
			}
		}
		rows++
	}
	return rows, cr.n, false, nil, nil
}

// skipBOM skips a byte order mark (spreadsheets write one) at the start of
// a file, with or without a header, so that it is in no key or name and a
// file of only a mark is empty.
func skipBOM(r io.Reader) *bufio.Reader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReader(r)
	}
	if b, _ := br.Peek(3); string(b) == "\uFEFF" {
		_, _ = br.Discard(3)
	}
	return br
}

// endLine is the line after the record just read: the line of its last
// field plus the line breaks inside that field (a quoted one may hold some).
func endLine(r *csv.Reader, rec []string) int64 {
	if len(rec) == 0 {
		return 1
	}
	line, _ := r.FieldPos(len(rec) - 1)
	return int64(line) + int64(strings.Count(rec[len(rec)-1], "\n")) + 1
}

// loneSurrogate reports whether the JSON string literal raw holds a \u
// escape of a UTF-16 surrogate without its pair: encoding/json decodes it
// as U+FFFD, so "\ud800" and "\udbff" would become the same key.
func loneSurrogate(raw []byte) bool {
	hex := func(i int) (rune, bool) {
		if i+6 > len(raw) || raw[i] != '\\' || raw[i+1] != 'u' {
			return 0, false
		}
		v, err := strconv.ParseUint(string(raw[i+2:i+6]), 16, 16)
		return rune(v), err == nil
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		u, ok := hex(i)
		if !ok {
			i++ // an escape such as \\ or \": its second byte is not a new escape
			continue
		}
		switch {
		case u >= 0xD800 && u < 0xDC00:
			if lo, ok := hex(i + 6); !ok || lo < 0xDC00 || lo >= 0xE000 {
				return true
			}
			i += 11
		case u >= 0xDC00 && u < 0xE000:
			return true
		default:
			i += 5
		}
	}
	return false
}

// readJSONL reads records ({"key": "...", "value": <any JSON>} per line)
// and hands each to to (nil: check only); results as readCSV's.
func (c *call) readJSONL(file string, limit int64, stringMode bool, to sink) (records, read int64, all bool, bad *fileError, stop error) {
	f, kerr := openInput(c.name, file)
	if kerr != nil {
		return 0, 0, false, nil, kerr
	}
	defer f.Close()
	cr := &countReader{r: f}
	br := skipBOM(bufio.NewReaderSize(cr, 1<<16))
	var lineNo int64
	var long []byte
	var compact bytes.Buffer
	for limit <= 0 || records < limit {
		// One line, whatever its length up to maxLine.
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			long = append(long[:0], line...)
			for err == bufio.ErrBufferFull && len(long) <= maxLine {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
			return records, cr.n, false, nil, newErr(ErrFileRead, "%s: reading %s: %v", c.name, file, err)
		}
		if len(line) == 0 && err == io.EOF {
			return records, cr.n, true, nil, nil
		}
		lineNo++
		lineBad := func(name, format string, args ...any) *fileError {
			return &fileError{name: name, line: lineNo, msg: fmt.Sprintf(format, args...)}
		}
		if len(line) > maxLine {
			// Named as the CSV row over its bound is: the line cannot hold a
			// value the store takes (docs/api.md, "Import and export").
			return records, cr.n, false, lineBad(ErrValueTooLarge, "the line is longer than %d bytes, more than a key and a value at their limits (%d and %d bytes) with room for escapes", maxLine, keyMax, valueMax), nil
		}
		if !utf8.Valid(line) {
			return records, cr.n, false, lineBad(ErrValueParse, "the line is not valid UTF-8"), nil
		}
		rec := bytes.TrimSpace(line)
		if len(rec) == 0 {
			return records, cr.n, false, lineBad(ErrValueParse, `blank line: every line must be one record {"key": "...", "value": ...}`), nil
		}
		if rec[0] != '{' {
			return records, cr.n, false, lineBad(ErrValueParse, `the record must be a JSON object {"key": "...", "value": ...}`), nil
		}
		// A struct, not a map: 2.5 times faster. Its one difference: field
		// names match as encoding/json matches them, ignoring case.
		var env jsonlRecord
		if jerr := json.Unmarshal(rec, &env); jerr != nil {
			return records, cr.n, false, lineBad(ErrValueParse, "not valid JSON: %v", jerr), nil
		}
		if foldCount(rec, "key") > 1 || foldCount(rec, "value") > 1 {
			if word, names := nameTwice(rec); word != "" {
				return records, cr.n, false, lineBad(ErrValueParse,
					`the record names %q twice (as %s): "key" and "value" are matched without regard to case, so it is not clear which one is meant`,
					word, names), nil
			}
		}
		if env.Key == nil {
			return records, cr.n, false, lineBad(ErrValueParse, `the record has no "key"`), nil
		}
		var key string
		if jerr := json.Unmarshal(env.Key, &key); jerr != nil {
			return records, cr.n, false, lineBad(ErrValueParse, `"key" must be a string, got %s`, env.Key), nil
		}
		switch {
		case key == "":
			return records, cr.n, false, lineBad(ErrValueParse, `"key" must not be empty`), nil
		case strings.ContainsRune(key, utf8.RuneError) && loneSurrogate(env.Key):
			return records, cr.n, false, lineBad(ErrValueParse,
				`"key" holds a lone UTF-16 surrogate (such as \ud800 without its pair), which has no UTF-8 form: keys must be well-formed Unicode`), nil
		case len(key) > keyMax:
			return records, cr.n, false, lineBad(ErrKeyTooLong, "the key is %d bytes long; the limit is %d", len(key), keyMax), nil
		}
		valRaw := env.Value
		if valRaw == nil {
			return records, cr.n, false, lineBad(ErrValueParse, `the record has no "value"`), nil
		}
		it := item{key: key, kind: KindJSON}
		if stringMode && valRaw[0] == '"' {
			// A string, for a "string" opener, is stored as its text, as
			// its set() would store it.
			var s string
			_ = json.Unmarshal(valRaw, &s)
			it.val, it.kind = []byte(s), KindString
		} else {
			compact.Reset()
			_ = json.Compact(&compact, valRaw)
			it.val = compact.Bytes()
		}
		if len(it.val) > valueMax {
			return records, cr.n, false, lineBad(ErrValueTooLarge, "the value is %d bytes; the limit is %d", len(it.val), valueMax), nil
		}
		if to != nil {
			if err := to(it); err != nil {
				return records, cr.n, false, nil, err
			}
		}
		records++
		if err == io.EOF {
			return records, cr.n, true, nil, nil
		}
	}
	return records, cr.n, false, nil, nil
}

// foldCount counts the places b holds "word" (quotes included) with any
// case: a cheap test for a record that may name key or value twice.
func foldCount(b []byte, word string) int {
	n := 0
	for i := bytes.IndexByte(b, '"'); i >= 0 && i+len(word)+2 <= len(b); {
		if b[i+len(word)+1] == '"' && strings.EqualFold(string(b[i+1:i+1+len(word)]), word) {
			n++
		}
		j := bytes.IndexByte(b[i+1:], '"')
		if j < 0 {
			break
		}
		i += j + 1
	}
	return n
}

// nameTwice returns "key" or "value" when the record's top level names it
// twice, with the names as written, joined for the message ("" when
// neither is).
func nameTwice(rec []byte) (word, names string) {
	dec := json.NewDecoder(bytes.NewReader(rec))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", ""
	}
	seen := map[string][]string{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", ""
		}
		name, _ := t.(string)
		if low := strings.ToLower(name); low == "key" || low == "value" {
			seen[low] = append(seen[low], strconv.Quote(name))
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return "", ""
		}
	}
	for _, w := range []string{"key", "value"} {
		if len(seen[w]) > 1 {
			return w, strings.Join(seen[w], " and ")
		}
	}
	return "", ""
}

// jsonlRecord is one line of a JSON Lines file.
type jsonlRecord struct {
	Key   json.RawMessage `json:"key"`
	Value json.RawMessage `json:"value"`
}

// ---- import -----------------------------------------------------------------

// importer writes entries in batches through setMany.
type importer struct {
	s        backendStore
	size     int
	keys     []string
	vals     [][]byte
	kinds    []Kind
	written  int64
	ar       arena
	batchErr error
}

func (w *importer) add(it item) error {
	w.keys = append(w.keys, it.key)
	w.vals = append(w.vals, w.ar.keep(it.val))
	w.kinds = append(w.kinds, it.kind)
	if len(w.keys) >= w.size {
		return w.flush()
	}
	return nil
}

func (w *importer) flush() error {
	if len(w.keys) == 0 {
		return nil
	}
	if err := w.s.setMany(w.keys, w.vals, w.kinds); err != nil {
		w.batchErr = err
		return err
	}
	w.written += int64(len(w.keys))
	w.keys, w.vals, w.kinds = w.keys[:0], w.vals[:0], w.kinds[:0]
	w.ar = arena{}
	return nil
}

// contentError is the rejection for a bad record.
func (c *call) contentError(file string, bad *fileError, written int64) *kvError {
	tail := "nothing was written"
	if written > 0 {
		tail = fmt.Sprintf("the file changed while it was imported: %d entries were written before this one", written)
	}
	return newErr(bad.name, "%s: %s: %s; %s", c.name, bad.where(file), bad.msg, tail)
}

// importFile runs importCSV (csvMode) or importJSONL.
func (c *call) importFile(csvMode bool) sobek.Value {
	var o *sobek.Object
	var sp csvSpec
	if csvMode {
		o = c.options(0, "fileName", "keyColumn", "delimiter", "hasHeader", "limit", "batchSize")
	} else {
		o = c.options(0, "fileName", "limit", "batchSize")
	}
	file := c.fileName(o)
	// importJSONL reads a limit or batchSize <= 0 as xk6-kv does (none, the
	// default); importCSV refuses a negative one, as xk6-kv does.
	count := c.countOption
	if !csvMode {
		count = c.countOrAll
	}
	limit := count(o, "limit", 1<<53)
	batch := int(count(o, "batchSize", maxFileBatch))
	if batch == 0 {
		batch = defaultBatch
	}
	if csvMode {
		sp = csvSpec{file: file, comma: c.delimiter(o), header: c.flag(o, "hasHeader", true), limit: limit, syntax: ErrFileRead}
		sp.keyCol, sp.keyIdx = c.keyColumn(o, sp.header, true)
	}
	// Refused before the file is read: a closed or read-only handle.
	if c.err == nil && c.h.closed {
		c.fail(errClosed)
	}
	if c.err == nil && c.h.cfg.readOnly() {
		c.fail(storeError(c.name, "", 0, &CError{Code: codeReadOnly}))
	}
	if c.err != nil {
		return nil
	}
	stringMode := c.h.codec.stringMode
	read := func(to sink) (int64, int64, *fileError, error) {
		var n, bytesRead int64
		var bad *fileError
		var stop error
		if csvMode {
			n, bytesRead, _, bad, stop = c.readCSV(sp, to)
		} else {
			n, bytesRead, _, bad, stop = c.readJSONL(file, limit, stringMode, to)
		}
		return n, bytesRead, bad, stop
	}

	// Check the whole file first, keeping what fits in importBuffer.
	var kept []item
	var ar arena
	size, fits := 0, true
	rows, bytesRead, bad, stop := read(func(it item) error {
		if fits {
			size += len(it.key) + len(it.val) + 64
			if fits = size <= importBuffer; fits {
				it.val = ar.keep(it.val)
				kept = append(kept, it)
			} else {
				kept, ar = nil, arena{}
			}
		}
		return nil
	})
	if stop != nil {
		c.fail(storeError(c.name, "", 0, stop))
		return nil
	}
	if bad != nil {
		c.fail(c.contentError(file, bad, 0))
		return nil
	}
	if !fits {
		// A pipe or a device gives its bytes once: a second reading would
		// wait for a writer or read something else.
		if st, err := os.Stat(file); err == nil && !st.Mode().IsRegular() {
			c.fail(newErr(ErrFileIO, "%s: %s is not a regular file (a pipe or a device) and holds more than %d MiB of rows, which an import reads twice: save it to a file first; nothing was written",
				c.name, file, importBuffer>>20))
			return nil
		}
		importBetweenPasses(file)
	}
	w := &importer{size: batch}
	c.do(func(s backendStore) error {
		w.s = s
		if fits {
			// The kept rows, batch by batch, without copying them again.
			for len(kept) > 0 {
				n := min(batch, len(kept))
				for _, it := range kept[:n] {
					w.keys = append(w.keys, it.key)
					w.vals = append(w.vals, it.val)
					w.kinds = append(w.kinds, it.kind)
				}
				if err := w.flush(); err != nil {
					return err
				}
				kept = kept[n:]
			}
			return nil
		}
		// Too large to keep: read again, writing as it goes.
		n, _, bad, stop := read(w.add)
		switch {
		case stop != nil:
			return stop
		case bad != nil:
			return c.contentError(file, bad, w.written)
		case n != rows:
			return newErr(ErrFileRead, "%s: %s changed while it was imported (%d records, then %d): %d entries were written",
				c.name, file, rows, n, w.written)
		}
		return w.flush()
	})
	if c.err != nil && w.batchErr != nil {
		// A store failure (full, a lock timeout): name it, and say how far
		// the import went.
		err := w.batchErr
		if be, ok := err.(*batchError); ok {
			err = &be.CError
		}
		e := storeError(c.name, "", 0, err)
		c.err = newErr(e.Name, "%s; %d entries were written before it, in batches of %d (each batch all or nothing)",
			e.Message, w.written, batch)
	}
	return c.object("imported", w.written, "fileName", file, "bytesRead", bytesRead)
}

func opImportCSV(c *call) sobek.Value   { return c.importFile(true) }
func opImportJSONL(c *call) sobek.Value { return c.importFile(false) }

// ---- validate ---------------------------------------------------------------

func opValidateCSV(c *call) sobek.Value {
	o := c.options(0, "fileName", "keyColumn", "delimiter", "hasHeader", "limit")
	file := c.fileName(o)
	sp := csvSpec{file: file, comma: c.delimiter(o), header: c.flag(o, "hasHeader", true),
		limit: c.countOrAll(o, "limit", 1<<53), syntax: ErrValueParse}
	sp.keyCol, sp.keyIdx = c.keyColumn(o, sp.header, false)
	var rows, read int64
	var all bool
	var bad *fileError
	c.do(func(backendStore) (stop error) { rows, read, all, bad, stop = c.readCSV(sp, nil); return })
	if c.err != nil {
		return nil
	}
	kv := []any{"valid", bad == nil, "rows", rows, "bytesRead", read, "checkedAll", all}
	if bad != nil {
		kv = append(kv, "firstError", c.object("row", bad.row, "line", bad.line, "name", bad.name,
			"message", fmt.Sprintf("%s: %s", bad.where(file), bad.msg)))
	}
	return c.object(kv...)
}

func opValidateJSONL(c *call) sobek.Value {
	o := c.options(0, "fileName", "limit")
	file := c.fileName(o)
	limit := c.countOrAll(o, "limit", 1<<53)
	var records, read int64
	var all bool
	var bad *fileError
	c.do(func(backendStore) (stop error) {
		records, read, all, bad, stop = c.readJSONL(file, limit, c.h.codec.stringMode, nil)
		return
	})
	if c.err != nil {
		return nil
	}
	kv := []any{"valid", bad == nil, "records", records, "bytesRead", read, "checkedAll", all}
	if bad != nil {
		kv = append(kv, "firstError", c.object("line", bad.line, "name", bad.name,
			"message", fmt.Sprintf("%s: %s", bad.where(file), bad.msg)))
	}
	return c.object(kv...)
}
