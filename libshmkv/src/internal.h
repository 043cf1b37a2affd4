/*
 * internal.h - the region's on-file structures and the internal interfaces
 * between region, lock, alloc, table and index. docs/format.md describes
 * every field here byte by byte; keep the two in step.
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
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#define SHMKV__MAGIC          "SHMKVdb\0" /* 8 bytes at offset 0 */
#define SHMKV__MAGIC_INIT     "SHMKVin\0" /* creation in progress */
#define SHMKV__FORMAT_VERSION 2u
#define SHMKV__FORMAT_VERSION_MIN 1u /* version 1 stores are read and upgraded */
#define SHMKV__ENDIAN_CHECK   0x01020304u
#define SHMKV__HDR_SIZE       4096u
#define SHMKV__ATTACH_SLOTS   64u
#define SHMKV__PAGE           4096u

#define SHMKV__DEFAULT_SEGMENTS 64u
#define SHMKV__MAX_SEGMENTS     4096u
#define SHMKV__DEFAULT_RESERVE  (16ull << 30)
#define SHMKV__MIN_RESERVE      (1ull << 20)
#define SHMKV__MAX_RESERVE      (1ull << 46) /* offsets fit the 48-bit slot field */

/* ---- allocator ------------------------------------------------------- */

#define SHMKV__NCLASS        96u
#define SHMKV__CHUNK_MAGIC   0x4b4e4843u /* "CHNK" */
#define SHMKV__CHUNK_HDR     32u
#define SHMKV__CHUNK_MIN     (4u << 10)
#define SHMKV__CHUNK_MAX     (4u << 20)
#define SHMKV__BLOCK_HDR     8u
#define SHMKV__OWNER_INDEX   0xfffffffeu
/* A block too large for a size class sits alone in its own chunk: cls is
 * SHMKV__CLS_BIG, size 0, and it runs to the chunk's end (format 2). */
#define SHMKV__CLS_BIG       0xffu
/* Owner of a chunk nobody holds: emptied chunks go back to this shared
 * pool, from which any owner takes (format 2). */
#define SHMKV__OWNER_FREE    0xffffffffu

/* Block flags */
#define SHMKV__BF_USED 0x01u
#define SHMKV__BF_MARK 0x02u /* set only while a recovery walk runs */

/* A chunk is a run of the region handed to one owner (a segment, or the
 * index). Chunks tile the region from hdr->data_off to hdr->top, so
 * recovery can find every chunk of an owner without trusting any list. */
typedef struct shmkv__chunk {
    uint32_t magic;
    uint32_t owner;  /* segment number, or SHMKV__OWNER_INDEX */
    uint64_t size;   /* bytes, header included; multiple of 4096 */
    uint64_t used;   /* bytes from the chunk start handed out as blocks */
    uint64_t next;   /* link in the owner's spare list (0: none) */
} shmkv__chunk;

/* Every block starts with this. size is the class size (header included),
 * so a chunk can be walked block by block from SHMKV__CHUNK_HDR to used. */
typedef struct shmkv__block {
    uint32_t size;
    uint8_t cls;
    uint8_t flags;
    uint16_t kind; /* entry blocks: shmkv_kind of the value */
} shmkv__block;

/* Per-owner allocator state. Only the owner's lock holder touches it. */
typedef struct shmkv__alloc {
    uint64_t cur;        /* chunk being bump-allocated (0: none) */
    uint64_t spare;      /* chunks with room, linked through chunk.next */
    uint64_t nchunks;
    uint64_t chunk_bytes;
    uint64_t used_bytes; /* bytes in USED blocks */
    uint64_t free_head[SHMKV__NCLASS]; /* free blocks, linked through payload */
} shmkv__alloc;

/* ---- hash table ------------------------------------------------------ */

/* A slot is one 8-byte word: tag (16 high bits of the hash) << 48 | offset
 * of the entry block. Publishing an insert, update or delete is one
 * aligned store of a slot, which is what makes a killed writer harmless. */
#define SHMKV__SLOT_EMPTY 0ull
#define SHMKV__SLOT_TOMB  1ull
#define SHMKV__SLOT_OFF(w) ((w) & 0x0000ffffffffffffull)
#define SHMKV__SLOT_TAG(w) ((uint16_t)((w) >> 48))
#define SHMKV__SLOT_LIVE(w) (SHMKV__SLOT_OFF(w) > SHMKV__SLOT_TOMB)

/* Payload of a table block. */
typedef struct shmkv__table {
    uint64_t cap; /* power of two */
    _Atomic uint64_t slot[];
} shmkv__table;

/* Payload of an entry block: key bytes then value bytes follow. */
typedef struct shmkv__entry {
    uint32_t klen;
    uint32_t vlen;
    unsigned char data[];
} shmkv__entry;

