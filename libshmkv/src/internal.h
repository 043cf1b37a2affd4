/*
 * internal.h - the internal interfaces between the library's files, and the
 * process-side state of a mapping. The on-file structures, the layout and
 * their validators are in format.h / format.c (docs/format.md describes
 * them byte by byte).
 *
 * Layers, bottom to top: a file calls only files listed before it, never
 * one after it (checked by scripts/check-layers.py, meson test suite
 * `layers`).
 *   format.c        on-file structures, layout, validators (pure: calls
 *                   nothing; shmkv-dump links it too)
 *   util.c          hashing, randomness, clock, buffer, test hook
 *   lock.c          robust mutexes, the call's lock wait; owner death is
 *                   reported (SHMKV__OWNER_DIED), never repaired here
 *   undo.c          recording the index's undo log
 *   grow.c          chunks: growth of the region, the free pool, growth lock
 *   alloc.c         per-owner block allocator
 *   table.c         the hash table of one segment
 *   seg_repair.c    segment repair (batch intents included), seg_lock
 *   reader.c        reads of a segment without its lock
 *   index.c         the key index: B+tree and key array
 *   index_repair.c  index lock, logged updates, repair, clear, rebuild
 *   ops.c           single-key operations
 *   batch_plan.c    multi-key: grouping, locking, lookups (batch.h)
 *   batch_get.c     get_many
 *   batch.c         set_many, delete_many, delete_prefix
 *   sample.c        random_key
 *   scan.c          scan, random_keys
 *   claims.c        claims (leases on keys), pop_random
 *   shmkv.c         size, count, clear, list, stat, tracking, errors
 *   map.c           the process's mappings: registry, fork, name and file
 *   create.c        options, the first page's check, creation, lock words,
 *                   the repair of an opener that is alone
 *   region.c        open (the attach protocol), close
 *   integrity_walk.c, integrity_index.c, integrity.c
 *                   shmkv_check: the whole store against format.c's rules
 *                   (integrity.h: what the three share)
 *   backup.c        shmkv_backup, shmkv_restore: a store image, and loading one
 *
 * Everything inside the region is addressed by offsets from the mapping's
 * base, never by pointers: each process maps the region at its own address.
 */
#ifndef SHMKV_INTERNAL_H
#define SHMKV_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "shmkv.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "format.h"

/* ---- process side ---------------------------------------------------- */

/* One mapping per store per process, shared by all handles to it. */
typedef struct shmkv__map {
    struct shmkv__map *next;
    pid_t owner_pid;   /* a forked child must not reuse its parent's entry */
    int refs;
    int fd;
    int backend;
    dev_t dev;
    ino_t ino;
    char *name;        /* memory backend: object name "/shmkv.<name>" */
    unsigned char *base;
    uint64_t reserve;
    int attach_slot;
    bool attached;     /* open finished: other opens may share it */
    /* Opened read-only: mapped PROT_READ, takes no lock, writes nothing. */
    bool rdonly;
    /* rdonly, when no writer was attached at open: per segment, the odd seq
     * a dead holder left (0: none); readers accept it, see reader.c */
    uint32_t *dead_seq;
    /* CLOCK_MONOTONIC ns before which a failed index rebuild (no room) is
     * not tried again by this process; 0: try */
    _Atomic uint64_t index_retry_ns;
    /* Per owner (the segments, then the index): bytes this process freed
     * since it last trimmed that owner, less a penalty after a trim that
     * found nothing to give back (alloc.c). NULL: never trims. */
    int64_t *freed;
} shmkv__map;

struct shmkv_db {
    shmkv__map *m;
    unsigned flags;
    uint32_t lock_timeout_ms; /* as given; 0: the default */
};

/* In a child of fork() an inherited handle is only good for shmkv_close:
 * the child let go of the store's descriptor (see region.c). */
static inline bool shmkv__db_usable(const shmkv_db *db)
{
    return db && db->m->fd >= 0;
}

#define SHMKV__P(m, off) ((void *)((m)->base + (off)))
#define SHMKV__HDR(m) ((shmkv__hdr *)(m)->base)

static inline shmkv__seg *shmkv__seg_at(shmkv__map *m, uint32_t i)
{
    return (shmkv__seg *)SHMKV__P(m, SHMKV__HDR(m)->seg_off + (uint64_t)i * sizeof(shmkv__seg));
}

static inline shmkv__index *shmkv__index_of(shmkv__map *m)
{
    return (shmkv__index *)SHMKV__P(m, SHMKV__HDR(m)->index_off);
}

static inline shmkv__block *shmkv__block_of(shmkv__map *m, uint64_t payload)
{
    return (shmkv__block *)SHMKV__P(m, payload - SHMKV__BLOCK_HDR);
}

/* Offset-checked pointer into the region: off must lie inside the
 * published part. Used where a damaged store must not crash a reader. */
static inline bool shmkv__in_region(shmkv__map *m, uint64_t off, uint64_t len)
{
    uint64_t top = atomic_load_explicit(&SHMKV__HDR(m)->top, memory_order_acquire);
    return off >= SHMKV__HDR(m)->data_off && off <= top && len <= top - off;
}

