/*
 * alloc.c - per-owner block allocator inside the region.
 *
 * Each owner (a segment, or the index) carves fixed-class blocks out of its
 * own chunks and keeps one free list per class. Nothing here is made
 * crash-safe step by step: a dead owner's state is thrown away and rebuilt
 * by walking its chunks (shmkv__alloc_rebuild), which is why every block
 * carries its size and every chunk its owner.
 *
 * The index is the exception (see shmkv__ulog): during an index update
 * every write below to memory outside the allocator state is recorded with
 * SHMKV__UNDO first, so that an update cut short can be rolled back
 * without a walk. A change here that writes region memory must do the same.
 *
 * Chunks an owner no longer needs (a freed big block's, all of an owner's
 * once it holds no block, all of them on clear) go back to a free pool
 * shared by every owner: chunks whose owner is SHMKV__OWNER_FREE. The pool
 * has no list: it is found by walking the chunk headers under the growth
 * lock, where neighbouring free chunks are merged and a large one split.
 * Chunk sizes and owners change only under the growth lock, and every walk
 * of the chunk headers holds it, so no walk can meet a header that is being
 * rewritten. Each change is one store that leaves the chunks tiling the
 * region, and the owner changes last, so a process killed in between
 * leaves at worst pool_bytes off (recounted by the next growth-lock holder)
 * or an empty chunk with its old owner. The pool and growth are grow.c's.
 */
#include "internal.h"

#include <errno.h>
#include <stddef.h>

static inline shmkv__chunk *chunk_at(shmkv__map *m, uint64_t off)
{
    return (shmkv__chunk *)SHMKV__P(m, off);
}

/* The owner id an allocator state belongs to: the index's, or the id of
 * the segment it is embedded in. */
static uint32_t owner_of(shmkv__map *m, shmkv__alloc *a)
{
    if (a == &shmkv__index_of(m)->alloc)
        return SHMKV__OWNER_INDEX;
    return ((shmkv__seg *)(void *)((char *)a - offsetof(shmkv__seg, alloc)))->id;
}

/* Look at up to `tries` spare chunks from *link on (all of them: -1) for
 * one with room for csz bytes, and take it off the list; *link is left
 * where the search stopped. */
static bool spare_take(shmkv__map *m, shmkv__alloc *a, uint64_t **link, int tries, uint64_t csz,
                       uint64_t *out)
{
    for (; **link && tries != 0; tries--) {
        shmkv__chunk *c = chunk_at(m, **link);
        if (c->size - c->used >= csz) {
            *out = **link;
            SHMKV__UNDO(m, a, *link, 8);
            **link = c->next;
            SHMKV__UNDO(m, a, &c->next, 8);
            c->next = 0;
            return true;
        }
        *link = &c->next;
    }
    return false;
}

/* Find a chunk with room for csz bytes: a spare one first, else a new one
 * from the region. Spares that are too small stay on the list. */
static int take_chunk(shmkv__map *m, shmkv__alloc *a, uint32_t owner,
                      uint64_t csz, uint64_t *out)
{
    /* A few spares only: a long list of small tails must not make every
     * new chunk a walk. */
    uint64_t *link = &a->spare;
    if (spare_take(m, a, &link, 8, csz, out))
        return 0;
    /* Chunks grow with the owner so that big owners need few of them, but
     * by 1/32 of what it holds: the last chunk's unused end is space held
     * for nothing (half a chunk on average: at a quarter, 12% of a store;
     * at 1/32, 1.6%), while a new chunk is one trip to the growth lock. */
    uint64_t size = a->chunk_bytes / 32;
    if (size < SHMKV__CHUNK_MIN)
        size = SHMKV__CHUNK_MIN;
    if (size > SHMKV__CHUNK_MAX)
        size = SHMKV__CHUNK_MAX;
    if (size < csz + SHMKV__CHUNK_HDR)
        size = csz + SHMKV__CHUNK_HDR;
    size = shmkv__page_up(size);
    int rc = shmkv__grow(m, owner, size, out);
    if (rc) {
        /* The store is full, or nearly: rather than refuse with room
         * left, a chunk just large enough (the reserve's or the disk's
         * last pages), else a spare further down the list. */
        uint64_t least = shmkv__page_up(csz + SHMKV__CHUNK_HDR);
        if (size > least && (rc == SHMKV_EFULL || rc == -ENOSPC) &&
            shmkv__grow(m, owner, least, out) == 0)
            size = least;
        else
            return spare_take(m, a, &link, -1, csz, out) ? 0 : rc;
    }
    if (owner == SHMKV__OWNER_INDEX)
        SHMKV__HOOK("alloc.chunk.index"); /* owned, not yet counted */
    a->nchunks++;
    a->chunk_bytes += size;
    return 0;
}

