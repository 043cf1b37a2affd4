/*
 * test_lifecycle.c - when stores appear and disappear.
 *
 * Memory backend: processes share a store by name while any of them is
 * attached; after the last one closes, or dies, the next opener finds it
 * empty; shmkv_memory_unlink removes the name. Disk backend: data outlives
 * every process, including one that was SIGKILLed.
 */
#include "harness.h"
#include "internal.h"

#include <poll.h>
#include <stddef.h>
#include <time.h>

TestSuite(lifecycle, .init = t_setup, .fini = t_teardown, .timeout = 120);

/* A child that opens `where`, runs `body`, reports on `ready` and then
 * either exits (linger = 0) or waits to be killed. */
typedef void (*child_body)(shmkv_db *db, void *arg);

static pid_t spawn(const char *where, shmkv_backend be, child_body body, void *arg, bool linger,
                   int *ready_fd)
{
    int p[2];
    cr_assert(pipe(p) == 0);
    pid_t pid = t_fork();
    if (pid == 0) {
        close(p[0]);
        shmkv_db *db = NULL;
        shmkv_options o = t_opts(be, 0);
        CHILD_OK(shmkv_open(where, &o, &db));
        if (body)
            body(db, arg);
        char b = 'R';
        CHILD_CHECK(write(p[1], &b, 1) == 1, "ready");
        if (linger)
            for (;;)
                pause();
        CHILD_OK(shmkv_close(db));
        _exit(0);
    }
    close(p[1]);
    *ready_fd = p[0];
    return pid;
}

static void wait_ready(int fd)
{
    char b = 0;
    cr_assert_eq(fd_read_all(fd, &b, 1), 1, "child failed before it was ready");
    cr_assert_eq(b, 'R');
    close(fd);
}

static void set_ab(shmkv_db *db, void *arg)
{
    (void)arg;
    CHILD_OK(shmkv_set(db, "a", 1, "1", 1, SHMKV_KIND_STRING));
    CHILD_OK(shmkv_set(db, "b", 1, "2", 1, SHMKV_KIND_STRING));
}

static void set_many(shmkv_db *db, void *arg)
{
    int n = *(int *)arg;
    for (int i = 0; i < n; i++) {
        char k[16];
        int kl = snprintf(k, sizeof k, "m%d", i);
        CHILD_OK(shmkv_set(db, k, (size_t)kl, k, (size_t)kl, SHMKV_KIND_STRING));
    }
}

static void check_ab(shmkv_db *db, void *arg)
{
    (void)arg;
    char b[4];
    size_t n = 0;
    CHILD_OK(shmkv_get(db, "a", 1, b, sizeof b, &n, NULL));
    CHILD_CHECK(n == 1 && b[0] == '1', "a");
    CHILD_OK(shmkv_set(db, "c", 1, "3", 1, SHMKV_KIND_STRING));
}

Test(lifecycle, memory_shared_while_attached)
{
    const char *name = t_name("share");
    const char *f = t_shm_file(name);
    shmkv_db *db = t_open(name, SHMKV_BACKEND_MEMORY, 0);
    t_set(db, "a", "1");
    int fd;
    pid_t p = spawn(name, SHMKV_BACKEND_MEMORY, check_ab, NULL, false, &fd);
    wait_ready(fd);
    t_wait_ok(p, "reader");
    t_expect_str(db, "c", "3");
    cr_assert(t_exists(f));
    t_close(db);
    cr_assert(!t_exists(f), "memory store still in /dev/shm after the last close");

    /* the next opener finds it empty */
    db = t_open(name, SHMKV_BACKEND_MEMORY, 0);
    cr_assert_eq(shmkv_size(db), 0);
    t_expect_absent(db, "a", 1);
    t_close(db);
}

