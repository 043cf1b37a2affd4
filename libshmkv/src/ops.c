/*
 * ops.c - every single-key operation: set, get, exists, delete, incr, cas,
 * set_if_absent, get_or_set, swap, compare_and_delete.
 *
 * Each locks its key's segment, looks the key up in the segment's table,
 * acts, and unlocks. With key tracking, an insert or a delete also updates
 * the index under the index lock, undo-logged, and commits the log only
 * once the table's slot agrees with the index. get and exists first try a
 * read without the lock (reader.c).
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <sys/mman.h>

typedef shmkv__op op;

static void sync_range(const void *p, size_t len)
{
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(SHMKV__PAGE - 1);
    uintptr_t b = (uintptr_t)p + len;
    msync((void *)a, b - a, MS_SYNC);
}

void shmkv__op_sync(op *o, uint64_t noff)
{
    if (!(o->db->flags & SHMKV_SYNC))
        return;
    if (noff)
        sync_range(shmkv__block_of(o->m, noff), shmkv__block_bytes(o->m, noff));
    sync_range((const void *)&o->lk.t->slot[o->lk.slot], 8);
}

/* A new entry for o's key; one that replaces the key's entry keeps its
 * claim (a write does not end a lease). */
static int entry_new(op *o, const void *val, size_t vlen, shmkv_kind kind, uint64_t *off)
{
    const shmkv__lease *keep = o->lk.found ? shmkv__entry_lease(o->m, o->lk.off) : NULL;
    return shmkv__entry_make(o->m, o->s, o->key, o->klen, val, vlen, kind, keep, off);
}

/* With key tracking, take the index lock and begin the undo-logged update
 * of o's key. 1: index lock held, update begun; 0: go on without the index
 * (no tracking, or it is marked for a rebuild that reads the tables);
 * negative or RESTART: the segment lock was dropped. */
int shmkv__op_index_open(op *o)
{
    if (!SHMKV__HDR(o->m)->track_keys)
        return 0;
    int rc = shmkv__index_lock(o->m, o->s);
    if (rc == SHMKV__NOINDEX)
        return 0;
    if (rc) {
        o->locked = false; /* RESTART or error: index_lock dropped the segment */
        return rc;
    }
    shmkv__index_begin(o->m, o->s->id, o->key, o->klen);
    return 1;
}

/* Index and slot agree again: only now may a repair stop treating the key
 * as in doubt. */
void shmkv__op_index_close(op *o)
{
    shmkv__index_commit(o->m);
    shmkv__index_unlock(o->m);
}

/* Store the value at the looked-up position (insert or replace). */
static int put(op *o, const void *val, size_t vlen, shmkv_kind kind)
{
    shmkv__map *m = o->m;
    shmkv__seg *s = o->s;
    shmkv__lookup *lk = &o->lk;
    uint64_t noff;
    int rc;
    if (lk->found) {
        /* The key stays, so the index does not change: no index lock. */
        rc = entry_new(o, val, vlen, kind, &noff);
        if (rc)
            return rc;
        shmkv__seg_replace(lk, o->h, noff);
        shmkv__free_block(m, &s->alloc, lk->off);
    } else {
        rc = shmkv__seg_room(m, s, o->key, o->klen, o->h, lk);
        if (rc)
            return rc;
        if ((rc = shmkv__op_index_open(o)) < 0 || rc == SHMKV__RESTART)
            return rc;
        bool track = rc == 1;
        rc = entry_new(o, val, vlen, kind, &noff);
        if (!rc && track && (rc = shmkv__index_insert(m, o->key, o->klen)) != 0)
            shmkv__free_block(m, &s->alloc, noff);
        if (!rc)
            shmkv__seg_insert(s, lk, o->h, noff);
        if (track)
            shmkv__op_index_close(o);
        if (rc)
            return rc;
    }
    shmkv__op_sync(o, noff);
    return 0;
}

