/*
 * test_locks.c - processes that hold on to a store without using it, and
 * processes that stop while holding one of its locks.
 *
 * fork_*: a process that forks shares its open file description of the
 * store with the child, and the store's file locks live on that
 * description. A child that never touches the store must not keep the
 * parent's locks alive: not after the parent closes, and not after the
 * parent dies (even inside its own close, holding the init lock). A child
 * opens its own handle, and a handle inherited through fork() must not be
 * able to detach the parent.
 *
 * Every step that used to hang runs under alarm(): a process stuck on a
 * file lock is killed by SIGALRM and the test fails with that, instead of
 * hanging.
 */
#include "common.h"
#include "internal.h"

TestSuite(locks, .init = t_setup, .fini = t_teardown, .timeout = 180);

/* Seconds a step that should take milliseconds may take on a loaded
 * machine before it counts as blocked. */
#define BOUND 20

/* ---- helpers ---------------------------------------------------------- */

static void wait_bounded(pid_t p, const char *what)
{
    int st = t_wait(p);
    char b[96];
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
        cr_assert_fail("%s: still blocked after %d s (SIGALRM)", what, BOUND);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: %s", what,
              t_status_str(st, b, sizeof b));
}

/* In a fresh process, bounded: open `where`, check what it holds, write,
 * close. want_k: 1 "k" must read "v", 0 it must be absent, -1 either. */
static void open_use_close(const char *where, shmkv_backend be, int want_k, const char *what)
{
    pid_t p = t_fork();
    if (p == 0) {
        alarm(BOUND);
        shmkv_db *db = NULL;
        shmkv_options o = t_opts(be, 0);
        CHILD_OK(shmkv_open(where, &o, &db));
        char buf[16];
        size_t n = 0;
        int rc = shmkv_get(db, "k", 1, buf, sizeof buf, &n, NULL);
        if (want_k == 1)
            CHILD_CHECK(rc == 0 && n == 1 && buf[0] == 'v', "get(k) -> %d (%s)", rc,
                        shmkv_strerror(rc));
        else if (want_k == 0)
            CHILD_CHECK(rc == SHMKV_ENOTFOUND, "k should be gone with its last process: %d", rc);
        CHILD_OK(shmkv_set(db, "o", 1, "1", 1, SHMKV_KIND_STRING));
        CHILD_OK(shmkv_close(db));
        _exit(0);
    }
    wait_bounded(p, what);
}

static void send_byte(int fd, char c)
{
    cr_assert_eq(write(fd, &c, 1), 1);
}

/* A child that waits for one byte on cmd, then opens the store itself,
 * uses it and closes it, all within BOUND. Until then it never touches the
 * store. want_k as for open_use_close. */
static void idle_then_open(int cmd, const char *where, shmkv_backend be, int want_k)
{
    char c;
    if (read(cmd, &c, 1) != 1)
        _exit(0); /* the test gave up on us */
    alarm(BOUND);
    shmkv_db *db = NULL;
    shmkv_options o = t_opts(be, 0);
    CHILD_OK(shmkv_open(where, &o, &db));
    char buf[16];
    size_t n = 0;
    int rc = shmkv_get(db, "k", 1, buf, sizeof buf, &n, NULL);
    if (want_k == 1)
        CHILD_CHECK(rc == 0 && n == 1 && buf[0] == 'v', "get(k) -> %d (%s)", rc,
                    shmkv_strerror(rc));
    else if (want_k == 0)
        CHILD_CHECK(rc == SHMKV_ENOTFOUND, "get(k) -> %d, expected a fresh store", rc);
    CHILD_OK(shmkv_set(db, "child", 5, "c", 1, SHMKV_KIND_STRING));
    n = 0;
    CHILD_OK(shmkv_get(db, "child", 5, buf, sizeof buf, &n, NULL));
    CHILD_CHECK(n == 1 && buf[0] == 'c', "read back");
    CHILD_OK(shmkv_close(db));
    _exit(0);
}

/* ---- item: a forked child that never uses the store -------------------- */

/*
 * The parent opens, forks a child that sleeps, and closes while the child
 * lives. Another process that was attached all along must still close; a
 * new process must open and close; the parent must open and close a new
 * handle; and the child must finally open and use a handle of its own.
 */
