/*
 * check_region.c - --check of the region as a whole: the header, the
 * locks, each owner's allocator against the chunk and block walk
 * (scan.c), and at the end the blocks that nothing references (see check.c
 * for the order).
 */
#include "check.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

/* glibc's robust mutex: __lock is the futex word (owner tid, plus
 * FUTEX_OWNER_DIED once the kernel saw the owner die, plus FUTEX_WAITERS);
 * __owner is the tid too, except for two markers. INCONSISTENT: a thread
 * got EOWNERDEAD and has not yet called pthread_mutex_consistent; if that
 * thread died too, the next locker gets EOWNERDEAD again and repairs, so it
 * is as recoverable as any dead owner. NOTRECOVERABLE: such a thread
 * unlocked without making it consistent; every later lock fails with
 * ENOTRECOVERABLE, for good. *repairing tells the first case. */
#define GLIBC_MUTEX_INCONSISTENT    0x7fffffffu
#define GLIBC_MUTEX_NOTRECOVERABLE  0x7ffffffeu
#define GLIBC_FUTEX_OWNER_DIED      0x40000000u
#define GLIBC_FUTEX_TID_MASK        0x3fffffffu

int lock_state(const view *v, uint64_t moff, int *tid, bool *repairing)
{
    *tid = 0;
    *repairing = false;
#if defined(__GLIBC__)
    uint32_t lk, owner = 0;
    if (!vu32(v, moff + offsetof(pthread_mutex_t, __data.__lock), &lk))
        return LOCK_UNKNOWN;
    vu32(v, moff + offsetof(pthread_mutex_t, __data.__owner), &owner);
    if (owner == GLIBC_MUTEX_NOTRECOVERABLE)
        return LOCK_BROKEN;
    *repairing = owner == GLIBC_MUTEX_INCONSISTENT;
    if (lk == 0)
        return LOCK_FREE;
    *tid = (int)(lk & GLIBC_FUTEX_TID_MASK);
    if (lk & GLIBC_FUTEX_OWNER_DIED)
        return LOCK_DEAD;
    if (*tid && !pid_alive(*tid))
        return LOCK_DEAD;
    return LOCK_HELD;
#else
    (void)v;
    (void)moff;
    (void)repairing;
    return LOCK_UNKNOWN;
#endif
}

/* ---- header ------------------------------------------------------------ */

