/*
 * harness.h - the one test harness of libshmkv (tests/harness/).
 *
 * Two static libraries (tests/harness/meson.build):
 *  - harness_core (harness.c): no Criterion. Scratch directories and memory
 *    names with the pid, a janitor that cleans up after a crash, children
 *    that die with their parent, bounded waits, hooks that kill or stop a
 *    process at a named point of the library, a small tmpfs, shmkv-dump
 *    --check, the sanitizer scale, randomness, time. Used by the programs
 *    that are not Criterion tests (crashloop, index-stall, dump-mkstore).
 *  - harness (harness_cr.c, with harness_core): the Criterion glue. Every
 *    test file declares its suite with
 *
 *        TestSuite(name, .init = t_setup, .fini = t_teardown, .timeout = N);
 *
 * Cleanup rules (tests leave nothing behind, even when they fail):
 *  - t_setup() makes a private directory $TMPDIR/shmkv-test.<pid>.XXXXXX and
 *    chdirs into it; disk stores live there (t_path()). Memory names made by
 *    t_name() start with "t<pid>x", so the objects are /dev/shm/shmkv.t<pid>x*.
 *  - t_teardown() (Criterion runs it after a failed assertion too) kills and
 *    reaps the children of t_fork(), unlinks the memory objects and removes
 *    the directory.
 *  - Criterion does NOT run .fini when a test times out or crashes, so the
 *    scratch also has a janitor (/bin/sh, in its own session) that blocks
 *    reading a pipe whose only write ends live in the test process and its
 *    children; when all of them are gone it removes the same directory and
 *    objects. Children get PR_SET_PDEATHSIG(SIGKILL), so none outlives the
 *    test process.
 *  - Every wait for a child is bounded (t_wait_for(), t_waitpid_for()): on
 *    expiry the child is SIGKILLed and reaped, and the test fails saying so.
 *  - Children forked by a test never use cr_assert (they are not Criterion
 *    workers); they check with CHILD_CHECK() and always leave with _exit().
 */
#ifndef SHMKV_TEST_HARNESS_H
#define SHMKV_TEST_HARNESS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "shmkv.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- sanitizers and work scale ----------------------------------------- */

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

/* "plain", "asan" or "tsan". */
const char *t_flavour(void);

/*
 * Work scale. SHMKV_TEST_SCALE (a positive number, e.g. 0.1) overrides both;
 * without it the plain build runs at full size and the sanitizer builds,
 * which are 3-15x slower, at a reduced size so that the suites stay within
 * their time limits. t_scale() is for the single-process and unit
 * workloads; t_scale_heavy() for the multi-process crash and reliability
 * workloads, which slow down most under the sanitizers. Every scaled test
 * asserts on whatever size it ran.
 */
double t_scale(void);
double t_scale_heavy(void);
/* The override alone (SHMKV_TEST_SCALE, or SHMKV_REL_SCALE as before), 0
 * when none is set. */
double t_scale_env(void);
uint64_t t_scaled(uint64_t n, uint64_t min);

/* ---- time and randomness ----------------------------------------------- */

uint64_t t_now_ns(void); /* CLOCK_MONOTONIC */
void t_sleep_us(uint64_t us);

/* splitmix64: one generator per process (re-seed after fork). */
typedef struct {
    uint64_t s;
} t_rng;

uint64_t t_mix(uint64_t x); /* a bijective 64-bit hash */
t_rng t_rng_seeded(uint64_t seed);
uint64_t t_next(t_rng *r);
uint64_t t_below(t_rng *r, uint64_t n); /* [0, n) */
/* SHMKV_TEST_SEED when given, else from the clock and the pid. */
uint64_t t_pick_seed(void);

/* Unsigned-byte order of two keys, like the library's. */
int t_keycmp(const void *a, size_t al, const void *b, size_t bl);

/* ---- whole-buffer I/O --------------------------------------------------- */

