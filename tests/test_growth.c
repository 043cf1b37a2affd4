/*
 * test_growth.c - growth from a tiny store to a million keys, and a store
 * with a small reserve that fills up (SHMKV_EFULL), stays readable and
 * accepts writes again after deletes.
 *
 * The million-key test runs at full size in the default build; sanitizer
 * builds (and anyone setting SHMKV_TEST_SCALE) run fewer keys, see
 * t_scale() in tests/harness. The assertions are the same at every size.
 */
#include "harness.h"

TestSuite(growth, .init = t_setup, .fini = t_teardown, .timeout = 300);

static int mkkey(char *k, uint64_t i)
{
    return snprintf(k, 32, "key:%" PRIu64, i);
}

static size_t mkval(char *v, uint64_t i)
{
    /* 8..39 bytes, content derived from i */
    size_t n = 8 + (size_t)(i * 2654435761u % 32);
    for (size_t j = 0; j < n; j++)
        v[j] = (char)('a' + (i + j * 7) % 26);
    return n;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void grow(shmkv_backend be, int track, uint64_t n, uint32_t segments)
{
    const char *where = t_where(be, "grow");
    shmkv_options o = t_opts(be, track);
    o.segments = segments;
    shmkv_db *db = t_open_opts(where, &o);
    shmkv_info i0;
    T_OK(shmkv_stat(db, &i0));
    char k[32], v[64];
    double t0 = now_s();
    for (uint64_t i = 0; i < n; i++) {
        int kl = mkkey(k, i);
        size_t vl = mkval(v, i);
        int rc = shmkv_set(db, k, (size_t)kl, v, vl, SHMKV_KIND_BYTES);
        if (rc)
            cr_assert_fail("set #%" PRIu64 " -> %d (%s)", i, rc, shmkv_strerror(rc));
    }
    double t1 = now_s();
    cr_assert_eq(shmkv_size(db), n, "size %" PRIu64 " after %" PRIu64 " inserts", shmkv_size(db),
                 n);
    shmkv_info i1;
    T_OK(shmkv_stat(db, &i1));
    cr_assert_eq(i1.keys, n);
    cr_assert(i1.file_bytes > i0.file_bytes, "the region did not grow (%" PRIu64 " bytes)",
              i1.file_bytes);
    cr_assert(i1.file_bytes <= i1.reserve_bytes);
    /* sample values: every 997th key plus the first and last */
    char buf[64];
    for (uint64_t i = 0; i < n; i += (i + 997 < n ? 997 : (n - i > 1 ? n - 1 - i : 1))) {
        int kl = mkkey(k, i);
        size_t vl = mkval(v, i);
        size_t got = 0;
        int rc = shmkv_get(db, k, (size_t)kl, buf, sizeof buf, &got, NULL);
        cr_assert_eq(rc, 0, "get(%s) -> %d (%s)", k, rc, shmkv_strerror(rc));
        cr_assert(got == vl && memcmp(buf, v, vl) == 0, "value of %s corrupted", k);
    }
    /* a key never written is absent */
    int kl = mkkey(k, n + 5);
    t_expect_absent(db, k, (size_t)kl);
    if (track == SHMKV_TRACK_ON) {
        t_kvlist l;
        memset(&l, 0, sizeof l);
        /* "key:99" prefix: keys 99, 990..999, 9900..9999, ... below n */
        uint64_t want = 0;
        for (uint64_t p = 99, w = 1; p < n; p *= 10, w *= 10)
            want += (n - p < w ? n - p : w);
        T_OK(t_list_all(db, "key:99", 6, 0, SHMKV_LIST_KEYS_ONLY, &l));
        cr_assert_eq(l.n, want, "prefix key:99 listed %zu, expected %" PRIu64, l.n, want);
        t_assert_sorted(&l);
        t_kvlist_free(&l);
    }
    double t2 = now_s();
    cr_log_info("%s %s: %" PRIu64 " keys inserted in %.2fs, checked in %.2fs, %" PRIu64
                " bytes",
                t_backend_name(be), track == SHMKV_TRACK_ON ? "tracked" : "untracked", n, t1 - t0,
                t2 - t1, i1.file_bytes);

    if (be == SHMKV_BACKEND_DISK) {
        /* it all survives a close and reopen */
        t_close(db);
        db = t_open(where, be, 0);
        cr_assert_eq(shmkv_size(db), n);
        for (uint64_t i = 1; i < n; i += 7919) {
            kl = mkkey(k, i);
            size_t vl = mkval(v, i);
            t_expect(db, k, (size_t)kl, v, vl);
        }
    }
    t_close(db);
}

/* One million keys (default build), from the smallest store there is. */
Test(growth, million_keys_disk, .timeout = 600)
{
    grow(SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF, t_scaled(1000000, 20000), 0);
}

Test(growth, many_keys_memory_one_segment, .timeout = 600)
{
    grow(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_OFF, t_scaled(300000, 10000), 1);
}

Test(growth, many_keys_tracked, .timeout = 600)
{
    grow(SHMKV_BACKEND_DISK, SHMKV_TRACK_ON, t_scaled(300000, 10000), 0);
}

/* ---- reserve exhaustion ------------------------------------------------- */

static void fill(shmkv_backend be, int track)
{
    const char *where = t_where(be, "full");
    shmkv_options o = t_opts(be, track);
    o.reserve = 2u << 20;
    shmkv_db *db = t_open_opts(where, &o);
    shmkv_info info;
    T_OK(shmkv_stat(db, &info));
    cr_assert_eq(info.reserve_bytes, 2u << 20);

    enum { VL = 1000 };
    char v[VL], k[32];
    uint64_t n = 0;
    int rc = 0;
    for (;;) {
        int kl = snprintf(k, sizeof k, "f%06" PRIu64, n);
        memset(v, 'A' + (int)(n % 26), VL);
        memcpy(v, k, (size_t)kl);
        rc = shmkv_set(db, k, (size_t)kl, v, VL, SHMKV_KIND_BYTES);
        if (rc)
            break;
        n++;
        cr_assert(n < 10000, "2 MiB store accepted %" PRIu64 " 1000-byte values", n);
    }
    cr_assert_eq(rc, SHMKV_EFULL, "set into a full store -> %d (%s), expected SHMKV_EFULL", rc,
                 shmkv_strerror(rc));
    cr_assert(n > 500, "a 2 MiB store held only %" PRIu64 " 1000-byte values", n);
    cr_log_info("%s: full after %" PRIu64 " keys", t_backend_name(be), n);

    /* the failed key was not stored; the store is unchanged and readable */
    int kl = snprintf(k, sizeof k, "f%06" PRIu64, n);
    t_expect_absent(db, k, (size_t)kl);
    cr_assert_eq(shmkv_size(db), n);
    T_OK(shmkv_stat(db, &info));
    cr_assert(info.file_bytes <= 2u << 20, "file_bytes %" PRIu64 " beyond the reserve",
              info.file_bytes);
    if (be == SHMKV_BACKEND_DISK) {
        struct stat st;
        cr_assert(stat(where, &st) == 0);
        cr_assert((uint64_t)st.st_blocks * 512 <= (2u << 20) + 65536,
                  "file uses %jd bytes on disk, reserve is 2 MiB", (intmax_t)st.st_blocks * 512);
    }
    /* more failures: other keys, and growing an existing value */
    for (int t = 0; t < 20; t++) {
        kl = snprintf(k, sizeof k, "extra%d", t);
        rc = shmkv_set(db, k, (size_t)kl, v, VL, SHMKV_KIND_BYTES);
        if (rc == 0) {
            /* a segment may still have a free block of this class */
            T_OK(shmkv_delete(db, k, (size_t)kl, NULL));
        } else {
            cr_assert_eq(rc, SHMKV_EFULL, "-> %d", rc);
        }
    }
    char *huge = malloc(200000);
    cr_assert(huge);
    memset(huge, 'H', 200000);
    rc = shmkv_set(db, "f000000", 7, huge, 200000, SHMKV_KIND_BYTES);
    cr_assert_eq(rc, SHMKV_EFULL, "growing a value in a full store -> %d", rc);
    free(huge);
    cr_assert_eq(shmkv_size(db), n);
    for (uint64_t i = 0; i < n; i++) {
        kl = snprintf(k, sizeof k, "f%06" PRIu64, i);
        memset(v, 'A' + (int)(i % 26), VL);
        memcpy(v, k, (size_t)kl);
        t_expect(db, k, (size_t)kl, v, VL);
    }
    if (track == SHMKV_TRACK_ON) {
        t_kvlist l;
        T_OK(t_list_all(db, NULL, 0, 0, SHMKV_LIST_KEYS_ONLY, &l));
        cr_assert_eq(l.n, n);
        t_kvlist_free(&l);
    }
    int64_t r;
    rc = shmkv_incr(db, "ctr-new-key", 11, 1, SHMKV_KIND_STRING, &r);
    cr_assert(rc == 0 || rc == SHMKV_EFULL, "incr in a full store -> %d", rc);

    /* free everything, then the same keys fit again */
    for (uint64_t i = 0; i < n; i++) {
        kl = snprintf(k, sizeof k, "f%06" PRIu64, i);
        int ex = 0;
        T_OK(shmkv_delete(db, k, (size_t)kl, &ex));
        cr_assert_eq(ex, 1);
    }
    shmkv_delete(db, "ctr-new-key", 11, NULL);
    cr_assert_eq(shmkv_size(db), 0);
    uint64_t again = n / 2;
    for (uint64_t i = 0; i < again; i++) {
        kl = snprintf(k, sizeof k, "f%06" PRIu64, i);
        memset(v, 'a' + (int)(i % 26), VL);
        rc = shmkv_set(db, k, (size_t)kl, v, VL, SHMKV_KIND_BYTES);
        cr_assert_eq(rc, 0, "after deleting everything, set #%" PRIu64 " of %" PRIu64
                            " -> %d (%s)",
                     i, again, rc, shmkv_strerror(rc));
    }
    /* brand-new keys too */
    for (int i = 0; i < 50; i++) {
        kl = snprintf(k, sizeof k, "new%d", i);
        rc = shmkv_set(db, k, (size_t)kl, "small", 5, SHMKV_KIND_STRING);
        cr_assert_eq(rc, 0, "new small key after deletes -> %d (%s)", rc, shmkv_strerror(rc));
    }
    cr_assert_eq(shmkv_size(db), again + 50);
    for (uint64_t i = 0; i < again; i += 13) {
        kl = snprintf(k, sizeof k, "f%06" PRIu64, i);
        memset(v, 'a' + (int)(i % 26), VL);
        t_expect(db, k, (size_t)kl, v, VL);
    }

    if (be == SHMKV_BACKEND_DISK) {
        /* the full-then-refilled store reopens intact */
        t_close(db);
        db = t_open(where, be, 0);
        cr_assert_eq(shmkv_size(db), again + 50);
        t_expect_str(db, "new7", "small");
    }
    t_close(db);
}

Test(growth, reserve_full_disk, .timeout = 300) { fill(SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF); }
Test(growth, reserve_full_disk_tracked, .timeout = 300) { fill(SHMKV_BACKEND_DISK, SHMKV_TRACK_ON); }
Test(growth, reserve_full_memory, .timeout = 300) { fill(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_OFF); }

/* Values larger than the largest chunk round-trip and are freed. */
Test(growth, large_values, .timeout = 300)
{
    shmkv_db *db = t_open(t_path("large"), SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    const size_t sizes[] = {4095, 4096, 4097, 65536, (4u << 20) - 64, 4u << 20, (4u << 20) + 1,
                            9u << 20};
    size_t maxs = 9u << 20;
    /* rounds read from v + round: room for that */
    unsigned char *v = malloc(maxs + 8), *out = malloc(maxs);
    cr_assert(v && out);
    for (size_t i = 0; i < maxs + 8; i++)
        v[i] = (unsigned char)(i * 131 + (i >> 12));
    for (int round = 0; round < 3; round++) {
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            char k[16];
            int kl = snprintf(k, sizeof k, "big%zu", s);
            T_OK(shmkv_set(db, k, (size_t)kl, v + round, sizes[s], SHMKV_KIND_BYTES));
        }
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            char k[16];
            int kl = snprintf(k, sizeof k, "big%zu", s);
            size_t n = 0;
            T_OK(shmkv_get(db, k, (size_t)kl, out, maxs, &n, NULL));
            cr_assert_eq(n, sizes[s]);
            cr_assert(memcmp(out, v + round, n) == 0, "round %d: %zu-byte value corrupted", round,
                      sizes[s]);
        }
    }
    shmkv_info a, b;
    T_OK(shmkv_stat(db, &a));
    /* rewriting the same sizes again must not keep growing the region */
    for (int round = 0; round < 5; round++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            char k[16];
            int kl = snprintf(k, sizeof k, "big%zu", s);
            T_OK(shmkv_set(db, k, (size_t)kl, v, sizes[s], SHMKV_KIND_BYTES));
        }
    T_OK(shmkv_stat(db, &b));
    cr_assert(b.file_bytes <= a.file_bytes + (20u << 20),
              "rewriting 8 values 5 times grew the region from %" PRIu64 " to %" PRIu64,
              a.file_bytes, b.file_bytes);
    free(v);
    free(out);
    t_close(db);
}
