/*
 * batch_plan.c - what every multi-key operation does first: group its keys
 * by segment, mark duplicates, take the segment locks in order (settling a
 * leader a dead batch left behind), and look keys up under those locks.
 * The batch protocol itself is described in batch.c.
 */
#include "batch.h"

#include <errno.h>
#include <stdlib.h>

static int item_cmp(const void *a, const void *b)
{
    const bitem *x = a, *y = b;
    if (x->seg != y->seg)
        return x->seg < y->seg ? -1 : 1;
    /* Within a segment any order will do as long as equal keys end up
     * next to each other: the hash decides first, so bytes are rarely
     * compared. */
    if (x->h != y->h)
        return x->h < y->h ? -1 : 1;
    int c = shmkv__keycmp(x->src->key, x->src->klen, y->src->key, y->src->klen);
    if (c)
        return c;
    return x->at < y->at ? -1 : x->at > y->at;
}

void shmkv__batch_free(batch *b)
{
    free(b->it);
    free(b->segs);
    free(b->first);
    free(b->otab);
    free(b->otombs);
    free(b->rehashed);
}

int shmkv__batch_plan(batch *b, const shmkv_item *items, size_t n, bool last_wins)
{
    shmkv__map *m = b->m;
    uint32_t nseg = SHMKV__HDR(m)->nseg;
    b->n = n;
    b->it = calloc(n ? n : 1, sizeof *b->it);
    b->segs = malloc((n ? n : 1) * sizeof *b->segs);
    b->first = malloc((n + 1) * sizeof *b->first);
    b->otab = calloc(n ? n : 1, sizeof *b->otab);
    b->otombs = calloc(n ? n : 1, sizeof *b->otombs);
    b->rehashed = calloc(n ? n : 1, sizeof *b->rehashed);
    if (!b->it || !b->segs || !b->first || !b->otab || !b->otombs || !b->rehashed)
        return -ENOMEM;
    /* Bucket by segment (a counting sort: batches are mostly spread thin
     * over the segments), then order each bucket. */
    uint32_t *cnt = calloc((size_t)nseg + 1, sizeof *cnt);
    bitem *tmp = malloc((n ? n : 1) * sizeof *tmp);
    if (!cnt || !tmp) {
        free(cnt);
        free(tmp);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        bitem *t = &tmp[i];
        memset(t, 0, sizeof *t);
        t->at = i;
        t->src = &items[i];
        t->h = shmkv__hash(items[i].key, items[i].klen);
        t->seg = (uint32_t)(t->h >> 32) & (nseg - 1);
        cnt[t->seg + 1]++;
    }
    for (uint32_t j = 0; j < nseg; j++)
        cnt[j + 1] += cnt[j];
    for (size_t i = 0; i < n; i++)
        b->it[cnt[tmp[i].seg]++] = tmp[i];
    free(tmp);
    free(cnt);
    for (size_t lo = 0, hi; lo < n; lo = hi) {
        for (hi = lo + 1; hi < n && b->it[hi].seg == b->it[lo].seg; hi++)
            ;
        if (hi - lo > 8) {
            qsort(b->it + lo, hi - lo, sizeof *b->it, item_cmp);
            continue;
        }
        for (size_t i = lo + 1; i < hi; i++) {
            bitem x = b->it[i];
            size_t j = i;
            for (; j > lo && item_cmp(&b->it[j - 1], &x) > 0; j--)
                b->it[j] = b->it[j - 1];
            b->it[j] = x;
        }
    }
    b->nsegs = 0;
    for (size_t i = 0; i < n; i++) {
        bitem *t = &b->it[i];
        if (i == 0 || t->seg != b->it[i - 1].seg) {
            b->first[b->nsegs] = i;
            b->segs[b->nsegs++] = t->seg;
        }
        bool same_next = i + 1 < n && b->it[i + 1].h == t->h &&
                         shmkv__keycmp(t->src->key, t->src->klen, b->it[i + 1].src->key,
                                       b->it[i + 1].src->klen) == 0;
        bool same_prev = i > 0 && b->it[i - 1].h == t->h &&
                         shmkv__keycmp(t->src->key, t->src->klen, b->it[i - 1].src->key,
                                       b->it[i - 1].src->klen) == 0;
        t->skip = last_wins ? same_next : same_prev;
    }
    b->first[b->nsegs] = n;
    b->lk = b->segs;
    b->nlk = b->nsegs;
    return 0;
}

/* ---- locks ------------------------------------------------------------------ */

static void unlock_segs(batch *b, size_t taken)
{
    while (taken--)
        shmkv__seg_unlock(shmkv__seg_at(b->m, b->lk[taken]));
}