static void idle_child_blocks_nobody(shmkv_backend be)
{
    const char *where = t_where(be, "fork");
    shmkv_db *a = t_open(where, be, 0);
    t_set(a, "k", "v");

    /* B: attached before the parent's close, closes after it */
    int bready[2], bgo[2];
    cr_assert(pipe(bready) == 0 && pipe(bgo) == 0);
    pid_t b = t_fork();
    if (b == 0) {
        close(bready[0]);
        close(bgo[1]);
        shmkv_db *db = NULL;
        shmkv_options o = t_opts(be, 0);
        CHILD_OK(shmkv_open(where, &o, &db));
        char c = 'R';
        CHILD_CHECK(write(bready[1], &c, 1) == 1, "ready");
        CHILD_CHECK(read(bgo[0], &c, 1) == 1, "go");
        alarm(BOUND);
        CHILD_OK(shmkv_close(db));
        _exit(0);
    }
    close(bready[1]);
    close(bgo[0]);
    char c;
    cr_assert_eq(fd_read_all(bready[0], &c, 1), 1, "holder B did not open");

    /* C: the idle child, forked while the parent's handle is open */
    int cgo[2];
    cr_assert(pipe(cgo) == 0);
    pid_t kid = t_fork();
    if (kid == 0) {
        close(cgo[1]);
        /* memory: by the time C opens, everybody else has closed */
        idle_then_open(cgo[0], where, be, be == SHMKV_BACKEND_DISK ? 1 : 0);
    }
    close(cgo[0]);

    alarm(BOUND);
    T_OK(shmkv_close(a));
    alarm(0);

    open_use_close(where, be, 1, "a new process opening after the parent's close");

    /* the parent's own second handle */
    alarm(BOUND);
    shmkv_db *a2 = t_open(where, be, 0);
    t_expect_str(a2, "o", "1");
    T_OK(shmkv_close(a2));
    alarm(0);

    send_byte(bgo[1], 'c');
    wait_bounded(b, "close of a process attached before the parent's close");
    if (be == SHMKV_BACKEND_MEMORY)
        cr_assert(!t_exists(t_shm_file(where)),
                  "the memory store outlived its last process (the idle child kept it)");

    send_byte(cgo[1], 'o');
    wait_bounded(kid, "the forked child opening its own handle");
    if (be == SHMKV_BACKEND_MEMORY)
        cr_assert(!t_exists(t_shm_file(where)));
    else
        open_use_close(where, be, 1, "opening after the child's close");
}

Test(locks, fork_idle_child_blocks_nobody_disk) { idle_child_blocks_nobody(SHMKV_BACKEND_DISK); }
Test(locks, fork_idle_child_blocks_nobody_memory) { idle_child_blocks_nobody(SHMKV_BACKEND_MEMORY); }

/*
 * The parent dies while its idle child lives: killed while attached, or
 * killed inside shmkv_close while it holds the init lock. The child must
 * not stand in for it: the next opener opens within the bound, and (memory)
 * finds the store empty, since every process that used it is gone.
 */
static int g_hook_fd = -1;

static void pause_in_close(const char *point)
{
    if (strcmp(point, "close.init_locked") != 0)
        return;
    char m = 'H';
    if (write(g_hook_fd, &m, 1) != 1)
        _exit(4);
    for (;;)
        pause();
}

