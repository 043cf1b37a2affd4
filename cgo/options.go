//go:build cgo

package kv

import (
	"fmt"
	"math"
	"math/bits"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/grafana/sobek"
)

// Defaults, as in xk6-kv.
const (
	defaultPath = "./.k6.kv"
	defaultName = "k6kv"
)

// Serialization modes.
const (
	serJSON   = "json"
	serString = "string"
)

// config is what openKv's options ask for.
type config struct {
	backend       Backend
	path          string // disk
	name          string // memory
	serialization string
	track         int // trackDefault (not set), trackOff, trackOn
	segments      uint32
	reserve       uint64
	lockTimeoutMs uint32 // 0: the library's default
	flags         uint32
	opMetrics     bool // metrics: {operations: true}
	// ignored lists the accepted options that have no effect here, for the
	// one warning per process.
	ignored []string
}

func (c *config) readOnly() bool { return c.flags&flagReadOnly != 0 }

// where is the path or name handed to shmkv_open.
func (c *config) where() string {
	if c.backend == BackendMemory {
		return c.name
	}
	return c.path
}

func optErr(format string, args ...any) *kvError {
	return newErr(ErrInvalidOptions, "openKv: "+format, args...)
}

// absent reports whether an option was left out (undefined or null).
func absent(v sobek.Value) bool {
	return v == nil || sobek.IsUndefined(v) || sobek.IsNull(v)
}

func typeName(v sobek.Value) string {
	switch {
	case v == nil || sobek.IsUndefined(v):
		return "undefined"
	case sobek.IsNull(v):
		return "null"
	case sobek.IsString(v):
		return "string"
	case sobek.IsNumber(v):
		return "number"
	case sobek.IsBigInt(v):
		return "bigint"
	}
	if _, ok := v.(*sobek.Symbol); ok {
		return "symbol"
	}
	if o, ok := v.(*sobek.Object); ok {
		if _, fn := sobek.AssertFunction(o); fn {
			return "function"
		}
		if o.ClassName() == "Array" {
			return "array"
		}
		return "object"
	}
	if v.ExportType() != nil && v.ExportType().Kind() == reflect.Bool {
		return "boolean"
	}
	return v.ExportType().String()
}

func isBool(v sobek.Value) bool {
	t := v.ExportType()
	return t != nil && t.Kind() == reflect.Bool && !isObject(v)
}

func isObject(v sobek.Value) bool {
	_, ok := v.(*sobek.Object)
	return ok
}

// plainObject returns v as an object whose options can be read, or an
// error naming the option when it is something else.
func plainObject(name string, v sobek.Value) (*sobek.Object, *kvError) {
	o, ok := v.(*sobek.Object)
	if !ok || typeName(v) != "object" {
		return nil, optErr("option %q must be an object, got %s", name, typeName(v))
	}
	return o, nil
}

func getString(name string, v sobek.Value) (string, *kvError) {
	if !sobek.IsString(v) {
		return "", optErr("option %q must be a string, got %s", name, typeName(v))
	}
	return v.String(), nil
}

func getBool(name string, v sobek.Value) (bool, *kvError) {
	if !isBool(v) {
		return false, optErr("option %q must be a boolean, got %s", name, typeName(v))
	}
	return v.ToBoolean(), nil
}

func getNumber(name string, v sobek.Value) (float64, *kvError) {
	if !sobek.IsNumber(v) {
		return 0, optErr("option %q must be a number, got %s", name, typeName(v))
	}
	f := v.ToFloat()
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, optErr("option %q must be a finite number, got %v", name, f)
	}
	return f, nil
}

var (
	topLevelOptions = []string{
		"backend", "path", "name", "serialization", "trackKeys", "segments", "reserve",
		"lockTimeout", "memory", "disk", "metrics",
	}
	memoryOptions = []string{"shardCount"}
	diskOptions   = []string{
		"path", "timeout", "noSync", "noGrowSync", "noFreelistSync", "preLoadFreelist",
		"freelistType", "readOnly", "initialMmapSize", "mlock",
	}
	metricsOptions = []string{"operations"}
)

// checkKeys rejects an option object holding a key not in known.
func checkKeys(where string, o *sobek.Object, known []string) *kvError {
	for _, k := range o.Keys() {
		if !slices.Contains(known, k) {
			if where == "" {
				return optErr("unknown option %q (known: %s)", k, strings.Join(known, ", "))
			}
			return optErr("unknown option %q in %q (known: %s)", k, where, strings.Join(known, ", "))
		}
	}
	return nil
}

