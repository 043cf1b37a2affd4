/*
 * rel.h - small helpers shared by the reliability tests (tests/reliability).
 *
 * Everything here is header-only and static so each test program stays one
 * translation unit. Nothing depends on Criterion; the Criterion tests wrap
 * these helpers with their own assertions.
 *
 * Cleanup model: a test makes one scratch directory and uses memory-store
 * names that all start with one prefix. rel_janitor_start() forks a
 * guardian in its own session that waits for EOF on a pipe whose write end
 * only the test process and its children hold. When every one of them is
 * gone - finished, crashed, or killed by a timeout - the guardian removes
 * the directory and the /dev/shm objects with the prefix. Normal exits
 * clean up directly as well (rel_cleanup()).
 */
#ifndef SHMKV_REL_H
#define SHMKV_REL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "shmkv.h"
#include "../fdio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
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

#define REL_UNUSED __attribute__((unused))

/* ---- which sanitizer, if any ------------------------------------------ */

#if defined(__SANITIZE_THREAD__)
#define REL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define REL_TSAN 1
#endif
#endif
#ifndef REL_TSAN
#define REL_TSAN 0
#endif

#if defined(__SANITIZE_ADDRESS__)
#define REL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define REL_ASAN 1
#endif
#endif
#ifndef REL_ASAN
#define REL_ASAN 0
#endif

/*
 * TSan's deadlock detector aborts ("CHECK failed: sanitizer_deadlock_detector.h")
 * when one thread holds more than 64 mutexes, and the library legitimately
 * holds nseg + 1 (65 with the default 64 segments) while it clears the store
 * or rebuilds the index. A test program whose store processes are single-
 * threaded can gain nothing from lock-order checking, so it may opt out with
 * REL_TSAN_NO_DEADLOCK_DETECTOR before including this header.
 */
#if REL_TSAN && defined(REL_TSAN_NO_DEADLOCK_DETECTOR)
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "detect_deadlocks=0";
}
#endif

static REL_UNUSED const char *rel_flavour(void)
{
    return REL_TSAN ? "tsan" : REL_ASAN ? "asan" : "plain";
}

/* Fraction of the full workload to run: 1 in the plain build, less under
 * sanitizers. SHMKV_REL_SCALE overrides it (e.g. 0.1 for a smoke run). */
static REL_UNUSED double rel_scale(void)
{
    const char *s = getenv("SHMKV_REL_SCALE");
    if (s && *s) {
        double v = strtod(s, NULL);
        if (v > 0)
            return v;
    }
    return REL_TSAN ? 0.1 : REL_ASAN ? 0.25 : 1.0;
}

/* ---- time and randomness ------------------------------------------------ */

static REL_UNUSED uint64_t rel_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static REL_UNUSED void rel_sleep_us(uint64_t us)
{
    struct timespec ts = {(time_t)(us / 1000000u), (long)(us % 1000000u) * 1000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* xoshiro-style generator, one per process (re-seed after fork). */
typedef struct rel_rng {
    uint64_t a, b;
} rel_rng;

static REL_UNUSED uint64_t rel_mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ull;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dull;
    x ^= x >> 33;
    return x;
}

static REL_UNUSED void rel_seed(rel_rng *r, uint64_t seed)
{
    r->a = rel_mix(seed + 0x1234567u);
    r->b = rel_mix(seed ^ 0xdeadbeefcafef00dull) | 1u;
}

static REL_UNUSED uint64_t rel_next(rel_rng *r)
{
    uint64_t s1 = r->a;
    const uint64_t s0 = r->b;
    const uint64_t out = s0 + s1;
    r->a = s0;
    s1 ^= s1 << 23;
    r->b = s1 ^ s0 ^ (s1 >> 18) ^ (s0 >> 5);
    return out;
}

/* Uniform enough in [0, n) for test workloads. */
static REL_UNUSED uint64_t rel_below(rel_rng *r, uint64_t n)
{
    return n ? (uint64_t)(((unsigned __int128)rel_next(r) * n) >> 64) : 0;
}

/* Seed from SHMKV_REL_SEED when given, else from the clock and pid. */
static REL_UNUSED uint64_t rel_pick_seed(void)
{
    const char *s = getenv("SHMKV_REL_SEED");
    if (s && *s)
        return strtoull(s, NULL, 0);
    return rel_mix(rel_now_ns() ^ ((uint64_t)getpid() << 32));
}

/* ---- scratch space and cleanup ------------------------------------------ */

typedef struct rel_scratch {
    char dir[160];       /* scratch directory, absolute */
    char shm_prefix[64]; /* every memory name starts with this */
    int guard_fd;        /* write end of the guardian's pipe, -1 if none */
    pid_t guardian;
    pid_t owner;         /* the process that made it */
} rel_scratch;

static int rel__rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)flag;
    (void)f;
    remove(p);
    return 0;
}

