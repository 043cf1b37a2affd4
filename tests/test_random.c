/*
 * test_random.c - shmkv_random_key(): uniformity (chi-square), prefixes,
 * ENOTFOUND, EBUFSIZE, prefixes of 0xff bytes; with key tracking on and off.
 *
 * Uniformity threshold. With K keys and D draws, X = sum (O_i - E)^2 / E
 * is approximately chi-square with K-1 degrees of freedom for a uniform
 * sampler. We fail when X exceeds the Wilson-Hilferty approximation of the
 * chi-square quantile,
 *     df * (1 - 2/(9 df) + z * sqrt(2/(9 df)))^3,  z = 6.0,
 * the standard normal's upper 1e-9 quantile. We checked numerically
 * (regularized incomplete gamma) that with z = 3.7190 (the 1e-4 quantile)
 * the approximation is above the exact 1 - 1e-4 quantile for every df from
 * 1 to 4999, so it errs on the safe side. Each chi-square test fails a
 * correct, uniform implementation with probability about 1e-9. It was
 * z = 3.75: up to 9e-5 a test, 20 tests a build, three builds a CI run,
 * so about one run in 200 failed with nothing wrong. The limit for 39 df is now
 * 118, where a sampler that followed its segment's load scored 630+. Expected counts per key are >= 50 everywhere, so the
 * chi-square approximation of the multinomial statistic is sound.
 *
 * These tests need a real random source inside the library; they are not
 * seeded, so a failure is reported with the full statistic.
 */
#include "harness.h"

#include <math.h>

TestSuite(random, .init = t_setup, .fini = t_teardown, .timeout = 240);

static double chi2_limit(unsigned df)
{
    const double z = 6.0;
    if (df == 0)
        return 0.0; /* one candidate: every draw must be it, X == 0 */
    double a = 2.0 / (9.0 * df);
    double t = 1.0 - a + z * sqrt(a);
    return df * t * t * t;
}

static int track_of(bool on)
{
    return on ? SHMKV_TRACK_ON : SHMKV_TRACK_OFF;
}

typedef struct {
    char k[32];
    size_t kl;
} rkey;

static int find_key(const rkey *ks, size_t n, const void *k, size_t kl)
{
    for (size_t i = 0; i < n; i++)
        if (ks[i].kl == kl && memcmp(ks[i].k, k, kl) == 0)
            return (int)i;
    return -1;
}

/* Draw D keys with prefix, check membership in keys[0..n) and the
 * chi-square statistic. */
static void draw_uniform(shmkv_db *db, const void *prefix, size_t plen, const rkey *keys, size_t n,
                         unsigned draws, const char *what)
{
    unsigned *count = calloc(n, sizeof *count);
    cr_assert(count);
    for (unsigned d = 0; d < draws; d++) {
        char buf[64];
        size_t kl = 0;
        int rc = shmkv_random_key(db, prefix, plen, buf, sizeof buf, &kl);
        if (rc != 0) {
            free(count);
            cr_assert_fail("%s: random_key -> %d (%s) at draw %u", what, rc, shmkv_strerror(rc), d);
        }
        int i = find_key(keys, n, buf, kl);
        if (i < 0) {
            free(count);
            cr_assert_fail("%s: random_key returned %s, which is not one of the %zu candidates",
                           what, t_show(buf, kl), n);
        }
        count[i]++;
    }
    double e = (double)draws / (double)n;
    double x = 0;
    unsigned lo = UINT32_MAX, hi = 0;
    for (size_t i = 0; i < n; i++) {
        x += (count[i] - e) * (count[i] - e) / e;
        if (count[i] < lo)
            lo = count[i];
        if (count[i] > hi)
            hi = count[i];
    }
    double lim = chi2_limit((unsigned)(n - 1));
    free(count);
    /* with >= 20 expected draws per key, P(some key never drawn) is below
     * n * e^-20 */
    if (e >= 20)
        cr_assert(lo > 0, "%s: a candidate key was never drawn in %u draws", what, draws);
    cr_log_info("%s: %u draws over %zu keys, chi2 = %.2f (limit %.2f), counts %u..%u (expected "
                "%.1f)",
                what, draws, n, x, lim, lo, hi, e);
    cr_assert(x <= lim,
              "%s: not uniform: chi-square %.2f > %.2f (df %zu, p < 1e-4); counts %u..%u, "
              "expected %.1f each",
              what, x, lim, n - 1, lo, hi, e);
}