Test(lifecycle, memory_child_creates_parent_joins)
{
    const char *name = t_name("join");
    int fd;
    pid_t p = spawn(name, SHMKV_BACKEND_MEMORY, set_ab, NULL, true, &fd);
    wait_ready(fd);
    shmkv_db *db = t_open(name, SHMKV_BACKEND_MEMORY, 0);
    t_expect_str(db, "a", "1");
    t_expect_str(db, "b", "2");
    shmkv_info info;
    T_OK(shmkv_stat(db, &info));
    cr_assert_eq(info.attached, 2);
    /* the creator dies; we are still attached, so the data stays */
    t_kill(p);
    /* and it is no longer counted as attached, though its slot still
     * names it (slots of the dead are only reused by the next opener) */
    T_OK(shmkv_stat(db, &info));
    cr_assert_eq(info.attached, 1, "attached=%u after the creator was killed", info.attached);
    t_expect_str(db, "a", "1");
    t_set(db, "d", "4");
    t_expect_str(db, "d", "4");
    cr_assert_eq(shmkv_size(db), 3);
    t_close(db);
    cr_assert(!t_exists(t_shm_file(name)));
}

Test(lifecycle, memory_all_closed_then_empty)
{
    const char *name = t_name("seq");
    int fd;
    /* two processes, one after the other, with no overlap */
    pid_t p = spawn(name, SHMKV_BACKEND_MEMORY, set_ab, NULL, false, &fd);
    wait_ready(fd);
    t_wait_ok(p, "writer");
    cr_assert(!t_exists(t_shm_file(name)), "object left after its only process closed");
    shmkv_db *db = t_open(name, SHMKV_BACKEND_MEMORY, 0);
    cr_assert_eq(shmkv_size(db), 0, "store not empty after every process closed");
    t_expect_absent(db, "a", 1);
    t_close(db);
}

static void killed_last_user(int track)
{
    const char *name = t_name("killed");
    int n = 500;
    int p2[2];
    cr_assert(pipe(p2) == 0);
    pid_t p = t_fork();
    if (p == 0) {
        close(p2[0]);
        shmkv_db *db = NULL;
        shmkv_options o = t_opts(SHMKV_BACKEND_MEMORY, track);
        CHILD_OK(shmkv_open(name, &o, &db));
        set_many(db, &n);
        char b = 'R';
        CHILD_CHECK(write(p2[1], &b, 1) == 1, "ready");
        for (;;)
            pause();
    }
    close(p2[1]);
    wait_ready(p2[0]);
    t_kill(p);
    /* the object may still exist in /dev/shm, but its only process is
     * dead: the next opener must find it empty */
    shmkv_db *db = t_open(name, SHMKV_BACKEND_MEMORY, 0);
    cr_assert_eq(shmkv_size(db), 0, "a dead process's memory store was not reset (%" PRIu64
                                    " keys)",
                 shmkv_size(db));
    t_expect_absent(db, "m0", 2);
    shmkv_info info;
    T_OK(shmkv_stat(db, &info));
    cr_assert_eq(info.attached, 1, "dead process still counted as attached");
    cr_assert_eq(info.keys, 0);
    /* and it is a working store */
    t_set(db, "m0", "fresh");
    t_expect_str(db, "m0", "fresh");
    t_kvlist l;
    T_OK(t_list_all(db, NULL, 0, 0, 0, &l));
    cr_assert_eq(l.n, 1);
    t_kvlist_free(&l);
    t_close(db);
    cr_assert(!t_exists(t_shm_file(name)));
}

Test(lifecycle, memory_killed_last_user_untracked) { killed_last_user(SHMKV_TRACK_OFF); }
Test(lifecycle, memory_killed_last_user_tracked) { killed_last_user(SHMKV_TRACK_ON); }

Test(lifecycle, memory_killed_last_user_other_options)
{
    /* the dead store's options do not constrain the next opener */
    const char *name = t_name("opts");
    int p2[2];
    cr_assert(pipe(p2) == 0);
    pid_t p = t_fork();
    if (p == 0) {
        close(p2[0]);
        shmkv_db *db = NULL;
        shmkv_options o = t_opts(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_ON);
        o.segments = 4;
        CHILD_OK(shmkv_open(name, &o, &db));
        CHILD_OK(shmkv_set(db, "x", 1, "y", 1, SHMKV_KIND_STRING));
        char b = 'R';
        CHILD_CHECK(write(p2[1], &b, 1) == 1, "ready");
        for (;;)
            pause();
    }
    close(p2[1]);
    wait_ready(p2[0]);
    t_kill(p);
    shmkv_options o = t_opts(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_OFF);
    o.segments = 32;
    shmkv_db *db = t_open_opts(name, &o);
    shmkv_info info;
    T_OK(shmkv_stat(db, &info));
    cr_assert_eq(info.segments, 32);
    cr_assert_eq(info.track_keys, 0);
    cr_assert_eq(info.keys, 0);
    t_close(db);
}

