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
#include "harness.h"
#include "internal.h"

#include <sys/prctl.h>

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
        int cready[2];
        CHILD_CHECK(pipe(cready) == 0, "pipe");
        fflush(NULL);
        pid_t kid = fork(); /* a plain fork: no death signal, it outlives us */
        CHILD_CHECK(kid >= 0, "fork");
        if (kid == 0) {
            close(info[1]);
            close(cgo[1]);
            close(cready[0]);
            alarm(90); /* a last resort should the test lose track of us */
            /* fork() has returned here, so its handlers have run: only now
             * may the parent die for the test to mean anything */
            char r = 'C';
            CHILD_CHECK(write(cready[1], &r, 1) == 1, "child ready");
            close(cready[1]);
            idle_then_open(cgo[0], where, be, be == SHMKV_BACKEND_DISK ? 1 : 0);
        }
        close(cready[1]);
        char r = 0;
        CHILD_CHECK(fd_read_all(cready[0], &r, 1) == 1 && r == 'C', "child not ready");
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
    t_adopt(kid); /* so that teardown kills it, whatever happens */
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

static int count_calls(void *ctx, const void *k, size_t kl, const void *v, size_t vl,
                       shmkv_kind kind)
{
    (void)k, (void)kl, (void)v, (void)vl, (void)kind;
    ++*(int *)ctx;
    return 0;
}

/* In the child: the call through the inherited handle must be refused. */
#define INHERITED(call)                                                                        \
    do {                                                                                       \
        int rc_ = (call);                                                                      \
        CHILD_CHECK(rc_ == SHMKV_EINVAL, "%s through an inherited handle -> %d (%s)", #call,   \
                    rc_, shmkv_strerror(rc_));                                                 \
    } while (0)

/*
 * A handle crosses fork() only as something to close: in the child, every
 * call through it is refused (none may touch the mapping, which the child
 * does not have: MADV_DONTFORK), and closing it frees it without detaching
 * the parent (which would unlink a memory store the parent still uses).
 */
