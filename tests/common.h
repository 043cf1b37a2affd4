/*
 * common.h - helpers shared by the libshmkv Criterion tests.
 *
 * Every test file includes this once and declares its suite with
 *
 *     TestSuite(name, .init = t_setup, .fini = t_teardown, .timeout = N);
 *
 * Cleanup rules (tests leave nothing behind, even when they fail):
 *  - t_setup() makes a private directory /tmp/shmkv-test.<pid>.XXXXXX and
 *    chdirs into it; disk stores live there (t_path()).
 *  - memory-backend names made by t_name() all start with "t<pid>x", so the
 *    objects are /dev/shm/shmkv.t<pid>x*.
 *  - t_teardown() (Criterion runs it after a failed assertion too) kills and
 *    reaps the children forked with t_fork(), unlinks the memory objects and
 *    removes the directory.
 *  - Criterion does NOT run .fini when a test times out or crashes, so
 *    t_setup() also starts a tiny janitor (/bin/sh, in its own session) that
 *    blocks reading a pipe whose only write ends live in the test process
 *    and its children; when all of them are gone it removes the same
 *    directory and objects and exits. Children get PR_SET_PDEATHSIG(SIGKILL)
 *    so none outlives the test process.
 *  - Children forked by a test never use cr_assert (they are not Criterion
 *    workers); they check with CHILD_CHECK() and always leave with _exit().
 */
#ifndef SHMKV_TEST_COMMON_H
#define SHMKV_TEST_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "shmkv.h"
#include "fdio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ---- sanitizer detection --------------------------------------------- */

#if defined(__SANITIZE_THREAD__)
#define T_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define T_TSAN 1
#endif
#endif
#ifndef T_TSAN
#define T_TSAN 0
#endif

#if defined(__SANITIZE_ADDRESS__)
#define T_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define T_ASAN 1
#endif
#endif
#ifndef T_ASAN
#define T_ASAN 0
#endif

#if defined(__OPTIMIZE__)
#define T_OPTIMIZED 1
#else
#define T_OPTIMIZED 0
#endif

#define T_UNUSED __attribute__((unused))


/*
 * Work scale for the heavy tests. SHMKV_TEST_SCALE (a positive number,
 * e.g. 0.1) overrides it; without it the default build runs at full size
 * and sanitizer builds, which are 3-15x slower, at a reduced size so the
 * suite stays within its time limits. Every scaled test still asserts on
 * whatever size it ran.
 */
static T_UNUSED double t_scale(void)
{
    const char *s = getenv("SHMKV_TEST_SCALE");
    if (s && *s) {
        double v = strtod(s, NULL);
        if (v > 0)
            return v;
    }
#if T_TSAN
    return 0.25;
#elif T_ASAN
    return 0.5;
#else
    return T_OPTIMIZED ? 1.0 : 0.5;
#endif
}

static T_UNUSED uint64_t t_scaled(uint64_t n, uint64_t min)
{
    double v = (double)n * t_scale();
    uint64_t r = (uint64_t)v;
    return r < min ? min : r;
}

/* ---- deterministic randomness ---------------------------------------- */

typedef struct { uint64_t s; } t_rng;

static T_UNUSED uint64_t t_next(t_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static T_UNUSED uint64_t t_below(t_rng *r, uint64_t n)
{
    return n ? t_next(r) % n : 0; /* the bias is irrelevant for test data */
}

/* Seed from SHMKV_TEST_SEED or the clock; logged so a failure can be
 * replayed. */
static T_UNUSED t_rng t_rng_new(void)
{
    const char *s = getenv("SHMKV_TEST_SEED");
    uint64_t seed;
    if (s && *s) {
        seed = strtoull(s, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
    }
    cr_log_info("random seed: SHMKV_TEST_SEED=0x%" PRIx64, seed);
    return (t_rng){seed};
}

/* ---- per-test context and cleanup ------------------------------------ */

#define T_MAX_KIDS 64

static struct {
    pid_t pid;
    int seq;
    int janitor_wfd;
    pid_t janitor;
    pid_t kids[T_MAX_KIDS];
    char dir[128];
    char shm_prefix[48]; /* "shmkv.t<pid>x" as found in /dev/shm */
    char name_prefix[40]; /* "t<pid>x" as passed to shmkv_open */
    char *strs[256];     /* strings handed out by t_path/t_name */
    int nstrs;
} t_ctx;

static int t_in_child; /* set in children made by t_fork() */

static int t__rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(p);
    return 0;
}

static void t__unlink_shm(void)
{
    DIR *d = opendir("/dev/shm");
    if (!d)
        return;
    struct dirent *e;
    size_t n = strlen(t_ctx.shm_prefix);
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, t_ctx.shm_prefix, n) == 0)
            unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
}

