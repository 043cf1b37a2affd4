//go:build cgo

package kv

/*
#include <stdint.h>
#include <string.h>
#include "shmkv.h"

// Claims: one library call per wrapper call, results returned by value (as
// in store.go). An empty Go string may have a NULL pointer: keys, prefixes
// and owners of length 0 are handed over as "" instead, so that the library
// judges their length, not a NULL.

static const void *shmkvgo_ptr(_GoString_ s) {
	return _GoStringLen(s) ? (const void *)_GoStringPtr(s) : (const void *)"";
}

typedef struct {
	int rc;
	int kind;
	uint64_t token;
	int64_t expires_ms;
	size_t klen;
	size_t vlen;
} shmkvgo_claimres;

static shmkv_lease shmkvgo_lease(_GoString_ owner, uint64_t ttl) {
	shmkv_lease l;
	memset(&l, 0, sizeof l);
	if (_GoStringLen(owner)) {
		l.owner = _GoStringPtr(owner);
		l.olen = _GoStringLen(owner);
	}
	l.ttl_ms = ttl;
	return l;
}

static shmkvgo_claimres shmkvgo_claim_key(shmkv_db *db, _GoString_ key, _GoString_ owner, uint64_t ttl,
                                          void *vbuf, size_t cap) {
	shmkvgo_claimres r;
	memset(&r, 0, sizeof r);
	shmkv_lease l = shmkvgo_lease(owner, ttl);
	shmkv_claim c;
	memset(&c, 0, sizeof c);
	shmkv_kind k = SHMKV_KIND_BYTES;
	r.rc = shmkv_claim_key(db, shmkvgo_ptr(key), _GoStringLen(key), &l, &c, vbuf, cap, &r.vlen, &k);
	r.kind = (int)k;
	r.token = c.token;
	r.expires_ms = c.expires_ms;
	return r;
}

static shmkvgo_claimres shmkvgo_claim_random(shmkv_db *db, _GoString_ prefix, _GoString_ owner, uint64_t ttl,
                                             void *kbuf, size_t kcap, void *vbuf, size_t cap) {
	shmkvgo_claimres r;
	memset(&r, 0, sizeof r);
	shmkv_lease l = shmkvgo_lease(owner, ttl);
	shmkv_claim c;
	memset(&c, 0, sizeof c);
	shmkv_kind k = SHMKV_KIND_BYTES;
	r.rc = shmkv_claim_random(db, shmkvgo_ptr(prefix), _GoStringLen(prefix), &l, kbuf, kcap, &r.klen, &c,
	                          vbuf, cap, &r.vlen, &k);
	r.kind = (int)k;
	r.token = c.token;
	r.expires_ms = c.expires_ms;
	return r;
}

static shmkvgo_claimres shmkvgo_pop_random(shmkv_db *db, _GoString_ prefix, void *kbuf, size_t kcap,
                                           void *vbuf, size_t cap) {
	shmkvgo_claimres r;
	memset(&r, 0, sizeof r);
	shmkv_kind k = SHMKV_KIND_BYTES;
	r.rc = shmkv_pop_random(db, shmkvgo_ptr(prefix), _GoStringLen(prefix), kbuf, kcap, &r.klen, vbuf, cap,
	                        &r.vlen, &k);
	r.kind = (int)k;
	return r;
}

// op 0: release, 1: complete keeping the key, 2: complete deleting it.
static int shmkvgo_claim_end(shmkv_db *db, _GoString_ key, uint64_t token, int op) {
	if (op == 0)
		return shmkv_claim_release(db, shmkvgo_ptr(key), _GoStringLen(key), token);
	return shmkv_claim_complete(db, shmkvgo_ptr(key), _GoStringLen(key), token, op == 2);
}

static shmkvgo_claimres shmkvgo_claim_renew(shmkv_db *db, _GoString_ key, uint64_t token, uint64_t ttl) {
	shmkvgo_claimres r;
	memset(&r, 0, sizeof r);
	shmkv_lease l;
	memset(&l, 0, sizeof l);
	l.ttl_ms = ttl;
	shmkv_claim c;
	memset(&c, 0, sizeof c);
	r.rc = shmkv_claim_renew(db, shmkvgo_ptr(key), _GoStringLen(key), token, &l, &c);
	r.token = c.token;
	r.expires_ms = c.expires_ms;
	return r;
}

typedef struct { int rc; uint64_t live, expired; } shmkvgo_countres;

static shmkvgo_countres shmkvgo_claim_count(shmkv_db *db, _GoString_ prefix) {
	shmkvgo_countres r = {0, 0, 0};
	r.rc = shmkv_claim_count(db, shmkvgo_ptr(prefix), _GoStringLen(prefix), &r.live, &r.expired);
	return r;
}
*/
import "C"

// Claim limits, as in shmkv.h.
const (
	ownerMax   = C.SHMKV_OWNER_MAX
	ttlDefault = C.SHMKV_TTL_DEFAULT_MS
	ttlMax     = C.SHMKV_TTL_MAX_MS
)

// claimStore is what the claim methods need of a store, beside
// backendStore. Values come back as fresh slices (copied out of buf's
// scratch space); keys as strings.
type claimStore interface {
	// claimKey claims key; ok false: no such key, or another live claim
	// holds it.
	claimKey(key string, l lease, buf *claimBuf) (c claimed, ok bool, err error)
	// claimRandom claims one claimable key with the prefix; ok false: none.
	claimRandom(prefix string, l lease, buf *claimBuf) (c claimed, ok bool, err error)
	// popRandom removes and returns one claimable key with the prefix.
	popRandom(prefix string, buf *claimBuf) (e entry, ok bool, err error)
	// endClaim releases (complete false) or completes the live claim
	// token on key; ok false: no such live claim.
	endClaim(key string, token uint64, complete, deleteKey bool) (ok bool, err error)
	// renewClaim extends the live claim token on key to ttl ms from now.
	renewClaim(key string, token uint64, ttl uint64) (expiresMs int64, ok bool, err error)
	// claimCount counts the claims on keys with the prefix.
	claimCount(prefix string) (live, expired uint64, err error)
}