void check_header(ck *c)
{
    const shmkv__hdr *h = c->h;
    uint64_t top = atomic_load_explicit(&h->top, memory_order_relaxed);
    uint64_t fs = atomic_load_explicit(&h->file_size, memory_order_relaxed);
    uint64_t st_size = c->file_len;
    if (!shmkv__reserve_ok(h->reserve))
        prob(c->r, "header: reserve %" PRIu64 " is not a page multiple in [%llu, %llu]",
             h->reserve, SHMKV__MIN_RESERVE, SHMKV__MAX_RESERVE);
    if (top > h->reserve)
        prob(c->r, "header: region end (top) %" PRIu64 " exceeds the reserve %" PRIu64, top,
             h->reserve);
    shmkv__layout l = shmkv__layout_of(h->nseg);
    if (h->seg_off != l.seg_off)
        prob(c->r, "header: segments at %" PRIu64 ", expected %u (right after the header)",
             h->seg_off, SHMKV__HDR_SIZE);
    else if (h->index_off != l.index_off || h->data_off != l.data_off)
        prob(c->r, "header: index at %" PRIu64 " and data at %" PRIu64 ", expected %" PRIu64
             " and %" PRIu64 " for %" PRIu32 " segments (the library refuses to open it)",
             h->index_off, h->data_off, l.index_off, l.data_off, h->nseg);
    if (fs < top)
        prob(c->r, "header: allocated file size %" PRIu64 " is less than the region end %"
             PRIu64, fs, top);
    if (fs > h->reserve)
        prob(c->r, "header: allocated file size %" PRIu64 " exceeds the reserve %" PRIu64, fs,
             h->reserve);
    if (fs > st_size)
        prob(c->r, "header: says %" PRIu64 " bytes are allocated but the file has %" PRIu64
             " (truncated copy?)", fs, st_size);
    uint32_t clean = atomic_load_explicit(&h->clean, memory_order_relaxed);
    if (clean > 1)
        prob(c->r, "header: clean flag is %" PRIu32 ", not 0 or 1", clean);
    if (h->track_keys > 1)
        prob(c->r, "header: key-tracking flag is %" PRIu32 ", not 0 or 1", h->track_keys);
    if (h->backend > SHMKV_BACKEND_MEMORY)
        prob(c->r, "header: backend is %" PRIu32 ", not 0 (disk) or 1 (memory)", h->backend);
    else if (h->backend != (uint32_t)c->s->found_backend)
        warn(c->r, "header: made as a %s store but read as a %s one (a copy?)",
             h->backend ? "memory" : "disk", c->s->found_backend ? "memory" : "disk");
    if (h->created > (uint64_t)time(NULL) + 86400)
        warn(c->r, "header: creation time %" PRIu64 " lies in the future", h->created);
    for (uint32_t i = 0; i < SHMKV__ATTACH_SLOTS; i++) {
        int32_t pid = atomic_load_explicit(&h->attach[i].pid, memory_order_relaxed);
        if (pid < 0)
            prob(c->r, "header: attach slot %" PRIu32 " holds pid %" PRId32, i, pid);
    }
    for (uint32_t i = 0; i < h->nseg; i++) {
        uint32_t id;
        if (!vu32(c->v, seg_base(c, i) + offsetof(shmkv__seg, id), &id)) {
            prob(c->r, "segment %" PRIu32 ": lies outside the file", i);
            break;
        }
        if (id != i)
            prob(c->r, "segment %" PRIu32 ": id field is %" PRIu32, i, id);
    }
    int tid;
    bool repairing;
    int st = lock_state(c->v, offsetof(shmkv__hdr, grow_lock), &tid, &repairing);
    if (st == LOCK_DEAD)
        pend(c->r, "header: the growth lock's owner died holding it; the next grower "
             "recovers it");
    else if (st == LOCK_BROKEN)
        prob(c->r, "header: the growth lock is not recoverable (a holder unlocked it without "
             "repairing it after its owner died): every grower will fail");
}

/* ---- locks ---------------------------------------------------------------- */

void check_locks(ck *c)
{
    const shmkv__hdr *h = c->h;
    for (uint32_t i = 0; i <= h->nseg; i++) {
        uint64_t moff = i < h->nseg ? seg_base(c, i) + offsetof(shmkv__seg, lock)
                                    : h->index_off + offsetof(shmkv__index, lock);
        owner_st *o = &c->ow[i];
        char nm[32];
        bool repairing;
        o->lock = lock_state(c->v, moff, &o->tid, &repairing);
        if (o->lock == LOCK_DEAD && repairing)
            pend(c->r, "%s: a process died while repairing after an earlier dead owner (lock "
                 "marked inconsistent); the next process to take the lock repairs it again",
                 owner_name(c, i, nm, sizeof nm));
        else if (o->lock == LOCK_DEAD && o->tid)
            pend(c->r, "%s: the lock's owner (thread %d) died holding it; the next process "
                 "to take it repairs what it left half done", owner_name(c, i, nm, sizeof nm),
                 o->tid);
        else if (o->lock == LOCK_DEAD)
            pend(c->r, "%s: the lock's owner died holding it; the next process to take it "
                 "repairs what it left half done", owner_name(c, i, nm, sizeof nm));
        else if (o->lock == LOCK_HELD && repairing)
            warn(c->r, "%s: thread %d is repairing after a dead owner right now",
                 owner_name(c, i, nm, sizeof nm), o->tid);
        else if (o->lock == LOCK_BROKEN)
            prob(c->r, "%s: the lock is not recoverable (a holder unlocked it without "
                 "repairing it after its owner died): every operation on it will fail",
                 owner_name(c, i, nm, sizeof nm));
        else if (o->lock == LOCK_HELD && !c->live)
            warn(c->r, "%s: the lock is held by thread %d although no process is attached",
                 owner_name(c, i, nm, sizeof nm), o->tid);
    }
}

/* ---- allocator ---------------------------------------------------------------- */

