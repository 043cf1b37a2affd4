/*
 * shmkv-bench - throughput of libshmkv beside a baseline measured in the
 * same run over the same keys.
 *
 * The baseline (baseline.c) is one robust process-shared mutex around a
 * bare open-addressing probe and copy in a shared anonymous mapping: the
 * least any shared-memory store must do per operation. Every measurement
 * is repeated for --rounds rounds, interleaved with its baseline, and the
 * program reports medians; shmkv/baseline and 2p/1p ratios are medians of
 * the per-round ratios, so slow phases of a noisy machine hit both sides.
 *
 * Exit status: 0 whatever the targets say (this is a measurement), 1 when
 * the store misbehaves (wrong value, missing key, unexpected error) or the
 * benchmark cannot run, 2 on a usage error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "shmkv.h"
#include "baseline.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Constants                                                           */

#define VLEN         32u           /* every value is 32 bytes */
#define SEQ_BITS     20u
#define SEQ_LEN      (1u << SEQ_BITS)
#define SEQ_MASK     (SEQ_LEN - 1u)
#define NPFX         100u          /* random_key prefixes "p%03d:" */
#define LIST_K       100u          /* keys per list group and list limit */
#define LP_COUNT     1024u         /* list prefixes drawn in advance */
#define MAXP         2             /* processes in the scaling rows */
#define MAX_SIZES    8
#define MAX_ROUNDS   99
#define MIN_KEYS     1000u
#define MAX_KEYS     100000000u    /* keys keep 8 digits */
#define UNTRACKED_RKP_MAX 100000u  /* untracked random_key with a prefix (it may scan) only up to here */

#define PLAIN_KLEN   12u           /* "key:%08u" */
#define PLAIN_STRIDE 16u
#define TRACK_KLEN   21u           /* "p%03u:g%05u:k%08u" */
#define TRACK_STRIDE 24u
#define RK_PLEN      5u            /* "p%03u:" */
#define LP_PLEN      12u           /* "p%03u:g%05u:" */

#define NCP          10u           /* claim prefixes "p%02u" (10% of the keys each) */
#define CP_PLEN      3u
#define CLAIM_TTL_MS 30000u        /* the cycles' leases: completed long before they end */
#define MAX_MISSES   100000000u    /* claim draws that found nothing claimable: a bug past this */

#define MAX_PATHS    8
#define PATH_LEN     512

/* ------------------------------------------------------------------ */
/* Configuration                                                       */

static struct {
    uint64_t sizes[MAX_SIZES];
    int nsizes;
    int rounds;
    double budget; /* seconds per timed measurement */
    bool markdown;
    bool disk;
    bool quick;
    bool verbose;
    bool claims; /* --claims: the claim cycles instead of the default rows */
} cfg;

/* ------------------------------------------------------------------ */
/* Cleanup: stores to remove on exit and on SIGINT/SIGTERM/SIGHUP       */

static char g_paths[MAX_PATHS][PATH_LEN + 64];
static volatile sig_atomic_t g_is_child;
static volatile pid_t g_kids[MAXP];

static int path_register(const char *path)
{
    for (int i = 0; i < MAX_PATHS; i++) {
        if (g_paths[i][0] == '\0') {
            snprintf(g_paths[i], sizeof g_paths[i], "%s", path);
            return i;
        }
    }
    return -1;
}

static void path_forget(int slot)
{
    if (slot >= 0 && slot < MAX_PATHS)
        g_paths[slot][0] = '\0';
}

/* Async-signal-safe: kill() and unlink() only. */
static void cleanup_files(void)
{
    if (g_is_child)
        return;
    for (int i = 0; i < MAXP; i++) {
        if (g_kids[i] > 0)
            kill(g_kids[i], SIGKILL);
    }
    for (int i = 0; i < MAX_PATHS; i++) {
        if (g_paths[i][0] != '\0')
            unlink(g_paths[i]);
    }
}

static void on_signal(int sig)
{
    cleanup_files();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

static void child_signals(void)
{
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
}

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "shmkv-bench: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    cleanup_files();
    exit(1);
}