/* A block of more than SHMKV__BIG_MIN bytes gets a chunk of its own, sized
 * to fit, whatever its size: the key array and a segment's table grow past
 * every size class (2^32 keys take 32 GiB of key array), and when such a
 * block is freed its whole chunk is empty again, usable by any owner for
 * blocks of any class. */
static int alloc_big(shmkv__map *m, shmkv__alloc *a, uint32_t owner, uint64_t need,
                     uint64_t *off)
{
    uint64_t size = need + SHMKV__CHUNK_HDR;
    if (size < need || size > m->reserve)
        return SHMKV_EFULL;
    size = shmkv__page_up(size);
    uint64_t coff = 0;
    /* An empty spare chunk that fits (a big block freed earlier, most
     * likely) is taken whole rather than growing the region. */
    uint64_t *link = &a->spare;
    for (int tries = 0; *link && tries < 8; tries++) {
        shmkv__chunk *s = chunk_at(m, *link);
        if (s->used == SHMKV__CHUNK_HDR && s->size >= size && s->size / 2 <= size) {
            coff = *link;
            SHMKV__UNDO(m, a, link, 8);
            *link = s->next;
            SHMKV__UNDO(m, a, &s->next, 8);
            s->next = 0;
            break;
        }
        link = &s->next;
    }
    if (!coff) {
        int rc = shmkv__grow(m, owner, size, &coff);
        if (rc)
            return rc;
        a->nchunks++;
        a->chunk_bytes += size;
    }
    shmkv__chunk *c = chunk_at(m, coff);
    shmkv__block *b = (shmkv__block *)SHMKV__P(m, coff + SHMKV__CHUNK_HDR);
    SHMKV__UNDO(m, a, b, SHMKV__BLOCK_HDR);
    *b = (shmkv__block){ .size = 0, .cls = SHMKV__CLS_BIG, .flags = SHMKV__BF_USED };
    /* As for any block: the header exists before `used` covers it. */
    atomic_signal_fence(memory_order_release);
    SHMKV__HOOK("alloc.big.mid");
    SHMKV__UNDO(m, a, &c->used, 8);
    c->used = c->size;
    a->used_bytes += c->size - SHMKV__CHUNK_HDR;
    *off = coff + SHMKV__CHUNK_HDR + SHMKV__BLOCK_HDR;
    return 0;
}

uint64_t shmkv__block_bytes(shmkv__map *m, uint64_t payload)
{
    shmkv__block *b = shmkv__block_of(m, payload);
    if (b->cls != SHMKV__CLS_BIG)
        return b->size;
    uint64_t coff = payload - SHMKV__BLOCK_HDR - SHMKV__CHUNK_HDR;
    if (payload < SHMKV__BLOCK_HDR + SHMKV__CHUNK_HDR ||
        !shmkv__in_region(m, coff, SHMKV__CHUNK_HDR))
        return 0;
    shmkv__chunk *c = chunk_at(m, coff);
    if (c->magic != SHMKV__CHUNK_MAGIC || c->used != c->size ||
        c->size < SHMKV__CHUNK_HDR + SHMKV__BLOCK_HDR || !shmkv__in_region(m, coff, c->size))
        return 0;
    return c->size - SHMKV__CHUNK_HDR;
}

