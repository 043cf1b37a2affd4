/*
 * lock.c - robust process-shared mutexes and the call's lock wait.
 *
 * The primitives here only take and release locks. A lock whose owner died
 * is reported to the caller (SHMKV__OWNER_DIED) and repaired by the module
 * whose structure it guards: a segment by the table (seg_repair.c), the
 * index by the index (index_repair.c), the growth lock's pool count by the
 * chunk pool (grow.c).
 *
 * Lock order (never the reverse): segment locks in ascending number, then
 * the index lock, then the growth lock. A lock and its critical section are
 * always inside one library call.
 */
#include "internal.h"

#include <errno.h>
#include <time.h>

/* ThreadSanitizer (GCC 12's, at least) does not intercept
 * pthread_mutex_clocklock, and would then see unlocks of mutexes it never
 * saw locked; it does intercept pthread_mutex_timedlock. */
#if defined(__SANITIZE_THREAD__)
#define LOCK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LOCK_TSAN 1
#endif
#endif
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30)) && \
    !defined(LOCK_TSAN)
#define LOCK_CLOCKLOCK 1
#endif

/* The lock wait of the public call running on this thread. It is kept per
 * thread rather than passed down because the growth lock is taken deep in
 * the allocator, which knows no handle; a call never spans threads (a lock
 * and its critical section are inside one library call). The clock is read
 * only once a lock is found busy, and the deadline then holds for every
 * later lock of the same call, so that a call that meets several stopped
 * holders (clear, size, a restart after an index rebuild) still gives up
 * after one timeout in all. */
static _Thread_local struct {
    uint32_t wait_ms;   /* 0: the default */
    bool have_deadline;
    struct timespec deadline; /* CLOCK_MONOTONIC */
} call;

void shmkv__call_begin(const shmkv_db *db)
{
    call.wait_ms = db->lock_timeout_ms;
    call.have_deadline = false;
}

uint64_t shmkv__call_wait_ns(void)
{
    uint32_t ms = call.wait_ms ? call.wait_ms : SHMKV_LOCK_TIMEOUT_DEFAULT_MS;
    return ms == SHMKV_LOCK_TIMEOUT_NONE ? UINT64_MAX : (uint64_t)ms * 1000000u;
}

static void ts_add_ms(struct timespec *t, uint32_t ms)
{
    t->tv_sec += (time_t)(ms / 1000u);
    t->tv_nsec += (long)(ms % 1000u) * 1000000L;
    if (t->tv_nsec >= 1000000000L) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000L;
    }
}

/* The mutex is busy: wait for it until the call's deadline. Returns what
 * pthread_mutex_lock would, or ETIMEDOUT. */
static int lock_wait(pthread_mutex_t *mu)
{
    uint32_t ms = call.wait_ms ? call.wait_ms : SHMKV_LOCK_TIMEOUT_DEFAULT_MS;
    if (ms == SHMKV_LOCK_TIMEOUT_NONE)
        return pthread_mutex_lock(mu);
    if (!call.have_deadline) {
        clock_gettime(CLOCK_MONOTONIC, &call.deadline);
        ts_add_ms(&call.deadline, ms);
        call.have_deadline = true;
    }
#ifdef LOCK_CLOCKLOCK
    return pthread_mutex_clocklock(mu, CLOCK_MONOTONIC, &call.deadline);
#else
    /* timedlock only knows CLOCK_REALTIME: aim at the same instant, and
     * re-aim when a clock step cut the wait short. */
    for (;;) {
        struct timespec mono, real;
        clock_gettime(CLOCK_MONOTONIC, &mono);
        if (mono.tv_sec > call.deadline.tv_sec ||
            (mono.tv_sec == call.deadline.tv_sec && mono.tv_nsec >= call.deadline.tv_nsec)) {
            int rc = pthread_mutex_trylock(mu);
            return rc == EBUSY ? ETIMEDOUT : rc;
        }
        int64_t left = (int64_t)(call.deadline.tv_sec - mono.tv_sec) * 1000000000 +
                       (call.deadline.tv_nsec - mono.tv_nsec);
        clock_gettime(CLOCK_REALTIME, &real);
        real.tv_sec += (time_t)(left / 1000000000);
        real.tv_nsec += (long)(left % 1000000000);
        if (real.tv_nsec >= 1000000000L) {
            real.tv_sec++;
            real.tv_nsec -= 1000000000L;
        }
        int rc = pthread_mutex_timedlock(mu, &real);
        if (rc != ETIMEDOUT)
            return rc;
    }
#endif
}

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

