/*
 * shmkv.h - libshmkv, a key-value store in one shared mapping.
 *
 * A store is one region, either a regular file (the "disk" backend) or a
 * POSIX shared-memory object (the "memory" backend). Every thread of every
 * process that opens the same path or name sees the same data. Any of those
 * processes may be killed at any instruction; the next one to take a lock
 * the dead process held repairs what it left half done.
 *
 * Conventions:
 *  - Every function that can fail returns 0 on success or a negative error
 *    code: either one of the SHMKV_E* codes below or a negated errno value
 *    (e.g. -ENOSPC, -EACCES). shmkv_strerror() explains both.
 *  - Keys are byte strings of 1 to SHMKV_KEY_MAX bytes; values are byte
 *    strings of 0 to SHMKV_VALUE_MAX bytes with a kind tag. Keys are compared
 *    as unsigned bytes (memcmp order), which is also the order of list().
 *  - Functions that copy a value out take a buffer and its capacity. When the
 *    value does not fit they return SHMKV_EBUFSIZE, store the size needed in
 *    *vlen and change nothing; call again with a larger buffer.
 *  - Every operation is one call that takes and releases its locks inside;
 *    no lock is ever held between calls.
 *  - Any call that takes the store's locks may also return SHMKV_ETIMEDOUT,
 *    having changed nothing, when another process held one of them for
 *    longer than the handle's lock timeout (shmkv_options.lock_timeout_ms).
 */
#ifndef SHMKV_H
#define SHMKV_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SHMKV_API __attribute__((visibility("default")))
#else
#define SHMKV_API
#endif

#define SHMKV_VERSION_MAJOR 0
#define SHMKV_VERSION_MINOR 1
#define SHMKV_VERSION_PATCH 0

/** Longest key accepted, in bytes. */
#define SHMKV_KEY_MAX 16384u
/** Largest value accepted, in bytes. */
#define SHMKV_VALUE_MAX (64u * 1024u * 1024u)
/** Longest memory-backend name accepted (without the leading '/'). */
#define SHMKV_NAME_MAX 200u
/** Lock stripes: a power of two from 1 to SHMKV_SEGMENTS_MAX. */
#define SHMKV_SEGMENTS_MAX 4096u
#define SHMKV_SEGMENTS_DEFAULT 64u
/** Bounds of the reserve (the size a region may grow to), in bytes. The
 * upper bound keeps every offset inside the 48 bits a slot stores. */
#define SHMKV_RESERVE_MIN (1ull << 20)
#define SHMKV_RESERVE_MAX (1ull << 46)
#define SHMKV_RESERVE_DEFAULT (16ull << 30)

/** @defgroup errors Error codes
 * Library-specific codes live in [-24799, -24700], a range of our own
 * (clear of the negated errnos, which stop at -4095, and of the range
 * Berkeley DB and LMDB use); anything else negative is a negated errno.
 * @{ */
#define SHMKV_ERR_BASE   (-24700)
#define SHMKV_ENOTFOUND  (-24700) /**< key not present */
#define SHMKV_EBUFSIZE   (-24701) /**< buffer too small; *vlen says what is needed */
#define SHMKV_ENOTSTORE  (-24702) /**< file or object is not a shmkv store */
#define SHMKV_EVERSION   (-24703) /**< store has another format version */
#define SHMKV_EABI       (-24704) /**< store made on an incompatible platform */
#define SHMKV_EINCOMPAT  (-24705) /**< open options conflict with the store's */
#define SHMKV_EKEYSIZE   (-24706) /**< key empty or longer than SHMKV_KEY_MAX */
#define SHMKV_EVALSIZE   (-24707) /**< value longer than SHMKV_VALUE_MAX */
#define SHMKV_ENOTINT    (-24708) /**< stored value is not a decimal int64 */
#define SHMKV_EOVERFLOW  (-24709) /**< increment would overflow int64 */
#define SHMKV_EFULL      (-24710) /**< store reached its reserved size */
#define SHMKV_EREADONLY  (-24711) /**< write through a read-only handle */
#define SHMKV_ENAME      (-24712) /**< invalid memory-backend name */
#define SHMKV_EINVAL     (-24713) /**< invalid argument or option */
#define SHMKV_ECORRUPT   (-24714) /**< store structure damaged beyond repair */
#define SHMKV_ELOCK      (-24715) /**< a lock could not be taken or repaired */
#define SHMKV_ETIMEDOUT  (-24716) /**< a lock was held longer than the lock timeout */
#define SHMKV_ETOOMANY   (-24717) /**< the key index holds its limit of 2^32 - 1 keys */
#define SHMKV_ESEGMENTS  (-24718) /**< segments not a power of two in [1, SHMKV_SEGMENTS_MAX] */
#define SHMKV_ERESERVE   (-24719) /**< reserve outside [SHMKV_RESERVE_MIN, SHMKV_RESERVE_MAX] */
#define SHMKV_EHELD      (-24720) /**< the key is held by another live claim */
#define SHMKV_ESTALE     (-24721) /**< no live claim with this token: released, completed,
                                       expired, taken over, or the key is gone */
#define SHMKV_ERR_LAST   (-24721)
/** @} */

