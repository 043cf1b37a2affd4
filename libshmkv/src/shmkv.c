/*
 * shmkv.c - the public calls on the store as a whole: size, count, clear,
 * list, rebuild_index, tracking_enable, stat, and the error strings. The
 * single-key operations are in ops.c, the multi-key ones in batch*.c,
 * scan and random_keys in scan.c, random_key in sample.c.
 */
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>

#define STR_(x) #x
#define STR(x) STR_(x)

const char *shmkv_version(void)
{
    return STR(SHMKV_VERSION_MAJOR) "." STR(SHMKV_VERSION_MINOR) "." STR(SHMKV_VERSION_PATCH);
}

const char *shmkv_strerror(int err)
{
    switch (err) {
    case 0: return "success";
    case SHMKV_ENOTFOUND: return "key not found";
    case SHMKV_EBUFSIZE: return "buffer too small for the value";
    case SHMKV_ENOTSTORE: return "not a shmkv store (wrong magic number; for example a BoltDB file left by xk6-kv)";
    case SHMKV_EVERSION: return "store was written in another format version";
    case SHMKV_EABI: return "store was created on an incompatible platform (endianness, word or mutex size)";
    case SHMKV_EINCOMPAT: return "open options conflict with the existing store's (segments or reserve; or key tracking asked through a read-only handle)";
    case SHMKV_EKEYSIZE: return "key is empty or longer than " STR(SHMKV_KEY_MAX) " bytes";
    case SHMKV_EVALSIZE: return "value is larger than 64 MiB";
    case SHMKV_ENOTINT: return "stored value is not a decimal 64-bit integer";
    case SHMKV_EOVERFLOW: return "increment overflows a 64-bit integer";
    case SHMKV_EFULL: return "store reached its reserved size (open option reserve)";
    case SHMKV_EREADONLY: return "store handle is read-only";
    case SHMKV_ENAME: return "invalid memory store name (1-200 characters from A-Z a-z 0-9 . _ -)";
    case SHMKV_EINVAL: return "invalid argument or option";
    case SHMKV_ECORRUPT: return "store is truncated or damaged";
    case SHMKV_ELOCK: return "a lock of the store could not be taken or repaired";
    case SHMKV_ETIMEDOUT: return "a lock was held longer than the lock timeout: a stopped or very slow process";
    case SHMKV_ESEGMENTS: return "segments must be a power of two from 1 to 4096";
    case SHMKV_ERESERVE: return "reserve must be from 1 MiB to 64 TiB";
    case SHMKV_EHELD: return "key is held by another live claim";
    case SHMKV_ESTALE: return "no live claim with this token (released, completed, expired or taken over)";
    case SHMKV_ETOOMANY: return "the key index is full (2^32 - 1 keys with trackKeys)";
    case -ENOSPC: return "no space left on the device holding the store (disk or /dev/shm full)";
    default: break;
    }
    if (err < 0 && err > -4096)
        return strerror(-err);
    return "unknown error";
}

/* Returns 0, or the first lock error (the count is then partly read
 * without locks). */
static int count_keys(shmkv_db *db, uint64_t *out)
{
    shmkv__map *m = db->m;
    uint64_t n = 0;
    int err = 0;
    shmkv__call_begin(db);
    if (m->rdonly) {
        /* No lock to take: each count as of one moment (or, where a holder
         * died, the live slots counted), see shmkv__seg_snapshot. */
        for (uint32_t i = 0; i < SHMKV__HDR(m)->nseg; i++) {
            shmkv__seg *s = shmkv__seg_at(m, i);
            uint64_t c = 0;
            int rc = shmkv__seg_snapshot(m, s, NULL, 0, true, NULL, &c);
            if (rc) {
                c = atomic_load_explicit(&s->count, memory_order_relaxed);
                if (!err)
                    err = rc;
            }
            n += c;
        }
        *out = n;
        return err;
    }
    /* Each count is read under its segment lock: a writer killed between
     * publishing a slot and updating the count leaves the count off by one
     * until the segment is repaired, and taking the lock is what repairs it. */
    for (uint32_t i = 0; i < SHMKV__HDR(m)->nseg; i++) {
        shmkv__seg *s = shmkv__seg_at(m, i);
        int rc = shmkv__seg_lock(m, s);
        n += atomic_load_explicit(&s->count, memory_order_relaxed);
        if (!rc)
            shmkv__seg_unlock(s);
        else if (!err)
            err = rc;
    }
    *out = n;
    return err;
}

uint64_t shmkv_size(shmkv_db *db)
{
    uint64_t n = 0;
    if (shmkv__db_usable(db))
        (void)count_keys(db, &n);
    return n;
}

