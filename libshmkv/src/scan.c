/*
 * scan.c - ordered scan from a cursor, and sampling of many keys
 * (random_keys; one key at a time is random_key, in sample.c).
 *
 * With key tracking both ask the ordered index (ranks and select),
 * under the index lock only. Without it they read the segments one lock at
 * a time, so their cost is a pass over every key.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>


/* A key (and maybe its value) copied out from under a lock. */
typedef struct rec {
    uint32_t klen, vlen;
    uint32_t kind;
    unsigned char data[]; /* key, then value */
} rec;

static rec *rec_new(const void *k, size_t klen, const void *v, size_t vlen, unsigned kind)
{
    rec *r = malloc(sizeof *r + klen + vlen);
    if (!r)
        return NULL;
    r->klen = (uint32_t)klen;
    r->vlen = (uint32_t)vlen;
    r->kind = kind;
    memcpy(r->data, k, klen);
    if (vlen)
        memcpy(r->data + klen, v, vlen);
    return r;
}

static int rec_cmp(const rec *a, const rec *b)
{
    return shmkv__keycmp(a->data, a->klen, b->data, b->klen);
}

typedef struct recs {
    rec **a;
    size_t n, cap;
} recs;

static int recs_push(recs *l, rec *r)
{
    if (!r)
        return -ENOMEM;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        rec **a = realloc(l->a, cap * sizeof *a);
        if (!a) {
            free(r);
            return -ENOMEM;
        }
        l->a = a;
        l->cap = cap;
    }
    l->a[l->n++] = r;
    return 0;
}

static void recs_free(recs *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->a[i]);
    free(l->a);
    memset(l, 0, sizeof *l);
}

static int qcmp(const void *a, const void *b)
{
    return rec_cmp(*(rec *const *)a, *(rec *const *)b);
}

/* ---- scan with the index ---------------------------------------------------------- */

static int collect_blob(void *ctx, const shmkv__kblob *kb)
{
    return recs_push(ctx, rec_new(kb->key, kb->klen, NULL, 0, 0));
}

typedef struct vcopy {
    rec *r;
} vcopy;

static int copy_value(void *ctx, const shmkv__entry *e, shmkv_kind kind)
{
    vcopy *vc = ctx;
    vc->r = rec_new(e->data, e->klen, e->data + e->klen, e->vlen, (unsigned)kind);
    return vc->r ? 0 : -ENOMEM;
}

static int scan_tables(shmkv_db *db, const void *prefix, size_t plen, const void *after,
                       size_t alen, uint64_t limit, unsigned flags, shmkv_list_fn fn, void *ctx);

/* Pages of keys from the index; values are read afterwards under each
 * key's segment lock, and a key deleted in between is skipped. So that a
 * short page still means "the end", keys are taken again after the last
 * one until the page is full or the index runs out. */
static int scan_index(shmkv_db *db, const void *prefix, size_t plen, const void *after,
                      size_t alen, uint64_t limit, unsigned flags, shmkv_list_fn fn, void *ctx)
{
    shmkv__map *m = db->m;
    uint64_t emitted = 0;
    rec *cursor = after && alen ? rec_new(after, alen, NULL, 0, 0) : NULL;
    int rc = 0;
    if (alen && !cursor)
        return -ENOMEM;
    for (;;) {
        recs keys = {0};
        uint64_t want = limit ? limit - emitted : 0;
        if ((rc = shmkv__index_enter(m)) == SHMKV__NOINDEX) {
            /* marked for a rebuild that found no room: the rest of the
             * page, after the last key handed out, from the tables */
            rc = scan_tables(db, prefix, plen, cursor ? cursor->data : NULL,
                             cursor ? cursor->klen : 0, want, flags, fn, ctx);
            break;
        }
        if (rc)
            break;
        uint64_t from = plen ? shmkv__index_rank(m, prefix, plen) : 0;
        if (cursor) {
            uint64_t c = shmkv__index_rank_after(m, cursor->data, cursor->klen);
            if (c > from)
                from = c;
        }
        rc = shmkv__index_walk(m, from, prefix, plen, want, collect_blob, &keys);
        shmkv__index_unlock(m);
        size_t got = keys.n;
        for (size_t i = 0; i < keys.n && !rc; i++) {
            rec *k = keys.a[i];
            if (flags & SHMKV_LIST_KEYS_ONLY) {
                rc = fn(ctx, k->data, k->klen, NULL, 0, SHMKV_KIND_BYTES);
                emitted++;
                continue;
            }
            vcopy vc = {0};
            rc = shmkv__get_locked_copy(db, k->data, k->klen, copy_value, &vc);
            if (rc == SHMKV_ENOTFOUND) {
                rc = 0;
                continue;
            }
            if (!rc) {
                rc = fn(ctx, vc.r->data, vc.r->klen, vc.r->data + vc.r->klen, vc.r->vlen,
                        (shmkv_kind)vc.r->kind);
                emitted++;
            }
            free(vc.r);
        }
        bool more = !rc && limit && got == want && emitted < limit;
        if (more) {
            free(cursor);
            cursor = keys.a[got - 1];
            keys.a[got - 1] = NULL;
        }
        recs_free(&keys);
        if (!more)
            break;
    }
    free(cursor);
    return rc;
}

