/*
 * table.c - the hash table of one segment: probe, insert, replace, remove,
 * rehash, visit, clear. The caller holds the segment's lock.
 *
 * Open addressing with linear probing. A slot is one 8-byte word (tag and
 * entry offset) and every change a reader could observe is one aligned
 * store of a slot: a new entry is written out of place first, then
 * published, then the old one freed. A writer killed at any point leaves
 * either the old or the new state plus, at worst, an unreachable block that
 * shmkv__seg_recover (seg_repair.c) reclaims. Readers without the lock are
 * in reader.c, the single-key operations in ops.c.
 */
#include "internal.h"

void shmkv__seg_find(shmkv__map *m, shmkv__seg *s, uint64_t h, const void *key, size_t klen,
                    shmkv__lookup *lk)
{
    uint64_t toff = atomic_load_explicit(&s->table, memory_order_relaxed);
    lk->found = false;
    lk->slot_valid = false;
    lk->t = toff ? (shmkv__table *)SHMKV__P(m, toff) : NULL;
    if (!lk->t)
        return;
    uint64_t mask = lk->t->cap - 1, i = h & mask, first_tomb = UINT64_MAX;
    uint16_t tag = (uint16_t)(h >> 48);
    for (uint64_t n = 0; n <= mask; n++, i = (i + 1) & mask) {
        uint64_t w = atomic_load_explicit(&lk->t->slot[i], memory_order_relaxed);
        if (w == SHMKV__SLOT_EMPTY) {
            lk->slot = first_tomb != UINT64_MAX ? first_tomb : i;
            lk->slot_valid = true;
            return;
        }
        if (w == SHMKV__SLOT_TOMB) {
            if (first_tomb == UINT64_MAX)
                first_tomb = i;
            continue;
        }
        if (SHMKV__SLOT_TAG(w) != tag)
            continue;
        shmkv__entry *e = shmkv__entry_at(m, SHMKV__SLOT_OFF(w));
        if (e->klen == klen && memcmp(e->data, key, klen) == 0) {
            lk->found = true;
            lk->slot = i;
            lk->off = SHMKV__SLOT_OFF(w);
            return;
        }
    }
    if (first_tomb != UINT64_MAX) {
        lk->slot = first_tomb;
        lk->slot_valid = true;
    }
}

/* ---- table growth ---------------------------------------------------------- */

static int rehash(shmkv__map *m, shmkv__seg *s, uint64_t cap, uint64_t *keep)
{
    uint64_t noff;
    int rc = shmkv__alloc_block(m, &s->alloc, s->id, sizeof(shmkv__table) + cap * 8, &noff);
    if (rc)
        return rc;
    shmkv__table *nt = (shmkv__table *)SHMKV__P(m, noff);
    nt->cap = cap;
    memset((void *)nt->slot, 0, cap * 8);
    uint64_t ooff = atomic_load_explicit(&s->table, memory_order_relaxed);
    if (ooff) {
        shmkv__table *ot = (shmkv__table *)SHMKV__P(m, ooff);
        for (uint64_t i = 0; i < ot->cap; i++) {
            uint64_t w = atomic_load_explicit(&ot->slot[i], memory_order_relaxed);
            if (!SHMKV__SLOT_LIVE(w))
                continue;
            shmkv__entry *e = shmkv__entry_at(m, SHMKV__SLOT_OFF(w));
            uint64_t j = shmkv__hash(e->data, e->klen) & (cap - 1);
            while (atomic_load_explicit(&nt->slot[j], memory_order_relaxed))
                j = (j + 1) & (cap - 1);
            atomic_store_explicit(&nt->slot[j], w, memory_order_relaxed);
        }
    }
    SHMKV__HOOK("rehash.before_publish");
    atomic_store_explicit(&s->table, noff, memory_order_release);
    SHMKV__HOOK("rehash.after_publish");
    s->tombs = 0;
    if (keep)
        *keep = ooff;
    else if (ooff)
        shmkv__free_block(m, &s->alloc, ooff);
    return 0;
}

int shmkv__seg_rehash(shmkv__map *m, shmkv__seg *s, uint64_t cap, uint64_t *keep)
{
    return rehash(m, s, cap, keep);
}

/* Make room for one more key; keeps live + tombstones under 3/4 of the
 * slots so probes stay short and always meet an empty slot. */