int shmkv_clear(shmkv_db *db)
{
    if (!shmkv__db_usable(db))
        return SHMKV_EINVAL;
    if (db->flags & SHMKV_RDONLY)
        return SHMKV_EREADONLY;
    shmkv__map *m = db->m;
    shmkv__call_begin(db);
    int rc = shmkv__lock_all(m);
    if (rc)
        return rc;
    bool track = SHMKV__HDR(m)->track_keys; /* under the locks: it may just have been turned on */
    if (track && (rc = shmkv__index_lock_raw(m)) != 0) {
        shmkv__unlock_all(m);
        return rc;
    }
    /* Emptying 64 segments one by one is not one store, so a clear killed
     * half-way would leave some segments full and others empty. Instead the
     * clear happens at the one store of the new generation below, with
     * every lock held: a segment (or the index) still behind it is emptied
     * by whoever locks it next, which is also who repairs a dead owner's
     * lock. */
    shmkv__hdr *h = SHMKV__HDR(m);
    uint64_t gen = atomic_load(&h->clear_gen) + 1;
    SHMKV__HOOK("clear.before_commit");
    atomic_store(&h->clear_gen, gen);
    for (uint32_t i = 0; i < h->nseg; i++)
        shmkv__seg_clear(m, shmkv__seg_at(m, i), gen);
    SHMKV__HOOK("clear.segments_done");
    if (track) {
        shmkv__index_clear(m, gen);
        shmkv__index_unlock(m);
    }
    shmkv__unlock_all(m);
    /* The whole region, as a batch does (a clear is rare), with the locks
     * let go: writers need not wait for the disk. */
    if (db->flags & SHMKV_SYNC)
        msync(m->base, atomic_load(&h->top), MS_SYNC);
    return 0;
}

int shmkv_rebuild_index(shmkv_db *db)
{
    if (!shmkv__db_usable(db))
        return SHMKV_EINVAL;
    shmkv__map *m = db->m;
    if (!SHMKV__HDR(m)->track_keys)
        return 0; /* nothing to rebuild, through any handle */
    if (m->rdonly)
        return SHMKV_EREADONLY; /* it cannot take the locks a rebuild needs */
    shmkv__call_begin(db);
    return shmkv__index_rebuild_all(m);
}


int shmkv_tracking_enable(shmkv_db *db)
{
    if (!shmkv__db_usable(db))
        return SHMKV_EINVAL;
    if (__atomic_load_n(&SHMKV__HDR(db->m)->track_keys, __ATOMIC_ACQUIRE))
        return 0;
    if (db->flags & SHMKV_RDONLY)
        return SHMKV_EREADONLY;
    shmkv__call_begin(db);
    return shmkv__track_on(db->m);
}

int shmkv_stat(shmkv_db *db, shmkv_info *info)
{
    if (!shmkv__db_usable(db) || !info)
        return SHMKV_EINVAL;
    shmkv__map *m = db->m;
    shmkv__hdr *h = SHMKV__HDR(m);
    memset(info, 0, sizeof *info);
    info->keys = shmkv_size(db);
    /* The rest is read without locks: a moment's approximation, which is all a
     * statistic needs. */
    for (uint32_t i = 0; i < h->nseg; i++)
        info->used_bytes += shmkv__seg_at(m, i)->alloc.used_bytes;
    info->used_bytes += shmkv__index_of(m)->alloc.used_bytes + h->data_off;
    info->file_bytes = atomic_load(&h->file_size);
    info->reserve_bytes = h->reserve;
    info->segments = h->nseg;
    info->track_keys = (int)h->track_keys;
    info->backend = (int)h->backend;
    info->format_version = h->version;
    /* A slot names its process until the next opener reuses it, and a
     * process killed without closing never clears its own: count only the
     * pids that are still alive (EPERM: alive, another user's). */
    for (unsigned i = 0; i < SHMKV__ATTACH_SLOTS; i++) {
        int32_t pid = atomic_load(&h->attach[i].pid);
        info->attached += pid > 0 && (kill(pid, 0) == 0 || errno != ESRCH);
    }
    return 0;
}

typedef shmkv__buf buf;

/* Records: [u32 klen][u32 vlen][u32 kind][key][value] */
static int rec_put(buf *b, const void *k, uint32_t klen, const void *v, uint32_t vlen,
                   uint32_t kind)
{
    int rc = shmkv__buf_reserve(b, 12 + (size_t)klen + vlen);
    if (rc)
        return rc;
    uint32_t h[3] = {klen, vlen, kind};
    memcpy(b->p + b->len, h, 12);
    memcpy(b->p + b->len + 12, k, klen);
    if (vlen)
        memcpy(b->p + b->len + 12 + klen, v, vlen);
    b->len += 12 + (size_t)klen + vlen;
    return 0;
}