/* Take the first free block of class cls, whole. */
static void pop_free(shmkv__map *m, shmkv__alloc *a, uint32_t cls, uint64_t *off)
{
    uint64_t p = a->free_head[cls];
    shmkv__block *b = shmkv__block_of(m, p);
    /* header and link: the caller overwrites the link with data */
    SHMKV__UNDO(m, a, b, SHMKV__BLOCK_HDR + 8);
    a->free_head[cls] = *(uint64_t *)SHMKV__P(m, p);
    b->flags = SHMKV__BF_USED;
    b->kind = 0;
    a->used_bytes += shmkv__class_size(cls);
    *off = p;
}

int shmkv__alloc_block(shmkv__map *m, shmkv__alloc *a, uint32_t owner,
                       uint64_t len, uint64_t *off)
{
    uint64_t need = len + SHMKV__BLOCK_HDR;
    if (need < len || need > SHMKV__BIG_MIN)
        return alloc_big(m, a, owner, need, off);
    uint32_t cls = shmkv__class_of(need);
    uint64_t csz = shmkv__class_size(cls);

    if (a->free_head[cls]) {
        pop_free(m, a, cls, off);
        return 0;
    }

    shmkv__chunk *c = a->cur ? chunk_at(m, a->cur) : NULL;
    if (!c || c->size - c->used < csz) {
        uint64_t coff;
        int rc = take_chunk(m, a, owner, csz, &coff);
        if (rc) {
            /* No chunk for a block of this class (the store is full, or
             * the growth lock's holder is stopped and the wait timed out):
             * rather than refuse, a free block of a larger class serves,
             * whole (it keeps its class, and goes back to that class's
             * list when freed). On a full store this is what lets a write
             * through once a delete freed a block of another class: a
             * claim's release, say, whose copy of the entry is a class
             * below the claimed one. Only when none is free does the
             * caller get take_chunk's error. */
            for (uint32_t k = cls + 1; k < SHMKV__NCLASS; k++) {
                if (a->free_head[k]) {
                    pop_free(m, a, k, off);
                    return 0;
                }
            }
            return rc;
        }
        /* Keep the old chunk's tail usable for smaller blocks later. */
        if (c && c->size - c->used >= 256) {
            SHMKV__UNDO(m, a, &c->next, 8);
            c->next = a->spare;
            a->spare = a->cur;
        }
        a->cur = coff;
        c = chunk_at(m, coff);
    }
    uint64_t boff = a->cur + c->used;
    shmkv__block *b = (shmkv__block *)SHMKV__P(m, boff);
    b->size = (uint32_t)csz;
    b->cls = (uint8_t)cls;
    b->flags = SHMKV__BF_USED;
    b->kind = 0;
    /* The header must exist before `used` covers it: a recovery walk
     * trusts every block below `used`. */
    atomic_signal_fence(memory_order_release);
    SHMKV__HOOK("alloc.mid");
    if (owner == SHMKV__OWNER_INDEX)
        SHMKV__HOOK("alloc.mid.index");
    SHMKV__UNDO(m, a, &c->used, 8);
    c->used += csz;
    a->used_bytes += csz;
    *off = boff + SHMKV__BLOCK_HDR;
    return 0;
}

static void spare_push(shmkv__alloc *a, shmkv__chunk *c, uint64_t off);
static int release_all(shmkv__map *m, shmkv__alloc *a, uint32_t owner);
static void trim(shmkv__map *m, shmkv__alloc *a, uint32_t owner);
static void after_free(shmkv__map *m, shmkv__alloc *a, uint64_t bytes);

/* The index holds no block but its undo log, in more than one chunk. */
static bool only_log_left(shmkv__map *m, const shmkv__alloc *a, uint32_t owner)
{
    if (owner != SHMKV__OWNER_INDEX || a->nchunks < 2)
        return false;
    uint64_t lg = shmkv__index_of(m)->ulog;
    return lg && a->used_bytes == shmkv__block_of(m, lg)->size;
}