static void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void progress(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "shmkv-bench: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ------------------------------------------------------------------ */
/* Time, randomness, statistics                                        */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

typedef struct series {
    double v[MAX_ROUNDS];
    int n;
} series;

static void put(series *s, double x)
{
    if (s->n < MAX_ROUNDS)
        s->v[s->n++] = x;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const series *s)
{
    if (s->n == 0)
        return NAN;
    double t[MAX_ROUNDS];
    memcpy(t, s->v, (size_t)s->n * sizeof(double));
    qsort(t, (size_t)s->n, sizeof(double), cmp_double);
    if (s->n % 2)
        return t[s->n / 2];
    return (t[s->n / 2 - 1] + t[s->n / 2]) / 2;
}

/* ------------------------------------------------------------------ */
/* The keys of one size                                                */

typedef struct dataset {
    uint64_t n;
    char *pkeys;            /* n keys "key:%08u", PLAIN_STRIDE apart */
    char *tkeys;            /* n keys "p%03u:g%05u:k%08u", TRACK_STRIDE apart */
    uint32_t *seq;          /* SEQ_LEN random key numbers in [0, n) */
    char rkp[NPFX][8];      /* random_key prefixes */
    char lp[LP_COUNT][16];  /* list prefixes */
    uint32_t lp_expect[LP_COUNT];
    char cp[NCP][8];        /* claim prefixes */
} dataset;

/*
 * Tracked key i belongs to prefix a = i % 100 and, inside it, to list group
 * g = (i / 100) / 100: each "p<a>:g<g>:" names exactly 100 keys when n is
 * a multiple of 10,000 (fewer in the last group otherwise).
 */
static void tkey_parts(uint64_t i, unsigned *a, unsigned *g)
{
    *a = (unsigned)(i % NPFX);
    *g = (unsigned)((i / NPFX) / LIST_K);
}

static void dataset_init(dataset *ds, uint64_t n, uint64_t seed)
{
    memset(ds, 0, sizeof *ds);
    ds->n = n;
    ds->pkeys = malloc((size_t)n * PLAIN_STRIDE);
    ds->tkeys = malloc((size_t)n * TRACK_STRIDE);
    ds->seq = malloc((size_t)SEQ_LEN * sizeof(uint32_t));
    if (!ds->pkeys || !ds->tkeys || !ds->seq)
        die("out of memory for %" PRIu64 " keys", n);
    char tmp[64];
    for (uint64_t i = 0; i < n; i++) {
        unsigned a, g;
        snprintf(tmp, sizeof tmp, "key:%08u", (unsigned)i);
        memcpy(ds->pkeys + i * PLAIN_STRIDE, tmp, PLAIN_KLEN + 1);
        tkey_parts(i, &a, &g);
        snprintf(tmp, sizeof tmp, "p%03u:g%05u:k%08u", a, g, (unsigned)i);
        memcpy(ds->tkeys + i * TRACK_STRIDE, tmp, TRACK_KLEN + 1);
    }
    uint64_t s = seed | 1;
    for (uint32_t j = 0; j < SEQ_LEN; j++)
        ds->seq[j] = (uint32_t)(rng_next(&s) % n);
    for (unsigned a = 0; a < NPFX; a++)
        snprintf(ds->rkp[a], sizeof ds->rkp[a], "p%03u:", a);
    for (unsigned a = 0; a < NCP; a++)
        snprintf(ds->cp[a], sizeof ds->cp[a], "p%02u", a);
    for (unsigned j = 0; j < LP_COUNT; j++) {
        uint64_t i = rng_next(&s) % n;
        unsigned a, g, cnt = 0;
        tkey_parts(i, &a, &g);
        snprintf(ds->lp[j], sizeof ds->lp[j], "p%03u:g%05u:", a, g);
        for (uint64_t k = (uint64_t)g * LIST_K; k < (uint64_t)g * LIST_K + LIST_K; k++)
            if (k * NPFX + a < n)
                cnt++;
        ds->lp_expect[j] = cnt;
    }
}

static void dataset_free(dataset *ds)
{
    free(ds->pkeys);
    free(ds->tkeys);
    free(ds->seq);
    memset(ds, 0, sizeof *ds);
}

/* The key number in the last 8 characters of a key, or UINT64_MAX. */
static uint64_t key_number(const char *k, size_t klen)
{
    if (klen < 8)
        return UINT64_MAX;
    uint64_t v = 0;
    for (size_t i = klen - 8; i < klen; i++) {
        if (k[i] < '0' || k[i] > '9')
            return UINT64_MAX;
        v = v * 10 + (uint64_t)(k[i] - '0');
    }
    return v;
}

/* ------------------------------------------------------------------ */
/* Workers: the timed loops                                            */

typedef enum op_kind {
    OP_GET, OP_SET, OP_RK, OP_RKP, OP_LIST, OP_LISTK,
    OP_CLAIM_KEEP, /* claim_random(prefix) + claim_complete(delete 0) */
    OP_CLAIM_DEL,  /* claim_random(prefix) + claim_complete(delete 1) */
    OP_TAKE,       /* random_key(prefix) + delete: taking a token without a lease */
    OP_SPIN /* arithmetic only: what the machine gives two processes */
} op_kind;

typedef struct worker {
    op_kind op;
    shmkv_db *db;      /* NULL: run against the baseline */
    bl_table *bl;
    const dataset *ds;
    const char *keys;  /* ds->pkeys or ds->tkeys */
    size_t stride, klen;
    uint64_t base, span; /* key numbers used: base + [0, span) */
    unsigned shift;      /* seq value >> shift, folded into span */
    uint64_t pos;        /* position in ds->seq */
    uint64_t gen;        /* set: stamp written into values */
    uint32_t *taken;     /* OP_CLAIM_DEL, OP_TAKE: numbers of the keys removed */
    uint64_t ntaken;
    uint64_t misses;     /* draws that found nothing (another process took it first) */
    char err[256];
} worker;

static inline uint64_t next_idx(worker *w)
{
    uint64_t x = (uint64_t)w->ds->seq[w->pos++ & SEQ_MASK] >> w->shift;
    if (x >= w->span)
        x -= w->span;
    return w->base + x;
}

static int fail(worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(worker *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof w->err, fmt, ap);
    va_end(ap);
    return -1;
}

static int kv_get_loop(worker *w, uint64_t n)
{
    unsigned char buf[64];
    for (uint64_t i = 0; i < n; i++) {
        const char *key = w->keys + next_idx(w) * w->stride;
        size_t vlen = 0;
        int rc = shmkv_get(w->db, key, w->klen, buf, sizeof buf, &vlen, NULL);
        if (rc != 0)
            return fail(w, "shmkv_get(%.*s): %s", (int)w->klen, key, shmkv_strerror(rc));
        if (vlen != VLEN || memcmp(buf, key, w->klen) != 0)
            return fail(w, "shmkv_get(%.*s) returned a wrong value (%zu bytes: %.*s)",
                        (int)w->klen, key, vlen, (int)(vlen < 32 ? vlen : 32), (const char *)buf);
    }
    return 0;
}

static int bl_get_loop(worker *w, uint64_t n)
{
    unsigned char buf[64];
    for (uint64_t i = 0; i < n; i++) {
        const char *key = w->keys + next_idx(w) * w->stride;
        size_t vlen = 0;
        int rc = bl_get(w->bl, key, w->klen, buf, sizeof buf, &vlen);
        if (rc != 0)
            return fail(w, "baseline get(%.*s): error %d", (int)w->klen, key, rc);
        if (vlen != VLEN || memcmp(buf, key, w->klen) != 0)
            return fail(w, "baseline get(%.*s) returned a wrong value", (int)w->klen, key);
    }
    return 0;
}

/* A value is the key, padding, and an 8-byte stamp at the end. */
static inline void make_value(unsigned char *val, const char *key, size_t klen, uint64_t gen)
{
    memcpy(val, key, klen);
    memcpy(val + VLEN - 8, &gen, 8);
}

static int kv_set_loop(worker *w, uint64_t n)
{
    unsigned char val[VLEN];
    memset(val, '.', sizeof val);
    for (uint64_t i = 0; i < n; i++) {
        const char *key = w->keys + next_idx(w) * w->stride;
        make_value(val, key, w->klen, ++w->gen);
        int rc = shmkv_set(w->db, key, w->klen, val, VLEN, SHMKV_KIND_BYTES);
        if (rc != 0)
            return fail(w, "shmkv_set(%.*s): %s", (int)w->klen, key, shmkv_strerror(rc));
    }
    return 0;
}

static int bl_set_loop(worker *w, uint64_t n)
{
    unsigned char val[VLEN];
    memset(val, '.', sizeof val);
    for (uint64_t i = 0; i < n; i++) {
        const char *key = w->keys + next_idx(w) * w->stride;
        make_value(val, key, w->klen, ++w->gen);
        int rc = bl_set(w->bl, key, w->klen, val, VLEN);
        if (rc != 0)
            return fail(w, "baseline set(%.*s): error %d", (int)w->klen, key, rc);
    }
    return 0;
}

/* A key returned by random_key must be one of ours and carry the prefix. */
static int check_key(worker *w, const char *what, const char *k, size_t kl,
                     const char *pfx, size_t plen)
{
    uint64_t num = key_number(k, kl);
    if (kl != w->klen || num >= w->ds->n || memcmp(k, w->keys + num * w->stride, kl) != 0)
        return fail(w, "%s returned a key that was never stored: %.*s", what,
                    (int)(kl < 64 ? kl : 64), k);
    if (plen && memcmp(k, pfx, plen) != 0)
        return fail(w, "%s(%.*s) returned a key without the prefix: %.*s", what,
                    (int)plen, pfx, (int)kl, k);
    return 0;
}

static int kv_rk_loop(worker *w, uint64_t n)
{
    char kb[64];
    for (uint64_t i = 0; i < n; i++) {
        size_t kl = 0;
        w->pos++;
        int rc = shmkv_random_key(w->db, NULL, 0, kb, sizeof kb, &kl);
        if (rc != 0)
            return fail(w, "shmkv_random_key: %s", shmkv_strerror(rc));
        if (check_key(w, "shmkv_random_key", kb, kl, NULL, 0))
            return -1;
    }
    return 0;
}

static int kv_rkp_loop(worker *w, uint64_t n)
{
    char kb[64];
    for (uint64_t i = 0; i < n; i++) {
        const char *pfx = w->ds->rkp[w->ds->seq[w->pos++ & SEQ_MASK] % NPFX];
        size_t kl = 0;
        int rc = shmkv_random_key(w->db, pfx, RK_PLEN, kb, sizeof kb, &kl);
        if (rc != 0)
            return fail(w, "shmkv_random_key(%s): %s", pfx, shmkv_strerror(rc));
        if (check_key(w, "shmkv_random_key", kb, kl, pfx, RK_PLEN))
            return -1;
    }
    return 0;
}

typedef struct list_ctx {
    const char *pfx;
    size_t plen;
    unsigned n;
    bool bad;
    bool keys_only;
    size_t prevlen;
    char prev[64];
} list_ctx;

static int list_cb(void *ctx, const void *key, size_t klen, const void *val,
                   size_t vlen, shmkv_kind kind)
{
    list_ctx *c = ctx;
    (void)kind;
    bool val_ok = c->keys_only ? (val == NULL && vlen == 0)
                               : (vlen == VLEN && memcmp(val, key, klen < VLEN ? klen : VLEN) == 0);
    if (klen > sizeof c->prev || klen < c->plen || memcmp(key, c->pfx, c->plen) != 0 || !val_ok) {
        c->bad = true;
        return 1;
    }
    if (c->n > 0) {
        size_t m = klen < c->prevlen ? klen : c->prevlen;
        int d = memcmp(c->prev, key, m);
        if (d > 0 || (d == 0 && c->prevlen >= klen)) {
            c->bad = true; /* not in ascending key order */
            return 1;
        }
    }
    memcpy(c->prev, key, klen);
    c->prevlen = klen;
    c->n++;
    return 0;
}

static int kv_list_loop(worker *w, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        unsigned j = w->ds->seq[w->pos++ & SEQ_MASK] & (LP_COUNT - 1);
        list_ctx c;
        c.pfx = w->ds->lp[j];
        c.plen = LP_PLEN;
        c.n = 0;
        c.bad = false;
        c.keys_only = w->op == OP_LISTK;
        c.prevlen = 0;
        int rc = shmkv_list(w->db, c.pfx, LP_PLEN, LIST_K, c.keys_only ? SHMKV_LIST_KEYS_ONLY : 0,
                            list_cb, &c);
        if (rc != 0 && !c.bad)
            return fail(w, "shmkv_list(%s): %s", c.pfx, shmkv_strerror(rc));
        if (c.bad)
            return fail(w, "shmkv_list(%s) visited a wrong key or value, or out of order", c.pfx);
        if (c.n != w->ds->lp_expect[j])
            return fail(w, "shmkv_list(%s) visited %u keys, expected %u", c.pfx, c.n,
                        (unsigned)w->ds->lp_expect[j]);
    }
    return 0;
}

static volatile uint64_t g_sink;

static int spin_loop(worker *w, uint64_t n)
{
    uint64_t x = w->gen | 1;
    for (uint64_t i = 0; i < n; i++)
        for (int j = 0; j < 32; j++)
            x = x * 6364136223846793005ull + 1442695040888963407ull;
    w->gen = x;
    g_sink = x;
    return 0;
}

/* One claim cycle per op: claim a random claimable key of a random claim
 * prefix (with its value, as k6's claimRandom reads it), then complete it.
 * With delete the key goes, and its number is recorded for the refill. */