/* ---- util.c: the bottom layer (the key hash, key order and prefix are in
 * format.h: they decide where keys live) -------------------------------- */
/* Uniform in [0, n), n > 0; thread-local generator. */
uint64_t shmkv__rand_below(uint64_t n);
/* CLOCK_MONOTONIC in ns. */
uint64_t shmkv__mono_ns(void);
/* CLOCK_BOOTTIME ns: the clock every process of the host shares, which
 * keeps counting through a suspend (leases end in real time). */
uint64_t shmkv__boot_ns(void);
/* This boot's id (/proc/sys/kernel/random/boot_id), "" when unreadable. */
const char *shmkv__boot_id(void);
/* The lease clock of a store (see shmkv__lease in format.h). */
static inline uint64_t shmkv__lease_now(shmkv__map *m)
{
    return shmkv__boot_ns() + SHMKV__HDR(m)->lease_base;
}

/* A growable byte buffer (malloc'ed) */
typedef struct shmkv__buf {
    unsigned char *p;
    size_t len, cap;
} shmkv__buf;
int shmkv__buf_reserve(shmkv__buf *b, size_t more);

/* Test-only: when set, called at named points inside critical sections so
 * that crash tests can kill a process there. */
extern void (*shmkv__test_hook)(const char *point);
#define SHMKV__HOOK(p) do { if (shmkv__test_hook) shmkv__test_hook(p); } while (0)

/* ---- lock.c: the lock primitives ---------------------------------------- */
int shmkv__mutex_init(pthread_mutex_t *mu);
/* Returned (with the lock taken) when the lock's last owner died holding
 * it. The caller repairs what the lock guards, then marks the mutex
 * consistent; each module does that for its own structure through its
 * own lock wrapper (shmkv__seg_lock, shmkv__index_lock_raw,
 * shmkv__grow_lock). Positive: never a count or a boolean. */
#define SHMKV__OWNER_DIED 0x4f574e44 /* "OWND" */
/* Take a robust mutex within the current call's lock wait: 0,
 * SHMKV__OWNER_DIED, or a negative code (not taken). */
int shmkv__mutex_lock(pthread_mutex_t *mu);
/* Every public call that takes locks starts with this: the locks it takes
 * from then on wait at most the handle's lock timeout in all, and fail
 * with SHMKV_ETIMEDOUT after that. */
void shmkv__call_begin(const shmkv_db *db);
/* The current call's lock wait in ns (UINT64_MAX: no limit), for waits
 * that are not on a mutex: read-only readers waiting out a live holder. */
uint64_t shmkv__call_wait_ns(void);
/* A segment's mutex and its seq (made odd): as shmkv__mutex_lock. Most
 * callers want shmkv__seg_lock, which repairs. */
int shmkv__seg_acquire(shmkv__seg *s);
void shmkv__seg_unlock(shmkv__seg *s);
/* A wait between attempts of a reader without the lock; false once the
 * call's lock timeout is over (from start, CLOCK_MONOTONIC ns). */
bool shmkv__ro_backoff(int attempt, uint64_t start);
/* Last close of a disk store: may it be marked clean? */
bool shmkv__locks_settled(shmkv__map *m);

/* ---- undo.c: recording the index's undo log ---------------------------- */
/* While this thread runs an index update with an undo log, every write the
 * allocator makes to region memory on the index's behalf must be recorded
 * first; SHMKV__UNDO does that, and costs one thread-local test
 * otherwise. */
extern _Thread_local bool shmkv__undo_on;
void shmkv__undo_note(shmkv__map *m, const shmkv__alloc *a, const void *p, size_t len);
/* A chunk the index took from the free pool during the update in progress
 * (if any): a rollback gives it back to the index as an empty chunk. */
void shmkv__undo_chunk(shmkv__map *m, uint64_t chunk_off);
#define SHMKV__UNDO(m, a, p, len)                                                          \
    do {                                                                                    \
        if (shmkv__undo_on)                                                                 \
            shmkv__undo_note((m), (a), (p), (len));                                         \
    } while (0)
/* Record the bytes [p, p+len) of the update in progress (if any) / a
 * whole tree node, once per update. */
void shmkv__undo_save(const void *p, size_t len);
void shmkv__undo_node(shmkv__map *m, uint64_t off);
/* Start recording into lg (its header already claims an update) / stop;
 * whether this thread is recording an update of m's index. */
void shmkv__undo_start(shmkv__map *m, shmkv__ulog *lg);
void shmkv__undo_stop(void);
bool shmkv__undo_active(shmkv__map *m);
/* Bytes of records lg's block holds. */
uint64_t shmkv__ulog_cap(shmkv__map *m, const shmkv__ulog *lg);

/* ---- grow.c: chunks, growth and the free pool ------------------------- */
/* The growth lock (taken last); recounts the pool when its holder died. */
int shmkv__grow_lock(shmkv__map *m);
void shmkv__grow_unlock(shmkv__map *m);
/* Append a chunk of at least size bytes for owner, from the free pool if
 * it has one that large; takes the growth lock. */
