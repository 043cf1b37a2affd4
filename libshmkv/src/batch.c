/*
 * batch.c - operations on many keys at once: get_many, set_many,
 * delete_many, delete_prefix.
 *
 * A batch takes the segment locks of all its keys in increasing order and
 * holds them to the end, which is what makes it atomic for live processes:
 * every reader, with or without the lock, goes through one of those
 * segments and finds it busy.
 *
 * A process killed inside a batch is the harder case: the segments it held
 * are repaired one at a time, by whichever process locks each first, so
 * each repair must reach the same verdict on its own. The writer therefore
 *   1. marks the batch PREPARED in a word of its lowest segment (the
 *      "leader"), with a fresh generation;
 *   2. writes every new entry out of place and, per segment, an intent
 *      block listing the slot stores that segment will make, published by
 *      the segment's `intent` word;
 *   3. commits with one store: leader->batch = gen | COMMITTED;
 *   4. makes the slot stores, frees what they replaced, drops the intents,
 *      and sets the leader's word FREE.
 * A segment repair that finds an intent applies it if and only if the
 * leader's word says that generation committed (the slot stores are
 * idempotent), then lets the allocator rebuild reclaim whatever is
 * unreachable. The leader's word keeps its verdict until the next batch
 * led by that segment, which first locks every higher segment once so that
 * any intent still pointing at the old verdict is resolved before it is
 * overwritten.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

_Static_assert(sizeof(shmkv__seg) == 960, "batch fields must stay inside the old tail padding");

#define B_WORD(gen, st) (((gen) << 2) | (st))
#define B_GEN(w) ((w) >> 2)
#define B_STATE(w) ((w) & 3u)

/* One key of a batch, as it goes from validation to publication. */
typedef struct bitem {
    size_t at;        /* caller's index */
    uint64_t h;
    uint32_t seg;
    bool skip;        /* a later entry has the same key (set) or an earlier one (delete) */
    bool found;
    uint64_t slot;    /* the key's slot, or the one claimed for its insert */
    uint64_t old;     /* entry payload replaced or deleted */
    uint64_t noff;    /* set: the new entry */
    const shmkv_item *src;
} bitem;

typedef struct batch {
    shmkv_db *db;
    shmkv__map *m;
    bitem *it;
    size_t n;
    uint32_t *segs;   /* distinct segments, increasing */
    size_t nsegs;
    size_t *first;    /* first item of segs[j] in it[] (nsegs + 1 entries) */
    uint64_t *otab;   /* per segment: the table a rehash replaced, kept until the commit */
    uint64_t *otombs; /* and its tombstone count, for a batch that fails */
    bool *rehashed;
    const uint32_t *lk; /* segments to lock, increasing: segs, or all of them */
    size_t nlk;
    bool set;
    bool track;
    bool index_locked;
    uint64_t gen;
} batch;

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

static void batch_free(batch *b)
{
    free(b->it);
    free(b->segs);
    free(b->first);
    free(b->otab);
    free(b->otombs);
    free(b->rehashed);
}

/* Group the items by segment (then hash and key, then position) and mark the
 * duplicates: for a set the last entry of a key wins, for a delete the
 * first one acts. */
static int batch_plan(batch *b, const shmkv_item *items, size_t n, bool last_wins)
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
static int lock_batch(batch *b, bool writing)
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
        shmkv__index_unlock(m);
        unlock_segs(b, taken);
        if ((rc = shmkv__index_rebuild_all(m)) != 0)
            return rc;
    }
}

static void unlock_batch(batch *b)
{
    if (b->index_locked)
        shmkv__index_unlock(b->m);
    b->index_locked = false;
    unlock_segs(b, b->nlk);
}

/* ---- lookups under the locks ----------------------------------------------------- */

static inline shmkv__table *table_of(shmkv__map *m, shmkv__seg *s)
{
    uint64_t toff = atomic_load_explicit(&s->table, memory_order_relaxed);
    return toff ? (shmkv__table *)SHMKV__P(m, toff) : NULL;
}

static void lookup(shmkv__map *m, shmkv__table *t, bitem *x)
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

/* ---- get_many ----------------------------------------------------------------------- */

/* Every public call of this file starts here: a usable handle and this
 * call's lock wait. (A read-only map is also a read-only handle, so the
 * writes below refuse it before they lock anything.) */
