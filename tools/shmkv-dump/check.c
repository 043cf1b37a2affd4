/*
 * check.c - --check: verify every structure of a region against the
 * format's invariants, reading only through the bounded view.
 *
 * Order: header; chunk and block tiling (scan.c); each owner's allocator
 * (chunk accounting, bump chunk, spare list, free lists); each segment's
 * table and entries; the key index (tree, key array, agreement with the
 * tables); finally blocks that nothing references. Every block records who
 * references it, so a block reached twice (a cycle, a shared node, a live
 * entry on a free list) is caught without trusting any count.
 */
#include "dump.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define KEEP_MAX 2000   /* problems/warnings kept as text (all are counted) */
#define EXAMPLES 5      /* keys named when index and tables disagree */
#define BT_MAXN (SHMKV__BT_SLOTS - 1)
#define TREE_DEPTH 40

/* ---- report --------------------------------------------------------- */

static void add_msg(report *r, char ***arr, size_t *n, size_t *cap, uint64_t *total,
                    const char *fmt, va_list ap)
{
    (*total)++;
    if (*n >= KEEP_MAX)
        return;
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) {
        r->oom = true;
        return;
    }
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        char **p = realloc(*arr, nc * sizeof *p);
        if (!p) {
            free(s);
            r->oom = true;
            return;
        }
        *arr = p;
        *cap = nc;
    }
    (*arr)[(*n)++] = s;
}

void prob(report *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_msg(r, &r->prob, &r->nprob, &r->capprob, &r->prob_total, fmt, ap);
    va_end(ap);
}

void warn(report *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_msg(r, &r->warn, &r->nwarn, &r->capwarn, &r->warn_total, fmt, ap);
    va_end(ap);
}

void pend(report *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_msg(r, &r->pend, &r->npend, &r->cappend, &r->pend_total, fmt, ap);
    va_end(ap);
}

void report_free(report *r)
{
    for (size_t i = 0; i < r->nprob; i++)
        free(r->prob[i]);
    for (size_t i = 0; i < r->nwarn; i++)
        free(r->warn[i]);
    for (size_t i = 0; i < r->npend; i++)
        free(r->pend[i]);
    free(r->prob);
    free(r->warn);
    free(r->pend);
    memset(r, 0, sizeof *r);
}

/* ---- state of one check run ------------------------------------------- */

enum { LOCK_FREE, LOCK_HELD, LOCK_DEAD, LOCK_BROKEN, LOCK_UNKNOWN };

typedef struct owner_st {
    uint64_t nchunks, chunk_bytes, used_bytes;
    bool walk_ok;   /* every reference of this owner was followed */
    bool blocks_known; /* every block of this owner was walked */
    int lock;       /* LOCK_* */
    int tid;
} owner_st;

typedef struct tkey {
    const unsigned char *k;
    uint32_t klen;
} tkey;

typedef struct ck {
    const store *s;
    uint64_t file_len; /* the file's size when the view was taken */
    const view *v;
    const shmkv__hdr *h;
    report *r;
    bool live;
    /* Nobody has the store open and it was not closed cleanly: the next
     * opener repairs every segment and rebuilds the index (region.c), so
     * what those repairs fix is pending, not damage. */
    bool reopen_repair;
    scan sc;
    owner_st *ow; /* nseg segments, then the index */
    ent *e;
    size_t ne, cape;
    tkey *tk;
    size_t ntk, captk;
    uint64_t index_keys;
    uint64_t live_slots;
    bool tree_sorted;
    bool tables_complete; /* every live slot's entry was read */
    uint64_t karr_bad;
} ck;

typedef struct check_res {
    uint64_t chunks, blocks, keys, index_keys;
} check_res;

static uint32_t owner_slot(const ck *c, uint32_t owner)
{
    if (owner < c->h->nseg)
        return owner;
    if (owner == SHMKV__OWNER_INDEX)
        return c->h->nseg;
    return UINT32_MAX;
}

static const char *owner_name(const ck *c, uint32_t slot, char *buf, size_t n)
{
    if (slot == c->h->nseg)
        snprintf(buf, n, "index");
    else
        snprintf(buf, n, "segment %" PRIu32, slot);
    return buf;
}

/* Accounting problems of an owner whose lock holder died are expected:
 * the next process to take the lock repairs them. */