int shmkv__grow(shmkv__map *m, uint32_t owner, uint64_t size, uint64_t *chunk_off);
/* Give a chunk to the pool (growth lock held). */
void shmkv__pool_put(shmkv__map *m, uint64_t off);
/* Take a chunk of at least size bytes from the free pool for owner (the
 * caller holds the growth lock). 0 and *chunk_off, or 1 when none fits. */
int shmkv__pool_take(shmkv__map *m, uint32_t owner, uint64_t size, uint64_t *chunk_off);
/* Recount hdr->pool_bytes from the chunks (the growth lock's last holder
 * died; the caller holds it now). */
void shmkv__pool_recount(shmkv__map *m);

/* ---- alloc.c: the per-owner allocator (size classes: format.h) -------- */
/* Allocate a block with payload >= len for owner; returns 0 and sets *off to
 * the payload offset, or a negative code (-ENOSPC, SHMKV_EFULL). The caller
 * holds the owner's lock. */
int shmkv__alloc_block(shmkv__map *m, shmkv__alloc *a, uint32_t owner,
                       uint64_t len, uint64_t *off);
void shmkv__free_block(shmkv__map *m, shmkv__alloc *a, uint64_t payload);
/* Give a chunk of owner that its allocator does not count back to it, as
 * empty (index repair: a chunk grown by an update that was rolled back). */
void shmkv__alloc_adopt(shmkv__map *m, shmkv__alloc *a, uint64_t chunk_off);
/* Bytes a block occupies, header included (0 if a big block's chunk makes
 * no sense): the class size, or the chunk's rest for a big block. */
uint64_t shmkv__block_bytes(shmkv__map *m, uint64_t payload);
/* The give-back that frees during an undo-logged index update put off:
 * release or trim the owner's chunks (called after a commit). */
void shmkv__alloc_tidy(shmkv__map *m, shmkv__alloc *a);
/* Give a segment's wholly free chunks to the pool and its chunks' free
 * tails back, whatever it freed so far (a failed batch undoing itself). */
void shmkv__alloc_trim(shmkv__map *m, shmkv__alloc *a);
/* Whether shmkv__alloc_tidy would give anything back now. */
bool shmkv__alloc_wants_tidy(shmkv__map *m, const shmkv__alloc *a);
/* Rebuild an owner's allocator from the blocks whose MARK flag is set:
 * every unmarked block of the owner becomes free, marks are cleared, empty
 * chunks are reset. Returns 0 or SHMKV_ECORRUPT. */
int shmkv__alloc_rebuild(shmkv__map *m, shmkv__alloc *a, uint32_t owner);
/* Forget every block of owner: all its chunks go back to the free pool. */
void shmkv__alloc_reset(shmkv__map *m, shmkv__alloc *a, uint32_t owner);

/* ---- table.c: the hash table of one segment (its lock held) ---------- */
static inline shmkv__seg *shmkv__seg_for(shmkv__map *m, uint64_t h)
{
    return shmkv__seg_at(m, (uint32_t)(h >> 32) & (SHMKV__HDR(m)->nseg - 1));
}
static inline uint64_t shmkv__slot_word(uint64_t h, uint64_t off)
{
    return (h & 0xffff000000000000ull) | off;
}
static inline shmkv__entry *shmkv__entry_at(shmkv__map *m, uint64_t off)
{
    return (shmkv__entry *)SHMKV__P(m, off);
}
static inline shmkv__table *shmkv__table_of(shmkv__map *m, shmkv__seg *s)
{
    uint64_t toff = atomic_load_explicit(&s->table, memory_order_relaxed);
    return toff ? (shmkv__table *)SHMKV__P(m, toff) : NULL;
}
/* Position of a key in its segment, as found under the segment lock. */
typedef struct shmkv__lookup {
    shmkv__table *t; /* NULL: the segment has no table yet */
    uint64_t slot;   /* where the key is, or where it would go */
    uint64_t off;    /* entry payload when found */
    bool found;
    bool slot_valid; /* false when the table must grow before an insert */
} shmkv__lookup;
/* Look key (hash h) up in s. */
void shmkv__seg_find(shmkv__map *m, shmkv__seg *s, uint64_t h, const void *key, size_t klen,
                     shmkv__lookup *lk);
/* Make room for one more key (rehashing if needed, then looking key up
 * again into lk). */
int shmkv__seg_room(shmkv__map *m, shmkv__seg *s, const void *key, size_t klen, uint64_t h,
                    shmkv__lookup *lk);
/* Publish entry noff at lk's slot: over the key's old entry (which the
 * caller frees after), or as a new key. */
void shmkv__seg_replace(shmkv__lookup *lk, uint64_t h, uint64_t noff);
void shmkv__seg_insert(shmkv__seg *s, shmkv__lookup *lk, uint64_t h, uint64_t noff);
/* Unpublish the key found at lk (the caller frees its entry), and once
 * the segment holds no key, drop its table. */
