/*
 * fuzz_ops.c - libFuzzer harness: differential test of the single-key and
 * listing API against a tiny in-memory reference model.
 *
 * The first input byte picks the store: bit 0 = key tracking (two memory
 * stores are kept open for the whole run, one with tracking and one
 * without; each input starts by clearing its store). The rest is read as a
 * sequence of operations - set, get, delete, incr, cas, set_if_absent,
 * get_or_set, swap, compare_and_delete, list(prefix, limit), random_key
 * (prefix), clear, exists, size - on keys of 0 to 3 bytes drawn from
 * {'a', 'b', 0x00, 0xff} (so the unsigned byte order matters, and an empty
 * key must be refused), with short values, the three kinds, and buffers that
 * are sometimes too small. Every result (return code, value, kind, length,
 * flags, order) must equal the model's; at the end list() must return
 * exactly the model. Any difference aborts with a description.
 *
 * Memory objects are named $FUZZ_SHM_PREFIX{u,t} (run.sh sets a unique
 * prefix and removes leftovers) or fz<pid>{u,t}; they are closed (and so
 * unlinked) at exit.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "shmkv.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* ---- input reader ---------------------------------------------------- */

typedef struct in {
    const uint8_t *p;
    size_t n, at;
} in;

static unsigned next(in *r)
{
    return r->at < r->n ? r->p[r->at++] : 0;
}

static bool more(const in *r)
{
    return r->at < r->n;
}

/* ---- the model ---------------------------------------------------------- */

#define MAXK 128
typedef struct ment {
    unsigned char k[4];
    size_t kl;
    unsigned char *v;
    size_t vl;
    int kind;
} ment;

static ment model[MAXK];
static int nmodel;

static int mfind(const unsigned char *k, size_t kl)
{
    for (int i = 0; i < nmodel; i++)
        if (model[i].kl == kl && memcmp(model[i].k, k, kl) == 0)
            return i;
    return -1;
}

static void mput(const unsigned char *k, size_t kl, const void *v, size_t vl, int kind)
{
    int i = mfind(k, kl);
    if (i < 0) {
        if (nmodel == MAXK)
            abort(); /* cannot happen: 84 distinct keys at most */
        i = nmodel++;
        memcpy(model[i].k, k, kl);
        model[i].kl = kl;
        model[i].v = NULL;
    }
    free(model[i].v);
    model[i].v = malloc(vl ? vl : 1);
    if (!model[i].v)
        abort();
    if (vl)
        memcpy(model[i].v, v, vl);
    model[i].vl = vl;
    model[i].kind = kind;
}

static void mdel(int i)
{
    free(model[i].v);
    model[i] = model[--nmodel];
}

static void mclear(void)
{
    while (nmodel)
        mdel(nmodel - 1);
}

static int keycmp(const void *a, size_t al, const void *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c)
        return c < 0 ? -1 : 1;
    return al < bl ? -1 : al > bl;
}

static int ment_cmp(const void *a, const void *b)
{
    const ment *x = a, *y = b;
    return keycmp(x->k, x->kl, y->k, y->kl);
}

static bool has_prefix(const ment *e, const unsigned char *p, size_t pl)
{
    return pl == 0 || (e->kl >= pl && memcmp(e->k, p, pl) == 0);
}

/* Decimal int64 as incr reads it: an optional '-', then one or more digits
 * (leading zeros allowed), nothing else, and the value within int64. */
