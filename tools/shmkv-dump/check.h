/*
 * check.h - what the files of --check share (tools/shmkv-dump):
 *   check.c         the driver: problems, one run, snapshots of a live
 *                   store, output; helpers for messages and owners
 *   check_region.c  header, locks, allocators, unreferenced blocks
 *   check_table.c   segments: tables and entries
 *   check_index.c   the key index: tree, key array, undo log, agreement
 *                   with the tables
 */
#ifndef SHMKV_DUMP_CHECK_H
#define SHMKV_DUMP_CHECK_H

#include "dump.h"

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
    uint64_t child; /* the claim end the index counts, 0: none */
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
    lclock clk;          /* the lease clock when the check began */
    uint64_t leases, leases_live; /* sound leases in the tables, live ones */
    uint64_t last_token; /* the last claim token issued: no lease has a later one */
    uint64_t lease_high; /* the latest lease end granted: no lease ends later */
} ck;

/* ---- helpers (check.c) ---------------------------------------------------- */

/* The owners' slot in ck.ow: segments, then the index; UINT32_MAX for
 * anything else. */
uint32_t owner_slot(const ck *c, uint32_t owner);
const char *owner_name(const ck *c, uint32_t slot, char *buf, size_t n);
/* A problem of an owner: pending (a repair will fix it) when the owner's
 * lock holder died or the store's next opener repairs it. */
void oprob(ck *c, uint32_t slot, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A key for a message: escaped, cut at 48 bytes. */
const char *kdesc(const unsigned char *k, size_t n, char *buf, size_t cap);
/* True when off lies where the walk could not go. */
bool unknown_at(const ck *c, uint64_t off);
const char *plural(uint64_t n);
uint64_t seg_base(const ck *c, uint32_t i);

/* ---- the checks, in the order a run makes them ------------------------------ */

/* check_region.c */
void check_header(ck *c);
/* LOCK_* of the robust mutex at moff; *tid its owner, *repairing when an
 * owner is making it consistent. */
int lock_state(const view *v, uint64_t moff, int *tid, bool *repairing);
void check_locks(ck *c);
void check_alloc(ck *c, uint32_t slot);
/* check_table.c; negative: out of memory */
int check_segment(ck *c, uint32_t i);
void check_duplicates(ck *c);
/* check_index.c; negative: out of memory */
int check_index(ck *c);
/* check_region.c, last: blocks nothing references, byte accounting */
void check_blocks(ck *c);

#endif /* SHMKV_DUMP_CHECK_H */