static int removes(op *o)
{
    shmkv__map *m = o->m;
    shmkv__seg *s = o->s;
    shmkv__lookup *lk = &o->lk;
    int rc = shmkv__op_index_open(o);
    if (rc < 0 || rc == SHMKV__RESTART)
        return rc;
    bool track = rc == 1;
    if (track && (rc = shmkv__index_remove(m, o->key, o->klen)) != 0) {
        shmkv__op_index_close(o);
        return rc;
    }
    shmkv__seg_remove(s, lk);
    if (track)
        shmkv__op_index_close(o);
    shmkv__op_sync(o, 0);
    shmkv__free_block(m, &s->alloc, lk->off);
    shmkv__seg_shrink(m, s, lk);
    return 0;
}


/* ---- argument checks --------------------------------------------------------- */

static int check_key(shmkv_db *db, const void *key, size_t klen)
{
    if (!shmkv__db_usable(db))
        return SHMKV_EINVAL;
    if (klen == 0 || klen > SHMKV_KEY_MAX || !key)
        return SHMKV_EKEYSIZE;
    shmkv__call_begin(db);
    return 0;
}

/* A key for a write (or a delete). */
static int check_delete(shmkv_db *db, const void *key, size_t klen)
{
    int rc = check_key(db, key, klen);
    if (rc)
        return rc;
    return db->flags & SHMKV_RDONLY ? SHMKV_EREADONLY : 0;
}

static int check_write(shmkv_db *db, const void *key, size_t klen, const void *val,
                       size_t vlen, shmkv_kind kind)
{
    int rc = check_delete(db, key, klen);
    if (rc)
        return rc;
    if (vlen > SHMKV_VALUE_MAX)
        return SHMKV_EVALSIZE;
    if (vlen && !val)
        return SHMKV_EINVAL;
    if ((unsigned)kind > SHMKV_KIND_JSON)
        return SHMKV_EINVAL;
    return 0;
}

/* A write that hands the old value back into buf. */
static int check_write_out(shmkv_db *db, const void *key, size_t klen, const void *val,
                           size_t vlen, shmkv_kind kind, const void *buf, size_t cap)
{
    int rc = check_write(db, key, klen, val, vlen, kind);
    if (rc)
        return rc;
    return cap && !buf ? SHMKV_EINVAL : 0;
}

int shmkv__op_begin(op *o)
{
    int rc = shmkv__seg_lock(o->m, o->s);
    if (rc)
        return rc;
    o->locked = true;
    shmkv__seg_find(o->m, o->s, o->h, o->key, o->klen, &o->lk);
    return 0;
}

/* Every single-key operation: lock the key's segment, look the key up, run
 * the body (which sets rc), unlock; start over when the index had to be
 * rebuilt under us. When the lock cannot be taken, rc is its error and the
 * body does not run (again): the code after RUN_OP sees rc != 0. */
#define RUN_OP(o, db, key, klen, ...)              \
    do {                                           \
        shmkv__op_init(&(o), (db), (key), (klen)); \
        for (;;) {                                 \
            if ((rc = shmkv__op_begin(&(o))) != 0) \
                break;                             \
            __VA_ARGS__;                           \
            if (rc != SHMKV__RESTART)              \
                break;                             \
        }                                          \
        if ((o).locked)                            \
            shmkv__seg_unlock((o).s);              \
    } while (0)

static int copy_value(shmkv__map *m, uint64_t off, void *buf, size_t cap, size_t *vlen,
                      shmkv_kind *kind)
{
    shmkv__entry *e = shmkv__entry_at(m, off);
    if (vlen)
        *vlen = e->vlen;
    if (kind)
        *kind = (shmkv_kind)shmkv__block_of(m, off)->kind;
    if (e->vlen > cap)
        return SHMKV_EBUFSIZE;
    if (e->vlen)
        memcpy(buf, e->data + e->klen, e->vlen);
    return 0;
}

static bool same_bytes(shmkv__map *m, uint64_t off, const void *p, size_t n)
{
    shmkv__entry *e = shmkv__entry_at(m, off);
    return e->vlen == n && (n == 0 || memcmp(e->data + e->klen, p, n) == 0);
}

