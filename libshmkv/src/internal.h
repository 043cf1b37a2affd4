/*
 * internal.h - the internal interfaces between region, lock, alloc, table
 * and index, and the process-side state of a mapping. The on-file
 * structures are in format.h (docs/format.md describes them byte by byte).
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
     * a dead holder left (0: none); readers accept it, see table.c */
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

/* ---- randomness (util.c; the key hash is in format.h) ---------------- */
/* Uniform in [0, n), n > 0; thread-local generator. */
uint64_t shmkv__rand_below(uint64_t n);

/* ---- allocator (alloc.c; the size classes are in format.h) ------------ */
/* Allocate a block with payload >= len for owner; returns 0 and sets *off to
 * the payload offset, or a negative code (-ENOSPC, SHMKV_EFULL). The caller
 * holds the owner's lock. */
int shmkv__alloc_block(shmkv__map *m, shmkv__alloc *a, uint32_t owner,
                       uint64_t len, uint64_t *off);
void shmkv__free_block(shmkv__map *m, shmkv__alloc *a, uint64_t payload);
/* Give a chunk of owner that its allocator does not count back to it, as
 * empty (index repair: a chunk grown by an update that was rolled back). */
void shmkv__alloc_adopt(shmkv__map *m, shmkv__alloc *a, uint64_t chunk_off);
/* While this thread runs an index update with an undo log, every write the
 * allocator makes to region memory on the index's behalf must be recorded
 * first (index.c); SHMKV__UNDO does that, and costs one thread-local test
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
/* Bytes a block occupies, header included (0 if a big block's chunk makes
 * no sense): the class size, or the chunk's rest for a big block. */
uint64_t shmkv__block_bytes(shmkv__map *m, uint64_t payload);
/* The give-back that frees during an undo-logged index update put off:
 * release or trim the owner's chunks (index.c calls it after a commit). */
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
/* Take a chunk of at least size bytes from the free pool for owner (the
 * caller holds the growth lock). 0 and *chunk_off, or 1 when none fits. */
int shmkv__pool_take(shmkv__map *m, uint32_t owner, uint64_t size, uint64_t *chunk_off);
/* Recount hdr->pool_bytes from the chunks (the growth lock's last holder
 * died; the caller holds it now). */
void shmkv__pool_recount(shmkv__map *m);

/* ---- growth (region.c) ----------------------------------------------- */
/* Append a chunk of at least size bytes for owner; lock order: taken last. */
int shmkv__grow(shmkv__map *m, uint32_t owner, uint64_t size, uint64_t *chunk_off);

/* ---- locks (lock.c) --------------------------------------------------- */
int shmkv__mutex_init(pthread_mutex_t *mu);
/* Every public call that takes locks starts with this: the locks it takes
 * from then on wait at most the handle's lock timeout in all, and fail
 * with SHMKV_ETIMEDOUT after that. */
/* The current call's lock wait in ns (UINT64_MAX: no limit), for waits
 * that are not on a mutex: read-only readers waiting out a live holder. */
uint64_t shmkv__call_wait_ns(void);
void shmkv__call_begin(const shmkv_db *db);
/* Take a segment lock; repairs the segment if its owner died. */
int shmkv__seg_lock(shmkv__map *m, shmkv__seg *s);
void shmkv__seg_unlock(shmkv__seg *s);
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
/* Take the index lock without the dirty check (for clear and rebuild,
 * which run with every segment lock already held). */
int shmkv__index_lock_raw(shmkv__map *m);
/* Rebuild the index under every segment lock and the index lock (the
 * caller holds none of them). */
int shmkv__index_rebuild_all(shmkv__map *m);
/* True for the codes a rebuild fails with for want of room. */
bool shmkv__index_no_room(int rc);
void shmkv__index_unlock(shmkv__map *m);
int shmkv__lock_all(shmkv__map *m);   /* every segment, in order */
void shmkv__unlock_all(shmkv__map *m);
/* Last close of a disk store: may it be marked clean? (lock.c) */
bool shmkv__locks_settled(shmkv__map *m);
int shmkv__grow_lock(shmkv__map *m);
void shmkv__grow_unlock(shmkv__map *m);

/* Test-only: when set, called at named points inside critical sections so
 * that crash tests can kill a process there. */
extern void (*shmkv__test_hook)(const char *point);
#define SHMKV__HOOK(p) do { if (shmkv__test_hook) shmkv__test_hook(p); } while (0)

/* ---- readers without the lock (table.c, batch.c) -------------------- */

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

#ifdef SHMKV__TSAN
#define SHMKV__SEQ_READER __attribute__((no_sanitize("thread"), noinline))
bool shmkv__racy_equal(const unsigned char *a, const unsigned char *b, size_t n);
void shmkv__racy_copy(unsigned char *dst, const unsigned char *src, size_t n);
#else
#define SHMKV__SEQ_READER
static inline bool shmkv__racy_equal(const unsigned char *a, const unsigned char *b, size_t n)
{
    return memcmp(a, b, n) == 0;
}
static inline void shmkv__racy_copy(unsigned char *dst, const unsigned char *src, size_t n)
{
    memcpy(dst, src, n);
}
#endif

/* A growable byte buffer (malloc'ed; shmkv.c) */
typedef struct shmkv__buf {
    unsigned char *p;
    size_t len, cap;
} shmkv__buf;
int shmkv__buf_reserve(shmkv__buf *b, size_t more);

/* ---- table (table.c) -------------------------------------------------- */
/* Repair a segment after its lock owner died: mark live entries, rebuild
 * the allocator, recount. Caller holds the lock. */