static int check_db(shmkv_db *db)
{
    if (!shmkv__db_usable(db))
        return SHMKV_EINVAL;
    shmkv__call_begin(db);
    return 0;
}

static int check_keys(const shmkv_item *items, size_t n, size_t *bad)
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

/* get_many first reads without locks, like get (table.c): note the seq of
 * every involved segment, read them all, then check that no seq moved.
 * A batch holds all its segments from before its first store to after its
 * last, so if none of ours changed, no batch (or single write) touched our
 * keys while we read them: the values are one instant's. What is read
 * before the check may be garbage, so every offset is bounded by the
 * published top first, and the caller's items and buffer only count once
 * the check passed (a failed attempt is overwritten by the next one). */
SHMKV__SEQ_READER static bool get_many_unlocked(batch *b, shmkv_item *items, unsigned char *buf,
                                         size_t cap, uint32_t *seqs, const uint32_t *dead,
                                         size_t *used)
{
    shmkv__map *m = b->m;
    for (size_t j = 0; j < b->nsegs; j++) {
        seqs[j] = atomic_load_explicit(&shmkv__seg_at(m, b->segs[j])->seq, memory_order_acquire);
        if ((seqs[j] & 1) && !(dead && dead[j] == seqs[j]))
            return false;
    }
    const shmkv__hdr *hd = SHMKV__HDR(m);
    uint64_t top = atomic_load_explicit(&hd->top, memory_order_acquire);
    uint64_t lo = hd->data_off + SHMKV__BLOCK_HDR;
    size_t u = 0;
    for (size_t j = 0; j < b->nsegs; j++) {
        shmkv__seg *s = shmkv__seg_at(m, b->segs[j]);
        uint64_t toff = atomic_load_explicit(&s->table, memory_order_relaxed), tcap = 0;
        if ((seqs[j] & 1) && shmkv__ro_cleared(m, s))
            toff = 0;
        shmkv__table *t = NULL;
        const shmkv__intent *in = NULL;
        uint32_t nin = 0;
        if (toff) {
            if (toff < lo || toff >= top || top - toff < sizeof(shmkv__table))
                return false;
            t = (shmkv__table *)SHMKV__P(m, toff);
            tcap = t->cap;
            if (!tcap || (tcap & (tcap - 1)) || tcap > (top - toff - sizeof *t) / 8)
                return false;
            if (seqs[j] & 1)
                in = shmkv__ro_intent(m, s, tcap, &nin);
        }
        for (size_t i = b->first[j]; i < b->first[j + 1]; i++) {
            bitem *x = &b->it[i];
            shmkv_item *out = &items[x->at];
            out->rc = SHMKV_ENOTFOUND;
            out->val = NULL;
            out->vlen = 0;
            out->kind = SHMKV_KIND_BYTES;
            if (!t)
                continue;
            uint64_t mask = tcap - 1, k = x->h & mask;
            uint16_t tag = (uint16_t)(x->h >> 48);
            for (uint64_t probe = 0; probe <= mask; probe++, k = (k + 1) & mask) {
                uint64_t w = atomic_load_explicit(&t->slot[k], memory_order_relaxed);
                w = shmkv__ro_slot(in, nin, k, w);
                if (w == SHMKV__SLOT_EMPTY)
                    break;
                if (w == SHMKV__SLOT_TOMB || SHMKV__SLOT_TAG(w) != tag)
                    continue;
                uint64_t off = SHMKV__SLOT_OFF(w);
                if (off < lo || off >= top || top - off < sizeof(shmkv__entry))
                    return false;
                const shmkv__entry *e = SHMKV__P(m, off);
                uint64_t ek = e->klen, ev = e->vlen;
                if (ek != x->src->klen)
                    continue;
                if (ek + ev > top - off - sizeof *e)
                    return false;
                if (!shmkv__racy_equal(e->data, x->src->key, (size_t)ek))
                    continue;
                out->rc = 0;
                out->vlen = (size_t)ev;
                out->kind = (shmkv_kind)shmkv__block_of(m, off)->kind;
                if (u + ev <= cap) {
                    out->val = buf + u;
                    if (ev)
                        shmkv__racy_copy(buf + u, e->data + ek, (size_t)ev);
                }
                u += (size_t)ev;
                break;
            }
        }
        if (j == 0)
            SHMKV__HOOK("get_many.unlocked");
    }
    atomic_thread_fence(memory_order_acquire);
    for (size_t j = 0; j < b->nsegs; j++)
        if (atomic_load_explicit(&shmkv__seg_at(m, b->segs[j])->seq, memory_order_relaxed) != seqs[j])
            return false;
    *used = u;
    return true;
}