void shmkv__free_block(shmkv__map *m, shmkv__alloc *a, uint64_t payload)
{
    shmkv__block *b = shmkv__block_of(m, payload);
    uint64_t bytes;
    if (shmkv__undo_on && owner_of(m, a) == SHMKV__OWNER_INDEX) {
        /* Inside an undo-logged index update only writes that the log can
         * take back: the block (and a big block's chunk) becomes free for
         * this owner; chunks go to the pool at a later free or trim. */
        SHMKV__UNDO(m, a, b, SHMKV__BLOCK_HDR + 8);
        if (b->cls == SHMKV__CLS_BIG) {
            uint64_t coff = payload - SHMKV__BLOCK_HDR - SHMKV__CHUNK_HDR;
            shmkv__chunk *c = chunk_at(m, coff);
            SHMKV__UNDO(m, a, c, SHMKV__CHUNK_HDR);
            b->flags = 0;
            c->used = SHMKV__CHUNK_HDR;
            bytes = c->size - SHMKV__CHUNK_HDR;
            spare_push(a, c, coff);
        } else {
            b->flags = 0;
            *(uint64_t *)SHMKV__P(m, payload) = a->free_head[b->cls];
            a->free_head[b->cls] = payload;
            bytes = b->size;
        }
        a->used_bytes -= bytes;
        /* Counted now, trimmed by shmkv__alloc_tidy once the update is
         * committed and its log no longer has to take anything back. */
        if (m->freed)
            m->freed[SHMKV__HDR(m)->nseg] += (int64_t)bytes;
        return;
    }
    if (b->cls == SHMKV__CLS_BIG) {
        /* The chunk holds nothing else: it becomes an empty chunk again,
         * and goes to the pool for any owner and any size. Killed before
         * `used` drops, recovery sees an unmarked big block and empties the
         * chunk the same way. */
        uint64_t coff = payload - SHMKV__BLOCK_HDR - SHMKV__CHUNK_HDR;
        shmkv__chunk *c = chunk_at(m, coff);
        b->flags = 0;
        c->used = SHMKV__CHUNK_HDR;
        bytes = c->size - SHMKV__CHUNK_HDR;
        a->used_bytes -= bytes;
        if (shmkv__grow_lock(m) == 0) {
            a->nchunks--;
            a->chunk_bytes -= c->size;
            shmkv__pool_put(m, coff);
            shmkv__grow_unlock(m);
        } else {
            spare_push(a, c, coff);
        }
    } else {
        b->flags = 0;
        *(uint64_t *)SHMKV__P(m, payload) = a->free_head[b->cls];
        a->free_head[b->cls] = payload;
        bytes = b->size;
        a->used_bytes -= bytes;
    }
    after_free(m, a, bytes);
}

/* What follows a free: an owner left with no block gives its chunks back,
 * and one that freed much may be trimmed (bytes: just freed, or 0). */
static void after_free(shmkv__map *m, shmkv__alloc *a, uint64_t bytes)
{
    /* An owner left with no block in use gives all its chunks back, so
     * that a store whose keys were deleted takes new data of any size in
     * any segment. One last small chunk is kept: an owner emptied again
     * and again (one hot key in a segment) must not walk the chunks at
     * every delete. */
    uint32_t owner = owner_of(m, a);
    if (a->used_bytes == 0 && a->chunk_bytes > SHMKV__CHUNK_MIN) {
        (void)release_all(m, a, owner);
        return;
    }
    if (only_log_left(m, a, owner)) {
        /* The index's undo log is a block like any other, so an index
         * whose keys are all gone still holds one: without this it would
         * keep every chunk it ever filled (deleting keys frees their blobs
         * on free lists, and the trim below is starved by its penalty).
         * A trim keeps the log's chunk and gives back all the others. */
        trim(m, a, owner);
        if (m->freed)
            m->freed[SHMKV__HDR(m)->nseg] = 0;
        return;
    }
    /* An owner that still holds blocks may hold whole chunks of free ones
     * (the oldest keys of a queue, consumed): once this process freed half
     * of what the owner holds and half of it is free, trim it. */
    if (!m->freed)
        return;
    int64_t *f = &m->freed[owner == SHMKV__OWNER_INDEX ? SHMKV__HDR(m)->nseg : owner];
    *f += (int64_t)bytes;
    if (*f >= (int64_t)(a->chunk_bytes / 2) && a->nchunks > 1 &&
        a->used_bytes <= a->chunk_bytes / 2) {
        uint64_t held = a->chunk_bytes;
        trim(m, a, owner);
        /* Nothing given back (the free blocks are spread over chunks that
         * hold live ones, and updates keep freeing them): wait for four
         * times as much before walking again. */
        *f = a->chunk_bytes < held ? 0 : -4 * (int64_t)held;
    }
}

