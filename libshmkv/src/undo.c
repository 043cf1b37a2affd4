/*
 * undo.c - the recording half of the index's undo log (see shmkv__ulog).
 *
 * While an undo-logged index update runs on this thread, every write to
 * region memory on the index's behalf (tree nodes, the key array, the
 * allocator's block and chunk headers, chunks taken from the free pool)
 * first appends the bytes it is about to overwrite. It sits below the
 * allocator and the growth code, which record through it; starting,
 * committing and rolling back an update belong to the index
 * (index_repair.c).
 */
#include "internal.h"

_Thread_local bool shmkv__undo_on;

/* The update this thread has in progress (one at a time: the index lock
 * is held across it). saved[] keeps nodes already recorded whole. */
static _Thread_local struct {
    shmkv__map *m;
    shmkv__ulog *lg;
    uint64_t cap;
    uint64_t saved[48];
    int nsaved;
} U;

uint64_t shmkv__ulog_cap(shmkv__map *m, const shmkv__ulog *lg)
{
    const shmkv__block *b = shmkv__block_of(m, (uint64_t)((const unsigned char *)lg - m->base));
    return b->size - SHMKV__BLOCK_HDR - offsetof(shmkv__ulog, rec);
}

/* Append the current bytes of [p, p+len) as a record, then publish it:
 * the write it protects comes after, so a record the repair sees always
 * holds bytes from before the write. */
void shmkv__undo_save(const void *p, size_t len)
{
    shmkv__ulog *lg = U.lg;
    if (!U.m || lg->overflow)
        return;
    uint64_t used = atomic_load_explicit(&lg->used, memory_order_relaxed);
    uint64_t need = 16 + ((len + 7) & ~(size_t)7);
    if (need > U.cap - used) {
        /* Cannot record: the repair must not trust the log. */
        lg->overflow = 1;
        atomic_signal_fence(memory_order_seq_cst);
        return;
    }
    unsigned char *r = lg->rec + used;
    uint64_t off = (uint64_t)((const unsigned char *)p - U.m->base), l = len;
    memcpy(r, &off, 8);
    memcpy(r + 8, &l, 8);
    memcpy(r + 16, p, len);
    atomic_store_explicit(&lg->used, used + need, memory_order_release);
    atomic_signal_fence(memory_order_seq_cst);
}

/* Record a whole tree node before its first change in this update. */
void shmkv__undo_node(shmkv__map *m, uint64_t off)
{
    if (!U.m)
        return;
    for (int i = 0; i < U.nsaved; i++)
        if (U.saved[i] == off)
            return;
    if (U.nsaved < (int)(sizeof U.saved / sizeof U.saved[0]))
        U.saved[U.nsaved++] = off;
    shmkv__undo_save(SHMKV__P(m, off), sizeof(shmkv__bt_node));
}

void shmkv__undo_note(shmkv__map *m, const shmkv__alloc *a, const void *p, size_t len)
{
    if (U.m == m && a == &shmkv__index_of(m)->alloc)
        shmkv__undo_save(p, len);
}

void shmkv__undo_chunk(shmkv__map *m, uint64_t chunk_off)
{
    if (U.m == m)
        shmkv__undo_save(SHMKV__P(m, chunk_off), 0); /* a record of no bytes: a chunk */
}

void shmkv__undo_start(shmkv__map *m, shmkv__ulog *lg)
{
    U.m = m;
    U.lg = lg;
    U.cap = shmkv__ulog_cap(m, lg);
    U.nsaved = 0;
    shmkv__undo_on = true;
}

void shmkv__undo_stop(void)
{
    U.m = NULL;
    U.lg = NULL;
    shmkv__undo_on = false;
}

bool shmkv__undo_active(shmkv__map *m)
{
    return U.m == m;
}
