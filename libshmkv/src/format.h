/*
 * format.h - the on-file format in code: the region's structures and
 * constants, the one computation of its fixed layout, the size classes,
 * the key hash and order (they decide where keys live), and pure
 * validators that read only through a bounded view of the bytes.
 * docs/format.md describes every byte here; keep the two in step.
 *
 * Everything inside the region is addressed by offsets from the mapping's
 * base, never by pointers: each process maps the region at its own address.
 *
 * This is the bottom layer: format.c calls nothing else of the library, so
 * that tools (shmkv-dump) can share it without the library's internals.
 */
#ifndef SHMKV_FORMAT_H
#define SHMKV_FORMAT_H

#include "shmkv.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SHMKV__MAGIC          "SHMKVdb\0" /* 8 bytes at offset 0 */
#define SHMKV__MAGIC_INIT     "SHMKVin\0" /* creation in progress */
/* 3: claims (leases in entries, claim counts in the index); 4: delete
 * batches record their intent in the slots and the segment's intent word */
#define SHMKV__FORMAT_VERSION 4u
#define SHMKV__FORMAT_VERSION_MIN 1u /* version 1 stores are read and upgraded */
#define SHMKV__ENDIAN_CHECK   0x01020304u
#define SHMKV__HDR_SIZE       4096u
#define SHMKV__ATTACH_SLOTS   64u
#define SHMKV__PAGE           4096u

/* The public limits under the names the sources use. */
#define SHMKV__DEFAULT_SEGMENTS SHMKV_SEGMENTS_DEFAULT
#define SHMKV__MAX_SEGMENTS     SHMKV_SEGMENTS_MAX
#define SHMKV__DEFAULT_RESERVE  SHMKV_RESERVE_DEFAULT
#define SHMKV__MIN_RESERVE      SHMKV_RESERVE_MIN
#define SHMKV__MAX_RESERVE      SHMKV_RESERVE_MAX

/* ---- allocator ------------------------------------------------------- */

#define SHMKV__NCLASS        96u
#define SHMKV__CHUNK_MAGIC   0x4b4e4843u /* "CHNK" */
#define SHMKV__CHUNK_HDR     32u
#define SHMKV__CHUNK_MIN     (4u << 10)
#define SHMKV__CHUNK_MAX     (4u << 20)
#define SHMKV__BLOCK_HDR     8u
#define SHMKV__OWNER_INDEX   0xfffffffeu
/* A block too large for a size class sits alone in its own chunk: cls is
 * SHMKV__CLS_BIG, size 0, and it runs to the chunk's end (format 2). Since
 * format 4 that is every block of more than SHMKV__BIG_MIN bytes (header
 * included), not only those past a 4 MiB chunk: a segment's table, which
 * is replaced by one twice its size as the segment grows, then goes back
 * to the pool shared by every owner instead of waiting on its segment's
 * free list for a block of its class that never comes. */
#define SHMKV__BIG_MIN       (64u << 10)
#define SHMKV__CLS_BIG       0xffu
/* Owner of a chunk nobody holds: emptied chunks go back to this shared
 * pool, from which any owner takes (format 2). */
#define SHMKV__OWNER_FREE    0xffffffffu

/* Block flags */
#define SHMKV__BF_USED 0x01u
#define SHMKV__BF_MARK 0x02u /* set only while a recovery walk runs */
/* Entry blocks: a lease (shmkv__lease) follows the key and the value, at
 * the next 8-byte boundary (format 3). Set before the entry is published,
 * never changed after: a claim, renewal or release publishes a new entry. */
#define SHMKV__BF_LEASE 0x04u

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
/* A live slot a delete batch in flight will empty (format 4). Entry
 * payloads are 8-aligned, so the bit is free in every live word; it is set
 * only while the segment's intent word holds that batch (SHMKV__INTENT_DEL)
 * and is no part of the offset. */
