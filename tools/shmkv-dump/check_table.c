/*
 * check_table.c - --check of the segments: each table, its slots and the
 * entries they reach, and keys found in two places.
 */
#include "check.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

/* ---- tables and entries ------------------------------------------------------------ */

static int push_ent(ck *c, const ent *e)
{
    if (c->ne == c->cape) {
        size_t n = c->cape ? c->cape * 2 : 1024;
        ent *p = realloc(c->e, n * sizeof *p);
        if (!p)
            return -ENOMEM;
        c->e = p;
        c->cape = n;
    }
    c->e[c->ne++] = *e;
    return 0;
}

/* An entry's lease, when its block says it has one: inside the block after
 * key and value, an owner of at most SHMKV_OWNER_MAX bytes, a token that
 * was issued, an end no later than the latest granted. A sound one is kept
 * in *e for the index's check. */
static void check_lease(ck *c, uint32_t i, uint64_t j, ent *e)
{
    char kb[256], why[256];
    shmkv__lease l;
    const unsigned char *owner;
    e->leased = false;
    int r = entry_lease(c->v, e, c->last_token, c->lease_high, &l, &owner, why, sizeof why);
    if (r == 0)
        return;
    if (r < 0) {
        prob(c->r, "segment %" PRIu32 " slot %" PRIu64 ": key %s: %s", i, j,
             kdesc(e->key, e->klen, kb, sizeof kb), why);
        return;
    }
    if (c->h->version < 3)
        prob(c->r, "segment %" PRIu32 " slot %" PRIu64 ": key %s has a lease, but the store is "
             "of format version %" PRIu32 ", which has none", i, j,
             kdesc(e->key, e->klen, kb, sizeof kb), c->h->version);
    e->leased = true;
    e->expiry = l.expiry;
    e->token = l.token;
    c->leases++;
    c->leases_live += lclock_live(&c->clk, l.expiry);
}