int shmkv__seg_room(shmkv__map *m, shmkv__seg *s, const void *key, size_t klen, uint64_t h,
                   shmkv__lookup *lk)
{
    uint64_t count = atomic_load_explicit(&s->count, memory_order_relaxed);
    if (lk->t && lk->slot_valid && (count + s->tombs + 1) * 4 <= lk->t->cap * 3)
        return 0;
    uint64_t cap = 16;
    while (cap < (count + 1) * 2)
        cap *= 2;
    int rc = rehash(m, s, cap, NULL);
    if (rc)
        return rc;
    shmkv__seg_find(m, s, h, key, klen, lk);
    return 0;
}

/* ---- publishing ----------------------------------------------------------- */

void shmkv__seg_replace(shmkv__lookup *lk, uint64_t h, uint64_t noff)
{
    SHMKV__HOOK("set.before_publish");
    atomic_store_explicit(&lk->t->slot[lk->slot], shmkv__slot_word(h, noff), memory_order_release);
    SHMKV__HOOK("set.after_publish");
}

void shmkv__seg_insert(shmkv__seg *s, shmkv__lookup *lk, uint64_t h, uint64_t noff)
{
    uint64_t old = atomic_load_explicit(&lk->t->slot[lk->slot], memory_order_relaxed);
    SHMKV__HOOK("set.before_publish");
    atomic_store_explicit(&lk->t->slot[lk->slot], shmkv__slot_word(h, noff), memory_order_release);
    SHMKV__HOOK("set.after_publish");
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
    if (old == SHMKV__SLOT_TOMB)
        s->tombs--;
}

void shmkv__seg_remove(shmkv__seg *s, shmkv__lookup *lk)
{
    /* When the next slot is empty no probe runs through this one, so it can
     * become empty instead of a tombstone. */
    uint64_t mask = lk->t->cap - 1;
    uint64_t next = atomic_load_explicit(&lk->t->slot[(lk->slot + 1) & mask], memory_order_relaxed);
    uint64_t w = next == SHMKV__SLOT_EMPTY ? SHMKV__SLOT_EMPTY : SHMKV__SLOT_TOMB;
    atomic_store_explicit(&lk->t->slot[lk->slot], w, memory_order_release);
    SHMKV__HOOK("delete.after_publish");
    atomic_fetch_sub_explicit(&s->count, 1, memory_order_relaxed);
    if (w == SHMKV__SLOT_TOMB)
        s->tombs++;
}

void shmkv__seg_shrink(shmkv__map *m, shmkv__seg *s, shmkv__lookup *lk)
{
    if (atomic_load_explicit(&s->count, memory_order_relaxed) != 0)
        return;
    /* An empty segment needs no table (the next insert makes one), and
     * without it the segment holds no block: its chunks go back to the
     * pool. Unpublished first, so a crash leaves the block to recovery. */
    uint64_t toff = atomic_load_explicit(&s->table, memory_order_relaxed);
    if (!toff)
        return;
    atomic_store_explicit(&s->table, 0, memory_order_release);
    s->tombs = 0;
    lk->t = NULL;
    shmkv__free_block(m, &s->alloc, toff);
}

/* ---- whole segment ---------------------------------------------------------- */

int shmkv__seg_clear(shmkv__map *m, shmkv__seg *s, uint64_t gen)
{
    atomic_store_explicit(&s->table, 0, memory_order_release);
    atomic_store(&s->count, 0);
    s->tombs = 0;
    SHMKV__HOOK("clear.mid");
    shmkv__alloc_reset(m, &s->alloc, s->id);
    /* Last: until here a repair finds the generation behind and redoes
     * all of the above, which is safe to run twice. */
    s->gen = gen;
    return 0;
}

shmkv__seg *shmkv__seg_of(shmkv__map *m, const void *key, size_t klen)
{
    return shmkv__seg_for(m, shmkv__hash(key, klen));
}

bool shmkv__seg_has(shmkv__map *m, shmkv__seg *s, const void *key, size_t klen)
{
    shmkv__lookup lk;
    shmkv__seg_find(m, s, shmkv__hash(key, klen), key, klen, &lk);
    return lk.found;
}

int shmkv__seg_visit(shmkv__map *m, shmkv__seg *s,
                     int (*fn)(void *ctx, uint64_t entry_off), void *ctx)
{
    uint64_t toff = atomic_load_explicit(&s->table, memory_order_relaxed);
    if (!toff)
        return 0;
    shmkv__table *t = (shmkv__table *)SHMKV__P(m, toff);
    for (uint64_t i = 0; i < t->cap; i++) {
        uint64_t w = atomic_load_explicit(&t->slot[i], memory_order_relaxed);
        if (SHMKV__SLOT_LIVE(w)) {
            int rc = fn(ctx, SHMKV__SLOT_OFF(w));
            if (rc)
                return rc;
        }
    }
    return 0;
}
