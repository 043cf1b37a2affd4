//go:build cgo

package kv

/*
#cgo CFLAGS: -I${SRCDIR}/../libshmkv/include -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra
#cgo LDFLAGS: -lpthread -lrt

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "shmkv.h"

// Results are returned by value so that no Go variable escapes to the heap
// just because C writes into it.
typedef struct { int rc; size_t vlen; int kind; } shmkvgo_res;
typedef struct { int rc; int flag; int64_t num; size_t vlen; int kind; } shmkvgo_res2;

static shmkvgo_res shmkvgo_get(shmkv_db *db, _GoString_ key, void *buf, size_t cap) {
	shmkvgo_res r = {0, 0, 0};
	shmkv_kind kind = SHMKV_KIND_BYTES;
	r.rc = shmkv_get(db, _GoStringPtr(key), _GoStringLen(key), buf, cap, &r.vlen, &kind);
	r.kind = (int)kind;
	return r;
}

static int shmkvgo_set(shmkv_db *db, _GoString_ key, const void *val, size_t vlen, int kind) {
	return shmkv_set(db, _GoStringPtr(key), _GoStringLen(key), val, vlen, (shmkv_kind)kind);
}

static shmkvgo_res2 shmkvgo_delete(shmkv_db *db, _GoString_ key) {
	shmkvgo_res2 r = {0, 0, 0, 0, 0};
	r.rc = shmkv_delete(db, _GoStringPtr(key), _GoStringLen(key), &r.flag);
	return r;
}

static int shmkvgo_exists(shmkv_db *db, _GoString_ key) {
	return shmkv_exists(db, _GoStringPtr(key), _GoStringLen(key));
}

static shmkvgo_res2 shmkvgo_incr(shmkv_db *db, _GoString_ key, int64_t delta, int kind) {
	shmkvgo_res2 r = {0, 0, 0, 0, 0};
	r.rc = shmkv_incr(db, _GoStringPtr(key), _GoStringLen(key), delta, (shmkv_kind)kind, &r.num);
	return r;
}

static shmkvgo_res2 shmkvgo_cas(shmkv_db *db, _GoString_ key, const void *expect, size_t elen,
                                const void *val, size_t vlen, int kind) {
	shmkvgo_res2 r = {0, 0, 0, 0, 0};
	r.rc = shmkv_cas(db, _GoStringPtr(key), _GoStringLen(key), expect, elen, val, vlen,
	                 (shmkv_kind)kind, &r.flag);
	return r;
}

static shmkvgo_res2 shmkvgo_set_if_absent(shmkv_db *db, _GoString_ key, const void *val,
                                          size_t vlen, int kind) {
	shmkvgo_res2 r = {0, 0, 0, 0, 0};
	r.rc = shmkv_set_if_absent(db, _GoStringPtr(key), _GoStringLen(key), val, vlen,
	                           (shmkv_kind)kind, &r.flag);
	return r;
}

// getOrSet (swap 0) and swap (swap 1) share a signature: one wrapper.
static shmkvgo_res2 shmkvgo_exchange(int swap, shmkv_db *db, _GoString_ key, const void *val,
                                     size_t vlen, int kind, void *buf, size_t cap) {
	shmkvgo_res2 r = {0, 0, 0, 0, 0};
	shmkv_kind k = SHMKV_KIND_BYTES;
	r.rc = (swap ? shmkv_swap : shmkv_get_or_set)(db, _GoStringPtr(key), _GoStringLen(key), val,
	                                              vlen, (shmkv_kind)kind, buf, cap, &r.vlen, &k,
	                                              &r.flag);
	r.kind = (int)k;
	return r;
}

static shmkvgo_res2 shmkvgo_compare_and_delete(shmkv_db *db, _GoString_ key, const void *expect,
                                               size_t elen) {
	shmkvgo_res2 r = {0, 0, 0, 0, 0};
	r.rc = shmkv_compare_and_delete(db, _GoStringPtr(key), _GoStringLen(key), expect, elen, &r.flag);
	return r;
}

static shmkvgo_res shmkvgo_random_key(shmkv_db *db, _GoString_ prefix, void *buf, size_t cap) {
	shmkvgo_res r = {0, 0, 0};
	r.rc = shmkv_random_key(db, _GoStringPtr(prefix), _GoStringLen(prefix), buf, cap, &r.vlen);
	return r;
}

// list() collects every entry into one malloc'd buffer, so that Go makes a
// single call instead of one C-to-Go callback per entry. Each record is
// klen (u32), vlen (u32), kind (u32), key bytes, value bytes.
typedef struct { unsigned char *buf; size_t len, cap; int err; } shmkvgo_acc;

static int shmkvgo_list_cb(void *ctx, const void *key, size_t klen, const void *val, size_t vlen,
                           shmkv_kind kind) {
	shmkvgo_acc *a = ctx;
	size_t need = 12 + klen + vlen;
	if (a->cap - a->len < need) {
		size_t ncap = a->cap ? a->cap : 4096;
		while (ncap - a->len < need)
			ncap *= 2;
		unsigned char *nb = realloc(a->buf, ncap);
		if (!nb) {
			a->err = -ENOMEM;
			return 1;
		}
		a->buf = nb;
		a->cap = ncap;
	}
	uint32_t hdr[3] = {(uint32_t)klen, (uint32_t)vlen, (uint32_t)kind};
	memcpy(a->buf + a->len, hdr, sizeof hdr);
	memcpy(a->buf + a->len + 12, key, klen);
	if (vlen)
		memcpy(a->buf + a->len + 12 + klen, val, vlen);
	a->len += need;
	return 0;
}

typedef struct { int rc; unsigned char *buf; size_t len; } shmkvgo_listres;

static shmkvgo_listres shmkvgo_done(shmkvgo_acc *a, int rc) {
	shmkvgo_listres r = {rc, NULL, 0};
	if (a->err)
		r.rc = a->err;
	if (r.rc) {
		free(a->buf);
		return r;
	}
	r.buf = a->buf;
	r.len = a->len;
	return r;
}

static shmkvgo_listres shmkvgo_list(shmkv_db *db, _GoString_ prefix, uint64_t limit, unsigned flags) {
	shmkvgo_acc a = {NULL, 0, 0, 0};
	int rc = shmkv_list(db, _GoStringPtr(prefix), _GoStringLen(prefix), limit, flags,
	                    shmkvgo_list_cb, &a);
	return shmkvgo_done(&a, rc);
}

static shmkvgo_listres shmkvgo_scan(shmkv_db *db, _GoString_ prefix, _GoString_ after, uint64_t limit,
                                    unsigned flags) {
	shmkvgo_acc a = {NULL, 0, 0, 0};
	int rc = shmkv_scan(db, _GoStringPtr(prefix), _GoStringLen(prefix), _GoStringPtr(after),
	                    _GoStringLen(after), limit, flags, shmkvgo_list_cb, &a);
	return shmkvgo_done(&a, rc);
}

static shmkvgo_listres shmkvgo_random_keys(shmkv_db *db, _GoString_ prefix, uint64_t count, int unique) {
	shmkvgo_acc a = {NULL, 0, 0, 0};
	int rc = shmkv_random_keys(db, _GoStringPtr(prefix), _GoStringLen(prefix), count, unique,
	                           shmkvgo_list_cb, &a);
	return shmkvgo_done(&a, rc);
}

static shmkv_info shmkvgo_stat(shmkv_db *db, int *rc) {
	shmkv_info info;
	memset(&info, 0, sizeof info);
	*rc = shmkv_stat(db, &info);
	return info;
}
*/
import "C"

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"unsafe"

	// The C sources, so that editing them rebuilds this package: see there.
	_ "github.com/libshmkv/libshmkv/libshmkv"
)