static size_t make_keys(rkey *ks, size_t n, const char *fmt_prefix, unsigned salt)
{
    for (size_t i = 0; i < n; i++) {
        int l = snprintf(ks[i].k, sizeof ks[i].k, "%s%u-%zu", fmt_prefix, salt * 2654435761u % 997,
                         i * 37 % 1009);
        ks[i].kl = (size_t)l;
    }
    return n;
}

static void uniform_all(bool track, shmkv_backend be)
{
    shmkv_db *db = t_open(t_where(be, "uni"), be, track_of(track));
    rkey ks[40];
    make_keys(ks, 40, "key/", 1);
    for (size_t i = 0; i < 40; i++)
        t_setb(db, ks[i].k, ks[i].kl, "v", 1);
    cr_assert_eq(shmkv_size(db), 40);
    draw_uniform(db, NULL, 0, ks, 40, 20000, track ? "all keys, tracked" : "all keys, untracked");
    t_close(db);
}

Test(random, uniform_tracked) { uniform_all(true, SHMKV_BACKEND_DISK); }
Test(random, uniform_untracked) { uniform_all(false, SHMKV_BACKEND_DISK); }
Test(random, uniform_tracked_memory) { uniform_all(true, SHMKV_BACKEND_MEMORY); }

/* Uneven segments: with 4 segments and 13 keys some segments hold many
 * more keys than others, which catches "pick a segment, then a key". */
static void uniform_uneven(bool track)
{
    shmkv_options o = t_opts(SHMKV_BACKEND_DISK, track_of(track));
    o.segments = 4;
    shmkv_db *db = t_open_opts(t_path("uneven"), &o);
    rkey ks[13];
    make_keys(ks, 13, "u", 7);
    for (size_t i = 0; i < 13; i++)
        t_setb(db, ks[i].k, ks[i].kl, "v", 1);
    draw_uniform(db, NULL, 0, ks, 13, 13000, track ? "13 keys/4 segments, tracked"
                                                   : "13 keys/4 segments, untracked");
    t_close(db);
}

Test(random, uniform_uneven_segments_tracked) { uniform_uneven(true); }
Test(random, uniform_uneven_segments_untracked) { uniform_uneven(false); }

static void uniform_prefix(bool track)
{
    shmkv_db *db = t_open(t_path("pfx"), SHMKV_BACKEND_DISK, track_of(track));
    rkey in[10], out[30];
    make_keys(in, 10, "p/", 3);
    make_keys(out, 30, "q/", 3);
    for (size_t i = 0; i < 10; i++)
        t_setb(db, in[i].k, in[i].kl, "in", 2);
    for (size_t i = 0; i < 30; i++)
        t_setb(db, out[i].k, out[i].kl, "out", 3);
    /* neighbours of the prefix in key order that must never be drawn */
    t_setb(db, "p", 1, "x", 1);
    t_setb(db, "p.", 2, "x", 1);
    t_setb(db, "p0", 2, "x", 1);
    t_setb(db, "o/zzz", 5, "x", 1);
    draw_uniform(db, "p/", 2, in, 10, 10000, track ? "prefix p/, tracked" : "prefix p/, untracked");
    draw_uniform(db, "q/", 2, out, 30, 15000, track ? "prefix q/, tracked" : "prefix q/, untracked");
    /* a prefix equal to a whole key matches that key */
    rkey p1[1] = {{"p.", 2}};
    draw_uniform(db, "p.", 2, p1, 1, 100, "prefix equal to a key");
    t_close(db);
}

Test(random, uniform_prefix_tracked) { uniform_prefix(true); }
Test(random, uniform_prefix_untracked) { uniform_prefix(false); }

