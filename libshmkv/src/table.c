/*
 * table.c - the per-segment hash table and every single-key operation.
 *
 * Open addressing with linear probing. A slot is one 8-byte word (tag and
 * entry offset) and every change a reader could observe is one aligned
 * store of a slot: a new entry is written out of place first, then
 * published, then the old one freed. A writer killed at any point leaves
 * either the old or the new state plus, at worst, an unreachable block that
 * shmkv__seg_recover reclaims.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>

/* Position of a key in its segment, as found under the segment lock. */
typedef struct lookup {
    shmkv__table *t; /* NULL: the segment has no table yet */
    uint64_t slot;   /* where the key is, or where it would go */
    uint64_t off;    /* entry payload when found */
    bool found;
    bool slot_valid; /* false when the table must grow before an insert */
} lookup;

static inline shmkv__seg *seg_for(shmkv__map *m, uint64_t h)
{
    return shmkv__seg_at(m, (uint32_t)(h >> 32) & (SHMKV__HDR(m)->nseg - 1));
}

static inline uint64_t slot_word(uint64_t h, uint64_t off)
{
    return (h & 0xffff000000000000ull) | off;
}

static inline shmkv__entry *entry_at(shmkv__map *m, uint64_t off)
{
    return (shmkv__entry *)SHMKV__P(m, off);
}

static void find(shmkv__map *m, shmkv__seg *s, uint64_t h, const void *key, size_t klen,
                 lookup *lk)
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
        shmkv__entry *e = entry_at(m, SHMKV__SLOT_OFF(w));
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
            shmkv__entry *e = entry_at(m, SHMKV__SLOT_OFF(w));
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
static int ensure_room(shmkv__map *m, shmkv__seg *s, const void *key, size_t klen, uint64_t h,
                       lookup *lk)
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
    find(m, s, h, key, klen, lk);
    return 0;
}

/* ---- writes ----------------------------------------------------------------- */

/* One single-key operation in progress: its segment lock is held while
 * `locked`; index trouble may drop it (then the operation restarts). */
typedef struct op {
    shmkv_db *db;
    shmkv__map *m;
    shmkv__seg *s;
    uint64_t h;
    const void *key;
    size_t klen;
    lookup lk;
    bool locked;
} op;

static void sync_range(const void *p, size_t len)
{
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(SHMKV__PAGE - 1);
    uintptr_t b = (uintptr_t)p + len;
    msync((void *)a, b - a, MS_SYNC);
}

static int entry_new(op *o, const void *val, size_t vlen, shmkv_kind kind, uint64_t *off)
{
    int rc = shmkv__alloc_block(o->m, &o->s->alloc, o->s->id,
                                sizeof(shmkv__entry) + o->klen + vlen, off);
    if (rc)
        return rc;
    shmkv__entry *e = entry_at(o->m, *off);
    e->klen = (uint32_t)o->klen;
    e->vlen = (uint32_t)vlen;
    memcpy(e->data, o->key, o->klen);
    if (vlen)
        memcpy(e->data + o->klen, val, vlen);
    shmkv__block_of(o->m, *off)->kind = (uint16_t)kind;
    return 0;
}

/* 1: index lock held; 0: go on without the index (it is marked for a
 * rebuild that reads the tables); negative or RESTART: the segment lock was
 * dropped. */
static int index_enter(op *o)
{
    int rc = shmkv__index_lock(o->m, o->s);
    if (rc == SHMKV__NOINDEX)
        return 0;
    if (rc) {
        o->locked = false; /* RESTART or error: index_lock dropped the segment */
        return rc;
    }
    return 1;
}