// Kind is the tag libshmkv keeps with every value.
type Kind int

// Value kinds, as in shmkv.h.
const (
	KindBytes  Kind = C.SHMKV_KIND_BYTES
	KindString Kind = C.SHMKV_KIND_STRING
	KindJSON   Kind = C.SHMKV_KIND_JSON
)

// Backend selects where a store lives.
type Backend int

// Backends, as in shmkv.h.
const (
	BackendDisk   Backend = C.SHMKV_BACKEND_DISK
	BackendMemory Backend = C.SHMKV_BACKEND_MEMORY
)

func (b Backend) String() string {
	if b == BackendMemory {
		return "memory"
	}
	return "disk"
}

// Open flags and the key-tracking tri-state, as in shmkv.h.
const (
	flagReadOnly = C.SHMKV_RDONLY
	flagNoSync   = C.SHMKV_NOSYNC

	trackDefault = C.SHMKV_TRACK_DEFAULT
	trackOff     = C.SHMKV_TRACK_OFF
	trackOn      = C.SHMKV_TRACK_ON

	keyMax      = C.SHMKV_KEY_MAX
	valueMax    = C.SHMKV_VALUE_MAX
	maxSegments = C.SHMKV_SEGMENTS_MAX

	lockTimeoutNone = C.SHMKV_LOCK_TIMEOUT_NONE
)