/* A leader whose word is not FREE had a batch die under it. Before the word
 * is reused, every segment that may still hold an intent of that batch
 * (they are all above the leader) is locked once, which repairs it. The
 * caller holds the leader only, so this keeps the lock order. */
static int settle_leader(shmkv__map *m, uint32_t leader)
{
    shmkv__seg *l = shmkv__seg_at(m, leader);
    uint64_t w = atomic_load_explicit(&l->batch, memory_order_relaxed);
    if (B_STATE(w) == SHMKV__B_FREE)
        return 0;
    for (uint32_t j = leader + 1; j < SHMKV__HDR(m)->nseg; j++) {
        shmkv__seg *s = shmkv__seg_at(m, j);
        int rc = shmkv__seg_lock(m, s);
        if (rc)
            return rc;
        shmkv__seg_unlock(s);
    }
    atomic_store_explicit(&l->batch, B_WORD(B_GEN(w), SHMKV__B_FREE), memory_order_release);
    return 0;
}

/* Take the batch's segment locks in increasing order, then (with key
 * tracking) the index lock. A dirty index is rebuilt with nothing held and
 * the locking starts over. */
int shmkv__batch_lock(batch *b, bool writing)
{
    shmkv__map *m = b->m;
    for (;;) {
        size_t taken = 0;
        int rc = 0;
        for (; taken < b->nlk; taken++) {
            if ((rc = shmkv__seg_lock(m, shmkv__seg_at(m, b->lk[taken]))) != 0)
                break;
            if (writing && taken == 0 && (rc = settle_leader(m, b->lk[0])) != 0) {
                taken++;
                break;
            }
        }
        if (rc) {
            unlock_segs(b, taken);
            return rc;
        }
        /* Read under the segment locks: turning tracking on happens under
         * all of them. */
        b->track = writing && __atomic_load_n(&SHMKV__HDR(m)->track_keys, __ATOMIC_ACQUIRE);
        b->index_locked = false;
        if (!b->track)
            return 0;
        if ((rc = shmkv__index_lock_raw(m)) != 0) {
            unlock_segs(b, taken);
            return rc;
        }
        if (!atomic_load(&shmkv__index_of(m)->dirty)) {
            b->index_locked = true;
            return 0;
        }
        if (shmkv__index_deferred(m)) {
            /* A rebuild found no room: the batch leaves the index to the
             * next one, as single-key writes do. (It used to rebuild at
             * every batch, and a delete_many on a full store failed for
             * want of the room the rebuild needed.) */
            shmkv__index_unlock(m);
            b->track = false;
            return 0;
        }
        shmkv__index_unlock(m);
        unlock_segs(b, taken);
        if ((rc = shmkv__index_rebuild_or_defer(m)) != 0)
            return rc;
    }
}

void shmkv__batch_unlock(batch *b)
{
    if (b->index_locked)
        shmkv__index_unlock(b->m);
    b->index_locked = false;
    unlock_segs(b, b->nlk);
}

/* ---- lookups under the locks ----------------------------------------------------- */

void shmkv__batch_lookup(shmkv__map *m, shmkv__table *t, bitem *x)
{
    x->found = false;
    if (!t)
        return;
    const shmkv_item *src = x->src;
    uint64_t mask = t->cap - 1, i = x->h & mask;
    uint16_t tag = (uint16_t)(x->h >> 48);
    for (uint64_t k = 0; k <= mask; k++, i = (i + 1) & mask) {
        uint64_t w = atomic_load_explicit(&t->slot[i], memory_order_relaxed);
        if (w == SHMKV__SLOT_EMPTY)
            return;
        if (w == SHMKV__SLOT_TOMB || SHMKV__SLOT_TAG(w) != tag)
            continue;
        const shmkv__entry *e = SHMKV__P(m, SHMKV__SLOT_OFF(w));
        if (e->klen == src->klen && memcmp(e->data, src->key, src->klen) == 0) {
            x->found = true;
            x->slot = i;
            x->old = SHMKV__SLOT_OFF(w);
            return;
        }
    }
}

int shmkv__batch_check_db(shmkv_db *db)
{
    if (!shmkv__db_usable(db))
        return SHMKV_EINVAL;
    shmkv__call_begin(db);
    return 0;
}

int shmkv__batch_check_keys(const shmkv_item *items, size_t n, size_t *bad)
{
    for (size_t i = 0; i < n; i++) {
        if (items[i].klen == 0 || items[i].klen > SHMKV_KEY_MAX || !items[i].key) {
            if (bad)
                *bad = i;
            return SHMKV_EKEYSIZE;
        }
    }
    return 0;
}