static int kv_claim_loop(worker *w, uint64_t n)
{
    char kb[64];
    unsigned char vb[64];
    const int del = w->op == OP_CLAIM_DEL;
    shmkv_lease lease = {"bench", 5, CLAIM_TTL_MS};
    for (uint64_t i = 0; i < n; i++) {
        const char *pfx = w->ds->cp[w->ds->seq[w->pos++ & SEQ_MASK] % NCP];
        size_t kl = 0, vl = 0;
        shmkv_claim cl;
        int rc = shmkv_claim_random(w->db, pfx, CP_PLEN, &lease, kb, sizeof kb, &kl, &cl, vb,
                                    sizeof vb, &vl, NULL);
        if (rc == SHMKV_ENOTFOUND && ++w->misses < MAX_MISSES) {
            i--; /* the other process holds what was claimable there just now */
            continue;
        }
        if (rc != 0)
            return fail(w, "shmkv_claim_random(%s): %s", pfx, shmkv_strerror(rc));
        if (check_key(w, "shmkv_claim_random", kb, kl, pfx, CP_PLEN))
            return -1;
        if (vl != VLEN || memcmp(vb, kb, kl) != 0)
            return fail(w, "shmkv_claim_random(%s) returned a wrong value for %.*s", pfx, (int)kl, kb);
        if (cl.token == 0)
            return fail(w, "shmkv_claim_random(%s) returned token 0", pfx);
        rc = shmkv_claim_complete(w->db, kb, kl, cl.token, del);
        if (rc != 0)
            return fail(w, "shmkv_claim_complete(%.*s, %" PRIu64 ", %d): %s", (int)kl, kb, cl.token,
                        del, shmkv_strerror(rc));
        if (del)
            w->taken[w->ntaken++] = (uint32_t)key_number(kb, kl);
    }
    return 0;
}

/* The same pool taken without leases: a random key of the prefix, deleted
 * if still there (k6's randomKey + deleteIfExists). */
static int kv_take_loop(worker *w, uint64_t n)
{
    char kb[64];
    for (uint64_t i = 0; i < n; i++) {
        const char *pfx = w->ds->cp[w->ds->seq[w->pos++ & SEQ_MASK] % NCP];
        size_t kl = 0;
        int rc = shmkv_random_key(w->db, pfx, CP_PLEN, kb, sizeof kb, &kl);
        if (rc == 0) {
            int existed = 0;
            if (check_key(w, "shmkv_random_key", kb, kl, pfx, CP_PLEN))
                return -1;
            rc = shmkv_delete(w->db, kb, kl, &existed);
            if (rc == 0 && !existed)
                rc = SHMKV_ENOTFOUND;
        }
        if (rc == SHMKV_ENOTFOUND && ++w->misses < MAX_MISSES) {
            i--; /* the other process took it first */
            continue;
        }
        if (rc != 0)
            return fail(w, "take (%s): %s", pfx, shmkv_strerror(rc));
        w->taken[w->ntaken++] = (uint32_t)key_number(kb, kl);
    }
    return 0;
}

static int run_ops(worker *w, uint64_t n)
{
    if (w->op == OP_SPIN)
        return spin_loop(w, n);
    if (!w->db) {
        switch (w->op) {
        case OP_GET: return bl_get_loop(w, n);
        case OP_SET: return bl_set_loop(w, n);
        default: return fail(w, "the baseline has no such operation");
        }
    }
    switch (w->op) {
    case OP_GET: return kv_get_loop(w, n);
    case OP_SET: return kv_set_loop(w, n);
    case OP_RK: return kv_rk_loop(w, n);
    case OP_RKP: return kv_rkp_loop(w, n);
    case OP_LIST:
    case OP_LISTK: return kv_list_loop(w, n);
    case OP_CLAIM_KEEP:
    case OP_CLAIM_DEL: return kv_claim_loop(w, n);
    case OP_TAKE: return kv_take_loop(w, n);
    case OP_SPIN: break;
    }
    return fail(w, "unknown operation");
}

static worker make_worker(op_kind op, shmkv_db *db, bl_table *bl, const dataset *ds,
                          bool tracked_keys, uint64_t pos)
{
    worker w;
    memset(&w, 0, sizeof w);
    w.op = op;
    w.db = db;
    w.bl = bl;
    w.ds = ds;
    w.keys = tracked_keys ? ds->tkeys : ds->pkeys;
    w.stride = tracked_keys ? TRACK_STRIDE : PLAIN_STRIDE;
    w.klen = tracked_keys ? TRACK_KLEN : PLAIN_KLEN;
    w.base = 0;
    w.span = ds->n;
    w.shift = 0;
    w.pos = pos;
    w.gen = 0;
    return w;
}

/* Run w's operation for about `budget` seconds in this process; returns
 * nanoseconds per operation. A store error ends the program. */
static double timed(worker *w, double budget)
{
    uint64_t batch = 4, ops = 0;
    double t0 = now_s(), el;
    for (;;) {
        if (run_ops(w, batch) != 0)
            die("%s", w->err);
        ops += batch;
        el = now_s() - t0;
        if (el >= budget)
            break;
        if (el < budget / 32)
            batch *= 2;
    }
    return el * 1e9 / (double)ops;
}

/* ------------------------------------------------------------------ */
/* Forked runs: 1 or 2 processes on disjoint key ranges                */

typedef struct ctl {
    _Atomic int ready;
    _Atomic int go;
    struct {
        double t0, t1;
        int failed;
        uint64_t ntaken, misses;
        char msg[256];
    } r[MAXP];
} ctl;

/* Shared with the children: the key numbers each one removed, child c's
 * from g_taken + c * g_taken_cap. */
static uint32_t *g_taken;
static uint64_t g_taken_cap;

static ctl *g_ctl;

typedef struct store_ref {
    const char *where; /* name (memory) or path (disk); NULL: baseline */
    shmkv_backend backend;
} store_ref;

static void child_main(const worker *tmpl, store_ref st, int nproc, int c, uint64_t ops)
    __attribute__((noreturn));
static void child_main(const worker *tmpl, store_ref st, int nproc, int c, uint64_t ops)
{
    g_is_child = 1;
    child_signals();
    worker w = *tmpl;
    shmkv_db *db = NULL;
    int rc = 0;
    if (st.where) {
        /* Each process opens the store itself. */
        shmkv_options o;
        memset(&o, 0, sizeof o);
        o.backend = st.backend;
        o.flags = SHMKV_NOCREATE;
        rc = shmkv_open(st.where, &o, &db);
        if (rc != 0) {
            fail(&w, "child shmkv_open(%s): %s", st.where, shmkv_strerror(rc));
            goto out;
        }
    }
    w.db = db;
    uint64_t n = w.ds->n;
    w.span = nproc == 1 ? n : n / (uint64_t)nproc;
    w.base = (uint64_t)c * w.span;
    w.shift = nproc == 1 ? 0 : 1;
    w.pos = tmpl->pos + (uint64_t)c * (SEQ_LEN / MAXP);
    if (w.op == OP_CLAIM_DEL || w.op == OP_TAKE) {
        w.taken = g_taken + (uint64_t)c * g_taken_cap;
        w.ntaken = 0;
        if (ops > g_taken_cap)
            rc = fail(&w, "%" PRIu64 " removals do not fit the record of %" PRIu64, ops, g_taken_cap);
    }

    /* Fault in this process's mapping of its keys before the clock starts:
     * one get of every key in the range, for the store and the baseline. */
    if (w.op != OP_SPIN) {
        worker g = w;
        g.op = OP_GET;
        for (uint64_t i = 0; i < w.span && rc == 0; i++) {
            unsigned char buf[64];
            size_t vlen = 0;
            const char *key = g.keys + (g.base + i) * g.stride;
            int r = db ? shmkv_get(db, key, g.klen, buf, sizeof buf, &vlen, NULL)
                       : bl_get(g.bl, key, g.klen, buf, sizeof buf, &vlen);
            if (r != 0 || vlen != VLEN || memcmp(buf, key, g.klen) != 0)
                rc = fail(&w, "child warm-up get(%.*s) failed or returned a wrong value",
                          (int)g.klen, key);
        }
    }
out:
    atomic_fetch_add(&g_ctl->ready, 1);
    if (rc == 0) {
        while (!atomic_load(&g_ctl->go))
            sched_yield();
        double t0 = now_s();
        rc = run_ops(&w, ops);
        double t1 = now_s();
        g_ctl->r[c].t0 = t0;
        g_ctl->r[c].t1 = t1;
        g_ctl->r[c].ntaken = w.ntaken;
        g_ctl->r[c].misses = w.misses;
    }
    if (rc != 0) {
        g_ctl->r[c].failed = 1;
        snprintf(g_ctl->r[c].msg, sizeof g_ctl->r[c].msg, "%s", w.err);
    }
    if (db)
        shmkv_close(db);
    _exit(rc != 0);
}

/* nproc children, each doing `ops` operations of tmpl's kind on its own
 * part of the keys; returns total operations per second of wall time (from
 * the first child's start to the last child's end). */
static double forked(const worker *tmpl, store_ref st, int nproc, uint64_t ops)
{
    atomic_store(&g_ctl->ready, 0);
    atomic_store(&g_ctl->go, 0);
    memset(g_ctl->r, 0, sizeof g_ctl->r);
    fflush(stdout);
    fflush(stderr);
    for (int c = 0; c < nproc; c++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork: %s", strerror(errno));
        if (pid == 0)
            child_main(tmpl, st, nproc, c, ops);
        g_kids[c] = pid;
    }
    bool reaped[MAXP] = {false};
    int status[MAXP] = {0};
    bool early = false;
    while (atomic_load(&g_ctl->ready) < nproc && !early) {
        for (int c = 0; c < nproc; c++) {
            if (!reaped[c] && waitpid(g_kids[c], &status[c], WNOHANG) == g_kids[c]) {
                reaped[c] = true;
                early = true;
            }
        }
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&g_ctl->go, 1);
    for (int c = 0; c < nproc; c++) {
        if (!reaped[c]) {
            while (waitpid(g_kids[c], &status[c], 0) < 0 && errno == EINTR)
                ;
        }
        g_kids[c] = 0;
    }
    double t0 = INFINITY, t1 = -INFINITY;
    for (int c = 0; c < nproc; c++) {
        if (g_ctl->r[c].failed)
            die("%s", g_ctl->r[c].msg);
        if (!WIFEXITED(status[c]) || WEXITSTATUS(status[c]) != 0)
            die("benchmark child %d ended abnormally (status 0x%x)", c, status[c]);
        if (g_ctl->r[c].t0 < t0)
            t0 = g_ctl->r[c].t0;
        if (g_ctl->r[c].t1 > t1)
            t1 = g_ctl->r[c].t1;
    }
    return (double)nproc * (double)ops / (t1 - t0);
}