/* ---- the public operations ------------------------------------------------------ */

int shmkv_set(shmkv_db *db, const void *key, size_t klen, const void *val, size_t vlen,
              shmkv_kind kind)
{
    int rc = check_write(db, key, klen, val, vlen, kind);
    if (rc)
        return rc;
    op o;
    RUN_OP(o, db, key, klen, rc = put(&o, val, vlen, kind));
    return rc;
}

int shmkv_get(shmkv_db *db, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen,
              shmkv_kind *kind)
{
    int rc = check_key(db, key, klen);
    if (rc)
        return rc;
    if (cap && !buf)
        return SHMKV_EINVAL;
    if (db->m->rdonly)
        return shmkv__read_ro(db, key, klen, true, buf, cap, vlen, kind);
    if ((rc = shmkv__read_fast(db, key, klen, true, buf, cap, vlen, kind)) != SHMKV__READ_RETRY)
        return rc;
    op o;
    RUN_OP(o, db, key, klen,
           rc = o.lk.found ? copy_value(o.m, o.lk.off, buf, cap, vlen, kind) : SHMKV_ENOTFOUND);
    return rc;
}

int shmkv_exists(shmkv_db *db, const void *key, size_t klen)
{
    int rc = check_key(db, key, klen);
    if (rc)
        return rc;
    if (db->m->rdonly) {
        rc = shmkv__read_ro(db, key, klen, false, NULL, 0, NULL, NULL);
        return rc < 0 && rc != SHMKV_ENOTFOUND ? rc : rc == 0;
    }
    rc = shmkv__read_fast(db, key, klen, false, NULL, 0, NULL, NULL);
    if (rc != SHMKV__READ_RETRY)
        return rc == 0;
    op o;
    RUN_OP(o, db, key, klen, rc = o.lk.found);
    return rc;
}

int shmkv_delete(shmkv_db *db, const void *key, size_t klen, int *existed)
{
    int rc = check_delete(db, key, klen);
    if (rc)
        return rc;
    op o;
    RUN_OP(o, db, key, klen, rc = o.lk.found ? removes(&o) : 0);
    if (existed && rc == 0)
        *existed = o.lk.found;
    return rc;
}

/* Strict decimal: optional '-', then digits, nothing else; leading zeros
 * are allowed, a value outside int64 is not. */
static int parse_i64(const unsigned char *p, size_t n, int64_t *out)
{
    bool neg = n > 0 && p[0] == '-';
    size_t i = neg;
    if (i == n)
        return SHMKV_ENOTINT;
    uint64_t v = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return SHMKV_ENOTINT;
        if (v > (UINT64_MAX - 9) / 10)
            return SHMKV_ENOTINT;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX + neg)
        return SHMKV_ENOTINT;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

int shmkv_incr(shmkv_db *db, const void *key, size_t klen, int64_t delta, shmkv_kind kind,
               int64_t *result)
{
    int rc = check_write(db, key, klen, NULL, 0, kind);
    if (rc)
        return rc;
    op o;
    int64_t now = 0;
    RUN_OP(o, db, key, klen, {
        int64_t cur = 0;
        shmkv_kind k = kind;
        rc = 0;
        if (o.lk.found) {
            shmkv__entry *e = shmkv__entry_at(o.m, o.lk.off);
            k = (shmkv_kind)shmkv__block_of(o.m, o.lk.off)->kind;
            rc = parse_i64(e->data + e->klen, e->vlen, &cur);
        }
        if (!rc && __builtin_add_overflow(cur, delta, &now))
            rc = SHMKV_EOVERFLOW;
        if (!rc) {
            char txt[24];
            int n = snprintf(txt, sizeof txt, "%lld", (long long)now);
            SHMKV__HOOK("incr.before_publish");
            rc = put(&o, txt, (size_t)n, k);
        }
    });
    if (!rc && result)
        *result = now;
    return rc;
}

