//go:build cgo

package kv

/*
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include "shmkv.h"

// Batches go to C as flat arrays: keys (and values) concatenated, with
// their lengths beside them. No Go pointer is stored in C memory; the item
// array that points into them lives for the call only.

typedef struct { int32_t rc; int32_t kind; uint64_t off; uint64_t vlen; } shmkvgo_got;

static shmkv_item *shmkvgo_items(const unsigned char *keys, const uint32_t *klens, size_t n) {
	shmkv_item *it = calloc(n ? n : 1, sizeof *it);
	if (!it)
		return NULL;
	size_t off = 0;
	for (size_t i = 0; i < n; i++) {
		it[i].key = keys + off;
		it[i].klen = klens[i];
		off += klens[i];
	}
	return it;
}

static int shmkvgo_get_many(shmkv_db *db, const unsigned char *keys, const uint32_t *klens, size_t n,
                            unsigned char *buf, size_t cap, shmkvgo_got *got, size_t *need, size_t *bad) {
	shmkv_item *it = shmkvgo_items(keys, klens, n);
	if (!it)
		return -ENOMEM;
	int rc = shmkv_get_many(db, it, n, buf, cap, need, bad);
	if (rc == 0) {
		for (size_t i = 0; i < n; i++) {
			got[i].rc = it[i].rc;
			got[i].kind = (int32_t)it[i].kind;
			got[i].vlen = it[i].vlen;
			got[i].off = it[i].rc == 0 ? (uint64_t)((const unsigned char *)it[i].val - buf) : 0;
		}
	}
	free(it);
	return rc;
}

static int shmkvgo_set_many(shmkv_db *db, const unsigned char *keys, const uint32_t *klens,
                            const unsigned char *vals, const uint64_t *vlens, const int32_t *kinds,
                            size_t n, size_t *bad) {
	shmkv_item *it = shmkvgo_items(keys, klens, n);
	if (!it)
		return -ENOMEM;
	size_t off = 0;
	for (size_t i = 0; i < n; i++) {
		it[i].val = vals + off;
		it[i].vlen = vlens[i];
		it[i].kind = (shmkv_kind)kinds[i];
		off += vlens[i];
	}
	int rc = shmkv_set_many(db, it, n, bad);
	free(it);
	return rc;
}

static int shmkvgo_delete_many(shmkv_db *db, const unsigned char *keys, const uint32_t *klens, size_t n,
                               int32_t *existed, uint64_t *deleted, size_t *bad) {
	shmkv_item *it = shmkvgo_items(keys, klens, n);
	if (!it)
		return -ENOMEM;
	int rc = shmkv_delete_many(db, it, n, deleted, bad);
	if (rc == 0)
		for (size_t i = 0; i < n; i++)
			existed[i] = it[i].rc;
	free(it);
	return rc;
}
*/
import "C"

import (
	"bytes"
	"unsafe"
)

// batchError is a library error that names the entry it is about.
type batchError struct {
	CError
	Index int
}

func batchErr(rc C.int, bad C.size_t) error {
	if rc == 0 {
		return nil
	}
	code := int(rc)
	if code == codeKeySize || code == codeValSize || code == codeInval {
		return &batchError{CError: CError{Code: code}, Index: int(bad)}
	}
	return &CError{Code: code}
}

// flatKeys concatenates keys for C. The lengths fit uint32: longer keys
// are refused by the library, and the shim never sends one (see getMany).
func flatKeys(keys []string) ([]byte, []uint32) {
	n := 0
	for _, k := range keys {
		n += len(k)
	}
	flat := make([]byte, 0, max(n, 1))
	lens := make([]uint32, len(keys)+1) // never empty: C gets a valid pointer
	for i, k := range keys {
		flat = append(flat, k...)
		lens[i] = uint32(min(len(k), 1<<31))
	}
	return flat[:max(n, 1)], lens
}

func u8(b []byte) *C.uchar { return (*C.uchar)(unsafe.Pointer(unsafe.SliceData(b))) }

// found is one entry of a getMany: the value when Found.
type found struct {
	Found bool
	Value []byte
	Kind  Kind
}