/* A dead owner is reported whichever way the lock was taken: trylock and
 * the timed locks return EOWNERDEAD like pthread_mutex_lock. Inline, so
 * that a segment lock (every write takes one) is one call deep. */
static inline int lock_robust(pthread_mutex_t *mu)
{
    int rc = pthread_mutex_trylock(mu);
    if (rc == EBUSY)
        rc = lock_wait(mu);
    if (rc == 0)
        return 0;
    if (rc == EOWNERDEAD)
        return SHMKV__OWNER_DIED;
    if (rc == ETIMEDOUT)
        return SHMKV_ETIMEDOUT;
    return rc == ENOTRECOVERABLE ? SHMKV_ELOCK : -rc;
}

int shmkv__mutex_lock(pthread_mutex_t *mu)
{
    return lock_robust(mu);
}

/* seq: even to odd (or, left odd by a dead holder, to the next odd value),
 * ordered before any change to the segment; odd to even after the last.
 *
 * GCC warns (-Wtsan) that ThreadSanitizer does not model fences. The fence
 * below only serves the readers that skip the lock, and those are not
 * instrumented under TSan (see reader.c), so there is nothing for it to
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

int shmkv__seg_acquire(shmkv__seg *s)
{
    int rc = lock_robust(&s->lock);
    if (rc < 0)
        return rc;
    /* Moved on whether or not the owner died: readers must see the
     * segment busy while its repair runs. */
    seq_enter(s);
    return rc;
}

void shmkv__seg_unlock(shmkv__seg *s)
{
    seq_leave(s);
    pthread_mutex_unlock(&s->lock);
}

/* Between attempts of a reader without the lock: spin a little, then sleep
 * up to 1 ms. Returns false once the call's lock timeout is over: a live
 * holder is waited for as long as a writer would wait for its lock. */
bool shmkv__ro_backoff(int attempt, uint64_t start)
{
    if (attempt < 8)
        return true;
    if (shmkv__mono_ns() - start > shmkv__call_wait_ns())
        return false;
    struct timespec ts = {0, attempt < 40 ? 20000 : 1000000};
    nanosleep(&ts, NULL);
    return true;
}

/* For the last process to close a disk store: true when no segment or
 * index lock is held by a dead owner that nobody has repaired since. Such a
 * store must stay marked unclean, because its next (lone) opener resets
 * every lock, and repairs only a store that is not clean.
 * The caller is the last writer, so no live process holds a lock: a
 * segment whose seq is odd, or a lock word that is not zero, was left by a
 * dead owner. Both are only read: taking a dead lock to find out (and
 * marking it consistent) would erase the kernel's owner-died mark, by
 * which read-only readers still attached tell a dead holder from a slow one
 * (reader.c, dead_seq): they would wait out their lock timeout. */
bool shmkv__locks_settled(shmkv__map *m)
{
    bool settled = true;
    for (uint32_t i = 0; i < SHMKV__HDR(m)->nseg; i++)
        if (atomic_load(&shmkv__seg_at(m, i)->seq) & 1)
            return false;
    for (uint32_t i = 0; i <= SHMKV__HDR(m)->nseg; i++) {
        pthread_mutex_t *mu = i < SHMKV__HDR(m)->nseg ? &shmkv__seg_at(m, i)->lock
                                                      : &shmkv__index_of(m)->lock;
#ifdef __GLIBC__
        /* glibc keeps the futex word first (see dead_seq in reader.c) */
        if (__atomic_load_n(&mu->__data.__lock, __ATOMIC_ACQUIRE) != 0)
            settled = false;
#else
        int rc = pthread_mutex_trylock(mu);
        if (rc == EOWNERDEAD)
            pthread_mutex_consistent(mu); /* left to the open-time repair */
        if (rc == 0 || rc == EOWNERDEAD)
            pthread_mutex_unlock(mu);
        if (rc != 0)
            settled = false;
#endif
    }
    return settled;
}