/** Kind tag stored with every value, so tools can display it. */
typedef enum shmkv_kind {
    SHMKV_KIND_BYTES  = 0, /**< opaque bytes */
    SHMKV_KIND_STRING = 1, /**< UTF-8 text */
    SHMKV_KIND_JSON   = 2  /**< a JSON document */
} shmkv_kind;

/** Where the store lives. */
typedef enum shmkv_backend {
    SHMKV_BACKEND_DISK   = 0, /**< a regular file; persists */
    SHMKV_BACKEND_MEMORY = 1  /**< a POSIX shared-memory object; ephemeral */
} shmkv_backend;

/** Open flags (shmkv_options.flags). */
#define SHMKV_RDONLY    0x01u /**< refuse every write through this handle; needs only read
                                   permission, writes nothing, never creates (-ENOENT) */
#define SHMKV_NOCREATE  0x02u /**< fail with -ENOENT if the store does not exist */
#define SHMKV_SYNC      0x04u /**< msync after every write (slow; power-loss safety) */
#define SHMKV_NOSYNC    0x08u /**< do not msync when the last process closes */

/** Tri-state for options that a joiner may leave to the store. */
#define SHMKV_TRACK_DEFAULT 0 /**< creating: off; joining: whatever the store has */
#define SHMKV_TRACK_OFF     1 /**< creating: off; joining a tracked store: it stays tracked */
#define SHMKV_TRACK_ON      2 /**< creating: on; joining an untracked store: turns
                                   tracking on for the store and every process
                                   using it (the index is built once, under every
                                   lock, O(n), and kept from then on) */

/** shmkv_options.lock_timeout_ms: 0 means this default (10 s). */
#define SHMKV_LOCK_TIMEOUT_DEFAULT_MS 10000u
/** shmkv_options.lock_timeout_ms: wait for locks without a limit. */
#define SHMKV_LOCK_TIMEOUT_NONE       UINT32_MAX

/**
 * Options for shmkv_open(). Zero-initialise and set what you need: every
 * zero field means "default" when creating and "whatever the store has"
 * when joining. A non-zero segments or reserve that disagrees with an
 * existing store makes the open fail with SHMKV_EINCOMPAT; track_keys is
 * reconciled instead (see SHMKV_TRACK_ON), except that a read-only handle
 * cannot turn tracking on (SHMKV_EINCOMPAT).
 */
typedef struct shmkv_options {
    shmkv_backend backend;  /**< disk (default) or memory */
    int track_keys;         /**< SHMKV_TRACK_*: keep the key index */
    uint32_t segments;      /**< lock stripes, power of two in [1, SHMKV_SEGMENTS_MAX]; default 64 */
    uint64_t reserve;       /**< largest size the region may grow to, bytes, in
                                 [SHMKV_RESERVE_MIN, SHMKV_RESERVE_MAX]; default 16 GiB */
    uint32_t mode;          /**< permission bits for a new file/object, exact (not narrowed by the umask); default 0600 */
    uint32_t flags;         /**< SHMKV_RDONLY | SHMKV_NOCREATE | SHMKV_SYNC | SHMKV_NOSYNC */
    /** Longest time one call through this handle waits, in total, for the
     * store's locks (segment, index and growth locks) held by other threads
     * or processes, in milliseconds. Locks are held for microseconds, so a
     * long wait means a holder that is stopped (SIGSTOP, a debugger, a
     * frozen container) or starved. When it runs out the call fails with
     * SHMKV_ETIMEDOUT and changes nothing. 0: SHMKV_LOCK_TIMEOUT_DEFAULT_MS;
     * SHMKV_LOCK_TIMEOUT_NONE: wait without a limit. A per-handle setting,
     * never compared with the store's. Opening and closing are not bound
     * by it. */
    uint32_t lock_timeout_ms;
} shmkv_options;

/** An open store. One per shmkv_open(); handles to one store share a mapping. */
typedef struct shmkv_db shmkv_db;

/** Counters returned by shmkv_stat(). */
typedef struct shmkv_info {
    uint64_t keys;          /**< number of keys */
    uint64_t used_bytes;    /**< bytes of the region handed out to structures */
    uint64_t file_bytes;    /**< bytes allocated to the file / object */
    uint64_t reserve_bytes; /**< largest size the region may reach */
    uint32_t segments;      /**< lock stripes */
    int track_keys;         /**< 1 when the key index is kept */
    int backend;            /**< shmkv_backend */
    uint32_t format_version;
    uint32_t attached;      /**< live processes in the attach table (it lists 64) */
} shmkv_info;

/* ------------------------------------------------------------------ */
/* Open and close                                                      */

