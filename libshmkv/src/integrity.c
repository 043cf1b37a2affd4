/*
 * integrity.c - shmkv_check: the store's integrity check from inside the
 * library (as SQLite keeps its integrity_check), under every lock, so that
 * what it reads is one moment with no operation half done. It reads the
 * region through the format module's bounded validators only: a damaged
 * store gives problems, never a read outside the published region.
 *
 * What it checks: the header; that chunks tile [data_off, top) and their
 * blocks tile each chunk; each allocator's chunk and byte counts and the
 * free pool's; each segment's table, every live slot's entry (a block of
 * that segment, referenced once, whose key hashes to this segment and slot
 * tag, and is reachable from its home slot) and its key and tombstone
 * counts; and, when the key index is current, its tree (order, counts,
 * keys all live in their tables), its key count and its key array. Not
 * checked: blocks in use that nothing references (leaked space), which
 * shmkv-dump --check reports.
 */
#include "integrity.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- segments ------------------------------------------------------------------ */

/* The lease of the entry at eoff (block flag SHMKV__BF_LEASE): its bounds
 * and fields; a live one is counted for the index check. */
static void check_lease(shmkv__ick *c, uint32_t i, uint64_t j, uint64_t eoff, const shmkv__entry *e,
                        uint64_t bytes)
{
    shmkv__lease l;
    uint64_t last = atomic_load_explicit(&c->h->claim_token, memory_order_relaxed);
    uint64_t high = atomic_load_explicit(&c->h->lease_high, memory_order_relaxed);
    int f = shmkv__view_lease(&c->v, eoff, e, bytes, last, high, &l);
    if (f) {
        shmkv__ick_problem(c, "segment %" PRIu32 " slot %" PRIu64 ": entry 0x%" PRIx64 ": %s", i, j,
                eoff, shmkv__ick_fault_name(f));
        return;
    }
    if (c->h->version < 3)
        shmkv__ick_problem(c, "segment %" PRIu32 " slot %" PRIu64 ": a lease in a store of format "
                "version %" PRIu32, i, j, c->h->version);
    if (l.expiry > c->now)
        c->live_leases++;
}

static int check_segment(shmkv__ick *c, uint32_t i)
{
    shmkv__seg *s = shmkv__seg_at(c->m, i);
    uint64_t toff = atomic_load_explicit(&s->table, memory_order_relaxed);
    uint64_t count = atomic_load_explicit(&s->count, memory_order_relaxed);
    if (s->id != i)
        shmkv__ick_problem(c, "segment %" PRIu32 ": id field is %" PRIu32, i, s->id);
    shmkv__ick_check_alloc(c, i, &s->alloc, "segment", i);
    shmkv__ick_check_free_lists(c, &s->alloc, i, "segment", i);
    if (!toff) {
        if (count || s->tombs)
            shmkv__ick_problem(c, "segment %" PRIu32 ": no table but %" PRIu64 " keys and %" PRIu64
                    " tombstones", i, count, s->tombs);
        return 0;
    }
    shmkv__block tb;
    uint64_t cap, bytes;
    int f = shmkv__view_table(&c->v, toff, &tb, &cap, &bytes);
    if (f) {
        shmkv__ick_problem(c, "segment %" PRIu32 ": table 0x%" PRIx64 ": %s", i, toff, shmkv__ick_fault_name(f));
        return 0;
    }
    if (c->tiled && !shmkv__ick_block_ref(c, toff, i, "table", i))
        return 0;
    const shmkv__table *t = shmkv__view_at(&c->v, toff, 8 + cap * 8);
    uint64_t *ws = malloc(cap * sizeof *ws); /* the slot words */
    uint64_t *hs = malloc(cap * sizeof *hs); /* hash of each checked live slot */
    if (!ws || !hs) {
        free(ws);
        free(hs);
        return -ENOMEM;
    }
    for (uint64_t j = 0; j < cap; j++) {
        ws[j] = atomic_load_explicit(&t->slot[j], memory_order_relaxed);
        hs[j] = UINT64_MAX;
    }
    uint64_t live = 0, tombs = 0;
    for (uint64_t j = 0; j < cap; j++) {
        uint64_t w = ws[j];
        if (w == SHMKV__SLOT_EMPTY)
            continue;
        if (w == SHMKV__SLOT_TOMB) {
            tombs++;
            continue;
        }
        if (!SHMKV__SLOT_LIVE(w)) {
            shmkv__ick_problem(c, "segment %" PRIu32 " slot %" PRIu64 ": malformed word 0x%016" PRIx64, i,
                    j, w);
            continue;
        }
        if ((w & SHMKV__SLOT_DOOM) && !shmkv__intent_is_del(atomic_load(&s->intent)))
            shmkv__ick_problem(c, "segment %" PRIu32 " slot %" PRIu64 ": marked for a delete batch the "
                    "segment does not hold", i, j);
        live++;
        uint64_t eoff = SHMKV__SLOT_OFF(w);
        shmkv__block eb;
        shmkv__entry e;
        f = shmkv__view_entry(&c->v, eoff, &eb, &e, &bytes);
        if (f) {
            shmkv__ick_problem(c, "segment %" PRIu32 " slot %" PRIu64 ": entry 0x%" PRIx64 ": %s", i, j,
                    eoff, shmkv__ick_fault_name(f));
            continue;
        }
        if (c->tiled && !shmkv__ick_block_ref(c, eoff, i, "entry", i))
            continue;
        const unsigned char *key = c->v.base + eoff + sizeof e;
        uint64_t hh = shmkv__hash(key, e.klen);
        if (((uint32_t)(hh >> 32) & (c->h->nseg - 1)) != i)
            shmkv__ick_problem(c, "segment %" PRIu32 " slot %" PRIu64 ": its key belongs to segment %" PRIu32,
                    i, j, (uint32_t)(hh >> 32) & (c->h->nseg - 1));
        else if (SHMKV__SLOT_TAG(w) != (uint16_t)(hh >> 48))
            shmkv__ick_problem(c, "segment %" PRIu32 " slot %" PRIu64 ": tag does not match its key", i, j);
        if (eb.kind > SHMKV_KIND_JSON)
            shmkv__ick_problem(c, "segment %" PRIu32 " slot %" PRIu64 ": unknown value kind %u", i, j,
                    eb.kind);
        if (eb.flags & SHMKV__BF_LEASE)
            check_lease(c, i, j, eoff, &e, bytes);
        hs[j] = hh;
    }
    uint64_t empty = cap;
    for (uint64_t j = 0; j < cap && empty == cap; j++)
        if (ws[j] == SHMKV__SLOT_EMPTY)
            empty = j;
    shmkv__reach r = {0};
    for (uint64_t j; empty < cap && (j = shmkv__table_unreachable(ws, hs, cap, empty, &r)) < cap;)
        shmkv__ick_problem(c, "segment %" PRIu32 " slot %" PRIu64 ": unreachable from its home "
                "slot %" PRIu64, i, j, hs[j] & (cap - 1));
    free(ws);
    free(hs);
    if (live != count || tombs != s->tombs)
        shmkv__ick_problem(c, "segment %" PRIu32 ": counts %" PRIu64 " keys and %" PRIu64 " tombstones, "
                "its table holds %" PRIu64 " and %" PRIu64, i, count, s->tombs, live, tombs);
    c->live_keys += live;
    return 0;
}