// parseOptions reads openKv's argument.
func parseOptions(arg sobek.Value) (*config, *kvError) {
	c := &config{backend: BackendDisk, path: defaultPath, name: defaultName, serialization: serJSON}
	if absent(arg) {
		return c, nil
	}
	o, err := plainObject("options", arg)
	if err != nil {
		return nil, optErr("the argument must be an options object, got %s", typeName(arg))
	}
	if err := checkKeys("", o, topLevelOptions); err != nil {
		return nil, err
	}
	get := func(obj *sobek.Object, k string) sobek.Value {
		v := obj.Get(k)
		if absent(v) {
			return nil
		}
		return v
	}

	if v := get(o, "backend"); v != nil {
		s, err := getString("backend", v)
		if err != nil {
			return nil, err
		}
		switch s {
		case "disk":
			c.backend = BackendDisk
		case "memory":
			c.backend = BackendMemory
		default:
			e := optErr(`option "backend" must be "disk" or "memory", got %q`, s)
			e.Name = ErrInvalidBackend
			return nil, e
		}
	}
	if v := get(o, "serialization"); v != nil {
		s, err := getString("serialization", v)
		if err != nil {
			return nil, err
		}
		if s != serJSON && s != serString {
			e := optErr(`option "serialization" must be "json" or "string", got %q`, s)
			e.Name = ErrInvalidSerializer
			return nil, e
		}
		c.serialization = s
	}
	if v := get(o, "trackKeys"); v != nil {
		b, err := getBool("trackKeys", v)
		if err != nil {
			return nil, err
		}
		c.track = trackOff
		if b {
			c.track = trackOn
		}
	}
	pathSet := ""
	if v := get(o, "path"); v != nil {
		s, err := getString("path", v)
		if err != nil {
			return nil, err
		}
		if s == "" {
			return nil, optErr(`option "path" must not be empty`)
		}
		if strings.IndexByte(s, 0) >= 0 {
			// C would read the path only up to the NUL: another file.
			return nil, optErr(`option "path" must not contain a NUL character, got %q`, s)
		}
		c.path, pathSet = s, s
	}
	if v := get(o, "name"); v != nil {
		s, err := getString("name", v)
		if err != nil {
			return nil, err
		}
		if strings.IndexByte(s, 0) >= 0 {
			// C would read the name only up to the NUL: another store.
			return nil, optErr(`option "name" must not contain a NUL character, got %q`, s)
		}
		c.name = s
	}
	// The ranges of segments, reserve and name are the library's to judge
	// (openError words its answer); here a number only has to fit the C
	// field, where 0 would mean "the default".
	if v := get(o, "segments"); v != nil {
		f, err := getNumber("segments", v)
		if err != nil {
			return nil, err
		}
		if f != math.Trunc(f) || f < 1 || f > math.MaxUint32 {
			return nil, optErr(`option "segments" (%v): %s`, f, (&CError{Code: codeSegments}).Error())
		}
		c.segments = uint32(f)
	}
	if v := get(o, "reserve"); v != nil {
		n, err := parseSize("reserve", v)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, optErr(`option "reserve" (0): %s`, (&CError{Code: codeReserve}).Error())
		}
		c.reserve = n
	}

	if v := get(o, "lockTimeout"); v != nil {
		ms, err := parseTimeout("lockTimeout", v)
		if err != nil {
			return nil, err
		}
		c.lockTimeoutMs = ms
	}

	// The xk6-kv fork's nested options.
	if v := get(o, "memory"); v != nil {
		mo, err := plainObject("memory", v)
		if err != nil {
			return nil, err
		}
		if err := checkKeys("memory", mo, memoryOptions); err != nil {
			return nil, err
		}
		if sv := get(mo, "shardCount"); sv != nil {
			f, err := getNumber("memory.shardCount", sv)
			if err != nil {
				return nil, err
			}
			// <= 0 means "automatic": the library's default. Otherwise
			// round up to a power of two, capped at the library's maximum.
			if f > 0 && c.backend == BackendMemory && c.segments == 0 {
				c.segments = shardsToSegments(f)
			}
		}
	}
	if v := get(o, "disk"); v != nil {
		do, err := plainObject("disk", v)
		if err != nil {
			return nil, err
		}
		if err := checkKeys("disk", do, diskOptions); err != nil {
			return nil, err
		}
		for _, k := range diskOptions {
			dv := get(do, k)
			if dv == nil {
				continue
			}
			full := "disk." + k
			switch k {
			case "path":
				s, err := getString(full, dv)
				if err != nil {
					return nil, err
				}
				if s == "" || strings.IndexByte(s, 0) >= 0 {
					return nil, optErr(`option "disk.path" must be a path without NUL characters, got %q`, s)
				}
				if pathSet != "" && pathSet != s {
					return nil, optErr(`options "path" (%q) and "disk.path" (%q) disagree`, pathSet, s)
				}
				c.path = s
			case "readOnly", "noSync", "noGrowSync", "noFreelistSync", "preLoadFreelist", "mlock":
				b, err := getBool(full, dv)
				if err != nil {
					return nil, err
				}
				switch k {
				case "readOnly":
					if b && c.backend == BackendDisk {
						c.flags |= flagReadOnly
					}
				case "noSync":
					if b && c.backend == BackendDisk {
						c.flags |= flagNoSync
					}
				default:
					c.ignored = append(c.ignored, full)
				}
			case "timeout", "initialMmapSize":
				if !sobek.IsNumber(dv) && !sobek.IsString(dv) {
					return nil, optErr("option %q must be a number or a string, got %s", full, typeName(dv))
				}
				c.ignored = append(c.ignored, full)
			case "freelistType":
				if _, err := getString(full, dv); err != nil {
					return nil, err
				}
				c.ignored = append(c.ignored, full)
			}
		}
	}
	if v := get(o, "metrics"); v != nil {
		mo, err := plainObject("metrics", v)
		if err != nil {
			return nil, err
		}
		if err := checkKeys("metrics", mo, metricsOptions); err != nil {
			return nil, err
		}
		if mv := get(mo, "operations"); mv != nil {
			b, err := getBool("metrics.operations", mv)
			if err != nil {
				return nil, err
			}
			c.opMetrics = b
		}
	}
	return c, nil
}