/* Write exactly n bytes: 0, or -1 on an error or a short write. */
int fd_write_all(int fd, const void *p, size_t n);
/* Read up to n bytes: n, or fewer at EOF, or -1. */
ssize_t fd_read_all(int fd, void *p, size_t n);
/* Read at most cap-1 bytes of a file into text, NUL-terminated; the length
 * (0 when it cannot be read). */
size_t t_slurp(const char *path, char *text, size_t cap);

/* ---- scratch space and the janitor -------------------------------------- */

typedef struct t_scratch {
    char dir[160];        /* scratch directory, absolute */
    char name_prefix[48]; /* every memory name starts with this: "t<pid>x" */
    int janitor_fd;       /* write end of the janitor's pipe, -1 if none */
    pid_t janitor;
    pid_t owner;          /* the process that made it */
} t_scratch;

/* Make $TMPDIR/shmkv-<tag>.<pid>.XXXXXX, remove memory objects left by an
 * earlier process with this pid, start the janitor. 0, or -1 with errno. */
int t_scratch_init(t_scratch *s, const char *tag);
/* Remove what the scratch holds and let the janitor go (owner only). */
void t_scratch_done(t_scratch *s);
/* Keep the scratch for a post-mortem: the janitor leaves it (owner only). */
void t_scratch_keep(t_scratch *s);
void t_rmtree(const char *dir);
/* Unlink every /dev/shm object behind the memory names prefix*. */
void t_unlink_shm_prefix(const char *prefix);

/* ---- children ------------------------------------------------------------ */

/* fork() for a child that must not outlive its parent (PR_SET_PDEATHSIG);
 * returns like fork(). */
pid_t t_fork_raw(void);
/* The bound of t_wait() and of the harness's own waits: SHMKV_TEST_WAIT
 * seconds, else 600 (x4 under ASan, x6 under TSan). A hung child is killed
 * then, and its test fails saying so, if meson's timeout has not come
 * first. */
double t_wait_default(void);
/*
 * Wait at most `seconds` for child p (WUNTRACED too when stopped is true:
 * then a stop also ends the wait). 0 with *st set; 1 when the time ran out:
 * p was SIGKILLed and reaped (unless stopped), *st is that status; -1 on an
 * error (errno).
 */
int t_waitpid_for(pid_t p, int *st, double seconds, bool stopped);
/* t_waitpid_for(p, st, t_wait_default(), false): 0 when p ended by itself,
 * -1 when it could not be waited for or had to be killed. */
int t_reap(pid_t p, int *st);
const char *t_status_str(int st, char *buf, size_t n);

/* ---- hook points (shmkv__test_hook) ------------------------------------- */

/* In a child: SIGKILL this process at the (skip+1)-th call of hook point
 * `point`. NULL disarms. */
void t_hook_kill_at(const char *point, int skip);
/* In a child: at the first call of `point`, write 'S' to fd (when fd >= 0)
 * and SIGSTOP this process; after SIGCONT the operation goes on. */
void t_hook_stop_at(const char *point, int fd);
/* In a child: at `point` (while armed), write the 4-byte mark to fd and
 * wait there until killed. */
void t_hook_park_at(const char *point, int fd, uint32_t mark);

/* Whether the armed hook has gone off (in the process that armed it). */
bool t_hook_fired(void);

/* ---- a small file system ------------------------------------------------- */

/*
 * In a child: enter a private mount namespace and mount a tmpfs with the
 * given options (e.g. "size=2m,mode=0700") at mnt. 1 on success. When
 * mounting is refused (EPERM) and SHMKV_REL_ALLOW_FSIZE is set, falls back
 * to RLIMIT_FSIZE = fsize bytes and returns 2; otherwise 0 with *why set.
 */
int t_small_fs(const char *mnt, const char *opts, uint64_t fsize, const char **why);

/* ---- shmkv-dump ---------------------------------------------------------- */

/* The tool meson passes as SHMKV_DUMP, or NULL when it is not runnable. */
const char *t_dump_tool(void);
/*
 * Run `dump --check [--memory] where` with its output in the file out
 * (the output is copied to text when text is not NULL), waiting at most
 * t_wait_default(). The wait status, or -1 when it could not be run.
 */