static void t__start_janitor(void)
{
    int p[2];
    t_ctx.janitor_wfd = -1;
    t_ctx.janitor = 0;
    if (pipe2(p, O_CLOEXEC) != 0)
        return;
    char script[512];
    snprintf(script, sizeof script,
             "trap '' HUP INT TERM PIPE; cat >/dev/null; rm -rf '%s'; rm -f /dev/shm/%s*",
             t_ctx.dir, t_ctx.shm_prefix);
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[0], 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID);
    char *argv[] = {"/bin/sh", "-c", script, NULL};
    pid_t pid;
    if (posix_spawn(&pid, "/bin/sh", &fa, &at, argv, environ) == 0)
        t_ctx.janitor = pid;
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(p[0]);
    if (t_ctx.janitor)
        t_ctx.janitor_wfd = p[1];
    else
        close(p[1]);
}

static T_UNUSED void t_setup(void)
{
    memset(&t_ctx, 0, sizeof t_ctx);
    t_ctx.pid = getpid();
    snprintf(t_ctx.name_prefix, sizeof t_ctx.name_prefix, "t%dx", (int)t_ctx.pid);
    snprintf(t_ctx.shm_prefix, sizeof t_ctx.shm_prefix, "shmkv.%s", t_ctx.name_prefix);
    t__unlink_shm(); /* leftovers of an earlier process with this pid */
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp || strlen(tmp) > 60)
        tmp = "/tmp";
    snprintf(t_ctx.dir, sizeof t_ctx.dir, "%s/shmkv-test.%d.XXXXXX", tmp, (int)t_ctx.pid);
    cr_assert(mkdtemp(t_ctx.dir) != NULL, "mkdtemp: %s", strerror(errno));
    cr_assert(chdir(t_ctx.dir) == 0);
    t__start_janitor();
}