bool shmkv__alloc_wants_tidy(shmkv__map *m, const shmkv__alloc *a)
{
    uint32_t owner = owner_of(m, (shmkv__alloc *)a);
    if (a->used_bytes == 0 && a->chunk_bytes > SHMKV__CHUNK_MIN)
        return true;
    if (only_log_left(m, a, owner))
        return true;
    if (!m->freed)
        return false;
    int64_t f = m->freed[owner == SHMKV__OWNER_INDEX ? SHMKV__HDR(m)->nseg : owner];
    return f >= (int64_t)(a->chunk_bytes / 2) && a->nchunks > 1 && a->used_bytes <= a->chunk_bytes / 2;
}

void shmkv__alloc_tidy(shmkv__map *m, shmkv__alloc *a)
{
    after_free(m, a, 0);
}

void shmkv__alloc_trim(shmkv__map *m, shmkv__alloc *a)
{
    trim(m, a, owner_of(m, a));
}

static void state_forget(shmkv__alloc *a)
{
    memset(a->free_head, 0, sizeof a->free_head);
    a->cur = a->spare = 0;
    a->nchunks = a->chunk_bytes = a->used_bytes = 0;
}

static void spare_push(shmkv__alloc *a, shmkv__chunk *c, uint64_t off)
{
    c->next = 0;
    if (c->size - c->used >= 256) {
        c->next = a->spare;
        a->spare = off;
    }
}

void shmkv__alloc_adopt(shmkv__map *m, shmkv__alloc *a, uint64_t chunk_off)
{
    shmkv__chunk *c = chunk_at(m, chunk_off);
    a->nchunks++;
    a->chunk_bytes += c->size;
    c->used = SHMKV__CHUNK_HDR;
    spare_push(a, c, chunk_off);
}

/* Walk the chunks of the region that belong to owner. Chunk headers are
 * written before `top` is published and never change, so this is safe
 * while other owners grow the region. */
#define FOR_OWNED_CHUNK(m, owner, off, c)                                                    \
    for (uint64_t off = SHMKV__HDR(m)->data_off,                                             \
                  top_ = atomic_load_explicit(&SHMKV__HDR(m)->top, memory_order_acquire);   \
         off < top_; off += chunk_at(m, off)->size)                                          \
        for (shmkv__chunk *c = chunk_at(m, off); c; c = NULL)                                \
            if (shmkv__chunk_check(c, off, top_))                                            \
                return SHMKV_ECORRUPT;                                                       \
            else if (c->owner == (owner))

/* Rebuild owner's state from its chunks, taking the blocks whose flags
 * have `live` as in use: MARK after a crash (set from the table), USED for
 * a trim. */