#define SHMKV__SLOT_DOOM  4ull
#define SHMKV__SLOT_OFF(w) ((w) & 0x0000fffffffffffbull)
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
    /* Multi-key batches (batch.c). These sit in what was tail padding, so
     * stores written before them hold zeros here, which means "none". */
    /* This segment's part of a batch in flight, 0: none. Even: the offset
     * of an intent block. Odd: a delete batch's, which needs no block
     * (SHMKV__INTENT_DEL): the slots to empty carry SHMKV__SLOT_DOOM. */
    _Atomic uint64_t intent;
    _Atomic uint64_t batch;  /* as a batch's lowest segment: gen << 2 | SHMKV__B_* */
    /* The header's clear_gen when this segment was last emptied. Behind it,
     * a clear() that published its generation died before reaching this
     * segment, and the next locker empties it (sits in what was padding). */
    uint64_t gen;
} shmkv__seg;

#define SHMKV__B_FREE      0u
#define SHMKV__B_PREPARED  1u
#define SHMKV__B_COMMITTED 2u

/* A delete batch's intent word: bit 0 set, the leader's segment number in
 * bits 1-16 and the low 47 bits of the batch's generation above. A delete
 * must work on a store with no byte left, so its intent takes none: the
 * slots it empties are marked in place. 47 bits of generation suffice:
 * before a leader's word moves to a new batch, every intent that names it
 * is resolved (batch_plan.c, settle_leader). */
#define SHMKV__INTENT_GEN_BITS 47u
#define SHMKV__INTENT_GEN_MASK ((1ull << SHMKV__INTENT_GEN_BITS) - 1)
static inline uint64_t shmkv__intent_del(uint32_t leader, uint64_t gen)
{
    return 1ull | (uint64_t)(leader & 0xffffu) << 1 | (gen & SHMKV__INTENT_GEN_MASK) << 17;
}
static inline bool shmkv__intent_is_del(uint64_t w)
{
    return w & 1u;
}
static inline uint32_t shmkv__intent_leader(uint64_t w)
{
    return (uint32_t)(w >> 1) & 0xffffu;
}
/* Whether the batch of a delete intent word committed, from its leader's
 * batch word (gen << 2 | state). */
static inline bool shmkv__intent_del_committed(uint64_t iw, uint64_t leader_word)
{
    return (leader_word & 3u) == SHMKV__B_COMMITTED &&
           ((leader_word >> 2) & SHMKV__INTENT_GEN_MASK) == iw >> 17;
}

/* Payload of an intent block (owned by its segment): the slot stores one
 * segment must make for a batch, applied only if the batch's lowest
 * segment says it committed. */
typedef struct shmkv__intent_ch {
    uint64_t slot; /* index in the segment's current table */
    uint64_t word; /* what the slot becomes */
} shmkv__intent_ch;

typedef struct shmkv__intent {
    uint32_t leader; /* lowest segment of the batch: holds the commit word */
    uint32_t n;      /* changes */
    uint64_t gen;    /* the batch's generation in leader->batch */
    shmkv__intent_ch ch[];
} shmkv__intent;

/* A claim on its entry's key, after the key and value (SHMKV__BF_LEASE).
 * Times are on the lease clock (shmkv__lease_now): CLOCK_BOOTTIME plus the
 * header's lease_base. A lease whose expiry has passed is no claim at all:
 * nothing needs to remove it. */
typedef struct shmkv__lease {
    uint64_t token;  /* fencing token: the header's claim_token when issued */
    uint64_t expiry; /* lease clock, ns */
    uint32_t olen;   /* owner label bytes that follow */
    uint32_t pad;
    unsigned char owner[];
} shmkv__lease;

/* Offset of an entry's lease from the start of its payload. */
static inline uint64_t shmkv__lease_at(uint64_t klen, uint64_t vlen)
{
    return (sizeof(shmkv__entry) + klen + vlen + 7) & ~(uint64_t)7;
}

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

/* Counted B+tree. Leaf entries: pfx + key (blob), child: the expiry of the
 * key's claim (0: not claimed), count 1 | claimed << 32. Internal entries:
 * pfx + key of the subtree's smallest key, child node, keys below |
 * claimed keys below << 32 (format 3; stores before it have no claims, so
 * their counts read the same). A node's pad is the earliest claim expiry
 * below it (0: none), which is how claims that ran out are found. A claim
 * the index counts may have run out; one it does not count never has. pfx is the first 8 key bytes big-endian,
 * zero-padded, so most comparisons never dereference the blob. */
#define SHMKV__BT_SLOTS 31u /* a node holds at most SLOTS-1 entries at rest */
typedef struct shmkv__bt_ent {
    uint64_t pfx;
    uint64_t key;
    uint64_t child;
    uint64_t count;
} shmkv__bt_ent;