static void inherited_handle(shmkv_backend be)
{
    const char *where = t_where(be, "inherit");
    shmkv_db *a = t_open(where, be, SHMKV_TRACK_ON);
    t_set(a, "k", "v");
    shmkv_lease lease = {.ttl_ms = 60000};
    shmkv_claim held;
    T_OK(shmkv_claim_key(a, "k", 1, &lease, &held, NULL, 0, NULL, NULL));
    const char *bk = t_fresh("inherit-backup");
    pid_t p = t_fork();
    if (p == 0) {
        alarm(BOUND);
        char buf[64];
        size_t n = 0, bad = 0;
        int flag = 0, calls = 0;
        int64_t num = 0;
        uint64_t u = 0, u2 = 0;
        shmkv_kind kind;
        shmkv_claim c;
        shmkv_info info;
        shmkv_item items[1] = {{.key = "k", .klen = 1, .val = "w", .vlen = 1}};
        INHERITED(shmkv_get(a, "k", 1, buf, sizeof buf, &n, NULL));
        INHERITED(shmkv_set(a, "x", 1, "y", 1, SHMKV_KIND_STRING));
        INHERITED(shmkv_delete(a, "k", 1, &flag));
        INHERITED(shmkv_exists(a, "k", 1));
        CHILD_CHECK(shmkv_size(a) == 0, "size through an inherited handle: %" PRIu64,
                    shmkv_size(a));
        INHERITED(shmkv_clear(a));
        INHERITED(shmkv_incr(a, "n", 1, 1, SHMKV_KIND_STRING, &num));
        INHERITED(shmkv_cas(a, "k", 1, "v", 1, "w", 1, SHMKV_KIND_STRING, &flag));
        INHERITED(shmkv_set_if_absent(a, "x", 1, "y", 1, SHMKV_KIND_STRING, &flag));
        INHERITED(shmkv_get_or_set(a, "x", 1, "y", 1, SHMKV_KIND_STRING, buf, sizeof buf, &n,
                                   &kind, &flag));
        INHERITED(shmkv_swap(a, "k", 1, "w", 1, SHMKV_KIND_STRING, buf, sizeof buf, &n, &kind,
                             &flag));
        INHERITED(shmkv_compare_and_delete(a, "k", 1, "v", 1, &flag));
        INHERITED(shmkv_list(a, NULL, 0, 0, 0, count_calls, &calls));
        INHERITED(shmkv_random_key(a, NULL, 0, buf, sizeof buf, &n));
        INHERITED(shmkv_tracking_enable(a));
        INHERITED(shmkv_rebuild_index(a));
        INHERITED(shmkv_get_many(a, items, 1, buf, sizeof buf, &n, &bad));
        INHERITED(shmkv_set_many(a, items, 1, &bad));
        INHERITED(shmkv_delete_many(a, items, 1, &u, &bad));
        INHERITED(shmkv_delete_prefix(a, "k", 1, 0, &u));
        INHERITED(shmkv_scan(a, NULL, 0, NULL, 0, 0, 0, count_calls, &calls));
        INHERITED(shmkv_count(a, NULL, 0, &u));
        INHERITED(shmkv_random_keys(a, NULL, 0, 1, 0, count_calls, &calls));
        INHERITED(shmkv_claim_key(a, "k", 1, &lease, &c, NULL, 0, NULL, NULL));
        INHERITED(shmkv_claim_random(a, NULL, 0, &lease, buf, sizeof buf, &n, &c, NULL, 0, NULL,
                                     NULL));
        INHERITED(shmkv_pop_random(a, NULL, 0, buf, sizeof buf, &n, NULL, 0, NULL, NULL));
        INHERITED(shmkv_claim_release(a, "k", 1, held.token));
        INHERITED(shmkv_claim_complete(a, "k", 1, held.token, 1));
        INHERITED(shmkv_claim_renew(a, "k", 1, held.token, &lease, &c));
        INHERITED(shmkv_claim_get(a, "k", 1, &c, NULL, 0, NULL));
        INHERITED(shmkv_claim_count(a, NULL, 0, &u, &u2));
        INHERITED(shmkv_stat(a, &info));
        INHERITED(shmkv_check(a, &u, buf, sizeof buf));
        INHERITED(shmkv_backup(a, bk, 0, NULL));
        INHERITED(shmkv_restore(a, bk, 0, 0, NULL));
        CHILD_CHECK(calls == 0, "a callback ran %d times", calls);
        CHILD_OK(shmkv_close(a));
        _exit(0);
    }
    wait_bounded(p, "child closing an inherited handle");
    /* nothing the child tried happened */
    cr_assert(!t_exists(bk), "a backup was written through an inherited handle");
    cr_assert_eq(shmkv_size(a), 1);
    t_expect_str(a, "k", "v");
    shmkv_claim now;
    T_OK(shmkv_claim_get(a, "k", 1, &now, NULL, 0, NULL));
    cr_assert_eq(now.token, held.token, "the claim changed");
    T_OK(shmkv_claim_release(a, "k", 1, held.token));
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

/* ---- item: a process stopped while it holds a lock --------------------- */

/*
 * A child opens the store and stops itself (SIGSTOP) at a hook point inside
 * a critical section: holding a segment lock, the index lock, or the growth
 * lock. Calls from this process that need what it holds must fail with
 * SHMKV_ETIMEDOUT after the handle's lock timeout (not before, and well
 * within BOUND), change nothing, and leave everything else working. After
 * SIGCONT everything works again; after SIGKILL the next locker repairs as
 * it always did, also when the kill comes while it waits in a timed lock.
 */

#define TMO_MS 300u

enum stop_op { STOP_OVERWRITE, STOP_INSERT_TRACKED, STOP_GROW };

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

#define BIG (8u << 20)

typedef struct stopper {
    pid_t pid;
    int info; /* 'S' when stopped, 'D' when its operation finished */
    int cmd;  /* closing it lets the child close its handle and exit */
} stopper;

/* Fork a child that runs `op` on key `hot` and stops inside it at `point`;
 * returns once the child is stopped there. */
static stopper start_stopper(const char *where, shmkv_backend be, enum stop_op op,
                             const char *point, const char *hot)
{
    int info[2], cmd[2];
    cr_assert(pipe(info) == 0 && pipe(cmd) == 0);
    pid_t p = t_fork();
    if (p == 0) {
        close(info[0]);
        close(cmd[1]);
        shmkv_db *db = NULL;
        shmkv_options o = t_opts(be, 0);
        CHILD_OK(shmkv_open(where, &o, &db));
        t_hook_stop_at(point, info[1]);
        if (op == STOP_GROW) {
            char *v = malloc(BIG);
            CHILD_CHECK(v != NULL, "malloc");
            memset(v, 'g', BIG);
            CHILD_OK(shmkv_set(db, hot, strlen(hot), v, BIG, SHMKV_KIND_BYTES));
            free(v);
        } else {
            CHILD_OK(shmkv_set(db, hot, strlen(hot), "stopped", 7, SHMKV_KIND_STRING));
        }
        CHILD_CHECK(t_hook_fired(), "the operation never reached %s", point);
        char m = 'D';
        CHILD_CHECK(write(info[1], &m, 1) == 1, "done");
        CHILD_CHECK(read(cmd[0], &m, 1) == 0, "cmd");
        CHILD_OK(shmkv_close(db));
        _exit(0);
    }
    close(info[1]);
    close(cmd[0]);
    char m = 0;
    cr_assert_eq(fd_read_all(info[0], &m, 1), 1, "the child failed before %s", point);
    cr_assert_eq(m, 'S');
    int st = t_wait_stopped(p, BOUND);
    cr_assert(WIFSTOPPED(st), "child not stopped (status 0x%x)", st);
    return (stopper){p, info[0], cmd[1]};
}

static void resume_stopper(stopper *s)
{
    cr_assert(kill(s->pid, SIGCONT) == 0);
    char m = 0;
    cr_assert_eq(fd_read_all(s->info, &m, 1), 1, "the resumed child failed");
    cr_assert_eq(m, 'D');
    close(s->cmd);
    wait_bounded(s->pid, "the resumed child");
    close(s->info);
}

static uint32_t seg_of(shmkv_db *db, const char *k)
{
    return t_seg_of(db, k, strlen(k));
}

/* A key named prefix<n> whose segment is (same ? equal : unequal) to seg. */
static const char *key_in(shmkv_db *db, const char *prefix, uint32_t seg, bool same)
{
    static char ring[8][32];
    static int at;
    char *k = ring[at++ & 7];
    for (int i = 0;; i++) {
        snprintf(k, 32, "%s%d", prefix, i);
        if ((seg_of(db, k) == seg) == same)
            return k;
    }
}

static shmkv_db *open_with_timeout(const char *where, shmkv_backend be, int track, uint32_t ms)
{
    shmkv_options o = t_opts(be, track);
    o.segments = 4;
    o.lock_timeout_ms = ms;
    return t_open_opts(where, &o);
}

/* Run expr, which must fail with SHMKV_ETIMEDOUT after about ms. */
#define EXPECT_TIMEOUT(expr, ms)                                                            \
    do {                                                                                    \
        uint64_t t0_ = now_ms();                                                            \
        int rc_ = (int)(expr);                                                              \
        uint64_t dt_ = now_ms() - t0_;                                                      \
        cr_assert_eq(rc_, SHMKV_ETIMEDOUT, "%s -> %d (%s) after %" PRIu64 " ms, expected "  \
                     "SHMKV_ETIMEDOUT", #expr, rc_, shmkv_strerror(rc_), dt_);               \
        cr_assert(dt_ + 20 >= (ms) && dt_ < (ms) + BOUND * 1000u,                           \
                  "%s timed out after %" PRIu64 " ms; the timeout is %u ms", #expr, dt_,     \
                  (unsigned)(ms));                                                          \
    } while (0)

static void stopped_in_segment(shmkv_backend be)
{
    const char *where = t_where(be, "stopseg");
    shmkv_db *a = open_with_timeout(where, be, SHMKV_TRACK_OFF, TMO_MS);
    const char *hot = "hot";
    uint32_t hs = seg_of(a, hot);
    const char *same = key_in(a, "same", hs, true);
    const char *other = key_in(a, "other", hs, false);
    t_set(a, hot, "old");
    t_set(a, same, "s");
    t_set(a, other, "o");
    stopper s = start_stopper(where, be, STOP_OVERWRITE, "set.before_publish", hot);

    char buf[64];
    size_t n = 0;
    uint64_t cnt = 0;
    EXPECT_TIMEOUT(shmkv_get(a, same, strlen(same), buf, sizeof buf, &n, NULL), TMO_MS);
    EXPECT_TIMEOUT(shmkv_get(a, hot, strlen(hot), buf, sizeof buf, &n, NULL), TMO_MS);
    EXPECT_TIMEOUT(shmkv_set(a, same, strlen(same), "new", 3, SHMKV_KIND_STRING), TMO_MS);
    EXPECT_TIMEOUT(shmkv_exists(a, same, strlen(same)), TMO_MS);
    EXPECT_TIMEOUT(shmkv_delete(a, same, strlen(same), NULL), TMO_MS);
    const char *ctr = key_in(a, "ctr", hs, true);
    EXPECT_TIMEOUT(shmkv_incr(a, ctr, strlen(ctr), 1, SHMKV_KIND_STRING, NULL), TMO_MS);
    int swapped = 0;
    EXPECT_TIMEOUT(shmkv_cas(a, same, strlen(same), "s", 1, "c", 1, SHMKV_KIND_STRING, &swapped),
                   TMO_MS);
    EXPECT_TIMEOUT(shmkv_count(a, NULL, 0, &cnt), TMO_MS);
    EXPECT_TIMEOUT(shmkv_clear(a), TMO_MS);
    t_kvlist l;
    EXPECT_TIMEOUT(t_list_all(a, NULL, 0, 0, 0, &l), TMO_MS);
    t_kvlist_free(&l);
    /* size() never fails: it waits one timeout, then counts the stuck
     * segment without its lock */
    uint64_t t0 = now_ms();
    uint64_t sz = shmkv_size(a);
    cr_assert(now_ms() - t0 < TMO_MS + BOUND * 1000u);
    cr_assert(sz >= 3, "size() = %" PRIu64, sz);

    /* the other segments are not held up */
    t_expect_str(a, other, "o");
    t_set(a, key_in(a, "free", hs, false), "f");

    /* another process sees the same */
    pid_t p = t_fork();
    if (p == 0) {
        alarm(BOUND);
        shmkv_options o = t_opts(be, 0);
        o.lock_timeout_ms = TMO_MS;
        shmkv_db *db = NULL;
        CHILD_OK(shmkv_open(where, &o, &db));
        char b[16];
        size_t bn = 0;
        uint64_t t1 = now_ms();
        int rc = shmkv_get(db, same, strlen(same), b, sizeof b, &bn, NULL);
        CHILD_CHECK(rc == SHMKV_ETIMEDOUT && now_ms() - t1 + 20 >= TMO_MS, "get -> %d", rc);
        rc = shmkv_set(db, same, strlen(same), "x", 1, SHMKV_KIND_STRING);
        CHILD_CHECK(rc == SHMKV_ETIMEDOUT, "set -> %d", rc);
        uint64_t c = 0;
        rc = shmkv_count(db, NULL, 0, &c);
        CHILD_CHECK(rc == SHMKV_ETIMEDOUT, "count -> %d", rc);
        CHILD_OK(shmkv_get(db, other, strlen(other), b, sizeof b, &bn, NULL));
        CHILD_OK(shmkv_close(db));
        _exit(0);
    }
    wait_bounded(p, "a second process meeting the stopped holder");

    /* SIGCONT: the holder finishes, and the failed calls changed nothing */
    resume_stopper(&s);
    t_expect_str(a, hot, "stopped");
    t_expect_str(a, same, "s");
    T_OK(shmkv_count(a, NULL, 0, &cnt));
    cr_assert_eq(cnt, 4);
    t_set(a, same, "again");
    t_expect_str(a, same, "again");
    T_OK(shmkv_clear(a));
    cr_assert_eq(shmkv_size(a), 0);
    T_OK(shmkv_close(a));
}

Test(locks, stopped_segment_holder_times_out_disk) { stopped_in_segment(SHMKV_BACKEND_DISK); }
Test(locks, stopped_segment_holder_times_out_memory) { stopped_in_segment(SHMKV_BACKEND_MEMORY); }

/*
 * The same stopped holder against the calls that touch many keys, a prefix
 * or a random key. Each one that needs the held segment's lock must time
 * out like a single-key call, and a batch must not have written or deleted
 * its keys of the segments it could lock: all or nothing. The store is
 * tracked or not, because that decides which calls need the segment: with
 * the index, counting, listing keys and drawing random keys take only the
 * index lock, so those must answer instead.
 */

/* Bytes the region has handed out. A refused call must leave them as they
 * were; read without locks, which is sound while the only other writer is
 * stopped. */
static uint64_t used_bytes(shmkv_db *db)
{
    const shmkv__hdr *h = SHMKV__HDR(db->m);
    uint64_t n = shmkv__index_of(db->m)->alloc.used_bytes;
    for (uint32_t i = 0; i < h->nseg; i++)
        n += shmkv__seg_at(db->m, i)->alloc.used_bytes;
    return n;
}

static bool all_start_with(const t_kvlist *l, char c)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->a[i].kl == 0 || l->a[i].k[0] != c)
            return false;
    return true;
}