/**
 * Open, create or join a store.
 * @param where  disk: a file path (NULL means "./.k6.kv");
 *               memory: a name of 1..SHMKV_NAME_MAX bytes from
 *               [A-Za-z0-9._-] (NULL means "k6kv"); it names the object
 *               "/shmkv.<name>" under /dev/shm.
 * @param opts   options, or NULL for all defaults.
 * @param out    receives the handle.
 * @return 0; SHMKV_ENOTSTORE for a file that is not a store (it is left
 *   untouched); SHMKV_EVERSION, SHMKV_EABI, SHMKV_EINCOMPAT; SHMKV_ENAME
 *   for a bad memory-store name, SHMKV_ESEGMENTS and SHMKV_ERESERVE for
 *   those options out of range, SHMKV_EINVAL for any other bad option;
 *   -ENOENT with SHMKV_NOCREATE or SHMKV_RDONLY (a read-only open never
 *   creates a store); -ELOOP when the path is a
 *   symbolic link (never followed); -EISDIR; -EACCES; -ENOSPC; -ENOMEM.
 *
 * Opening the same store again in one process is cheap: the handles share
 * one mapping. A memory store whose processes have all gone (closed or
 * died) is found empty by the next opener.
 *
 * Handles do not cross fork(): a child opens its own. In the child, an
 * inherited handle is only good for shmkv_close(), which frees it without
 * detaching the parent; any other call returns SHMKV_EINVAL. A child that
 * never uses the store holds nothing of it, so it never keeps the parent
 * attached (or blocks other openers) after the parent closed or died.
 */
SHMKV_API int shmkv_open(const char *where, const shmkv_options *opts, shmkv_db **out);

/**
 * Close a handle. The last handle of the last process marks a disk store
 * cleanly closed (and msyncs it unless SHMKV_NOSYNC) or removes a memory
 * store. @return 0, or a negative code from msync; the handle is freed in
 * every case.
 */
SHMKV_API int shmkv_close(shmkv_db *db);

/** Remove a memory store by name (like shm_unlink). @return 0 or -errno. */
SHMKV_API int shmkv_memory_unlink(const char *name);

/* ------------------------------------------------------------------ */
/* Single-key operations                                               */

/**
 * Store a value, replacing any previous one.
 * @return 0; SHMKV_EKEYSIZE; SHMKV_EVALSIZE; SHMKV_EREADONLY; -ENOSPC when
 *   the disk or /dev/shm is full; SHMKV_EFULL when the reserve is reached.
 *   SHMKV_ETOOMANY when a new key would pass the index's 2^32 - 1 keys.
 *   On error the store is unchanged.
 */
SHMKV_API int shmkv_set(shmkv_db *db, const void *key, size_t klen,
              const void *val, size_t vlen, shmkv_kind kind);

/**
 * Copy a value out.
 * @param buf,cap  destination (buf may be NULL when cap is 0).
 * @param vlen     receives the value's size (also on SHMKV_EBUFSIZE).
 * @param kind     receives the kind tag; may be NULL.
 * @return 0; SHMKV_ENOTFOUND; SHMKV_EBUFSIZE; SHMKV_EKEYSIZE.
 * Reads without the segment lock when no writer is in the segment (and
 * takes it otherwise), so readers never slow each other down. On an error
 * the first cap bytes of buf are unspecified.
 */
SHMKV_API int shmkv_get(shmkv_db *db, const void *key, size_t klen,
              void *buf, size_t cap, size_t *vlen, shmkv_kind *kind);

/**
 * Delete a key.
 * @param existed  receives 1 if the key was there, 0 if not; may be NULL.
 * @return 0 (whether or not the key existed); SHMKV_EKEYSIZE; SHMKV_EREADONLY.
 */
SHMKV_API int shmkv_delete(shmkv_db *db, const void *key, size_t klen, int *existed);

/** @return 1 if the key exists, 0 if not, or a negative code. */
SHMKV_API int shmkv_exists(shmkv_db *db, const void *key, size_t klen);

/** Number of keys: O(segments), taking each segment lock in turn, so a
 * segment left half-written by a killed process is repaired and counted
 * exactly. Never fails: a segment whose lock is not had within the lock
 * timeout is counted without it (off by at most one per such segment, if
 * its holder stopped inside an insert or delete); shmkv_count() reports
 * that case instead. */
SHMKV_API uint64_t shmkv_size(shmkv_db *db);

/** Remove every key, as one write: a process killed inside it leaves
 * every key or none (the next user finishes a clear that had begun).
 * @return 0; SHMKV_EREADONLY. */
SHMKV_API int shmkv_clear(shmkv_db *db);

/* ------------------------------------------------------------------ */
/* Atomic read-modify-write: each runs under one segment lock.         */

/**
 * Add delta to a signed 64-bit integer stored as decimal text. A missing
 * key counts as 0 and is created with the given kind.
 * @param result  receives the new value; may be NULL.
 * @return 0; SHMKV_ENOTINT when the stored value is not a decimal integer;
 *   SHMKV_EOVERFLOW; plus the errors of shmkv_set(). On error nothing changes.
 */
SHMKV_API int shmkv_incr(shmkv_db *db, const void *key, size_t klen, int64_t delta,
               shmkv_kind kind, int64_t *result);

/**
 * Compare-and-swap. Replace the value with (val, vlen, kind) only if the
 * stored bytes equal (expect, elen) - or, when expect is NULL, only if the
 * key is absent.
 * @param swapped receives 1 when the value was replaced, else 0.
 * @return 0 whether or not it swapped; errors as shmkv_set().
 */
SHMKV_API int shmkv_cas(shmkv_db *db, const void *key, size_t klen,
              const void *expect, size_t elen,
              const void *val, size_t vlen, shmkv_kind kind, int *swapped);

/**
 * Store only if the key is absent.
 * @param stored receives 1 when stored, 0 when the key already existed.
 */