void shmkv__seg_remove(shmkv__seg *s, shmkv__lookup *lk);
void shmkv__seg_shrink(shmkv__map *m, shmkv__seg *s, shmkv__lookup *lk);
/* Rehash a segment's table to cap slots. With keep, the old table is not
 * freed but handed back in *keep (0: none), so that a batch that fails can
 * put it back. */
int shmkv__seg_rehash(shmkv__map *m, shmkv__seg *s, uint64_t cap, uint64_t *keep);
/* Drop every entry of a segment and mark it emptied for generation gen. */
int shmkv__seg_clear(shmkv__map *m, shmkv__seg *s, uint64_t gen);
/* Call fn for the payload offset of every live entry; stops at fn's first
 * non-zero return and returns it. */
int shmkv__seg_visit(shmkv__map *m, shmkv__seg *s,
                     int (*fn)(void *ctx, uint64_t entry_off), void *ctx);
/* The lease an entry carries (SHMKV__BF_LEASE), or NULL. */
static inline const shmkv__lease *shmkv__entry_lease(shmkv__map *m, uint64_t off)
{
    if (!(shmkv__block_of(m, off)->flags & SHMKV__BF_LEASE))
        return NULL;
    const shmkv__entry *e = shmkv__entry_at(m, off);
    return (const shmkv__lease *)((const unsigned char *)e + shmkv__lease_at(e->klen, e->vlen));
}
/* Write a new entry block for key and value in s's allocator, carrying
 * lease when it is not NULL (a copy: it may lie in the entry being
 * replaced). Nothing is published. Inline: every write makes one. */
static inline int shmkv__entry_make(shmkv__map *m, shmkv__seg *s, const void *key, size_t klen,
                                    const void *val, size_t vlen, shmkv_kind kind,
                                    const shmkv__lease *lease, uint64_t *off)
{
    uint64_t size = sizeof(shmkv__entry) + klen + vlen;
    if (lease)
        size = shmkv__lease_at(klen, vlen) + sizeof(shmkv__lease) + lease->olen;
    int rc = shmkv__alloc_block(m, &s->alloc, s->id, size, off);
    if (rc)
        return rc;
    shmkv__entry *e = shmkv__entry_at(m, *off);
    e->klen = (uint32_t)klen;
    e->vlen = (uint32_t)vlen;
    memcpy(e->data, key, klen);
    if (vlen)
        memcpy(e->data + klen, val, vlen);
    shmkv__block *b = shmkv__block_of(m, *off);
    b->kind = (uint16_t)kind;
    if (lease) {
        /* The lease may come from the entry this one replaces, which stays
         * readable until the caller frees it. */
        memcpy((unsigned char *)e + shmkv__lease_at(klen, vlen), lease,
               sizeof(shmkv__lease) + lease->olen);
        b->flags |= SHMKV__BF_LEASE;
    }
    return 0;
}
/* The segment a key belongs to. */
shmkv__seg *shmkv__seg_of(shmkv__map *m, const void *key, size_t klen);
/* True when key is live in s. */
bool shmkv__seg_has(shmkv__map *m, shmkv__seg *s, const void *key, size_t klen);

/* ---- seg_repair.c: the segment lock and the repair it runs ----------- */
/* Take a segment lock; repairs the segment if its owner died. */
int shmkv__seg_lock(shmkv__map *m, shmkv__seg *s);
int shmkv__lock_all(shmkv__map *m);   /* every segment, in order */
void shmkv__unlock_all(shmkv__map *m);
/* Repair a segment after its lock owner died: mark live entries, rebuild
 * the allocator, recount. Caller holds the lock. */
int shmkv__seg_recover(shmkv__map *m, shmkv__seg *s);
/* Roll a dead batch writer's part of this segment forward (its batch
 * committed) or drop it; called first thing by shmkv__seg_recover. */
void shmkv__batch_recover(shmkv__map *m, shmkv__seg *s);
/* True when some segment still holds a dead batch writer's intent. */
bool shmkv__batch_pending(shmkv__map *m);

/* ---- reader.c: reads without the lock --------------------------------- */

/* Their reads race with writers by design (the result is thrown away when
 * they did). ThreadSanitizer would report them, so under TSan such a reader
 * is not instrumented (its atomics still are, so the happens-before edge
 * through seq stays visible) and copies and compares bytes itself: memcpy
 * and memcmp are intercepted whatever the caller. */
#if defined(__SANITIZE_THREAD__)
#define SHMKV__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SHMKV__TSAN 1
#endif
#endif

/* SHMKV__SEQ_INLINE: a helper such a reader calls (the read helpers
 * below), uninstrumented likewise. SHMKV__SEQ_READER_HOT: a reader on
 * get's hot path, `static inline` but for TSan (which wants it out of
 * line). */