static void vs_batches(shmkv_backend be, int track)
{
    const bool tracked = track == SHMKV_TRACK_ON;
    const char *what = t_str("%s/%s", t_backend_name(be), tracked ? "tracked" : "untracked");
    const char *where = t_where(be, "stopbatch");
    shmkv_db *a = open_with_timeout(where, be, track, TMO_MS);
    const uint32_t nseg = SHMKV__HDR(a->m)->nseg;
    cr_assert_eq(nseg, 4);

    /* Keys starting with 'h' are all in the held segment, those with 'q'
     * one in each other segment, so a prefix chooses which segments a call
     * must visit. */
    const char *hot = "hot";
    const uint32_t hs = seg_of(a, hot);
    const char *hk = t_str("%s", key_in(a, "hb", hs, true));
    const char *hc = t_str("%s", key_in(a, "hc", hs, true));
    const char *nk = t_str("%s", key_in(a, "n", hs, false));
    const char *q[4], *qv[4];
    size_t nq = 0;
    for (uint32_t sg = 0; sg < nseg; sg++) {
        if (sg == hs)
            continue;
        q[nq] = t_str("%s", key_in(a, "q", sg, true));
        qv[nq] = t_str("o%u", sg);
        t_set(a, q[nq], qv[nq]);
        nq++;
    }
    t_set(a, hot, "old");
    t_set(a, hk, "h");
    t_set(a, hc, "c");
    const uint64_t nkeys = nq + 3;
    /* A claim ever made is what makes claim_count visit the segments; the
     * longest lease, so that it outlives a slow run. */
    shmkv_lease lease = {.ttl_ms = SHMKV_TTL_MAX_MS};
    shmkv_claim cl;
    T_OK(shmkv_claim_key(a, hc, strlen(hc), &lease, &cl, NULL, 0, NULL, NULL));
    const uint64_t token = cl.token;

    stopper s = start_stopper(where, be, STOP_OVERWRITE, "set.before_publish", hot);
    const uint64_t used0 = used_bytes(a);

    /* batches spanning the held segment and every other */
    shmkv_item set[6] = {{0}}, del[5] = {{0}}, get[5] = {{0}};
    size_t n = 0;
    for (size_t i = 0; i < nq; i++, n++) {
        set[n] = (shmkv_item){.key = q[i], .klen = strlen(q[i]), .val = "new", .vlen = 3};
        del[n] = (shmkv_item){.key = q[i], .klen = strlen(q[i])};
        get[n] = del[n];
    }
    set[n] = (shmkv_item){.key = hk, .klen = strlen(hk), .val = "new", .vlen = 3};
    del[n] = (shmkv_item){.key = hk, .klen = strlen(hk)};
    get[n] = del[n];
    n++;
    set[n] = (shmkv_item){.key = nk, .klen = strlen(nk), .val = "new", .vlen = 3};
    size_t bad = 99;
    uint64_t deleted = 99;
    char buf[256];
    size_t need = 0;
    EXPECT_TIMEOUT(shmkv_set_many(a, set, n + 1, &bad), TMO_MS);
    EXPECT_TIMEOUT(shmkv_delete_many(a, del, n, &deleted, &bad), TMO_MS);
    /* every segment's lock, even where no key has the prefix */
    EXPECT_TIMEOUT(shmkv_delete_prefix(a, "q", 1, 0, &deleted), TMO_MS);
    EXPECT_TIMEOUT(shmkv_delete_prefix(a, NULL, 0, 0, &deleted), TMO_MS);
    /* lock-free first, then under the locks, which the held one stops */
    EXPECT_TIMEOUT(shmkv_get_many(a, get, n, buf, sizeof buf, &need, &bad), TMO_MS);

    /* claims read and write under the key's segment lock; drawing among
     * the 'h' keys always ends in the held segment, tracked or not */
    char kb[64], vb[64];
    size_t kl = 0, vl = 0;
    uint64_t live = 0, expired = 0;
    EXPECT_TIMEOUT(shmkv_claim_key(a, hk, strlen(hk), &lease, &cl, NULL, 0, NULL, NULL), TMO_MS);
    EXPECT_TIMEOUT(shmkv_claim_get(a, hc, strlen(hc), &cl, NULL, 0, NULL), TMO_MS);
    EXPECT_TIMEOUT(shmkv_claim_release(a, hc, strlen(hc), token), TMO_MS);
    EXPECT_TIMEOUT(shmkv_claim_complete(a, hc, strlen(hc), token, 1), TMO_MS);
    EXPECT_TIMEOUT(shmkv_claim_renew(a, hc, strlen(hc), token, &lease, &cl), TMO_MS);
    EXPECT_TIMEOUT(shmkv_claim_count(a, NULL, 0, &live, &expired), TMO_MS);
    EXPECT_TIMEOUT(shmkv_claim_random(a, "h", 1, &lease, kb, sizeof kb, &kl, &cl, vb, sizeof vb,
                                      &vl, NULL),
                   TMO_MS);
    EXPECT_TIMEOUT(shmkv_pop_random(a, "h", 1, kb, sizeof kb, &kl, vb, sizeof vb, &vl, NULL),
                   TMO_MS);

    /* values of the held segment's keys need its lock, with the index too */
    t_kvlist l = {0};
    EXPECT_TIMEOUT(shmkv_scan(a, "h", 1, NULL, 0, 0, 0, t_collect, &l), TMO_MS);
    t_kvlist_free(&l);
    if (!tracked) {
        /* the tables: every segment, whatever the prefix */
        EXPECT_TIMEOUT(shmkv_scan(a, "q", 1, NULL, 0, 0, SHMKV_LIST_KEYS_ONLY, t_collect, &l),
                       TMO_MS);
        t_kvlist_free(&l);
        EXPECT_TIMEOUT(shmkv_random_keys(a, NULL, 0, 2, 1, t_collect, &l), TMO_MS);
        t_kvlist_free(&l);
        /* No 'h' key is outside the held segment: a draw either lands there
         * or misses, and after the misses the count visits every segment. */
        EXPECT_TIMEOUT(shmkv_random_key(a, "h", 1, kb, sizeof kb, &kl), TMO_MS);
        EXPECT_TIMEOUT(shmkv_random_keys(a, "h", 1, 2, 0, t_collect, &l), TMO_MS);
        t_kvlist_free(&l);
    } else {
        /* the index alone answers these */
        uint64_t cnt = 0;
        T_OK(shmkv_count(a, "q", 1, &cnt));
        cr_assert_eq(cnt, nq, "%s: count(q) = %" PRIu64, what, cnt);
        T_OK(shmkv_scan(a, NULL, 0, NULL, 0, 0, SHMKV_LIST_KEYS_ONLY, t_collect, &l));
        cr_assert_eq(l.n, nkeys, "%s: keys-only scan saw %zu keys", what, l.n);
        t_kvlist_free(&l);
        T_OK(shmkv_random_key(a, "h", 1, kb, sizeof kb, &kl));
        cr_assert(kl > 0 && kb[0] == 'h', "%s: random_key(h) drew %s", what, t_show(kb, kl));
        T_OK(shmkv_random_keys(a, "h", 1, 2, 1, t_collect, &l));
        cr_assert(l.n == 2 && all_start_with(&l, 'h'), "%s: random_keys(h) drew %zu", what, l.n);
        t_kvlist_free(&l);
        /* values only from segments that are free */
        T_OK(shmkv_scan(a, "q", 1, NULL, 0, 0, 0, t_collect, &l));
        cr_assert_eq(l.n, nq, "%s: scan(q) saw %zu keys", what, l.n);
        t_kvlist_free(&l);
    }

    /* a batch that avoids the held segment is not held up */
    T_OK(shmkv_get_many(a, get, nq, buf, sizeof buf, &need, &bad));
    for (size_t i = 0; i < nq; i++)
        cr_assert(get[i].rc == 0 && get[i].vlen == strlen(qv[i]) &&
                      memcmp(get[i].val, qv[i], get[i].vlen) == 0,
                  "%s: get_many(%s) -> %d, %zu bytes", what, q[i], get[i].rc, get[i].vlen);

    /* still stopped: the refused batches wrote and deleted nothing where
     * they held the locks */
    for (size_t i = 0; i < nq; i++)
        t_expect_str(a, q[i], qv[i]);
    t_expect_absent(a, nk, strlen(nk));
    cr_assert_eq(used_bytes(a), used0, "%s: the refused calls changed the space in use", what);

    resume_stopper(&s);
    t_expect_str(a, hot, "stopped");
    t_expect_str(a, hk, "h");
    t_expect_str(a, hc, "c");
    for (size_t i = 0; i < nq; i++)
        t_expect_str(a, q[i], qv[i]);
    t_expect_absent(a, nk, strlen(nk));
    T_OK(shmkv_claim_get(a, hc, strlen(hc), &cl, NULL, 0, NULL));
    cr_assert_eq(cl.token, token, "%s: the claim on %s changed", what, hc);
    T_OK(shmkv_claim_count(a, NULL, 0, &live, &expired));
    cr_assert(live == 1 && expired == 0, "%s: %" PRIu64 " live, %" PRIu64 " expired claims", what,
              live, expired);
    uint64_t cnt = 0;
    T_OK(shmkv_count(a, NULL, 0, &cnt));
    cr_assert_eq(cnt, nkeys, "%s: %" PRIu64 " keys", what, cnt);

    /* and the same batch goes through now */
    T_OK(shmkv_set_many(a, set, n + 1, &bad));
    for (size_t i = 0; i < n + 1; i++)
        t_expect_str(a, set[i].key, "new");
    t_check_sound(a, what);
    T_OK(shmkv_close(a));
    if (be == SHMKV_BACKEND_DISK)
        t_dump_sound(where, be);
}