static REL_UNUSED void rel_rmtree(const char *dir)
{
    if (dir && dir[0])
        nftw(dir, rel__rm_one, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* Unlink every /dev/shm object named shmkv.<prefix>*. */
static REL_UNUSED void rel_unlink_shm_prefix(const char *prefix)
{
    char full[96];
    snprintf(full, sizeof full, "shmkv.%s", prefix);
    size_t n = strlen(full);
    DIR *d = opendir("/dev/shm");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, full, n) == 0)
            unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
}

/* Make the scratch directory (under $TMPDIR or /tmp) and start the
 * guardian. tag names the test. Returns 0 or -1 with errno. */
static REL_UNUSED int rel_scratch_init(rel_scratch *s, const char *tag)
{
    memset(s, 0, sizeof *s);
    s->guard_fd = -1;
    s->owner = getpid();
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp || strlen(tmp) > 80)
        tmp = "/tmp";
    snprintf(s->dir, sizeof s->dir, "%s/shmkv-rel-%s.%d.XXXXXX", tmp, tag, (int)getpid());
    if (!mkdtemp(s->dir))
        return -1;
    snprintf(s->shm_prefix, sizeof s->shm_prefix, "r%d%s", (int)getpid(), tag);
    /* keep only name characters the library accepts */
    for (char *c = s->shm_prefix; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')))
            *c = '_';
    rel_unlink_shm_prefix(s->shm_prefix); /* leftovers of an old process with our pid */

    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return 0; /* no guardian: direct cleanup still works */
    fflush(NULL);
    pid_t g = fork();
    if (g == 0) {
        /* The guardian: own session so group kills miss it. */
        setsid();
        signal(SIGINT, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        signal(SIGPIPE, SIG_IGN);
        close(p[1]);
        /* Hold no test output pipe open: the runner waits for its EOF. */
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0) {
            dup2(nul, 0);
            dup2(nul, 1);
            dup2(nul, 2);
        }
        for (int fd = 3; fd < 1024; fd++)
            if (fd != p[0])
                close(fd);
        char b[64];
        bool keep = false;
        for (;;) {
            ssize_t r = read(p[0], b, sizeof b);
            if (r == 0 || (r < 0 && errno != EINTR))
                break;
            if (r > 0 && memchr(b, 'K', (size_t)r))
                keep = true; /* rel_scratch_keep(): leave it for a post-mortem */
        }
        if (keep)
            _exit(0);
        rel_rmtree(s->dir);
        rel_unlink_shm_prefix(s->shm_prefix);
        _exit(0);
    }
    close(p[0]);
    if (g < 0) {
        close(p[1]);
        return 0;
    }
    s->guardian = g;
    /* Children must inherit the write end (so the guardian waits for them
     * too) - but not across exec of unrelated programs: keep CLOEXEC. */
    s->guard_fd = p[1];
    return 0;
}

/* Remove what the scratch holds and let the guardian go. Only the owner
 * cleans; a forked child calling this does nothing. */
static REL_UNUSED void rel_scratch_done(rel_scratch *s)
{
    if (getpid() != s->owner)
        return;
    rel_rmtree(s->dir);
    rel_unlink_shm_prefix(s->shm_prefix);
    if (s->guard_fd >= 0) {
        close(s->guard_fd);
        s->guard_fd = -1;
    }
    if (s->guardian > 0) {
        /* It exits as soon as it sees EOF, unless a child still holds
         * the pipe; do not hang on that. */
        for (int i = 0; i < 500; i++) {
            pid_t r = waitpid(s->guardian, NULL, WNOHANG);
            if (r == s->guardian || (r < 0 && errno == ECHILD))
                break;
            rel_sleep_us(2000);
        }
        s->guardian = 0;
    }
}

/* Keep the scratch for a post-mortem (the guardian is told to leave it). */
static REL_UNUSED void rel_scratch_keep(rel_scratch *s)
{
    if (getpid() != s->owner)
        return;
    if (s->guard_fd >= 0) {
        if (write(s->guard_fd, "K", 1) != 1) {
            /* the guardian is gone; nothing would clean up anyway */
        }
        close(s->guard_fd);
        s->guard_fd = -1;
    }
}

/* Unsigned-byte order of two keys, like the library's. */
static REL_UNUSED int rel_keycmp(const void *a, size_t al, const void *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c)
        return c < 0 ? -1 : 1;
    return al < bl ? -1 : al > bl;
}

/* A child that must not outlive its parent. Returns like fork(). */
static REL_UNUSED pid_t rel_fork_child(void)
{
    pid_t parent = getpid();
    fflush(NULL);
    pid_t p = fork();
    if (p == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(98);
    }
    return p;
}

static REL_UNUSED int rel_waitpid(pid_t p, int *st)
{
    pid_t r;
    do {
        r = waitpid(p, st, 0);
    } while (r < 0 && errno == EINTR);
    return r == p ? 0 : -1;
}

static REL_UNUSED const char *rel_status(int st, char *buf, size_t n)
{
    if (WIFEXITED(st))
        snprintf(buf, n, "exit %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, n, "signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(buf, n, "status %#x", st);
    return buf;
}

#endif /* SHMKV_REL_H */