#ifdef SHMKV__TSAN
#define SHMKV__SEQ_READER __attribute__((no_sanitize("thread"), noinline))
#define SHMKV__SEQ_INLINE __attribute__((no_sanitize("thread")))
#define SHMKV__SEQ_READER_HOT SHMKV__SEQ_READER static
bool shmkv__racy_equal(const unsigned char *a, const unsigned char *b, size_t n);
void shmkv__racy_copy(unsigned char *dst, const unsigned char *src, size_t n);
#else
#define SHMKV__SEQ_READER
#define SHMKV__SEQ_INLINE
#define SHMKV__SEQ_READER_HOT static inline
static inline bool shmkv__racy_equal(const unsigned char *a, const unsigned char *b, size_t n)
{
    return memcmp(a, b, n) == 0;
}
static inline void shmkv__racy_copy(unsigned char *dst, const unsigned char *src, size_t n)
{
    memcpy(dst, src, n);
}
#endif

/* One try failed (the segment was busy): read again, or under the lock. */
#define SHMKV__READ_RETRY 1
/* get/exists without the lock: a few tries, then SHMKV__READ_RETRY. */
int shmkv__read_fast(shmkv_db *db, const void *key, size_t klen, bool copy, void *buf, size_t cap,
                     size_t *vlen, shmkv_kind *kind);
/* get/exists of a read-only handle: until it succeeds, or the lock
 * timeout (SHMKV_ETIMEDOUT). */
int shmkv__read_ro(shmkv_db *db, const void *key, size_t klen, bool copy, void *buf, size_t cap,
                   size_t *vlen, shmkv_kind *kind);
/* Without the lock (read-only mappings): append the live entries starting
 * with prefix to out as records [u32 klen][u32 vlen][u32 kind][key][value]
 * (vlen 0 and no value when keys_only), all as of one moment; with out
 * NULL only count them. *count: entries appended/counted.
 * Returns 0, -ENOMEM, or SHMKV_ETIMEDOUT when a live holder kept the
 * segment for too long. */
int shmkv__seg_snapshot(shmkv__map *m, shmkv__seg *s, const void *prefix, size_t plen,
                        bool keys_only, shmkv__buf *out, uint64_t *count);
/* Decode the record at r (h: klen, vlen, kind; *k its key, *v its value);
 * returns its length, the step to the next record. */
static inline size_t shmkv__rec_get(const unsigned char *r, uint32_t h[3], const unsigned char **k,
                                    const unsigned char **v)
{
    memcpy(h, r, 12);
    *k = r + 12;
    *v = r + 12 + h[0];
    return 12 + (size_t)h[0] + h[1];
}
/* The odd seq of a segment whose holder is known dead (0: none); the
 * intent of a committed batch a dead holder left half applied (NULL:
 * none), whose slot words a reader accepting that holder's seq must read
 * instead. */
uint32_t shmkv__dead_seq(shmkv__map *m, shmkv__seg *s);
const shmkv__intent *shmkv__ro_intent(shmkv__map *m, shmkv__seg *s, uint64_t tcap, uint32_t *n,
                                     bool *doom);
/* Likewise a segment whose dead holder was a clear() that had published
 * its generation but not reached this segment: its repair empties it, so
 * a reader reads it as empty. */
static inline bool shmkv__ro_cleared(shmkv__map *m, shmkv__seg *s)
{
    return __atomic_load_n(&s->gen, __ATOMIC_RELAXED) !=
           atomic_load_explicit(&SHMKV__HDR(m)->clear_gen, memory_order_acquire);
}
/* doom: the dead holder's delete batch committed, so its marked slots
 * read as emptied. */
static inline uint64_t shmkv__ro_slot(const shmkv__intent *in, uint32_t n, bool doom, uint64_t i,
                                      uint64_t w)
{
    if (doom && (w & SHMKV__SLOT_DOOM) && SHMKV__SLOT_LIVE(w))
        return SHMKV__SLOT_TOMB;
    /* the repair makes the stores in order: the last one for a slot wins */
    for (uint32_t c = in ? n : 0; c--;)
        if (in->ch[c].slot == i)
            return in->ch[c].word;
    return w;
}

/* Where a read without the lock may look: below the published top, read
 * after the segment's seq; payloads start at lo at the earliest. */
static inline uint64_t shmkv__ro_top(shmkv__map *m, uint64_t *lo)
{
    const shmkv__hdr *hd = SHMKV__HDR(m);
    uint64_t top = atomic_load_explicit(&hd->top, memory_order_acquire);
    *lo = hd->data_off + SHMKV__BLOCK_HDR;
    return top;
}

/* A segment's table as a reader without the lock sees it. */
typedef struct shmkv__ro_tab {
    const shmkv__table *t;   /* NULL: none (or one a dead clear() empties) */
    uint64_t cap;            /* read once: the table's cap may change */
    const shmkv__intent *in; /* a dead holder's batch to overlay, or NULL */
    uint32_t nin;
    bool doom;               /* a dead holder's committed delete batch */
    uint64_t lo, top;        /* every offset followed lies in [lo, top) */
} shmkv__ro_tab;

/* The table of s under seq (odd: a dead holder's, which the caller
 * accepts): 0 with rt->t NULL or the table, or SHMKV__READ_RETRY when it
 * lies outside [lo, top) (a writer moved it: the seq check would fail). */