/* ------------------------------------------------------------------ */
/* Stores                                                              */

static unsigned g_store_seq;

typedef struct store {
    shmkv_db *db;
    store_ref ref;
    char where[PATH_LEN];
    int path_slot;
} store;

static void store_open(store *s, shmkv_backend backend, int track)
{
    memset(s, 0, sizeof s[0]);
    char fs_path[PATH_LEN + 64];
    unsigned n = g_store_seq++;
    if (backend == SHMKV_BACKEND_MEMORY) {
        snprintf(s->where, sizeof s->where, "shmkv-bench-%ld-%u", (long)getpid(), n);
        snprintf(fs_path, sizeof fs_path, "/dev/shm/shmkv.%s", s->where);
    } else {
        const char *tmp = getenv("TMPDIR");
        if (!tmp || !*tmp)
            tmp = "/tmp";
        snprintf(s->where, sizeof s->where, "%s/shmkv-bench-%ld-%u.kv", tmp, (long)getpid(), n);
        snprintf(fs_path, sizeof fs_path, "%s", s->where);
    }
    s->path_slot = path_register(fs_path);
    shmkv_options o;
    memset(&o, 0, sizeof o);
    o.backend = backend;
    o.track_keys = track;
    if (backend == SHMKV_BACKEND_DISK)
        o.flags = SHMKV_NOSYNC;
    int rc = shmkv_open(s->where, &o, &s->db);
    if (rc != 0)
        die("shmkv_open(%s): %s", s->where, shmkv_strerror(rc));
    s->ref.where = s->where;
    s->ref.backend = backend;
}

static void store_close(store *s)
{
    if (!s->db)
        return;
    int rc = shmkv_close(s->db);
    if (rc != 0)
        progress("warning: shmkv_close(%s): %s", s->where, shmkv_strerror(rc));
    s->db = NULL;
    if (s->ref.backend == SHMKV_BACKEND_MEMORY)
        shmkv_memory_unlink(s->where); /* normally already gone */
    else
        unlink(s->where);
    path_forget(s->path_slot);
}

static void populate(store *s, const dataset *ds, bool tracked_keys)
{
    const char *keys = tracked_keys ? ds->tkeys : ds->pkeys;
    size_t stride = tracked_keys ? TRACK_STRIDE : PLAIN_STRIDE;
    size_t klen = tracked_keys ? TRACK_KLEN : PLAIN_KLEN;
    unsigned char val[VLEN];
    memset(val, '.', sizeof val);
    for (uint64_t i = 0; i < ds->n; i++) {
        const char *key = keys + i * stride;
        make_value(val, key, klen, 0);
        int rc = shmkv_set(s->db, key, klen, val, VLEN, SHMKV_KIND_BYTES);
        if (rc != 0)
            die("populate: shmkv_set(%.*s): %s", (int)klen, key, shmkv_strerror(rc));
    }
    uint64_t size = shmkv_size(s->db);
    if (size != ds->n)
        die("populate: shmkv_size() is %" PRIu64 " after storing %" PRIu64 " keys", size, ds->n);
}

/* ------------------------------------------------------------------ */
/* One size: all measurements, all rounds                              */

/* A 2-process measurement is trusted only when an arithmetic loop with no
 * shared data, run through the same fork machinery just before and just
 * after it, scaled at least this much from 1 to 2 processes: otherwise other
 * load on the machine took one of the two cores. Such a round is repeated
 * up to MAX_TRIES times, then kept but not trusted. */
#define MACHINE_OK 1.8
#define MAX_TRIES  3

/* Throughput (ops/s) of forked runs, 1 and 2 processes. */
typedef struct scale_res {
    series k1, k2, kscale, b1, b2, bscale, ratio2; /* every round */
    series mc;                                     /* machine check: lower of before/after */
    series ok_k2, ok_kscale, ok_b2, ok_bscale, ok_ratio2; /* trusted rounds only */
    int retries;
} scale_res;

typedef struct sizeres {
    uint64_t n;
    series kv_get, bl_get, get_ratio;
    series kv_set, bl_set, set_ratio;
    series dk_get, dk_bl_get, dk_get_ratio, dk_set, dk_bl_set, dk_set_ratio;
    scale_res sget, sset;
    series rk, rkp, list, listk, urk, urkp;
    bool have_urkp;
} sizeres;

static void dump_series(const char *name, const series *x, const char *unit)
{
    fprintf(stderr, "  %-14s", name);
    for (int i = 0; i < x->n; i++)
        fprintf(stderr, " %10.4g", x->v[i]);
    fprintf(stderr, "  | median %.4g %s\n", median(x), unit);
}

/* --verbose: every round's value, to judge the noise. */
static void dump_size(const sizeres *R)
{
    fprintf(stderr, "shmkv-bench: %" PRIu64 " keys, per-round values:\n", R->n);
#define D(f, unit) if (R->f.n) dump_series(#f, &R->f, unit)
    D(kv_get, "ns/op"); D(bl_get, "ns/op"); D(get_ratio, "x");
    D(kv_set, "ns/op"); D(bl_set, "ns/op"); D(set_ratio, "x");
    D(dk_get, "ns/op"); D(dk_bl_get, "ns/op"); D(dk_get_ratio, "x");
    D(dk_set, "ns/op"); D(dk_bl_set, "ns/op"); D(dk_set_ratio, "x");
    D(sget.k1, "ops/s"); D(sget.k2, "ops/s"); D(sget.kscale, "x");
    D(sget.b1, "ops/s"); D(sget.b2, "ops/s"); D(sget.bscale, "x"); D(sget.mc, "x");
    D(sset.k1, "ops/s"); D(sset.k2, "ops/s"); D(sset.kscale, "x");
    D(sset.b1, "ops/s"); D(sset.b2, "ops/s"); D(sset.bscale, "x"); D(sset.mc, "x");
    D(rk, "ns/op"); D(rkp, "ns/op"); D(list, "ns/op"); D(listk, "ns/op"); D(urk, "ns/op"); D(urkp, "ns/op");
#undef D
}

/* Ops per child in a forked run: what one process does in `budget`. */
static uint64_t child_ops(double ns_per_op)
{
    double ops = cfg.budget * 1e9 / ns_per_op;
    if (!(ops >= 1000))
        ops = 1000;
    if (ops > 1e9)
        ops = 1e9;
    return (uint64_t)ops;
}

/* Measures the baseline and the store back to back (order alternating by
 * round) and records both times and their ratio. */
static void pair(worker *kv, worker *bl, int round, series *kvs, series *bls, series *ratio)
{
    double k, b;
    if (round % 2 == 0) {
        b = timed(bl, cfg.budget);
        k = timed(kv, cfg.budget);
    } else {
        k = timed(kv, cfg.budget);
        b = timed(bl, cfg.budget);
    }
    put(kvs, k);
    put(bls, b);
    put(ratio, k / b);
}

/* 2p/1p of an arithmetic loop through the same fork machinery. */
static double machine_check(const dataset *ds)
{
    store_ref none = {NULL, SHMKV_BACKEND_MEMORY};
    worker spin = make_worker(OP_SPIN, NULL, NULL, ds, false, 0);
    uint64_t ops = child_ops(timed(&spin, cfg.budget / 8)) / 2;
    double c1 = forked(&spin, none, 1, ops);
    double c2 = forked(&spin, none, 2, ops);
    return c2 / c1;
}

/* 1 and 2 processes for the store and for the baseline, between two
 * machine checks. */
static void scaling(const worker *kv, const worker *bl, store_ref st, int round,
                    double kv_ns, double bl_ns, scale_res *S)
{
    store_ref none = {NULL, SHMKV_BACKEND_MEMORY};
    uint64_t kops = child_ops(kv_ns), bops = child_ops(bl_ns);
    for (int t = 1;; t++) {
        double x1, x2, y1, y2;
        double before = machine_check(kv->ds);
        if (round % 2 == 0) {
            x1 = forked(kv, st, 1, kops);
            x2 = forked(kv, st, 2, kops);
            y1 = forked(bl, none, 1, bops);
            y2 = forked(bl, none, 2, bops);
        } else {
            y2 = forked(bl, none, 2, bops);
            y1 = forked(bl, none, 1, bops);
            x2 = forked(kv, st, 2, kops);
            x1 = forked(kv, st, 1, kops);
        }
        double after = machine_check(kv->ds);
        double mc = before < after ? before : after;
        bool ok = mc >= MACHINE_OK;
        if (!ok && t < MAX_TRIES) {
            S->retries++;
            progress("machine busy (check %.2fx < %.1fx), repeating a 2-process measurement",
                     mc, MACHINE_OK);
            continue;
        }
        put(&S->k1, x1);
        put(&S->k2, x2);
        put(&S->kscale, x2 / x1);
        put(&S->b1, y1);
        put(&S->b2, y2);
        put(&S->bscale, y2 / y1);
        put(&S->ratio2, y2 / x2); /* time per op, shmkv / baseline */
        put(&S->mc, mc);
        if (ok) {
            put(&S->ok_k2, x2);
            put(&S->ok_kscale, x2 / x1);
            put(&S->ok_b2, y2);
            put(&S->ok_bscale, y2 / y1);
            put(&S->ok_ratio2, y2 / x2);
        }
        return;
    }
}