int shmkv__seg_recover(shmkv__map *m, shmkv__seg *s);
/* Roll a dead batch writer's part of this segment forward (its batch
 * committed) or drop it; called first thing by shmkv__seg_recover. */
void shmkv__batch_recover(shmkv__map *m, shmkv__seg *s);
/* Start key tracking on a store created without it (a no-op when it is
 * on): builds the index under every lock, then sets track_keys. */
int shmkv__track_on(shmkv__map *m);
/* True when some segment still holds a dead batch writer's intent. */
bool shmkv__batch_pending(shmkv__map *m);
/* Rehash a segment's table to cap slots (caller holds its lock). With
 * keep, the old table is not freed but handed back in *keep (0: none), so
 * that a batch that fails can put it back. */
int shmkv__seg_rehash(shmkv__map *m, shmkv__seg *s, uint64_t cap, uint64_t *keep);
/* Drop every entry of a segment and mark it emptied for generation gen
 * (caller holds its lock). */
int shmkv__seg_clear(shmkv__map *m, shmkv__seg *s, uint64_t gen);
/* Empty the index and mark it emptied for generation gen (caller holds
 * every segment lock and the index lock, or is alone). */
void shmkv__index_clear(shmkv__map *m, uint64_t gen);
/* Call fn for the payload offset of every live entry (caller holds the
 * segment lock); stops at fn's first non-zero return and returns it. */
int shmkv__seg_visit(shmkv__map *m, shmkv__seg *s,
                     int (*fn)(void *ctx, uint64_t entry_off), void *ctx);
/* Without the lock (read-only mappings): append the live entries starting
 * with prefix to out as records [u32 klen][u32 vlen][u32 kind][key][value]
 * (vlen 0 and no value when keys_only), all as of one moment; with out
 * NULL only count them. *count: entries appended/counted.
 * Returns 0, -ENOMEM, or SHMKV_ELOCK when a live holder kept the segment
 * for too long. */
int shmkv__seg_snapshot(shmkv__map *m, shmkv__seg *s, const void *prefix, size_t plen,
                        bool keys_only, shmkv__buf *out, uint64_t *count);
/* Read-only reads (table.c): the odd seq of a segment whose holder is
 * known dead (0: none); a wait between attempts, false once the call's
 * lock timeout is over (from start, CLOCK_MONOTONIC ns); the intent of a
 * committed batch a dead holder left half applied (NULL: none), whose
 * slot words a reader accepting that holder's seq must read instead. */
uint32_t shmkv__dead_seq(shmkv__map *m, shmkv__seg *s);
bool shmkv__ro_backoff(int attempt, uint64_t start);
uint64_t shmkv__mono_ns(void);
const shmkv__intent *shmkv__ro_intent(shmkv__map *m, shmkv__seg *s, uint64_t tcap, uint32_t *n);
/* Likewise a segment whose dead holder was a clear() that had published
 * its generation but not reached this segment: its repair empties it, so
 * a reader reads it as empty. */
static inline bool shmkv__ro_cleared(shmkv__map *m, shmkv__seg *s)
{
    return __atomic_load_n(&s->gen, __ATOMIC_RELAXED) !=
           atomic_load_explicit(&SHMKV__HDR(m)->clear_gen, memory_order_acquire);
}
static inline uint64_t shmkv__ro_slot(const shmkv__intent *in, uint32_t n, uint64_t i, uint64_t w)
{
    /* the repair makes the stores in order: the last one for a slot wins */
    for (uint32_t c = in ? n : 0; c--;)
        if (in->ch[c].slot == i)
            return in->ch[c].word;
    return w;
}
/* Look a key up and call fn on its entry under the segment lock; returns
 * SHMKV_ENOTFOUND or fn's return. */
int shmkv__get_locked_copy(shmkv_db *db, const void *key, size_t klen,
                           int (*fn)(void *ctx, const shmkv__entry *e, shmkv_kind kind),
                           void *ctx);

/* ---- index (index.c); caller holds the index lock -------------------- */
int shmkv__index_insert(shmkv__map *m, const void *key, size_t klen);
/* Removing a key that is not in the index is a no-op returning 0. */
int shmkv__index_remove(shmkv__map *m, const void *key, size_t klen);
uint64_t shmkv__index_rank(shmkv__map *m, const void *key, size_t klen);
/* Key blob offset of the key at rank r (r < n). */
uint64_t shmkv__index_select(shmkv__map *m, uint64_t r);
/* Visit keys in order from rank `from`, at most `limit`, while they start
 * with prefix; fn returns non-zero to stop. */
typedef int (*shmkv__index_visit_fn)(void *ctx, const shmkv__kblob *kb);
int shmkv__index_walk(shmkv__map *m, uint64_t from, const void *prefix, size_t plen,
                    uint64_t limit, shmkv__index_visit_fn fn, void *ctx);
/* Rebuild from the tables; caller holds every segment lock and the index
 * lock. Clears dirty on success. */
int shmkv__index_rebuild(shmkv__map *m);
/* Number of keys <= key (the rank of the first key after it). */
uint64_t shmkv__index_rank_after(shmkv__map *m, const void *key, size_t klen);
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
/* ---- table lookups for the index repair (table.c) ---- */
/* The segment a key belongs to. */
shmkv__seg *shmkv__seg_of(shmkv__map *m, const void *key, size_t klen);
/* True when key is live in s (caller holds s's lock). */
bool shmkv__seg_has(shmkv__map *m, shmkv__seg *s, const void *key, size_t klen);
/* Rank just past every key starting with prefix (n when none follows). */
uint64_t shmkv__index_prefix_end(shmkv__map *m, const void *prefix, size_t plen);

#endif /* SHMKV_INTERNAL_H */