/* ---- scan without the index ---------------------------------------------------------- */

/* A max-heap (by key) of the `limit` smallest keys seen so far. */
typedef struct heap_scan {
    shmkv__map *m;
    const void *prefix, *after;
    size_t plen, alen;
    uint64_t limit;
    bool values;
    recs h;
} heap_scan;

static void sift_down(rec **a, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, big = i;
        if (l < n && rec_cmp(a[l], a[big]) > 0)
            big = l;
        if (r < n && rec_cmp(a[r], a[big]) > 0)
            big = r;
        if (big == i)
            return;
        rec *t = a[i];
        a[i] = a[big];
        a[big] = t;
        i = big;
    }
}

static void sift_up(rec **a, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (rec_cmp(a[p], a[i]) >= 0)
            return;
        rec *t = a[i];
        a[i] = a[p];
        a[p] = t;
        i = p;
    }
}

static int heap_add(heap_scan *hs, const unsigned char *k, size_t klen, const unsigned char *v,
                    size_t vlen, unsigned kind)
{
    if (!shmkv__has_prefix(k, klen, hs->prefix, hs->plen))
        return 0;
    if (hs->alen && shmkv__keycmp(k, klen, hs->after, hs->alen) <= 0)
        return 0;
    bool full = hs->limit && hs->h.n == hs->limit;
    if (full) {
        const rec *top = hs->h.a[0];
        if (shmkv__keycmp(k, klen, top->data, top->klen) >= 0)
            return 0;
    }
    rec *r = rec_new(k, klen, v, hs->values ? vlen : 0, kind);
    if (!r)
        return -ENOMEM;
    if (full) {
        free(hs->h.a[0]);
        hs->h.a[0] = r;
        sift_down(hs->h.a, hs->h.n, 0);
        return 0;
    }
    int rc = recs_push(&hs->h, r);
    if (!rc && hs->limit)
        sift_up(hs->h.a, hs->h.n - 1);
    return rc;
}

static int heap_entry(void *ctx, uint64_t off)
{
    heap_scan *hs = ctx;
    const shmkv__entry *e = SHMKV__P(hs->m, off);
    return heap_add(hs, e->data, e->klen, e->data + e->klen, e->vlen,
                    shmkv__block_of(hs->m, off)->kind);
}

/* The records of shmkv__seg_snapshot, one after another. */
static size_t snap_rec(const unsigned char *p, uint32_t h[3], const unsigned char **k,
                       const unsigned char **v)
{
    memcpy(h, p, 3 * sizeof h[0]);
    *k = p + 3 * sizeof h[0];
    *v = *k + h[0];
    return 3 * sizeof h[0] + (size_t)h[0] + h[1];
}