// getMany reads keys as of one instant, into scratch (grown to what the
// library asks for when the values do not fit); the values come back in one
// slice of their own.
func (d *db) getMany(keys []string, scratch []byte) ([]found, []byte, error) {
	if len(keys) == 0 {
		return nil, scratch, nil
	}
	flat, lens := flatKeys(keys)
	got := make([]C.shmkvgo_got, len(keys))
	// The values land in scratch; when they do not fit, the library says
	// how much they need and the call is made again with that.
	buf := scratch
	if len(buf) == 0 {
		buf = make([]byte, 64)
	}
	for {
		var need, bad C.size_t
		rc := C.shmkvgo_get_many(d.p, u8(flat), (*C.uint32_t)(unsafe.Pointer(&lens[0])), C.size_t(len(keys)),
			u8(buf), C.size_t(len(buf)), &got[0], &need, &bad)
		if int(rc) == codeBufSize {
			buf = make([]byte, int(need))
			continue
		}
		if rc != 0 {
			return nil, buf, batchErr(rc, bad)
		}
		// One slice of the bytes used holds every value: the scratch is
		// the next call's.
		used := 0
		for _, g := range got {
			if g.rc == 0 {
				used = max(used, int(g.off+g.vlen))
			}
		}
		vals := bytes.Clone(buf[:used])
		out := make([]found, len(keys))
		for i, g := range got {
			if g.rc == 0 {
				off := int(g.off)
				out[i] = found{Found: true, Value: vals[off : off+int(g.vlen) : off+int(g.vlen)], Kind: Kind(g.kind)}
			}
		}
		return out, buf, nil
	}
}

// setMany stores every pair or none.
func (d *db) setMany(keys []string, vals [][]byte, kinds []Kind) error {
	flat, lens := flatKeys(keys)
	vn := 0
	for _, v := range vals {
		vn += len(v)
	}
	vflat := make([]byte, 0, max(vn, 1))
	vlens := make([]uint64, len(vals)+1)
	ks := make([]int32, len(kinds)+1)
	for i, v := range vals {
		vflat = append(vflat, v...)
		vlens[i] = uint64(len(v))
		ks[i] = int32(kinds[i])
	}
	vflat = vflat[:max(vn, 1)]
	var bad C.size_t
	rc := C.shmkvgo_set_many(d.p, u8(flat), (*C.uint32_t)(unsafe.Pointer(&lens[0])), u8(vflat),
		(*C.uint64_t)(unsafe.Pointer(&vlens[0])), (*C.int32_t)(unsafe.Pointer(&ks[0])), C.size_t(len(keys)), &bad)
	return batchErr(rc, bad)
}

// deleteMany deletes every key or none and says how many were there (a key
// given twice is deleted once).
func (d *db) deleteMany(keys []string) (uint64, error) {
	flat, lens := flatKeys(keys)
	ex := make([]int32, len(keys)+1)
	var deleted C.uint64_t
	var bad C.size_t
	rc := C.shmkvgo_delete_many(d.p, u8(flat), (*C.uint32_t)(unsafe.Pointer(&lens[0])), C.size_t(len(keys)),
		(*C.int32_t)(unsafe.Pointer(&ex[0])), &deleted, &bad)
	return uint64(deleted), batchErr(rc, bad)
}

// deletePrefix deletes at most limit keys (0: all) that start with prefix.
func (d *db) deletePrefix(prefix string, limit uint64) (uint64, error) {
	var n C.uint64_t
	p := []byte(prefix)
	if len(p) == 0 {
		p = []byte{0}
	}
	rc := C.shmkv_delete_prefix(d.p, unsafe.Pointer(unsafe.SliceData(p)), C.size_t(len(prefix)), C.uint64_t(limit), &n)
	return uint64(n), cerr(rc)
}

// count counts the keys that start with prefix.
func (d *db) count(prefix string) (uint64, error) {
	var n C.uint64_t
	p := []byte(prefix)
	if len(p) == 0 {
		p = []byte{0}
	}
	rc := C.shmkv_count(d.p, unsafe.Pointer(unsafe.SliceData(p)), C.size_t(len(prefix)), &n)
	return uint64(n), cerr(rc)
}