/* Store the value at the looked-up position (insert or replace). */
static int put(op *o, const void *val, size_t vlen, shmkv_kind kind)
{
    shmkv__map *m = o->m;
    shmkv__seg *s = o->s;
    lookup *lk = &o->lk;
    uint64_t noff;
    int rc;
    if (lk->found) {
        /* The key stays, so the index does not change: no index lock. */
        rc = entry_new(o, val, vlen, kind, &noff);
        if (rc)
            return rc;
        SHMKV__HOOK("set.before_publish");
        atomic_store_explicit(&lk->t->slot[lk->slot], slot_word(o->h, noff), memory_order_release);
        SHMKV__HOOK("set.after_publish");
        shmkv__free_block(m, &s->alloc, lk->off);
    } else {
        rc = ensure_room(m, s, o->key, o->klen, o->h, lk);
        if (rc)
            return rc;
        bool track = SHMKV__HDR(m)->track_keys;
        if (track) {
            if ((rc = index_enter(o)) < 0 || rc == SHMKV__RESTART)
                return rc;
            track = rc == 1;
        }
        if (track)
            shmkv__index_begin(m, s->id, o->key, o->klen);
        rc = entry_new(o, val, vlen, kind, &noff);
        if (!rc && track && (rc = shmkv__index_insert(m, o->key, o->klen)) != 0)
            shmkv__free_block(m, &s->alloc, noff);
        if (!rc) {
            uint64_t old = atomic_load_explicit(&lk->t->slot[lk->slot], memory_order_relaxed);
            SHMKV__HOOK("set.before_publish");
            atomic_store_explicit(&lk->t->slot[lk->slot], slot_word(o->h, noff), memory_order_release);
            SHMKV__HOOK("set.after_publish");
            atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
            if (old == SHMKV__SLOT_TOMB)
                s->tombs--;
        }
        if (track) {
            /* Index and slot agree again: only now may a repair stop
             * treating this key as in doubt. */
            shmkv__index_commit(m);
            shmkv__index_unlock(m);
        }
        if (rc)
            return rc;
    }
    if (o->db->flags & SHMKV_SYNC) {
        sync_range(shmkv__block_of(m, noff), shmkv__block_bytes(m, noff));
        sync_range((const void *)&lk->t->slot[lk->slot], 8);
    }
    return 0;
}

static int removes(op *o)
{
    shmkv__map *m = o->m;
    shmkv__seg *s = o->s;
    lookup *lk = &o->lk;
    bool track = SHMKV__HDR(m)->track_keys;
    if (track) {
        int rc = index_enter(o);
        if (rc < 0 || rc == SHMKV__RESTART)
            return rc;
        track = rc == 1;
    }
    if (track) {
        shmkv__index_begin(m, s->id, o->key, o->klen);
        int rc = shmkv__index_remove(m, o->key, o->klen);
        if (rc) {
            shmkv__index_commit(m);
            shmkv__index_unlock(m);
            return rc;
        }
    }
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
    if (track) {
        shmkv__index_commit(m);
        shmkv__index_unlock(m);
    }
    if (o->db->flags & SHMKV_SYNC)
        sync_range((const void *)&lk->t->slot[lk->slot], 8);
    shmkv__free_block(m, &s->alloc, lk->off);
    if (atomic_load_explicit(&s->count, memory_order_relaxed) == 0) {
        /* An empty segment needs no table (the next insert makes one), and
         * without it the segment holds no block: its chunks go back to the
         * pool. Unpublished first, so a crash leaves the block to recovery. */
        uint64_t toff = atomic_load_explicit(&s->table, memory_order_relaxed);
        atomic_store_explicit(&s->table, 0, memory_order_release);
        s->tombs = 0;
        lk->t = NULL;
        shmkv__free_block(m, &s->alloc, toff);
    }
    return 0;
}

/* ---- recovery ------------------------------------------------------------- */