Test(lifecycle, memory_unlink)
{
    const char *name = t_name("unlink");
    const char *f = t_shm_file(name);
    T_RC(shmkv_memory_unlink(name), -ENOENT);
    shmkv_db *a = t_open(name, SHMKV_BACKEND_MEMORY, 0);
    t_set(a, "old", "1");
    cr_assert(t_exists(f));
    T_OK(shmkv_memory_unlink(name));
    cr_assert(!t_exists(f), "unlink left %s", f);
    /* the open handle keeps working on the unlinked store */
    t_expect_str(a, "old", "1");
    t_set(a, "old2", "2");
    /* a new open creates a new, empty store under the name */
    int fd;
    pid_t p = spawn(name, SHMKV_BACKEND_MEMORY, NULL, NULL, true, &fd);
    wait_ready(fd);
    cr_assert(t_exists(f));
    shmkv_db *b = t_open(name, SHMKV_BACKEND_MEMORY, 0);
    cr_assert_eq(shmkv_size(b), 0, "open after unlink joined the old store");
    t_set(b, "new", "3");
    t_expect_absent(a, "new", 3);
    t_expect_absent(b, "old", 3);
    t_kill(p);
    t_close(b);
    t_close(a);
    cr_assert(!t_exists(f));
    T_RC(shmkv_memory_unlink(name), -ENOENT);
}

Test(lifecycle, memory_unlink_then_close_does_not_remove_new_store)
{
    /* A stale handle's last close must not remove a newer store that
     * took over the name. */
    const char *name = t_name("stale");
    const char *f = t_shm_file(name);
    shmkv_db *a = t_open(name, SHMKV_BACKEND_MEMORY, 0);
    T_OK(shmkv_memory_unlink(name));
    int fd;
    pid_t p = spawn(name, SHMKV_BACKEND_MEMORY, set_ab, NULL, true, &fd);
    wait_ready(fd);
    t_close(a);
    cr_assert(t_exists(f), "closing the unlinked store removed its successor");
    shmkv_db *b = t_open(name, SHMKV_BACKEND_MEMORY, 0);
    t_expect_str(b, "a", "1");
    t_kill(p);
    t_close(b);
}

Test(lifecycle, disk_reopen_keeps_data)
{
    const char *path = t_path("disk");
    int n = 2000;
    int fd;
    pid_t p = spawn(path, SHMKV_BACKEND_DISK, set_many, &n, false, &fd);
    wait_ready(fd);
    t_wait_ok(p, "disk writer");
    shmkv_db *db = t_open(path, SHMKV_BACKEND_DISK, 0);
    cr_assert_eq(shmkv_size(db), (uint64_t)n);
    t_expect_str(db, "m0", "m0");
    t_expect_str(db, "m1999", "m1999");
    t_close(db);
    /* clean flag set by the last close (docs/format.md: hdr.clean) */
    int f = open(path, O_RDONLY);
    cr_assert(f >= 0);
    uint32_t clean = 0;
    cr_assert_eq(pread(f, &clean, 4, offsetof(shmkv__hdr, clean)), 4);
    close(f);
    cr_assert_eq(clean, 1, "hdr.clean = %u after the last close", clean);
    db = t_open(path, SHMKV_BACKEND_DISK, 0);
    cr_assert_eq(shmkv_size(db), (uint64_t)n);
    t_close(db);
}

Test(lifecycle, disk_killed_writer_keeps_data)
{
    const char *path = t_path("diskkill");
    int n = 3000;
    int fd;
    pid_t p = spawn(path, SHMKV_BACKEND_DISK, set_many, &n, true, &fd);
    wait_ready(fd);
    t_kill(p);
    int f = open(path, O_RDONLY);
    cr_assert(f >= 0);
    uint32_t clean = 7;
    cr_assert_eq(pread(f, &clean, 4, offsetof(shmkv__hdr, clean)), 4);
    close(f);
    cr_assert_eq(clean, 0, "hdr.clean = %u while its only process died without closing", clean);
    shmkv_db *db = t_open(path, SHMKV_BACKEND_DISK, 0);
    cr_assert_eq(shmkv_size(db), (uint64_t)n);
    for (int i = 0; i < n; i += 97) {
        char k[16];
        snprintf(k, sizeof k, "m%d", i);
        t_expect_str(db, k, k);
    }
    shmkv_info info;
    T_OK(shmkv_stat(db, &info));
    cr_assert_eq(info.attached, 1);
    t_set(db, "after", "kill");
    t_close(db);
}