SHMKV_API int shmkv_set_if_absent(shmkv_db *db, const void *key, size_t klen,
                        const void *val, size_t vlen, shmkv_kind kind,
                        int *stored);

/**
 * Return the existing value, or store (val, vlen, kind) and return it.
 * @param loaded receives 1 when an existing value was returned, 0 when the
 *   given value was stored (and copied to buf).
 * @return 0; SHMKV_EBUFSIZE (nothing stored, *outlen set); errors as set.
 */
SHMKV_API int shmkv_get_or_set(shmkv_db *db, const void *key, size_t klen,
                     const void *val, size_t vlen, shmkv_kind kind,
                     void *buf, size_t cap, size_t *outlen,
                     shmkv_kind *outkind, int *loaded);

/**
 * Store a value and return the one it replaced.
 * @param loaded receives 1 when there was a previous value (copied to buf).
 * @return 0; SHMKV_EBUFSIZE when the previous value does not fit (nothing
 *   is stored, *outlen says what is needed); errors as set.
 */
SHMKV_API int shmkv_swap(shmkv_db *db, const void *key, size_t klen,
               const void *val, size_t vlen, shmkv_kind kind,
               void *buf, size_t cap, size_t *outlen,
               shmkv_kind *outkind, int *loaded);

/**
 * Delete only if the stored bytes equal (expect, elen).
 * @param deleted receives 1 when deleted.
 */
SHMKV_API int shmkv_compare_and_delete(shmkv_db *db, const void *key, size_t klen,
                             const void *expect, size_t elen, int *deleted);

/* ------------------------------------------------------------------ */
/* Key index: listing and sampling                                     */

/**
 * Called once per listed key, in key order. Pointers are valid only during
 * the call. Return 0 to go on, non-zero to stop (shmkv_list returns it).
 */
typedef int (*shmkv_list_fn)(void *ctx, const void *key, size_t klen,
                             const void *val, size_t vlen, shmkv_kind kind);

/** What shmkv_list() hands to its callback. */
#define SHMKV_LIST_KEYS_ONLY 0x01u /**< val is NULL and vlen 0 */

/**
 * Visit the keys that start with prefix, in key order, at most limit of
 * them (0: no limit). With key tracking this costs O(log n + k); without,
 * a scan of every segment plus a sort of the matches. Keys written while
 * the listing runs may or may not be seen; each visited (key, value) pair
 * was current at one moment.
 * @return 0; the callback's non-zero return; -ENOMEM.
 */
SHMKV_API int shmkv_list(shmkv_db *db, const void *prefix, size_t plen, uint64_t limit,
               unsigned flags, shmkv_list_fn fn, void *ctx);

/**
 * Copy out one key chosen uniformly among those that start with prefix
 * (plen 0: among all keys).
 * @param buf,cap  destination for the key; klen receives its length.
 * @return 0; SHMKV_ENOTFOUND when no key matches; SHMKV_EBUFSIZE.
 * Calling again after SHMKV_EBUFSIZE draws a *new* key, so retrying with a
 * bigger buffer would favour short keys: pass a buffer of SHMKV_KEY_MAX
 * bytes to keep the draw uniform.
 * With key tracking: O(1) without a prefix, O(log n) with one. Without:
 * random draws over all keys until one has the prefix (O(1) expected
 * without a prefix, about n / matches draws with one), falling back to
 * two passes over the segments when 128 draws find no match.
 */
SHMKV_API int shmkv_random_key(shmkv_db *db, const void *prefix, size_t plen,
                     void *buf, size_t cap, size_t *klen);

/**
 * Turn key tracking on for the store, as opening it with SHMKV_TRACK_ON
 * does: every process using it keeps the index from its next write on.
 * A no-op returning 0 when tracking is already on.
 * @return 0; SHMKV_EREADONLY; -ENOSPC; SHMKV_EFULL; -ENOMEM.
 * Takes every segment lock and builds the index: O(n log n) once (about
 * 0.6 s for a million keys), during which writers wait. Ordered scans and
 * counts are O(n) per call without the index (a full scan of a million
 * keys in pages of 1,000: about 90 s) and O(log n + page) with it.
 */
SHMKV_API int shmkv_tracking_enable(shmkv_db *db);

/**
 * Rebuild the key index from the hash table (a no-op returning 0 without
 * key tracking, through any handle). Takes every segment lock, so it stops
 * writers for O(n).
 * @return 0; SHMKV_EREADONLY through a read-only handle of a tracked store;
 *   the errors of the locks (SHMKV_ETIMEDOUT) and of allocation.
 */
SHMKV_API int shmkv_rebuild_index(shmkv_db *db);

/* ------------------------------------------------------------------ */
/* Batches: many keys in one call                                      */

/** One entry of a batch. */
typedef struct shmkv_item {
    const void *key;  /**< in: the key */
    size_t klen;      /**< in: its length */
    const void *val;  /**< set_many: in; get_many: out, points into the caller's buffer */
    size_t vlen;      /**< set_many: in; get_many: out */
    shmkv_kind kind;  /**< set_many: in; get_many: out */
    int rc;           /**< out. get_many: 0 or SHMKV_ENOTFOUND;
                           delete_many: 1 when the key existed, else 0 */
} shmkv_item;

