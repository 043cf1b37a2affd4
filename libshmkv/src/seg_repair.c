/*
 * seg_repair.c - a segment whose lock holder died, and the segment lock
 * that repairs it.
 *
 * The dead holder may have been anywhere in a single-key write, a batch,
 * a rehash, a clear or an allocation. Its batch intent is rolled forward
 * or dropped, a clear it had decided is finished, and then the live
 * entries are marked from the table and the segment's allocator rebuilt
 * around them: whatever the holder allocated but never published is
 * reclaimed.
 */
#include "internal.h"

int shmkv__seg_lock(shmkv__map *m, shmkv__seg *s)
{
    int rc = shmkv__seg_acquire(s);
    if (rc != SHMKV__OWNER_DIED)
        return rc;
    /* The dead owner may have been anywhere between allocating and
     * publishing; the repair must finish before anyone else sees the
     * segment, i.e. before the mutex is marked consistent. */
    SHMKV__HOOK("lock.repair");
    atomic_fetch_add(&SHMKV__HDR(m)->recoveries, 1);
    rc = shmkv__seg_recover(m, s);
    pthread_mutex_consistent(&s->lock);
    if (rc) {
        shmkv__seg_unlock(s);
        return rc;
    }
    return 0;
}

int shmkv__lock_all(shmkv__map *m)
{
    uint32_t n = SHMKV__HDR(m)->nseg;
    for (uint32_t i = 0; i < n; i++) {
        int rc = shmkv__seg_lock(m, shmkv__seg_at(m, i));
        if (rc) {
            while (i--)
                shmkv__seg_unlock(shmkv__seg_at(m, i));
            return rc;
        }
    }
    return 0;
}

void shmkv__unlock_all(shmkv__map *m)
{
    for (uint32_t i = SHMKV__HDR(m)->nseg; i--;)
        shmkv__seg_unlock(shmkv__seg_at(m, i));
}

static bool entry_sane(shmkv__map *m, uint64_t off)
{
    if (!shmkv__in_region(m, off - SHMKV__BLOCK_HDR, SHMKV__BLOCK_HDR + sizeof(shmkv__entry)))
        return false;
    shmkv__block *b = shmkv__block_of(m, off);
    uint64_t bytes = shmkv__block_bytes(m, off);
    if (!(b->flags & SHMKV__BF_USED) || bytes < 16 || !shmkv__in_region(m, off - SHMKV__BLOCK_HDR, bytes))
        return false;
    shmkv__entry *e = shmkv__entry_at(m, off);
    return (uint64_t)e->klen + e->vlen + sizeof *e + SHMKV__BLOCK_HDR <= bytes && e->klen > 0;
}

/* The table at toff if its block and cap are sound, else NULL. */
static shmkv__table *table_sane(shmkv__map *m, uint64_t toff)
{
    if (!toff || !shmkv__in_region(m, toff - SHMKV__BLOCK_HDR, SHMKV__BLOCK_HDR + 8))
        return NULL;
    shmkv__table *t = (shmkv__table *)SHMKV__P(m, toff);
    uint64_t tbytes = shmkv__block_bytes(m, toff);
    if (tbytes < SHMKV__BLOCK_HDR + 8 + 16 * 8 || t->cap < 16 || (t->cap & (t->cap - 1)) ||
        t->cap > (tbytes - SHMKV__BLOCK_HDR - 8) / 8 ||
        !shmkv__in_region(m, toff - SHMKV__BLOCK_HDR, tbytes))
        return NULL;
    return t;
}