#define SHMKV__BT_KEYS(c) ((c) & 0xffffffffull)
#define SHMKV__BT_HELD(c) ((c) >> 32)
#define SHMKV__BT_ONE_HELD (1ull << 32)
typedef struct shmkv__bt_node {
    uint32_t leaf;
    uint32_t n;
    uint64_t pad; /* earliest claim expiry below (format 3), 0: none */
    shmkv__bt_ent e[SHMKV__BT_SLOTS];
} shmkv__bt_node;

typedef struct shmkv__index {
    alignas(64) pthread_mutex_t lock;
    alignas(64) uint64_t root; /* B+tree root node, 0: empty tree */
    uint64_t karr;             /* key array payload, 0: none */
    uint64_t n;                /* keys in the index */
    _Atomic uint32_t dirty;    /* 1: must be rebuilt before use */
    uint32_t pad;
    shmkv__alloc alloc;
    uint64_t gen;              /* as shmkv__seg.gen, for the index */
    uint64_t ulog;             /* undo log payload (shmkv__ulog), 0: none yet */
} shmkv__index;

/* The index's undo log: one block of the index allocator. An index update
 * (insert or remove of one key) first records the key and its segment, then
 * before each write to index memory appends the bytes it is about to
 * overwrite. A holder killed in the middle leaves state ACTIVE; the next
 * locker of the index writes the saved bytes back newest first (the index
 * is then exactly as before the update, allocator included), sets state
 * RECONCILE, and the key alone is then made to agree with its segment's
 * table, under that segment's lock. Repair costs what the dead update
 * touched, not the size of the index. */
#define SHMKV__ULOG_IDLE      0u
#define SHMKV__ULOG_ACTIVE    1u
#define SHMKV__ULOG_RECONCILE 2u
#define SHMKV__ULOG_TIDY      3u /* giving freed chunks back after a commit */
#define SHMKV__ULOG_BYTES     (64u << 10) /* block size, header included */
typedef struct shmkv__ulog {
    _Atomic uint32_t state;
    uint32_t seg;        /* segment of key */
    uint32_t klen;
    uint32_t overflow;   /* 1: a write went unrecorded, repair must rebuild */
    uint64_t top0;       /* region top when the update began */
    _Atomic uint64_t used; /* bytes of records in rec[] */
    unsigned char key[SHMKV_KEY_MAX];
    /* records: u64 offset, u64 length, the old bytes (padded to 8) */
    alignas(8) unsigned char rec[];
} shmkv__ulog;

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
    uint64_t index_off;
    uint64_t data_off;
    _Atomic uint64_t top;       /* end of the last chunk: nothing past it is touched */
    _Atomic uint64_t file_size; /* bytes fallocated */
    _Atomic uint32_t clean;     /* 1: last process closed normally */
    uint32_t pad;
    uint64_t created;           /* CLOCK_REALTIME seconds */
    _Atomic uint64_t opens;     /* times opened, for tools */
    _Atomic uint64_t recoveries;/* segment/index repairs after a dead owner */
    /* Bumped by clear() under every lock, before it empties anything: the
     * one store that makes the clear happen. Segments and the index still
     * behind it are emptied by their next locker. */
    _Atomic uint64_t clear_gen;
    alignas(64) pthread_mutex_t grow_lock;
    alignas(64) shmkv__attach attach[SHMKV__ATTACH_SLOTS];
    /* Bytes in chunks of the free pool (owner SHMKV__OWNER_FREE); changed
     * under the growth lock only, recounted when its holder died. Zero in
     * stores from before the pool, which have no free chunks. */
    uint64_t pool_bytes;
    /* Claims (format 3; zeros in older stores mean "none yet"). */
    _Atomic uint64_t claim_token; /* the last fencing token issued */
    uint64_t lease_base;          /* lease clock = CLOCK_BOOTTIME + lease_base, ns */
    _Atomic uint64_t lease_high;  /* the latest expiry ever granted */
    char boot_id[40];             /* the boot lease_base was set for (NUL-padded) */
} shmkv__hdr;

