/*
 * relcr.h - Criterion glue for the reliability tests: a per-test scratch
 * directory and memory-name prefix (cleaned up even when the test crashes
 * or times out, see rel.h), children that cannot outlive the test, and
 * assertion shorthands.
 *
 * Use:  TestSuite(name, .init = rc_setup, .fini = rc_teardown, .timeout = N);
 *
 * Children forked with rc_fork() never use cr_assert (they are not
 * Criterion workers): they check with KID_CHECK() and leave with _exit().
 */
#ifndef SHMKV_RELCR_H
#define SHMKV_RELCR_H

#include "rel.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>

#define RC_MAX_KIDS 32

static struct {
    rel_scratch sc;
    pid_t kids[RC_MAX_KIDS];
    int seq;
    char strs[64][256];
    int nstrs;
} rc;

static REL_UNUSED void rc_setup(void)
{
    memset(&rc, 0, sizeof rc);
    cr_assert(rel_scratch_init(&rc.sc, "t") == 0, "scratch: %s", strerror(errno));
    cr_assert(chdir(rc.sc.dir) == 0);
}

static REL_UNUSED void rc_teardown(void)
{
    if (getpid() != rc.sc.owner)
        _exit(97); /* a child fell back into Criterion: never clean from there */
    for (int i = 0; i < RC_MAX_KIDS; i++)
        if (rc.kids[i] > 0) {
            kill(rc.kids[i], SIGKILL);
            waitpid(rc.kids[i], NULL, 0);
            rc.kids[i] = 0;
        }
    if (chdir("/") != 0) {
        /* removal uses absolute paths */
    }
    rel_scratch_done(&rc.sc);
}

static REL_UNUSED const char *rc_str(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static REL_UNUSED const char *rc_str(const char *fmt, ...)
{
    cr_assert(rc.nstrs < 64);
    char *s = rc.strs[rc.nstrs++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s, 256, fmt, ap);
    va_end(ap);
    return s;
}

/* A fresh disk path in the scratch directory / memory name with our prefix. */
static REL_UNUSED const char *rc_path(const char *tag)
{
    return rc_str("%s/%s.%d.kv", rc.sc.dir, tag, ++rc.seq);
}

static REL_UNUSED const char *rc_name(const char *tag)
{
    return rc_str("%s%d%s", rc.sc.shm_prefix, ++rc.seq, tag);
}

static REL_UNUSED pid_t rc_fork(void)
{
    pid_t p = rel_fork_child();
    cr_assert(p >= 0, "fork: %s", strerror(errno));
    if (p == 0)
        return 0;
    for (int i = 0; i < RC_MAX_KIDS; i++)
        if (rc.kids[i] == 0) {
            rc.kids[i] = p;
            return p;
        }
    kill(p, SIGKILL);
    waitpid(p, NULL, 0);
    cr_assert_fail("too many children");
    return -1;
}

/* Reap a child; returns its wait status. */
static REL_UNUSED int rc_wait(pid_t p)
{
    int st = 0;
    cr_assert(rel_waitpid(p, &st) == 0, "waitpid(%d): %s", (int)p, strerror(errno));
    for (int i = 0; i < RC_MAX_KIDS; i++)
        if (rc.kids[i] == p)
            rc.kids[i] = 0;
    return st;
}

static REL_UNUSED void rc_wait_ok(pid_t p, const char *what)
{
    int st = rc_wait(p);
    char b[80];
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s (pid %d): %s", what, (int)p,
              rel_status(st, b, sizeof b));
}

#define KID_CHECK(cond, ...)                                                                \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "child %d: %s:%d: %s: ", (int)getpid(), __FILE__, __LINE__,     \
                    #cond);                                                                 \
            fprintf(stderr, __VA_ARGS__);                                                   \
            fputc('\n', stderr);                                                            \
            _exit(3);                                                                       \
        }                                                                                   \
    } while (0)

#define KID_OK(expr)                                                                        \
    do {                                                                                    \
        int k_rc_ = (expr);                                                                 \
        KID_CHECK(k_rc_ == 0, "%s -> %d (%s)", #expr, k_rc_, shmkv_strerror(k_rc_));        \
    } while (0)

#define RC_OK(expr)                                                                         \
    do {                                                                                    \
        int r_rc_ = (expr);                                                                 \
        cr_assert_eq(r_rc_, 0, "%s -> %d (%s)", #expr, r_rc_, shmkv_strerror(r_rc_));       \
    } while (0)

#define RC_IS(expr, want)                                                                   \
    do {                                                                                    \
        int r_rc_ = (expr), r_w_ = (want);                                                  \
        cr_assert_eq(r_rc_, r_w_, "%s -> %d (%s), expected %d (%s)", #expr, r_rc_,          \
                     shmkv_strerror(r_rc_), r_w_, shmkv_strerror(r_w_));                    \
    } while (0)

static REL_UNUSED shmkv_db *rc_open(const char *where, shmkv_backend be, int track)
{
    shmkv_options o;
    memset(&o, 0, sizeof o);
    o.backend = be;
    o.track_keys = track;
    shmkv_db *db = NULL;
    int r = shmkv_open(where, &o, &db);
    cr_assert_eq(r, 0, "shmkv_open(%s) -> %d (%s)", where, r, shmkv_strerror(r));
    return db;
}

#endif /* SHMKV_RELCR_H */