int check_segment(ck *c, uint32_t i)
{
    shmkv__seg sg;
    owner_st *o = &c->ow[i];
    char why[256], kb[256];
    if (!vcopy(c->v, seg_base(c, i), &sg, sizeof sg)) {
        prob(c->r, "segment %" PRIu32 ": lies outside the file", i);
        o->walk_ok = false;
        c->tables_complete = false;
        return 0;
    }
    uint64_t toff = atomic_load_explicit(&sg.table, memory_order_relaxed);
    uint64_t count = atomic_load_explicit(&sg.count, memory_order_relaxed);
    uint64_t cgen = atomic_load_explicit(&c->h->clear_gen, memory_order_relaxed);
    if (sg.gen != cgen)
        pend(c->r, "segment %" PRIu32 ": a clear() died before emptying it; whoever takes its "
             "lock next empties it (the clear has happened: its keys are gone for every "
             "reader)", i);
    uint64_t iw = atomic_load_explicit(&sg.intent, memory_order_relaxed);
    bool del_pending = shmkv__intent_is_del(iw);
    if (del_pending)
        pend(c->r, "segment %" PRIu32 ": a delete batch led by segment %" PRIu32 " died here; "
             "whoever takes its lock next applies it or drops it, as its leader says", i,
             shmkv__intent_leader(iw));
    if (!toff) {
        if (count || sg.tombs)
            oprob(c, i, "segment %" PRIu32 ": has no table but counts %" PRIu64 " keys and %"
                  PRIu64 " tombstones", i, count, sg.tombs);
        return 0;
    }
    long bi = scan_find(&c->sc, toff);
    uint64_t cap;
    if (bi < 0) {
        if (!unknown_at(c, toff))
            prob(c->r, "segment %" PRIu32 ": table offset 0x%" PRIx64 " is not a block", i,
                 toff);
        o->walk_ok = false;
        c->tables_complete = false;
        return 0;
    }
    blk *tb = &c->sc.b[bi];
    if (tb->owner != i)
        prob(c->r, "segment %" PRIu32 ": table block 0x%" PRIx64 " belongs to owner %" PRIu32,
             i, tb->off, tb->owner);
    if (tb->ref != REF_NONE)
        prob(c->r, "segment %" PRIu32 ": table block 0x%" PRIx64 " is also referenced by %s",
             i, tb->off, ref_name(tb->ref));
    else
        tb->ref = REF_TABLE;
    if (!table_read(c->v, toff, &cap, NULL, why, sizeof why)) {
        prob(c->r, "segment %" PRIu32 ": %s", i, why);
        o->walk_ok = false;
        c->tables_complete = false;
        return 0;
    }
    uint64_t *w = malloc(cap * 8);
    uint64_t *hs = malloc(cap * 8);
    if (!w || !hs) {
        free(w);
        free(hs);
        return -ENOMEM;
    }
    uint64_t live = 0, tombs = 0, empty_at = UINT64_MAX, foreign = 0, foreign_at = 0;
    uint32_t foreign_owner = 0;
    for (uint64_t j = 0; j < cap; j++) {
        vu64(c->v, toff + sizeof(shmkv__table) + j * 8, &w[j]);
        hs[j] = UINT64_MAX; /* not a checked live entry */
        uint64_t x = w[j];
        if (x == SHMKV__SLOT_EMPTY) {
            empty_at = j;
            continue;
        }
        if (x == SHMKV__SLOT_TOMB) {
            tombs++;
            continue;
        }
        if (!SHMKV__SLOT_LIVE(x)) {
            prob(c->r, "segment %" PRIu32 " slot %" PRIu64 ": malformed word 0x%016" PRIx64,
                 i, j, x);
            continue;
        }
        if ((x & SHMKV__SLOT_DOOM) && !del_pending)
            prob(c->r, "segment %" PRIu32 " slot %" PRIu64 ": marked for a delete batch the "
                 "segment does not hold", i, j);
        live++;
        ent e;
        if (scan_find(&c->sc, SHMKV__SLOT_OFF(x)) < 0 && unknown_at(c, SHMKV__SLOT_OFF(x))) {
            o->walk_ok = false;
            c->tables_complete = false;
            continue;
        }
        if (!entry_read(c->v, &c->sc, SHMKV__SLOT_OFF(x), &e, why, sizeof why)) {
            prob(c->r, "segment %" PRIu32 " slot %" PRIu64 ": %s", i, j, why);
            c->tables_complete = false;
            continue;
        }
        blk *eb = &c->sc.b[scan_find(&c->sc, e.off)];
        if (eb->owner != i && !foreign++)
            foreign_at = j, foreign_owner = eb->owner;
        if (eb->ref != REF_NONE) {
            prob(c->r, "segment %" PRIu32 " slot %" PRIu64 ": entry block 0x%" PRIx64
                 " is also referenced by %s", i, j, eb->off, ref_name(eb->ref));
            continue;
        }
        eb->ref = REF_ENTRY;
        if (e.kind > SHMKV_KIND_JSON)
            prob(c->r, "segment %" PRIu32 " slot %" PRIu64 ": entry %s has unknown value "
                 "kind %u", i, j, kdesc(e.key, e.klen, kb, sizeof kb), e.kind);
        check_lease(c, i, j, &e);
        uint64_t hh = shmkv__hash(e.key, e.klen);
        uint32_t hseg = (uint32_t)(hh >> 32) & (c->h->nseg - 1);
        if (hseg != i)
            prob(c->r, "segment %" PRIu32 " slot %" PRIu64 ": key %s hashes to segment %"
                 PRIu32, i, j, kdesc(e.key, e.klen, kb, sizeof kb), hseg);
        if (SHMKV__SLOT_TAG(x) != (uint16_t)(hh >> 48))
            prob(c->r, "segment %" PRIu32 " slot %" PRIu64 ": tag 0x%04x does not match key "
                 "%s (hash tag 0x%04x)", i, j, SHMKV__SLOT_TAG(x),
                 kdesc(e.key, e.klen, kb, sizeof kb), (unsigned)(hh >> 48));
        hs[j] = hh;
        e.hash = hh;
        e.seg = i;
        e.slot = j;
        if (push_ent(c, &e) < 0) {
            free(w);
            free(hs);
            return -ENOMEM;
        }
    }
    if (foreign)
        prob(c->r, "segment %" PRIu32 ": %" PRIu64 " entr%s in blocks of another owner (first: "
             "slot %" PRIu64 ", owner %" PRIu32 ")", i, foreign, foreign == 1 ? "y" : "ies",
             foreign_at, foreign_owner);
    /* Reachability: no EMPTY slot between an entry's home bucket and it. */
    if (empty_at == UINT64_MAX) {
        if (cap)
            warn(c->r, "segment %" PRIu32 ": table of %" PRIu64 " slots has no empty slot "
                 "(lookups of absent keys scan it all)", i, cap);
    } else {
        shmkv__reach r = {0};
        for (uint64_t j; (j = shmkv__table_unreachable(w, hs, cap, empty_at, &r)) < cap;) {
            ent e;
            entry_read(c->v, &c->sc, SHMKV__SLOT_OFF(w[j]), &e, why, sizeof why);
            prob(c->r, "segment %" PRIu32 " slot %" PRIu64 ": key %s is unreachable: an "
                 "empty slot lies between its home bucket %" PRIu64 " and it", i, j,
                 kdesc(e.key, e.klen, kb, sizeof kb), hs[j] & (cap - 1));
        }
    }
    if (count != live)
        oprob(c, i, "segment %" PRIu32 ": counts %" PRIu64 " keys, its table holds %" PRIu64,
              i, count, live);
    if (sg.tombs != tombs)
        oprob(c, i, "segment %" PRIu32 ": counts %" PRIu64 " tombstones, its table holds %"
              PRIu64, i, sg.tombs, tombs);
    if ((live + tombs) * 4 > cap * 3)
        warn(c->r, "segment %" PRIu32 ": table %" PRIu64 "/%" PRIu64 " slots used, above "
             "the 3/4 the library keeps", i, live + tombs, cap);
    c->live_slots += live;
    free(w);
    free(hs);
    return 0;
}

void check_duplicates(ck *c)
{
    char kb[256];
    if (c->ne > 1)
        qsort(c->e, c->ne, sizeof *c->e, ent_cmp);
    for (size_t i = 1; i < c->ne; i++)
        if (ent_cmp(&c->e[i - 1], &c->e[i]) == 0)
            prob(c->r, "key %s is stored twice: segment %" PRIu32 " slot %" PRIu64
                 " and segment %" PRIu32 " slot %" PRIu64,
                 kdesc(c->e[i].key, c->e[i].klen, kb, sizeof kb), c->e[i - 1].seg,
                 c->e[i - 1].slot, c->e[i].seg, c->e[i].slot);
}