int shmkv__seg_recover(shmkv__map *m, shmkv__seg *s)
{
    shmkv__batch_recover(m, s);
    /* A clear() that had published its generation died before emptying
     * this segment: the clear has happened, so finish it here. */
    uint64_t gen = atomic_load(&SHMKV__HDR(m)->clear_gen);
    if (s->gen != gen)
        return shmkv__seg_clear(m, s, gen);
    uint64_t toff = atomic_load(&s->table), count = 0, tombs = 0;
    if (toff && !shmkv__in_region(m, toff - SHMKV__BLOCK_HDR, SHMKV__BLOCK_HDR + 8)) {
        atomic_store(&s->table, 0); /* unreadable: the segment's keys are lost */
        toff = 0;
    }
    if (toff) {
        shmkv__table *t = table_sane(m, toff);
        if (!t)
            return SHMKV_ECORRUPT;
        shmkv__block_of(m, toff)->flags |= SHMKV__BF_MARK;
        for (uint64_t i = 0; i < t->cap; i++) {
            uint64_t w = atomic_load(&t->slot[i]);
            if (w == SHMKV__SLOT_TOMB) {
                tombs++;
            } else if (w != SHMKV__SLOT_EMPTY) {
                if (w & SHMKV__SLOT_DOOM) /* no intent is left to own it */
                    atomic_store(&t->slot[i], w &= ~SHMKV__SLOT_DOOM);
                if (!entry_sane(m, SHMKV__SLOT_OFF(w))) {
                    atomic_store(&t->slot[i], SHMKV__SLOT_TOMB);
                    tombs++;
                    continue;
                }
                shmkv__block_of(m, SHMKV__SLOT_OFF(w))->flags |= SHMKV__BF_MARK;
                count++;
            }
        }
    }
    SHMKV__HOOK("recover.marked");
    int rc = shmkv__alloc_rebuild(m, &s->alloc, s->id);
    atomic_store(&s->count, count);
    s->tombs = tombs;
    return rc;
}

void shmkv__batch_recover(shmkv__map *m, shmkv__seg *s)
{
    uint64_t ioff = atomic_load(&s->intent);
    if (!ioff)
        return;
    if (shmkv__intent_is_del(ioff)) {
        /* A delete batch: empty the marked slots if it committed, else
         * unmark them. The recount that follows the repair counts them.
         * The word is cleared only after the marks are dealt with, so that
         * a repairer killed half way leaves the verdict to the next one. */
        uint32_t leader = shmkv__intent_leader(ioff);
        bool commit = leader < SHMKV__HDR(m)->nseg &&
                      shmkv__intent_del_committed(ioff, atomic_load(&shmkv__seg_at(m, leader)->batch));
        shmkv__table *t = table_sane(m, atomic_load(&s->table));
        for (uint64_t i = 0; t && i < t->cap; i++) {
            uint64_t w = atomic_load(&t->slot[i]);
            if (SHMKV__SLOT_LIVE(w) && (w & SHMKV__SLOT_DOOM))
                atomic_store(&t->slot[i], commit ? SHMKV__SLOT_TOMB : w & ~SHMKV__SLOT_DOOM);
        }
        atomic_store(&s->intent, 0);
        return;
    }
    /* Whatever happens below, the intent is spent: its block is unmarked,
     * so the allocator rebuild that follows reclaims it. */
    const shmkv__block *blk = NULL;
    const shmkv__intent *in = NULL;
    if (shmkv__in_region(m, ioff - SHMKV__BLOCK_HDR, SHMKV__BLOCK_HDR + sizeof *in)) {
        blk = shmkv__block_of(m, ioff);
        in = SHMKV__P(m, ioff);
        /* A large batch's intent is a big block, whose size field is 0. */
        uint64_t bytes = shmkv__block_bytes(m, ioff);
        if (!(blk->flags & SHMKV__BF_USED) || !shmkv__in_region(m, ioff - SHMKV__BLOCK_HDR, bytes) ||
            sizeof *in + (uint64_t)in->n * sizeof in->ch[0] + SHMKV__BLOCK_HDR > bytes ||
            in->leader >= SHMKV__HDR(m)->nseg)
            in = NULL;
    }
    shmkv__table *t = table_sane(m, atomic_load(&s->table));
    if (in && t) {
        uint64_t w = atomic_load(&shmkv__seg_at(m, in->leader)->batch);
        if (w == ((in->gen << 2) | SHMKV__B_COMMITTED)) {
            /* Rolling forward: the same stores again are harmless. */
            for (uint32_t i = 0; i < in->n; i++)
                if (in->ch[i].slot < t->cap)
                    atomic_store(&t->slot[in->ch[i].slot], in->ch[i].word);
        }
    }
    atomic_store(&s->intent, 0);
}

bool shmkv__batch_pending(shmkv__map *m)
{
    for (uint32_t i = 0; i < SHMKV__HDR(m)->nseg; i++)
        if (atomic_load(&shmkv__seg_at(m, i)->intent))
            return true;
    return false;
}