static int scan_tables(shmkv_db *db, const void *prefix, size_t plen, const void *after,
                       size_t alen, uint64_t limit, unsigned flags, shmkv_list_fn fn, void *ctx)
{
    shmkv__map *m = db->m;
    heap_scan hs = {.m = m, .prefix = prefix, .plen = plen, .after = after, .alen = alen,
                    .limit = limit, .values = !(flags & SHMKV_LIST_KEYS_ONLY)};
    int rc = 0;
    shmkv__buf snap = {0};
    for (uint32_t i = 0; i < SHMKV__HDR(m)->nseg && !rc; i++) {
        shmkv__seg *s = shmkv__seg_at(m, i);
        if (m->rdonly) {
            /* No lock to take: a copy of the segment's matches as of one
             * moment (validated by its seq), then the same selection. */
            uint64_t n = 0;
            snap.len = 0;
            rc = shmkv__seg_snapshot(m, s, prefix, plen, !hs.values, &snap, &n);
            for (size_t at = 0; !rc && n--;) {
                uint32_t h[3];
                const unsigned char *k, *v;
                at += snap_rec(snap.p + at, h, &k, &v);
                rc = heap_add(&hs, k, h[0], v, h[1], h[2]);
            }
            continue;
        }
        if ((rc = shmkv__seg_lock(m, s)) != 0)
            break;
        rc = shmkv__seg_visit(m, s, heap_entry, &hs);
        shmkv__seg_unlock(s);
    }
    free(snap.p);
    if (!rc && hs.h.n) /* qsort wants a non-NULL array even when empty */
        qsort(hs.h.a, hs.h.n, sizeof *hs.h.a, qcmp);
    for (size_t i = 0; i < hs.h.n && !rc; i++) {
        rec *r = hs.h.a[i];
        rc = fn(ctx, r->data, r->klen, hs.values ? r->data + r->klen : NULL, r->vlen,
                (shmkv_kind)r->kind);
    }
    recs_free(&hs.h);
    return rc;
}

int shmkv_scan(shmkv_db *db, const void *prefix, size_t plen, const void *after, size_t alen,
               uint64_t limit, unsigned flags, shmkv_list_fn fn, void *ctx)
{
    if (!shmkv__db_usable(db) || !fn || (plen && !prefix) || (alen && !after) ||
        (flags & ~SHMKV_LIST_KEYS_ONLY))
        return SHMKV_EINVAL;
    if (alen > SHMKV_KEY_MAX)
        return SHMKV_EKEYSIZE;
    shmkv__call_begin(db);
    /* A read-only map cannot lock the index: it scans the tables. */
    if (shmkv__tracked(db->m) && !db->m->rdonly)
        return scan_index(db, prefix, plen, after, alen, limit, flags, fn, ctx);
    return scan_tables(db, prefix, plen, after, alen, limit, flags, fn, ctx);
}

/* ---- sampling --------------------------------------------------------------------------- */

/* Floyd's method: `want` distinct numbers of [0, n), want < n, into out[]. */
static int distinct_ranks(uint64_t n, uint64_t want, uint64_t *out)
{
    uint64_t cap = 16;
    while (cap < want * 2)
        cap *= 2;
    uint64_t *set = malloc(cap * sizeof *set); /* value + 1; 0: empty */
    if (!set)
        return -ENOMEM;
    memset(set, 0, cap * sizeof *set);
    uint64_t k = 0;
    for (uint64_t j = n - want; j < n; j++) {
        uint64_t t = shmkv__rand_below(j + 1), pick = t;
        for (int pass = 0; pass < 2; pass++) {
            uint64_t i = (pick * 0x9e3779b97f4a7c15ull) & (cap - 1);
            bool seen = false;
            while (set[i]) {
                if (set[i] == pick + 1) {
                    seen = true;
                    break;
                }
                i = (i + 1) & (cap - 1);
            }
            if (!seen) {
                set[i] = pick + 1;
                out[k++] = pick;
                break;
            }
            pick = j; /* t was taken: j itself cannot be */
        }
    }
    free(set);
    return 0;
}

static int emit_keys(recs *l, shmkv_list_fn fn, void *ctx)
{
    int rc = 0;
    for (size_t i = 0; i < l->n && !rc; i++)
        rc = fn(ctx, l->a[i]->data, l->a[i]->klen, NULL, 0, SHMKV_KIND_BYTES);
    return rc;
}

/* SHMKV__NOINDEX: the caller samples the tables. */
static int sample_index(shmkv__map *m, const void *prefix, size_t plen, uint64_t count,
                        bool unique, recs *out)
{
    int rc = shmkv__index_enter(m);
    if (rc)
        return rc;
    uint64_t lo = plen ? shmkv__index_rank(m, prefix, plen) : 0;
    uint64_t hi = shmkv__index_prefix_end(m, prefix, plen), n = hi > lo ? hi - lo : 0;
    if (n == 0) {
        shmkv__index_unlock(m);
        return 0;
    }
    if (unique && count >= n) {
        rc = shmkv__index_walk(m, lo, prefix, plen, n, collect_blob, out);
    } else {
        uint64_t *r = malloc(count * sizeof *r);
        if (!r)
            rc = -ENOMEM;
        else if (unique)
            rc = distinct_ranks(n, count, r);
        else
            for (uint64_t i = 0; i < count; i++)
                r[i] = shmkv__rand_below(n);
        for (uint64_t i = 0; i < count && !rc; i++) {
            uint64_t kb = shmkv__index_select(m, lo + r[i]);
            if (!kb) {
                rc = SHMKV_ECORRUPT;
                break;
            }
            const shmkv__kblob *b = SHMKV__P(m, kb);
            rc = recs_push(out, rec_new(b->key, b->klen, NULL, 0, 0));
        }
        free(r);
    }
    shmkv__index_unlock(m);
    return rc;
}