var _ claimStore = (*db)(nil)

// lease is what a claim asks for: an owner label ("" for none) and a
// length in ms.
type lease struct {
	owner string
	ttl   uint64
}

// claimed is one claim taken, with the key's value as it was claimed.
type claimed struct {
	Key     string
	Token   uint64
	Expires int64 // Unix ms
	Value   []byte
	Kind    Kind
}

// claimBuf is a handle's scratch space for the claim calls: a key buffer
// that fits any key (a key drawn at random must fit the first time: asking
// again would draw another), and a value buffer grown to the largest value
// met so far.
type claimBuf struct {
	key, val []byte
}

func (b *claimBuf) ready(minVal int) {
	if len(b.key) < keyMax {
		b.key = make([]byte, keyMax)
	}
	if len(b.val) < minVal {
		b.val = make([]byte, minVal)
	}
}

// out copies a value out of the scratch buffer.
func (b *claimBuf) out(n C.size_t) []byte {
	v := make([]byte, int(n))
	copy(v, b.val)
	return v
}

// claimKey retries with a value buffer of the size the library asked for:
// nothing was claimed by the call that asked.
func (d *db) claimKey(key string, l lease, buf *claimBuf) (claimed, bool, error) {
	buf.ready(minHint)
	for {
		r := C.shmkvgo_claim_key(d.p, key, l.owner, C.uint64_t(l.ttl), bytesPtr(buf.val), C.size_t(len(buf.val)))
		switch int(r.rc) {
		case 0:
			return claimed{Key: key, Token: uint64(r.token), Expires: int64(r.expires_ms),
				Value: buf.out(r.vlen), Kind: Kind(r.kind)}, true, nil
		case codeBufSize:
			buf.val = make([]byte, int(r.vlen))
		case codeNotFound, codeHeld:
			return claimed{}, false, nil
		default:
			return claimed{}, false, cerr(r.rc)
		}
	}
}

// claimRandom draws a key. A value larger than the buffer makes the
// library claim nothing and say how large it is; the draw is then made
// again with a buffer that size, so a value larger than any this handle met
// before weighs less in that one call's draw (later calls keep the larger
// buffer).
func (d *db) claimRandom(prefix string, l lease, buf *claimBuf) (claimed, bool, error) {
	buf.ready(minHint)
	for {
		r := C.shmkvgo_claim_random(d.p, prefix, l.owner, C.uint64_t(l.ttl), bytesPtr(buf.key), C.size_t(len(buf.key)),
			bytesPtr(buf.val), C.size_t(len(buf.val)))
		switch int(r.rc) {
		case 0:
			return claimed{Key: string(buf.key[:r.klen]), Token: uint64(r.token), Expires: int64(r.expires_ms),
				Value: buf.out(r.vlen), Kind: Kind(r.kind)}, true, nil
		case codeBufSize:
			if int(r.vlen) <= len(buf.val) {
				return claimed{}, false, cerr(r.rc) // the key buffer fits every key: never
			}
			buf.val = make([]byte, int(r.vlen))
		case codeNotFound:
			return claimed{}, false, nil
		default:
			return claimed{}, false, cerr(r.rc)
		}
	}
}

// popRandom: as claimRandom, for a pop.
func (d *db) popRandom(prefix string, buf *claimBuf) (entry, bool, error) {
	buf.ready(minHint)
	for {
		r := C.shmkvgo_pop_random(d.p, prefix, bytesPtr(buf.key), C.size_t(len(buf.key)),
			bytesPtr(buf.val), C.size_t(len(buf.val)))
		switch int(r.rc) {
		case 0:
			return entry{Key: string(buf.key[:r.klen]), Value: buf.out(r.vlen), Kind: Kind(r.kind)}, true, nil
		case codeBufSize:
			if int(r.vlen) <= len(buf.val) {
				return entry{}, false, cerr(r.rc)
			}
			buf.val = make([]byte, int(r.vlen))
		case codeNotFound:
			return entry{}, false, nil
		default:
			return entry{}, false, cerr(r.rc)
		}
	}
}

// stale reports whether rc says "no live claim with that token": the
// token is not the key's live claim's, or the key is gone.
func stale(rc C.int) bool { return int(rc) == codeStale || int(rc) == codeNotFound }

func (d *db) endClaim(key string, token uint64, complete, deleteKey bool) (bool, error) {
	op := C.int(0)
	if complete {
		op = 1
		if deleteKey {
			op = 2
		}
	}
	rc := C.shmkvgo_claim_end(d.p, key, C.uint64_t(token), op)
	if stale(rc) {
		return false, nil
	}
	return rc == 0, cerr(rc)
}

func (d *db) renewClaim(key string, token uint64, ttl uint64) (int64, bool, error) {
	r := C.shmkvgo_claim_renew(d.p, key, C.uint64_t(token), C.uint64_t(ttl))
	if stale(r.rc) {
		return 0, false, nil
	}
	if r.rc != 0 {
		return 0, false, cerr(r.rc)
	}
	return int64(r.expires_ms), true, nil
}

func (d *db) claimCount(prefix string) (uint64, uint64, error) {
	r := C.shmkvgo_claim_count(d.p, prefix)
	return uint64(r.live), uint64(r.expired), cerr(r.rc)
}