// Library error codes the shim treats specially.
const (
	codeNotFound = int(C.SHMKV_ENOTFOUND)
	codeBufSize  = int(C.SHMKV_EBUFSIZE)
	codeNotStore = int(C.SHMKV_ENOTSTORE)
	codeVersion  = int(C.SHMKV_EVERSION)
	codeABI      = int(C.SHMKV_EABI)
	codeIncompat = int(C.SHMKV_EINCOMPAT)
	codeKeySize  = int(C.SHMKV_EKEYSIZE)
	codeValSize  = int(C.SHMKV_EVALSIZE)
	codeNotInt   = int(C.SHMKV_ENOTINT)
	codeOverflow = int(C.SHMKV_EOVERFLOW)
	codeFull     = int(C.SHMKV_EFULL)
	codeReadOnly = int(C.SHMKV_EREADONLY)
	codeName     = int(C.SHMKV_ENAME)
	codeSegments = int(C.SHMKV_ESEGMENTS)
	codeReserve  = int(C.SHMKV_ERESERVE)
	codeInval    = int(C.SHMKV_EINVAL)
	codeTimedOut = int(C.SHMKV_ETIMEDOUT)
	codeTooMany  = int(C.SHMKV_ETOOMANY)
	codeHeld     = int(C.SHMKV_EHELD)
	codeStale    = int(C.SHMKV_ESTALE)
	codeNoSpace  = -int(C.ENOSPC)

	errIsDir  = C.EISDIR
	errNotDir = C.ENOTDIR
	errAccess = C.EACCES
	errNoEnt  = C.ENOENT
	errLoop   = C.ELOOP
	errROFS   = C.EROFS
	codeNoMem = -int(C.ENOMEM)
)

// CError is an error code returned by libshmkv.
type CError struct {
	Code int
}

func (e *CError) Error() string {
	return C.GoString(C.shmkv_strerror(C.int(e.Code)))
}

func cerr(rc C.int) error {
	if rc == 0 {
		return nil
	}
	return &CError{Code: int(rc)}
}

// codeOf returns the libshmkv code inside err, or 0.
func codeOf(err error) int {
	var ce *CError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}

// LibraryVersion is the version of the linked libshmkv.
func LibraryVersion() string { return C.GoString(C.shmkv_version()) }

// openParams are the C-level open options.
type openParams struct {
	backend  Backend
	where    string // path (disk) or name (memory)
	track    int    // trackDefault / trackOff / trackOn
	segments uint32
	reserve  uint64
	timeout  uint32 // lock timeout, ms; 0: the library's default
	flags    uint32
}

// storeInfo mirrors shmkv_info.
type storeInfo struct {
	Keys      uint64
	UsedBytes uint64
	FileBytes uint64
	Reserve   uint64
	Segments  uint32
	TrackKeys bool
	Backend   Backend
	Attached  uint32
	// FormatVersion is the store's on-file format version.
	FormatVersion uint32
}

// db is one libshmkv handle. All methods are safe for concurrent use: the
// library takes its locks inside each call. Closing while other goroutines
// still call is not; the registry guarantees it never happens.
type db struct {
	p *C.shmkv_db
}

// some is a one-byte array whose address stands in for an empty value, so
// that C never sees a NULL pointer for "zero bytes".
var some [1]byte

func bytesPtr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return unsafe.Pointer(&some[0])
	}
	return unsafe.Pointer(unsafe.SliceData(b))
}

func openDB(p openParams) (*db, error) {
	var opts C.shmkv_options
	opts.backend = C.shmkv_backend(p.backend)
	opts.track_keys = C.int(p.track)
	opts.segments = C.uint32_t(p.segments)
	opts.reserve = C.uint64_t(p.reserve)
	opts.lock_timeout_ms = C.uint32_t(p.timeout)
	opts.flags = C.uint32_t(p.flags)
	// Never NULL: the library would take NULL for its default store, and
	// an empty name or path must be refused, not replaced.
	where := C.CString(p.where)
	defer C.free(unsafe.Pointer(where))
	var h *C.shmkv_db
	if rc := C.shmkv_open(where, &opts, &h); rc != 0 {
		return nil, cerr(rc)
	}
	return &db{p: h}, nil
}

func (d *db) close() error {
	rc := C.shmkv_close(d.p)
	d.p = nil
	return cerr(rc)
}

func (d *db) ordered(minKeys uint64) error {
	info, err := d.stat()
	if err != nil || info.TrackKeys || info.Keys < minKeys {
		return err
	}
	return cerr(C.shmkv_tracking_enable(d.p))
}