/**
 * Read many keys as of one instant.
 * @param items  n entries; key and klen are read, val, vlen, kind and rc
 *               are filled in. A key may appear more than once.
 * @param buf,cap  where the values are copied, one after the other; each
 *               found entry's val points into buf.
 * @param need   receives the bytes the values take (also on
 *               SHMKV_EBUFSIZE); may be NULL.
 * @param bad    receives the index of the first invalid key; may be NULL.
 * @return 0 (each entry's rc says whether it was found); SHMKV_EKEYSIZE or
 *   SHMKV_EINVAL for an invalid entry (*bad says which; nothing read);
 *   SHMKV_EBUFSIZE when the values do not fit (call again with *need
 *   bytes: the values may have changed meanwhile); -ENOMEM.
 * Cost: O(n) to group the keys by segment (O(n log n) when many share a
 * segment), then one probe each. The keys are read without locks, and kept
 * only if no writer entered any of their segments meanwhile (the same check
 * as shmkv_get, over all the segments at once); after 4 tries, under all
 * their segment locks, taken in increasing order. Either way no process's
 * batch or single-key write is seen half done: the result is the store at
 * one instant.
 * A read-only handle that maps the store read-only (see SHMKV_RDONLY) has
 * no lock to fall back on: it reads again until every involved segment held
 * still for a whole attempt, or was left by a holder that died (read as the
 * repair will leave it: a batch that committed counts as done), and returns
 * SHMKV_ETIMEDOUT when a live writer keeps one of them busy for longer than
 * the lock timeout. Same guarantee.
 */
SHMKV_API int shmkv_get_many(shmkv_db *db, shmkv_item *items, size_t n,
                   void *buf, size_t cap, size_t *need, size_t *bad);

/**
 * Store many keys, all or none.
 * @param items  n entries (key, klen, val, vlen, kind); rc is unused. When
 *               a key appears more than once the last entry wins.
 * @param bad    receives the index of the first invalid entry; may be NULL.
 * @return 0; SHMKV_EKEYSIZE, SHMKV_EVALSIZE or SHMKV_EINVAL (bad pointer or
 *   kind) for an invalid entry, *bad saying which; SHMKV_EREADONLY;
 *   -ENOSPC; SHMKV_EFULL; -ENOMEM. Every entry is validated before anything
 *   is written, and on any error the store is unchanged (its free space
 *   too: as many keys fit after a set_many refused as full as before it).
 * Atomic for every process: the segment locks of all the keys are taken in
 * increasing order and held while the new entries are written and
 * published, so no reader (with or without the lock, in any process) sees
 * some keys changed and not others. A process killed inside the call
 * leaves all of the batch or none of it: the batch commits with one store
 * to a word of its lowest segment, and the repair of each segment rolls
 * its part forward or drops it (see docs/design.md, "Batches").
 * Cost: O(n log n + total bytes), with every involved segment locked for
 * the write.
 */
SHMKV_API int shmkv_set_many(shmkv_db *db, const shmkv_item *items, size_t n, size_t *bad);

/**
 * Delete many keys, all or none (same guarantees as shmkv_set_many()).
 * @param items    n entries (key, klen); each rc receives 1 if the key
 *                 existed, else 0.
 * @param deleted  receives how many keys were deleted; may be NULL.
 * @param bad      receives the index of the first invalid key; may be NULL.
 * @return 0; SHMKV_EKEYSIZE or SHMKV_EINVAL with *bad; SHMKV_EREADONLY;
 *   -ENOSPC, SHMKV_EFULL (the batch's intent record needs a little room:
 *   24 bytes plus 16 per key deleted, in each segment the batch touches;
 *   only a store filled to its last byte there lacks it); -ENOMEM. A batch
 *   that fails changes nothing, the store's free space included.
 *   shmkv_delete() and shmkv_clear() need no room at all.
 */
SHMKV_API int shmkv_delete_many(shmkv_db *db, shmkv_item *items, size_t n,
                      uint64_t *deleted, size_t *bad);

/**
 * Delete the keys that start with prefix (plen 0: every key), at most
 * limit of them (0: no limit), in one atomic batch. With a limit and key
 * tracking the first keys in key order go; without tracking, which
 * matching keys go is unspecified.
 * @param deleted receives how many were deleted; may be NULL.
 * @return 0; SHMKV_EREADONLY; SHMKV_EINVAL; -ENOSPC, SHMKV_EFULL (as for
 *   shmkv_delete_many(): the intent records need a little room); -ENOMEM.
 *   On failure nothing is deleted and the free space is as it was.
 * Takes every segment lock (in order) for the whole call, so it is atomic
 * like shmkv_delete_many() and stops writers meanwhile: O(log n + k) to
 * find the keys with tracking, O(n) without, plus O(k) to delete them.
 */
SHMKV_API int shmkv_delete_prefix(shmkv_db *db, const void *prefix, size_t plen,
                        uint64_t limit, uint64_t *deleted);

/* ------------------------------------------------------------------ */
/* Ordered scan, count and sampling                                    */