/* Untracked random_key samples (random slots of a count-weighted segment)
 * and falls back to walking when probing misses: a table left sparse by
 * deletes forces the walk inside segments (32 probes at 3 live slots in
 * thousands miss), and a prefix held by 6 keys in 3,018 makes sampling
 * give up about 3 times in 4, so the scanning fallback answers most of
 * those draws. Both must stay uniform. */
Test(random, uniform_untracked_sparse_and_rare)
{
    shmkv_options o = t_opts(SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF);
    o.segments = 4;
    shmkv_db *db = t_open_opts(t_path("sparse"), &o);
    char k[32];
    for (unsigned i = 0; i < 20000; i++) {
        int l = snprintf(k, sizeof k, "gone/%u", i);
        t_setb(db, k, (size_t)l, "v", 1);
    }
    for (unsigned i = 0; i < 20000; i++) {
        int l = snprintf(k, sizeof k, "gone/%u", i);
        int existed = 0;
        cr_assert_eq(shmkv_delete(db, k, (size_t)l, &existed), 0);
        cr_assert_eq(existed, 1);
    }
    rkey few[12];
    make_keys(few, 12, "s/", 5);
    for (size_t i = 0; i < 12; i++)
        t_setb(db, few[i].k, few[i].kl, "v", 1);
    cr_assert_eq(shmkv_size(db), 12);
    draw_uniform(db, NULL, 0, few, 12, 12000, "12 keys in sparse tables, untracked");

    rkey many[3000];
    for (size_t i = 0; i < 3000; i++) {
        int l = snprintf(many[i].k, sizeof many[i].k, "m/%zu", i);
        many[i].kl = (size_t)l;
        t_setb(db, many[i].k, many[i].kl, "v", 1);
    }
    rkey rare[6];
    make_keys(rare, 6, "r/", 11);
    for (size_t i = 0; i < 6; i++)
        t_setb(db, rare[i].k, rare[i].kl, "v", 1);
    draw_uniform(db, "r/", 2, rare, 6, 3000, "6 of 3,018 keys by prefix, untracked");
    draw_uniform(db, "s/", 2, few, 12, 3000, "12 of 3,018 keys by prefix, untracked");
    t_close(db);
}