static bool entry_sane(shmkv__map *m, uint64_t off)
{
    if (!shmkv__in_region(m, off - SHMKV__BLOCK_HDR, SHMKV__BLOCK_HDR + sizeof(shmkv__entry)))
        return false;
    shmkv__block *b = shmkv__block_of(m, off);
    uint64_t bytes = shmkv__block_bytes(m, off);
    if (!(b->flags & SHMKV__BF_USED) || bytes < 16 || !shmkv__in_region(m, off - SHMKV__BLOCK_HDR, bytes))
        return false;
    shmkv__entry *e = entry_at(m, off);
    return (uint64_t)e->klen + e->vlen + sizeof *e + SHMKV__BLOCK_HDR <= bytes && e->klen > 0;
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
        shmkv__table *t = (shmkv__table *)SHMKV__P(m, toff);
        shmkv__block *tb = shmkv__block_of(m, toff);
        uint64_t tbytes = shmkv__block_bytes(m, toff);
        if (tbytes < SHMKV__BLOCK_HDR + 8 + 16 * 8 || t->cap < 16 || (t->cap & (t->cap - 1)) ||
            t->cap > (tbytes - SHMKV__BLOCK_HDR - 8) / 8 ||
            !shmkv__in_region(m, toff - SHMKV__BLOCK_HDR, tbytes))
            return SHMKV_ECORRUPT;
        tb->flags |= SHMKV__BF_MARK;
        for (uint64_t i = 0; i < t->cap; i++) {
            uint64_t w = atomic_load(&t->slot[i]);
            if (w == SHMKV__SLOT_TOMB) {
                tombs++;
            } else if (w != SHMKV__SLOT_EMPTY) {
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

static int check_write(shmkv_db *db, const void *key, size_t klen, const void *val,
                       size_t vlen, shmkv_kind kind)
{
    int rc = check_key(db, key, klen);
    if (rc)
        return rc;
    if (db->flags & SHMKV_RDONLY)
        return SHMKV_EREADONLY;
    if (vlen > SHMKV_VALUE_MAX)
        return SHMKV_EVALSIZE;
    if (vlen && !val)
        return SHMKV_EINVAL;
    if ((unsigned)kind > SHMKV_KIND_JSON)
        return SHMKV_EINVAL;
    return 0;
}

static void op_init(op *o, shmkv_db *db, const void *key, size_t klen)
{
    o->db = db;
    o->m = db->m;
    o->key = key;
    o->klen = klen;
    o->h = shmkv__hash(key, klen);
    o->s = seg_for(o->m, o->h);
    o->locked = false;
}

static int op_begin(op *o)
{
    int rc = shmkv__seg_lock(o->m, o->s);
    if (rc)
        return rc;
    o->locked = true;
    find(o->m, o->s, o->h, o->key, o->klen, &o->lk);
    return 0;
}

/* Every single-key operation: lock the key's segment, look the key up, act,
 * unlock; start over when the index had to be rebuilt under us. */
#define RUN_OP(o, db, key, klen, ...)                \
    do {                                              \
        op_init(&(o), (db), (key), (klen));           \
        for (;;) {                                    \
            if ((rc = op_begin(&(o))) != 0)           \
                return rc;                            \
            __VA_ARGS__;                              \
            if (rc != SHMKV__RESTART)                 \
                break;                                \
        }                                             \
        if ((o).locked)                               \
            shmkv__seg_unlock((o).s);                 \
    } while (0)

static int copy_value(shmkv__map *m, uint64_t off, void *buf, size_t cap, size_t *vlen,
                      shmkv_kind *kind)
{
    shmkv__entry *e = entry_at(m, off);
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
    shmkv__entry *e = entry_at(m, off);
    return e->vlen == n && (n == 0 || memcmp(e->data + e->klen, p, n) == 0);
}

/* ---- reads without the lock ---------------------------------------------------- */

/* get and exists first try to read a segment without its lock, the way a
 * seqlock reader does: note seq, look up and copy, then check that seq was
 * even and has not moved. A writer may free and reuse any block meanwhile,
 * so what is read can be garbage until validated: every offset is checked
 * against the published top before it is followed, and nothing read is
 * handed out before the check. The mapping never shrinks, so a stale
 * offset below top is always safe to read.
 *
 * These reads race with writers by design (the result is thrown away when
 * they did). ThreadSanitizer would report them, so under TSan the function
 * is not instrumented (its atomics still are, so the happens-before edge
 * through seq stays visible) and copies bytes itself: memcpy and memcmp
 * are intercepted whatever the caller. */
#define OPT_RETRY 1 /* read again, or under the lock */

#ifdef SHMKV__TSAN
SHMKV__SEQ_READER bool shmkv__racy_equal(const unsigned char *a, const unsigned char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

SHMKV__SEQ_READER void shmkv__racy_copy(unsigned char *dst, const unsigned char *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = src[i];
}
#endif

/* A segment whose holder died holding it may hold a batch that committed
 * but was only partly applied: its repair would roll the batch forward (see
 * shmkv__batch_recover), so a reader that accepts the dead holder's seq must
 * read the slots as they will be, not as they are. This returns the intent
 * to overlay (the same verdict the repair reaches: the leader's word says
 * that generation committed), or NULL. Read without the lock like the rest,
 * so it only counts once the caller's seq check passed. */
SHMKV__SEQ_READER const shmkv__intent *shmkv__ro_intent(shmkv__map *m, shmkv__seg *s, uint64_t tcap,
                                                 uint32_t *nch)
{
    uint64_t ioff = atomic_load_explicit(&s->intent, memory_order_acquire);
    if (!ioff)
        return NULL;
    const shmkv__hdr *hd = SHMKV__HDR(m);
    uint64_t top = atomic_load_explicit(&hd->top, memory_order_acquire);
    if (ioff < hd->data_off + SHMKV__BLOCK_HDR || ioff >= top || top - ioff < sizeof(shmkv__intent))
        return NULL;
    const shmkv__block *b = shmkv__block_of(m, ioff);
    const shmkv__intent *in = SHMKV__P(m, ioff);
    uint64_t bsz = shmkv__block_bytes(m, ioff); /* a big block's size field is 0 */
    uint32_t n = in->n;
    if (!(b->flags & SHMKV__BF_USED) || bsz > top - (ioff - SHMKV__BLOCK_HDR) ||
        sizeof *in + n * sizeof in->ch[0] + SHMKV__BLOCK_HDR > bsz || in->leader >= hd->nseg)
        return NULL;
    uint64_t w = atomic_load_explicit(&shmkv__seg_at(m, in->leader)->batch, memory_order_acquire);
    if (w != ((in->gen << 2) | SHMKV__B_COMMITTED))
        return NULL;
    (void)tcap; /* a change past the table never matches a slot, as the repair skips it */
    *nch = n;
    return in;
}

/* One attempt: 0 (found; the value copied out when buf is given and fits),
 * SHMKV_EBUFSIZE, SHMKV_ENOTFOUND, or OPT_RETRY. */
SHMKV__SEQ_READER static int read_unlocked(shmkv__map *m, shmkv__seg *s, uint32_t dead, uint64_t h,
                                    const void *key, size_t klen, bool copy, void *buf,
                                    size_t cap, size_t *vlen, shmkv_kind *kind)
{
    uint32_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
    if ((seq & 1) && seq != dead)
        return OPT_RETRY;
    const shmkv__hdr *hd = SHMKV__HDR(m);
    uint64_t top = atomic_load_explicit(&hd->top, memory_order_acquire);
    uint64_t lo = hd->data_off + SHMKV__BLOCK_HDR;
    uint64_t toff = atomic_load_explicit(&s->table, memory_order_relaxed);
    if ((seq & 1) && shmkv__ro_cleared(m, s))
        toff = 0;
    int rc = SHMKV_ENOTFOUND;
    size_t n = 0;
    unsigned k = 0;
    if (toff) {
        if (toff < lo || toff >= top || top - toff < sizeof(shmkv__table))
            return OPT_RETRY;
        const shmkv__table *t = (const shmkv__table *)SHMKV__P(m, toff);
        uint64_t tcap = t->cap;
        if (!tcap || (tcap & (tcap - 1)) || tcap > (top - toff - sizeof *t) / sizeof t->slot[0])
            return OPT_RETRY;
        uint64_t mask = tcap - 1, i = h & mask;
        uint16_t tag = (uint16_t)(h >> 48);
        uint32_t nin = 0;
        const shmkv__intent *in = (seq & 1) ? shmkv__ro_intent(m, s, tcap, &nin) : NULL;
        for (uint64_t probe = 0; probe <= mask; probe++, i = (i + 1) & mask) {
            uint64_t w = atomic_load_explicit(&((shmkv__table *)t)->slot[i], memory_order_relaxed);
            w = shmkv__ro_slot(in, nin, i, w);
            if (w == SHMKV__SLOT_EMPTY)
                break;
            if (w == SHMKV__SLOT_TOMB || SHMKV__SLOT_TAG(w) != tag)
                continue;
            uint64_t off = SHMKV__SLOT_OFF(w);
            if (off < lo || off >= top || top - off < sizeof(shmkv__entry))
                return OPT_RETRY;
            const shmkv__entry *e = entry_at(m, off);
            uint64_t ek = e->klen, ev = e->vlen;
            if (ek != klen)
                continue;
            if (ek + ev > top - off - sizeof *e)
                return OPT_RETRY;
            if (!shmkv__racy_equal(e->data, key, klen))
                continue;
            n = (size_t)ev;
            k = shmkv__block_of(m, off)->kind;
            if (copy && ev > cap) {
                rc = SHMKV_EBUFSIZE;
            } else {
                if (copy && ev)
                    shmkv__racy_copy(buf, e->data + ek, (size_t)ev);
                rc = 0;
            }
            break;
        }
    }
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&s->seq, memory_order_relaxed) != seq)
        return OPT_RETRY;
    if (rc != SHMKV_ENOTFOUND) {
        if (vlen)
            *vlen = n;
        if (kind)
            *kind = (shmkv_kind)k;
    }
    return rc;
}

/* A few attempts without the lock; OPT_RETRY when the segment stayed busy
 * (or a dead holder left seq odd: the locked path repairs it). */
static int read_fast(shmkv_db *db, const void *key, size_t klen, bool copy, void *buf, size_t cap,
                     size_t *vlen, shmkv_kind *kind)
{
    uint64_t h = shmkv__hash(key, klen);
    shmkv__seg *s = seg_for(db->m, h);
    for (int attempt = 0; attempt < 4; attempt++) {
        int rc = read_unlocked(db->m, s, 0, h, key, klen, copy, buf, cap, vlen, kind);
        if (rc != OPT_RETRY)
            return rc;
    }
    return OPT_RETRY;
}

/* ---- read-only mappings ------------------------------------------------------- */

/* A handle opened read-only maps the store PROT_READ: it cannot take a
 * lock (locking writes the lock word), so it cannot repair either, and
 * every read goes without the lock. That is sound while seq is even and
 * unchanged, as above. When seq stays odd, the holder is either at work
 * (wait for it) or dead: then the segment holds what it last published,
 * which is a consistent table (every change a reader can see is one
 * aligned store, and blocks a live slot reaches are never written), so a
 * read that sees seq keep that odd value is as good as a locked one. A
 * holder is known dead when no writer was attached at open and seq has not
 * moved since (dead_seq), or when the kernel has marked the lock word as
 * the robust futex of a thread that died (FUTEX_OWNER_DIED, no owner)
 * and nobody has taken it since. */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The odd seq of a segment whose holder is known dead, or 0. */
static uint32_t dead_seq(shmkv__map *m, shmkv__seg *s)
{
    uint32_t v = atomic_load_explicit(&s->seq, memory_order_acquire);
    if (!(v & 1))
        return 0;
    if (m->dead_seq && m->dead_seq[s->id] == v)
        return v;
#ifdef __GLIBC__
    /* glibc keeps the futex word first; the kernel sets OWNER_DIED and
     * clears the owner's tid when a holder dies (linux/futex.h). */
    int w = __atomic_load_n(&s->lock.__data.__lock, __ATOMIC_ACQUIRE);
    if ((w & 0x40000000) && !(w & 0x3fffffff) &&
        atomic_load_explicit(&s->seq, memory_order_acquire) == v)
        return v;
#endif
    return 0;
}

/* Between attempts: spin a little, then sleep up to 1 ms. Returns false
 * once the call's lock timeout is over: a live holder is waited for as
 * long as a writer would wait for its lock. */
static bool ro_backoff(int attempt, uint64_t start)
{
    if (attempt < 8)
        return true;
    if (mono_ns() - start > shmkv__call_wait_ns())
        return false;
    struct timespec ts = {0, attempt < 40 ? 20000 : 1000000};
    nanosleep(&ts, NULL);
    return true;
}

uint64_t shmkv__mono_ns(void)
{
    return mono_ns();
}

uint32_t shmkv__dead_seq(shmkv__map *m, shmkv__seg *s)
{
    return dead_seq(m, s);
}

bool shmkv__ro_backoff(int attempt, uint64_t start)
{
    return ro_backoff(attempt, start);
}

static int read_ro(shmkv_db *db, const void *key, size_t klen, bool copy, void *buf, size_t cap,
                   size_t *vlen, shmkv_kind *kind)
{
    uint64_t h = shmkv__hash(key, klen), start = mono_ns();
    shmkv__seg *s = seg_for(db->m, h);
    shmkv__call_begin(db);
    for (int attempt = 0;; attempt++) {
        int rc = read_unlocked(db->m, s, dead_seq(db->m, s), h, key, klen, copy, buf, cap, vlen,
                               kind);
        if (rc != OPT_RETRY)
            return rc;
        if (!ro_backoff(attempt, start))
            return SHMKV_ETIMEDOUT;
    }
}

/* One attempt at copying a segment's live entries that start with prefix
 * into out as records [u32 klen][u32 vlen][u32 kind][key][value] (no value
 * when keys_only; nothing at all when out is NULL, which only counts). */
SHMKV__SEQ_READER static int snap_try(shmkv__map *m, shmkv__seg *s, uint32_t dead, const void *prefix,
                               size_t plen, bool keys_only, shmkv__buf *out, uint64_t *count)
{
    uint32_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
    if ((seq & 1) && seq != dead)
        return OPT_RETRY;
    const shmkv__hdr *hd = SHMKV__HDR(m);
    uint64_t top = atomic_load_explicit(&hd->top, memory_order_acquire);
    uint64_t lo = hd->data_off + SHMKV__BLOCK_HDR;
    uint64_t toff = atomic_load_explicit(&s->table, memory_order_relaxed);
    if ((seq & 1) && shmkv__ro_cleared(m, s))
        toff = 0;
    size_t mark = out ? out->len : 0;
    uint64_t n = 0;
    int rc = 0;
    if (!out && !plen && !(seq & 1)) {
        /* counted under an even seq, the count is exact */
        n = atomic_load_explicit(&s->count, memory_order_relaxed);
        toff = 0;
    }
    if (toff) {
        if (toff < lo || toff >= top || top - toff < sizeof(shmkv__table))
            return OPT_RETRY;
        const shmkv__table *t = (const shmkv__table *)SHMKV__P(m, toff);
        uint64_t tcap = t->cap;
        if (!tcap || (tcap & (tcap - 1)) || tcap > (top - toff - sizeof *t) / sizeof t->slot[0])
            return OPT_RETRY;
        uint32_t nin = 0;
        const shmkv__intent *in = (seq & 1) ? shmkv__ro_intent(m, s, tcap, &nin) : NULL;
        for (uint64_t i = 0; i < tcap && !rc; i++) {
            uint64_t w = atomic_load_explicit(&((shmkv__table *)t)->slot[i], memory_order_relaxed);
            w = shmkv__ro_slot(in, nin, i, w);
            if (!SHMKV__SLOT_LIVE(w))
                continue;
            if (!out && !plen) {
                n++;
                continue;
            }
            uint64_t off = SHMKV__SLOT_OFF(w);
            if (off < lo || off >= top || top - off < sizeof(shmkv__entry)) {
                rc = OPT_RETRY;
                break;
            }
            const shmkv__entry *e = entry_at(m, off);
            uint64_t ek = e->klen, ev = e->vlen;
            if (ek > SHMKV_KEY_MAX || ev > SHMKV_VALUE_MAX || ek + ev > top - off - sizeof *e) {
                rc = OPT_RETRY;
                break;
            }
            if (ek < plen || (plen && !shmkv__racy_equal(e->data, prefix, plen)))
                continue;
            if (!out) {
                n++;
                continue;
            }
            uint32_t hdr[3] = {(uint32_t)ek, keys_only ? 0 : (uint32_t)ev,
                               shmkv__block_of(m, off)->kind};
            size_t need = sizeof hdr + (size_t)ek + hdr[1];
            if ((rc = shmkv__buf_reserve(out, need)) != 0)
                break;
            unsigned char *p = out->p + out->len;
            memcpy(p, hdr, sizeof hdr);
            shmkv__racy_copy(p + sizeof hdr, e->data, (size_t)ek);
            if (hdr[1])
                shmkv__racy_copy(p + sizeof hdr + ek, e->data + ek, hdr[1]);
            out->len += need;
            n++;
        }
    }
    atomic_thread_fence(memory_order_acquire);
    if (rc == 0 && atomic_load_explicit(&s->seq, memory_order_relaxed) != seq)
        rc = OPT_RETRY;
    if (rc) {
        if (out)
            out->len = mark;
        return rc;
    }
    *count = n;
    return 0;
}

int shmkv__seg_snapshot(shmkv__map *m, shmkv__seg *s, const void *prefix, size_t plen,
                        bool keys_only, shmkv__buf *out, uint64_t *count)
{
    uint64_t start = mono_ns();
    for (int attempt = 0;; attempt++) {
        int rc = snap_try(m, s, dead_seq(m, s), prefix, plen, keys_only, out, count);
        if (rc != OPT_RETRY)
            return rc;
        if (!ro_backoff(attempt, start))
            return SHMKV_ETIMEDOUT;
    }
}

/* ---- the public single-key operations -------------------------------------- */

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
        return read_ro(db, key, klen, true, buf, cap, vlen, kind);
    if ((rc = read_fast(db, key, klen, true, buf, cap, vlen, kind)) != OPT_RETRY)
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
        rc = read_ro(db, key, klen, false, NULL, 0, NULL, NULL);
        return rc < 0 && rc != SHMKV_ENOTFOUND ? rc : rc == 0;
    }
    rc = read_fast(db, key, klen, false, NULL, 0, NULL, NULL);
    if (rc != OPT_RETRY)
        return rc == 0;
    op o;
    RUN_OP(o, db, key, klen, rc = o.lk.found);
    return rc;
}