Test(lifecycle, attach_table_tracks_processes)
{
    const char *name = t_name("attach");
    shmkv_db *db = t_open(name, SHMKV_BACKEND_MEMORY, 0);
    int fds[3];
    pid_t kids[3];
    for (int i = 0; i < 3; i++) {
        kids[i] = spawn(name, SHMKV_BACKEND_MEMORY, NULL, NULL, true, &fds[i]);
        wait_ready(fds[i]);
    }
    shmkv_info info;
    T_OK(shmkv_stat(db, &info));
    cr_assert_eq(info.attached, 4);
    t_kill(kids[1]);
    /* a dead process may linger in the table until someone notices; opening
     * again (which scans the table) must not count it */
    shmkv_db *db2 = t_open(name, SHMKV_BACKEND_MEMORY, 0);
    t_close(db2);
    int fd;
    pid_t extra = spawn(name, SHMKV_BACKEND_MEMORY, NULL, NULL, false, &fd);
    wait_ready(fd);
    t_wait_ok(extra, "attach/detach");
    T_OK(shmkv_stat(db, &info));
    cr_assert(info.attached == 3 || info.attached == 4, "attached=%u", info.attached);
    t_kill(kids[0]);
    t_kill(kids[2]);
    t_close(db);
    /* everyone is gone: the object is removed or, at least, found empty */
    db = t_open(name, SHMKV_BACKEND_MEMORY, 0);
    T_OK(shmkv_stat(db, &info));
    cr_assert_eq(info.attached, 1);
    t_close(db);
    cr_assert(!t_exists(t_shm_file(name)));
}

/* Opening a store that attached processes are growing at that moment. They
 * grow it without the open lock, so an opener can see the file size from
 * before a growth and a header whose top is from after it; that must not
 * read as a store cut short (it once returned SHMKV_ECORRUPT). A child grows
 * the store with 8 KiB values while another opens and closes it in a loop. */
static void open_while_growing(shmkv_backend be)
{
    const char *where = t_where(be, "opengrow");
    shmkv_db *db = t_open(where, be, SHMKV_TRACK_OFF); /* keeps a memory store alive */
    int stop[2];
    cr_assert(pipe(stop) == 0);
    pid_t grower = t_fork();
    if (grower == 0) {
        close(stop[1]);
        shmkv_db *g = NULL;
        shmkv_options o = t_opts(be, SHMKV_TRACK_OFF);
        CHILD_OK(shmkv_open(where, &o, &g));
        static unsigned char v[8192];
        char k[32];
        struct pollfd pf = {stop[0], POLLIN, 0};
        for (unsigned i = 0; poll(&pf, 1, 0) == 0; i++) {
            int kl = snprintf(k, sizeof k, "grow:%u", i % 20000);
            CHILD_OK(shmkv_set(g, k, (size_t)kl, v, sizeof v, SHMKV_KIND_BYTES));
        }
        CHILD_OK(shmkv_close(g));
        _exit(0);
    }
    close(stop[0]);
    pid_t opener = t_fork();
    if (opener == 0) {
        shmkv_options o = t_opts(be, SHMKV_TRACK_OFF);
        struct timespec t0, now;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int n = 0;
        for (;;) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if ((now.tv_sec - t0.tv_sec) * 1000000000L + (now.tv_nsec - t0.tv_nsec) > 1500000000L)
                break;
            shmkv_db *x = NULL;
            int orc = shmkv_open(where, &o, &x);
            CHILD_CHECK(orc == 0, "open #%d while another process grows -> %s", n,
                        shmkv_strerror(orc));
            CHILD_OK(shmkv_close(x));
            n++;
        }
        _exit(0);
    }
    t_wait_ok(opener, "opener");
    close(stop[1]);
    t_wait_ok(grower, "grower");
    t_close(db);
}

Test(lifecycle, disk_open_while_growing) { open_while_growing(SHMKV_BACKEND_DISK); }
Test(lifecycle, memory_open_while_growing) { open_while_growing(SHMKV_BACKEND_MEMORY); }