static T_UNUSED void t_teardown(void)
{
    if (t_in_child || getpid() != t_ctx.pid)
        _exit(97); /* a child returned into Criterion: never clean up from there */
    for (int i = 0; i < T_MAX_KIDS; i++) {
        if (t_ctx.kids[i] > 0) {
            kill(t_ctx.kids[i], SIGKILL);
            waitpid(t_ctx.kids[i], NULL, 0);
            t_ctx.kids[i] = 0;
        }
    }
    if (chdir("/") != 0) {
        /* nothing to do: removal below uses absolute paths */
    }
    t__unlink_shm();
    if (t_ctx.dir[0])
        nftw(t_ctx.dir, t__rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    for (int i = 0; i < t_ctx.nstrs; i++)
        free(t_ctx.strs[i]);
    t_ctx.nstrs = 0;
    if (t_ctx.janitor_wfd >= 0) {
        close(t_ctx.janitor_wfd);
        t_ctx.janitor_wfd = -1;
        /* The janitor sees EOF now (all children are reaped); wait for it
         * briefly so that no process outlives the test. */
        for (int i = 0; i < 200; i++) {
            if (waitpid(t_ctx.janitor, NULL, WNOHANG) != 0)
                break;
            usleep(10000);
        }
    }
}

static char *t__keep(char *s)
{
    cr_assert(s != NULL);
    cr_assert(t_ctx.nstrs < 256, "too many t_path/t_name strings");
    t_ctx.strs[t_ctx.nstrs++] = s;
    return s;
}

/* A fresh path for a disk store inside the test's directory. */
static T_UNUSED const char *t_path(const char *tag)
{
    char *s = NULL;
    cr_assert(asprintf(&s, "%s/%s.%d.kv", t_ctx.dir, tag, ++t_ctx.seq) > 0);
    return t__keep(s);
}

/* A fresh memory-backend name ("t<pid>x<seq>.<tag>"). */
static T_UNUSED const char *t_name(const char *tag)
{
    char *s = NULL;
    cr_assert(asprintf(&s, "%s%d.%s", t_ctx.name_prefix, ++t_ctx.seq, tag) > 0);
    return t__keep(s);
}

/* Path of the /dev/shm object behind a memory name. */
static T_UNUSED const char *t_shm_file(const char *name)
{
    char *s = NULL;
    cr_assert(asprintf(&s, "/dev/shm/shmkv.%s", name) > 0);
    return t__keep(s);
}

static T_UNUSED const char *t_where(shmkv_backend be, const char *tag)
{
    return be == SHMKV_BACKEND_MEMORY ? t_name(tag) : t_path(tag);
}

static T_UNUSED const char *t_backend_name(shmkv_backend be)
{
    return be == SHMKV_BACKEND_MEMORY ? "memory" : "disk";
}

/* ---- children --------------------------------------------------------- */

/* fork(); returns 0 in the child, which dies with the test process. */
static T_UNUSED pid_t t_fork(void)
{
    pid_t parent = getpid();
    fflush(NULL);
    pid_t p = fork();
    cr_assert(p >= 0, "fork: %s", strerror(errno));
    if (p == 0) {
        t_in_child = 1;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(98);
        return 0;
    }
    for (int i = 0; i < T_MAX_KIDS; i++) {
        if (t_ctx.kids[i] == 0) {
            t_ctx.kids[i] = p;
            return p;
        }
    }
    kill(p, SIGKILL);
    waitpid(p, NULL, 0);
    cr_assert_fail("too many children");
    return -1;
}

static T_UNUSED void t__forget_kid(pid_t p)
{
    for (int i = 0; i < T_MAX_KIDS; i++)
        if (t_ctx.kids[i] == p)
            t_ctx.kids[i] = 0;
}

/* Wait for a child; returns its wait status. */
static T_UNUSED int t_wait(pid_t p)
{
    int st = 0;
    pid_t r;
    do {
        r = waitpid(p, &st, 0);
    } while (r < 0 && errno == EINTR);
    cr_assert_eq(r, p, "waitpid(%d): %s", (int)p, strerror(errno));
    t__forget_kid(p);
    return st;
}

static T_UNUSED const char *t_status_str(int st, char *buf, size_t n)
{
    if (WIFEXITED(st))
        snprintf(buf, n, "exited with %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, n, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(buf, n, "status 0x%x", st);
    return buf;
}

/* Wait for a child and assert it exited with status 0. */
static T_UNUSED void t_wait_ok(pid_t p, const char *what)
{
    int st = t_wait(p);
    char b[96];
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %s (pid %d) %s", what, (int)p,
              t_status_str(st, b, sizeof b));
}

/* SIGKILL a child and reap it. */
static T_UNUSED void t_kill(pid_t p)
{
    kill(p, SIGKILL);
    int st = t_wait(p);
    char b[96];
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "child %d: %s", (int)p,
              t_status_str(st, b, sizeof b));
}

/* Checks inside a forked child: print and _exit(3) on failure. */
#define CHILD_CHECK(cond, ...)                                                             \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "child %d: %s:%d: check failed: %s: ", (int)getpid(), __FILE__, \
                    __LINE__, #cond);                                                      \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
            fflush(stderr);                                                                \
            _exit(3);                                                                      \
        }                                                                                  \
    } while (0)