/* ---- the call ---------------------------------------------------------------- */

static int run(shmkv__ick *c)
{
    const shmkv__hdr *h = c->h;
    int f = shmkv__hdr_fault(h);
    if (f) {
        shmkv__ick_problem(c, "header: %s", f == SHMKV__F_LAYOUT ? "offsets not what creation writes"
                                                      : shmkv__ick_fault_name(f));
        return 0;
    }
    uint64_t fs = atomic_load(&h->file_size);
    if (fs < c->v.len || fs > h->reserve)
        shmkv__ick_problem(c, "header: allocated file size %" PRIu64 " outside [top %" PRIu64
                ", reserve %" PRIu64 "]", fs, c->v.len, h->reserve);
    if (atomic_load(&h->clean) > 1)
        shmkv__ick_problem(c, "header: clean flag is %" PRIu32, atomic_load(&h->clean));
    for (uint32_t i = 0; i < SHMKV__ATTACH_SLOTS; i++)
        if (atomic_load(&h->attach[i].pid) < 0)
            shmkv__ick_problem(c, "header: attach slot %" PRIu32 " holds pid %" PRId32, i,
                    atomic_load(&h->attach[i].pid));
    uint32_t n = h->nseg + 1;
    c->nchunks = calloc(n, 8);
    c->chunk_bytes = calloc(n, 8);
    c->used_bytes = calloc(n, 8);
    if (!c->nchunks || !c->chunk_bytes || !c->used_bytes)
        return -ENOMEM;
    int rc = shmkv__ick_walk_region(c);
    if (rc)
        return rc;
    if (c->nb && !(c->blk_ref = calloc(c->nb, 1)))
        return -ENOMEM;
    if (c->tiled && c->pool != h->pool_bytes)
        shmkv__ick_problem(c, "header: free pool holds %" PRIu64 " bytes, pool_bytes says %" PRIu64,
                c->pool, h->pool_bytes);
    for (uint32_t i = 0; i < h->nseg; i++)
        if ((rc = check_segment(c, i)) != 0)
            return rc;
    c->tables_ok = c->problems == 0;
    shmkv__ick_check_index(c);
    return 0;
}

int shmkv_check(shmkv_db *db, uint64_t *problems, char *msg, size_t cap)
{
    if (problems)
        *problems = 0;
    if (msg && cap)
        msg[0] = 0;
    if (!shmkv__db_usable(db))
        return SHMKV_EINVAL;
    shmkv__map *m = db->m;
    if (m->rdonly)
        return SHMKV_EREADONLY; /* it cannot take the locks */
    shmkv__call_begin(db);
    int rc = shmkv__hold_all(m);
    if (rc)
        return rc;
    shmkv__ick c = {.m = m, .h = SHMKV__HDR(m), .msg = msg, .cap = cap};
    c.v.base = m->base;
    c.v.len = atomic_load(&SHMKV__HDR(m)->top);
    c.now = shmkv__lease_now(m);
    rc = run(&c);
    shmkv__release_all(m);
    free(c.blk);
    free(c.blk_owner);
    free(c.blk_ref);
    free(c.nchunks);
    free(c.chunk_bytes);
    free(c.used_bytes);
    if (rc)
        return rc;
    if (problems)
        *problems = c.problems;
    return c.problems ? SHMKV_ECORRUPT : 0;
}