/**
 * Visit, in key order, the keys that start with prefix and sort strictly
 * after `after` (alen 0: from the first), at most limit of them (0: no
 * limit). Paging: pass the last key a page returned as `after` of the
 * next; a key that exists for the whole scan is returned exactly once,
 * a key written or deleted meanwhile at most once.
 * @param flags  SHMKV_LIST_KEYS_ONLY, or 0 for values too.
 * @return 0; the callback's non-zero return; SHMKV_EINVAL; SHMKV_EKEYSIZE
 *   (after longer than SHMKV_KEY_MAX); -ENOMEM.
 * Cost: with key tracking O(log n + page) (plus one segment lock per value
 * when values are asked for); without, every page reads every key (one
 * segment lock at a time) and keeps the limit smallest after `after`:
 * O(n + matches log page). Each visited pair was current at one moment.
 * A read-only handle on a read-only mapping cannot use the index (it takes
 * the index lock): it reads the tables like an untracked store, copying
 * each segment's matches out without its lock, as of one moment (checked by
 * the segment's seq, as shmkv_get does), so the same guarantees hold at the
 * untracked cost, plus one segment's matches in memory at a time; it may
 * also return SHMKV_ETIMEDOUT (a live writer held a segment for longer than
 * the lock timeout).
 */
SHMKV_API int shmkv_scan(shmkv_db *db, const void *prefix, size_t plen,
               const void *after, size_t alen, uint64_t limit, unsigned flags,
               shmkv_list_fn fn, void *ctx);

/**
 * Count the keys that start with prefix (plen 0: all keys).
 * @return 0; SHMKV_EINVAL.
 * Cost: with key tracking O(log n) under the index lock (two ranks);
 * without, O(n), one segment lock at a time (so concurrent writes may or
 * may not be counted). A read-only mapping counts the tables without locks,
 * each segment as of one moment: O(n) (O(segments) for plen 0), and may
 * return SHMKV_ETIMEDOUT like shmkv_scan().
 */
SHMKV_API int shmkv_count(shmkv_db *db, const void *prefix, size_t plen, uint64_t *count);

/**
 * Draw count keys among those that start with prefix, uniformly, and hand
 * each to fn (val NULL). unique 0: with replacement (count draws, repeats
 * possible); unique 1: without (count distinct keys, or every matching key
 * when fewer match, in no particular order).
 * @return 0 (also when no key matches: fn is not called); the callback's
 *   non-zero return; SHMKV_EINVAL; -ENOMEM.
 * Cost: with key tracking O(count log n) under the index lock; without,
 * with replacement count times the cost of shmkv_random_key(), without
 * replacement one pass over every key. The callback runs with no lock held.
 * A read-only mapping cannot use the index: it costs what an untracked
 * store does (each segment copied out without its lock, as of one moment;
 * uniform all the same), and may return SHMKV_ETIMEDOUT like shmkv_scan().
 */
SHMKV_API int shmkv_random_keys(shmkv_db *db, const void *prefix, size_t plen, uint64_t count,
                      int unique, shmkv_list_fn fn, void *ctx);

/* ------------------------------------------------------------------ */
/* Claims: leases on keys, shared by every process                     */

/** Longest claim owner, in bytes (a label for diagnostics). */
#define SHMKV_OWNER_MAX        256u
/** Lease length when shmkv_lease.ttl_ms is 0: 30 s. */
#define SHMKV_TTL_DEFAULT_MS   30000u
/** Longest lease: 24 h. */
#define SHMKV_TTL_MAX_MS       86400000u

/** What a claim asks for. Zero-initialise: every zero field is a default. */
typedef struct shmkv_lease {
    const void *owner; /**< label kept with the lease (may be NULL) */
    size_t olen;       /**< its length, at most SHMKV_OWNER_MAX */
    uint64_t ttl_ms;   /**< lease length in ms; 0: SHMKV_TTL_DEFAULT_MS; at most SHMKV_TTL_MAX_MS */
} shmkv_lease;

/** A live claim, as the claim calls hand it out. */
typedef struct shmkv_claim {
    uint64_t token;      /**< fencing token: unique in the store, and larger than every
                              token the store issued before it (never 0; a store's
                              first one is random, below 2^52) */
    int64_t expires_ms;  /**< when the lease ends, in Unix ms by this host's clock now */
    uint64_t ttl_ms;     /**< lease time left, in ms */
} shmkv_claim;

/*
 * A claim is a lease on one key: while it is live, no other claim on the
 * key succeeds, in any process, and shmkv_claim_random() and
 * shmkv_pop_random() pass the key by. Other calls ignore claims: get, set
 * and the rest read and write a claimed key as any other (a set keeps the
 * claim), and deleting the key ends its claim. A lease ends when it is
 * released, completed, or its time runs out; the lease clock is
 * CLOCK_BOOTTIME, which every process of the host shares, and a disk store
 * reopened after a reboot finds every lease of the earlier boot ended.
 * Each claim gets a new token; release, complete and renew take it and
 * refuse (SHMKV_ESTALE) any token but that of the key's live claim, so a
 * holder whose lease ran out, even one that was then taken over, cannot
 * end or extend anybody's claim.
 *
 * Every call below changes one key under its segment lock (and with key
 * tracking the index's count of claimable keys under the index lock) and
 * publishes with one store, so a process killed inside one leaves the
 * whole step or none of it. A holder killed while holding leases loses
 * nothing: its keys are claimable again once the leases run out.
 *
 * The value buffers work as in shmkv_get(): *vlen receives the value's
 * length; on SHMKV_EBUFSIZE nothing is claimed or removed. With vbuf NULL
 * the value is not copied (vlen and kind, each may be NULL, are still
 * filled in).
 */