static bool read_alloc(ck *c, uint32_t slot, shmkv__alloc *a)
{
    uint64_t off = slot < c->h->nseg ? seg_base(c, slot) + offsetof(shmkv__seg, alloc)
                                     : c->h->index_off + offsetof(shmkv__index, alloc);
    return vcopy(c->v, off, a, sizeof *a);
}

void check_alloc(ck *c, uint32_t slot)
{
    shmkv__alloc a;
    owner_st *o = &c->ow[slot];
    char nm[32];
    owner_name(c, slot, nm, sizeof nm);
    uint32_t owner = slot < c->h->nseg ? slot : SHMKV__OWNER_INDEX;
    if (!read_alloc(c, slot, &a)) {
        prob(c->r, "%s: allocator state lies outside the file", nm);
        o->walk_ok = false;
        return;
    }
    if (c->sc.tiled) {
        if (a.nchunks != o->nchunks)
            oprob(c, slot, "%s: allocator counts %" PRIu64 " chunks, the region has %" PRIu64,
                  nm, a.nchunks, o->nchunks);
        if (a.chunk_bytes != o->chunk_bytes)
            oprob(c, slot, "%s: allocator counts %" PRIu64 " chunk bytes, its chunks hold %"
                  PRIu64, nm, a.chunk_bytes, o->chunk_bytes);
    }
    if (a.cur) {
        long ci = scan_chunk_of(&c->sc, a.cur);
        if (ci < 0 && unknown_at(c, a.cur))
            o->walk_ok = false;
        else if (ci < 0 || c->sc.c[ci].off != a.cur)
            prob(c->r, "%s: current chunk 0x%" PRIx64 " is not a chunk", nm, a.cur);
        else if (c->sc.c[ci].owner != owner)
            prob(c->r, "%s: current chunk 0x%" PRIx64 " belongs to owner %" PRIu32, nm, a.cur,
                 c->sc.c[ci].owner);
    }
    uint64_t p = a.spare, steps = 0;
    while (p) {
        long ci = scan_chunk_of(&c->sc, p);
        if (ci < 0 && unknown_at(c, p)) {
            o->walk_ok = false;
            break;
        }
        if (ci < 0 || c->sc.c[ci].off != p) {
            prob(c->r, "%s: spare-chunk list reaches 0x%" PRIx64 ", which is not a chunk", nm, p);
            break;
        }
        chk *ch = &c->sc.c[ci];
        if (ch->owner != owner) {
            prob(c->r, "%s: spare-chunk list reaches chunk 0x%" PRIx64 " of owner %" PRIu32,
                 nm, p, ch->owner);
            break;
        }
        if (ch->spare_seen) {
            prob(c->r, "%s: spare-chunk list loops (chunk 0x%" PRIx64 " met twice)", nm, p);
            break;
        }
        ch->spare_seen = 1;
        if (p == a.cur)
            prob(c->r, "%s: the current chunk 0x%" PRIx64 " is also on the spare list", nm, p);
        if (++steps > c->sc.nc)
            break;
        p = ch->next;
    }
    for (uint32_t cls = 0; cls < SHMKV__NCLASS; cls++) {
        uint64_t q = a.free_head[cls], n = 0;
        while (q) {
            long bi = scan_find(&c->sc, q);
            if (bi < 0 && unknown_at(c, q)) {
                o->walk_ok = false;
                break;
            }
            if (bi < 0) {
                prob(c->r, "%s: free list of class %" PRIu32 " reaches 0x%" PRIx64
                     ", which is not a block", nm, cls, q);
                o->walk_ok = false;
                break;
            }
            blk *b = &c->sc.b[bi];
            if (b->owner != owner) {
                prob(c->r, "%s: free list of class %" PRIu32 " reaches block 0x%" PRIx64
                     " of owner %" PRIu32, nm, cls, b->off, b->owner);
                break;
            }
            if (b->ref == REF_FREE) {
                prob(c->r, "%s: free list of class %" PRIu32 " loops or meets a listed block "
                     "again (0x%" PRIx64 ")", nm, cls, b->off);
                break;
            }
            if (b->cls != cls)
                prob(c->r, "%s: free list of class %" PRIu32 " holds block 0x%" PRIx64
                     " of class %u", nm, cls, b->off, b->cls);
            if (b->flags & SHMKV__BF_USED) {
                prob(c->r, "%s: block 0x%" PRIx64 " is on the free list of class %" PRIu32
                     " but marked in use", nm, b->off, cls);
                break; /* its payload is data, not a link */
            }
            b->ref = REF_FREE;
            if (++n > c->sc.nb || !vu64(c->v, q, &q))
                break;
        }
    }
}