int shmkv_get_many(shmkv_db *db, shmkv_item *items, size_t n, void *buf, size_t cap,
                   size_t *need, size_t *bad)
{
    int rc = check_db(db);
    if (rc)
        return rc;
    if ((n && !items) || (cap && !buf))
        return SHMKV_EINVAL;
    if ((rc = check_keys(items, n, bad)) != 0)
        return rc;
    if (need)
        *need = 0;
    if (n == 0)
        return 0;
    batch b = {.db = db, .m = db->m};
    size_t used = 0;
    uint32_t *seqs = NULL, *dead = NULL;
    if ((rc = batch_plan(&b, items, n, false)) != 0)
        goto out;
    if ((seqs = malloc(b.nsegs * sizeof *seqs)) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if (b.m->rdonly) {
        /* No lock to fall back on: read again until every involved segment
         * held still (or was left by a dead holder) for a whole attempt,
         * waiting for live holders as long as the call's lock timeout. */
        uint64_t start = shmkv__mono_ns();
        if ((dead = malloc(b.nsegs * sizeof *dead)) == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        for (int attempt = 0;; attempt++) {
            for (size_t j = 0; j < b.nsegs; j++)
                dead[j] = shmkv__dead_seq(b.m, shmkv__seg_at(b.m, b.segs[j]));
            if (get_many_unlocked(&b, items, buf, cap, seqs, dead, &used))
                break;
            if (!shmkv__ro_backoff(attempt, start)) {
                rc = SHMKV_ETIMEDOUT;
                goto out;
            }
        }
        rc = used > cap ? SHMKV_EBUFSIZE : 0;
        if (need)
            *need = used;
        goto out;
    }
    for (int attempt = 0; attempt < 4; attempt++) {
        if (get_many_unlocked(&b, items, buf, cap, seqs, NULL, &used)) {
            rc = used > cap ? SHMKV_EBUFSIZE : 0;
            if (need)
                *need = used;
            goto out;
        }
    }
    /* Busy segments (or a dead holder's, which the lock repairs): read
     * under all the locks instead. */
    used = 0;
    if ((rc = lock_batch(&b, false)) != 0)
        goto out;
    for (size_t j = 0; j < b.nsegs; j++) {
        shmkv__table *t = table_of(b.m, shmkv__seg_at(b.m, b.segs[j]));
        for (size_t i = b.first[j]; i < b.first[j + 1]; i++) {
            bitem *x = &b.it[i];
            shmkv_item *out = &items[x->at];
            lookup(b.m, t, x);
            out->rc = x->found ? 0 : SHMKV_ENOTFOUND;
            out->val = NULL;
            out->vlen = 0;
            out->kind = SHMKV_KIND_BYTES;
            if (!x->found)
                continue;
            const shmkv__entry *e = SHMKV__P(b.m, x->old);
            out->vlen = e->vlen;
            out->kind = (shmkv_kind)shmkv__block_of(b.m, x->old)->kind;
            if (used + e->vlen <= cap) {
                out->val = (unsigned char *)buf + used;
                if (e->vlen)
                    memcpy((unsigned char *)buf + used, e->data + e->klen, e->vlen);
            }
            used += e->vlen;
        }
    }
    unlock_batch(&b);
    if (need)
        *need = used;
    rc = used > cap ? SHMKV_EBUFSIZE : 0;
out:
    free(seqs);
    free(dead);
    batch_free(&b);
    return rc;
}

/* ---- writes ---------------------------------------------------------------------------- */


static bool changes(const batch *b, const bitem *x)
{
    return !x->skip && (b->set || x->found);
}

/* Everything for one segment short of publishing: look the keys up, make
 * room and promise slots for the inserts, write the new entries, then the
 * segment's intent. */
static int prepare_seg(batch *b, size_t j)
{
    shmkv__map *m = b->m;
    shmkv__seg *s = shmkv__seg_at(m, b->segs[j]);
    size_t lo = b->first[j], hi = b->first[j + 1];
    shmkv__table *t = table_of(m, s);
    uint64_t inserts = 0, nch = 0;
    int rc;
    for (size_t i = lo; i < hi; i++) {
        bitem *x = &b->it[i];
        x->noff = 0;
        if (x->skip)
            continue;
        lookup(m, t, x);
        inserts += b->set && !x->found;
        nch += changes(b, x);
    }
    if (inserts) {
        uint64_t count = atomic_load_explicit(&s->count, memory_order_relaxed);
        if (!t || (count + s->tombs + inserts) * 4 > t->cap * 3) {
            uint64_t cap = 16;
            while (cap < (count + inserts) * 2)
                cap *= 2;
            /* The old table stays allocated until the commit: a batch
             * that fails puts it back, so that it leaves the segment's
             * space as it found it. (A writer killed before the commit
             * leaves the old one unreachable, and the repair reclaims it.) */
            uint64_t tombs = s->tombs;
            if ((rc = shmkv__seg_rehash(m, s, cap, &b->otab[j])) != 0)
                return rc;
            b->otombs[j] = tombs;
            b->rehashed[j] = true;
            t = table_of(m, s);
            for (size_t i = lo; i < hi; i++)
                if (!b->it[i].skip)
                    lookup(m, t, &b->it[i]);
        }
        /* The key is known absent, so any free slot on its probe path will
         * do; slots promised to earlier inserts count as taken. */
        uint64_t mask = t->cap - 1;
        uint64_t *taken = calloc((t->cap + 63) / 64, sizeof *taken);
        if (!taken)
            return -ENOMEM;
        for (size_t i = lo; i < hi; i++) {
            bitem *x = &b->it[i];
            if (x->skip || x->found)
                continue;
            uint64_t k = x->h & mask;
            while (SHMKV__SLOT_LIVE(atomic_load_explicit(&t->slot[k], memory_order_relaxed)) ||
                   (taken[k / 64] >> (k % 64) & 1))
                k = (k + 1) & mask;
            taken[k / 64] |= 1ull << (k % 64);
            x->slot = k;
        }
        free(taken);
    }
    if (b->set) {
        for (size_t i = lo; i < hi; i++) {
            bitem *x = &b->it[i];
            if (x->skip)
                continue;
            const shmkv_item *src = x->src;
            if ((rc = shmkv__alloc_block(m, &s->alloc, s->id,
                                         sizeof(shmkv__entry) + src->klen + src->vlen,
                                         &x->noff)) != 0) {
                x->noff = 0;
                return rc;
            }
            shmkv__entry *e = SHMKV__P(m, x->noff);
            e->klen = (uint32_t)src->klen;
            e->vlen = (uint32_t)src->vlen;
            memcpy(e->data, src->key, src->klen);
            if (src->vlen)
                memcpy(e->data + src->klen, src->val, src->vlen);
            shmkv__block_of(m, x->noff)->kind = (uint16_t)src->kind;
        }
    }
    if (!nch)
        return 0;
    uint64_t ioff;
    if ((rc = shmkv__alloc_block(m, &s->alloc, s->id,
                                 sizeof(shmkv__intent) + nch * sizeof(shmkv__intent_ch),
                                 &ioff)) != 0)
        return rc;
    shmkv__intent *in = SHMKV__P(m, ioff);
    in->leader = b->lk[0];
    in->gen = b->gen;
    in->n = 0;
    for (size_t i = lo; i < hi; i++) {
        bitem *x = &b->it[i];
        if (!changes(b, x))
            continue;
        uint64_t w = b->set ? ((x->h & 0xffff000000000000ull) | x->noff) : SHMKV__SLOT_TOMB;
        in->ch[in->n++] = (shmkv__intent_ch){x->slot, w};
    }
    atomic_store_explicit(&s->intent, ioff, memory_order_release);
    return 0;
}

/* Drop what prepare_seg made for segments [0, upto]; nothing was
 * committed. A failed batch leaves each segment as it was, its space
 * included: the old table comes back (the slots it lacks were never
 * stored), and the segment's allocator is trimmed, so that chunks the batch
 * took go back to the pool and the tails it carved go back to their chunk
 * instead of staying on this segment's free lists, out of reach of the
 * others. */
static void unprepare(batch *b, size_t upto)
{
    shmkv__map *m = b->m;
    for (size_t j = 0; j <= upto && j < b->nsegs; j++) {
        shmkv__seg *s = shmkv__seg_at(m, b->segs[j]);
        bool touched = false;
        uint64_t ioff = atomic_exchange(&s->intent, 0);
        if (ioff) {
            shmkv__free_block(m, &s->alloc, ioff);
            touched = true;
        }
        for (size_t i = b->first[j]; i < b->first[j + 1]; i++)
            if (b->it[i].noff) {
                shmkv__free_block(m, &s->alloc, b->it[i].noff);
                b->it[i].noff = 0;
                touched = true;
            }
        if (b->rehashed[j]) {
            uint64_t toff = atomic_load_explicit(&s->table, memory_order_relaxed);
            /* Rehashed: the new table holds the same entries, in other
             * slots; the old one is still intact. */
            atomic_store_explicit(&s->table, b->otab[j], memory_order_release);
            s->tombs = b->otombs[j];
            shmkv__free_block(m, &s->alloc, toff);
            b->otab[j] = 0;
            b->rehashed[j] = false;
            touched = true;
        }
        if (touched)
            shmkv__alloc_trim(m, &s->alloc);
    }
}

/* With key tracking, the index changes before the commit, under the index
 * lock: a writer killed from here on leaves the index lock dead, so the
 * index is rebuilt from the tables after their repair. */
static int index_batch(batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        bitem *x = &b->it[i];
        int rc = 0;
        if (x->skip)
            continue;
        if (b->set && !x->found)
            rc = shmkv__index_insert(b->m, x->src->key, x->src->klen);
        else if (!b->set && x->found)
            rc = shmkv__index_remove(b->m, x->src->key, x->src->klen);
        if (rc) {
            /* Half changed: the next index user rebuilds it. */
            atomic_store(&shmkv__index_of(b->m)->dirty, 1);
            return rc;
        }
    }
    return 0;
}

static void apply_seg(batch *b, size_t j)
{
    shmkv__map *m = b->m;
    shmkv__seg *s = shmkv__seg_at(m, b->segs[j]);
    shmkv__table *t = table_of(m, s);
    for (size_t i = b->first[j]; i < b->first[j + 1]; i++) {
        bitem *x = &b->it[i];
        if (!changes(b, x))
            continue;
        uint64_t old = atomic_load_explicit(&t->slot[x->slot], memory_order_relaxed);
        if (b->set) {
            atomic_store_explicit(&t->slot[x->slot], (x->h & 0xffff000000000000ull) | x->noff,
                                  memory_order_release);
            if (!x->found) {
                atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
                if (old == SHMKV__SLOT_TOMB)
                    s->tombs--;
            }
        } else {
            atomic_store_explicit(&t->slot[x->slot], SHMKV__SLOT_TOMB, memory_order_release);
            atomic_fetch_sub_explicit(&s->count, 1, memory_order_relaxed);
            s->tombs++;
        }
    }
    for (size_t i = b->first[j]; i < b->first[j + 1]; i++) {
        bitem *x = &b->it[i];
        if (!x->skip && x->found)
            shmkv__free_block(m, &s->alloc, x->old);
    }
}

/* Run a planned batch whose locks (b->lk, and the index lock when
 * tracking) are held; releases nothing. */
static int write_locked(batch *b)
{
    shmkv__map *m = b->m;
    shmkv__seg *leader = shmkv__seg_at(m, b->lk[0]);
    uint64_t w = atomic_load_explicit(&leader->batch, memory_order_relaxed);
    int rc = 0;
    b->gen = B_GEN(w) + 1;
    atomic_store_explicit(&leader->batch, B_WORD(b->gen, SHMKV__B_PREPARED), memory_order_release);
    size_t j = 0;
    for (; j < b->nsegs && !rc; j++)
        rc = prepare_seg(b, j);
    /* The index is marked for a rebuild for as long as it runs ahead of the
     * tables: a writer killed before the commit leaves index entries for a
     * batch that the repair rolls back, and whatever repairs the index must
     * then rebuild it from the repaired tables. */
    if (!rc && b->track) {
        atomic_store(&shmkv__index_of(m)->dirty, 1);
        rc = index_batch(b);
    }
    if (rc) {
        unprepare(b, j);
        atomic_store_explicit(&leader->batch, B_WORD(b->gen, SHMKV__B_FREE), memory_order_release);
        return rc;
    }
    SHMKV__HOOK("batch.prepared");
    atomic_store_explicit(&leader->batch, B_WORD(b->gen, SHMKV__B_COMMITTED), memory_order_release);
    SHMKV__HOOK("batch.committed");
    for (j = 0; j < b->nsegs; j++) {
        apply_seg(b, j);
        if (j == 0 && b->nsegs > 1)
            SHMKV__HOOK("batch.applying");
    }
    SHMKV__HOOK("batch.applied");
    for (j = 0; j < b->nsegs; j++) {
        shmkv__seg *s = shmkv__seg_at(m, b->segs[j]);
        uint64_t ioff = atomic_exchange(&s->intent, 0);
        if (ioff)
            shmkv__free_block(m, &s->alloc, ioff);
        if (b->otab[j])
            shmkv__free_block(m, &s->alloc, b->otab[j]);
    }
    atomic_store_explicit(&leader->batch, B_WORD(b->gen, SHMKV__B_FREE), memory_order_release);
    if (b->track)
        atomic_store(&shmkv__index_of(m)->dirty, 0);
    if (b->db->flags & SHMKV_SYNC)
        msync(m->base, atomic_load(&SHMKV__HDR(m)->top), MS_SYNC);
    return 0;
}

static int check_items(const shmkv_item *items, size_t n, bool set, size_t *bad)
{
    int rc = check_keys(items, n, bad);
    if (rc || !set)
        return rc;
    for (size_t i = 0; i < n; i++) {
        rc = 0;
        if (items[i].vlen > SHMKV_VALUE_MAX)
            rc = SHMKV_EVALSIZE;
        else if ((items[i].vlen && !items[i].val) || (unsigned)items[i].kind > SHMKV_KIND_JSON)
            rc = SHMKV_EINVAL;
        if (rc) {
            if (bad)
                *bad = i;
            return rc;
        }
    }
    return 0;
}

static int write_many(shmkv_db *db, shmkv_item *items, size_t n, bool set, uint64_t *deleted,
                      size_t *bad)
{
    int rc = check_db(db);
    if (rc)
        return rc;
    if (n && !items)
        return SHMKV_EINVAL;
    if ((rc = check_items(items, n, set, bad)) != 0)
        return rc;
    if (db->flags & SHMKV_RDONLY)
        return SHMKV_EREADONLY;
    if (deleted)
        *deleted = 0;
    if (n == 0)
        return 0;
    batch b = {.db = db, .m = db->m, .set = set};
    if ((rc = batch_plan(&b, items, n, set)) != 0)
        goto out;
    if ((rc = lock_batch(&b, true)) != 0)
        goto out;
    rc = write_locked(&b);
    unlock_batch(&b);
    if (!rc && !set) {
        uint64_t d = 0;
        /* Duplicates report what the acting entry found. */
        for (size_t i = 0; i < n; i++) {
            bitem *x = &b.it[i];
            bool was = x->skip ? b.it[i - 1].found : x->found;
            x->found = was;
            items[x->at].rc = was;
            d += was && !x->skip;
        }
        if (deleted)
            *deleted = d;
    }
out:
    batch_free(&b);
    return rc;
}

int shmkv_set_many(shmkv_db *db, const shmkv_item *items, size_t n, size_t *bad)
{
    return write_many(db, (shmkv_item *)items, n, true, NULL, bad);
}

int shmkv_delete_many(shmkv_db *db, shmkv_item *items, size_t n, uint64_t *deleted, size_t *bad)
{
    return write_many(db, items, n, false, deleted, bad);
}

/* ---- delete_prefix ---------------------------------------------------------------------- */

typedef struct pcollect {
    shmkv__map *m;
    const void *prefix;
    size_t plen;
    uint64_t limit;
    unsigned char *keys; /* the keys, back to back */
    size_t len, cap;
    uint64_t n;
} pcollect;

static int pc_add(pcollect *pc, const void *k, uint32_t klen)
{
    if (pc->len + 4 + klen > pc->cap) {
        size_t cap = pc->cap ? pc->cap : 4096;
        while (cap < pc->len + 4 + klen)
            cap *= 2;
        unsigned char *p = realloc(pc->keys, cap);
        if (!p)
            return -ENOMEM;
        pc->keys = p;
        pc->cap = cap;
    }
    memcpy(pc->keys + pc->len, &klen, 4);
    memcpy(pc->keys + pc->len + 4, k, klen);
    pc->len += 4 + (size_t)klen;
    pc->n++;
    return 0;
}

static int pc_entry(void *ctx, uint64_t off)
{
    pcollect *pc = ctx;
    if (pc->limit && pc->n >= pc->limit)
        return 1;
    const shmkv__entry *e = SHMKV__P(pc->m, off);
    if (e->klen < pc->plen || (pc->plen && memcmp(e->data, pc->prefix, pc->plen) != 0))
        return 0;
    return pc_add(pc, e->data, e->klen);
}

static int pc_blob(void *ctx, const shmkv__kblob *kb)
{
    return pc_add(ctx, kb->key, kb->klen);
}

int shmkv_delete_prefix(shmkv_db *db, const void *prefix, size_t plen, uint64_t limit,
                        uint64_t *deleted)
{
    int rc = check_db(db);
    if (rc)
        return rc;
    if ((plen && !prefix) || plen > SHMKV_KEY_MAX)
        return SHMKV_EINVAL;
    if (db->flags & SHMKV_RDONLY)
        return SHMKV_EREADONLY;
    if (deleted)
        *deleted = 0;
    shmkv__map *m = db->m;
    uint32_t nseg = SHMKV__HDR(m)->nseg;
    uint32_t *all = malloc(nseg * sizeof *all);
    shmkv_item *items = NULL;
    pcollect pc = {.m = m, .prefix = prefix, .plen = plen, .limit = limit};
    if (!all)
        return -ENOMEM;
    for (uint32_t i = 0; i < nseg; i++)
        all[i] = i;
    batch b = {.db = db, .m = m, .lk = all, .nlk = nseg};
    if ((rc = lock_batch(&b, true)) != 0)
        goto out;
    if (b.track) {
        uint64_t from = plen ? shmkv__index_rank(m, prefix, plen) : 0;
        rc = shmkv__index_walk(m, from, prefix, plen, limit, pc_blob, &pc);
    } else {
        for (uint32_t i = 0; i < nseg && !rc; i++)
            rc = shmkv__seg_visit(m, shmkv__seg_at(m, i), pc_entry, &pc);
        if (rc == 1)
            rc = 0;
    }
    if (!rc && pc.n && !(items = calloc(pc.n, sizeof *items)))
        rc = -ENOMEM;
    for (size_t at = 0, i = 0; !rc && i < pc.n; i++) {
        uint32_t kl;
        memcpy(&kl, pc.keys + at, 4);
        items[i].key = pc.keys + at + 4;
        items[i].klen = kl;
        at += 4 + (size_t)kl;
    }
    bool track = b.track, index_locked = b.index_locked;
    if (!rc && pc.n) {
        b.set = false;
        if ((rc = batch_plan(&b, items, pc.n, false)) == 0) {
            b.lk = all;
            b.nlk = nseg;
            b.track = track;
            b.index_locked = index_locked;
            rc = write_locked(&b);
        }
    }
    b.lk = all;
    b.nlk = nseg;
    b.index_locked = index_locked;
    unlock_batch(&b);
    if (!rc && deleted) {
        uint64_t d = 0;
        for (size_t i = 0; i < b.n; i++)
            d += !b.it[i].skip && b.it[i].found;
        *deleted = d;
    }
out:
    batch_free(&b);
    free(all);
    free(items);
    free(pc.keys);
    return rc;
}

/* ---- repair -------------------------------------------------------------------------------- */

void shmkv__batch_recover(shmkv__map *m, shmkv__seg *s)
{
    uint64_t ioff = atomic_load(&s->intent);
    if (!ioff)
        return;
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
    shmkv__table *t = table_of(m, s);
    if (in && t) {
        uint64_t w = atomic_load(&shmkv__seg_at(m, in->leader)->batch);
        if (w == B_WORD(in->gen, SHMKV__B_COMMITTED)) {
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