/* More processes than the attach table's 64 slots. The table only lists
 * processes (for stat() and shmkv-dump); being attached is a file lock that
 * each process holds. So the 65th and later openers are attached all the
 * same: with every process that holds a slot killed, the ones left keep the
 * memory store from being taken for abandoned and emptied; once the last
 * is gone, it is. */
enum { MANY = 80 };

/* Whether pid holds a slot of the store's attach table (read from the
 * object's bytes, as shmkv-dump does, without opening it). */
static bool listed(const char *name, pid_t pid)
{
    size_t len;
    unsigned char *b = t_read_file(t_shm_file(name), &len);
    cr_assert_geq(len, sizeof(shmkv__hdr));
    shmkv__hdr *h = malloc(sizeof *h);
    cr_assert(h);
    memcpy(h, b, sizeof *h);
    free(b);
    bool found = false;
    for (unsigned i = 0; i < SHMKV__ATTACH_SLOTS; i++)
        found |= atomic_load(&h->attach[i].pid) == pid;
    free(h);
    return found;
}

Test(lifecycle, memory_more_processes_than_attach_slots)
{
    const char *name = t_name("many");
    int ready[2], go[2];
    cr_assert(pipe(ready) == 0 && pipe(go) == 0);
    pid_t kid[MANY];
    for (int i = 0; i < MANY; i++) {
        if ((kid[i] = t_fork()) != 0)
            continue;
        close(ready[0]);
        close(go[1]);
        shmkv_options o = t_opts(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_DEFAULT);
        shmkv_db *db = NULL;
        CHILD_OK(shmkv_open(name, &o, &db));
        char k[16], v[16];
        int kl = snprintf(k, sizeof k, "p%02d", i), vl = snprintf(v, sizeof v, "%d", i);
        CHILD_OK(shmkv_set(db, k, (size_t)kl, v, (size_t)vl, SHMKV_KIND_STRING));
        char b = 'R';
        CHILD_CHECK(write(ready[1], &b, 1) == 1, "ready");
        /* until the parent closes its end: then every key must be here */
        while (read(go[0], &b, 1) < 0 && errno == EINTR) {
        }
        CHILD_CHECK(shmkv_size(db) == MANY, "process %d sees %" PRIu64 " keys", i,
                    shmkv_size(db));
        CHILD_OK(shmkv_close(db));
        _exit(0);
    }
    close(ready[1]);
    close(go[0]);
    for (int got = 0; got < MANY;) {
        struct pollfd pf = {ready[0], POLLIN, 0};
        cr_assert_eq(poll(&pf, 1, 120000), 1, "%d of %d processes ready after 120 s", got, MANY);
        char b[MANY];
        ssize_t n = read(ready[0], b, sizeof b);
        cr_assert_gt(n, 0, "a process died before it was ready");
        got += (int)n;
    }
    /* every process with a slot is killed: those left are attached, and
     * listed nowhere */
    bool dead[MANY] = {false};
    int left = 0;
    for (int i = 0; i < MANY; i++)
        if ((dead[i] = listed(name, kid[i])))
            t_kill(kid[i]);
        else
            left++;
    cr_assert_eq(left, MANY - (int)SHMKV__ATTACH_SLOTS, "%d processes hold no slot", left);

    shmkv_db *db = t_open(name, SHMKV_BACKEND_MEMORY, 0);
    cr_assert_eq(shmkv_size(db), MANY, "an opener among %d attached, unlisted processes found %" PRIu64
                 " keys", left, shmkv_size(db));
    shmkv_info info;
    T_OK(shmkv_stat(db, &info));
    cr_assert(info.attached >= 1 && info.attached <= 64, "attached=%u", info.attached);
    t_close(db);
    cr_assert(t_exists(t_shm_file(name)), "removed while %d processes were attached", left);

    close(go[1]);
    for (int i = 0; i < MANY; i++)
        if (!dead[i])
            t_wait_ok(kid[i], "an attached process");
    close(ready[0]);
    /* everyone is gone: removed or, at least, found empty */
    db = t_open(name, SHMKV_BACKEND_MEMORY, 0);
    cr_assert_eq(shmkv_size(db), 0, "the last process is gone and %" PRIu64 " keys are left",
                 shmkv_size(db));
    t_close(db);
    cr_assert(!t_exists(t_shm_file(name)));
}