static void oprob(ck *c, uint32_t slot, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void oprob(ck *c, uint32_t slot, const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int rc = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (rc < 0) {
        c->r->oom = true;
        return;
    }
    if (c->ow[slot].lock == LOCK_DEAD)
        pend(c->r, "%s (the lock's owner died; the next process to lock it repairs this)", s);
    else if (c->reopen_repair)
        pend(c->r, "%s (the store was not closed cleanly; its next opener repairs this)", s);
    else
        prob(c->r, "%s", s);
    free(s);
}

/* A key for a message: escaped, cut at 48 bytes. */
static const char *kdesc(const unsigned char *k, size_t n, char *buf, size_t cap)
{
    size_t o = 0;
    buf[o++] = '"';
    for (size_t i = 0; i < n && i < 48 && o + 8 < cap; i++) {
        unsigned char ch = k[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\')
            buf[o++] = (char)ch;
        else
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", ch);
    }
    if (n > 48 && o + 5 < cap) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '"';
    buf[o] = 0;
    return buf;
}

/* True when off lies where the walk could not go (past a broken chunk, or
 * in a chunk whose blocks could not be walked): a reference there can be
 * neither confirmed nor refuted, so it is not reported on its own. */
static bool unknown_at(const ck *c, uint64_t off)
{
    long ci = scan_chunk_of(&c->sc, off);
    if (ci >= 0)
        return !c->sc.c[ci].blocks_ok;
    return !c->sc.tiled && off >= c->sc.end && off < c->v->len;
}

static const char *plural(uint64_t n)
{
    return n == 1 ? "" : "s";
}

static uint64_t seg_base(const ck *c, uint32_t i)
{
    return shmkv__seg_off(c->h, i);
}

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

static int lock_state(const view *v, uint64_t moff, int *tid, bool *repairing)
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

static void check_header(ck *c)
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

static void check_locks(ck *c)
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

static void check_alloc(ck *c, uint32_t slot)
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

static int check_segment(ck *c, uint32_t i)
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
        uint64_t run = 0;
        for (uint64_t k = 1; k <= cap; k++) {
            uint64_t j = (empty_at + k) & (cap - 1);
            if (w[j] == SHMKV__SLOT_EMPTY) {
                run = 0;
                continue;
            }
            run++;
            if (hs[j] == UINT64_MAX)
                continue;
            uint64_t d = (j - (hs[j] & (cap - 1))) & (cap - 1);
            if (d >= run) {
                ent e;
                entry_read(c->v, &c->sc, SHMKV__SLOT_OFF(w[j]), &e, why, sizeof why);
                prob(c->r, "segment %" PRIu32 " slot %" PRIu64 ": key %s is unreachable: an "
                     "empty slot lies between its home bucket %" PRIu64 " and it", i, j,
                     kdesc(e.key, e.klen, kb, sizeof kb), hs[j] & (cap - 1));
            }
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

static void check_duplicates(ck *c)
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

/* ---- key index -------------------------------------------------------------------- */

typedef struct frame {
    uint64_t off;
    shmkv__bt_node nd;
    uint32_t i;
    uint64_t count;   /* keys counted below */
    uint64_t min_key; /* blob of the smallest key below, 0: none */
    uint64_t min_pfx;
    bool partial;     /* some subtree could not be walked */
} frame;

/* Validate the node at off and copy it; false (reported) when unusable. */
static bool load_node(ck *c, uint64_t off, bool root, shmkv__bt_node *nd)
{
    long bi = scan_find(&c->sc, off);
    if (bi < 0) {
        if (!unknown_at(c, off))
            prob(c->r, "index: tree node 0x%" PRIx64 " is not a block", off);
        return false;
    }
    blk *b = &c->sc.b[bi];
    if (b->owner != SHMKV__OWNER_INDEX || !(b->flags & SHMKV__BF_USED) ||
        b->size < SHMKV__BLOCK_HDR + sizeof *nd) {
        prob(c->r, "index: tree node 0x%" PRIx64 " is a %s block of owner %" PRIu32
             " and %" PRIu64 " bytes", off, (b->flags & SHMKV__BF_USED) ? "used" : "free",
             b->owner, b->size);
        return false;
    }
    if (b->ref != REF_NONE) {
        prob(c->r, "index: tree node 0x%" PRIx64 " is also referenced by %s (a cycle or a "
             "shared node)", off, ref_name(b->ref));
        return false;
    }
    b->ref = REF_NODE;
    if (!vcopy(c->v, off, nd, sizeof *nd))
        return false;
    int f = shmkv__bt_node_check(nd);
    if (f == SHMKV__F_LEAF) {
        prob(c->r, "index: tree node 0x%" PRIx64 ": leaf flag is %" PRIu32, off, nd->leaf);
        return false;
    }
    if (f) {
        prob(c->r, "index: tree node 0x%" PRIx64 " holds %" PRIu32 " entries (1 to %u)", off,
             nd->n, BT_MAXN);
        return false;
    }
    if (nd->n > BT_MAXN)
        prob(c->r, "index: tree node 0x%" PRIx64 " is over-full (%" PRIu32 " entries)", off,
             nd->n);
    if (root && !nd->leaf && nd->n < 2)
        warn(c->r, "index: the root 0x%" PRIx64 " is an internal node with one child", off);
    return true;
}

static int push_tkey(ck *c, const unsigned char *k, uint32_t klen)
{
    if (c->ntk == c->captk) {
        size_t n = c->captk ? c->captk * 2 : 1024;
        tkey *p = realloc(c->tk, n * sizeof *p);
        if (!p)
            return -ENOMEM;
        c->tk = p;
        c->captk = n;
    }
    c->tk[c->ntk++] = (tkey){ k, klen };
    return 0;
}

/* A leaf entry: its blob. Returns the key or NULL (reported). */
static const unsigned char *leaf_entry(ck *c, uint64_t node, uint32_t i, const shmkv__bt_ent *e,
                                       uint32_t *klen)
{
    char kb[256];
    if (e->child != 0 || e->count != 1)
        prob(c->r, "index: leaf 0x%" PRIx64 " entry %" PRIu32 ": child %" PRIu64 " / count %"
             PRIu64 " (a leaf entry has 0 / 1)", node, i, e->child, e->count);
    long bi = scan_find(&c->sc, e->key);
    if (bi < 0 && unknown_at(c, e->key))
        return NULL;
    if (bi < 0) {
        prob(c->r, "index: leaf 0x%" PRIx64 " entry %" PRIu32 ": key blob 0x%" PRIx64
             " is not a block", node, i, e->key);
        return NULL;
    }
    blk *b = &c->sc.b[bi];
    if (b->owner != SHMKV__OWNER_INDEX || !(b->flags & SHMKV__BF_USED)) {
        prob(c->r, "index: leaf 0x%" PRIx64 " entry %" PRIu32 ": key blob 0x%" PRIx64
             " is a %s block of owner %" PRIu32, node, i, e->key,
             (b->flags & SHMKV__BF_USED) ? "used" : "free", b->owner);
        return NULL;
    }
    if (b->ref != REF_NONE) {
        prob(c->r, "index: leaf 0x%" PRIx64 " entry %" PRIu32 ": key blob 0x%" PRIx64
             " is also referenced by %s", node, i, e->key, ref_name(b->ref));
        return NULL;
    }
    b->ref = REF_BLOB;
    shmkv__kblob kh = {0};
    if (!vcopy(c->v, e->key, &kh, sizeof kh) || shmkv__kblob_check(&kh, b->size)) {
        prob(c->r, "index: key blob 0x%" PRIx64 ": length %" PRIu32 " invalid for its %" PRIu64
             "-byte block", e->key, kh.klen, b->size);
        return NULL;
    }
    const unsigned char *k = vptr(c->v, e->key + sizeof kh, kh.klen);
    if (!k)
        return NULL;
    if (e->pfx != shmkv__pfx(k, kh.klen))
        prob(c->r, "index: leaf 0x%" PRIx64 " entry %" PRIu32 ": prefix word 0x%016" PRIx64
             " does not match key %s", node, i, e->pfx, kdesc(k, kh.klen, kb, sizeof kb));
    *klen = kh.klen;
    return k;
}

static int check_tree(ck *c, uint64_t root)
{
    frame *st = calloc(TREE_DEPTH, sizeof *st);
    char kb[256], kb2[256];
    int leaf_depth = -1, rc = 0;
    bool partial = false;
    if (!st)
        return -ENOMEM;
    if (!load_node(c, root, true, &st[0].nd)) {
        free(st);
        c->ow[c->h->nseg].walk_ok = false;
        return 0;
    }
    st[0].off = root;
    int d = 0;
    while (d >= 0) {
        frame *f = &st[d];
        if (f->i < f->nd.n && f->nd.leaf) {
            const shmkv__bt_ent *e = &f->nd.e[f->i];
            uint32_t klen = 0;
            const unsigned char *k = leaf_entry(c, f->off, f->i, e, &klen);
            if (k) {
                if (c->ntk) {
                    const tkey *p = &c->tk[c->ntk - 1];
                    if (shmkv__keycmp(p->k, p->klen, k, klen) >= 0) {
                        prob(c->r, "index: key %s follows %s: tree out of order or holding a "
                             "key twice", kdesc(k, klen, kb, sizeof kb),
                             kdesc(p->k, p->klen, kb2, sizeof kb2));
                        c->tree_sorted = false;
                    }
                }
                if ((rc = push_tkey(c, k, klen)) < 0)
                    break;
                f->count++;
                if (f->i == 0) {
                    f->min_key = e->key;
                    f->min_pfx = e->pfx;
                }
            } else {
                f->partial = true;
            }
            f->i++;
            continue;
        }
        if (f->i < f->nd.n) {
            uint64_t child = f->nd.e[f->i].child;
            if (d + 1 >= TREE_DEPTH) {
                prob(c->r, "index: tree deeper than %d levels (a cycle?)", TREE_DEPTH);
                f->partial = true;
                f->i++;
                continue;
            }
            frame *g = &st[d + 1];
            memset(g, 0, sizeof *g);
            if (!load_node(c, child, false, &g->nd)) {
                f->partial = true;
                f->i++;
                continue;
            }
            g->off = child;
            d++;
            continue;
        }
        /* Node finished. */
        if (f->nd.leaf) {
            if (leaf_depth < 0)
                leaf_depth = d;
            else if (leaf_depth != d)
                prob(c->r, "index: leaf 0x%" PRIx64 " at depth %d, other leaves at depth %d",
                     f->off, d, leaf_depth);
        }
        if (f->partial)
            partial = true;
        if (d == 0)
            break;
        frame *p = &st[d - 1];
        const shmkv__bt_ent *pe = &p->nd.e[p->i];
        if (!f->partial) {
            if (pe->count != f->count)
                prob(c->r, "index: node 0x%" PRIx64 " entry %" PRIu32 " counts %" PRIu64
                     " keys, its subtree holds %" PRIu64, p->off, p->i, pe->count, f->count);
            if (pe->key != f->min_key || pe->pfx != f->min_pfx)
                prob(c->r, "index: node 0x%" PRIx64 " entry %" PRIu32 " does not name the "
                     "smallest key of its subtree", p->off, p->i);
        } else {
            p->partial = true;
        }
        p->count += f->count;
        if (p->i == 0) {
            p->min_key = f->min_key;
            p->min_pfx = f->min_pfx;
        }
        p->i++;
        d--;
    }
    if (partial)
        c->ow[c->h->nseg].walk_ok = false;
    free(st);
    return rc;
}

static void check_karr(ck *c, uint64_t karr, uint64_t n)
{
    long bi = scan_find(&c->sc, karr);
    if (bi < 0) {
        if (!unknown_at(c, karr))
            prob(c->r, "index: key array 0x%" PRIx64 " is not a block", karr);
        c->ow[c->h->nseg].walk_ok = false;
        return;
    }
    blk *b = &c->sc.b[bi];
    if (b->owner != SHMKV__OWNER_INDEX || !(b->flags & SHMKV__BF_USED) || b->ref != REF_NONE) {
        prob(c->r, "index: key array 0x%" PRIx64 " is a %s block of owner %" PRIu32 " (%s)",
             karr, (b->flags & SHMKV__BF_USED) ? "used" : "free", b->owner,
             b->ref ? ref_name(b->ref) : "unreferenced");
        c->ow[c->h->nseg].walk_ok = false;
        return;
    }
    b->ref = REF_KARR;
    uint64_t cap;
    if (!vu64(c->v, karr, &cap))
        return;
    uint64_t fit = (b->size - SHMKV__BLOCK_HDR - sizeof(shmkv__karr)) / 8;
    if (cap > fit) {
        prob(c->r, "index: key array capacity %" PRIu64 " does not fit its %" PRIu64
             "-byte block", cap, b->size);
        cap = fit;
    }
    if (n > cap) {
        prob(c->r, "index: %" PRIu64 " keys but the key array holds %" PRIu64, n, cap);
        n = cap;
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t off;
        if (!vu64(c->v, karr + sizeof(shmkv__karr) + i * 8, &off))
            break;
        long ki = scan_find(&c->sc, off);
        if (ki < 0 || c->sc.b[ki].ref != REF_BLOB) {
            /* With part of the tree unwalkable this is expected. */
            if (c->ow[c->h->nseg].walk_ok && c->karr_bad++ < EXAMPLES)
                prob(c->r, "index: key array entry %" PRIu64 " (0x%" PRIx64 ") is not a key "
                     "of the tree", i, off);
            continue;
        }
        if (c->sc.b[ki].aux) {
            prob(c->r, "index: key array holds key blob 0x%" PRIx64 " twice", off);
            continue;
        }
        c->sc.b[ki].aux = 1;
        uint32_t pos;
        if (vu32(c->v, off + offsetof(shmkv__kblob, pos), &pos) && pos != i)
            prob(c->r, "index: key blob 0x%" PRIx64 " says position %" PRIu32 ", the key array "
                 "has it at %" PRIu64, off, pos, i);
    }
}

static void karr_total(ck *c)
{
    if (c->karr_bad > EXAMPLES)
        prob(c->r, "index: %" PRIu64 " key array entries are not keys of the tree in all",
             c->karr_bad);
}

static int tkey_cmp(const void *a, const void *b)
{
    const tkey *x = a, *y = b;
    return shmkv__keycmp(x->k, x->klen, y->k, y->klen);
}

static void compare_index(ck *c)
{
    char kb[256];
    uint64_t missing = 0, extra = 0;
    size_t i = 0, j = 0;
    if (!c->tree_sorted && c->ntk > 1)
        qsort(c->tk, c->ntk, sizeof *c->tk, tkey_cmp);
    while (i < c->ne || j < c->ntk) {
        int cmp;
        if (i == c->ne)
            cmp = 1;
        else if (j == c->ntk)
            cmp = -1;
        else
            cmp = shmkv__keycmp(c->e[i].key, c->e[i].klen, c->tk[j].k, c->tk[j].klen);
        if (cmp == 0) {
            i++, j++;
        } else if (cmp < 0) {
            if (missing++ < EXAMPLES)
                prob(c->r, "index: key %s of segment %" PRIu32 " is missing from the index",
                     kdesc(c->e[i].key, c->e[i].klen, kb, sizeof kb), c->e[i].seg);
            i++;
        } else {
            if (extra++ < EXAMPLES)
                prob(c->r, "index: holds key %s, which no table has",
                     kdesc(c->tk[j].k, c->tk[j].klen, kb, sizeof kb));
            j++;
        }
    }
    if (missing > EXAMPLES)
        prob(c->r, "index: %" PRIu64 " keys of the tables are missing from it in all", missing);
    if (extra > EXAMPLES)
        prob(c->r, "index: holds %" PRIu64 " keys that no table has in all", extra);
}

/* The undo log: its block, and whether an update was cut short. Returns
 * its state (SHMKV__ULOG_*), or -1 when there is none or it is unusable. */
static int check_ulog(ck *c, uint64_t off)
{
    char kb[256];
    long bi = scan_find(&c->sc, off);
    if (bi < 0) {
        if (!unknown_at(c, off))
            prob(c->r, "index: undo log 0x%" PRIx64 " is not a block", off);
        return -1;
    }
    blk *b = &c->sc.b[bi];
    if (b->owner != SHMKV__OWNER_INDEX || !(b->flags & SHMKV__BF_USED) || b->ref != REF_NONE ||
        b->size < sizeof(shmkv__ulog) + SHMKV__BLOCK_HDR) {
        prob(c->r, "index: undo log 0x%" PRIx64 " is a %s %" PRIu64 "-byte block of owner %"
             PRIu32 " (%s)", off, (b->flags & SHMKV__BF_USED) ? "used" : "free", b->size,
             b->owner, b->ref ? ref_name(b->ref) : "unreferenced");
        return -1;
    }
    b->ref = REF_ULOG;
    shmkv__ulog lg;
    if (!vcopy(c->v, off, &lg, offsetof(shmkv__ulog, key)))
        return -1;
    uint32_t state = atomic_load_explicit(&lg.state, memory_order_relaxed);
    uint64_t used = atomic_load_explicit(&lg.used, memory_order_relaxed);
    const unsigned char *key = lg.klen <= SHMKV_KEY_MAX
        ? vptr(c->v, off + offsetof(shmkv__ulog, key), lg.klen) : NULL;
    const char *k = key ? kdesc(key, lg.klen, kb, sizeof kb) : "(unreadable)";
    switch (state) {
    case SHMKV__ULOG_IDLE:
        return (int)state;
    case SHMKV__ULOG_ACTIVE:
        pend(c->r, "index: an update of key %s was cut short; the next process to take the "
             "index lock writes back the %" PRIu64 " bytes it recorded%s, then settles that "
             "key from its table", k, used,
             lg.overflow ? " (the record overflowed: it rebuilds the index instead)" : "");
        return (int)state;
    case SHMKV__ULOG_RECONCILE:
        pend(c->r, "index: an update of key %s was rolled back; the next index user adds or "
             "removes that key to match segment %" PRIu32 "'s table", k, lg.seg);
        return (int)state;
    case SHMKV__ULOG_TIDY:
        pend(c->r, "index: a process died handing the index's freed chunks back to the "
             "pool after an update of key %s; the next process to take the index lock "
             "rebuilds the index from the tables", k);
        return (int)state;
    default:
        prob(c->r, "index: undo log state is %" PRIu32 ", not 0, 1, 2 or 3", state);
        return -1;
    }
}

static int check_index(ck *c)
{
    shmkv__index ix;
    uint32_t islot = c->h->nseg;
    if (!vcopy(c->v, c->h->index_off, &ix, sizeof ix)) {
        prob(c->r, "index: lies outside the file");
        c->ow[islot].walk_ok = false;
        return 0;
    }
    uint32_t dirty = atomic_load_explicit(&ix.dirty, memory_order_relaxed);
    if (!c->h->track_keys) {
        if (ix.root || ix.karr || ix.n) {
            warn(c->r, "index: key tracking is off but the index is not empty (root 0x%" PRIx64
                 ", %" PRIu64 " keys)", ix.root, ix.n);
            c->ow[islot].walk_ok = false;
        }
        return 0;
    }
    if (dirty > 1)
        prob(c->r, "index: dirty flag is %" PRIu32 ", not 0 or 1", dirty);
    int ul = ix.ulog ? check_ulog(c, ix.ulog) : -1;
    if (ix.gen != atomic_load_explicit(&c->h->clear_gen, memory_order_relaxed)) {
        pend(c->r, "index: a clear() died before emptying it; the next process to take the "
             "index lock empties it");
        c->ow[islot].walk_ok = false;
        return 0;
    }
    if (ul == SHMKV__ULOG_TIDY) {
        c->ow[islot].walk_ok = false; /* its allocator may be half walked */
        return 0;
    }
    if (ul == SHMKV__ULOG_ACTIVE && !dirty) {
        c->ow[islot].walk_ok = false; /* half changed: its contents mean nothing yet */
        return 0;
    }
    if (!dirty && c->ow[islot].lock == LOCK_DEAD && ul < 0) {
        pend(c->r, "index: its lock's owner died, so the next process to take the lock "
             "rebuilds it from the tables; its contents were not checked");
        c->ow[islot].walk_ok = false;
        return 0;
    }
    if (dirty) {
        pend(c->r, "index: marked for rebuilding (a process died updating it); the next "
             "writer rebuilds it from the tables, so its contents were not checked");
        c->ow[islot].walk_ok = false;
        return 0;
    }
    if (c->reopen_repair) {
        pend(c->r, "index: the store was not closed cleanly, so its next opener rebuilds the "
             "index from the tables; its contents were not checked");
        c->ow[islot].walk_ok = false;
        return 0;
    }
    c->index_keys = ix.n;
    c->tree_sorted = true;
    if (!ix.root != !ix.n)
        prob(c->r, "index: root 0x%" PRIx64 " but %" PRIu64 " keys", ix.root, ix.n);
    if (ix.root) {
        int rc = check_tree(c, ix.root);
        if (rc < 0)
            return rc;
    }
    if (c->ow[islot].walk_ok && ix.n != c->ntk)
        prob(c->r, "index: counts %" PRIu64 " keys, its tree holds %zu", ix.n, c->ntk);
    if (ix.karr) {
        check_karr(c, ix.karr, ix.n);
        karr_total(c);
    }
    else if (ix.n)
        prob(c->r, "index: %" PRIu64 " keys but no key array", ix.n);
    /* Agreement with the tables means something only when both sides were
     * read completely; what stopped either is reported already. */
    if (!c->tables_complete || !c->ow[islot].walk_ok)
        return 0;
    /* One key may still disagree with its table (listed as a repair). */
    if (ul == SHMKV__ULOG_RECONCILE)
        return 0;
    if (ix.n != c->live_slots)
        prob(c->r, "index: counts %" PRIu64 " keys, the tables hold %" PRIu64, ix.n,
             c->live_slots);
    compare_index(c);
    return 0;
}

/* ---- unreferenced blocks and byte accounting ------------------------------------ */

static void check_blocks(ck *c)
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
        if (b->flags & ~(SHMKV__BF_USED | SHMKV__BF_MARK))
            prob(c->r, "block 0x%" PRIx64 ": unknown flags 0x%02x", b->off, b->flags);
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

/* ---- one run --------------------------------------------------------------------- */

static int run_check(const store *s, const view *v, uint64_t file_len, const shmkv__hdr *h,
                     bool live, report *r, check_res *res)
{
    ck c = {0};
    int rc = 0;
    c.s = s;
    c.file_len = file_len;
    c.v = v;
    c.h = h;
    c.r = r;
    c.live = live;
    c.reopen_repair = !live && atomic_load_explicit(&h->clean, memory_order_relaxed) == 0;
    c.tables_complete = true;
    memset(res, 0, sizeof *res);
    c.ow = calloc(h->nseg + 1, sizeof *c.ow);
    if (!c.ow)
        return -ENOMEM;
    for (uint32_t i = 0; i <= h->nseg; i++)
        c.ow[i].walk_ok = c.ow[i].blocks_known = true;

    check_header(&c);
    check_locks(&c);
    if ((rc = scan_region(v, h, &c.sc, r)) < 0)
        goto out;
    for (size_t i = 0; i < c.sc.nc; i++) {
        uint32_t sl = owner_slot(&c, c.sc.c[i].owner);
        if (sl == UINT32_MAX)
            continue;
        c.ow[sl].nchunks++;
        c.ow[sl].chunk_bytes += c.sc.c[i].size;
        if (!c.sc.c[i].blocks_ok)
            c.ow[sl].walk_ok = c.ow[sl].blocks_known = false;
    }
    /* The free pool's byte count is exact unless the growth lock's holder
     * died, in which case its next holder recounts it. */
    uint64_t pool = 0;
    for (size_t i = 0; i < c.sc.nc; i++)
        if (c.sc.c[i].owner == SHMKV__OWNER_FREE)
            pool += c.sc.c[i].size;
    if (c.sc.tiled && pool != h->pool_bytes) {
        int gtid;
        bool grepairing;
        if (lock_state(v, offsetof(shmkv__hdr, grow_lock), &gtid, &grepairing) == LOCK_DEAD ||
            c.live)
            warn(r, "header: free pool holds %" PRIu64 " bytes, pool_bytes says %" PRIu64
                 " (the next growth-lock holder recounts it)", pool, h->pool_bytes);
        else
            prob(r, "header: free pool holds %" PRIu64 " bytes, pool_bytes says %" PRIu64,
                 pool, h->pool_bytes);
    }
    for (size_t i = 0; i < c.sc.nb; i++) {
        uint32_t sl = owner_slot(&c, c.sc.b[i].owner);
        if (sl != UINT32_MAX && (c.sc.b[i].flags & SHMKV__BF_USED))
            c.ow[sl].used_bytes += c.sc.b[i].size;
    }
    if (!c.sc.tiled) {
        for (uint32_t i = 0; i <= h->nseg; i++)
            c.ow[i].walk_ok = false; /* blocks past the break are unknown */
        warn(r, "the region past 0x%" PRIx64 " could not be walked: references into it were "
             "not checked", c.sc.end);
    }
    for (uint32_t i = 0; i <= h->nseg; i++)
        check_alloc(&c, i);
    for (uint32_t i = 0; i < h->nseg; i++)
        if ((rc = check_segment(&c, i)) < 0)
            goto out;
    check_duplicates(&c);
    if ((rc = check_index(&c)) < 0)
        goto out;
    check_blocks(&c);
    res->chunks = c.sc.nc;
    res->blocks = c.sc.nb;
    res->keys = c.live_slots;
    res->index_keys = h->track_keys ? c.ntk : 0;
out:
    scan_free(&c.sc);
    free(c.ow);
    free(c.e);
    free(c.tk);
    if (r->oom)
        rc = -ENOMEM;
    return rc;
}

/* Keep in a only the problems that b also has. */
static void intersect(report *a, const report *b)
{
    size_t k = 0;
    for (size_t i = 0; i < a->nprob; i++) {
        bool found = false;
        for (size_t j = 0; j < b->nprob && !found; j++)
            found = strcmp(a->prob[i], b->prob[j]) == 0;
        if (found)
            a->prob[k++] = a->prob[i];
        else
            free(a->prob[i]);
    }
    a->nprob = k;
    a->prob_total = k;
}

static void print_text(const store *s, const shmkv__hdr *h, const report *r,
                       const check_res *res, bool live, int attempts, uint64_t transient)
{
    FILE *f = stdout;
    fprintf(f, "store: %s (%s, %" PRIu32 " segments, key tracking %s)\n", s->label,
            h->backend == SHMKV_BACKEND_MEMORY ? "memory" : "disk", h->nseg,
            h->track_keys ? "on" : "off");
    fprintf(f, "checked: %" PRIu64 " chunks, %" PRIu64 " blocks, %" PRIu64 " keys",
            res->chunks, res->blocks, res->keys);
    if (h->track_keys)
        fprintf(f, ", index of %" PRIu64 " keys", res->index_keys);
    fputc('\n', f);
    if (live)
        fprintf(f, "note: the store is in use; %d snapshot%s checked, only problems seen in "
                "every one are reported (%" PRIu64 " transient ones ignored)\n", attempts,
                attempts == 1 ? "" : "s", transient);
    for (size_t i = 0; i < r->nwarn; i++)
        fprintf(f, "warning: %s\n", r->warn[i]);
    if (r->warn_total > r->nwarn)
        fprintf(f, "warning: ... and %" PRIu64 " more warnings\n", r->warn_total - r->nwarn);
    for (size_t i = 0; i < r->npend; i++)
        fprintf(f, "repair: %s\n", r->pend[i]);
    if (r->pend_total > r->npend)
        fprintf(f, "repair: ... and %" PRIu64 " more\n", r->pend_total - r->npend);
    for (size_t i = 0; i < r->nprob; i++)
        fprintf(f, "problem: %s\n", r->prob[i]);
    if (r->prob_total > r->nprob)
        fprintf(f, "problem: ... and %" PRIu64 " more problems\n", r->prob_total - r->nprob);
    if (r->prob_total)
        fprintf(f, "result: %" PRIu64 " problem%s found\n", r->prob_total,
                r->prob_total == 1 ? "" : "s");
    else if (r->pend_total)
        fprintf(f, "result: sound; a process died in it, and the next one to open the store or "
                "take the lock concerned makes the %" PRIu64 " repair%s listed\n",
                r->pend_total, r->pend_total == 1 ? "" : "s");
    else
        fprintf(f, "result: sound\n");
}

static void print_json(const store *s, const shmkv__hdr *h, const report *r,
                       const check_res *res, bool live, int attempts, uint64_t transient)
{
    FILE *f = stdout;
    fputs("{\"store\":", f);
    put_jcstr(f, s->label);
    fputs(",\"path\":", f);
    put_jcstr(f, s->path);
    fprintf(f, ",\"sound\":%s,\"live\":%s,\"attempts\":%d,\"transient_problems\":%" PRIu64,
            r->prob_total ? "false" : "true", live ? "true" : "false", attempts, transient);
    if (h)
        fprintf(f, ",\"segments\":%" PRIu32 ",\"track_keys\":%s", h->nseg,
                h->track_keys ? "true" : "false");
    fprintf(f, ",\"checked\":{\"chunks\":%" PRIu64 ",\"blocks\":%" PRIu64 ",\"keys\":%" PRIu64
            ",\"index_keys\":%" PRIu64 "}", res->chunks, res->blocks, res->keys,
            res->index_keys);
    fprintf(f, ",\"problem_count\":%" PRIu64 ",\"problems\":[", r->prob_total);
    for (size_t i = 0; i < r->nprob; i++) {
        fputs(i ? ",\n" : "\n", f);
        put_jcstr(f, r->prob[i]);
    }
    fprintf(f, "],\"warning_count\":%" PRIu64 ",\"warnings\":[", r->warn_total);
    for (size_t i = 0; i < r->nwarn; i++) {
        fputs(i ? ",\n" : "\n", f);
        put_jcstr(f, r->warn[i]);
    }
    fprintf(f, "],\"repair_count\":%" PRIu64 ",\"repairs\":[", r->pend_total);
    for (size_t i = 0; i < r->npend; i++) {
        fputs(i ? ",\n" : "\n", f);
        put_jcstr(f, r->pend[i]);
    }
    fputs("]}\n", f);
}

int mode_check(store *s, const opts *o)
{
    report r = {0};
    check_res res = {0};
    shmkv__hdr h;
    int attempts = 0, rc = 0;
    uint64_t transient = 0;
    bool live;

    if (!s->hdr_ok) {
        /* The signature is there but the header cannot be interpreted. */
        prob(&r, "header: %s", s->err ? s->err : "invalid");
        memcpy(&h, &s->hdr, sizeof h);
        if (o->json)
            print_json(s, NULL, &r, &res, false, 1, 0);
        else
            printf("store: %s\nproblem: header: %s\nresult: 1 problem found\n", s->label,
                   s->err ? s->err : "invalid");
        report_free(&r);
        return EXIT_PROBLEMS;
    }
    live = store_attached(s);
    if (!live) {
        /* Quiet store: check the mapping in place (the header as mapped). */
        char why[512];
        bool changed = false;
        memcpy(&h, s->v.base, sizeof h);
        attempts = 1;
        if (memcmp(h.magic, SHMKV__MAGIC, 8) != 0 || !hdr_identify(&h, s->v.len, why, sizeof why)) {
            /* Changed since it was validated at open: re-created under us? */
            if (!store_attached(s)) {
                fprintf(stderr, "shmkv-dump: %s: the header changed while being read\n",
                        s->label);
                return EXIT_RUNTIME;
            }
            changed = true;
        } else {
            rc = run_check(s, &s->v, (uint64_t)s->st.st_size, &h, false, &r, &res);
        }
        if (rc == 0 && (r.prob_total || changed) && store_attached(s)) {
            live = true; /* a writer came in while we read: check snapshots */
            report_free(&r);
        }
    }
    if (live) {
        report keep = {0};
        int tries = 1 + (o->retries > 0 ? o->retries : 0);
        for (attempts = 0; attempts < tries; attempts++) {
            view snap;
            report cur = {0};
            uint64_t flen = 0;
            int e = store_snapshot(s, &snap, &h, &flen);
            if (e) {
                fprintf(stderr, "shmkv-dump: %s: the store changed beyond recognition while "
                        "being read\n", s->label);
                report_free(&keep);
                return e;
            }
            rc = run_check(s, &snap, flen, &h, true, &cur, &res);
            free((void *)snap.base);
            if (rc < 0) {
                report_free(&cur);
                break;
            }
            if (cur.prob_total == 0) {
                transient += keep.prob_total;
                report_free(&keep);
                keep = cur;
                attempts++;
                break;
            }
            if (attempts == 0) {
                keep = cur;
            } else {
                uint64_t before = keep.prob_total;
                intersect(&keep, &cur);
                transient += before - keep.prob_total;
                /* Warnings: the latest run's. */
                for (size_t i = 0; i < keep.nwarn; i++)
                    free(keep.warn[i]);
                free(keep.warn);
                keep.warn = cur.warn;
                keep.nwarn = cur.nwarn;
                keep.capwarn = cur.capwarn;
                keep.warn_total = cur.warn_total;
                cur.warn = NULL;
                cur.nwarn = 0;
                for (size_t i = 0; i < keep.npend; i++)
                    free(keep.pend[i]);
                free(keep.pend);
                keep.pend = cur.pend;
                keep.npend = cur.npend;
                keep.cappend = cur.cappend;
                keep.pend_total = cur.pend_total;
                cur.pend = NULL;
                cur.npend = 0;
                report_free(&cur);
                if (keep.prob_total == 0) {
                    attempts++;
                    break;
                }
            }
            usleep(50000);
        }
        report_free(&r);
        r = keep;
    }
    if (rc < 0) {
        fprintf(stderr, "shmkv-dump: out of memory while checking\n");
        report_free(&r);
        return EXIT_RUNTIME;
    }
    if (o->json)
        print_json(s, &h, &r, &res, live, attempts, transient);
    else
        print_text(s, &h, &r, &res, live, attempts, transient);
    int ex = r.prob_total ? EXIT_PROBLEMS : EXIT_SOUND;
    report_free(&r);
    if (fflush(stdout) != 0)
        return EXIT_RUNTIME;
    return ex;
}