func (d *db) stat() (storeInfo, error) {
	var rc C.int
	info := C.shmkvgo_stat(d.p, &rc)
	if rc != 0 {
		return storeInfo{}, cerr(rc)
	}
	return storeInfo{
		Keys:      uint64(info.keys),
		UsedBytes: uint64(info.used_bytes),
		FileBytes: uint64(info.file_bytes),
		Reserve:   uint64(info.reserve_bytes),
		Segments:  uint32(info.segments),
		TrackKeys: info.track_keys != 0,
		Backend:   Backend(info.backend),
		Attached:  uint32(info.attached),

		FormatVersion: uint32(info.format_version),
	}, nil
}

// get reads the value of key into scratch and hands it back in a slice of
// its own, of its exact size: a guess of the size is neither allocated
// (and zeroed) per read nor kept alive behind a small value a script holds.
// A value larger than scratch is read again into a slice of its size.
func (d *db) get(key string, scratch []byte) ([]byte, Kind, error) {
	buf := scratch
	for {
		r := C.shmkvgo_get(d.p, key, bytesPtr(buf), C.size_t(len(buf)))
		switch int(r.rc) {
		case 0:
			return ownCopy(buf, scratch, int(r.vlen)), Kind(r.kind), nil
		case codeBufSize:
			buf = make([]byte, int(r.vlen))
		default:
			return nil, 0, cerr(r.rc)
		}
	}
}

// ownCopy is buf[:n] in a slice of its own when buf is the caller's scratch.
func ownCopy(buf, scratch []byte, n int) []byte {
	if len(buf) > 0 && len(scratch) > 0 && &buf[0] == &scratch[0] {
		return bytes.Clone(buf[:n])
	}
	return buf[:n]
}

func (d *db) set(key string, val []byte, kind Kind) error {
	return cerr(C.shmkvgo_set(d.p, key, bytesPtr(val), C.size_t(len(val)), C.int(kind)))
}

// del deletes key and reports whether it was there.
func (d *db) del(key string) (bool, error) {
	r := C.shmkvgo_delete(d.p, key)
	return r.flag != 0, cerr(r.rc)
}

func (d *db) exists(key string) (bool, error) {
	rc := C.shmkvgo_exists(d.p, key)
	if rc < 0 {
		return false, cerr(rc)
	}
	return rc == 1, nil
}

// size counts the keys exactly, or fails (SHMKV_ETIMEDOUT) when a stopped
// process holds a segment lock past the lock timeout.
func (d *db) size() (uint64, error) { return d.count("") }

func (d *db) clear() error { return cerr(C.shmkv_clear(d.p)) }

func (d *db) rebuildIndex() error { return cerr(C.shmkv_rebuild_index(d.p)) }

func (d *db) incr(key string, delta int64, kind Kind) (int64, error) {
	r := C.shmkvgo_incr(d.p, key, C.int64_t(delta), C.int(kind))
	return int64(r.num), cerr(r.rc)
}

// cas replaces the value with val if the stored bytes equal expect, or, when
// expect is nil, if the key is absent.
func (d *db) cas(key string, expect []byte, val []byte, kind Kind) (bool, error) {
	var ep unsafe.Pointer
	if expect != nil {
		ep = bytesPtr(expect)
	}
	r := C.shmkvgo_cas(d.p, key, ep, C.size_t(len(expect)), bytesPtr(val), C.size_t(len(val)), C.int(kind))
	return r.flag != 0, cerr(r.rc)
}

func (d *db) setIfAbsent(key string, val []byte, kind Kind) (bool, error) {
	r := C.shmkvgo_set_if_absent(d.p, key, bytesPtr(val), C.size_t(len(val)), C.int(kind))
	return r.flag != 0, cerr(r.rc)
}

// getOrSet returns the stored value (loaded true) or stores val and returns
// it (loaded false).
func (d *db) getOrSet(key string, val []byte, kind Kind, scratch []byte) ([]byte, Kind, bool, error) {
	return d.exchange(0, key, val, kind, scratch)
}

// swap stores val and returns the previous value (loaded false: there was
// none, and no bytes are returned).
func (d *db) swap(key string, val []byte, kind Kind, scratch []byte) ([]byte, Kind, bool, error) {
	b, k, loaded, err := d.exchange(1, key, val, kind, scratch)
	if !loaded {
		return nil, 0, false, err
	}
	return b, k, true, err
}

func (d *db) exchange(swap C.int, key string, val []byte, kind Kind, scratch []byte) ([]byte, Kind, bool, error) {
	buf := scratch
	for {
		r := C.shmkvgo_exchange(swap, d.p, key, bytesPtr(val), C.size_t(len(val)), C.int(kind),
			bytesPtr(buf), C.size_t(len(buf)))
		switch int(r.rc) {
		case 0:
			return ownCopy(buf, scratch, int(r.vlen)), Kind(r.kind), r.flag != 0, nil
		case codeBufSize:
			buf = make([]byte, int(r.vlen))
		default:
			return nil, 0, false, cerr(r.rc)
		}
	}
}

