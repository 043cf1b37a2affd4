/*
 * integrity.h - what the three files of shmkv_check share: the state of one
 * check and the helpers that record problems and block references.
 *   integrity_walk.c   the problem log, the chunk and block walk, the
 *                      allocators' counts and free lists
 *   integrity_index.c  the key index: tree, counts, key array
 *   integrity.c        the segments' tables and entries, and the call
 */
#ifndef SHMKV_INTEGRITY_H
#define SHMKV_INTEGRITY_H

#include "internal.h"

typedef struct shmkv__ick {
    shmkv__map *m;
    const shmkv__hdr *h;
    shmkv__view v; /* [0, top) */
    uint64_t problems;
    char *msg;
    size_t cap;
    /* blocks found by the walk, in region order, and their owners */
    uint64_t *blk;
    uint32_t *blk_owner;
    uint8_t *blk_ref;
    size_t nb, capb;
    bool tiled;
    /* per owner slot: nseg segments, then the index */
    uint64_t *nchunks, *chunk_bytes, *used_bytes;
    uint64_t pool;
    uint64_t live_keys;
    bool tables_ok; /* no problem in any table: lookups in them are safe */
    const unsigned char *last_key;
    uint32_t last_klen;
    /* claims: the lease clock when the check began, the live leases the
     * tables hold, and those of them the index counts */
    uint64_t now;
    uint64_t live_leases;
    uint64_t counted_live;
} shmkv__ick;
/* Record a problem; the first one's text goes to the caller's buffer. */
void shmkv__ick_problem(shmkv__ick *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The words for a format validator's SHMKV__F_* fault. */
const char *shmkv__ick_fault_name(int f);
/* A reference to a block of owner: it must be a walked block of that
 * owner, referenced once. */
bool shmkv__ick_block_ref(shmkv__ick *c, uint64_t payload, uint32_t owner, const char *what, uint32_t seg);
/* Index of the walked block whose payload is at payload, or -1. */
long shmkv__ick_block_index(const shmkv__ick *c, uint64_t payload);
/* The counters' slot of an owner: segments, then the index; UINT32_MAX for
 * anything else. */
uint32_t shmkv__ick_owner_slot(const shmkv__ick *c, uint32_t owner);
/* Walk the chunks and blocks of [data_off, top), recording every block. */
int shmkv__ick_walk_region(shmkv__ick *c);
/* An allocator's counts against the walk / its free lists. */
void shmkv__ick_check_alloc(shmkv__ick *c, uint32_t slot, const shmkv__alloc *a, const char *name,
                            uint32_t seg);
void shmkv__ick_check_free_lists(shmkv__ick *c, const shmkv__alloc *a, uint32_t owner,
                                 const char *name, uint32_t seg);
/* The key index, when it is current. */
void shmkv__ick_check_index(shmkv__ick *c);

#endif /* SHMKV_INTEGRITY_H */