_Static_assert(sizeof(shmkv__hdr) <= SHMKV__HDR_SIZE, "header must fit its page");
_Static_assert(sizeof(shmkv__bt_node) + SHMKV__BLOCK_HDR <= 1024, "node fits a 1 KiB class");
_Static_assert(SHMKV__ULOG_BYTES <= SHMKV__BIG_MIN, "the undo log is a class block (its size field gives its room)");
/* Fields added later sit in what was padding: the sizes, and with them the
 * ABI check and the layout of older stores, stay as they were. */
_Static_assert(sizeof(shmkv__seg) == 960 && sizeof(shmkv__index) == 960, "no new size");
_Static_assert(offsetof(shmkv__hdr, clear_gen) == 120, "clear_gen in the header's gap");
_Static_assert(offsetof(shmkv__index, ulog) == 912, "ulog in the index's padding");

/* ---- size classes ------------------------------------------------------ */

/* Block sizes are part of the format: a block's size must be its class's
 * size, which is how a chunk is walked block by block. Inline: the
 * allocator's hot path asks for them on every allocation. */
static inline uint32_t shmkv__class_of(uint64_t size) /* size includes the block header */
{
    if (size <= 256)
        return size ? (uint32_t)((size + 15) / 16 - 1) : 0;
    /* Four classes per power of two above 256 bytes: at most 25% waste. */
    uint64_t s = size - 1;
    uint32_t b = 63u - (uint32_t)__builtin_clzll(s);
    return 16u + (b - 8u) * 4u + (uint32_t)((s >> (b - 2u)) & 3u);
}

static inline uint64_t shmkv__class_size(uint32_t cls)
{
    if (cls < 16)
        return 16ull * (cls + 1);
    uint32_t c = cls - 16u;
    uint32_t b = 8u + c / 4u;
    return (uint64_t)(4u + c % 4u + 1u) << (b - 2u);
}

/* ---- keys: where they live and in what order ---------------------------- */

/* The hash decides a key's segment (bits 32.. masked by nseg - 1), its
 * slot tag (the 16 high bits) and its home slot (the low bits), so it is
 * part of the format: changing it needs a new version (util.c). */
uint64_t shmkv__hash(const void *key, size_t len);

/* A B+tree entry's pfx: the first 8 key bytes big-endian, zero-padded. */
static inline uint64_t shmkv__pfx(const void *key, size_t len)
{
    const unsigned char *k = key;
    uint64_t p = 0;
    for (size_t i = 0; i < 8; i++)
        p = (p << 8) | (i < len ? k[i] : 0);
    return p;
}

/* The index's order: bytewise, a prefix before the longer key. */
static inline int shmkv__keycmp(const void *a, size_t al, const void *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c)
        return c;
    return al < bl ? -1 : al > bl;
}

/* Whether a key starts with prefix (every key starts with the empty one). */
static inline bool shmkv__has_prefix(const void *k, size_t klen, const void *p, size_t plen)
{
    return klen >= plen && (plen == 0 || memcmp(k, p, plen) == 0);
}

/* ---- layout ------------------------------------------------------------ */

/* Sizes that must be page multiples (reserve, chunks, data_off) round up. */
static inline uint64_t shmkv__page_up(uint64_t x)
{
    return (x + SHMKV__PAGE - 1) & ~(uint64_t)(SHMKV__PAGE - 1);
}

/* The fixed part of a store follows from nseg alone: the header page, the
 * segments, the index state, then chunks from the next page boundary. */
typedef struct shmkv__layout {
    uint64_t seg_off;   /* segment table: right after the header page */
    uint64_t index_off; /* index state: right after the last segment */
    uint64_t data_off;  /* first chunk: page aligned */
} shmkv__layout;

shmkv__layout shmkv__layout_of(uint32_t nseg);

/* A reserve a header may hold: a page multiple within the public limits. */
static inline bool shmkv__reserve_ok(uint64_t reserve)
{
    return reserve >= SHMKV__MIN_RESERVE && reserve <= SHMKV__MAX_RESERVE &&
           reserve % SHMKV__PAGE == 0;
}

/* Where segment i of a store with this header lies. */
static inline uint64_t shmkv__seg_off(const shmkv__hdr *h, uint32_t i)
{
    return h->seg_off + (uint64_t)i * sizeof(shmkv__seg);
}

/* The most a creator allocates before its header is complete: data_off
 * with the most segments. A longer file was never an unfinished creation. */