/* The trusted rounds when there are any; *busy tells when there were none. */
static const series *trusted(const series *ok, const series *all, bool *busy)
{
    *busy = ok->n == 0;
    return *busy ? all : ok;
}

static void run_size(uint64_t n, sizeres *R)
{
    memset(R, 0, sizeof *R);
    R->n = n;
    dataset *ds = calloc(1, sizeof *ds);
    if (!ds)
        die("out of memory");
    progress("%" PRIu64 " keys: generating keys", n);
    dataset_init(ds, n, 0x5eed0000u + n);

    progress("%" PRIu64 " keys: populating the baseline and the stores", n);
    bl_table *bl = bl_create(n);
    if (!bl)
        die("baseline: cannot map a table for %" PRIu64 " keys", n);
    {
        unsigned char val[VLEN];
        memset(val, '.', sizeof val);
        for (uint64_t i = 0; i < n; i++) {
            const char *key = ds->pkeys + i * PLAIN_STRIDE;
            make_value(val, key, PLAIN_KLEN, 0);
            if (bl_set(bl, key, PLAIN_KLEN, val, VLEN) != 0)
                die("baseline: set failed");
        }
    }
    store plain, tracked, disk, plainp;
    store_open(&plain, SHMKV_BACKEND_MEMORY, SHMKV_TRACK_OFF);
    populate(&plain, ds, false);
    /* The prefixed keys without tracking: untracked random_key(prefix). */
    R->have_urkp = n <= UNTRACKED_RKP_MAX;
    memset(&plainp, 0, sizeof plainp);
    if (R->have_urkp) {
        store_open(&plainp, SHMKV_BACKEND_MEMORY, SHMKV_TRACK_OFF);
        populate(&plainp, ds, true);
    }
    store_open(&tracked, SHMKV_BACKEND_MEMORY, SHMKV_TRACK_ON);
    populate(&tracked, ds, true);
    {
        shmkv_info info;
        memset(&info, 0, sizeof info);
        shmkv_stat(tracked.db, &info);
        if (!info.track_keys)
            die("the store opened with SHMKV_TRACK_ON reports track_keys off");
    }
    memset(&disk, 0, sizeof disk);
    if (cfg.disk) {
        store_open(&disk, SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF);
        populate(&disk, ds, false);
    }

    uint64_t p = 0;
    worker kv_get = make_worker(OP_GET, plain.db, NULL, ds, false, p += 7919);
    worker kv_set = make_worker(OP_SET, plain.db, NULL, ds, false, p += 7919);
    worker bl_get_w = make_worker(OP_GET, NULL, bl, ds, false, p += 7919);
    worker bl_set_w = make_worker(OP_SET, NULL, bl, ds, false, p += 7919);
    worker dk_get = make_worker(OP_GET, disk.db, NULL, ds, false, p += 7919);
    worker dk_set = make_worker(OP_SET, disk.db, NULL, ds, false, p += 7919);
    worker rk = make_worker(OP_RK, tracked.db, NULL, ds, true, p += 7919);
    worker rkp = make_worker(OP_RKP, tracked.db, NULL, ds, true, p += 7919);
    worker list = make_worker(OP_LIST, tracked.db, NULL, ds, true, p += 7919);
    worker listk = make_worker(OP_LISTK, tracked.db, NULL, ds, true, p += 7919);
    worker urk = make_worker(OP_RK, plain.db, NULL, ds, false, p += 7919);
    worker urkp = make_worker(OP_RKP, plainp.db, NULL, ds, true, p += 7919);

    /* Warm-up: every operation once, briefly, not recorded. */
    progress("%" PRIu64 " keys: warming up", n);
    double wb = cfg.budget / 4;
    timed(&bl_get_w, wb);
    timed(&kv_get, wb);
    timed(&bl_set_w, wb);
    timed(&kv_set, wb);
    if (cfg.disk) {
        timed(&dk_get, wb);
        timed(&dk_set, wb);
    }
    timed(&rk, wb);
    timed(&rkp, wb);
    timed(&list, wb);
    timed(&listk, wb);
    timed(&urk, wb);
    if (R->have_urkp)
        timed(&urkp, wb);

    for (int r = 0; r < cfg.rounds; r++) {
        progress("%" PRIu64 " keys: round %d/%d", n, r + 1, cfg.rounds);
        pair(&kv_get, &bl_get_w, r, &R->kv_get, &R->bl_get, &R->get_ratio);
        pair(&kv_set, &bl_set_w, r, &R->kv_set, &R->bl_set, &R->set_ratio);
        if (cfg.disk) {
            pair(&dk_get, &bl_get_w, r, &R->dk_get, &R->dk_bl_get, &R->dk_get_ratio);
            pair(&dk_set, &bl_set_w, r, &R->dk_set, &R->dk_bl_set, &R->dk_set_ratio);
        }
        double kg = R->kv_get.v[R->kv_get.n - 1], bg = R->bl_get.v[R->bl_get.n - 1];
        double ks = R->kv_set.v[R->kv_set.n - 1], bs = R->bl_set.v[R->bl_set.n - 1];
        kv_get.pos += 104729;
        bl_get_w.pos += 104729;
        scaling(&kv_get, &bl_get_w, plain.ref, r, kg, bg, &R->sget);
        kv_set.pos += 104729;
        bl_set_w.pos += 104729;
        scaling(&kv_set, &bl_set_w, plain.ref, r, ks, bs, &R->sset);
        put(&R->rk, timed(&rk, cfg.budget));
        put(&R->rkp, timed(&rkp, cfg.budget));
        put(&R->list, timed(&list, cfg.budget));
        put(&R->listk, timed(&listk, cfg.budget));
        put(&R->urk, timed(&urk, cfg.budget));
        if (R->have_urkp)
            put(&R->urkp, timed(&urkp, cfg.budget));
    }

    /* The store must still hold exactly the keys, with the right values. */
    progress("%" PRIu64 " keys: final check", n);
    {
        unsigned char buf[64];
        for (uint64_t i = 0; i < n; i++) {
            const char *key = ds->pkeys + i * PLAIN_STRIDE;
            size_t vlen = 0;
            int rc = shmkv_get(plain.db, key, PLAIN_KLEN, buf, sizeof buf, &vlen, NULL);
            if (rc != 0 || vlen != VLEN || memcmp(buf, key, PLAIN_KLEN) != 0)
                die("final check: get(%s) failed or returned a wrong value", key);
        }
        if (shmkv_size(plain.db) != n || shmkv_size(tracked.db) != n)
            die("final check: store sizes %" PRIu64 " and %" PRIu64 ", expected %" PRIu64,
                shmkv_size(plain.db), shmkv_size(tracked.db), n);
    }

    store_close(&disk);
    store_close(&plainp);
    store_close(&tracked);
    store_close(&plain);
    bl_destroy(bl);
    dataset_free(ds);
    free(ds);
}

/* ------------------------------------------------------------------ */
/* Output                                                              */

typedef struct row {
    int order;
    char op[64];
    uint64_t keys;
    int procs;
    double kv_ops, kv_us;   /* NAN: not measured */
    double bl_ops, bl_us;
    double ratio;           /* shmkv time per op / baseline's */
    double scale, bl_scale; /* 2p/1p throughput */
    bool busy;              /* 2p figures from rounds on a busy machine */
} row;

static row g_rows[MAX_SIZES * 16];
static int g_nrows;

static row *add_row(int order, const char *op, uint64_t keys, int procs)
{
    row *r = &g_rows[g_nrows++];
    memset(r, 0, sizeof *r);
    r->order = order;
    snprintf(r->op, sizeof r->op, "%s", op);
    r->keys = keys;
    r->procs = procs;
    r->kv_ops = r->kv_us = r->bl_ops = r->bl_us = NAN;
    r->ratio = r->scale = r->bl_scale = NAN;
    return r;
}

/* From a series of ns/op. */
static void set_time(double *ops, double *us, const series *ns)
{
    double m = median(ns);
    *ops = 1e9 / m;
    *us = m / 1e3;
}

static void scale_row(row *r, const scale_res *S)
{
    bool busy;
    r->kv_ops = median(trusted(&S->ok_k2, &S->k2, &busy));
    r->bl_ops = median(trusted(&S->ok_b2, &S->b2, &busy));
    r->ratio = median(trusted(&S->ok_ratio2, &S->ratio2, &busy));
    r->scale = median(trusted(&S->ok_kscale, &S->kscale, &busy));
    r->bl_scale = median(trusted(&S->ok_bscale, &S->bscale, &busy));
    r->busy = busy;
}