int shmkv_cas(shmkv_db *db, const void *key, size_t klen, const void *expect, size_t elen,
              const void *val, size_t vlen, shmkv_kind kind, int *swapped)
{
    int rc = check_write(db, key, klen, val, vlen, kind);
    if (rc)
        return rc;
    if (elen && !expect)
        return SHMKV_EINVAL;
    op o;
    bool did = false;
    RUN_OP(o, db, key, klen, {
        did = expect ? o.lk.found && same_bytes(o.m, o.lk.off, expect, elen) : !o.lk.found;
        rc = did ? put(&o, val, vlen, kind) : 0;
    });
    if (swapped)
        *swapped = rc == 0 && did;
    return rc;
}

int shmkv_set_if_absent(shmkv_db *db, const void *key, size_t klen, const void *val,
                        size_t vlen, shmkv_kind kind, int *stored)
{
    return shmkv_cas(db, key, klen, NULL, 0, val, vlen, kind, stored);
}

int shmkv_get_or_set(shmkv_db *db, const void *key, size_t klen, const void *val, size_t vlen,
                     shmkv_kind kind, void *buf, size_t cap, size_t *outlen,
                     shmkv_kind *outkind, int *loaded)
{
    int rc = check_write_out(db, key, klen, val, vlen, kind, buf, cap);
    if (rc)
        return rc;
    op o;
    RUN_OP(o, db, key, klen, {
        if (o.lk.found) {
            rc = copy_value(o.m, o.lk.off, buf, cap, outlen, outkind);
        } else if (vlen > cap) {
            /* Refuse before storing, so a retry with a bigger buffer sees
             * the same state. */
            if (outlen)
                *outlen = vlen;
            rc = SHMKV_EBUFSIZE;
        } else {
            rc = put(&o, val, vlen, kind);
        }
    });
    if (rc == 0) {
        if (loaded)
            *loaded = o.lk.found;
        if (!o.lk.found) {
            if (vlen)
                memcpy(buf, val, vlen);
            if (outlen)
                *outlen = vlen;
            if (outkind)
                *outkind = kind;
        }
    }
    return rc;
}

int shmkv_swap(shmkv_db *db, const void *key, size_t klen, const void *val, size_t vlen,
               shmkv_kind kind, void *buf, size_t cap, size_t *outlen, shmkv_kind *outkind,
               int *loaded)
{
    int rc = check_write_out(db, key, klen, val, vlen, kind, buf, cap);
    if (rc)
        return rc;
    op o;
    RUN_OP(o, db, key, klen, {
        rc = 0;
        if (o.lk.found)
            rc = copy_value(o.m, o.lk.off, buf, cap, outlen, outkind);
        else if (outlen)
            *outlen = 0;
        if (!rc)
            rc = put(&o, val, vlen, kind);
    });
    if (rc == 0 && loaded)
        *loaded = o.lk.found;
    return rc;
}

int shmkv_compare_and_delete(shmkv_db *db, const void *key, size_t klen, const void *expect,
                             size_t elen, int *deleted)
{
    int rc = check_delete(db, key, klen);
    if (rc)
        return rc;
    if (elen && !expect)
        return SHMKV_EINVAL;
    op o;
    bool did = false;
    RUN_OP(o, db, key, klen, {
        did = o.lk.found && same_bytes(o.m, o.lk.off, expect, elen);
        rc = did ? removes(&o) : 0;
    });
    if (deleted)
        *deleted = rc == 0 && did;
    return rc;
}


int shmkv__get_locked_copy(shmkv_db *db, const void *key, size_t klen,
                           int (*fn)(void *ctx, const shmkv__entry *e, shmkv_kind kind), void *ctx)
{
    op o;
    int rc;
    RUN_OP(o, db, key, klen,
           rc = o.lk.found ? fn(ctx, shmkv__entry_at(o.m, o.lk.off),
                                (shmkv_kind)shmkv__block_of(o.m, o.lk.off)->kind)
                           : SHMKV_ENOTFOUND);
    return rc;
}