/**
 * Claim one key.
 * @return 0 with *out; SHMKV_ENOTFOUND (no such key); SHMKV_EHELD (another
 *   live claim holds it); SHMKV_EBUFSIZE; SHMKV_EKEYSIZE; SHMKV_EINVAL (a
 *   lease option out of range); SHMKV_EREADONLY; SHMKV_EFULL, -ENOSPC.
 * Cost: O(1 + value bytes), plus O(log n) under the index lock with key
 * tracking.
 */
SHMKV_API int shmkv_claim_key(shmkv_db *db, const void *key, size_t klen, const shmkv_lease *lease,
                              shmkv_claim *out, void *vbuf, size_t cap, size_t *vlen,
                              shmkv_kind *kind);

/**
 * Claim one key drawn among the claimable keys that start with prefix
 * (plen 0: all keys); a key whose lease ran out is claimable.
 * @param kbuf,kcap,klen  receives the key (pass SHMKV_KEY_MAX bytes).
 * @return 0; SHMKV_ENOTFOUND when no key is claimable; SHMKV_EBUFSIZE (for
 *   the key or the value: nothing claimed; *klen and *vlen say what is
 *   needed); the other codes of shmkv_claim_key().
 * Cost: with key tracking O(log n) under the index lock, whatever share of
 * the keys is claimed: the index counts the claimable keys below each of
 * its nodes, and keeps the earliest lease end below each, so leases that
 * ran out are found and counted claimable again without a sweep (O(log n)
 * each, once per lease, by the first draw after they end). Uniform among
 * the claimable keys of the prefix. Without tracking: random draws under
 * one segment lock at a time (O(1) expected when most matching keys are
 * claimable), then two passes over every segment: O(n); SHMKV_ENOTFOUND
 * only after a count under every segment lock at once found nothing.
 */
SHMKV_API int shmkv_claim_random(shmkv_db *db, const void *prefix, size_t plen,
                                 const shmkv_lease *lease, void *kbuf, size_t kcap, size_t *klen,
                                 shmkv_claim *out, void *vbuf, size_t cap, size_t *vlen,
                                 shmkv_kind *kind);

/**
 * Remove and return one key drawn among the claimable keys with the prefix
 * (keys under a live claim stay). Same costs and codes as
 * shmkv_claim_random().
 */
SHMKV_API int shmkv_pop_random(shmkv_db *db, const void *prefix, size_t plen, void *kbuf,
                               size_t kcap, size_t *klen, void *vbuf, size_t cap, size_t *vlen,
                               shmkv_kind *kind);

/**
 * End the live claim `token` on key and make the key claimable again.
 * @return 0; SHMKV_ESTALE (no live claim with that token); SHMKV_EKEYSIZE;
 *   SHMKV_EINVAL; SHMKV_EREADONLY; SHMKV_EFULL, -ENOSPC. O(1 + value
 *   bytes), plus O(log n) with key tracking.
 */
SHMKV_API int shmkv_claim_release(shmkv_db *db, const void *key, size_t klen, uint64_t token);

/**
 * End the live claim `token` on key as done: delete_key 1 removes the key
 * with it (a used-up item), 0 keeps the key, claimable again.
 * @return as shmkv_claim_release().
 */
SHMKV_API int shmkv_claim_complete(shmkv_db *db, const void *key, size_t klen, uint64_t token,
                                   int delete_key);

/**
 * Extend the live claim `token` on key: it now ends lease->ttl_ms from now
 * (the owner is kept; lease may be NULL for the default length).
 * @return 0 with *out (same token); the codes of shmkv_claim_release().
 */
SHMKV_API int shmkv_claim_renew(shmkv_db *db, const void *key, size_t klen, uint64_t token,
                                const shmkv_lease *lease, shmkv_claim *out);

/**
 * Read the claim on key, if one is live.
 * @param owner,ocap,olen  receives its owner label (may be NULL, 0, NULL).
 * @return 0 with *out; SHMKV_ENOTFOUND (no such key); SHMKV_ESTALE (the key
 *   is not claimed, or its lease ran out); SHMKV_EBUFSIZE for the owner;
 *   SHMKV_EREADONLY when this process maps the store read-only (only
 *   read-only handles, see SHMKV_RDONLY): such a mapping cannot take the
 *   segment lock this reads under (shmkv-dump shows claims instead).
 */
SHMKV_API int shmkv_claim_get(shmkv_db *db, const void *key, size_t klen, shmkv_claim *out,
                              void *owner, size_t ocap, size_t *olen);

/**
 * Count the claims on keys that start with prefix: live ones and those
 * whose lease ran out (not yet claimed again). O(n), one segment lock at a
 * time. @return 0; SHMKV_EINVAL; SHMKV_EREADONLY on a read-only mapping
 * (as shmkv_claim_get()).
 */