static void parent_dies(shmkv_backend be, bool in_close)
{
    const char *where = t_where(be, "orphan");
    /* the idle child is re-parented to us when its parent dies, so that we
     * can reap it */
    cr_assert(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
    int info[2], cgo[2];
    cr_assert(pipe(info) == 0 && pipe(cgo) == 0);
    pid_t p = t_fork();
    if (p == 0) {
        close(info[0]);
        shmkv_db *db = NULL;
        shmkv_options o = t_opts(be, 0);
        CHILD_OK(shmkv_open(where, &o, &db));
        CHILD_OK(shmkv_set(db, "k", 1, "v", 1, SHMKV_KIND_STRING));
        fflush(NULL);
        pid_t kid = fork(); /* a plain fork: no death signal, it outlives us */
        CHILD_CHECK(kid >= 0, "fork");
        if (kid == 0) {
            close(info[1]);
            close(cgo[1]);
            t_in_child = 1;
            alarm(90); /* a last resort should the test lose track of us */
            idle_then_open(cgo[0], where, be, be == SHMKV_BACKEND_DISK ? 1 : 0);
        }
        int32_t k32 = kid;
        CHILD_CHECK(fd_write_all(info[1], &k32, sizeof k32) == 0, "pid");
        if (in_close) {
            g_hook_fd = info[1];
            shmkv__test_hook = pause_in_close;
            shmkv_close(db);
            CHILD_CHECK(0, "close did not reach close.init_locked");
        } else {
            char m = 'A';
            CHILD_CHECK(write(info[1], &m, 1) == 1, "ready");
        }
        for (;;)
            pause();
    }
    close(info[1]);
    close(cgo[0]);
    int32_t kid = 0;
    cr_assert_eq(fd_read_all(info[0], &kid, sizeof kid), (ssize_t)sizeof kid, "parent failed");
    for (int i = 0; i < T_MAX_KIDS; i++)
        if (t_ctx.kids[i] == 0) {
            t_ctx.kids[i] = kid; /* so that teardown kills it, whatever happens */
            break;
        }
    char m = 0;
    cr_assert_eq(fd_read_all(info[0], &m, 1), 1, "parent failed before the kill point");
    cr_assert_eq(m, in_close ? 'H' : 'A');
    t_kill(p);

    /* memory: its only user died, so the next opener starts it empty */
    open_use_close(where, be, be == SHMKV_BACKEND_DISK ? 1 : 0,
                   in_close ? "opening after the parent died inside close"
                            : "opening after the parent died");
    open_use_close(where, be, be == SHMKV_BACKEND_DISK ? 1 : 0, "opening again");

    send_byte(cgo[1], 'o');
    wait_bounded(kid, "the orphaned child opening its own handle");
}

Test(locks, fork_parent_killed_memory) { parent_dies(SHMKV_BACKEND_MEMORY, false); }
Test(locks, fork_parent_killed_in_close_disk) { parent_dies(SHMKV_BACKEND_DISK, true); }
Test(locks, fork_parent_killed_in_close_memory) { parent_dies(SHMKV_BACKEND_MEMORY, true); }

/*
 * A handle crosses fork() only as something to close: in the child, calls
 * through it are refused, and closing it frees it without detaching the
 * parent (which would unlink a memory store the parent still uses).
 */
static void inherited_handle(shmkv_backend be)
{
    const char *where = t_where(be, "inherit");
    shmkv_db *a = t_open(where, be, 0);
    t_set(a, "k", "v");
    pid_t p = t_fork();
    if (p == 0) {
        alarm(BOUND);
        char buf[8];
        size_t n = 0;
        int rc = shmkv_get(a, "k", 1, buf, sizeof buf, &n, NULL);
        CHILD_CHECK(rc == SHMKV_EINVAL, "get through an inherited handle -> %d", rc);
        rc = shmkv_set(a, "x", 1, "y", 1, SHMKV_KIND_STRING);
        CHILD_CHECK(rc == SHMKV_EINVAL, "set through an inherited handle -> %d", rc);
        CHILD_OK(shmkv_close(a));
        _exit(0);
    }
    wait_bounded(p, "child closing an inherited handle");
    if (be == SHMKV_BACKEND_MEMORY)
        cr_assert(t_exists(t_shm_file(where)), "the child's close removed the parent's store");
    open_use_close(where, be, 1, "opening while the parent is attached");
    t_expect_str(a, "o", "1");
    alarm(BOUND);
    T_OK(shmkv_close(a));
    alarm(0);
    if (be == SHMKV_BACKEND_MEMORY)
        cr_assert(!t_exists(t_shm_file(where)));
}

Test(locks, fork_inherited_handle_disk) { inherited_handle(SHMKV_BACKEND_DISK); }
Test(locks, fork_inherited_handle_memory) { inherited_handle(SHMKV_BACKEND_MEMORY); }