static void rows_for(const sizeres *R)
{
    row *r;
    r = add_row(0, "get", R->n, 1);
    set_time(&r->kv_ops, &r->kv_us, &R->kv_get);
    set_time(&r->bl_ops, &r->bl_us, &R->bl_get);
    r->ratio = median(&R->get_ratio);

    scale_row(add_row(0, "get", R->n, 2), &R->sget);

    r = add_row(1, "set", R->n, 1);
    set_time(&r->kv_ops, &r->kv_us, &R->kv_set);
    set_time(&r->bl_ops, &r->bl_us, &R->bl_set);
    r->ratio = median(&R->set_ratio);

    scale_row(add_row(1, "set", R->n, 2), &R->sset);

    if (cfg.disk) {
        r = add_row(2, "get (disk backend)", R->n, 1);
        set_time(&r->kv_ops, &r->kv_us, &R->dk_get);
        set_time(&r->bl_ops, &r->bl_us, &R->dk_bl_get);
        r->ratio = median(&R->dk_get_ratio);
        r = add_row(3, "set (disk backend)", R->n, 1);
        set_time(&r->kv_ops, &r->kv_us, &R->dk_set);
        set_time(&r->bl_ops, &r->bl_us, &R->dk_bl_set);
        r->ratio = median(&R->dk_set_ratio);
    }

    r = add_row(4, "random_key", R->n, 1);
    set_time(&r->kv_ops, &r->kv_us, &R->rk);
    r = add_row(5, "random_key prefix", R->n, 1);
    set_time(&r->kv_ops, &r->kv_us, &R->rkp);
    r = add_row(6, "list prefix k=100", R->n, 1);
    set_time(&r->kv_ops, &r->kv_us, &R->list);
    r = add_row(7, "list prefix k=100 keys only", R->n, 1);
    set_time(&r->kv_ops, &r->kv_us, &R->listk);
    r = add_row(8, "random_key untracked", R->n, 1);
    set_time(&r->kv_ops, &r->kv_us, &R->urk);
    if (R->have_urkp) {
        r = add_row(9, "random_key prefix untracked", R->n, 1);
        set_time(&r->kv_ops, &r->kv_us, &R->urkp);
    }
}

static int cmp_row(const void *a, const void *b)
{
    const row *x = a, *y = b;
    if (x->order != y->order)
        return x->order - y->order;
    if (x->keys != y->keys)
        return x->keys < y->keys ? -1 : 1;
    return x->procs - y->procs;
}

static const char *fmt_keys(uint64_t n, char *buf, size_t cap)
{
    if (n >= 1000000 && n % 1000000 == 0)
        snprintf(buf, cap, "%" PRIu64 "M", n / 1000000);
    else if (n >= 1000 && n % 1000 == 0)
        snprintf(buf, cap, "%" PRIu64 "k", n / 1000);
    else
        snprintf(buf, cap, "%" PRIu64, n);
    return buf;
}

static const char *fmt_ops(double v, char *buf, size_t cap)
{
    if (isnan(v))
        snprintf(buf, cap, "-");
    else if (v >= 1e6)
        snprintf(buf, cap, "%.2fM", v / 1e6);
    else if (v >= 1e3)
        snprintf(buf, cap, "%.1fk", v / 1e3);
    else
        snprintf(buf, cap, "%.0f", v);
    return buf;
}

static const char *fmt_us(double v, char *buf, size_t cap)
{
    if (isnan(v))
        snprintf(buf, cap, "-");
    else if (v < 10)
        snprintf(buf, cap, "%.3f", v);
    else
        snprintf(buf, cap, "%.1f", v);
    return buf;
}

static const char *fmt_ratio(double v, char *buf, size_t cap)
{
    if (isnan(v))
        snprintf(buf, cap, "-");
    else
        snprintf(buf, cap, "%.2fx", v);
    return buf;
}

static void print_cpu(FILE *f)
{
    char line[512], model[256] = "unknown";
    FILE *c = fopen("/proc/cpuinfo", "r");
    if (c) {
        while (fgets(line, sizeof line, c)) {
            if (strncmp(line, "model name", 10) == 0) {
                char *p = strchr(line, ':');
                if (p) {
                    p++;
                    while (*p == ' ' || *p == '\t')
                        p++;
                    p[strcspn(p, "\n")] = '\0';
                    snprintf(model, sizeof model, "%s", p);
                }
                break;
            }
        }
        fclose(c);
    }
    fprintf(f, "%ld CPUs online, %s", sysconf(_SC_NPROCESSORS_ONLN), model);
}

static void print_header(int argc, char **argv)
{
    const char *b = cfg.markdown ? "- " : "";
    char date[64];
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S %z", &tm);
    printf("%sshmkv-bench, libshmkv %s\n", b, shmkv_version());
    printf("%scommand:%s", b, cfg.markdown ? " `" : " ");
    for (int i = 0; i < argc; i++)
        printf("%s%s", i ? " " : "", argv[i]);
    printf("%s\n", cfg.markdown ? "`" : "");
    printf("%smachine: ", b);
    print_cpu(stdout);
    printf("\n%sdate: %s\n", b, date);
    printf("%smethod: memory backend; %d round%s of ~%.0f ms per measurement, medians; "
           "ratios are medians of per-round ratios; %d-byte values\n",
           b, cfg.rounds, cfg.rounds == 1 ? "" : "s", cfg.budget * 1e3, (int)VLEN);
    printf("\n");
}

/* Print nrows rows of ncol cells (64 bytes each, row after row) under hdr:
 * a Markdown table, or columns padded to their widest cell. Columns 0 and 2
 * hold names and are left-aligned; the others hold numbers. */
static void print_cells(const char *const *hdr, int ncol, const char (*cell)[64], int nrows)
{
    int width[16];
    for (int c = 0; c < ncol; c++) {
        width[c] = (int)strlen(hdr[c]);
        for (int i = 0; i < nrows; i++) {
            int l = (int)strlen(cell[i * ncol + c]);
            if (l > width[c])
                width[c] = l;
        }
    }
    if (cfg.markdown) {
        printf("|");
        for (int c = 0; c < ncol; c++)
            printf(" %s |", hdr[c]);
        printf("\n|");
        for (int c = 0; c < ncol; c++)
            printf(c == 0 || c == 2 ? " --- |" : " ---: |");
        printf("\n");
        for (int i = 0; i < nrows; i++) {
            printf("|");
            for (int c = 0; c < ncol; c++) {
                const char *v = cell[i * ncol + c];
                printf(" %s |", strcmp(v, "-") == 0 ? "—" : v);
            }
            printf("\n");
        }
    } else {
        for (int c = 0; c < ncol; c++)
            printf(c == 0 ? "%-*s" : "  %*s", width[c], hdr[c]);
        printf("\n");
        for (int i = 0; i < nrows; i++) {
            for (int c = 0; c < ncol; c++)
                printf(c == 0 ? "%-*s" : "  %*s", width[c], cell[i * ncol + c]);
            printf("\n");
        }
    }
    printf("\n");
}

static void print_table(void)
{
    qsort(g_rows, (size_t)g_nrows, sizeof g_rows[0], cmp_row);
    static const char *hdr[] = {"operation", "keys", "procs", "shmkv ops/s", "shmkv us/op",
                                "baseline ops/s", "baseline us/op", "shmkv/baseline time",
                                "2p/1p shmkv", "2p/1p baseline"};
    enum { NCOL = 10 };
    char cell[MAX_SIZES * 16][NCOL][64];
    for (int i = 0; i < g_nrows; i++) {
        row *r = &g_rows[i];
        snprintf(cell[i][0], 64, "%s", r->op);
        fmt_keys(r->keys, cell[i][1], 64);
        snprintf(cell[i][2], 64, "%d", r->procs);
        fmt_ops(r->kv_ops, cell[i][3], 64);
        fmt_us(r->kv_us, cell[i][4], 64);
        fmt_ops(r->bl_ops, cell[i][5], 64);
        fmt_us(r->bl_us, cell[i][6], 64);
        fmt_ratio(r->ratio, cell[i][7], 64);
        fmt_ratio(r->scale, cell[i][8], 64);
        fmt_ratio(r->bl_scale, cell[i][9], 64);
        if (r->busy) {
            strcat(cell[i][8], " (busy)");
            strcat(cell[i][9], " (busy)");
        }
    }
    print_cells(hdr, NCOL, &cell[0][0], g_nrows);
}

static const sizeres *pick_size(const sizeres *res, int n, uint64_t want, bool largest)
{
    const sizeres *best = NULL;
    for (int i = 0; i < n; i++) {
        if (res[i].n == want)
            return &res[i];
        if (!best || (largest ? res[i].n > best->n : res[i].n < best->n))
            best = &res[i];
    }
    return best;
}

static void print_machine_check(const sizeres *res, int n)
{
    char kb[32];
    printf("Machine check (2p/1p of an arithmetic loop with no shared data, before and after each\n"
           "2-process measurement; 2-process figures use the rounds where it was >= %.1fx,\n"
           "or are marked (busy) when there was none):\n\n", MACHINE_OK);
    for (int i = 0; i < n; i++) {
        const scale_res *g = &res[i].sget, *s = &res[i].sset;
        printf("%s%s keys: get rounds %d/%d trusted (median check %.2fx), "
               "set rounds %d/%d trusted (median check %.2fx), %d repeated\n",
               cfg.markdown ? "- " : "  ", fmt_keys(res[i].n, kb, sizeof kb),
               g->ok_k2.n, g->k2.n, median(&g->mc), s->ok_k2.n, s->k2.n, median(&s->mc),
               g->retries + s->retries);
    }
    printf("\n");
}