typedef struct gather {
    shmkv__map *m;
    const void *prefix;
    size_t plen;
    recs *out;
} gather;

static int gather_entry(void *ctx, uint64_t off)
{
    gather *g = ctx;
    const shmkv__entry *e = SHMKV__P(g->m, off);
    if (!shmkv__has_prefix(e->data, e->klen, g->prefix, g->plen))
        return 0;
    return recs_push(g->out, rec_new(e->data, e->klen, NULL, 0, 0));
}

/* Without the index and without replacement: every match, then a partial
 * shuffle picks count of them. A read-only map copies each segment's
 * matches out as of one moment instead of locking it. */
static int sample_tables(shmkv__map *m, const void *prefix, size_t plen, uint64_t count, recs *out)
{
    gather g = {.m = m, .prefix = prefix, .plen = plen, .out = out};
    int rc = 0;
    shmkv__buf snap = {0};
    for (uint32_t i = 0; i < SHMKV__HDR(m)->nseg && !rc; i++) {
        shmkv__seg *s = shmkv__seg_at(m, i);
        if (m->rdonly) {
            uint64_t n = 0;
            snap.len = 0;
            rc = shmkv__seg_snapshot(m, s, prefix, plen, true, &snap, &n);
            for (size_t at = 0; !rc && n--;) {
                uint32_t h[3];
                const unsigned char *k, *v;
                at += snap_rec(snap.p + at, h, &k, &v);
                rc = recs_push(out, rec_new(k, h[0], NULL, 0, 0));
            }
            continue;
        }
        if ((rc = shmkv__seg_lock(m, s)) != 0)
            break;
        rc = shmkv__seg_visit(m, s, gather_entry, &g);
        shmkv__seg_unlock(s);
    }
    free(snap.p);
    if (rc || count >= out->n)
        return rc;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t j = i + shmkv__rand_below(out->n - i);
        rec *t = out->a[i];
        out->a[i] = out->a[j];
        out->a[j] = t;
    }
    for (size_t i = (size_t)count; i < out->n; i++)
        free(out->a[i]);
    out->n = (size_t)count;
    return 0;
}

int shmkv_random_keys(shmkv_db *db, const void *prefix, size_t plen, uint64_t count, int unique,
                      shmkv_list_fn fn, void *ctx)
{
    if (!shmkv__db_usable(db) || !fn || (plen && !prefix) || (unique != 0 && unique != 1))
        return SHMKV_EINVAL;
    if (count == 0)
        return 0;
    shmkv__map *m = db->m;
    shmkv__call_begin(db);
    recs out = {0};
    int rc;
    /* A read-only map cannot lock the index: it samples from the tables
     * (copied out without locks) or, with replacement, draws each key as
     * random_key does. */
    rc = shmkv__tracked(m) && !m->rdonly ? sample_index(m, prefix, plen, count, unique, &out)
                                         : SHMKV__NOINDEX;
    if (rc == SHMKV__NOINDEX && unique) {
        rc = sample_tables(m, prefix, plen, count, &out);
    } else if (rc == SHMKV__NOINDEX) {
        /* Each draw is uniform on its own; the callback runs between draws
         * with no lock held. */
        unsigned char *k = malloc(SHMKV_KEY_MAX);
        if (!k)
            return -ENOMEM;
        rc = 0;
        for (uint64_t i = 0; i < count && !rc; i++) {
            size_t kl;
            rc = shmkv_random_key(db, prefix, plen, k, SHMKV_KEY_MAX, &kl);
            if (rc == SHMKV_ENOTFOUND) {
                rc = 0;
                break;
            }
            if (!rc)
                rc = fn(ctx, k, kl, NULL, 0, SHMKV_KIND_BYTES);
        }
        free(k);
        return rc;
    }
    if (!rc)
        rc = emit_keys(&out, fn, ctx);
    recs_free(&out);
    return rc;
}
