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
	"path/filepath"
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
	importBuffer = 128 << 20
	exportPage   = 1000
	// the longest JSONL line read: a value at the store's limit, its key
	// and some room for escapes.
	maxLine = valueMax + 4*keyMax + 1<<20
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

// countReader counts the bytes read from the file.
type countReader struct {
	r io.Reader
	n int64
}

func (r *countReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n += int64(n)
	return n, err
}

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
	if c.err == nil && (s == "" || size != len(s) || r == '"' || r == '\r' || r == '\n' || r == utf8.RuneError) {
		c.invalid("delimiter must be one character other than a quote or a line break, got %q", s)
	}
	return r
}

// countOption reads limit (0: no limit) or batchSize (0: the default).
func (c *call) countOption(o *sobek.Object, name string, hi int64) int64 {
	return c.number(o, name, 0, hi, 0, false)
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
	cr := &countReader{r: f}
	r := csv.NewReader(cr)
	r.Comma = sp.comma
	r.FieldsPerRecord = -1 // ragged rows: missing fields are "", extra ones column_N
	r.ReuseRecord = true

	var row int64 // records read, the header included
	readErr := func(err error) (*fileError, error) {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return &fileError{name: sp.syntax, row: row + 1, line: int64(pe.StartLine),
				msg: fmt.Sprintf("malformed CSV: %v (line %d, column %d)", pe.Err, pe.Line, pe.Column)}, nil
		}
		return nil, newErr(ErrFileRead, "%s: reading %s: %v", c.name, sp.file, err)
	}
	var names [][]byte // "name": of each header column, as JSON
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
		// A byte order mark (spreadsheets write one) is not part of the
		// first column's name.
		if len(rec) > 0 {
			rec[0] = strings.TrimPrefix(rec[0], "\uFEFF")
		}
		hdrBad := func(format string, args ...any) *fileError {
			return &fileError{name: ErrValueParse, row: 1, line: 1, msg: "header: " + fmt.Sprintf(format, args...)}
		}
		seen := make(map[string]bool, len(rec))
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
		line, _ := r.FieldPos(0)
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
				val = append(appendJSONString(val, "column_"+strconv.Itoa(i)), ':')
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