static bool mparse(const unsigned char *p, size_t n, int64_t *out)
{
    bool neg = n > 0 && p[0] == '-';
    size_t i = neg;
    if (i == n)
        return false;
    const uint64_t lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t v = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        unsigned d = (unsigned)(p[i] - '0');
        if (v > (lim - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

/* ---- failure reporting ---------------------------------------------------- */

static int opno;
static const char *opname;
static bool trace; /* FUZZ_OPS_TRACE=1: print every operation (for replays) */

static const char *show(const void *p, size_t n)
{
    static char ring[4][160];
    static int at;
    char *o = ring[at++ & 3];
    size_t j = 0;
    const unsigned char *c = p;
    for (size_t i = 0; i < n && j < 140; i++)
        j += (size_t)snprintf(o + j, 160 - j, (c[i] >= 0x21 && c[i] < 0x7f) ? "%c" : "\\x%02x", c[i]);
    o[j] = 0;
    return o;
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz_ops: FAIL: op %d (%s): ", opno, opname ? opname : "?");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

#define EXPECT_RC(got, want)                                                                \
    do {                                                                                    \
        int g_ = (got), w_ = (want);                                                        \
        if (g_ != w_)                                                                       \
            fail("returned %d (%s), the model says %d (%s)", g_, shmkv_strerror(g_), w_,     \
                 shmkv_strerror(w_));                                                       \
    } while (0)

#define EXPECT_EQ(what, got, want)                                                          \
    do {                                                                                    \
        long long g_ = (long long)(got), w_ = (long long)(want);                            \
        if (g_ != w_)                                                                       \
            fail("%s is %lld, the model says %lld", (what), g_, w_);                        \
    } while (0)

static void expect_bytes(const char *what, const void *got, size_t gl, const void *want, size_t wl)
{
    if (gl != wl || (wl && memcmp(got, want, wl) != 0))
        fail("%s is \"%s\" (%zu bytes), the model says \"%s\" (%zu bytes)", what, show(got, gl), gl,
             show(want, wl), wl);
}

/* ---- stores --------------------------------------------------------------- */

static shmkv_db *stores[2];
static char names[2][64];

static void close_stores(void)
{
    for (int i = 0; i < 2; i++)
        if (stores[i]) {
            shmkv_close(stores[i]);
            stores[i] = NULL;
            shmkv_memory_unlink(names[i]); /* already gone if we were last */
        }
}

/* Objects left by earlier standalone runs that crashed (their process is
 * gone) are removed at start-up. */
static void sweep_dead(void)
{
    DIR *d = opendir("/dev/shm");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int pid = 0;
        char c = 0, end = 0;
        if (sscanf(e->d_name, "shmkv.fz%d%c%c", &pid, &c, &end) != 2 || (c != 'u' && c != 't') ||
            pid <= 0 || kill(pid, 0) == 0 || errno != ESRCH)
            continue;
        unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *p = getenv("FUZZ_SHM_PREFIX");
    char def[32];
    if (!p || !*p || strlen(p) > 40) {
        sweep_dead();
        snprintf(def, sizeof def, "fz%d", (int)getpid());
        p = def;
    }
    for (int i = 0; i < 2; i++) {
        snprintf(names[i], sizeof names[i], "%s%c", p, i ? 't' : 'u');
        shmkv_memory_unlink(names[i]);
        shmkv_options o;
        memset(&o, 0, sizeof o);
        o.backend = SHMKV_BACKEND_MEMORY;
        o.track_keys = i ? SHMKV_TRACK_ON : SHMKV_TRACK_OFF;
        o.segments = 4; /* few segments: more collisions, rehashes, tombstones */
        o.reserve = 64u << 20;
        int rc = shmkv_open(names[i], &o, &stores[i]);
        if (rc) {
            fprintf(stderr, "fuzz_ops: cannot open memory store %s: %s\n", names[i],
                    shmkv_strerror(rc));
            exit(1);
        }
    }
    atexit(close_stores);
    trace = getenv("FUZZ_OPS_TRACE") != NULL;
    return 0;
}

/* ---- decoding arguments ----------------------------------------------------- */

static const unsigned char alpha[4] = {'a', 'b', 0x00, 0xff};

static size_t rd_key(in *r, unsigned char *k)
{
    unsigned b = next(r);
    size_t kl = b & 3;
    for (size_t i = 0; i < kl; i++)
        k[i] = alpha[(b >> (2 + 2 * i)) & 3];
    return kl;
}

static size_t rd_prefix(in *r, unsigned char *k)
{
    unsigned b = next(r);
    size_t pl = b % 3;
    for (size_t i = 0; i < pl; i++)
        k[i] = alpha[(b >> (2 + 2 * i)) & 3];
    return pl;
}

static unsigned char vbuf[6000];

static size_t rd_val(in *r, unsigned char *v)
{
    unsigned b = next(r);
    if (b >= 250) { /* a long value, several size classes up */
        size_t n = 100 + (size_t)next(r) * 23;
        unsigned char s = (unsigned char)next(r);
        for (size_t i = 0; i < n; i++)
            v[i] = (unsigned char)(s + i * 7);
        return n;
    }
    if (b >= 220) { /* a decimal number, for incr */
        static const char *nums[] = {"0", "-0", "7", "-7", "9223372036854775807",
                                     "-9223372036854775808", "9223372036854775808",
                                     "0000000000000000001", "00000000000000000001", "+1",
                                     "1 ", "", "-", "12a"};
        const char *s = nums[next(r) % (sizeof nums / sizeof nums[0])];
        memcpy(v, s, strlen(s));
        return strlen(s);
    }
    size_t n = b % 9;
    for (size_t i = 0; i < n; i++)
        v[i] = (unsigned char)next(r);
    return n;
}

static int64_t rd_delta(in *r)
{
    unsigned b = next(r);
    static const int64_t big[] = {INT64_MAX, INT64_MIN, INT64_MAX - 1, INT64_MIN + 1,
                                  (int64_t)1 << 62, -((int64_t)1 << 62)};
    if (b >= 240)
        return big[b % 6];
    return (int64_t)b - 120;
}

/* ---- list comparison ------------------------------------------------------------ */

typedef struct lst {
    ment got[MAXK];
    int n;
    int stop_after; /* 0: never */
    bool keys_only;
    bool bad_null;
} lst;

static int list_cb(void *ctx, const void *k, size_t kl, const void *v, size_t vl, shmkv_kind kind)
{
    lst *l = ctx;
    if (l->n >= MAXK || kl > 3)
        fail("list produced more or longer keys than the model holds");
    ment *e = &l->got[l->n++];
    memcpy(e->k, k, kl);
    e->kl = kl;
    e->vl = vl;
    e->kind = (int)kind;
    if (l->keys_only) {
        if (v != NULL || vl != 0)
            l->bad_null = true;
        e->v = NULL;
    } else {
        e->v = malloc(vl ? vl : 1);
        if (!e->v)
            abort();
        if (vl)
            memcpy(e->v, v, vl);
    }
    return l->stop_after && l->n >= l->stop_after ? 77 : 0;
}

static void compare_list(shmkv_db *db, const unsigned char *p, size_t pl, uint64_t limit,
                         bool keys_only, int stop_after)
{
    static lst l;
    memset(&l, 0, sizeof l);
    l.keys_only = keys_only;
    l.stop_after = stop_after;
    int rc = shmkv_list(db, p, pl, limit, keys_only ? SHMKV_LIST_KEYS_ONLY : 0, list_cb, &l);

    ment want[MAXK];
    int nw = 0;
    for (int i = 0; i < nmodel; i++)
        if (has_prefix(&model[i], p, pl))
            want[nw++] = model[i];
    qsort(want, (size_t)nw, sizeof want[0], ment_cmp);
    if (limit && (uint64_t)nw > limit)
        nw = (int)limit;
    int wrc = 0;
    if (stop_after && nw >= stop_after) {
        nw = stop_after;
        wrc = 77;
    }
    char what[64];
    snprintf(what, sizeof what, "list(\"%s\", limit %" PRIu64 ")", show(p, pl), limit);
    if (rc != wrc)
        fail("%s returned %d, the model says %d", what, rc, wrc);
    if (l.bad_null)
        fail("%s with KEYS_ONLY passed a value", what);
    if (l.n != nw)
        fail("%s gave %d keys, the model %d", what, l.n, nw);
    for (int i = 0; i < nw; i++) {
        expect_bytes("listed key", l.got[i].k, l.got[i].kl, want[i].k, want[i].kl);
        if (!keys_only) {
            expect_bytes("listed value", l.got[i].v, l.got[i].vl, want[i].v, want[i].vl);
            EXPECT_EQ("listed kind", l.got[i].kind, want[i].kind);
        }
    }
    for (int i = 0; i < l.n; i++)
        free(l.got[i].v);
}

/* ---- one input ---------------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    in r = {data, size, 0};
    shmkv_db *db = stores[next(&r) & 1];
    opno = 0;
    opname = "clear";
    EXPECT_RC(shmkv_clear(db), 0);
    mclear();
    EXPECT_EQ("size() after clear", shmkv_size(db), 0);

    unsigned char k[4], p[4], out[6100];
    while (more(&r) && opno < 400) {
        opno++;
        unsigned op = next(&r) % 16;
        size_t kl = rd_key(&r, k), vl = 0, ol = 12345, cap;
        int kind = (int)(next(&r) % 3), flag = -1, rc, i = kl ? mfind(k, kl) : -1;
        shmkv_kind gk = (shmkv_kind)-1;
        if (trace)
            fprintf(stderr, "op %d: %u key \"%s\" (%s)\n", opno, op, show(k, kl),
                    i >= 0 ? show(model[i].v, model[i].vl) : "absent");
        switch (op) {
        case 0:
        case 14:
            opname = "set";
            vl = rd_val(&r, vbuf);
            rc = shmkv_set(db, k, kl, vbuf, vl, (shmkv_kind)kind);
            if (!kl) {
                EXPECT_RC(rc, SHMKV_EKEYSIZE);
                break;
            }
            EXPECT_RC(rc, 0);
            mput(k, kl, vbuf, vl, kind);
            break;
        case 1:
            opname = "get";
            cap = next(&r) % 12;
            if (cap == 11)
                cap = sizeof out;
            rc = shmkv_get(db, k, kl, out, cap, &ol, &gk);
            if (!kl) {
                EXPECT_RC(rc, SHMKV_EKEYSIZE);
            } else if (i < 0) {
                EXPECT_RC(rc, SHMKV_ENOTFOUND);
            } else if (model[i].vl > cap) {
                EXPECT_RC(rc, SHMKV_EBUFSIZE);
                EXPECT_EQ("needed size", ol, model[i].vl);
            } else {
                EXPECT_RC(rc, 0);
                expect_bytes("value", out, ol, model[i].v, model[i].vl);
                EXPECT_EQ("kind", gk, model[i].kind);
            }
            break;
        case 2:
            opname = "delete";
            rc = shmkv_delete(db, k, kl, &flag);
            if (!kl) {
                EXPECT_RC(rc, SHMKV_EKEYSIZE);
                break;
            }
            EXPECT_RC(rc, 0);
            EXPECT_EQ("existed", flag, i >= 0);
            if (i >= 0)
                mdel(i);
            break;
        case 3: {
            opname = "incr";
            int64_t d = rd_delta(&r), res = 424242, cur = 0, now;
            rc = shmkv_incr(db, k, kl, d, (shmkv_kind)kind, &res);
            if (!kl) {
                EXPECT_RC(rc, SHMKV_EKEYSIZE);
                break;
            }
            if (i >= 0 && !mparse(model[i].v, model[i].vl, &cur)) {
                if (rc != SHMKV_ENOTINT) {
                    size_t sl = 0;
                    int g = shmkv_get(db, k, kl, out, sizeof out, &sl, NULL);
                    fail("returned %d (%s) = %" PRId64 " for the stored value \"%s\", which "
                         "is not a decimal int64 (model: ENOTINT; get now: %d \"%s\")",
                         rc, shmkv_strerror(rc), res, show(model[i].v, model[i].vl), g,
                         show(out, sl));
                }
                break;
            }
            if (__builtin_add_overflow(cur, d, &now)) {
                EXPECT_RC(rc, SHMKV_EOVERFLOW);
                break;
            }
            EXPECT_RC(rc, 0);
            EXPECT_EQ("incr result", res, now);
            char txt[32];
            int n = snprintf(txt, sizeof txt, "%" PRId64, now);
            mput(k, kl, txt, (size_t)n, i >= 0 ? model[i].kind : kind);
            break;
        }
        case 4:
        case 8: {
            /* the expectation: absent (cas only), the current value, or other bytes */
            unsigned how = next(&r) % 3;
            unsigned char ebuf[6000];
            const void *exp = ebuf;
            size_t el;
            if (how == 0 && op == 4) {
                exp = NULL;
                el = 0;
            } else if (how == 1 && i >= 0) {
                memcpy(ebuf, model[i].v, model[i].vl);
                el = model[i].vl;
            } else {
                el = rd_val(&r, ebuf);
            }
            bool match = exp == NULL ? i < 0
                                     : i >= 0 && model[i].vl == el &&
                                           (el == 0 || memcmp(model[i].v, ebuf, el) == 0);
            if (op == 4) {
                opname = "cas";
                vl = rd_val(&r, vbuf);
                rc = shmkv_cas(db, k, kl, exp, el, vbuf, vl, (shmkv_kind)kind, &flag);
                if (!kl) {
                    EXPECT_RC(rc, SHMKV_EKEYSIZE);
                    break;
                }
                EXPECT_RC(rc, 0);
                EXPECT_EQ("swapped", flag, match);
                if (match)
                    mput(k, kl, vbuf, vl, kind);
            } else {
                opname = "compare_and_delete";
                rc = shmkv_compare_and_delete(db, k, kl, exp, el, &flag);
                if (!kl) {
                    EXPECT_RC(rc, SHMKV_EKEYSIZE);
                    break;
                }
                EXPECT_RC(rc, 0);
                EXPECT_EQ("deleted", flag, match);
                if (match)
                    mdel(i);
            }
            break;
        }
        case 5:
            opname = "set_if_absent";
            vl = rd_val(&r, vbuf);
            rc = shmkv_set_if_absent(db, k, kl, vbuf, vl, (shmkv_kind)kind, &flag);
            if (!kl) {
                EXPECT_RC(rc, SHMKV_EKEYSIZE);
                break;
            }
            EXPECT_RC(rc, 0);
            EXPECT_EQ("stored", flag, i < 0);
            if (i < 0)
                mput(k, kl, vbuf, vl, kind);
            break;
        case 6:
            opname = "get_or_set";
            vl = rd_val(&r, vbuf);
            cap = next(&r) % 12;
            if (cap == 11)
                cap = sizeof out;
            rc = shmkv_get_or_set(db, k, kl, vbuf, vl, (shmkv_kind)kind, out, cap, &ol, &gk, &flag);
            if (!kl) {
                EXPECT_RC(rc, SHMKV_EKEYSIZE);
            } else if (i >= 0) {
                if (model[i].vl > cap) {
                    EXPECT_RC(rc, SHMKV_EBUFSIZE);
                    EXPECT_EQ("needed size", ol, model[i].vl);
                } else {
                    EXPECT_RC(rc, 0);
                    EXPECT_EQ("loaded", flag, 1);
                    expect_bytes("loaded value", out, ol, model[i].v, model[i].vl);
                    EXPECT_EQ("loaded kind", gk, model[i].kind);
                }
            } else if (vl > cap) {
                EXPECT_RC(rc, SHMKV_EBUFSIZE);
                EXPECT_EQ("needed size", ol, vl);
            } else {
                EXPECT_RC(rc, 0);
                EXPECT_EQ("loaded", flag, 0);
                expect_bytes("stored value", out, ol, vbuf, vl);
                EXPECT_EQ("stored kind", gk, kind);
                mput(k, kl, vbuf, vl, kind);
            }
            break;
        case 7:
            opname = "swap";
            vl = rd_val(&r, vbuf);
            cap = next(&r) % 12;
            if (cap == 11)
                cap = sizeof out;
            rc = shmkv_swap(db, k, kl, vbuf, vl, (shmkv_kind)kind, out, cap, &ol, &gk, &flag);
            if (!kl) {
                EXPECT_RC(rc, SHMKV_EKEYSIZE);
            } else if (i >= 0 && model[i].vl > cap) {
                EXPECT_RC(rc, SHMKV_EBUFSIZE);
                EXPECT_EQ("needed size", ol, model[i].vl);
            } else {
                EXPECT_RC(rc, 0);
                EXPECT_EQ("loaded", flag, i >= 0);
                if (i >= 0) {
                    expect_bytes("previous value", out, ol, model[i].v, model[i].vl);
                    EXPECT_EQ("previous kind", gk, model[i].kind);
                } else {
                    EXPECT_EQ("previous length", ol, 0);
                }
                mput(k, kl, vbuf, vl, kind);
            }
            break;
        case 9: {
            opname = "list";
            size_t pl = rd_prefix(&r, p);
            unsigned b = next(&r);
            uint64_t limit = b & 7;
            compare_list(db, p, pl, limit, (b >> 3) & 1, (int)((b >> 4) & 7));
            break;
        }
        case 10: {
            opname = "random_key";
            size_t pl = rd_prefix(&r, p);
            cap = next(&r) % 5;
            unsigned char kb[8];
            size_t got = 999;
            rc = shmkv_random_key(db, p, pl, kb, cap, &got);
            int matching = 0;
            bool len_exists = false;
            for (int j = 0; j < nmodel; j++)
                if (has_prefix(&model[j], p, pl)) {
                    matching++;
                    len_exists |= model[j].kl == got;
                }
            if (!matching) {
                EXPECT_RC(rc, SHMKV_ENOTFOUND);
            } else if (rc == SHMKV_EBUFSIZE) {
                if (got <= cap || !len_exists)
                    fail("random_key EBUFSIZE with length %zu, capacity %zu", got, cap);
            } else {
                EXPECT_RC(rc, 0);
                int j = got <= 3 ? mfind(kb, got) : -1;
                if (j < 0 || !has_prefix(&model[j], p, pl))
                    fail("random_key(\"%s\") drew \"%s\", not a matching key", show(p, pl),
                         show(kb, got));
            }
            break;
        }
        case 11:
            opname = "clear";
            if (next(&r) % 4)
                break; /* keep clears rare */
            EXPECT_RC(shmkv_clear(db), 0);
            mclear();
            break;
        case 12:
            opname = "exists";
            rc = shmkv_exists(db, k, kl);
            EXPECT_RC(rc, kl ? (i >= 0) : SHMKV_EKEYSIZE);
            break;
        default:
            opname = "size";
            EXPECT_EQ("size()", shmkv_size(db), nmodel);
            break;
        }
    }
    opname = "final list";
    EXPECT_EQ("size()", shmkv_size(db), nmodel);
    compare_list(db, NULL, 0, 0, false, 0);
    return 0;
}
