/*
 * reader.c - reads of a segment without its lock: get and exists on a
 * writable handle first try this, and a read-only handle (which cannot
 * take a lock) reads this way only, as do its snapshots of whole segments.
 */
#include "internal.h"


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
#define OPT_RETRY SHMKV__READ_RETRY

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
 * that generation committed), or NULL; for a delete batch, which has no
 * intent block, *doom says whether its marked slots read as emptied. Read
 * without the lock like the rest, so it only counts once the caller's seq
 * check passed. */
SHMKV__SEQ_READER const shmkv__intent *shmkv__ro_intent(shmkv__map *m, shmkv__seg *s, uint64_t tcap,
                                                 uint32_t *nch, bool *doom)
{
    uint64_t ioff = atomic_load_explicit(&s->intent, memory_order_acquire);
    if (!ioff)
        return NULL;
    const shmkv__hdr *hd = SHMKV__HDR(m);
    if (shmkv__intent_is_del(ioff)) {
        uint32_t leader = shmkv__intent_leader(ioff);
        *doom = leader < hd->nseg &&
                shmkv__intent_del_committed(
                    ioff, atomic_load_explicit(&shmkv__seg_at(m, leader)->batch, memory_order_acquire));
        return NULL;
    }
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
 * SHMKV_EBUFSIZE, SHMKV_ENOTFOUND, or OPT_RETRY. Inline: get's hot path. */
SHMKV__SEQ_READER_HOT int read_unlocked(shmkv__map *m, shmkv__seg *s, uint32_t dead, uint64_t h,
                                        const void *key, size_t klen, bool copy, void *buf,
                                        size_t cap, size_t *vlen, shmkv_kind *kind)
{
    uint32_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
    if ((seq & 1) && seq != dead)
        return OPT_RETRY;
    uint64_t lo, top = shmkv__ro_top(m, &lo), off = 0, ev = 0;
    shmkv__ro_tab rt;
    int rc = shmkv__ro_table(m, s, seq, lo, top, &rt);
    if (rc)
        return rc;
    rc = rt.t ? shmkv__ro_find(m, &rt, h, key, klen, &off, &ev) : SHMKV_ENOTFOUND;
    if (rc == OPT_RETRY)
        return rc;
    unsigned k = 0;
    if (rc == 0) {
        k = shmkv__block_of(m, off)->kind;
        if (copy && ev > cap)
            rc = SHMKV_EBUFSIZE;
        else if (copy && ev)
            shmkv__racy_copy(buf, shmkv__entry_at(m, off)->data + klen, (size_t)ev);
    }
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&s->seq, memory_order_relaxed) != seq)
        return OPT_RETRY;
    if (rc != SHMKV_ENOTFOUND) {
        if (vlen)
            *vlen = (size_t)ev;
        if (kind)
            *kind = (shmkv_kind)k;
    }
    return rc;
}

/* A few attempts without the lock; OPT_RETRY when the segment stayed busy
 * (or a dead holder left seq odd: the locked path repairs it). */
int shmkv__read_fast(shmkv_db *db, const void *key, size_t klen, bool copy, void *buf, size_t cap,
                     size_t *vlen, shmkv_kind *kind)
{
    uint64_t h = shmkv__hash(key, klen);
    shmkv__seg *s = shmkv__seg_for(db->m, h);
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

/* The odd seq of a segment whose holder is known dead, or 0. */
uint32_t shmkv__dead_seq(shmkv__map *m, shmkv__seg *s)
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

int shmkv__read_ro(shmkv_db *db, const void *key, size_t klen, bool copy, void *buf, size_t cap,
                   size_t *vlen, shmkv_kind *kind)
{
    uint64_t h = shmkv__hash(key, klen), start = shmkv__mono_ns();
    shmkv__seg *s = shmkv__seg_for(db->m, h);
    shmkv__call_begin(db);
    for (int attempt = 0;; attempt++) {
        int rc = read_unlocked(db->m, s, shmkv__dead_seq(db->m, s), h, key, klen, copy, buf, cap, vlen,
                               kind);
        if (rc != OPT_RETRY)
            return rc;
        if (!shmkv__ro_backoff(attempt, start))
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
    uint64_t lo, top = shmkv__ro_top(m, &lo);
    shmkv__ro_tab rt = {0};
    size_t mark = out ? out->len : 0;
    uint64_t n = 0;
    int rc = 0;
    if (!out && !plen && !(seq & 1)) {
        /* counted under an even seq, the count is exact */
        n = atomic_load_explicit(&s->count, memory_order_relaxed);
    } else if ((rc = shmkv__ro_table(m, s, seq, lo, top, &rt)) != 0) {
        return rc;
    }
    if (rt.t) {
        for (uint64_t i = 0; i < rt.cap && !rc; i++) {
            uint64_t w = atomic_load_explicit(&((shmkv__table *)rt.t)->slot[i], memory_order_relaxed);
            w = shmkv__ro_slot(rt.in, rt.nin, rt.doom, i, w);
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
            const shmkv__entry *e = shmkv__entry_at(m, off);
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
    uint64_t start = shmkv__mono_ns();
    for (int attempt = 0;; attempt++) {
        int rc = snap_try(m, s, shmkv__dead_seq(m, s), prefix, plen, keys_only, out, count);
        if (rc != OPT_RETRY)
            return rc;
        if (!shmkv__ro_backoff(attempt, start))
            return SHMKV_ETIMEDOUT;
    }
}