// readJSONL reads records ({"key": "...", "value": <any JSON>} per line)
// and hands each to to (nil: check only); results as readCSV's.
func (c *call) readJSONL(file string, limit int64, stringMode bool, to sink) (records, read int64, all bool, bad *fileError, stop error) {
	f, kerr := openInput(c.name, file)
	if kerr != nil {
		return 0, 0, false, nil, kerr
	}
	defer f.Close()
	cr := &countReader{r: f}
	br := bufio.NewReaderSize(cr, 1<<16)
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
		if lineNo == 1 {
			line = bytes.TrimPrefix(line, []byte("\uFEFF")) // a byte order mark
		}
		lineBad := func(name, format string, args ...any) *fileError {
			return &fileError{name: name, line: lineNo, msg: fmt.Sprintf(format, args...)}
		}
		if len(line) > maxLine {
			return records, cr.n, false, lineBad(ErrValueParse, "the line is longer than %d bytes", maxLine), nil
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
	limit := c.countOption(o, "limit", 1<<53)
	batch := int(c.countOption(o, "batchSize", maxFileBatch))
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
	w := &importer{size: batch}
	c.do(func(s backendStore) error {
		w.s = s
		if fits {
			for _, it := range kept {
				if err := w.add(it); err != nil {
					return err
				}
			}
			return w.flush()
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
		limit: c.countOption(o, "limit", 1<<53), syntax: ErrValueParse}
	sp.keyCol, sp.keyIdx = c.keyColumn(o, sp.header, false)
	var rows, read int64
	var all bool
	var bad *fileError
	c.do(func(backendStore) (stop error) { rows, read, all, bad, stop = c.readCSV(sp, nil); return })
	if c.err != nil {
		return nil
	}
	res := c.h.rt.NewObject()
	_ = res.Set("valid", bad == nil)
	_ = res.Set("rows", rows)
	_ = res.Set("bytesRead", read)
	_ = res.Set("checkedAll", all)
	if bad != nil {
		_ = res.Set("firstError", c.object("row", bad.row, "line", bad.line, "name", bad.name,
			"message", fmt.Sprintf("%s: %s", bad.where(file), bad.msg)))
	}
	return res
}

func opValidateJSONL(c *call) sobek.Value {
	o := c.options(0, "fileName", "limit")
	file := c.fileName(o)
	limit := c.countOption(o, "limit", 1<<53)
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
	res := c.h.rt.NewObject()
	_ = res.Set("valid", bad == nil)
	_ = res.Set("records", records)
	_ = res.Set("bytesRead", read)
	_ = res.Set("checkedAll", all)
	if bad != nil {
		_ = res.Set("firstError", c.object("line", bad.line, "name", bad.name,
			"message", fmt.Sprintf("%s: %s", bad.where(file), bad.msg)))
	}
	return res
}

// ---- export -----------------------------------------------------------------

// columns reads exportCSV's columns: a non-empty array of distinct,
// non-empty strings.
func (c *call) columns(o *sobek.Object) []string {
	if c.err != nil {
		return nil
	}
	var v sobek.Value
	if o != nil {
		v = o.Get("columns")
	}
	if absent(v) {
		c.invalid("columns is required: the top-level fields of the values to write, such as [\"name\", \"email\"]")
		return nil
	}
	arr, ok := v.(*sobek.Object)
	if !ok || typeName(v) != "array" {
		c.invalid("columns must be an array of strings, got %s", typeName(v))
		return nil
	}
	n := arr.Get("length").ToInteger()
	if n == 0 || n > 100_000 {
		c.invalid("columns must hold 1 to 100000 names, got %d", n)
		return nil
	}
	out := make([]string, 0, n)
	seen := map[string]bool{}
	for i := int64(0); i < n && c.err == nil; i++ {
		s := c.str("columns["+itoa(i)+"]", arr.Get(itoa(i)))
		switch {
		case c.err != nil:
		case strings.TrimSpace(s) == "":
			c.invalid("columns[%d] must be a non-empty string", i)
		case seen[s]:
			c.invalid("columns holds %q twice", s)
		}
		seen[s] = true
		out = append(out, s)
	}
	return out
}

// output is a file written under a temporary name and renamed into place
// once complete: a failed export leaves the target as it was.
type output struct {
	name string
	tmp  *os.File
	w    *bufio.Writer
}

func createOutput(method, file string) (*output, *kvError) {
	dir := filepath.Dir(file)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, newErr(ErrFileExport, "%s: cannot create the folder of %s: %v", method, file, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(file)+".*.tmp")
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return nil, newErr(ErrFilePermission, "%s: cannot write in the folder of %s: %v", method, file, err)
		}
		return nil, newErr(ErrFileExport, "%s: cannot create a file next to %s: %v", method, file, err)
	}
	return &output{name: file, tmp: tmp, w: bufio.NewWriterSize(tmp, 1<<20)}, nil
}

// finish flushes, syncs and renames the file into place; size is its size.
func (o *output) finish(method string) (size int64, kerr *kvError) {
	err := o.w.Flush()
	if err == nil {
		err = o.tmp.Sync()
	}
	if cerr := o.tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(o.tmp.Name(), o.name)
	}
	if err != nil {
		_ = os.Remove(o.tmp.Name())
		return 0, newErr(ErrFileExport, "%s: writing %s: %v", method, o.name, err)
	}
	if st, err := os.Stat(o.name); err == nil {
		size = st.Size()
	}
	return size, nil
}

func (o *output) abandon() {
	_ = o.tmp.Close()
	_ = os.Remove(o.tmp.Name())
}

// eachEntry hands to every entry with the prefix, in key order, at most
// limit (0: all), a page at a time. Each entry was current at one moment;
// the whole is not one moment (keys written meanwhile may or may not be
// there).
func (c *call) eachEntry(s backendStore, prefix string, limit int64, to func(entry) error) (int64, error) {
	readOnly := c.h.cfg.readOnly()
	if !readOnly {
		// Pages without the key index cost a pass over the store each.
		if err := s.ordered(autoIndexKeys); err != nil && !noRoom(err) {
			return 0, err
		}
	}
	var n int64
	after := ""
	for {
		ask := uint64(exportPage)
		if readOnly {
			ask = 0 // a read-only handle cannot build the index: one pass
		}
		if limit > 0 && (ask == 0 || uint64(limit-n) < ask) {
			ask = uint64(limit - n)
		}
		es, err := s.scan(prefix, after, ask, false)
		if err != nil {
			return n, err
		}
		for _, e := range es {
			if err := to(e); err != nil {
				return n, err
			}
			n++
		}
		if ask == 0 || uint64(len(es)) < ask || (limit > 0 && n >= limit) {
			return n, nil
		}
		after = es[len(es)-1].Key
	}
}

