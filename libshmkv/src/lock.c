/*
 * lock.c - robust process-shared mutexes, and the one place where a lock
 * whose owner died is repaired.
 *
 * Lock order (never the reverse): segment locks in ascending number, then
 * the index lock, then the growth lock. A lock and its critical section are
 * always inside one library call.
 */
#include "internal.h"

#include <errno.h>

void (*shmkv__test_hook)(const char *point);

int shmkv__mutex_init(pthread_mutex_t *mu)
{
    pthread_mutexattr_t at;
    int rc = pthread_mutexattr_init(&at);
    if (rc)
        return -rc;
    rc = pthread_mutexattr_setpshared(&at, PTHREAD_PROCESS_SHARED);
    if (!rc)
        rc = pthread_mutexattr_setrobust(&at, PTHREAD_MUTEX_ROBUST);
    if (!rc)
        rc = pthread_mutex_init(mu, &at);
    pthread_mutexattr_destroy(&at);
    return -rc;
}

/* Returns 0 (and *died) or a negative code. */
static int lock_robust(pthread_mutex_t *mu, bool *died)
{
    int rc = pthread_mutex_lock(mu);
    *died = false;
    if (rc == 0)
        return 0;
    if (rc == EOWNERDEAD) {
        *died = true;
        return 0;
    }
    return rc == ENOTRECOVERABLE ? SHMKV_ELOCK : -rc;
}

/* seq: even to odd (or, left odd by a dead holder, to the next odd value),
 * ordered before any change to the segment; odd to even after the last.
 *
 * GCC warns (-Wtsan) that ThreadSanitizer does not model fences. The fence
 * below only serves the readers that skip the lock, and those are not
 * instrumented under TSan (see table.c), so there is nothing for it to
 * model; the warning is silenced for this function alone. */
#if defined(__SANITIZE_THREAD__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wtsan"
#endif
static void seq_enter(shmkv__seg *s)
{
    uint32_t v = atomic_load_explicit(&s->seq, memory_order_relaxed);
    atomic_store_explicit(&s->seq, v + 1 + (v & 1), memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}
#if defined(__SANITIZE_THREAD__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC diagnostic pop
#endif

static void seq_leave(shmkv__seg *s)
{
    uint32_t v = atomic_load_explicit(&s->seq, memory_order_relaxed);
    atomic_store_explicit(&s->seq, v + 1, memory_order_release);
}

int shmkv__seg_lock(shmkv__map *m, shmkv__seg *s)
{
    bool died;
    int rc = lock_robust(&s->lock, &died);
    if (rc)
        return rc;
    seq_enter(s);
    if (!died)
        return 0;
    /* The dead owner may have been anywhere between allocating and
     * publishing; the repair must finish before anyone else sees the
     * segment, i.e. before the mutex is marked consistent. */
    atomic_fetch_add(&SHMKV__HDR(m)->recoveries, 1);
    rc = shmkv__seg_recover(m, s);
    pthread_mutex_consistent(&s->lock);
    if (rc) {
        shmkv__seg_unlock(s);
        return rc;
    }
    return 0;
}

void shmkv__seg_unlock(shmkv__seg *s)
{
    seq_leave(s);
    pthread_mutex_unlock(&s->lock);
}

int shmkv__idx_lock_raw(shmkv__map *m)
{
    shmkv__idx *ix = shmkv__idx_of(m);
    bool died;
    int rc = lock_robust(&ix->lock, &died);
    if (rc)
        return rc;
    if (died) {
        atomic_fetch_add(&SHMKV__HDR(m)->recoveries, 1);
        atomic_store(&ix->dirty, 1);
        pthread_mutex_consistent(&ix->lock);
    }
    return 0;
}

void shmkv__idx_unlock(shmkv__map *m)
{
    pthread_mutex_unlock(&shmkv__idx_of(m)->lock);
}

int shmkv__lock_all(shmkv__map *m)
{
    uint32_t n = SHMKV__HDR(m)->nseg;
    for (uint32_t i = 0; i < n; i++) {
        int rc = shmkv__seg_lock(m, shmkv__seg_at(m, i));
        if (rc) {
            while (i--)
                shmkv__seg_unlock(shmkv__seg_at(m, i));
            return rc;
        }
    }
    return 0;
}

void shmkv__unlock_all(shmkv__map *m)
{
    for (uint32_t i = SHMKV__HDR(m)->nseg; i--;)
        shmkv__seg_unlock(shmkv__seg_at(m, i));
}

/* Rebuild the index under every lock. The index is only ever repaired by
 * rebuilding it from the tables: a dead index owner may have left the tree
 * half split, and a rebuild is simpler to trust than a roll-back. */
int shmkv__idx_rebuild_all(shmkv__map *m)
{
    int rc = shmkv__lock_all(m);
    if (rc)
        return rc;
    rc = shmkv__idx_lock_raw(m);
    if (!rc) {
        rc = shmkv__idx_rebuild(m);
        shmkv__idx_unlock(m);
    }
    shmkv__unlock_all(m);
    return rc;
}

int shmkv__idx_lock(shmkv__map *m, shmkv__seg *held)
{
    int rc = shmkv__idx_lock_raw(m);
    if (rc) {
        if (held)
            shmkv__seg_unlock(held);
        return rc;
    }
    if (!atomic_load(&shmkv__idx_of(m)->dirty))
        return 0;
    /* Rebuilding needs every segment lock, which may not be taken while
     * holding the index lock or a higher segment: drop everything. */
    shmkv__idx_unlock(m);
    if (held)
        shmkv__seg_unlock(held);
    rc = shmkv__idx_rebuild_all(m);
    return rc ? rc : SHMKV__RESTART;
}

int shmkv__grow_lock(shmkv__map *m)
{
    bool died;
    pthread_mutex_t *mu = &SHMKV__HDR(m)->grow_lock;
    int rc = lock_robust(mu, &died);
    /* Growth publishes `top` last, after the chunk header and the
     * fallocate, and every chunk change leaves the chunks tiling: a dead
     * holder leaves at most the free pool's byte count off. */
    if (!rc && died) {
        shmkv__pool_recount(m);
        pthread_mutex_consistent(mu);
    }
    return rc;
}

void shmkv__grow_unlock(shmkv__map *m)
{
    pthread_mutex_unlock(&SHMKV__HDR(m)->grow_lock);
}
