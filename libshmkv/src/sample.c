/*
 * sample.c - random_key: one key drawn uniformly, among all keys or those
 * with a prefix. With key tracking the index gives it in O(log n) (the key
 * array in O(1) without a prefix); without it, see random_scan.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

typedef shmkv__buf buf;

/* A walk of one segment to its target-th match. */
typedef struct pick {
    shmkv__map *m;
    const void *prefix;
    size_t plen;
    uint64_t n;      /* matches seen */
    uint64_t target; /* which match to copy out */
    uint64_t found;  /* payload offset of the target, 0: none */
} pick;

/* The key of record j (which must exist) of a snapshot; h its header. */
static const unsigned char *rec_nth(const buf *recs, uint64_t j, uint32_t h[3])
{
    const unsigned char *k, *v;
    size_t at = 0;
    for (;;) {
        size_t step = shmkv__rec_get(recs->p + at, h, &k, &v);
        if (j-- == 0)
            return k;
        at += step;
    }
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
    if ((rc = shmkv__index_enter(m)) == SHMKV__NOINDEX)
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
    pick *sc = ctx;
    shmkv__entry *e = (shmkv__entry *)SHMKV__P(sc->m, off);
    if (shmkv__has_prefix(e->data, e->klen, sc->prefix, sc->plen) && sc->n++ == sc->target) {
        sc->found = off;
        return 1;
    }
    return 0;
}

/* Inside the chosen (locked) segment: probe random slots until one is
 * live, which is uniform over the segment's live keys. A table left sparse
 * by deletes makes probing slow, so after a few misses walk to the r-th
 * live key instead. 0: no live slot where counted. */
uint64_t shmkv__seg_pick(shmkv__map *m, shmkv__seg *s)
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
    pick sc = {.m = m, .target = shmkv__rand_below(n)};
    shmkv__seg_visit(m, s, count_match, &sc);
    return sc.found;
}

/* Picks a segment in proportion to counts[] (which sum to total > 0);
 * *rest: a uniform rank among that segment's counted keys. */
uint32_t shmkv__weighted_pick(const uint64_t *counts, uint64_t total, uint64_t *rest)
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
        shmkv__seg *s = shmkv__seg_at(m, shmkv__weighted_pick(counts, total, &rank));
        if ((rc = shmkv__seg_lock(m, s)) != 0)
            goto out;
        uint64_t off = shmkv__seg_pick(m, s);
        if (off) {
            shmkv__entry *e = (shmkv__entry *)SHMKV__P(m, off);
            if (shmkv__has_prefix(e->data, e->klen, prefix, plen)) {
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
                pick sc = {.m = m, .prefix = prefix, .plen = plen, .target = UINT64_MAX};
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
        shmkv__seg *s = shmkv__seg_at(m, shmkv__weighted_pick(counts, total, &rank));
        pick sc = {.m = m, .prefix = prefix, .plen = plen, .target = rank};
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
        shmkv__seg *s = shmkv__seg_at(m, shmkv__weighted_pick(counts, total, &rank));
        if ((rc = shmkv__seg_snapshot(m, s, NULL, 0, true, &recs, &n)) != 0)
            goto out;
        if (!n)
            continue;
        uint32_t h[3];
        const unsigned char *k = rec_nth(&recs, shmkv__rand_below(n), h);
        if (shmkv__has_prefix(k, h[0], prefix, plen)) {
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
    uint32_t h[3];
    const unsigned char *k = rec_nth(&recs, shmkv__rand_below(matches), h);
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