static int rebuild_walk(shmkv__map *m, shmkv__alloc *a, uint32_t owner, uint8_t live)
{
    state_forget(a);
    FOR_OWNED_CHUNK(m, owner, off, c) {
        if (shmkv__chunk_used_check(c))
            return SHMKV_ECORRUPT;
        a->nchunks++;
        a->chunk_bytes += c->size;
        uint64_t live_end = SHMKV__CHUNK_HDR;
        for (uint64_t b = SHMKV__CHUNK_HDR, bs; b < c->used; b += bs) {
            shmkv__block *blk = (shmkv__block *)SHMKV__P(m, off + b);
            /* A big block is alone in its chunk; when unmarked the chunk
             * just empties (live_end stays at the header), never onto a
             * free list. */
            if (shmkv__block_walk_check(blk, b, c, &bs))
                return SHMKV_ECORRUPT;
            if (blk->flags & live)
                live_end = b + bs;
        }
        /* Unmarked blocks are garbage: freed ones, and ones a dead process
         * allocated but never published. The tail past the last live block
         * goes back to the chunk instead of onto free lists. */
        for (uint64_t b = SHMKV__CHUNK_HDR, bs; b < live_end; b += bs) {
            shmkv__block *blk = (shmkv__block *)SHMKV__P(m, off + b);
            bs = blk->cls == SHMKV__CLS_BIG ? c->used - b : blk->size;
            if (blk->flags & live) {
                blk->flags = SHMKV__BF_USED | (blk->flags & SHMKV__BF_LEASE);
                a->used_bytes += bs;
            } else {
                blk->flags = 0;
                *(uint64_t *)SHMKV__P(m, off + b + SHMKV__BLOCK_HDR) = a->free_head[blk->cls];
                a->free_head[blk->cls] = off + b + SHMKV__BLOCK_HDR;
            }
        }
        c->used = live_end;
        if (live_end == SHMKV__CHUNK_HDR) {
            /* Nothing live (a freed big block's chunk whose holder died
             * before giving it back, say): to the pool. */
            a->nchunks--;
            a->chunk_bytes -= c->size;
            shmkv__pool_put(m, off);
            continue;
        }
        spare_push(a, c, off);
    }
    return 0;
}

/* Chunk headers change only under the growth lock (pool merges and
 * splits), so every walk over them holds it. */
int shmkv__alloc_rebuild(shmkv__map *m, shmkv__alloc *a, uint32_t owner)
{
    int rc = shmkv__grow_lock(m);
    if (rc)
        return rc;
    rc = rebuild_walk(m, a, owner, SHMKV__BF_MARK);
    shmkv__grow_unlock(m);
    return rc;
}

/* Chunks whose blocks are all free go to the pool, the rest get fresh
 * free lists and their free tails back. Run by the owner's lock holder
 * after it freed a good part of what the owner holds, so the cost (a walk
 * of the owner's blocks) is paid once per that many freed bytes. A process
 * killed in here leaves the owner to its lock's repair, like any other
 * change to its allocator. */
static void trim(shmkv__map *m, shmkv__alloc *a, uint32_t owner)
{
    if (shmkv__grow_lock(m) != 0)
        return;
    SHMKV__HOOK("alloc.trim");
    if (owner == SHMKV__OWNER_INDEX)
        SHMKV__HOOK("alloc.trim.index");
    (void)rebuild_walk(m, a, owner, SHMKV__BF_USED);
    shmkv__grow_unlock(m);
}

static int release_walk(shmkv__map *m, shmkv__alloc *a, uint32_t owner)
{
    state_forget(a);
    FOR_OWNED_CHUNK(m, owner, off, c)
        shmkv__pool_put(m, off);
    return 0;
}

/* Every chunk of owner to the pool; its state starts empty. */
static int release_all(shmkv__map *m, shmkv__alloc *a, uint32_t owner)
{
    int rc = shmkv__grow_lock(m);
    if (rc)
        return rc;
    rc = release_walk(m, a, owner);
    shmkv__grow_unlock(m);
    return rc;
}

void shmkv__alloc_reset(shmkv__map *m, shmkv__alloc *a, uint32_t owner)
{
    /* A damaged chunk chain ends the walk early; what lies past it is
     * simply not reused. Without the growth lock (a lock that cannot be
     * taken) the chunks stay with the owner, forgotten: never reused, but
     * never handed out twice either. */
    if (release_all(m, a, owner) != 0)
        state_forget(a);
}