/* ---- list ------------------------------------------------------------------------ */

typedef struct scan {
    shmkv__map *m;
    buf *out;
    const void *prefix;
    size_t plen;
    bool keys_only;
    uint64_t n;      /* matches seen */
} scan;

static int collect_entry(void *ctx, uint64_t off)
{
    scan *sc = ctx;
    shmkv__entry *e = (shmkv__entry *)SHMKV__P(sc->m, off);
    if (!shmkv__has_prefix(e->data, e->klen, sc->prefix, sc->plen))
        return 0;
    sc->n++;
    return rec_put(sc->out, e->data, e->klen, e->data + e->klen, sc->keys_only ? 0 : e->vlen,
                   shmkv__block_of(sc->m, off)->kind);
}

static int rec_cmp(const void *a, const void *b, void *base)
{
    uint32_t ha[3], hb[3];
    const unsigned char *ka, *kb, *v;
    shmkv__rec_get((const unsigned char *)base + *(const size_t *)a, ha, &ka, &v);
    shmkv__rec_get((const unsigned char *)base + *(const size_t *)b, hb, &kb, &v);
    return shmkv__keycmp(ka, ha[0], kb, hb[0]);
}

/* Sort the n records in recs by key and hand the first limit to fn. */
static int emit(buf *recs, size_t n, uint64_t limit, shmkv_list_fn fn, void *ctx, unsigned flags)
{
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    if (!order)
        return -ENOMEM;
    for (size_t i = 0, at = 0; i < n; i++) {
        uint32_t h[3];
        const unsigned char *k, *v;
        order[i] = at;
        at += shmkv__rec_get(recs->p + at, h, &k, &v);
    }
    qsort_r(order, n, sizeof *order, rec_cmp, recs->p);
    int rc = 0;
    for (size_t i = 0; i < n && (!limit || i < limit) && !rc; i++) {
        uint32_t h[3];
        const unsigned char *k, *v;
        shmkv__rec_get(recs->p + order[i], h, &k, &v);
        rc = fn(ctx, k, h[0], (flags & SHMKV_LIST_KEYS_ONLY) ? NULL : v, h[1], (shmkv_kind)h[2]);
    }
    free(order);
    return rc;
}

/* Without the index: copy every match out segment by segment, then sort. */
static int list_scan(shmkv_db *db, const void *prefix, size_t plen, uint64_t limit,
                     unsigned flags, shmkv_list_fn fn, void *ctx)
{
    shmkv__map *m = db->m;
    buf recs = {0};
    scan sc = {.m = m, .out = &recs, .prefix = prefix, .plen = plen,
               .keys_only = flags & SHMKV_LIST_KEYS_ONLY};
    int rc = 0;
    for (uint32_t i = 0; i < SHMKV__HDR(m)->nseg && !rc; i++) {
        shmkv__seg *s = shmkv__seg_at(m, i);
        if ((rc = shmkv__seg_lock(m, s)) != 0)
            break;
        rc = shmkv__seg_visit(m, s, collect_entry, &sc);
        shmkv__seg_unlock(s);
    }
    if (!rc)
        rc = emit(&recs, sc.n, limit, fn, ctx, flags);
    free(recs.p);
    return rc;
}

static int collect_kblob(void *ctx, const shmkv__kblob *kb)
{
    return rec_put(ctx, kb->key, kb->klen, NULL, 0, 0);
}

static int copy_entry_value(void *ctx, const shmkv__entry *e, shmkv_kind kind)
{
    buf *b = ctx;
    b->len = 0;
    int rc = rec_put(b, e->data, e->klen, e->data + e->klen, e->vlen, kind);
    return rc;
}

/* With the index: take the keys in order under the index lock, then fetch
 * each value under its own segment lock (the index lock must not be held
 * while taking a segment lock). A key deleted in between is skipped. */