int t_dump_run(const char *dump, const char *where, bool memory, const char *out, char *text,
               size_t cap);

/* ---- Criterion glue (harness_cr.c) ---------------------------------------- */

#ifdef SHMKV_HARNESS_CRITERION
#include <criterion/criterion.h>
#include <criterion/logging.h>

void t_setup(void);
void t_teardown(void);

const t_scratch *t_scratch_of_test(void);
const char *t_dir(void);          /* the test's directory */
const char *t_name_prefix(void);  /* "t<pid>x" */
/* A formatted string that lives until the end of the test. */
const char *t_str(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *t_path(const char *tag);     /* a fresh disk path */
const char *t_fresh(const char *tag);    /* a fresh path in the test's directory */
const char *t_name(const char *tag);     /* a fresh memory name */
const char *t_shm_file(const char *name); /* /dev/shm file of a memory name */
const char *t_where(shmkv_backend be, const char *tag);
const char *t_backend_name(shmkv_backend be);

/* A line on stderr, "[NOTE] category::test: ...", shown without --verbose
 * and in scripts/summarize.py's account of a failed test. Not cr_log_warn:
 * with Criterion 2.4 a warning makes the whole run exit 1, test results
 * aside, so a test that only noted something (a stall it skipped) failed
 * with no failed assertion to show for it. */
void t_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Seeded from SHMKV_TEST_SEED or the clock; notes the seed for a replay. */
t_rng t_rng_new(void);

/* fork(); returns 0 in the child, which dies with the test process and is
 * killed by t_teardown() if still there. */
pid_t t_fork(void);
/* Wait at most seconds for a child; the test fails when it had to be
 * killed. Returns the wait status. */
int t_wait_for(pid_t p, double seconds);
int t_wait(pid_t p); /* t_wait_for(p, t_wait_default()) */
/* Wait for a child to stop (SIGSTOP) or end; the wait status. */
int t_wait_stopped(pid_t p, double seconds);
void t_wait_ok(pid_t p, const char *what); /* and assert exit status 0 */
/* Another process attached to a store: t_attach_child() returns once a
 * child has opened where (t_opts(be, SHMKV_TRACK_DEFAULT)); it stays
 * attached, doing nothing, until t_detach_child() lets it close the store,
 * and asserts that it exited 0. */
typedef struct t_attached {
    pid_t pid;
    int go; /* closing it lets the child go on */
} t_attached;
t_attached t_attach_child(const char *where, shmkv_backend be);
void t_detach_child(t_attached *a);
void t_kill(pid_t p);                      /* SIGKILL and reap */
/* Let teardown kill a process the test made by other means. */
void t_adopt(pid_t p);

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

/* ---- store helpers ---- */
/* Whether rc refuses a write for want of room: the reserve is used up
 * (SHMKV_EFULL) or the file system is full (-ENOSPC). */
static inline bool t_full(int rc)
{
    return rc == SHMKV_EFULL || rc == -ENOSPC;
}
shmkv_options t_opts(shmkv_backend be, int track);
shmkv_db *t_open_opts(const char *where, const shmkv_options *o);
shmkv_db *t_open(const char *where, shmkv_backend be, int track);
/* The four kinds of store most tests run on: each backend, with and
 * without the key index. */
typedef struct {
    shmkv_backend be;
    int track; /* SHMKV_TRACK_ON or SHMKV_TRACK_OFF */
} t_combo;
extern const t_combo t_combos[4];
#define T_NCOMBO (sizeof t_combos / sizeof t_combos[0])
#define T_FOR_COMBOS(c) for (const t_combo *c = t_combos; c < t_combos + T_NCOMBO; c++)
/* "disk/tracked", "memory/untracked", ... */
const char *t_combo_name(const t_combo *c);
/* A new store of kind c named after tag; where it is in *where (unless NULL). */
shmkv_db *t_open_combo(const t_combo *c, const char *tag, const char **where);
void t_close(shmkv_db *db);
void t_set(shmkv_db *db, const char *k, const char *v);
void t_setb(shmkv_db *db, const void *k, size_t kl, const void *v, size_t vl);
/* Printable rendering of a binary key for messages (a ring of 4 buffers). */
const char *t_show(const void *p, size_t n);
/* Assert key holds exactly (v, vl) (and kind, unless kind < 0). */
void t_expect_kind(shmkv_db *db, const void *k, size_t kl, const void *v, size_t vl, int kind);
void t_expect(shmkv_db *db, const void *k, size_t kl, const void *v, size_t vl);
void t_expect_str(shmkv_db *db, const char *k, const char *v);
void t_expect_absent(shmkv_db *db, const void *k, size_t kl);

/* ---- listing into memory ---- */
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

int t_collect(void *ctx, const void *key, size_t klen, const void *val, size_t vlen,
              shmkv_kind kind);
void t_kvlist_free(t_kvlist *l);
/* List everything (with values); returns shmkv_list's result. */
int t_list_all(shmkv_db *db, const void *prefix, size_t plen, uint64_t limit, unsigned flags,
               t_kvlist *out);
/* Assert that a listing is strictly increasing in memcmp order. */
void t_assert_sorted(const t_kvlist *l);

/* ---- files ---- */
unsigned char *t_read_file(const char *path, size_t *len);
void t_write_file(const char *path, const void *p, size_t n);
bool t_exists(const char *path);

/* The segment (lock stripe) of a key in db's store, as the library picks
 * it: for tests that need keys behind one lock, or behind other locks. */
uint32_t t_seg_of(shmkv_db *db, const void *key, size_t klen);

/* ---- shmkv_check ---- */
/* Fail the test (naming what) unless shmkv_check finds db sound: 0, no
 * problem and an empty message. */
void t_check_sound(shmkv_db *db, const char *what);

/* ---- shmkv-dump --check ---- */
/* Run it (meson passes the tool as SHMKV_DUMP); the exit status, the
 * output in text. Fails the test when the tool is missing or crashed. */
int t_dump_capture(const char *where, shmkv_backend be, char *text, size_t cap);
/* Fail the test, with the tool's output, unless it exits 0. */
void t_dump_check(const char *where, shmkv_backend be);
/* And unless it says the store is sound with no repair pending. */
void t_dump_sound(const char *where, shmkv_backend be);

/* Where a store goes on a child's small file system (t_child_small_fs()):
 * a memory store on a tmpfs over /dev/shm, a disk store in a fresh
 * directory for the tmpfs. Sets *mnt; returns the store's name or path. */
const char *t_small_fs_store(shmkv_backend be, const char *tag, const char **mnt);

/* A child that reports one result struct over a pipe: t_fork_reporting()
 * returns like t_fork(), *fd the pipe's write end in the child, its read end
 * in the parent; t_collect_report() reads the struct, waits for the child
 * and fails the test unless it exited 0 after writing all of it. */
pid_t t_fork_reporting(int *fd);
void t_collect_report(pid_t kid, int fd, void *res, size_t size, const char *what);
/* Both for the common case: body runs in a child on a store made by
 * t_small_fs_store(be, tag) (it mounts the small fs itself and writes the
 * result struct to resfd); the result is read into res. */
typedef void (*t_small_fs_body)(shmkv_backend be, int track, const char *mnt, const char *where,
                                int resfd);
void t_small_fs_run(shmkv_backend be, int track, const char *tag, t_small_fs_body body,
                    void *res, size_t size);

/* ---- in a forked child: failures print and _exit(3), like CHILD_CHECK ---- */
/* t_dump_check(), or with strict, t_dump_sound(). */
void t_child_dump_check(const char *where, shmkv_backend be, bool strict);
/* A private tmpfs at mnt: t_small_fs() with opts (NULL: "size=2m,mode=0700")
 * and a 2 MiB RLIMIT_FSIZE fallback; 1 tmpfs, 2 RLIMIT_FSIZE. */
int t_child_small_fs(const char *mnt, const char *opts);
#endif /* SHMKV_HARNESS_CRITERION */

#endif /* SHMKV_TEST_HARNESS_H */