Test(locks, stopped_holder_vs_batches_disk)
{
    vs_batches(SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF);
    vs_batches(SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
}

Test(locks, stopped_holder_vs_batches_memory)
{
    vs_batches(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_OFF);
    vs_batches(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_ON);
}

/* The holder stops inside an index insert (segment lock and index lock):
 * an insert into another segment needs the index lock and times out, and
 * the segment lock it took meanwhile is given back. */
Test(locks, stopped_index_holder_times_out)
{
    const char *where = t_path("stopidx");
    shmkv_db *a = open_with_timeout(where, SHMKV_BACKEND_DISK, SHMKV_TRACK_ON, TMO_MS);
    const char *hot = "hot";
    uint32_t hs = seg_of(a, hot);
    const char *other = key_in(a, "other", hs, false);
    t_set(a, other, "o");
    stopper s = start_stopper(where, SHMKV_BACKEND_DISK, STOP_INSERT_TRACKED, "index.insert.mid",
                              hot);
    const char *fresh = key_in(a, "fresh", hs, false);
    EXPECT_TIMEOUT(shmkv_set(a, fresh, strlen(fresh), "x", 1, SHMKV_KIND_STRING), TMO_MS);
    char kb[64];
    size_t kl = 0;
    EXPECT_TIMEOUT(shmkv_random_key(a, NULL, 0, kb, sizeof kb, &kl), TMO_MS);
    EXPECT_TIMEOUT(shmkv_rebuild_index(a), TMO_MS);
    /* the insert's segment lock was dropped: updates there still work */
    t_set(a, other, "o2");
    t_expect_absent(a, fresh, strlen(fresh));
    resume_stopper(&s);
    t_set(a, fresh, "x");
    t_kvlist l;
    T_OK(t_list_all(a, NULL, 0, 0, 0, &l));
    cr_assert_eq(l.n, 3);
    t_kvlist_free(&l);
    T_OK(shmkv_close(a));
}

/* The holder stops inside growth (its segment lock and the growth lock):
 * a write that needs a new chunk times out. */
Test(locks, stopped_grow_holder_times_out)
{
    const char *where = t_name("stopgrow");
    shmkv_db *a = open_with_timeout(where, SHMKV_BACKEND_MEMORY, SHMKV_TRACK_OFF, TMO_MS);
    const char *hot = "hot";
    uint32_t hs = seg_of(a, hot);
    const char *other = key_in(a, "other", hs, false);
    t_set(a, other, "o");
    stopper s = start_stopper(where, SHMKV_BACKEND_MEMORY, STOP_GROW, "grow.after_fallocate", hot);
    char *v = malloc(BIG);
    cr_assert(v);
    memset(v, 'w', BIG);
    const char *big = key_in(a, "big", hs, false);
    uint64_t t0 = now_ms();
    int rc = shmkv_set(a, big, strlen(big), v, BIG, SHMKV_KIND_BYTES);
    uint64_t dt = now_ms() - t0;
    cr_assert_eq(rc, SHMKV_ETIMEDOUT, "set of a big value -> %d (%s)", rc, shmkv_strerror(rc));
    cr_assert(dt + 20 >= TMO_MS && dt < TMO_MS + BOUND * 1000u, "%" PRIu64 " ms", dt);
    t_expect_absent(a, big, strlen(big));
    t_expect_str(a, other, "o");
    resume_stopper(&s);
    t_setb(a, big, strlen(big), v, BIG);
    t_expect(a, big, strlen(big), v, BIG);
    free(v);
    T_OK(shmkv_close(a));
}

/* Killed while stopped: the next locker repairs, whether it finds the dead
 * owner at once or is already waiting in a timed lock when the kill comes. */
Test(locks, stopped_holder_killed_is_repaired)
{
    const char *where = t_path("stopkill");
    shmkv_db *a = open_with_timeout(where, SHMKV_BACKEND_DISK, SHMKV_TRACK_ON, TMO_MS);
    const char *hot = "hot";
    uint32_t hs = seg_of(a, hot);
    const char *same = key_in(a, "same", hs, true);
    t_set(a, hot, "old");
    t_set(a, same, "s");
    stopper s = start_stopper(where, SHMKV_BACKEND_DISK, STOP_OVERWRITE, "set.before_publish",
                              hot);
    char buf[16];
    size_t n = 0;
    EXPECT_TIMEOUT(shmkv_get(a, same, strlen(same), buf, sizeof buf, &n, NULL), TMO_MS);
    uint64_t rec0 = atomic_load(&SHMKV__HDR(a->m)->recoveries);

    /* a waiter with a long timeout; the holder dies while it waits */
    int ready[2];
    cr_assert(pipe(ready) == 0);
    pid_t w = t_fork();
    if (w == 0) {
        close(ready[0]);
        alarm(BOUND);
        shmkv_options o = t_opts(SHMKV_BACKEND_DISK, 0);
        o.lock_timeout_ms = BOUND * 1000u;
        shmkv_db *db = NULL;
        CHILD_OK(shmkv_open(where, &o, &db));
        char c = 'R';
        CHILD_CHECK(write(ready[1], &c, 1) == 1, "ready");
        char b[16];
        size_t bn = 0;
        CHILD_OK(shmkv_get(db, hot, strlen(hot), b, sizeof b, &bn, NULL));
        CHILD_CHECK(bn == 3 && memcmp(b, "old", 3) == 0, "hot after the kill: %.*s", (int)bn, b);
        CHILD_OK(shmkv_close(db));
        _exit(0);
    }
    close(ready[1]);
    char c;
    cr_assert_eq(fd_read_all(ready[0], &c, 1), 1);
    usleep(300 * 1000); /* let it block in the timed lock */
    close(s.cmd);
    close(s.info);
    t_kill(s.pid);
    wait_bounded(w, "a waiter whose lock holder was killed");
    cr_assert(atomic_load(&SHMKV__HDR(a->m)->recoveries) > rec0, "no repair was counted");

    t_expect_str(a, hot, "old");
    t_expect_str(a, same, "s");
    uint64_t cnt = 0;
    T_OK(shmkv_count(a, NULL, 0, &cnt));
    cr_assert_eq(cnt, 2);
    t_kvlist l;
    T_OK(t_list_all(a, NULL, 0, 0, 0, &l));
    cr_assert_eq(l.n, 2);
    t_kvlist_free(&l);
    t_set(a, same, "s2");
    T_OK(shmkv_close(a));
}

/* lock_timeout_ms = 0 is the documented default; SHMKV_LOCK_TIMEOUT_NONE
 * waits for as long as the holder is stopped. */
Test(locks, stopped_holder_default_and_no_timeout, .timeout = 240)
{
    const char *where = t_name("stopdef");
    shmkv_db *a = open_with_timeout(where, SHMKV_BACKEND_MEMORY, SHMKV_TRACK_OFF, 0);
    const char *hot = "hot";
    t_set(a, hot, "old");
    stopper s = start_stopper(where, SHMKV_BACKEND_MEMORY, STOP_OVERWRITE, "set.before_publish",
                              hot);
    char buf[16];
    size_t n = 0;
    EXPECT_TIMEOUT(shmkv_get(a, hot, strlen(hot), buf, sizeof buf, &n, NULL),
                   SHMKV_LOCK_TIMEOUT_DEFAULT_MS);

    pid_t w = t_fork();
    if (w == 0) {
        alarm(BOUND + 10);
        shmkv_options o = t_opts(SHMKV_BACKEND_MEMORY, 0);
        o.lock_timeout_ms = SHMKV_LOCK_TIMEOUT_NONE;
        shmkv_db *db = NULL;
        CHILD_OK(shmkv_open(where, &o, &db));
        char b[16];
        size_t bn = 0;
        CHILD_OK(shmkv_get(db, hot, strlen(hot), b, sizeof b, &bn, NULL));
        CHILD_CHECK(bn == 7 && memcmp(b, "stopped", 7) == 0, "hot: %.*s", (int)bn, b);
        CHILD_OK(shmkv_close(db));
        _exit(0);
    }
    /* still waiting well past the default timeout's scale of things */
    usleep(1500 * 1000);
    cr_assert_eq(waitpid(w, NULL, WNOHANG), 0, "a reader without a timeout gave up");
    resume_stopper(&s);
    wait_bounded(w, "a reader without a timeout, after SIGCONT");
    T_OK(shmkv_close(a));
}

Test(locks, timeout_error_is_explained)
{
    cr_assert_eq(SHMKV_ETIMEDOUT, -24716);
    cr_assert(SHMKV_ERR_LAST <= SHMKV_ETIMEDOUT, "SHMKV_ETIMEDOUT inside the library's range");
    cr_assert(strstr(shmkv_strerror(SHMKV_ETIMEDOUT), "lock timeout") != NULL,
              "%s", shmkv_strerror(SHMKV_ETIMEDOUT));
    uint64_t n = 7;
    T_RC(shmkv_count(NULL, NULL, 0, &n), SHMKV_EINVAL);
    cr_assert_eq(n, 7);
}