static void print_targets(const sizeres *res, int n)
{
    char kb[32];
    const char *pre = cfg.markdown ? "    " : "";
    if (cfg.markdown)
        printf("Targets:\n\n");
    const sizeres *s10k = pick_size(res, n, 10000, false);
    const sizeres *s1m = pick_size(res, n, 1000000, true);
    double g = median(&s10k->get_ratio), s = median(&s10k->set_ratio);
    fmt_keys(s10k->n, kb, sizeof kb);
    printf("%starget get<=1.5x baseline @%s: %s (%.3fx)\n", pre, kb, g <= 1.5 ? "PASS" : "FAIL", g);
    printf("%starget set<=1.5x baseline @%s: %s (%.3fx)\n", pre, kb, s <= 1.5 ? "PASS" : "FAIL", s);
    for (int i = 0; i < n; i++) {
        fmt_keys(res[i].n, kb, sizeof kb);
        bool bx, by;
        double x = median(trusted(&res[i].sget.ok_kscale, &res[i].sget.kscale, &bx));
        double y = median(trusted(&res[i].sset.ok_kscale, &res[i].sset.kscale, &by));
        printf("%starget get 2p>=1.7x 1p @%s: %s (%.3fx)%s\n", pre, kb, x >= 1.7 ? "PASS" : "FAIL", x,
               bx ? " [machine busy in every round: inconclusive]" : "");
        printf("%starget set 2p>=1.7x 1p @%s: %s (%.3fx)%s\n", pre, kb, y >= 1.7 ? "PASS" : "FAIL", y,
               by ? " [machine busy in every round: inconclusive]" : "");
    }
    double us = median(&s1m->rkp) / 1e3;
    fmt_keys(s1m->n, kb, sizeof kb);
    printf("%starget random_key prefix<2us @%s: %s (%.3f us)\n", pre, kb, us < 2.0 ? "PASS" : "FAIL", us);
}

/* ------------------------------------------------------------------ */
/* --claims: claim cycles                                              */

/*
 * A pool of n tracked keys (the prefixed keys), claimed through 10 claim
 * prefixes "p00".."p09" (10% of the keys each), one drawn at random per
 * cycle. Every 1- and 2-process figure comes from forked children on the
 * same store, as the 2-process rows of the default run. Cycles that delete
 * remove at most a quarter of the keys per timed run; the parent puts them
 * back between runs, untimed.
 */
typedef struct claims_res {
    uint64_t n, held_keys;
    series keep[MAXP], held[MAXP], del[MAXP], take[MAXP]; /* cycles/s */
    series held_ratio[MAXP]; /* time per cycle: 99% held / none held */
    series del_ratio[MAXP];  /* time per cycle: claim+complete(delete) / take */
    series keep_scale, held_scale, del_scale, take_scale; /* 2p/1p */
    series mc;
    uint64_t misses;
} claims_res;

/* Puts back the keys the children of the last forked run removed. */
static void refill(store *st, const dataset *ds, int nproc)
{
    unsigned char val[VLEN];
    memset(val, '.', sizeof val);
    for (int c = 0; c < nproc; c++) {
        const uint32_t *t = g_taken + (uint64_t)c * g_taken_cap;
        for (uint64_t j = 0; j < g_ctl->r[c].ntaken; j++) {
            if (t[j] >= ds->n)
                die("refill: key number %u out of range", (unsigned)t[j]);
            const char *key = ds->tkeys + (uint64_t)t[j] * TRACK_STRIDE;
            make_value(val, key, TRACK_KLEN, 0);
            int rc = shmkv_set(st->db, key, TRACK_KLEN, val, VLEN, SHMKV_KIND_BYTES);
            if (rc != 0)
                die("refill: shmkv_set(%s): %s", key, shmkv_strerror(rc));
        }
    }
    if (shmkv_size(st->db) != ds->n)
        die("refill: the store holds %" PRIu64 " keys, expected %" PRIu64, shmkv_size(st->db), ds->n);
}

/* Cycles per second of nproc children doing `total` cycles each, in runs
 * of at most a quarter of the keys when the cycle removes keys. */
static double claims_run(worker *w, store *st, int nproc, uint64_t total, uint64_t *misses)
{
    bool removes = w->op == OP_CLAIM_DEL || w->op == OP_TAKE;
    uint64_t per = total;
    if (removes && per > g_taken_cap / (uint64_t)nproc)
        per = g_taken_cap / (uint64_t)nproc;
    if (per < 1)
        per = 1;
    double ops = 0, secs = 0;
    for (uint64_t done = 0; done < total; done += per) {
        w->pos += 104729;
        double thr = forked(w, st->ref, nproc, per);
        ops += (double)nproc * (double)per;
        secs += (double)nproc * (double)per / thr;
        for (int c = 0; c < nproc; c++)
            *misses += g_ctl->r[c].misses;
        if (removes)
            refill(st, w->ds, nproc);
    }
    return ops / secs;
}

/* Claims 99% of the keys (all but one in a hundred of every claim prefix)
 * with a 24 h lease. */
static uint64_t hold_most(store *st, const dataset *ds)
{
    shmkv_lease lease = {"held", 4, SHMKV_TTL_MAX_MS};
    uint64_t held = 0;
    for (uint64_t i = 0; i < ds->n; i++) {
        if ((i / NPFX) % 100 == 0)
            continue;
        const char *key = ds->tkeys + i * TRACK_STRIDE;
        shmkv_claim cl;
        int rc = shmkv_claim_key(st->db, key, TRACK_KLEN, &lease, &cl, NULL, 0, NULL, NULL);
        if (rc != 0)
            die("hold: shmkv_claim_key(%s): %s", key, shmkv_strerror(rc));
        held++;
    }
    return held;
}

static void check_claims(store *st, const dataset *ds, uint64_t want_live, const char *what)
{
    uint64_t live = 0, expired = 0;
    int rc = shmkv_claim_count(st->db, NULL, 0, &live, &expired);
    if (rc != 0)
        die("%s: shmkv_claim_count: %s", what, shmkv_strerror(rc));
    if (live != want_live || shmkv_size(st->db) != ds->n)
        die("%s: %" PRIu64 " live claims (expected %" PRIu64 ") and %" PRIu64
            " keys (expected %" PRIu64 ")", what, live, want_live, shmkv_size(st->db), ds->n);
}

static void run_claims(uint64_t n, claims_res *R)
{
    memset(R, 0, sizeof *R);
    R->n = n;
    dataset *ds = calloc(1, sizeof *ds);
    if (!ds)
        die("out of memory");
    progress("%" PRIu64 " keys: generating keys", n);
    dataset_init(ds, n, 0x5eed0000u + n);
    g_taken_cap = n / 4;
    g_taken = mmap(NULL, (size_t)(g_taken_cap * MAXP) * sizeof(uint32_t), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_taken == MAP_FAILED)
        die("mmap: %s", strerror(errno));

    progress("%" PRIu64 " keys: populating two tracked stores, holding 99%% of one", n);
    store pool, heldst;
    store_open(&pool, SHMKV_BACKEND_MEMORY, SHMKV_TRACK_ON);
    populate(&pool, ds, true);
    store_open(&heldst, SHMKV_BACKEND_MEMORY, SHMKV_TRACK_ON);
    populate(&heldst, ds, true);
    double t0 = now_s();
    R->held_keys = hold_most(&heldst, ds);
    progress("%" PRIu64 " keys: %" PRIu64 " claims taken in %.2f s", n, R->held_keys, now_s() - t0);
    check_claims(&heldst, ds, R->held_keys, "after holding");

    uint64_t p = 0;
    worker keep = make_worker(OP_CLAIM_KEEP, pool.db, NULL, ds, true, p += 7919);
    worker held = make_worker(OP_CLAIM_KEEP, heldst.db, NULL, ds, true, p += 7919);
    worker del = make_worker(OP_CLAIM_DEL, pool.db, NULL, ds, true, p += 7919);
    worker take = make_worker(OP_TAKE, pool.db, NULL, ds, true, p += 7919);

    /* How many cycles one process does in a budget, from the keep cycle
     * in this process (it leaves the store as it was). */
    progress("%" PRIu64 " keys: warming up", n);
    double ns = timed(&keep, cfg.budget / 4);
    ns = timed(&keep, cfg.budget / 2);
    uint64_t total = child_ops(ns);
    uint64_t warm = total / 8 > 0 ? total / 8 : 1;
    claims_run(&held, &heldst, 1, warm, &R->misses);
    claims_run(&del, &pool, 1, warm, &R->misses);
    claims_run(&take, &pool, 1, warm, &R->misses);

    for (int r = 0; r < cfg.rounds; r++) {
        progress("%" PRIu64 " keys: claims round %d/%d", n, r + 1, cfg.rounds);
        double before = machine_check(ds);
        double k[MAXP], h[MAXP], d[MAXP], t[MAXP];
        for (int i = 0; i < MAXP; i++) {
            int np = r % 2 == 0 ? i + 1 : MAXP - i; /* alternate the order by round */
            int x = np - 1;
            if (r % 2 == 0) {
                k[x] = claims_run(&keep, &pool, np, total, &R->misses);
                h[x] = claims_run(&held, &heldst, np, total, &R->misses);
                d[x] = claims_run(&del, &pool, np, total, &R->misses);
                t[x] = claims_run(&take, &pool, np, total, &R->misses);
            } else {
                t[x] = claims_run(&take, &pool, np, total, &R->misses);
                d[x] = claims_run(&del, &pool, np, total, &R->misses);
                h[x] = claims_run(&held, &heldst, np, total, &R->misses);
                k[x] = claims_run(&keep, &pool, np, total, &R->misses);
            }
        }
        double after = machine_check(ds);
        put(&R->mc, before < after ? before : after);
        for (int x = 0; x < MAXP; x++) {
            put(&R->keep[x], k[x]);
            put(&R->held[x], h[x]);
            put(&R->del[x], d[x]);
            put(&R->take[x], t[x]);
            put(&R->held_ratio[x], k[x] / h[x]);
            put(&R->del_ratio[x], t[x] / d[x]);
        }
        put(&R->keep_scale, k[1] / k[0]);
        put(&R->held_scale, h[1] / h[0]);
        put(&R->del_scale, d[1] / d[0]);
        put(&R->take_scale, t[1] / t[0]);
    }

    progress("%" PRIu64 " keys: final check", n);
    check_claims(&pool, ds, 0, "final check of the pool");
    check_claims(&heldst, ds, R->held_keys, "final check of the held store");

    store_close(&heldst);
    store_close(&pool);
    munmap(g_taken, (size_t)(g_taken_cap * MAXP) * sizeof(uint32_t));
    g_taken = NULL;
    dataset_free(ds);
    free(ds);
}