// shardsToSegments maps memory.shardCount to a segment count: the next
// power of two, at most maxSegments.
func shardsToSegments(f float64) uint32 {
	if f >= maxSegments {
		return maxSegments
	}
	n := uint32(math.Ceil(f))
	if n <= 1 {
		return 1
	}
	return 1 << bits.Len32(n-1)
}

// parseTimeout reads lockTimeout: milliseconds as a positive number, a
// duration string such as "500ms", "10s" or "1m30s", or Infinity (or
// "none") to wait without a limit.
func parseTimeout(name string, v sobek.Value) (uint32, *kvError) {
	var d time.Duration
	switch {
	case sobek.IsNumber(v):
		f := v.ToFloat()
		if math.IsInf(f, 1) {
			return lockTimeoutNone, nil
		}
		if math.IsNaN(f) || f <= 0 {
			return 0, optErr("option %q must be a positive number of milliseconds, a duration such as \"10s\", or Infinity, got %v", name, f)
		}
		if f >= lockTimeoutNone {
			return lockTimeoutNone - 1, nil // the longest finite wait: about 49.7 days
		}
		return uint32(max(math.Ceil(f), 1)), nil
	case sobek.IsString(v):
		s := v.String()
		if s == "none" {
			return lockTimeoutNone, nil
		}
		var err error
		if d, err = time.ParseDuration(s); err != nil || d <= 0 {
			return 0, optErr("option %q: cannot read %q as a positive duration (examples: 250, \"500ms\", \"10s\", \"none\")", name, s)
		}
	default:
		return 0, optErr("option %q must be a number of milliseconds or a duration string, got %s", name, typeName(v))
	}
	ms := max(d.Milliseconds(), 1)
	if ms >= lockTimeoutNone {
		return lockTimeoutNone - 1, nil
	}
	return uint32(ms), nil
}

var sizeRE = regexp.MustCompile(`^\s*([0-9]+)\s*([A-Za-z]*)\s*$`)

var sizeUnits = map[string]uint64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
	"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
}

// parseSize reads a byte count: a number, or a string such as "512MiB",
// "16GiB", "1GB" (decimal units) or "64m" (binary).
func parseSize(name string, v sobek.Value) (uint64, *kvError) {
	if sobek.IsNumber(v) {
		f, err := getNumber(name, v)
		if err != nil {
			return 0, err
		}
		if f < 0 || f != math.Trunc(f) || f >= 1<<63 {
			return 0, optErr("option %q must be a whole number of bytes, got %v", name, f)
		}
		return uint64(f), nil
	}
	if !sobek.IsString(v) {
		return 0, optErr("option %q must be a number of bytes or a string such as \"16GiB\", got %s", name, typeName(v))
	}
	s := v.String()
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, optErr("option %q: cannot read size %q (examples: 1048576, \"512MiB\", \"16GiB\", \"1GB\")", name, s)
	}
	mult, ok := sizeUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, optErr("option %q: unknown unit %q in %q (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)", name, m[2], s)
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	if err != nil || (mult > 1 && n > math.MaxUint64/mult) {
		return 0, optErr("option %q: size %q is too large", name, s)
	}
	return n * mult, nil
}

// describe is a one-line summary of a config, for messages.
func (c *config) describe() string {
	return fmt.Sprintf("%s store %q", c.backend, c.where())
}
