/*
 * batch.h - a batch of keys in flight, shared by the files of the
 * multi-key operations: batch_plan.c (grouping by segment, locking,
 * lookups), batch_get.c (get_many) and batch.c (the writes).
 */
#ifndef SHMKV_BATCH_H
#define SHMKV_BATCH_H

#include "internal.h"

_Static_assert(sizeof(shmkv__seg) == 960, "batch fields must stay inside the old tail padding");

#define B_WORD(gen, st) (((gen) << 2) | (st))
#define B_GEN(w) ((w) >> 2)
#define B_STATE(w) ((w) & 3u)

/* One key of a batch, as it goes from validation to publication. */
typedef struct bitem {
    size_t at;        /* caller's index */
    uint64_t h;
    uint32_t seg;
    bool skip;        /* a later entry has the same key (set) or an earlier one (delete) */
    bool found;
    uint64_t slot;    /* the key's slot, or the one claimed for its insert */
    uint64_t old;     /* entry payload replaced or deleted */
    uint64_t noff;    /* set: the new entry */
    const shmkv_item *src;
} bitem;

typedef struct batch {
    shmkv_db *db;
    shmkv__map *m;
    bitem *it;
    size_t n;
    uint32_t *segs;   /* distinct segments, increasing */
    size_t nsegs;
    size_t *first;    /* first item of segs[j] in it[] (nsegs + 1 entries) */
    uint64_t *otab;   /* per segment: the table a rehash replaced, kept until the commit */
    uint64_t *otombs; /* and its tombstone count, for a batch that fails */
    bool *rehashed;
    const uint32_t *lk; /* segments to lock, increasing: segs, or all of them */
    size_t nlk;
    bool set;
    bool track;
    bool index_locked;
    uint64_t gen;
} batch;

void shmkv__batch_free(batch *b);
/* Group the items by segment (then hash and key, then position) and mark the
 * duplicates: for a set the last entry of a key wins, for a delete the
 * first one acts. */
int shmkv__batch_plan(batch *b, const shmkv_item *items, size_t n, bool last_wins);
/* Take the batch's segment locks in increasing order, then (with key
 * tracking, when writing) the index lock. */
int shmkv__batch_lock(batch *b, bool writing);
void shmkv__batch_unlock(batch *b);
/* Look x's key up in table t (NULL: none) under its segment's lock. */
void shmkv__batch_lookup(shmkv__map *m, shmkv__table *t, bitem *x);
/* Every public call of the batch files starts here: a usable handle and
 * this call's lock wait. (A read-only map is also a read-only handle, so
 * the writes refuse it before they lock anything.) */
int shmkv__batch_check_db(shmkv_db *db);
int shmkv__batch_check_keys(const shmkv_item *items, size_t n, size_t *bad);

#endif /* SHMKV_BATCH_H */