SHMKV_API int shmkv_claim_count(shmkv_db *db, const void *prefix, size_t plen, uint64_t *live,
                                uint64_t *expired);

/* ------------------------------------------------------------------ */
/* Introspection                                                       */

/** Fill *info. @return 0. */
SHMKV_API int shmkv_stat(shmkv_db *db, shmkv_info *info);

/**
 * Check the store's integrity, as SQLite's integrity_check does: the
 * header, the chunks and blocks of the region, every allocator's counts,
 * every segment's table and entries (each key in the segment and slot its
 * hash names, reachable, counted), and the key index when it is current
 * (its tree's order and counts, every key live in its table, its key
 * array). Takes every lock, like shmkv_rebuild_index(): writers wait for
 * O(n) (about as long as a rebuild of the index). It repairs nothing
 * beyond what taking the locks repairs (a dead holder's half-done work).
 * @param problems  receives the number of problems found (may be NULL)
 * @param msg       receives the first problem, NUL-terminated and cut to
 *                  cap bytes, or "" (may be NULL)
 * @return 0 when sound; SHMKV_ECORRUPT when problems were found;
 *   SHMKV_EREADONLY (a read-only handle cannot take the locks: use
 *   shmkv-dump --check); SHMKV_EINVAL; SHMKV_ETIMEDOUT or SHMKV_ELOCK
 *   as for any call that locks; -ENOMEM.
 */
SHMKV_API int shmkv_check(shmkv_db *db, uint64_t *problems, char *msg, size_t cap);

/* ------------------------------------------------------------------ */
/* Backup and restore                                                  */

/** shmkv_backup() flag: copy without stopping writers (best effort). */
#define SHMKV_BACKUP_CONCURRENT 0x01u

/** What shmkv_backup() reports. */
typedef struct shmkv_backup_info {
    uint64_t entries;  /**< keys in the backup */
    uint64_t bytes;    /**< size of the backup file */
    uint64_t pause_ns; /**< how long writers were stopped (0 for a best-effort copy) */
    int best_effort;   /**< 1 when the copy was taken while writers went on */
} shmkv_backup_info;

/** What shmkv_restore() reports. */
typedef struct shmkv_restore_info {
    uint64_t entries; /**< keys in the backup (loaded, when it returns 0) */
    uint64_t bytes;   /**< their keys' and values' bytes */
} shmkv_restore_info;

/**
 * Write a backup of the whole store to path: a disk-store image (see
 * docs/format.md, "Backups") that shmkv_open(), shmkv_restore() and
 * shmkv-dump read as they read any store.
 * Default: one consistent moment. Every segment lock, the index lock and
 * the growth lock are held while the region's bytes are copied to a
 * temporary file next to path (writers of every process wait for that
 * copy, pause_ns); the copy is then fixed up (lock words reset, attach
 * table emptied, marked clean), fsynced and renamed over path.
 * SHMKV_BACKUP_CONCURRENT: writers are never stopped all at once. A new
 * store with this one's options is made at the temporary path and filled
 * one segment at a time, each segment's entries copied out under its own
 * lock (pause_ns: the longest of those holds). Each segment is as of one
 * moment, the whole is not: writes made meanwhile may or may not be there,
 * a batch across segments in part. Costs about a set_many() of every entry.
 * @return 0; SHMKV_EINVAL; SHMKV_EREADONLY; -ENOSPC and other -errno of
 *   the file system (no file is left at path, nor a temporary one, and
 *   the store is not changed); the errors of the locks (SHMKV_ETIMEDOUT).
 *   A process killed inside the call leaves path as it was and may leave
 *   a file path.tmp.PID.N behind, which the next backup to path removes
 *   (once no process PID exists). A disk store backed up onto its own
 *   file writes nothing (its file is what a backup would hold once its
 *   processes close it) and reports its size.
 */
SHMKV_API int shmkv_backup(shmkv_db *db, const char *path, unsigned flags, shmkv_backup_info *out);

/**
 * Replace the store's contents with those of a backup (or any disk
 * store's file). The backup is opened as a store (the checks of any open:
 * SHMKV_ENOTSTORE, SHMKV_EVERSION, SHMKV_EABI, SHMKV_ECORRUPT for a
 * truncated file) and checked with shmkv_check(); its entries are counted
 * and held against max_entries and max_bytes (keys' plus values' bytes;
 * 0: no limit), and only then is this store cleared and loaded, in
 * batches of shmkv_set_many().
 * @return 0; the errors above and SHMKV_EFULL when a guard refuses (out
 *   says the backup's counts): in all of these the store is unchanged.
 *   An error while loading (-ENOSPC, SHMKV_EFULL of the reserve) leaves
 *   the store cleared and holding the batches loaded before it. A disk
 *   store restored from its own file is left as it is.
 */
SHMKV_API int shmkv_restore(shmkv_db *db, const char *path, uint64_t max_entries,
                            uint64_t max_bytes, shmkv_restore_info *out);

/** Message for any code this library returns (including -errno). */
SHMKV_API const char *shmkv_strerror(int err);

/** "MAJOR.MINOR.PATCH" */
SHMKV_API const char *shmkv_version(void);

#ifdef __cplusplus
}
#endif
#endif /* SHMKV_H */