func (d *db) compareAndDelete(key string, expect []byte) (bool, error) {
	r := C.shmkvgo_compare_and_delete(d.p, key, bytesPtr(expect), C.size_t(len(expect)))
	return r.flag != 0, cerr(r.rc)
}

// randomKey returns a uniformly chosen key starting with prefix; found is
// false when none matches. scratch, when it holds at least keyMax bytes, is
// used as the destination so that no buffer is allocated per call. The
// buffer must fit any key: retrying after SHMKV_EBUFSIZE would draw a new
// key and bias the choice against long keys.
func (d *db) randomKey(prefix string, scratch []byte) (string, bool, error) {
	if len(scratch) < keyMax {
		scratch = make([]byte, keyMax)
	}
	r := C.shmkvgo_random_key(d.p, prefix, bytesPtr(scratch), C.size_t(len(scratch)))
	switch int(r.rc) {
	case 0:
		return string(scratch[:r.vlen]), true, nil
	case codeNotFound:
		return "", false, nil
	default:
		return "", false, cerr(r.rc)
	}
}

// entry is one listed key and its value.
type entry struct {
	Key   string
	Value []byte
	Kind  Kind
}

// list returns the entries whose keys start with prefix, in key order, at
// most limit of them (0: all).
func (d *db) list(prefix string, limit uint64) ([]entry, error) {
	return records(C.shmkvgo_list(d.p, prefix, C.uint64_t(limit), 0))
}

// scan returns, in key order, at most limit (0: all) entries whose keys
// start with prefix and sort after `after` (values too unless keysOnly).
func (d *db) scan(prefix, after string, limit uint64, keysOnly bool) ([]entry, error) {
	var flags C.unsigned
	if keysOnly {
		flags = C.SHMKV_LIST_KEYS_ONLY
	}
	return records(C.shmkvgo_scan(d.p, prefix, after, C.uint64_t(limit), flags))
}

// randomKeys draws n keys with the prefix, uniformly; unique: without
// replacement (every match when fewer match).
func (d *db) randomKeys(prefix string, n uint64, unique bool) ([]string, error) {
	if !unique && n > 64 && prefix != "" {
		// Without the index each draw with replacement may cost a pass over
		// the store when few keys match: take the matches in one pass and
		// draw from them instead (still uniform, each draw on its own).
		if info, err := d.stat(); err == nil && !info.TrackKeys {
			if m, err := d.count(prefix); err == nil && m <= 1_000_000 {
				all, err := d.randomKeys(prefix, max(m, 1), true)
				if err != nil || len(all) == 0 {
					return nil, err
				}
				out := make([]string, n)
				for i := range out {
					out[i] = all[rand.IntN(len(all))]
				}
				return out, nil
			}
		}
	}
	u := C.int(0)
	if unique {
		u = 1
	}
	es, err := records(C.shmkvgo_random_keys(d.p, prefix, C.uint64_t(n), u))
	keys := make([]string, len(es))
	for i, e := range es {
		keys[i] = e.Key
	}
	return keys, err
}

// records decodes what the accumulator of list, scan and randomKeys
// collected, and frees it.
func records(r C.shmkvgo_listres) ([]entry, error) {
	if r.rc != 0 {
		return nil, cerr(r.rc)
	}
	if r.buf == nil {
		return nil, nil
	}
	defer C.free(unsafe.Pointer(r.buf))
	// One copy of the whole result into Go memory; keys and values are
	// slices of it.
	all := make([]byte, int(r.len))
	copy(all, unsafe.Slice((*byte)(unsafe.Pointer(r.buf)), int(r.len)))
	var out []entry
	for off := 0; off < len(all); {
		if len(all)-off < 12 {
			return nil, fmt.Errorf("list: truncated record")
		}
		klen := int(binary.NativeEndian.Uint32(all[off:]))
		vlen := int(binary.NativeEndian.Uint32(all[off+4:]))
		kind := Kind(binary.NativeEndian.Uint32(all[off+8:]))
		off += 12
		if len(all)-off < klen+vlen {
			return nil, fmt.Errorf("list: truncated record")
		}
		kb := all[off : off+klen]
		vb := all[off+klen : off+klen+vlen : off+klen+vlen]
		off += klen + vlen
		out = append(out, entry{Key: unsafe.String(unsafe.SliceData(kb), klen), Value: vb, Kind: kind})
	}
	return out, nil
}
