/*
 * test_create_killed.c - a process killed while it creates a store.
 *
 * The crash model covers any instruction, creation included, and
 * create_store() says: until the magic is written the file reads as a
 * crashed creation and the next opener starts over. Here a child creates a
 * store (4096 segments, so creation takes a millisecond or two and a random
 * kill often lands inside it) and is SIGKILLed after a random delay in
 * [0, 1.2 x a measured creation time]. Whatever the kill left, the next
 * shmkv_open() of the same path or name must give a working store.
 *
 * The test also counts how many kills left a half-written header (first
 * page not all zero, magic missing): those are the cases that matter, and
 * the test fails if none was produced (it could not judge).
 */
#include "harness.h"

TestSuite(create_killed, .init = t_setup, .fini = t_teardown, .timeout = 600);

static shmkv_options create_opts(shmkv_backend be)
{
    shmkv_options o;
    memset(&o, 0, sizeof o);
    o.backend = be;
    o.segments = 4096;
    return o;
}

static void remove_store(shmkv_backend be, const char *where)
{
    if (be == SHMKV_BACKEND_MEMORY)
        shmkv_memory_unlink(where);
    else
        unlink(where);
}

/* 1: first page has bytes but no magic; 0: empty, zero, or a store. */
static int half_written(const char *file)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    unsigned char pg[4096];
    ssize_t n = pread(fd, pg, sizeof pg, 0);
    close(fd);
    if (n < 8)
        return 0;
    bool nz = false;
    for (ssize_t i = 0; i < n && !nz; i++)
        nz = pg[i] != 0;
    return nz && memcmp(pg, "SHMKVdb", 8) != 0;
}

static void killed_creators(shmkv_backend be)
{
    const char *where = be == SHMKV_BACKEND_MEMORY ? t_name("ck") : t_path("ck");
    const char *file = be == SHMKV_BACKEND_MEMORY ? t_str("/dev/shm/shmkv.%s", where) : where;
    shmkv_options o = create_opts(be);

    /* how long a creation takes here */
    uint64_t t0 = t_now_ns();
    shmkv_db *db = NULL;
    T_OK(shmkv_open(where, &o, &db));
    uint64_t create_us = (t_now_ns() - t0) / 1000 + 1;
    T_OK(shmkv_close(db));
    remove_store(be, where);

    t_rng rng;
    rng = t_rng_seeded(t_pick_seed());
    int tries = 0, half = 0, refused = 0;
    int first_rc = 0;
    for (tries = 0; tries < 400 && half < 8; tries++) {
        pid_t p = t_fork();
        if (p == 0) {
            shmkv_db *d = NULL;
            shmkv_open(where, &o, &d);
            pause();
            _exit(0);
        }
        t_sleep_us(t_below(&rng, create_us + create_us / 5 + 50));
        kill(p, SIGKILL);
        t_wait(p);
        bool h = half_written(file);
        half += h;
        db = NULL;
        int rc = shmkv_open(where, &o, &db);
        if (rc != 0) {
            if (!refused++)
                first_rc = rc;
        } else {
            /* and it is a working store */
            int r2 = shmkv_set(db, "k", 1, "v", 1, SHMKV_KIND_STRING);
            cr_assert_eq(r2, 0, "set on the store opened after a killed creation -> %d", r2);
            shmkv_close(db);
        }
        remove_store(be, where);
    }
    fprintf(stderr,
            "create_killed: %s: creation takes %" PRIu64 " us; %d kills, %d left a half-written "
            "header, %d of the following opens failed\n",
            be == SHMKV_BACKEND_MEMORY ? "memory" : "disk", create_us, tries, half, refused);
    cr_expect_gt(half, 0, "no kill landed inside the creation: the test could not judge");
    cr_assert_eq(refused, 0,
                 "%d of %d opens after a creator was killed failed (first: %d, %s); a creation "
                 "cut short must not leave a store nobody can open",
                 refused, tries, first_rc, shmkv_strerror(first_rc));
}

Test(create_killed, memory)
{
    killed_creators(SHMKV_BACKEND_MEMORY);
}

Test(create_killed, disk)
{
    killed_creators(SHMKV_BACKEND_DISK);
}
