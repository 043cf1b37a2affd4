/*
 * shmkv.c - the multi-key half of the public API: size, clear, list,
 * random_key, rebuild_index, stat, and the error strings. Single-key
 * operations live in table.c, next to the table they act on.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

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
    return 0;
}

int shmkv_rebuild_index(shmkv_db *db)
{
    if (!shmkv__db_usable(db))
        return SHMKV_EINVAL;
    shmkv__map *m = db->m;
    if (m->rdonly)
        return SHMKV_EREADONLY; /* it cannot take the locks a rebuild needs */
    if (!SHMKV__HDR(m)->track_keys)
        return 0;
    shmkv__call_begin(db);
    return shmkv__index_rebuild_all(m);
}

/* Every write reads track_keys under its segment lock, and this sets it
 * holding all of them plus the index lock, right after building the index:
 * a process that opened the store before sees tracking on at its next
 * write and keeps the index current from then on. */
int shmkv__track_on(shmkv__map *m)
{
    shmkv__hdr *h = SHMKV__HDR(m);
    if (__atomic_load_n(&h->track_keys, __ATOMIC_ACQUIRE))
        return 0;
    int rc = shmkv__lock_all(m);
    if (rc)
        return rc;
    if ((rc = shmkv__index_lock_raw(m)) == 0) {
        if (!h->track_keys && (rc = shmkv__index_rebuild(m)) == 0)
            __atomic_store_n(&h->track_keys, 1, __ATOMIC_RELEASE);
        shmkv__index_unlock(m);
    }
    shmkv__unlock_all(m);
    return rc;
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
    for (unsigned i = 0; i < SHMKV__ATTACH_SLOTS; i++)
        info->attached += atomic_load(&h->attach[i].pid) != 0;
    return 0;
}

/* ---- a growable byte buffer for collecting under locks ------------------------- */

typedef shmkv__buf buf;