static int list_index(shmkv_db *db, const void *prefix, size_t plen, uint64_t limit,
                      unsigned flags, shmkv_list_fn fn, void *ctx)
{
    shmkv__map *m = db->m;
    buf keys = {0}, val = {0};
    int rc;
    if ((rc = shmkv__index_enter(m)) == SHMKV__NOINDEX)
        return list_scan(db, prefix, plen, limit, flags, fn, ctx);
    if (rc)
        return rc;
    uint64_t from = plen ? shmkv__index_rank(m, prefix, plen) : 0;
    rc = shmkv__index_walk(m, from, prefix, plen, limit, collect_kblob, &keys);
    shmkv__index_unlock(m);
    for (size_t at = 0; at < keys.len && !rc;) {
        uint32_t h[3];
        const unsigned char *k, *v;
        at += shmkv__rec_get(keys.p + at, h, &k, &v);
        if (flags & SHMKV_LIST_KEYS_ONLY) {
            rc = fn(ctx, k, h[0], NULL, 0, SHMKV_KIND_BYTES);
            continue;
        }
        rc = shmkv__get_locked_copy(db, k, h[0], copy_entry_value, &val);
        if (rc == SHMKV_ENOTFOUND) {
            rc = 0;
            continue;
        }
        if (!rc) {
            uint32_t vh[3];
            const unsigned char *vk, *vv;
            shmkv__rec_get(val.p, vh, &vk, &vv);
            rc = fn(ctx, vk, vh[0], vv, vh[1], (shmkv_kind)vh[2]);
        }
    }
    free(keys.p);
    free(val.p);
    return rc;
}

/* A read-only mapping takes no lock, and the index has no seq to read it
 * by, so it copies each segment out as of one moment and sorts. */
static int list_ro(shmkv_db *db, const void *prefix, size_t plen, uint64_t limit, unsigned flags,
                   shmkv_list_fn fn, void *ctx)
{
    shmkv__map *m = db->m;
    buf recs = {0};
    uint64_t total = 0;
    int rc = 0;
    for (uint32_t i = 0; i < SHMKV__HDR(m)->nseg && !rc; i++) {
        uint64_t n = 0;
        rc = shmkv__seg_snapshot(m, shmkv__seg_at(m, i), prefix, plen,
                                 flags & SHMKV_LIST_KEYS_ONLY, &recs, &n);
        total += n;
    }
    if (!rc)
        rc = emit(&recs, total, limit, fn, ctx, flags);
    free(recs.p);
    return rc;
}

int shmkv_list(shmkv_db *db, const void *prefix, size_t plen, uint64_t limit, unsigned flags,
               shmkv_list_fn fn, void *ctx)
{
    if (!shmkv__db_usable(db) || !fn || (plen && !prefix) || (flags & ~SHMKV_LIST_KEYS_ONLY))
        return SHMKV_EINVAL;
    shmkv__call_begin(db);
    if (db->m->rdonly)
        return list_ro(db, prefix, plen, limit, flags, fn, ctx);
    if (SHMKV__HDR(db->m)->track_keys)
        return list_index(db, prefix, plen, limit, flags, fn, ctx);
    return list_scan(db, prefix, plen, limit, flags, fn, ctx);
}


/* ---- count ------------------------------------------------------------------------------ */


typedef struct counter {
    shmkv__map *m;
    const void *prefix;
    size_t plen;
    uint64_t n;
} counter;

static int count_entry(void *ctx, uint64_t off)
{
    counter *c = ctx;
    const shmkv__entry *e = SHMKV__P(c->m, off);
    c->n += shmkv__has_prefix(e->data, e->klen, c->prefix, c->plen);
    return 0;
}

int shmkv_count(shmkv_db *db, const void *prefix, size_t plen, uint64_t *count)
{
    if (!shmkv__db_usable(db) || (plen && !prefix) || !count)
        return SHMKV_EINVAL;
    shmkv__map *m = db->m;
    int rc;
    shmkv__call_begin(db);
    if (m->rdonly) {
        /* No lock to take: each segment's matching keys as of one moment. */
        uint64_t n = 0;
        for (uint32_t i = 0; i < SHMKV__HDR(m)->nseg; i++) {
            uint64_t c = 0;
            if ((rc = shmkv__seg_snapshot(m, shmkv__seg_at(m, i), prefix, plen, true, NULL, &c)) != 0)
                return rc;
            n += c;
        }
        *count = n;
        return 0;
    }
    /* An index marked for a rebuild that found no room (NOINDEX): count
     * as an untracked store does. */
    if (shmkv__tracked(m) && (rc = shmkv__index_enter(m)) != SHMKV__NOINDEX) {
        if (rc)
            return rc;
        uint64_t lo = plen ? shmkv__index_rank(m, prefix, plen) : 0;
        *count = shmkv__index_prefix_end(m, prefix, plen) - lo;
        shmkv__index_unlock(m);
        return 0;
    }
    counter c = {.m = m, .prefix = prefix, .plen = plen};
    for (uint32_t i = 0; i < SHMKV__HDR(m)->nseg; i++) {
        shmkv__seg *s = shmkv__seg_at(m, i);
        if ((rc = shmkv__seg_lock(m, s)) != 0)
            return rc;
        if (plen)
            shmkv__seg_visit(m, s, count_entry, &c);
        else
            c.n += atomic_load_explicit(&s->count, memory_order_relaxed);
        shmkv__seg_unlock(s);
    }
    *count = c.n;
    return 0;
}