SHMKV__SEQ_INLINE static inline int shmkv__ro_table(shmkv__map *m, shmkv__seg *s, uint32_t seq,
                                                    uint64_t lo, uint64_t top, shmkv__ro_tab *rt)
{
    uint64_t toff = atomic_load_explicit(&s->table, memory_order_relaxed);
    *rt = (shmkv__ro_tab){.lo = lo, .top = top};
    if (!toff || ((seq & 1) && shmkv__ro_cleared(m, s)))
        return 0;
    if (toff < lo || toff >= top || top - toff < sizeof(shmkv__table))
        return SHMKV__READ_RETRY;
    const shmkv__table *t = (const shmkv__table *)SHMKV__P(m, toff);
    uint64_t cap = t->cap;
    if (!cap || (cap & (cap - 1)) || cap > (top - toff - sizeof *t) / sizeof t->slot[0])
        return SHMKV__READ_RETRY;
    rt->t = t;
    rt->cap = cap;
    if (seq & 1) {
        uint32_t nin = 0; /* not &rt->nin: *rt must not escape, or every
                           * store of the caller's would reload it */
        bool doom = false;
        rt->in = shmkv__ro_intent(m, s, cap, &nin, &doom);
        rt->nin = nin;
        rt->doom = doom;
    }
    return 0;
}

/* Look key (hash h) up in rt's table (not NULL) without the lock: 0 with
 * *off (its entry's payload) and *vlen, SHMKV_ENOTFOUND, or
 * SHMKV__READ_RETRY when a slot or an entry leads past [lo, top). What it
 * finds only counts once the caller's seq check passed. */
SHMKV__SEQ_INLINE static inline int shmkv__ro_find(shmkv__map *m, const shmkv__ro_tab *rt,
                                                   uint64_t h, const void *key, size_t klen,
                                                   uint64_t *off, uint64_t *vlen)
{
    uint64_t lo = rt->lo, top = rt->top, mask = rt->cap - 1, i = h & mask;
    uint16_t tag = (uint16_t)(h >> 48);
    for (uint64_t probe = 0; probe <= mask; probe++, i = (i + 1) & mask) {
        uint64_t w = atomic_load_explicit(&((shmkv__table *)rt->t)->slot[i], memory_order_relaxed);
        w = shmkv__ro_slot(rt->in, rt->nin, rt->doom, i, w);
        if (w == SHMKV__SLOT_EMPTY)
            break;
        if (w == SHMKV__SLOT_TOMB || SHMKV__SLOT_TAG(w) != tag)
            continue;
        uint64_t eoff = SHMKV__SLOT_OFF(w);
        if (eoff < lo || eoff >= top || top - eoff < sizeof(shmkv__entry))
            return SHMKV__READ_RETRY;
        const shmkv__entry *e = (const shmkv__entry *)SHMKV__P(m, eoff);
        uint64_t ek = e->klen, ev = e->vlen;
        if (ek != klen)
            continue;
        if (ek + ev > top - eoff - sizeof *e)
            return SHMKV__READ_RETRY;
        if (!shmkv__racy_equal(e->data, key, klen))
            continue;
        *off = eoff;
        *vlen = ev;
        return 0;
    }
    return SHMKV_ENOTFOUND;
}

/* ---- index.c: the key index (caller holds the index lock) ------------ */
int shmkv__index_insert(shmkv__map *m, const void *key, size_t klen);
/* Removing a key that is not in the index is a no-op returning 0. */
int shmkv__index_remove(shmkv__map *m, const void *key, size_t klen);
bool shmkv__index_has(shmkv__map *m, const void *key, size_t klen);
uint64_t shmkv__index_rank(shmkv__map *m, const void *key, size_t klen);
/* Number of keys <= key (the rank of the first key after it). */
uint64_t shmkv__index_rank_after(shmkv__map *m, const void *key, size_t klen);
/* Key blob offset of the key at rank r (r < n). */
uint64_t shmkv__index_select(shmkv__map *m, uint64_t r);
/* Rank just past every key starting with prefix (n when none follows). */
uint64_t shmkv__index_prefix_end(shmkv__map *m, const void *prefix, size_t plen);
/* Visit keys in order from rank `from`, at most `limit`, while they start
 * with prefix; fn returns non-zero to stop. */
typedef int (*shmkv__index_visit_fn)(void *ctx, const shmkv__kblob *kb);
int shmkv__index_walk(shmkv__map *m, uint64_t from, const void *prefix, size_t plen,
                    uint64_t limit, shmkv__index_visit_fn fn, void *ctx);

/* Claims in the index (format 3): make key count as claimed until expiry
 * (0: not claimed), logged like any index update; SHMKV_ENOTFOUND when the
 * index lacks the key. */
int shmkv__index_lease_set(shmkv__map *m, const void *key, size_t klen, uint64_t expiry);
/* The expiry the index counts for key (0: not claimed, or no such key). */
uint64_t shmkv__index_lease_of(shmkv__map *m, const void *key, size_t klen);
/* The keys with prefix that the index does not count as claimed: returns
 * how many, and *lo the number of such keys before them, so that
 * shmkv__index_free_select(*lo + r) is the r-th. O(log n). */