int shmkv__buf_reserve(buf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

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

/* Decode the record at r; returns its length, the step to the next one. */
static size_t rec_get(const unsigned char *r, uint32_t h[3], const unsigned char **k,
                      const unsigned char **v)
{
    memcpy(h, r, 12);
    *k = r + 12;
    *v = r + 12 + h[0];
    return 12 + (size_t)h[0] + h[1];
}

static bool has_prefix(const void *k, size_t klen, const void *p, size_t plen)
{
    return klen >= plen && (plen == 0 || memcmp(k, p, plen) == 0);
}

/* ---- list ------------------------------------------------------------------------ */

typedef struct scan {
    shmkv__map *m;
    buf *out;
    const void *prefix;
    size_t plen;
    bool keys_only;
    uint64_t n;      /* matches seen */
    uint64_t target; /* random_key: which match to copy out */
    uint64_t found;  /* random_key: payload offset of the target, 0: none */
} scan;

static int collect_entry(void *ctx, uint64_t off)
{
    scan *sc = ctx;
    shmkv__entry *e = (shmkv__entry *)SHMKV__P(sc->m, off);
    if (!has_prefix(e->data, e->klen, sc->prefix, sc->plen))
        return 0;
    sc->n++;
    return rec_put(sc->out, e->data, e->klen, e->data + e->klen, sc->keys_only ? 0 : e->vlen,
                   shmkv__block_of(sc->m, off)->kind);
}

static int rec_cmp(const void *a, const void *b, void *base)
{
    uint32_t ha[3], hb[3];
    const unsigned char *ka, *kb, *v;
    rec_get((const unsigned char *)base + *(const size_t *)a, ha, &ka, &v);
    rec_get((const unsigned char *)base + *(const size_t *)b, hb, &kb, &v);
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
        at += rec_get(recs->p + at, h, &k, &v);
    }
    qsort_r(order, n, sizeof *order, rec_cmp, recs->p);
    int rc = 0;
    for (size_t i = 0; i < n && (!limit || i < limit) && !rc; i++) {
        uint32_t h[3];
        const unsigned char *k, *v;
        rec_get(recs->p + order[i], h, &k, &v);
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
    for (;;) {
        keys.len = 0;
        if ((rc = shmkv__index_lock(m, NULL)) == SHMKV__RESTART)
            continue;
        if (rc == SHMKV__NOINDEX)
            return list_scan(db, prefix, plen, limit, flags, fn, ctx);
        if (rc)
            return rc;
        uint64_t from = plen ? shmkv__index_rank(m, prefix, plen) : 0;
        rc = shmkv__index_walk(m, from, prefix, plen, limit, collect_kblob, &keys);
        shmkv__index_unlock(m);
        break;
    }
    for (size_t at = 0; at < keys.len && !rc;) {
        uint32_t h[3];
        const unsigned char *k, *v;
        at += rec_get(keys.p + at, h, &k, &v);
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
            rec_get(val.p, vh, &vk, &vv);
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

/* ---- random_key --------------------------------------------------------------------- */

static int copy_key(const void *k, size_t klen, void *out, size_t cap, size_t *outlen)
{
    if (outlen)
        *outlen = klen;
    if (klen > cap)
        return SHMKV_EBUFSIZE;
    memcpy(out, k, klen);
    return 0;
}

static int random_scan(shmkv__map *m, const void *prefix, size_t plen, void *out, size_t cap,
                       size_t *klen);

static int random_index(shmkv__map *m, const void *prefix, size_t plen, void *out, size_t cap,
                        size_t *klen)
{
    int rc;
    while ((rc = shmkv__index_lock(m, NULL)) == SHMKV__RESTART)
        ;
    if (rc == SHMKV__NOINDEX)
        return random_scan(m, prefix, plen, out, cap, klen);
    if (rc)
        return rc;
    shmkv__index *ix = shmkv__index_of(m);
    uint64_t kb = 0;
    if (plen == 0) {
        if (ix->n)
            kb = ((shmkv__karr *)SHMKV__P(m, ix->karr))->off[shmkv__rand_below(ix->n)];
    } else {
        uint64_t lo = shmkv__index_rank(m, prefix, plen);
        uint64_t hi = shmkv__index_prefix_end(m, prefix, plen);
        if (hi > lo)
            kb = shmkv__index_select(m, lo + shmkv__rand_below(hi - lo));
    }
    if (kb) {
        const shmkv__kblob *b = SHMKV__P(m, kb);
        rc = copy_key(b->key, b->klen, out, cap, klen);
    } else {
        rc = SHMKV_ENOTFOUND;
    }
    shmkv__index_unlock(m);
    return rc;
}

static int count_match(void *ctx, uint64_t off)
{
    scan *sc = ctx;
    shmkv__entry *e = (shmkv__entry *)SHMKV__P(sc->m, off);
    if (has_prefix(e->data, e->klen, sc->prefix, sc->plen) && sc->n++ == sc->target) {
        sc->found = off;
        return 1;
    }
    return 0;
}

/* Inside the chosen (locked) segment: probe random slots until one is
 * live, which is uniform over the segment's live keys. A table left sparse
 * by deletes makes probing slow, so after a few misses walk to the r-th
 * live key instead. 0: no live slot where counted. */
static uint64_t pick_in_segment(shmkv__map *m, shmkv__seg *s)
{
    uint64_t n = atomic_load_explicit(&s->count, memory_order_relaxed);
    uint64_t toff = atomic_load_explicit(&s->table, memory_order_relaxed);
    if (!n || !toff)
        return 0;
    shmkv__table *t = (shmkv__table *)SHMKV__P(m, toff);
    for (int probe = 0; probe < 32; probe++) {
        uint64_t w = atomic_load_explicit(&t->slot[shmkv__rand_below(t->cap)], memory_order_relaxed);
        if (SHMKV__SLOT_LIVE(w))
            return SHMKV__SLOT_OFF(w);
    }
    scan sc = {.m = m, .target = shmkv__rand_below(n)};
    shmkv__seg_visit(m, s, count_match, &sc);
    return sc.found;
}

/* Picks a segment in proportion to counts[] (which sum to total > 0);
 * *rest: a uniform rank among that segment's counted keys. */
static uint32_t weighted_segment(const uint64_t *counts, uint64_t total, uint64_t *rest)
{
    uint64_t r = shmkv__rand_below(total);
    uint32_t i = 0;
    while (r >= counts[i])
        r -= counts[i++];
    *rest = r;
    return i;
}

/* Without the index, in two steps.
 *
 * Sampling: draw a segment in proportion to its count, then a live slot in
 * it, and keep the key if it has the prefix. Every draw is uniform over all
 * keys, so the kept one is uniform over the matching keys; this costs about
 * (keys / matches) draws, which is cheap unless matches are rare. The
 * counts are read without locks: taking 64 locks one after the other gives
 * no more of a snapshot than this does, and the chosen segment is locked
 * (so repaired, if its last writer died) before anything in it is read.
 *
 * Scanning, when sampling found nothing: count the matches of each segment
 * under its lock (this also repairs a count left one short by a writer
 * killed between publishing an insert and counting it, so an empty result
 * is only believed here), draw one, and walk to it. If writers changed the
 * segment between the passes so that the draw falls off its end, again. */
#define RANDOM_SAMPLE_TRIES 128

static int random_scan(shmkv__map *m, const void *prefix, size_t plen, void *out, size_t cap,
                       size_t *klen)
{
    uint32_t nseg = SHMKV__HDR(m)->nseg;
    uint64_t *counts = malloc(nseg * sizeof *counts);
    if (!counts)
        return -ENOMEM;
    int rc = SHMKV_ENOTFOUND;

    uint64_t total = 0;
    for (uint32_t i = 0; i < nseg; i++)
        total += counts[i] = atomic_load_explicit(&shmkv__seg_at(m, i)->count,
                                                  memory_order_relaxed);
    for (int t = 0; total && t < RANDOM_SAMPLE_TRIES; t++) {
        uint64_t rank;
        shmkv__seg *s = shmkv__seg_at(m, weighted_segment(counts, total, &rank));
        if ((rc = shmkv__seg_lock(m, s)) != 0)
            goto out;
        uint64_t off = pick_in_segment(m, s);
        if (off) {
            shmkv__entry *e = (shmkv__entry *)SHMKV__P(m, off);
            if (has_prefix(e->data, e->klen, prefix, plen)) {
                rc = copy_key(e->data, e->klen, out, cap, klen);
                shmkv__seg_unlock(s);
                goto out;
            }
        }
        shmkv__seg_unlock(s);
    }

    for (int attempt = 0; attempt < 64; attempt++) {
        total = 0;
        for (uint32_t i = 0; i < nseg; i++) {
            shmkv__seg *s = shmkv__seg_at(m, i);
            if ((rc = shmkv__seg_lock(m, s)) != 0)
                goto out;
            if (plen == 0) {
                counts[i] = atomic_load_explicit(&s->count, memory_order_relaxed);
            } else {
                scan sc = {.m = m, .prefix = prefix, .plen = plen, .target = UINT64_MAX};
                shmkv__seg_visit(m, s, count_match, &sc);
                counts[i] = sc.n;
            }
            shmkv__seg_unlock(s);
            total += counts[i];
        }
        if (total == 0) {
            rc = SHMKV_ENOTFOUND;
            break;
        }
        uint64_t rank;
        shmkv__seg *s = shmkv__seg_at(m, weighted_segment(counts, total, &rank));
        scan sc = {.m = m, .prefix = prefix, .plen = plen, .target = rank};
        if ((rc = shmkv__seg_lock(m, s)) != 0)
            break;
        shmkv__seg_visit(m, s, count_match, &sc);
        if (sc.found) {
            shmkv__entry *e = (shmkv__entry *)SHMKV__P(m, sc.found);
            rc = copy_key(e->data, e->klen, out, cap, klen);
        }
        shmkv__seg_unlock(s);
        if (sc.found)
            break;
        rc = SHMKV_ENOTFOUND;
    }
out:
    free(counts);
    return rc;
}

/* Read-only mapping: draw a segment in proportion to its count and a key
 * of it uniformly (copied out as of one moment), keep it if it has the
 * prefix; each draw is uniform over all keys. When 16 draws miss, copy
 * every match out and draw among them. */
static int random_ro(shmkv__map *m, const void *prefix, size_t plen, void *out, size_t cap,
                     size_t *klen)
{
    uint32_t nseg = SHMKV__HDR(m)->nseg;
    uint64_t *counts = malloc(nseg * sizeof *counts), total = 0;
    if (!counts)
        return -ENOMEM;
    buf recs = {0};
    int rc = 0;
    for (uint32_t i = 0; i < nseg; i++)
        total += counts[i] = atomic_load_explicit(&shmkv__seg_at(m, i)->count,
                                                  memory_order_relaxed);
    for (int t = 0; total && t < 16; t++) {
        uint64_t rank, n = 0;
        recs.len = 0;
        shmkv__seg *s = shmkv__seg_at(m, weighted_segment(counts, total, &rank));
        if ((rc = shmkv__seg_snapshot(m, s, NULL, 0, true, &recs, &n)) != 0)
            goto out;
        if (!n)
            continue;
        uint64_t pick = shmkv__rand_below(n);
        size_t at = 0;
        uint32_t h[3];
        const unsigned char *k, *v;
        for (uint64_t j = 0;; j++) {
            size_t step = rec_get(recs.p + at, h, &k, &v);
            if (j == pick)
                break;
            at += step;
        }
        if (has_prefix(k, h[0], prefix, plen)) {
            rc = copy_key(k, h[0], out, cap, klen);
            goto out;
        }
    }
    uint64_t matches = 0;
    recs.len = 0;
    for (uint32_t i = 0; i < nseg && !rc; i++) {
        uint64_t n = 0;
        rc = shmkv__seg_snapshot(m, shmkv__seg_at(m, i), prefix, plen, true, &recs, &n);
        matches += n;
    }
    if (rc)
        goto out;
    if (!matches) {
        rc = SHMKV_ENOTFOUND;
        goto out;
    }
    uint64_t pick = shmkv__rand_below(matches);
    size_t at = 0;
    uint32_t h[3];
    const unsigned char *k, *v;
    for (uint64_t j = 0;; j++) {
        size_t step = rec_get(recs.p + at, h, &k, &v);
        if (j == pick)
            break;
        at += step;
    }
    rc = copy_key(k, h[0], out, cap, klen);
out:
    free(recs.p);
    free(counts);
    return rc;
}

int shmkv_random_key(shmkv_db *db, const void *prefix, size_t plen, void *buf, size_t cap,
                     size_t *klen)
{
    if (!shmkv__db_usable(db) || (plen && !prefix) || (cap && !buf))
        return SHMKV_EINVAL;
    shmkv__call_begin(db);
    if (db->m->rdonly)
        return random_ro(db->m, prefix, plen, buf, cap, klen);
    if (SHMKV__HDR(db->m)->track_keys)
        return random_index(db->m, prefix, plen, buf, cap, klen);
    return random_scan(db->m, prefix, plen, buf, cap, klen);
}