typedef struct shmkv__seg {
    alignas(64) pthread_mutex_t lock;
    alignas(64) _Atomic uint64_t table; /* offset of the table block payload, 0: none */
    _Atomic uint64_t count;             /* live keys */
    uint64_t tombs;                     /* tombstone slots */
    uint32_t id;
    /* Odd while the lock is held: made odd right after locking and even
     * right before unlocking, so that get and exists can read without the
     * lock and keep what they read only if seq was even and unchanged. A
     * lock holder that dies leaves it odd; the next locker moves it on. */
    _Atomic uint32_t seq;
    shmkv__alloc alloc;
} shmkv__seg;

/* ---- key index ------------------------------------------------------- */

/* A key blob: the index's own copy of a key. */
typedef struct shmkv__kblob {
    uint32_t klen;
    uint32_t pos; /* position in the key array */
    unsigned char key[];
} shmkv__kblob;

/* Payload of the key-array block: offsets of key blobs, dense. */
typedef struct shmkv__karr {
    uint64_t cap;
    uint64_t off[];
} shmkv__karr;

/* Counted B+tree. Leaf entries: pfx + key (blob), child 0, count 1.
 * Internal entries: pfx + key of the subtree's smallest key, child node,
 * number of keys below. pfx is the first 8 key bytes big-endian,
 * zero-padded, so most comparisons never dereference the blob. */
#define SHMKV__BT_SLOTS 31u /* a node holds at most SLOTS-1 entries at rest */
typedef struct shmkv__bt_ent {
    uint64_t pfx;
    uint64_t key;
    uint64_t child;
    uint64_t count;
} shmkv__bt_ent;

typedef struct shmkv__bt_node {
    uint32_t leaf;
    uint32_t n;
    uint64_t pad;
    shmkv__bt_ent e[SHMKV__BT_SLOTS];
} shmkv__bt_node;

typedef struct shmkv__idx {
    alignas(64) pthread_mutex_t lock;
    alignas(64) uint64_t root; /* B+tree root node, 0: empty tree */
    uint64_t karr;             /* key array payload, 0: none */
    uint64_t n;                /* keys in the index */
    _Atomic uint32_t dirty;    /* 1: must be rebuilt before use */
    uint32_t pad;
    shmkv__alloc alloc;
} shmkv__idx;

/* ---- header ---------------------------------------------------------- */

typedef struct shmkv__attach {
    _Atomic int32_t pid; /* 0: free slot */
    uint32_t pad;
    uint64_t since;      /* CLOCK_REALTIME seconds at attach */
} shmkv__attach;

typedef struct shmkv__hdr {
    char magic[8];
    uint32_t version;
    uint32_t hdr_size;
    uint32_t endian;
    uint16_t word_size;
    uint16_t mutex_size;
    uint32_t seg_size;   /* sizeof(shmkv__seg): ABI check */
    uint32_t nseg;
    uint32_t track_keys; /* 0 or 1 */
    uint32_t backend;
    uint64_t reserve;
    uint64_t seg_off;
    uint64_t idx_off;
    uint64_t data_off;
    _Atomic uint64_t top;       /* end of the last chunk: nothing past it is touched */
    _Atomic uint64_t file_size; /* bytes fallocated */
    _Atomic uint32_t clean;     /* 1: last process closed normally */
    uint32_t pad;
    uint64_t created;           /* CLOCK_REALTIME seconds */
    _Atomic uint64_t opens;     /* times opened, for tools */
    _Atomic uint64_t recoveries;/* segment/index repairs after a dead owner */
    alignas(64) pthread_mutex_t grow_lock;
    alignas(64) shmkv__attach attach[SHMKV__ATTACH_SLOTS];
    /* Bytes in chunks of the free pool (owner SHMKV__OWNER_FREE); changed
     * under the growth lock only, recounted when its holder died. Zero in
     * stores from before the pool, which have no free chunks. */
    uint64_t pool_bytes;
} shmkv__hdr;

_Static_assert(sizeof(shmkv__hdr) <= SHMKV__HDR_SIZE, "header must fit its page");
_Static_assert(sizeof(shmkv__bt_node) + SHMKV__BLOCK_HDR <= 1024, "node fits a 1 KiB class");

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
    /* Per owner (the segments, then the index): bytes this process freed
     * since it last trimmed that owner, less a penalty after a trim that
     * found nothing to give back (alloc.c). NULL: never trims. */
    int64_t *freed;
} shmkv__map;

struct shmkv_db {
    shmkv__map *m;
    unsigned flags;
    bool closed;
};

#define SHMKV__P(m, off) ((void *)((m)->base + (off)))
#define SHMKV__HDR(m) ((shmkv__hdr *)(m)->base)

static inline shmkv__seg *shmkv__seg_at(shmkv__map *m, uint32_t i)
{
    return (shmkv__seg *)SHMKV__P(m, SHMKV__HDR(m)->seg_off + (uint64_t)i * sizeof(shmkv__seg));
}