uint64_t shmkv__index_free_range(shmkv__map *m, const void *prefix, size_t plen, uint64_t *lo);
/* The key blob of the r-th key not counted as claimed, 0: none. */
uint64_t shmkv__index_free_select(shmkv__map *m, uint64_t r);
/* The key blob of a counted claim that ended by now (the earliest one),
 * 0: none. O(log n). */
uint64_t shmkv__index_expired(shmkv__map *m, uint64_t now);

/* Whether the store keeps the key index (read with acquire: turning it on
 * publishes the index built before it). */
static inline bool shmkv__tracked(shmkv__map *m)
{
    return __atomic_load_n(&SHMKV__HDR(m)->track_keys, __ATOMIC_ACQUIRE) != 0;
}

/* ---- index_repair.c: the index lock, logged updates, repair, rebuild -- */
/* Take the index lock; `held` is the segment lock the caller holds, or
 * NULL. Returns 0 when the index is usable. When the index needed a rebuild
 * (its last owner died, or it is marked dirty) this drops the index lock
 * and `held`, rebuilds under every lock, and returns SHMKV__RESTART: the
 * caller holds nothing and must start its operation over. On a negative
 * return the caller also holds nothing. */
#define SHMKV__RESTART 0x52455354 /* "REST": never a count or a boolean */
/* Also returned by shmkv__index_lock: the index is marked for a rebuild that
 * could not be done for want of room (disk, /dev/shm or reserve full) and
 * is not retried yet. The caller still holds `held` but not the index
 * lock, and goes on without the index: writes leave it to the rebuild,
 * readers scan the tables. */
#define SHMKV__NOINDEX 0x4e4f4958 /* "NOIX" */
int shmkv__index_lock(shmkv__map *m, shmkv__seg *held);
/* For a reader holding no segment lock: shmkv__index_lock until it is not
 * SHMKV__RESTART. 0: the index lock is held and the index usable;
 * SHMKV__NOINDEX: nothing is held, and the caller reads the tables (its
 * untracked path), never returning that code; negative: an error. */
int shmkv__index_enter(shmkv__map *m);
/* Take the index lock without the dirty check (for clear and rebuild,
 * which run with every segment lock already held); repairs the index if
 * its owner died. */
int shmkv__index_lock_raw(shmkv__map *m);
void shmkv__index_unlock(shmkv__map *m);
/* Hold the whole store still: every segment lock, the index lock and the
 * growth lock, in the lock order (each repaired if its owner died); 0 or
 * the first failure, with nothing held. For shmkv_check and backups. */
int shmkv__hold_all(shmkv__map *m);
void shmkv__release_all(shmkv__map *m);
/* Undo-logged updates: begin after taking the index lock for an insert or
 * remove of key (in segment seg), commit once the segment's slot agrees,
 * before unlocking. Without a log (old store, no space) both are no-ops and
 * a dead holder costs a rebuild, as before. */
void shmkv__index_begin(shmkv__map *m, uint32_t seg, const void *key, size_t klen);
void shmkv__index_commit(shmkv__map *m);
/* The index lock's owner died (caller now holds it, not yet consistent):
 * roll its update back, or mark the index dirty when that is impossible. */
void shmkv__index_repair(shmkv__map *m);
/* After taking the index lock (with `held` as in shmkv__index_lock): finish
 * a rolled-back update's key, and create the undo log if there is none.
 * Returns 0 (index lock and held kept), SHMKV__RESTART or a negative code
 * (both: nothing held). */
int shmkv__index_settle(shmkv__map *m, shmkv__seg *held);
/* Rebuild from the tables; caller holds every segment lock and the index
 * lock. Clears dirty on success. */
int shmkv__index_rebuild(shmkv__map *m);
/* Rebuild the index under every segment lock and the index lock (the
 * caller holds none of them). */
int shmkv__index_rebuild_all(shmkv__map *m);
/* shmkv__index_rebuild_all for a writer that found the index marked: a
 * rebuild that fails for want of room puts this process's next try off
 * by a second and returns 0, and the caller goes on without the index. */
int shmkv__index_rebuild_or_defer(shmkv__map *m);
/* The index lock holder's question: is the index marked for a rebuild that
 * found no room, with this process's next try not due yet? Then writers
 * leave the index to that rebuild. */
bool shmkv__index_deferred(shmkv__map *m);
/* True for the codes a rebuild fails with for want of room. */
bool shmkv__index_no_room(int rc);
/* Empty the index and mark it emptied for generation gen (caller holds
 * every segment lock and the index lock, or is alone). */
void shmkv__index_clear(shmkv__map *m, uint64_t gen);
/* Start key tracking on a store created without it (a no-op when it is
 * on): builds the index under every lock, then sets track_keys. */
int shmkv__track_on(shmkv__map *m);

/* ---- ops.c: the single-key operations --------------------------------- */
/* Look a key up and call fn on its entry under the segment lock; returns
 * SHMKV_ENOTFOUND or fn's return. */
