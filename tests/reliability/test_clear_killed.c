/*
 * test_clear_killed.c - a process SIGKILLed at a random moment inside
 * shmkv_clear().
 *
 * clear() is one write on the whole store, so the crash model's "old or
 * new, never a mix" applies to the store as a whole: after the kill every
 * key must still be there, or none. Checking each key alone would accept a
 * store that lost half its keys, so this test counts them all.
 *
 * Each round fills a store with N keys (200,000 at full scale), lets a
 * forked child open it, tell the parent it is about to call clear(), and
 * call it; the parent SIGKILLs the child after a random delay drawn around
 * the measured duration of a clear. Then (through a fresh open on disk, so
 * that the open-time repair runs, or through the handle the parent kept on
 * a memory store) it requires size() to be 0 or N, get() to find exactly
 * size() of the N keys, list() to show as many, and random_key() to draw
 * only present keys. Rounds whose kill came before the child reported the
 * end of clear() are the ones that judge; the test fails if there were none.
 */
#include "harness.h"

TestSuite(clear_killed, .init = t_setup, .fini = t_teardown, .timeout = 900);

#define ROUNDS 12

static uint64_t nkeys(void)
{
    uint64_t n = (uint64_t)(200000 * t_scale_heavy());
    return n < 5000 ? 5000 : n;
}

static int key_of(uint64_t i, char *k)
{
    return snprintf(k, 32, "clr:%" PRIu64, i);
}

static void fill(shmkv_db *db, uint64_t n)
{
    char k[32], v[48];
    for (uint64_t i = 0; i < n; i++) {
        int kl = key_of(i, k);
        int vl = snprintf(v, sizeof v, "value-%" PRIu64 "-xxxxxxxxxxxx", i);
        T_OK(shmkv_set(db, k, (size_t)kl, v, (size_t)vl, SHMKV_KIND_STRING));
    }
}

static int count_list(void *ctx, const void *k, size_t kl, const void *v, size_t vl,
                      shmkv_kind kind)
{
    (void)k, (void)kl, (void)v, (void)vl, (void)kind;
    (*(uint64_t *)ctx)++;
    return 0;
}

/* The whole store is in one of the two states, and consistent. Returns the
 * number of keys found (0 or n). */
static uint64_t check_all_or_none(shmkv_db *db, uint64_t n, bool track, int round)
{
    uint64_t size = shmkv_size(db), found = 0, listed = 0;
    char k[32];
    for (uint64_t i = 0; i < n; i++) {
        int kl = key_of(i, k);
        int e = shmkv_exists(db, k, (size_t)kl);
        cr_assert(e == 0 || e == 1, "exists -> %d", e);
        found += (uint64_t)e;
    }
    cr_assert(found == 0 || found == n,
              "round %d: a clear() killed half-way left %" PRIu64 " of %" PRIu64
              " keys (size() says %" PRIu64 "): the store must hold all of them or none",
              round, found, n, size);
    cr_assert_eq(size, found, "round %d: size() %" PRIu64 " but %" PRIu64 " keys found", round,
                 size, found);
    T_OK(shmkv_list(db, NULL, 0, 0, SHMKV_LIST_KEYS_ONLY, count_list, &listed));
    cr_assert_eq(listed, found, "round %d: list() shows %" PRIu64 ", %" PRIu64 " found", round,
                 listed, found);
    if (track) {
        for (int d = 0; d < 50; d++) {
            char kb[40];
            size_t kl = 0;
            int rc = shmkv_random_key(db, NULL, 0, kb, sizeof kb, &kl);
            if (found == 0) {
                T_RC(rc, SHMKV_ENOTFOUND);
                break;
            }
            T_OK(rc);
            cr_assert_eq(shmkv_exists(db, kb, kl), 1, "random_key drew an absent key");
        }
    }
    return found;
}

static void killed_clears(shmkv_backend be, int tracking)
{
    bool track = tracking == SHMKV_TRACK_ON;
    bool mem = be == SHMKV_BACKEND_MEMORY;
    const char *where = mem ? t_name("clr") : t_path("clr");
    uint64_t n = nkeys();
    shmkv_db *db = t_open(where, be, tracking);
    t_rng rng;
    rng = t_rng_seeded(t_pick_seed());
    uint64_t clear_us = 0;
    int judged = 0, all = 0, none = 0;

    /* Round 0 is not killed: it measures how long a clear takes in a
     * process that has just opened the store (the child's situation). */
    for (int round = 0; round <= ROUNDS; round++) {
        if (shmkv_size(db) != n) {
            T_OK(shmkv_clear(db));
            fill(db, n);
        }
        if (!mem) {
            T_OK(shmkv_close(db));
            db = NULL;
        }
        int fds[2];
        cr_assert(pipe(fds) == 0);
        pid_t p = t_fork();
        if (p == 0) {
            close(fds[0]);
            shmkv_db *d = NULL;
            shmkv_options o;
            memset(&o, 0, sizeof o);
            o.backend = be;
            CHILD_OK(shmkv_open(where, &o, &d));
            uint64_t t = 0;
            CHILD_CHECK(write(fds[1], &t, sizeof t) == (ssize_t)sizeof t, "go");
            t = t_now_ns();
            CHILD_OK(shmkv_clear(d));
            t = t_now_ns() - t;
            CHILD_CHECK(write(fds[1], &t, sizeof t) == (ssize_t)sizeof t, "done");
            pause();
            _exit(0);
        }
        close(fds[1]);
        uint64_t msg;
        cr_assert(read(fds[0], &msg, sizeof msg) == (ssize_t)sizeof msg, "child never started");
        /* Every other round aims at the start, where the clear is decided. */
        if (round > 0)
            t_sleep_us(t_below(&rng, round % 2 ? clear_us + clear_us / 2 + 20
                                                   : clear_us / 16 + 5));
        else
            cr_assert(read(fds[0], &msg, sizeof msg) == (ssize_t)sizeof msg, "no clear time");
        kill(p, SIGKILL);
        t_wait(p);
        if (round == 0) {
            clear_us = msg / 1000 + 1;
        } else {
            int fl = fcntl(fds[0], F_GETFL);
            cr_assert(fcntl(fds[0], F_SETFL, fl | O_NONBLOCK) == 0);
            judged += read(fds[0], &msg, sizeof msg) != (ssize_t)sizeof msg;
        }
        close(fds[0]);
        if (!mem)
            db = t_open(where, be, tracking);
        uint64_t got = check_all_or_none(db, n, track, round);
        if (round > 0) {
            all += got == n;
            none += got == 0;
        }
    }
    fprintf(stderr,
            "clear_killed: %s %s: %" PRIu64 " keys, clear takes %" PRIu64 " us; %d kills, %d "
            "before clear() returned; after them %d stores full, %d empty\n",
            mem ? "memory" : "disk", track ? "tracked" : "untracked", n, clear_us, ROUNDS,
            judged, all, none);
    T_OK(shmkv_close(db));
    if (mem)
        shmkv_memory_unlink(where);
    cr_assert_gt(judged, 0, "no kill came before clear() returned: the test could not judge");
}

Test(clear_killed, disk_untracked)
{
    killed_clears(SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF);
}

Test(clear_killed, disk_tracked)
{
    killed_clears(SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
}

Test(clear_killed, memory_untracked)
{
    killed_clears(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_OFF);
}

Test(clear_killed, memory_tracked)
{
    killed_clears(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_ON);
}