int shmkv_delete(shmkv_db *db, const void *key, size_t klen, int *existed)
{
    int rc = check_key(db, key, klen);
    if (rc)
        return rc;
    if (db->flags & SHMKV_RDONLY)
        return SHMKV_EREADONLY;
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
            shmkv__entry *e = entry_at(o.m, o.lk.off);
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
    int rc = check_write(db, key, klen, val, vlen, kind);
    if (rc)
        return rc;
    if (cap && !buf)
        return SHMKV_EINVAL;
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
    int rc = check_write(db, key, klen, val, vlen, kind);
    if (rc)
        return rc;
    if (cap && !buf)
        return SHMKV_EINVAL;
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
    int rc = check_key(db, key, klen);
    if (rc)
        return rc;
    if (db->flags & SHMKV_RDONLY)
        return SHMKV_EREADONLY;
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

/* ---- lookups for the index repair ------------------------------------------- */

shmkv__seg *shmkv__seg_of(shmkv__map *m, const void *key, size_t klen)
{
    return seg_for(m, shmkv__hash(key, klen));
}

bool shmkv__seg_has(shmkv__map *m, shmkv__seg *s, const void *key, size_t klen)
{
    lookup lk;
    find(m, s, shmkv__hash(key, klen), key, klen, &lk);
    return lk.found;
}

/* ---- whole-segment access for shmkv.c ------------------------------------------ */

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

int shmkv__get_locked_copy(shmkv_db *db, const void *key, size_t klen,
                           int (*fn)(void *ctx, const shmkv__entry *e, shmkv_kind kind), void *ctx)
{
    op o;
    int rc;
    RUN_OP(o, db, key, klen,
           rc = o.lk.found ? fn(ctx, entry_at(o.m, o.lk.off),
                                (shmkv_kind)shmkv__block_of(o.m, o.lk.off)->kind)
                           : SHMKV_ENOTFOUND);
    return rc;
}