uint64_t shmkv__creation_size_max(void);

/* ---- validators ---------------------------------------------------------- */

/* What a validator found wrong: 0 (nothing) or one of these, never a
 * SHMKV_E* code (shmkv__fault_code maps them to one). Each validator says
 * which it returns, so that a tool can word each case its own way. */
enum {
    SHMKV__F_OUTSIDE = -1,  /* lies, at least partly, outside the view */
    SHMKV__F_MAGIC = -2,    /* header or chunk magic */
    SHMKV__F_VERSION = -3,  /* format version not readable */
    SHMKV__F_ENDIAN = -4,   /* byte-order mark */
    SHMKV__F_ABI = -5,      /* word, mutex or segment size */
    SHMKV__F_HDR_SIZE = -6,
    SHMKV__F_NSEG = -7,     /* not a power of two in [1, SHMKV__MAX_SEGMENTS] */
    SHMKV__F_LAYOUT = -8,   /* seg_off, index_off, data_off */
    SHMKV__F_FLAGS = -9,    /* track_keys, backend */
    SHMKV__F_RESERVE = -10,
    SHMKV__F_TOP = -11,     /* region end */
    SHMKV__F_SHORT = -12,   /* file shorter than the fixed part */
    SHMKV__F_SIZE = -13,    /* chunk size */
    SHMKV__F_USED = -14,    /* chunk used */
    SHMKV__F_CLASS = -15,   /* block size / class */
    SHMKV__F_BIG = -16,     /* big block not alone at the start of a full chunk */
    SHMKV__F_PAST = -17,    /* block runs past the end of the view */
    SHMKV__F_FREE = -18,    /* block not in use */
    SHMKV__F_CAP = -19,     /* table capacity not a power of two */
    SHMKV__F_FIT = -20,     /* contents do not fit the block */
    SHMKV__F_LEN = -21,     /* key or value length out of range */
    SHMKV__F_BODY = -22,    /* a block's payload header lies outside the view */
    SHMKV__F_LEAF = -23,    /* B+tree node leaf flag */
    SHMKV__F_COUNT = -24,   /* B+tree node entry count */
    SHMKV__F_LEASE = -25,   /* an entry's lease does not fit after its key and value */
    SHMKV__F_OWNER = -26,   /* a lease's owner is longer than SHMKV_OWNER_MAX */
    SHMKV__F_TOKEN = -27,   /* a lease's token is 0 or was never issued */
    SHMKV__F_EXPIRY = -28,  /* a lease ends after the latest end ever granted */
};

/* SHMKV_ENOTSTORE (magic), SHMKV_EVERSION, SHMKV_EABI (endian, ABI),
 * SHMKV_ECORRUPT (the rest); 0 for 0. */
int shmkv__fault_code(int fault);

/* A read-only window on region bytes: [base, base + len). Offsets are
 * region offsets (the view starts at the header). Validators never read
 * outside it, whatever the bytes say. */
typedef struct shmkv__view {
    const unsigned char *base;
    uint64_t len;
} shmkv__view;

/* Pointer to [off, off + n), or NULL when any of it lies outside. */
static inline const void *shmkv__view_at(const shmkv__view *v, uint64_t off, uint64_t n)
{
    if (off > v->len || n > v->len - off)
        return NULL;
    return v->base + off;
}

/* A word of the view; aligned words are read whole, since the bytes may be
 * a live mapping that writers change under the reader. */
static inline bool shmkv__view_u64(const shmkv__view *v, uint64_t off, uint64_t *out)
{
    const void *p = shmkv__view_at(v, off, 8);
    if (!p)
        return false;
    if ((off & 7) == 0)
        *out = __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
    else
        memcpy(out, p, 8);
    return true;
}

static inline bool shmkv__view_u32(const shmkv__view *v, uint64_t off, uint32_t *out)
{
    const void *p = shmkv__view_at(v, off, 4);
    if (!p)
        return false;
    if ((off & 3) == 0)
        *out = __atomic_load_n((const uint32_t *)p, __ATOMIC_RELAXED);
    else
        memcpy(out, p, 4);
    return true;
}

/* Copy a structure out of the view, so that every decision about it is
 * taken on one private copy (no torn reads of a field tested twice). */
