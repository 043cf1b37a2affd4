/*
 * batch.c - the writes of many keys at once: set_many, delete_many,
 * delete_prefix (get_many is in batch_get.c, the grouping and locking in
 * batch_plan.c).
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
 *      the segment's `intent` word (a delete needs no block: the word
 *      names the batch and the slots to empty are marked in place);
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
#include "batch.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

/* ---- writes ---------------------------------------------------------------------------- */


static bool changes(const batch *b, const bitem *x)
{
    return !x->skip && (b->set || x->found);
}

/* Mark (on) or unmark the slots a delete batch empties in segment j. */
static void mark_doomed(batch *b, size_t j, shmkv__table *t, bool on)
{
    for (size_t i = b->first[j]; i < b->first[j + 1]; i++) {
        bitem *x = &b->it[i];
        if (!changes(b, x))
            continue;
        uint64_t w = atomic_load_explicit(&t->slot[x->slot], memory_order_relaxed);
        w = on ? w | SHMKV__SLOT_DOOM : w & ~SHMKV__SLOT_DOOM;
        atomic_store_explicit(&t->slot[x->slot], w, memory_order_release);
    }
}

/* Everything for one segment short of publishing: look the keys up, make
 * room and promise slots for the inserts, write the new entries, then the
 * segment's intent. */
static int prepare_seg(batch *b, size_t j)
{
    shmkv__map *m = b->m;
    shmkv__seg *s = shmkv__seg_at(m, b->segs[j]);
    size_t lo = b->first[j], hi = b->first[j + 1];
    shmkv__table *t = shmkv__table_of(m, s);
    uint64_t inserts = 0, nch = 0;
    int rc;
    for (size_t i = lo; i < hi; i++) {
        bitem *x = &b->it[i];
        x->noff = 0;
        if (x->skip)
            continue;
        shmkv__batch_lookup(m, t, x);
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
            t = shmkv__table_of(m, s);
            for (size_t i = lo; i < hi; i++)
                if (!b->it[i].skip)
                    shmkv__batch_lookup(m, t, &b->it[i]);
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
            const shmkv__lease *keep = x->found ? shmkv__entry_lease(m, x->old) : NULL;
            if ((rc = shmkv__entry_make(m, s, src->key, src->klen, src->val, src->vlen,
                                        src->kind, keep, &x->noff)) != 0) {
                x->noff = 0;
                return rc;
            }
        }
    }
    if (!nch)
        return 0;
    if (!b->set) {
        /* A delete allocates nothing, so that it works on a full store:
         * its intent is the word, then a mark on each slot to empty. The
         * word goes first: a repair that finds it clears or applies the
         * marks, and no mark exists without it. */
        atomic_store_explicit(&s->intent, shmkv__intent_del(b->lk[0], b->gen), memory_order_release);
        mark_doomed(b, j, t, true);
        return 0;
    }
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
        uint64_t ioff = atomic_load(&s->intent);
        if (ioff && shmkv__intent_is_del(ioff)) {
            mark_doomed(b, j, shmkv__table_of(m, s), false);
        } else if (ioff) {
            shmkv__free_block(m, &s->alloc, ioff);
            touched = true;
        }
        atomic_store(&s->intent, 0);
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
static int key_order(const void *pa, const void *pb)
{
    const shmkv_item *a = (*(bitem *const *)pa)->src, *c = (*(bitem *const *)pb)->src;
    return shmkv__keycmp(a->key, a->klen, c->key, c->klen);
}

static int index_batch(batch *b)
{
    /* Inserted in key order, as a load in key order would be: the tree's
     * splits then leave its nodes nearly full (index.c). Without memory
     * for the order, in the batch's own. */
    bitem **order = b->set ? malloc(b->n * sizeof *order) : NULL;
    if (order) {
        for (size_t i = 0; i < b->n; i++)
            order[i] = &b->it[i];
        qsort(order, b->n, sizeof *order, key_order);
    }
    for (size_t i = 0; i < b->n; i++) {
        bitem *x = order ? order[i] : &b->it[i];
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
            free(order);
            return rc;
        }
    }
    free(order);
    return 0;
}

static void apply_seg(batch *b, size_t j)
{
    shmkv__map *m = b->m;
    shmkv__seg *s = shmkv__seg_at(m, b->segs[j]);
    shmkv__table *t = shmkv__table_of(m, s);
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
        if (ioff && !shmkv__intent_is_del(ioff))
            shmkv__free_block(m, &s->alloc, ioff);
        if (b->otab[j])
            shmkv__free_block(m, &s->alloc, b->otab[j]);
        if (!b->set) {
            /* A segment the batch emptied drops its table, as a single
             * delete does: it then holds no block, and its chunks go back
             * to the pool for any size, where its table's tombstones
             * would otherwise ask the next insert for a new table of the
             * old size. */
            shmkv__lookup lk = {0};
            shmkv__seg_shrink(m, s, &lk);
        }
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
    int rc = shmkv__batch_check_keys(items, n, bad);
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
    int rc = shmkv__batch_check_db(db);
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
    if ((rc = shmkv__batch_plan(&b, items, n, set)) != 0)
        goto out;
    if ((rc = shmkv__batch_lock(&b, true)) != 0)
        goto out;
    rc = write_locked(&b);
    shmkv__batch_unlock(&b);
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
    shmkv__batch_free(&b);
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

static int item_keycmp(const void *a, const void *b)
{
    const shmkv_item *x = a, *y = b;
    return shmkv__keycmp(x->key, x->klen, y->key, y->klen);
}

int shmkv_delete_prefix(shmkv_db *db, const void *prefix, size_t plen, uint64_t limit,
                        uint64_t *deleted)
{
    int rc = shmkv__batch_check_db(db);
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
    if ((rc = shmkv__batch_lock(&b, true)) != 0)
        goto out;
    /* A tracked store deletes its first keys in key order. With the index
     * waiting for room to be rebuilt (b.track false on a tracked store),
     * the tables give every match, which are sorted and cut to limit. */
    bool ordered = !b.track && limit && SHMKV__HDR(m)->track_keys;
    if (b.track) {
        uint64_t from = plen ? shmkv__index_rank(m, prefix, plen) : 0;
        rc = shmkv__index_walk(m, from, prefix, plen, limit, pc_blob, &pc);
    } else {
        if (ordered)
            pc.limit = 0;
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
    if (!rc && ordered && pc.n > limit) {
        qsort(items, pc.n, sizeof *items, item_keycmp);
        pc.n = limit;
    }
    bool track = b.track, index_locked = b.index_locked;
    if (!rc && pc.n) {
        b.set = false;
        if ((rc = shmkv__batch_plan(&b, items, pc.n, false)) == 0) {
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
    shmkv__batch_unlock(&b);
    if (!rc && deleted) {
        uint64_t d = 0;
        for (size_t i = 0; i < b.n; i++)
            d += !b.it[i].skip && b.it[i].found;
        *deleted = d;
    }
out:
    shmkv__batch_free(&b);
    free(all);
    free(items);
    free(pc.keys);
    return rc;
}