static inline shmkv__idx *shmkv__idx_of(shmkv__map *m)
{
    return (shmkv__idx *)SHMKV__P(m, SHMKV__HDR(m)->idx_off);
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

/* ---- hashing and randomness (util.c) --------------------------------- */
uint64_t shmkv__hash(const void *key, size_t len);
/* Uniform in [0, n), n > 0; thread-local generator. */
uint64_t shmkv__rand_below(uint64_t n);
static inline uint64_t shmkv__pfx(const void *key, size_t len)
{
    const unsigned char *k = key;
    uint64_t p = 0;
    for (size_t i = 0; i < 8; i++)
        p = (p << 8) | (i < len ? k[i] : 0);
    return p;
}
static inline int shmkv__keycmp(const void *a, size_t al, const void *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c)
        return c;
    return al < bl ? -1 : al > bl;
}

/* ---- size classes and allocator (alloc.c) ---------------------------- */
uint32_t shmkv__class_of(uint64_t size);  /* size includes the block header */
uint64_t shmkv__class_size(uint32_t cls);
/* Allocate a block with payload >= len for owner; returns 0 and sets *off to
 * the payload offset, or a negative code (-ENOSPC, SHMKV_EFULL). The caller
 * holds the owner's lock. */
int shmkv__alloc_block(shmkv__map *m, shmkv__alloc *a, uint32_t owner,
                       uint64_t len, uint64_t *off);
void shmkv__free_block(shmkv__map *m, shmkv__alloc *a, uint64_t payload);
/* Bytes a block occupies, header included (0 if a big block's chunk makes
 * no sense): the class size, or the chunk's rest for a big block. */
uint64_t shmkv__block_bytes(shmkv__map *m, uint64_t payload);
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
int shmkv__idx_lock(shmkv__map *m, shmkv__seg *held);
/* Take the index lock without the dirty check (for clear and rebuild,
 * which run with every segment lock already held). */
int shmkv__idx_lock_raw(shmkv__map *m);
/* Rebuild the index under every segment lock and the index lock (the
 * caller holds none of them). */
int shmkv__idx_rebuild_all(shmkv__map *m);
void shmkv__idx_unlock(shmkv__map *m);
int shmkv__lock_all(shmkv__map *m);   /* every segment, in order */
void shmkv__unlock_all(shmkv__map *m);
int shmkv__grow_lock(shmkv__map *m);
void shmkv__grow_unlock(shmkv__map *m);

/* Test-only: when set, called at named points inside critical sections so
 * that crash tests can kill a process there. */
extern void (*shmkv__test_hook)(const char *point);
#define SHMKV__HOOK(p) do { if (shmkv__test_hook) shmkv__test_hook(p); } while (0)

/* ---- table (table.c) -------------------------------------------------- */
/* Repair a segment after its lock owner died: mark live entries, rebuild
 * the allocator, recount. Caller holds the lock. */
int shmkv__seg_recover(shmkv__map *m, shmkv__seg *s);
/* Drop every entry of a segment (caller holds its lock). */
int shmkv__seg_clear(shmkv__map *m, shmkv__seg *s);
/* Call fn for the payload offset of every live entry (caller holds the
 * segment lock); stops at fn's first non-zero return and returns it. */
int shmkv__seg_visit(shmkv__map *m, shmkv__seg *s,
                     int (*fn)(void *ctx, uint64_t entry_off), void *ctx);
/* Look a key up and call fn on its entry under the segment lock; returns
 * SHMKV_ENOTFOUND or fn's return. */
int shmkv__get_locked_copy(shmkv_db *db, const void *key, size_t klen,
                           int (*fn)(void *ctx, const shmkv__entry *e, shmkv_kind kind),
                           void *ctx);

/* ---- index (index.c); caller holds the index lock -------------------- */
int shmkv__idx_insert(shmkv__map *m, const void *key, size_t klen);
/* Removing a key that is not in the index is a no-op returning 0. */
int shmkv__idx_remove(shmkv__map *m, const void *key, size_t klen);
uint64_t shmkv__idx_rank(shmkv__map *m, const void *key, size_t klen);
/* Key blob offset of the key at rank r (r < n). */
uint64_t shmkv__idx_select(shmkv__map *m, uint64_t r);
/* Visit keys in order from rank `from`, at most `limit`, while they start
 * with prefix; fn returns non-zero to stop. */
typedef int (*shmkv__idx_visit_fn)(void *ctx, const shmkv__kblob *kb);
int shmkv__idx_walk(shmkv__map *m, uint64_t from, const void *prefix, size_t plen,
                    uint64_t limit, shmkv__idx_visit_fn fn, void *ctx);
/* Rebuild from the tables; caller holds every segment lock and the index
 * lock. Clears dirty on success. */
int shmkv__idx_rebuild(shmkv__map *m);
/* Rank just past every key starting with prefix (n when none follows). */
uint64_t shmkv__idx_prefix_end(shmkv__map *m, const void *prefix, size_t plen);

#endif /* SHMKV_INTERNAL_H */
