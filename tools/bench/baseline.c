/*
 * baseline.c - see baseline.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "baseline.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

/* One slot = one cache line: tag, lengths, key, value. */
typedef struct bl_slot {
    uint32_t tag; /* 0: empty; otherwise high hash bits | 1 */
    uint16_t klen;
    uint16_t vlen;
    unsigned char key[BL_KEY_MAX];
    unsigned char val[BL_VAL_MAX];
} bl_slot;

_Static_assert(sizeof(bl_slot) == 64, "one slot per cache line");

#define BL_HDR 128u

struct bl_table {
    pthread_mutex_t mu;
    uint64_t mask;
    uint64_t count;
    size_t maplen;
};

_Static_assert(sizeof(struct bl_table) <= BL_HDR, "header fits before the slots");

static inline bl_slot *bl_slots(bl_table *t)
{
    return (bl_slot *)((unsigned char *)t + BL_HDR);
}

/* A small multiply-xorshift hash over 8-byte words. The last partial word
 * is read with whole-word loads (the key's last 8 bytes, shifted; or two
 * overlapping 4-byte loads), not byte by byte. */
static inline uint64_t bl_hash(const void *p, size_t n)
{
    const unsigned char *s = p;
    const size_t len = n;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
        s += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w;
        if (len >= 8) {
            memcpy(&w, s + n - 8, 8);
            w >>= (8 - n) * 8;
        } else if (n >= 4) {
            uint32_t a, b;
            memcpy(&a, s, 4);
            memcpy(&b, s + n - 4, 4);
            w = (uint64_t)a ^ ((uint64_t)b << 32);
        } else {
            w = (uint64_t)s[0] | ((uint64_t)s[n / 2] << 8) | ((uint64_t)s[n - 1] << 16);
        }
        h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

static int bl_lock(bl_table *t)
{
    int rc = pthread_mutex_lock(&t->mu);
    if (rc == EOWNERDEAD) {
        /* The table is only ever changed by whole-field copies under the
         * lock; a dead holder can at worst leave one value half copied. */
        pthread_mutex_consistent(&t->mu);
        rc = 0;
    }
    return rc ? BL_LOCK : BL_OK;
}

static inline void bl_unlock(bl_table *t)
{
    pthread_mutex_unlock(&t->mu);
}

/* The slot holding key, or the empty slot where it would go. NULL only when
 * the table is completely full (never, at load factor <= 1/2). */
static inline bl_slot *bl_probe(bl_table *t, uint64_t h, uint32_t tag,
                                const void *key, size_t klen)
{
    bl_slot *slots = bl_slots(t);
    uint64_t i = h & t->mask;
    for (uint64_t n = 0; n <= t->mask; n++) {
        bl_slot *s = &slots[i];
        if (s->tag == 0)
            return s;
        if (s->tag == tag && s->klen == klen && memcmp(s->key, key, klen) == 0)
            return s;
        i = (i + 1) & t->mask;
    }
    return NULL;
}

bl_table *bl_create(uint64_t nkeys)
{
    uint64_t cap = 16;
    while (cap < 2 * nkeys)
        cap <<= 1;
    size_t len = BL_HDR + (size_t)cap * sizeof(bl_slot);
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    bl_table *t = p;
    pthread_mutexattr_t a;
    if (pthread_mutexattr_init(&a) != 0)
        goto fail;
    int rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (rc == 0)
        rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (rc == 0)
        rc = pthread_mutex_init(&t->mu, &a);
    pthread_mutexattr_destroy(&a);
    if (rc != 0)
        goto fail;
    t->mask = cap - 1;
    t->count = 0;
    t->maplen = len;
    return t;
fail:
    munmap(p, len);
    return NULL;
}

void bl_destroy(bl_table *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->mu);
    munmap(t, t->maplen);
}

int bl_set(bl_table *t, const void *key, size_t klen, const void *val, size_t vlen)
{
    if (klen == 0 || klen > BL_KEY_MAX || vlen > BL_VAL_MAX)
        return BL_TOOBIG;
    uint64_t h = bl_hash(key, klen);
    uint32_t tag = (uint32_t)(h >> 32) | 1u;
    int rc = bl_lock(t);
    if (rc)
        return rc;
    bl_slot *s = bl_probe(t, h, tag, key, klen);
    if (!s || (s->tag == 0 && 2 * (t->count + 1) > t->mask + 1)) {
        bl_unlock(t);
        return BL_FULL;
    }
    if (s->tag == 0) {
        memcpy(s->key, key, klen);
        s->klen = (uint16_t)klen;
        s->tag = tag;
        t->count++;
    }
    memcpy(s->val, val, vlen);
    s->vlen = (uint16_t)vlen;
    bl_unlock(t);
    return BL_OK;
}

int bl_get(bl_table *t, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen)
{
    if (klen == 0 || klen > BL_KEY_MAX)
        return BL_NOTFOUND;
    uint64_t h = bl_hash(key, klen);
    uint32_t tag = (uint32_t)(h >> 32) | 1u;
    int rc = bl_lock(t);
    if (rc)
        return rc;
    bl_slot *s = bl_probe(t, h, tag, key, klen);
    if (!s || s->tag == 0) {
        bl_unlock(t);
        return BL_NOTFOUND;
    }
    size_t n = s->vlen;
    *vlen = n;
    if (n > cap) {
        bl_unlock(t);
        return BL_TOOBIG;
    }
    memcpy(buf, s->val, n);
    bl_unlock(t);
    return BL_OK;
}

uint64_t bl_count(const bl_table *t)
{
    return t->count;
}