static void print_claims(const claims_res *res, int nres)
{
    static const char *hdr[] = {"cycle", "keys", "held", "procs", "cycles/s", "us/cycle",
                                "time vs reference", "2p/1p"};
    enum { NCOL = 8 };
    char cell[MAX_SIZES * 8][NCOL][64];
    int nr = 0;
    for (int i = 0; i < nres; i++) {
        const claims_res *R = &res[i];
        struct {
            const char *name, *held;
            const series *thr, *ratio, *scale;
            const char *ref;
        } kinds[4] = {
            {"claim_random+complete(keep)", "0", R->keep, NULL, &R->keep_scale, NULL},
            {"claim_random+complete(keep)", "99%", R->held, R->held_ratio, &R->held_scale, "vs 0% held"},
            {"claim_random+complete(delete)", "0", R->del, R->del_ratio, &R->del_scale, "vs take"},
            {"take: random_key+delete", "0", R->take, NULL, &R->take_scale, NULL},
        };
        for (int k = 0; k < 4; k++) {
            for (int x = 0; x < MAXP; x++, nr++) {
                char ops[32], us[32], rt[32], sc[32];
                double thr = median(&kinds[k].thr[x]);
                snprintf(cell[nr][0], 64, "%s", kinds[k].name);
                fmt_keys(R->n, cell[nr][1], 64);
                snprintf(cell[nr][2], 64, "%s", kinds[k].held);
                snprintf(cell[nr][3], 64, "%d", x + 1);
                snprintf(cell[nr][4], 64, "%s", fmt_ops(thr, ops, sizeof ops));
                snprintf(cell[nr][5], 64, "%s", fmt_us(1e6 / thr, us, sizeof us));
                if (kinds[k].ratio)
                    snprintf(cell[nr][6], 64, "%s %s",
                             fmt_ratio(median(&kinds[k].ratio[x]), rt, sizeof rt), kinds[k].ref);
                else
                    snprintf(cell[nr][6], 64, "-");
                snprintf(cell[nr][7], 64, "%s", x == 1 ? fmt_ratio(median(kinds[k].scale), sc, sizeof sc) : "-");
            }
        }
    }
    print_cells(hdr, NCOL, &cell[0][0], nr);
    for (int i = 0; i < nres; i++) {
        char kb[32];
        int ok = 0;
        for (int r = 0; r < res[i].mc.n; r++)
            ok += res[i].mc.v[r] >= MACHINE_OK;
        printf("%s%s keys: %" PRIu64 " keys held in the 99%% rows; machine check (2p/1p of an "
               "arithmetic loop, before and after each round) median %.2fx, %d/%d rounds >= %.1fx; "
               "%" PRIu64 " draws found the prefix's claimable keys all taken by the other process\n",
               cfg.markdown ? "- " : "", fmt_keys(res[i].n, kb, sizeof kb), res[i].held_keys,
               median(&res[i].mc), ok, res[i].mc.n, MACHINE_OK, res[i].misses);
    }
}

/* ------------------------------------------------------------------ */
/* Options                                                             */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: shmkv-bench [--quick] [--keys N[,N...]] [--rounds N] [--time-ms MS]\n"
            "                   [--disk] [--claims] [--markdown] [--verbose]\n"
            "  --quick       small sizes, 2 rounds, short measurements (a smoke test)\n"
            "  --keys LIST   key counts, comma-separated; k and M suffixes accepted\n"
            "                (default 10k,1M; %u..%u)\n"
            "  --rounds N    rounds per measurement; medians are reported (default 5)\n"
            "  --time-ms MS  length of one timed measurement (default 200)\n"
            "  --disk        also measure get/set on the disk backend (a temp file)\n"
            "  --claims      claim cycles (claim_random + complete, 1 and 2 processes,\n"
            "                with 99%% of the keys held, and beside random_key + delete)\n"
            "                instead of the default rows\n"
            "  --markdown    print the table as Markdown\n"
            "  --verbose     also print every round's values (to stderr)\n",
            MIN_KEYS, MAX_KEYS);
}

static bool parse_count(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return false;
    if (*end == 'k' || *end == 'K') {
        v *= 1000;
        end++;
    } else if (*end == 'm' || *end == 'M') {
        v *= 1000000;
        end++;
    }
    if (*end != '\0')
        return false;
    *out = v;
    return true;
}

static bool parse_sizes(const char *arg)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", arg);
    cfg.nsizes = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        uint64_t v;
        if (cfg.nsizes == MAX_SIZES || !parse_count(tok, &v) || v < MIN_KEYS || v > MAX_KEYS)
            return false;
        cfg.sizes[cfg.nsizes++] = v;
    }
    return cfg.nsizes > 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"quick", no_argument, NULL, 'q'},
        {"keys", required_argument, NULL, 'k'},
        {"rounds", required_argument, NULL, 'r'},
        {"time-ms", required_argument, NULL, 't'},
        {"disk", no_argument, NULL, 'd'},
        {"claims", no_argument, NULL, 'c'},
        {"markdown", no_argument, NULL, 'm'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *keys_arg = NULL;
    long rounds = -1, time_ms = -1;
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 'q': cfg.quick = true; break;
        case 'k': keys_arg = optarg; break;
        case 'r':
            rounds = strtol(optarg, &end, 10);
            if (*end || rounds < 1 || rounds > MAX_ROUNDS) {
                fprintf(stderr, "shmkv-bench: --rounds takes 1..%d\n", MAX_ROUNDS);
                return 2;
            }
            break;
        case 't':
            time_ms = strtol(optarg, &end, 10);
            if (*end || time_ms < 1 || time_ms > 60000) {
                fprintf(stderr, "shmkv-bench: --time-ms takes 1..60000\n");
                return 2;
            }
            break;
        case 'd': cfg.disk = true; break;
        case 'c': cfg.claims = true; break;
        case 'm': cfg.markdown = true; break;
        case 'v': cfg.verbose = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    cfg.rounds = rounds > 0 ? (int)rounds : cfg.quick ? 2 : 5;
    cfg.budget = (time_ms > 0 ? (double)time_ms : cfg.quick ? 20.0 : 200.0) / 1e3;
    if (!parse_sizes(keys_arg ? keys_arg : cfg.quick ? "10000" : "10000,1000000")) {
        fprintf(stderr, "shmkv-bench: --keys takes up to %d counts in %u..%u\n",
                MAX_SIZES, MIN_KEYS, MAX_KEYS);
        return 2;
    }

    install_signals();
    g_ctl = mmap(NULL, sizeof(ctl), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_ctl == MAP_FAILED)
        die("mmap: %s", strerror(errno));

    if (cfg.claims) {
        static claims_res cres[MAX_SIZES];
        for (int i = 0; i < cfg.nsizes; i++)
            run_claims(cfg.sizes[i], &cres[i]);
        print_header(argc, argv);
        print_claims(cres, cfg.nsizes);
        munmap(g_ctl, sizeof(ctl));
        return 0;
    }

    static sizeres res[MAX_SIZES];
    for (int i = 0; i < cfg.nsizes; i++) {
        run_size(cfg.sizes[i], &res[i]);
        rows_for(&res[i]);
        if (cfg.verbose)
            dump_size(&res[i]);
    }

    print_header(argc, argv);
    print_table();
    print_machine_check(res, cfg.nsizes);
    print_targets(res, cfg.nsizes);
    munmap(g_ctl, sizeof(ctl));
    return 0;
}