static inline bool shmkv__view_copy(const shmkv__view *v, uint64_t off, void *dst, uint64_t n)
{
    const void *p = shmkv__view_at(v, off, n);
    if (!p)
        return false;
    memcpy(dst, p, n);
    return true;
}

/* What a first page of len bytes (len <= SHMKV__HDR_SIZE: the file may be
 * shorter) shows of a creator: */
#define SHMKV__PAGE_OTHER 0 /* neither: a store, or a foreign file */
#define SHMKV__PAGE_ZERO  1 /* all zero */
#define SHMKV__PAGE_INIT  2 /* a whole page with the in-progress magic */
int shmkv__first_page(const unsigned char *page, size_t len);

/* The header as a library opens it: the first of F_MAGIC, F_VERSION,
 * F_ENDIAN, F_ABI, F_HDR_SIZE, F_NSEG, F_LAYOUT (offsets not exactly what
 * creation writes), F_FLAGS, F_RESERVE, F_TOP (outside [data_off,
 * reserve]); 0 when it is sound. The file's length is the caller's to
 * hold against top. */
int shmkv__hdr_fault(const shmkv__hdr *h);
/* The same as a SHMKV_E* code (0 when sound). */
int shmkv__hdr_check(const shmkv__hdr *h);
/* The header as a reader needs it to interpret the region at all, for a
 * file of file_len bytes: the identification of shmkv__hdr_fault (magic to
 * nseg), then F_LAYOUT when the offsets are out of order, unaligned or
 * beyond 1 TiB, F_SHORT when the file ends before data_off, F_TOP when top
 * is not a page boundary at or after data_off. Looser than the library on
 * purpose: what it lets through, an inspector can still report on. */
int shmkv__hdr_readable(const shmkv__hdr *h, uint64_t file_len);

/* A chunk header found at off of a region that ends at top (off < top):
 * F_MAGIC, or F_SIZE unless its size is a multiple of the page that ends
 * by top. */
int shmkv__chunk_check(const shmkv__chunk *c, uint64_t off, uint64_t top);
/* F_USED unless the chunk's used lies in [SHMKV__CHUNK_HDR, size]. */
int shmkv__chunk_used_check(const shmkv__chunk *c);
/* Copy the chunk header at off (< top) out of the view into *c and check
 * it: F_OUTSIDE when the header runs past the view or top (*c zeroed),
 * else as shmkv__chunk_check. */
int shmkv__view_chunk(const shmkv__view *v, uint64_t off, uint64_t top, shmkv__chunk *c);
/* The block at offset at of a chunk whose used is sane (at in
 * [SHMKV__CHUNK_HDR, c->used)): 0 and *bytes, its size with the header,
 * or F_CLASS when its size and class do not make a block that ends by
 * used. A big block (SHMKV__CLS_BIG, size 0) is one only alone at the
 * start of a full chunk, which it fills. */
int shmkv__block_walk_check(const shmkv__block *b, uint64_t at, const shmkv__chunk *c,
                            uint64_t *bytes);
/* The block whose payload starts at payload, found by the payload alone
 * (a reference from a slot or a list): copies its header into *b, and
 * returns 0 with *bytes (its size, header included), F_OUTSIDE (header
 * outside the view), F_BIG (a big block whose chunk does not hold it
 * alone and full), F_CLASS, or F_PAST (the block, of *bytes bytes, runs
 * past the view). */
int shmkv__view_block(const shmkv__view *v, uint64_t payload, shmkv__block *b,
                      uint64_t *bytes);
/* A table block: as shmkv__view_block (*b, *bytes), then F_FREE, F_CAP
 * (*cap: what was read, 0 if nothing could be), F_FIT (cap slots do not
 * fit the block). */
int shmkv__view_table(const shmkv__view *v, uint64_t toff, shmkv__block *b, uint64_t *cap,
                      uint64_t *bytes);
/* An entry block: as shmkv__view_block, then F_FREE, F_BODY, F_LEN (key
 * length not in [1, SHMKV_KEY_MAX] or value length above
 * SHMKV_VALUE_MAX), F_FIT (key and value do not fit the block). *e gets
 * the entry's header (lengths), *bytes the block's size. On 0 its key and
 * value lie inside the view. */