#define CHILD_OK(expr)                                                                     \
    do {                                                                                   \
        int c_rc_ = (expr);                                                                \
        CHILD_CHECK(c_rc_ == 0, "%s -> %d (%s)", #expr, c_rc_, shmkv_strerror(c_rc_));     \
    } while (0)

/* ---- store helpers ---------------------------------------------------- */

#define T_OK(expr)                                                                         \
    do {                                                                                   \
        int t_rc_ = (expr);                                                                \
        cr_assert_eq(t_rc_, 0, "%s -> %d (%s)", #expr, t_rc_, shmkv_strerror(t_rc_));      \
    } while (0)

#define T_RC(expr, want)                                                                   \
    do {                                                                                   \
        int t_rc_ = (expr);                                                                \
        int t_w_ = (want);                                                                 \
        cr_assert_eq(t_rc_, t_w_, "%s -> %d (%s), expected %d (%s)", #expr, t_rc_,         \
                     shmkv_strerror(t_rc_), t_w_, shmkv_strerror(t_w_));                   \
    } while (0)

static T_UNUSED shmkv_options t_opts(shmkv_backend be, int track)
{
    shmkv_options o;
    memset(&o, 0, sizeof o);
    o.backend = be;
    o.track_keys = track;
    return o;
}

static T_UNUSED shmkv_db *t_open_opts(const char *where, const shmkv_options *o)
{
    shmkv_db *db = NULL;
    int rc = shmkv_open(where, o, &db);
    cr_assert_eq(rc, 0, "shmkv_open(%s) -> %d (%s)", where ? where : "(null)", rc,
                 shmkv_strerror(rc));
    cr_assert(db != NULL);
    return db;
}

static T_UNUSED shmkv_db *t_open(const char *where, shmkv_backend be, int track)
{
    shmkv_options o = t_opts(be, track);
    return t_open_opts(where, &o);
}

static T_UNUSED void t_close(shmkv_db *db)
{
    T_OK(shmkv_close(db));
}

static T_UNUSED void t_set(shmkv_db *db, const char *k, const char *v)
{
    int rc = shmkv_set(db, k, strlen(k), v, strlen(v), SHMKV_KIND_STRING);
    cr_assert_eq(rc, 0, "set(%s) -> %d (%s)", k, rc, shmkv_strerror(rc));
}

static T_UNUSED void t_setb(shmkv_db *db, const void *k, size_t kl, const void *v, size_t vl)
{
    int rc = shmkv_set(db, k, kl, v, vl, SHMKV_KIND_BYTES);
    cr_assert_eq(rc, 0, "set(%zu-byte key) -> %d (%s)", kl, rc, shmkv_strerror(rc));
}

/* Printable rendering of a binary key for messages (static ring buffer). */
static T_UNUSED const char *t_show(const void *p, size_t n)
{
    static char ring[4][200];
    static int at;
    char *o = ring[at++ & 3];
    const unsigned char *c = p;
    size_t j = 0;
    for (size_t i = 0; i < n && j + 5 < sizeof ring[0]; i++) {
        if (c[i] >= 0x20 && c[i] < 0x7f && c[i] != '\\')
            o[j++] = (char)c[i];
        else
            j += (size_t)snprintf(o + j, sizeof ring[0] - j, "\\x%02x", c[i]);
    }
    if (n && j + 5 >= sizeof ring[0])
        memcpy(o + j, "...", 4), j += 3;
    o[j] = 0;
    return o;
}

/* Assert key holds exactly (v, vl) (and kind, unless kind < 0). */
static T_UNUSED void t_expect_kind(shmkv_db *db, const void *k, size_t kl, const void *v, size_t vl,
                                   int kind)
{
    size_t cap = vl + 16;
    unsigned char *buf = malloc(cap);
    cr_assert(buf);
    size_t got = (size_t)-1;
    shmkv_kind gk = (shmkv_kind)-1;
    int rc = shmkv_get(db, k, kl, buf, cap, &got, &gk);
    if (rc != 0) {
        free(buf);
        cr_assert_fail("get(%s) -> %d (%s), expected a %zu-byte value", t_show(k, kl), rc,
                       shmkv_strerror(rc), vl);
    }
    bool same = got == vl && (vl == 0 || memcmp(buf, v, vl) == 0);
    char shown[200];
    snprintf(shown, sizeof shown, "%s", t_show(buf, got < cap ? got : cap));
    free(buf);
    cr_assert(same, "get(%s) = \"%s\" (%zu bytes), expected \"%s\" (%zu bytes)", t_show(k, kl),
              shown, got, t_show(v, vl), vl);
    if (kind >= 0)
        cr_assert_eq((int)gk, kind, "get(%s) kind %d, expected %d", t_show(k, kl), (int)gk, kind);
}

static T_UNUSED void t_expect(shmkv_db *db, const void *k, size_t kl, const void *v, size_t vl)
{
    t_expect_kind(db, k, kl, v, vl, -1);
}

static T_UNUSED void t_expect_str(shmkv_db *db, const char *k, const char *v)
{
    t_expect_kind(db, k, strlen(k), v, strlen(v), -1);
}

static T_UNUSED void t_expect_absent(shmkv_db *db, const void *k, size_t kl)
{
    unsigned char b[8];
    size_t got = 0;
    int rc = shmkv_get(db, k, kl, b, sizeof b, &got, NULL);
    cr_assert_eq(rc, SHMKV_ENOTFOUND, "get(%s) -> %d (%s), expected SHMKV_ENOTFOUND",
                 t_show(k, kl), rc, shmkv_strerror(rc));
    rc = shmkv_exists(db, k, kl);
    cr_assert_eq(rc, 0, "exists(%s) -> %d, expected 0", t_show(k, kl), rc);
}

/* ---- listing into memory ---------------------------------------------- */

typedef struct t_kv {
    unsigned char *k;
    size_t kl;
    unsigned char *v; /* NULL when the callback got NULL */
    size_t vl;
    int kind;
} t_kv;

typedef struct t_kvlist {
    t_kv *a;
    size_t n, cap;
    size_t calls;
    size_t stop_after; /* 0: never stop */
    int stop_value;
} t_kvlist;

static T_UNUSED int t_collect(void *ctx, const void *key, size_t klen, const void *val, size_t vlen,
                              shmkv_kind kind)
{
    t_kvlist *l = ctx;
    l->calls++;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        t_kv *na = realloc(l->a, nc * sizeof *na);
        if (!na)
            abort();
        l->a = na;
        l->cap = nc;
    }
    t_kv *e = &l->a[l->n++];
    e->kl = klen;
    e->k = malloc(klen ? klen : 1);
    if (!e->k)
        abort();
    memcpy(e->k, key, klen);
    e->vl = vlen;
    e->kind = (int)kind;
    if (val) {
        e->v = malloc(vlen ? vlen : 1);
        if (!e->v)
            abort();
        if (vlen)
            memcpy(e->v, val, vlen);
    } else {
        e->v = NULL;
    }
    if (l->stop_after && l->calls >= l->stop_after)
        return l->stop_value;
    return 0;
}

static T_UNUSED void t_kvlist_free(t_kvlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->a[i].k);
        free(l->a[i].v);
    }
    free(l->a);
    memset(l, 0, sizeof *l);
}