int shmkv__get_locked_copy(shmkv_db *db, const void *key, size_t klen,
                           int (*fn)(void *ctx, const shmkv__entry *e, shmkv_kind kind),
                           void *ctx);

/* ---- map.c: the process's mappings of stores ----------------------------- */
/* Held across an open or a close (the open protocol); the first call also
 * installs the fork handlers. */
void shmkv__maps_lock(void);
void shmkv__maps_unlock(void);
/* The registry of this process's mappings: a mapping an open may share
 * (a read-only open may share a writable one, not the reverse). */
void shmkv__registry_add(shmkv__map *m);
void shmkv__registry_remove(shmkv__map *m);
shmkv__map *shmkv__registry_find(int backend, dev_t dev, ino_t ino, bool rdonly);
void shmkv__map_free(shmkv__map *m);
/* Open (or create, per o's flags and mode) the store's file or memory
 * object; obj receives the memory object's name. */
int shmkv__open_fd(const char *where, int backend, const shmkv_options *o, char *obj,
                   size_t objcap, int *fd_out);
/* The memory object obj is no longer the one st describes. */
struct stat;
bool shmkv__memory_object_replaced(const char *obj, const struct stat *st);

/* ---- create.c: a store's file before it is joined ------------------------ */
typedef struct shmkv__resolved {
    uint32_t nseg;
    uint64_t reserve;
    uint32_t track;
} shmkv__resolved;
/* The open options with their defaults filled in, or the code of the first
 * one out of range (SHMKV_ESEGMENTS, SHMKV_ERESERVE, SHMKV_EINVAL). */
int shmkv__resolve_options(const shmkv_options *o, shmkv__resolved *r);
/* A joiner may leave an option to the store; one it states must agree
 * (SHMKV_EINCOMPAT). */
int shmkv__check_compat(const shmkv__hdr *h, const shmkv_options *o);
/* From the first page alone: 1 fresh (empty or a dead creator's leftover),
 * 0 a store (its header copied to *out), negative: refuse. */
int shmkv__validate_header(int fd, off_t fsize, shmkv__hdr *out);
/* Map the whole reserve once (the file grows inside it). */
int shmkv__map_region(int fd, uint64_t reserve, bool rdonly, unsigned char **base);
/* Re-initialise every lock word (the caller is alone, or creating). */
int shmkv__init_locks(shmkv__map *m);
/* Write a new store into m->fd (the caller holds the init file lock). */
int shmkv__create_store(shmkv__map *m, const shmkv__resolved *r, int backend);
/* Repair an unclean store: every segment, then the key index (alone). */
int shmkv__recover_all(shmkv__map *m);
/* Set the lease clock for this boot (a no-op when it already is): by the
 * creator, and by an opener that is the only writer (create.c). */
void shmkv__lease_clock_sync(shmkv__map *m);

/* ---- ops.c: one key's operation in progress ------------------------------ */
/* Its segment lock is held while `locked`; index trouble may drop it (the
 * operation then starts over). Also used by claims.c. */
typedef struct shmkv__op {
    shmkv_db *db;
    shmkv__map *m;
    shmkv__seg *s;
    uint64_t h;
    const void *key;
    size_t klen;
    shmkv__lookup lk;
    bool locked;
} shmkv__op;

static inline void shmkv__op_init(shmkv__op *o, shmkv_db *db, const void *key, size_t klen)
{
    o->db = db;
    o->m = db->m;
    o->key = key;
    o->klen = klen;
    o->h = shmkv__hash(key, klen);
    o->s = shmkv__seg_for(o->m, o->h);
    o->locked = false;
}
/* Lock the key's segment and look the key up into o->lk. */
int shmkv__op_begin(shmkv__op *o);
/* With key tracking, take the index lock and begin the undo-logged update
 * of o's key. 1: index lock held, update begun; 0: go on without the index
 * (no tracking, or it is marked for a rebuild that reads the tables);
 * negative or SHMKV__RESTART: the segment lock was dropped. */
int shmkv__op_index_open(shmkv__op *o);
/* Commit the update (index and slot agree again) and unlock the index. */
void shmkv__op_index_close(shmkv__op *o);
/* After a write published o's slot (noff: the new entry's payload, 0 for
 * a removal): with SHMKV_SYNC on the handle, msync the entry and the slot
 * before the call returns. Every single-key write comes through here. */
void shmkv__op_sync(shmkv__op *o, uint64_t noff);

/* ---- sample.c: draws (also used by claims.c) ----------------------------- */
/* A segment drawn in proportion to counts[] (which sum to total > 0);
 * *rest: a uniform rank among that segment's counted keys. */
uint32_t shmkv__weighted_pick(const uint64_t *counts, uint64_t total, uint64_t *rest);
/* The entry of a key of the locked segment s, uniform over its keys; 0:
 * none where counted. */
uint64_t shmkv__seg_pick(shmkv__map *m, shmkv__seg *s);

#endif /* SHMKV_INTERNAL_H */