int shmkv__view_entry(const shmkv__view *v, uint64_t payload, shmkv__block *b,
                      shmkv__entry *e, uint64_t *bytes);
/* Reachability in a hash table of cap slots (a power of two): a lookup
 * probes from a key's home slot (hash & (cap - 1)) to the first empty
 * slot, so going round once from an empty slot, an entry is reachable
 * when it lies within the run of non-empty slots that ends at it. One
 * pass, whatever the clusters. Over the slot words w, the hashes hs of
 * the entries to judge (UINT64_MAX: a slot not to judge) and an empty
 * slot `empty`: the next unreachable slot, or cap once there is none
 * left. *r starts zeroed and carries the walk from call to call. */
typedef struct shmkv__reach {
    uint64_t k, run;
} shmkv__reach;
uint64_t shmkv__table_unreachable(const uint64_t *w, const uint64_t *hs, uint64_t cap,
                                  uint64_t empty, shmkv__reach *r);
/* A B+tree node (copied out): F_LEAF when the leaf flag is not 0 or 1,
 * F_COUNT unless it holds 1 to SHMKV__BT_SLOTS entries. */
int shmkv__bt_node_check(const shmkv__bt_node *nd);
/* A key blob's header in a block of block_bytes bytes (header included):
 * F_LEN unless its key length is in [1, SHMKV_KEY_MAX] and the key fits. */
int shmkv__kblob_check(const shmkv__kblob *kb, uint64_t block_bytes);

/* ---- claims (format 3) ---- */

/* The lease of an entry that shmkv__view_entry accepted (at payload, *e
 * its lengths, in a block of bytes bytes, header included) and whose block
 * has SHMKV__BF_LEASE: copies the lease's fixed part into *l and returns 0
 * (its owner bytes then lie inside the block and the view, at payload +
 * shmkv__lease_at(klen, vlen) + sizeof *l), or F_LEASE (the lease or its
 * owner runs past the block or the view; *l zeroed when not even the fixed
 * part could be read), F_OWNER (olen above SHMKV_OWNER_MAX), F_TOKEN
 * (token 0, or above claim_token, the header's last issued token), F_EXPIRY
 * (an end above lease_high, the latest end the header says was granted:
 * a claim raises it before it publishes). Whether the lease is live is the
 * caller's to judge, on its lease clock. UINT64_MAX for either bound
 * judges nothing. */
int shmkv__view_lease(const shmkv__view *v, uint64_t payload, const shmkv__entry *e,
                      uint64_t bytes, uint64_t claim_token, uint64_t lease_high,
                      shmkv__lease *l);

/* A leaf entry's count when the index counts its key's claim with expiry
 * child (0: it counts none): one key, claimed or not. */
static inline uint64_t shmkv__bt_leaf_count(uint64_t child)
{
    return 1 | (child ? SHMKV__BT_ONE_HELD : 0);
}

/* The earlier of two claim expiries, 0 standing for none (a node's pad). */
static inline uint64_t shmkv__expiry_min(uint64_t a, uint64_t b)
{
    return !a ? b : !b ? a : a < b ? a : b;
}

/* What lies below a B+tree entry, summed by a walker from the leaves up:
 * keys, keys whose claim the index counts, and the earliest of their
 * expiries (0: none). */
typedef struct shmkv__bt_sum {
    uint64_t keys, held, earliest;
} shmkv__bt_sum;

/* Add a leaf entry (the key itself) or a subtree's sum to *s. */
static inline void shmkv__bt_sum_leaf(shmkv__bt_sum *s, const shmkv__bt_ent *e)
{
    s->keys++;
    s->held += e->child != 0;
    s->earliest = shmkv__expiry_min(s->earliest, e->child);
}

static inline void shmkv__bt_sum_add(shmkv__bt_sum *s, const shmkv__bt_sum *below)
{
    s->keys += below->keys;
    s->held += below->held;
    s->earliest = shmkv__expiry_min(s->earliest, below->earliest);
}

/* An internal entry's count against what its subtree holds: true when
 * both halves (keys, claimed keys) agree. */
static inline bool shmkv__bt_count_ok(uint64_t count, const shmkv__bt_sum *below)
{
    return below->keys <= 0xffffffffull && below->held <= 0xffffffffull &&
           count == (below->keys | below->held << 32);
}

#endif /* SHMKV_FORMAT_H */