static T_UNUSED int t_keycmp(const void *a, size_t al, const void *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c < 0 ? -1 : 1;
    return al < bl ? -1 : al > bl;
}

/* List everything (with values); returns shmkv_list's result. */
static T_UNUSED int t_list_all(shmkv_db *db, const void *prefix, size_t plen, uint64_t limit,
                               unsigned flags, t_kvlist *out)
{
    memset(out, 0, sizeof *out);
    return shmkv_list(db, prefix, plen, limit, flags, t_collect, out);
}

/* Assert that a listing is strictly increasing in memcmp order. */
static T_UNUSED void t_assert_sorted(const t_kvlist *l)
{
    for (size_t i = 1; i < l->n; i++) {
        int c = t_keycmp(l->a[i - 1].k, l->a[i - 1].kl, l->a[i].k, l->a[i].kl);
        cr_assert(c < 0, "list not strictly sorted at %zu: %s then %s", i,
                  t_show(l->a[i - 1].k, l->a[i - 1].kl), t_show(l->a[i].k, l->a[i].kl));
    }
}

/* ---- files ------------------------------------------------------------ */

static T_UNUSED unsigned char *t_read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    cr_assert(fd >= 0, "open(%s): %s", path, strerror(errno));
    struct stat st;
    cr_assert(fstat(fd, &st) == 0);
    size_t n = (size_t)st.st_size;
    unsigned char *b = malloc(n ? n : 1);
    cr_assert(b);
    cr_assert_eq(fd_read_all(fd, b, n), (ssize_t)n, "read(%s)", path);
    close(fd);
    *len = n;
    return b;
}

/* shmkv-dump --check on a store (memory: by name); meson passes the tool as
 * SHMKV_DUMP. Fails the test with the tool's output. */
static T_UNUSED void t_dump_check(const char *where, shmkv_backend be)
{
    const char *dump = getenv("SHMKV_DUMP");
    cr_assert(dump && access(dump, X_OK) == 0,
              "SHMKV_DUMP must name shmkv-dump (meson test sets it)");
    char out[256];
    snprintf(out, sizeof out, "dump.%d.out", (int)getpid());
    pid_t p = t_fork();
    if (p == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        if (be == SHMKV_BACKEND_MEMORY)
            execl(dump, "shmkv-dump", "--check", "--memory", where, (char *)NULL);
        else
            execl(dump, "shmkv-dump", "--check", where, (char *)NULL);
        _exit(127);
    }
    int st = t_wait(p);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        size_t n = 0;
        unsigned char *text = t_read_file(out, &n);
        char b[96];
        cr_assert_fail("shmkv-dump --check %s: %s\n%.*s", where, t_status_str(st, b, sizeof b),
                       (int)(n > 3000 ? 3000 : n), text);
    }
    unlink(out);
}

static T_UNUSED void t_write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert(fd >= 0, "open(%s): %s", path, strerror(errno));
    cr_assert_eq(fd_write_all(fd, p, n), 0, "write(%s): %s", path, strerror(errno));
    close(fd);
}

static T_UNUSED bool t_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

#endif /* SHMKV_TEST_COMMON_H */