/* Many keys, so the tracked index has several levels. */
Test(random, uniform_many_tracked, .timeout = 300)
{
    shmkv_db *db = t_open(t_path("many"), SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    size_t n = 1000;
    rkey *ks = calloc(n, sizeof *ks);
    cr_assert(ks);
    for (size_t i = 0; i < n; i++) {
        ks[i].kl = (size_t)snprintf(ks[i].k, sizeof ks[i].k, "m%05zu", i * 7 % n);
        t_setb(db, ks[i].k, ks[i].kl, "v", 1);
    }
    /* and some that share no prefix with the first 100 */
    draw_uniform(db, NULL, 0, ks, n, 50000, "1000 keys, tracked");
    /* prefix "m001" covers m00100..m00199 */
    rkey *sub = calloc(100, sizeof *sub);
    cr_assert(sub);
    for (size_t i = 0; i < 100; i++)
        sub[i].kl = (size_t)snprintf(sub[i].k, sizeof sub[i].k, "m001%02zu", i);
    draw_uniform(db, "m001", 4, sub, 100, 10000, "prefix m001 in 1000 keys, tracked");
    free(sub);
    free(ks);
    t_close(db);
}

static void not_found(bool track)
{
    shmkv_db *db = t_open(t_path("nf"), SHMKV_BACKEND_DISK, track_of(track));
    char buf[32];
    size_t kl = 0;
    T_RC(shmkv_random_key(db, NULL, 0, buf, sizeof buf, &kl), SHMKV_ENOTFOUND);
    T_RC(shmkv_random_key(db, "a", 1, buf, sizeof buf, &kl), SHMKV_ENOTFOUND);
    t_set(db, "apple", "1");
    t_set(db, "banana", "2");
    T_RC(shmkv_random_key(db, "c", 1, buf, sizeof buf, &kl), SHMKV_ENOTFOUND);
    T_RC(shmkv_random_key(db, "applesauce", 10, buf, sizeof buf, &kl), SHMKV_ENOTFOUND);
    T_RC(shmkv_random_key(db, "ab", 2, buf, sizeof buf, &kl), SHMKV_ENOTFOUND);
    T_RC(shmkv_random_key(db, "\0", 1, buf, sizeof buf, &kl), SHMKV_ENOTFOUND);
    T_OK(shmkv_random_key(db, "app", 3, buf, sizeof buf, &kl));
    cr_assert(kl == 5 && memcmp(buf, "apple", 5) == 0, "got %s", t_show(buf, kl));
    /* deleting every key makes it ENOTFOUND again */
    T_OK(shmkv_delete(db, "apple", 5, NULL));
    T_RC(shmkv_random_key(db, "app", 3, buf, sizeof buf, &kl), SHMKV_ENOTFOUND);
    for (int i = 0; i < 50; i++) {
        T_OK(shmkv_random_key(db, NULL, 0, buf, sizeof buf, &kl));
        cr_assert(kl == 6 && memcmp(buf, "banana", 6) == 0, "got %s", t_show(buf, kl));
    }
    T_OK(shmkv_delete(db, "banana", 6, NULL));
    T_RC(shmkv_random_key(db, NULL, 0, buf, sizeof buf, &kl), SHMKV_ENOTFOUND);
    /* after clear */
    t_set(db, "x", "1");
    T_OK(shmkv_clear(db));
    T_RC(shmkv_random_key(db, NULL, 0, buf, sizeof buf, &kl), SHMKV_ENOTFOUND);
    t_close(db);
}

Test(random, not_found_tracked) { not_found(true); }
Test(random, not_found_untracked) { not_found(false); }

static void ff_prefix(bool track)
{
    shmkv_db *db = t_open(t_path("ff"), SHMKV_BACKEND_DISK, track_of(track));
    t_setb(db, "\xff\xff", 2, "a", 1);
    t_setb(db, "\xff\xff\xff", 3, "b", 1);
    t_setb(db, "\xff\xfe", 2, "c", 1);
    t_setb(db, "\xfe\xff\xff", 3, "d", 1);
    t_setb(db, "\xff", 1, "e", 1);
    rkey two[2] = {{"\xff\xff", 2}, {"\xff\xff\xff", 3}};
    draw_uniform(db, "\xff\xff", 2, two, 2, 2000, "prefix ff ff");
    rkey four[4] = {{"\xff\xff", 2}, {"\xff\xff\xff", 3}, {"\xff\xfe", 2}, {"\xff", 1}};
    draw_uniform(db, "\xff", 1, four, 4, 4000, "prefix ff");
    rkey one[1] = {{"\xff\xff\xff", 3}};
    draw_uniform(db, "\xff\xff\xff", 3, one, 1, 50, "prefix ff ff ff");
    char buf[8];
    size_t kl;
    T_RC(shmkv_random_key(db, "\xff\xff\xff\xff", 4, buf, sizeof buf, &kl), SHMKV_ENOTFOUND);
    T_RC(shmkv_random_key(db, "\xff\xff\xfe", 3, buf, sizeof buf, &kl), SHMKV_ENOTFOUND);
    /* a prefix of 0xff bytes as long as SHMKV_KEY_MAX */
    unsigned char *big = malloc(SHMKV_KEY_MAX);
    cr_assert(big);
    memset(big, 0xff, SHMKV_KEY_MAX);
    T_RC(shmkv_random_key(db, big, SHMKV_KEY_MAX, buf, sizeof buf, &kl), SHMKV_ENOTFOUND);
    t_setb(db, big, SHMKV_KEY_MAX, "f", 1);
    unsigned char *out = malloc(SHMKV_KEY_MAX);
    cr_assert(out);
    T_OK(shmkv_random_key(db, big, SHMKV_KEY_MAX, out, SHMKV_KEY_MAX, &kl));
    cr_assert(kl == SHMKV_KEY_MAX && memcmp(out, big, kl) == 0);
    free(out);
    free(big);
    t_close(db);
}

Test(random, ff_prefix_tracked) { ff_prefix(true); }
Test(random, ff_prefix_untracked) { ff_prefix(false); }

static void bufsize(bool track)
{
    shmkv_db *db = t_open(t_path("bs"), SHMKV_BACKEND_DISK, track_of(track));
    t_setb(db, "0123456789", 10, "v", 1);
    char buf[16];
    memset(buf, '#', sizeof buf);
    size_t kl = 0;
    T_RC(shmkv_random_key(db, NULL, 0, buf, 9, &kl), SHMKV_EBUFSIZE);
    cr_assert_eq(kl, 10);
    for (size_t i = 0; i < sizeof buf; i++)
        cr_assert_eq(buf[i], '#', "EBUFSIZE wrote into the buffer");
    kl = 0;
    T_RC(shmkv_random_key(db, "01", 2, NULL, 0, &kl), SHMKV_EBUFSIZE);
    cr_assert_eq(kl, 10);
    T_OK(shmkv_random_key(db, NULL, 0, buf, 10, &kl));
    cr_assert(kl == 10 && memcmp(buf, "0123456789", 10) == 0);
    t_close(db);
}

Test(random, bufsize_tracked) { bufsize(true); }
Test(random, bufsize_untracked) { bufsize(false); }

/* Deleted keys are never drawn; every remaining key is. */
static void after_deletes(bool track)
{
    shmkv_db *db = t_open(t_path("del"), SHMKV_BACKEND_DISK, track_of(track));
    rkey ks[200];
    make_keys(ks, 200, "d", 11);
    for (size_t i = 0; i < 200; i++)
        t_setb(db, ks[i].k, ks[i].kl, "v", 1);
    rkey keep[100];
    size_t nk = 0;
    for (size_t i = 0; i < 200; i++) {
        if (i % 2)
            T_OK(shmkv_delete(db, ks[i].k, ks[i].kl, NULL));
        else
            keep[nk++] = ks[i];
    }
    /* 10000 draws over 100 keys; draw_uniform also requires every key to
     * have been drawn */
    draw_uniform(db, NULL, 0, keep, nk, 10000, "after deleting half");
    t_close(db);
}

Test(random, after_deletes_tracked) { after_deletes(true); }
Test(random, after_deletes_untracked) { after_deletes(false); }

/* Two processes forked from one that already drew keys must not draw the
 * same sequence (the generator must not be shared through fork). */
Test(random, differs_across_fork)
{
    const char *p = t_path("fork");
    shmkv_db *db = t_open(p, SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    char k[16];
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof k, "f%d", i);
        t_set(db, k, "v");
    }
    char buf[16];
    size_t kl;
    T_OK(shmkv_random_key(db, NULL, 0, buf, sizeof buf, &kl)); /* seed the parent's generator */
    int fds[2][2];
    pid_t kids[2];
    for (int c = 0; c < 2; c++) {
        cr_assert(pipe(fds[c]) == 0);
        kids[c] = t_fork();
        if (kids[c] == 0) {
            close(fds[c][0]);
            shmkv_db *d = NULL;
            CHILD_OK(shmkv_open(p, NULL, &d));
            for (int i = 0; i < 64; i++) {
                char b[16];
                size_t l = 0;
                CHILD_OK(shmkv_random_key(d, NULL, 0, b, sizeof b, &l));
                uint32_t v = (uint32_t)atoi(b + 1);
                CHILD_CHECK(fd_write_all(fds[c][1], &v, sizeof v) == 0, "write");
            }
            shmkv_close(d);
            _exit(0);
        }
        close(fds[c][1]);
    }
    uint32_t seq[2][64];
    for (int c = 0; c < 2; c++) {
        cr_assert_eq(fd_read_all(fds[c][0], seq[c], sizeof seq[c]), (ssize_t)sizeof seq[c]);
        close(fds[c][0]);
        t_wait_ok(kids[c], "random child");
    }
    cr_assert(memcmp(seq[0], seq[1], sizeof seq[0]) != 0,
              "two forked processes drew the same 64 keys in the same order");
    t_close(db);
}
