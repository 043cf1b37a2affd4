//go:build cgo

package kv

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/grafana/sobek"
)

// exportCSV and exportJSONL (see io.go for what they share with imports).

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
	tmp, err := createTemp(dir, "."+filepath.Base(file)+".")
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return nil, newErr(ErrFilePermission, "%s: cannot write in the folder of %s: %v", method, file, err)
		}
		return nil, newErr(ErrFileExport, "%s: cannot create a file next to %s: %v", method, file, err)
	}
	return &output{name: file, tmp: tmp, w: bufio.NewWriterSize(tmp, 1<<20)}, nil
}

// createTemp creates a new file in dir as os.Create would (mode 0666 less
// the umask: os.CreateTemp's 0600 would make every export private to its
// user), under a name no other file has.
func createTemp(dir, prefix string) (*os.File, error) {
	for try := 0; ; try++ {
		name := filepath.Join(dir, prefix+strconv.FormatUint(uint64(rand.Uint32()), 36)+".tmp")
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
		if err == nil || !errors.Is(err, fs.ErrExist) || try >= 100 {
			return f, err
		}
	}
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
	limit := c.countOrAll(o, "limit", math.MaxInt64>>1)
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
			if len(rec) == 1 && rec[0] == "" {
				// encoding/csv writes a lone empty cell as a blank line,
				// which readers skip: the row would be lost.
				cw.Flush()
				_, err := out.w.WriteString("\"\"\n")
				return errors.Join(cw.Error(), err)
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
	// < > & as they are, as keys are written (json.Marshal would write
	// each as a 6-byte \u escape: a 12 MiB value of them became a line too
	// long to import back). shmkv-dump --export writes the same bytes.
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(string(e.Value))
	return bytes.TrimSuffix(b.Bytes(), []byte{'\n'}), nil
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