/* ---- unreferenced blocks and byte accounting ------------------------------------ */

void check_blocks(ck *c)
{
    uint32_t nown = c->h->nseg + 1;
    uint64_t *leak_n = calloc(nown, 8), *leak_b = calloc(nown, 8), *leak_at = calloc(nown, 8);
    uint64_t *lost_n = calloc(nown, 8), *lost_b = calloc(nown, 8), *lost_at = calloc(nown, 8);
    uint64_t marks = 0, mark_at = 0;
    char nm[32];
    if (!leak_n || !leak_b || !leak_at || !lost_n || !lost_b || !lost_at) {
        c->r->oom = true;
        goto out;
    }
    for (size_t i = 0; i < c->sc.nb; i++) {
        const blk *b = &c->sc.b[i];
        uint32_t s = owner_slot(c, b->owner);
        uint8_t known = SHMKV__BF_USED | SHMKV__BF_MARK |
                        (c->h->version >= 3 ? SHMKV__BF_LEASE : 0);
        if (b->flags & ~known)
            prob(c->r, "block 0x%" PRIx64 ": unknown flags 0x%02x", b->off, b->flags);
        else if ((b->flags & SHMKV__BF_LEASE) && (b->flags & SHMKV__BF_USED) &&
                 b->ref != REF_ENTRY && b->ref != REF_NONE)
            prob(c->r, "block 0x%" PRIx64 ": a lease flag on a block referenced by %s", b->off,
                 ref_name(b->ref));
        if ((b->flags & SHMKV__BF_MARK) && !marks++)
            mark_at = b->off;
        if (s == UINT32_MAX || !c->ow[s].walk_ok)
            continue;
        if ((b->flags & SHMKV__BF_USED) && b->ref == REF_NONE) {
            if (!leak_n[s]++)
                leak_at[s] = b->off;
            leak_b[s] += b->size;
        } else if (!(b->flags & SHMKV__BF_USED) && b->ref != REF_FREE) {
            if (!lost_n[s]++)
                lost_at[s] = b->off;
            lost_b[s] += b->size;
        }
    }
    if (marks && !c->live && c->reopen_repair)
        pend(c->r, "%" PRIu64 " block(s) still carry the recovery mark (first at 0x%" PRIx64
             "): a repair was cut short; the next opener repairs the store again", marks,
             mark_at);
    else if (marks && !c->live)
        prob(c->r, "%" PRIu64 " block(s) still carry the recovery mark (first at 0x%" PRIx64
             "): a recovery walk did not finish", marks, mark_at);
    for (uint32_t s = 0; s < nown; s++) {
        owner_name(c, s, nm, sizeof nm);
        if (leak_n[s])
            oprob(c, s, "%s: %" PRIu64 " block%s (%" PRIu64 " bytes) in use but referenced "
                  "by nothing (leaked); first at 0x%" PRIx64, nm, leak_n[s], plural(leak_n[s]),
                  leak_b[s], leak_at[s]);
        if (lost_n[s])
            oprob(c, s, "%s: %" PRIu64 " free block%s (%" PRIu64 " bytes) on no free list "
                  "(lost to the allocator); first at 0x%" PRIx64, nm, lost_n[s],
                  plural(lost_n[s]), lost_b[s], lost_at[s]);
        shmkv__alloc a;
        if (c->sc.tiled && c->ow[s].blocks_known && read_alloc(c, s, &a) &&
            a.used_bytes != c->ow[s].used_bytes)
            oprob(c, s, "%s: allocator counts %" PRIu64 " bytes in use, its used blocks hold %"
                  PRIu64, nm, a.used_bytes, c->ow[s].used_bytes);
    }
out:
    free(leak_n);
    free(leak_b);
    free(leak_at);
    free(lost_n);
    free(lost_b);
    free(lost_at);
}