// exportFile runs exportCSV (csvMode) or exportJSONL.
func (c *call) exportFile(csvMode bool) sobek.Value {
	var o *sobek.Object
	if csvMode {
		o = c.options(0, "fileName", "columns", "prefix", "limit", "delimiter", "includeKey")
	} else {
		o = c.options(0, "fileName", "prefix", "limit")
	}
	file := c.fileName(o)
	prefix := c.prefix(o)
	limit := c.countOption(o, "limit", math.MaxInt64>>1)
	var cols []string
	var comma rune
	includeKey := false
	if csvMode {
		cols = c.columns(o)
		comma = c.delimiter(o)
		includeKey = c.flag(o, "includeKey", true)
		for _, col := range cols {
			if includeKey && col == "key" && c.err == nil {
				c.invalid(`columns must not hold "key" with includeKey true (the key is written as the first column "key")`)
			}
		}
	}
	if c.err == nil && c.h.closed {
		c.fail(errClosed) // before a file is created
	}
	if c.err != nil {
		return nil
	}
	out, kerr := createOutput(c.name, file)
	if kerr != nil {
		c.fail(kerr)
		return nil
	}
	var write func(entry) error
	var flushCSV func() error
	if csvMode {
		cw := csv.NewWriter(out.w)
		cw.Comma = comma
		head := cols
		if includeKey {
			head = append([]string{"key"}, cols...)
		}
		_ = cw.Write(head)
		rec := make([]string, len(head))
		write = func(e entry) error {
			if e := c.csvRecord(e, cols, includeKey, rec); e != nil {
				return e
			}
			return cw.Write(rec)
		}
		flushCSV = func() error { cw.Flush(); return cw.Error() }
	} else {
		enc := json.NewEncoder(out.w)
		enc.SetEscapeHTML(false)
		write = func(e entry) error {
			v, kerr := jsonValue(c.name, e)
			if kerr != nil {
				return kerr
			}
			return enc.Encode(struct {
				Key   string          `json:"key"`
				Value json.RawMessage `json:"value"`
			}{e.Key, v})
		}
	}
	var n int64
	c.do(func(s backendStore) (err error) {
		if n, err = c.eachEntry(s, prefix, limit, write); err == nil && flushCSV != nil {
			err = flushCSV()
		}
		var ke *kvError
		if err != nil && !errors.As(err, &ke) && codeOf(err) == 0 {
			err = newErr(ErrFileExport, "%s: writing %s: %v", c.name, file, err)
		}
		return err
	})
	if c.err != nil {
		out.abandon()
		return nil
	}
	size, kerr := out.finish(c.name)
	if kerr != nil {
		c.fail(kerr)
		return nil
	}
	return c.object("exported", n, "fileName", file, "bytesWritten", size)
}

// jsonValue is an entry's value as JSON for exportJSONL: a JSON value as
// stored, text (or bytes that are UTF-8 text) as a JSON string.
func jsonValue(method string, e entry) (json.RawMessage, *kvError) {
	if !utf8.ValidString(e.Key) {
		return nil, newErr(ErrSerializer, "%s: key %q is not valid UTF-8, which JSON cannot hold", method, e.Key)
	}
	if e.Kind == KindJSON {
		if !json.Valid(e.Value) {
			return nil, newErr(ErrValueParse, "%s: the value of key %q is not valid JSON", method, e.Key)
		}
		return e.Value, nil
	}
	if !utf8.Valid(e.Value) {
		return nil, newErr(ErrSerializer, "%s: the value of key %q is bytes that are not UTF-8 text, which JSON cannot hold", method, e.Key)
	}
	b, _ := json.Marshal(string(e.Value))
	return b, nil
}

// csvRecord fills rec with an entry's row: its key (with includeKey) and
// the top-level fields named by cols of its value, a JSON object. A field
// that is absent or null gives an empty cell; a string its text; a number
// or a boolean its JSON text; an object or an array is refused.
func (c *call) csvRecord(e entry, cols []string, includeKey bool, rec []string) *kvError {
	notRow := func(what string) *kvError {
		return newErr(ErrValueParse, "%s: the value of key %q is %s, not a JSON object: exportCSV writes objects as rows (exportJSONL writes any value)",
			c.name, e.Key, what)
	}
	if e.Kind != KindJSON {
		return notRow("text")
	}
	if len(bytes.TrimSpace(e.Value)) == 0 || bytes.TrimSpace(e.Value)[0] != '{' {
		return notRow("a JSON " + jsonKind(e.Value))
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(e.Value, &obj); err != nil {
		return newErr(ErrValueParse, "%s: the value of key %q is not valid JSON: %v", c.name, e.Key, err)
	}
	i := 0
	if includeKey {
		rec[0] = e.Key
		i = 1
	}
	for _, col := range cols {
		raw, ok := obj[col]
		cell := ""
		if ok && len(raw) > 0 {
			switch raw[0] {
			case 'n':
			case '"':
				_ = json.Unmarshal(raw, &cell)
			case '{', '[':
				return newErr(ErrValueParse, "%s: key %q: field %q is a JSON %s; exportCSV writes strings, numbers, booleans and null (exportJSONL writes any value)",
					c.name, e.Key, col, jsonKind(raw))
			default:
				cell = string(raw)
			}
		}
		rec[i] = cell
		i++
	}
	return nil
}

func jsonKind(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

func opExportCSV(c *call) sobek.Value   { return c.exportFile(true) }
func opExportJSONL(c *call) sobek.Value { return c.exportFile(false) }
