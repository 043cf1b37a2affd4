/*
 * test_rmw.c - atomic read-modify-write operations: incr, cas,
 * set_if_absent, get_or_set, swap, delete's existed flag and
 * compare_and_delete, plus their atomicity under threads.
 */
#include "harness.h"

#include <pthread.h>

TestSuite(rmw, .init = t_setup, .fini = t_teardown, .timeout = 120);

static shmkv_db *fresh(void)
{
    return t_open(t_path("rmw"), SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
}

static void put(shmkv_db *db, const char *k, const char *v)
{
    t_set(db, k, v);
}

/* ---- incr -------------------------------------------------------------- */

Test(rmw, incr_missing_key_starts_at_zero)
{
    shmkv_db *db = fresh();
    int64_t r = 99;
    T_OK(shmkv_incr(db, "c", 1, 5, SHMKV_KIND_STRING, &r));
    cr_assert_eq(r, 5);
    t_expect_kind(db, "c", 1, "5", 1, SHMKV_KIND_STRING);
    T_OK(shmkv_incr(db, "c", 1, 5, SHMKV_KIND_STRING, &r));
    cr_assert_eq(r, 10);
    t_expect_str(db, "c", "10");

    /* delta 0 on a missing key creates "0"; result may be NULL */
    T_OK(shmkv_incr(db, "z", 1, 0, SHMKV_KIND_BYTES, NULL));
    t_expect_kind(db, "z", 1, "0", 1, SHMKV_KIND_BYTES);
    cr_assert_eq(shmkv_size(db), 2);

    /* created with the given kind */
    T_OK(shmkv_incr(db, "j", 1, -3, SHMKV_KIND_JSON, &r));
    cr_assert_eq(r, -3);
    t_expect_kind(db, "j", 1, "-3", 2, SHMKV_KIND_JSON);
    t_close(db);
}

Test(rmw, incr_negative)
{
    shmkv_db *db = fresh();
    put(db, "n", "10");
    int64_t r = 0;
    T_OK(shmkv_incr(db, "n", 1, -3, SHMKV_KIND_STRING, &r));
    cr_assert_eq(r, 7);
    t_expect_str(db, "n", "7");
    T_OK(shmkv_incr(db, "n", 1, -7, SHMKV_KIND_STRING, &r));
    cr_assert_eq(r, 0);
    t_expect_str(db, "n", "0");
    T_OK(shmkv_incr(db, "n", 1, -1234567, SHMKV_KIND_STRING, &r));
    cr_assert_eq(r, -1234567);
    t_expect_str(db, "n", "-1234567");
    T_OK(shmkv_incr(db, "n", 1, 1234567, SHMKV_KIND_STRING, &r));
    t_expect_str(db, "n", "0");
    t_close(db);
}

Test(rmw, incr_valid_forms)
{
    shmkv_db *db = fresh();
    struct {
        const char *stored;
        int64_t delta;
        int64_t want;
        const char *text;
    } ok[] = {
        {"-0", 1, 1, "1"},
        {"-0", 0, 0, "0"},
        {"007", 1, 8, "8"},
        {"0", -1, -1, "-1"},
        {"-5", 5, 0, "0"},
        {"9223372036854775806", 1, INT64_MAX, "9223372036854775807"},
        {"-9223372036854775807", -1, INT64_MIN, "-9223372036854775808"},
        {"-9223372036854775808", 1, INT64_MIN + 1, "-9223372036854775807"},
        {"9223372036854775807", INT64_MIN, -1, "-1"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        put(db, "v", ok[i].stored);
        int64_t r = 12345;
        int rc = shmkv_incr(db, "v", 1, ok[i].delta, SHMKV_KIND_STRING, &r);
        cr_assert_eq(rc, 0, "incr(\"%s\", %" PRId64 ") -> %d (%s)", ok[i].stored, ok[i].delta, rc,
                     shmkv_strerror(rc));
        cr_assert_eq(r, ok[i].want, "incr(\"%s\", %" PRId64 ") = %" PRId64 ", want %" PRId64,
                     ok[i].stored, ok[i].delta, r, ok[i].want);
        t_expect_str(db, "v", ok[i].text);
    }
    /* delta INT64_MIN on a missing key */
    int64_t r = 0;
    T_OK(shmkv_incr(db, "m", 1, INT64_MIN, SHMKV_KIND_STRING, &r));
    cr_assert_eq(r, INT64_MIN);
    t_expect_str(db, "m", "-9223372036854775808");
    t_close(db);
}

/* Leading zeros are digits too: a 20+ character text whose value fits in
 * int64 is a decimal int64. */
Test(rmw, incr_long_leading_zeros)
{
    shmkv_db *db = fresh();
    const char *forms[] = {"00000000000000000042", "-000000000000000000042",
                           "00000000000000000000000000000000000009223372036854775806"};
    const int64_t vals[] = {42, -42, INT64_MAX - 1};
    for (size_t i = 0; i < 3; i++) {
        put(db, "v", forms[i]);
        int64_t r = 0;
        int rc = shmkv_incr(db, "v", 1, 1, SHMKV_KIND_STRING, &r);
        cr_assert_eq(rc, 0, "incr(\"%s\") -> %d (%s)", forms[i], rc, shmkv_strerror(rc));
        cr_assert_eq(r, vals[i] + 1);
    }
    t_close(db);
}

Test(rmw, incr_not_an_integer)
{
    shmkv_db *db = fresh();
    const char *bad[] = {"abc", " 5", "5 ", "5x", "", "-", "+5", "--5", "0x10", "1e3", "1.0",
                         "\t7", "5\n", "- 5", "٣"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        put(db, "v", bad[i]);
        int64_t r = 777;
        int rc = shmkv_incr(db, "v", 1, 1, SHMKV_KIND_STRING, &r);
        cr_assert_eq(rc, SHMKV_ENOTINT, "incr on \"%s\" -> %d (%s), expected SHMKV_ENOTINT",
                     t_show(bad[i], strlen(bad[i])), rc, shmkv_strerror(rc));
        t_expect_str(db, "v", bad[i]);
    }
    /* a NUL byte inside the digits */
    T_OK(shmkv_set(db, "v", 1, "1\0002", 3, SHMKV_KIND_BYTES));
    T_RC(shmkv_incr(db, "v", 1, 1, SHMKV_KIND_BYTES, NULL), SHMKV_ENOTINT);
    t_expect(db, "v", 1, "1\0002", 3);
    cr_assert_eq(shmkv_size(db), 1);
    t_close(db);
}

Test(rmw, incr_overflow)
{
    shmkv_db *db = fresh();
    int64_t r = 5;
    put(db, "v", "9223372036854775807");
    T_RC(shmkv_incr(db, "v", 1, 1, SHMKV_KIND_STRING, &r), SHMKV_EOVERFLOW);
    t_expect_str(db, "v", "9223372036854775807");
    T_RC(shmkv_incr(db, "v", 1, INT64_MAX, SHMKV_KIND_STRING, &r), SHMKV_EOVERFLOW);
    t_expect_str(db, "v", "9223372036854775807");

    put(db, "v", "-9223372036854775808");
    T_RC(shmkv_incr(db, "v", 1, -1, SHMKV_KIND_STRING, &r), SHMKV_EOVERFLOW);
    t_expect_str(db, "v", "-9223372036854775808");
    T_RC(shmkv_incr(db, "v", 1, INT64_MIN, SHMKV_KIND_STRING, &r), SHMKV_EOVERFLOW);
    t_expect_str(db, "v", "-9223372036854775808");

    put(db, "v", "-1");
    T_RC(shmkv_incr(db, "v", 1, INT64_MIN, SHMKV_KIND_STRING, &r), SHMKV_EOVERFLOW);
    t_expect_str(db, "v", "-1");

    /* stored text outside int64: not a decimal int64 (ENOTINT), or
     * reported as overflow; either way nothing changes */
    const char *huge[] = {"9223372036854775808", "-9223372036854775809",
                          "99999999999999999999999999"};
    for (size_t i = 0; i < 3; i++) {
        put(db, "v", huge[i]);
        int rc = shmkv_incr(db, "v", 1, 0, SHMKV_KIND_STRING, &r);
        cr_assert(rc == SHMKV_ENOTINT || rc == SHMKV_EOVERFLOW,
                  "incr on \"%s\" -> %d (%s), expected ENOTINT or EOVERFLOW", huge[i], rc,
                  shmkv_strerror(rc));
        t_expect_str(db, "v", huge[i]);
    }
    t_close(db);
}

Test(rmw, incr_bad_key)
{
    shmkv_db *db = fresh();
    T_RC(shmkv_incr(db, "x", 0, 1, SHMKV_KIND_STRING, NULL), SHMKV_EKEYSIZE);
    cr_assert_eq(shmkv_size(db), 0);
    t_close(db);
}

/* ---- cas ---------------------------------------------------------------- */

Test(rmw, cas)
{
    shmkv_db *db = fresh();
    int sw = -1;

    /* on a missing key with an expected value: no swap */
    T_OK(shmkv_cas(db, "k", 1, "a", 1, "b", 1, SHMKV_KIND_STRING, &sw));
    cr_assert_eq(sw, 0);
    t_expect_absent(db, "k", 1);
    /* expecting "" is not expecting absence */
    sw = -1;
    T_OK(shmkv_cas(db, "k", 1, "", 0, "b", 1, SHMKV_KIND_STRING, &sw));
    cr_assert_eq(sw, 0);
    t_expect_absent(db, "k", 1);

    /* expect-absent form */
    sw = -1;
    T_OK(shmkv_cas(db, "k", 1, NULL, 0, "first", 5, SHMKV_KIND_STRING, &sw));
    cr_assert_eq(sw, 1);
    t_expect_kind(db, "k", 1, "first", 5, SHMKV_KIND_STRING);
    sw = -1;
    T_OK(shmkv_cas(db, "k", 1, NULL, 0, "second", 6, SHMKV_KIND_STRING, &sw));
    cr_assert_eq(sw, 0, "expect-absent swapped over an existing key");
    t_expect_str(db, "k", "first");

    /* match */
    sw = -1;
    T_OK(shmkv_cas(db, "k", 1, "first", 5, "{\"x\":1}", 7, SHMKV_KIND_JSON, &sw));
    cr_assert_eq(sw, 1);
    t_expect_kind(db, "k", 1, "{\"x\":1}", 7, SHMKV_KIND_JSON);

    /* mismatches: other bytes, a prefix, a longer string */
    const char *wrong[] = {"first", "{\"x\":2}", "{\"x\"", "{\"x\":1} ", ""};
    for (size_t i = 0; i < 5; i++) {
        sw = -1;
        T_OK(shmkv_cas(db, "k", 1, wrong[i], strlen(wrong[i]), "zzz", 3, SHMKV_KIND_STRING, &sw));
        cr_assert_eq(sw, 0, "cas swapped with expect \"%s\"", wrong[i]);
        t_expect_kind(db, "k", 1, "{\"x\":1}", 7, SHMKV_KIND_JSON);
    }

    /* empty stored value matches an empty expectation */
    T_OK(shmkv_set(db, "e", 1, "", 0, SHMKV_KIND_BYTES));
    sw = -1;
    T_OK(shmkv_cas(db, "e", 1, "", 0, "full", 4, SHMKV_KIND_BYTES, &sw));
    cr_assert_eq(sw, 1);
    t_expect(db, "e", 1, "full", 4);
    /* and to an empty value */
    sw = -1;
    T_OK(shmkv_cas(db, "e", 1, "full", 4, "", 0, SHMKV_KIND_BYTES, &sw));
    cr_assert_eq(sw, 1);
    t_expect(db, "e", 1, "", 0);

    /* binary comparison with NULs */
    T_OK(shmkv_set(db, "b", 1, "a\0b", 3, SHMKV_KIND_BYTES));
    sw = -1;
    T_OK(shmkv_cas(db, "b", 1, "a\0c", 3, "x", 1, SHMKV_KIND_BYTES, &sw));
    cr_assert_eq(sw, 0);
    T_OK(shmkv_cas(db, "b", 1, "a", 1, "x", 1, SHMKV_KIND_BYTES, &sw));
    cr_assert_eq(sw, 0);
    T_OK(shmkv_cas(db, "b", 1, "a\0b", 3, "x", 1, SHMKV_KIND_BYTES, &sw));
    cr_assert_eq(sw, 1);
    t_expect(db, "b", 1, "x", 1);
    cr_assert_eq(shmkv_size(db), 3);
    t_close(db);
}

/* ---- set_if_absent --------------------------------------------------------- */

Test(rmw, set_if_absent)
{
    shmkv_db *db = fresh();
    int st = -1;
    T_OK(shmkv_set_if_absent(db, "k", 1, "one", 3, SHMKV_KIND_STRING, &st));
    cr_assert_eq(st, 1);
    t_expect_kind(db, "k", 1, "one", 3, SHMKV_KIND_STRING);
    st = -1;
    T_OK(shmkv_set_if_absent(db, "k", 1, "two", 3, SHMKV_KIND_JSON, &st));
    cr_assert_eq(st, 0);
    t_expect_kind(db, "k", 1, "one", 3, SHMKV_KIND_STRING);
    /* an empty existing value still counts as present */
    T_OK(shmkv_set(db, "e", 1, "", 0, SHMKV_KIND_BYTES));
    st = -1;
    T_OK(shmkv_set_if_absent(db, "e", 1, "x", 1, SHMKV_KIND_BYTES, &st));
    cr_assert_eq(st, 0);
    t_expect(db, "e", 1, "", 0);
    /* after delete it is absent again */
    T_OK(shmkv_delete(db, "k", 1, NULL));
    st = -1;
    T_OK(shmkv_set_if_absent(db, "k", 1, "three", 5, SHMKV_KIND_STRING, &st));
    cr_assert_eq(st, 1);
    t_expect_str(db, "k", "three");
    T_RC(shmkv_set_if_absent(db, "k", 0, "x", 1, SHMKV_KIND_STRING, &st), SHMKV_EKEYSIZE);
    cr_assert_eq(shmkv_size(db), 2);
    t_close(db);
}

/* ---- get_or_set ----------------------------------------------------------- */

Test(rmw, get_or_set)
{
    shmkv_db *db = fresh();
    char buf[32];
    size_t n = 0;
    shmkv_kind kind = SHMKV_KIND_BYTES;
    int loaded = -1;

    memset(buf, 0, sizeof buf);
    T_OK(shmkv_get_or_set(db, "k", 1, "init", 4, SHMKV_KIND_JSON, buf, sizeof buf, &n, &kind,
                          &loaded));
    cr_assert_eq(loaded, 0);
    cr_assert_eq(n, 4);
    cr_assert(memcmp(buf, "init", 4) == 0, "stored value not copied out");
    cr_assert_eq(kind, SHMKV_KIND_JSON);
    t_expect_kind(db, "k", 1, "init", 4, SHMKV_KIND_JSON);

    memset(buf, 0, sizeof buf);
    loaded = -1;
    kind = SHMKV_KIND_BYTES;
    T_OK(shmkv_get_or_set(db, "k", 1, "other!", 6, SHMKV_KIND_STRING, buf, sizeof buf, &n, &kind,
                          &loaded));
    cr_assert_eq(loaded, 1);
    cr_assert_eq(n, 4);
    cr_assert(memcmp(buf, "init", 4) == 0);
    cr_assert_eq(kind, SHMKV_KIND_JSON);
    t_expect_kind(db, "k", 1, "init", 4, SHMKV_KIND_JSON);

    /* EBUFSIZE with nothing stored: the given value does not fit */
    n = 0;
    loaded = -1;
    T_RC(shmkv_get_or_set(db, "new", 3, "0123456789", 10, SHMKV_KIND_STRING, buf, 4, &n, NULL,
                          &loaded),
         SHMKV_EBUFSIZE);
    cr_assert_eq(n, 10, "EBUFSIZE outlen %zu, expected 10", n);
    t_expect_absent(db, "new", 3);
    /* existing value that does not fit: EBUFSIZE, unchanged */
    put(db, "long", "a-value-of-20-bytes!");
    n = 0;
    T_RC(shmkv_get_or_set(db, "long", 4, "x", 1, SHMKV_KIND_STRING, buf, 8, &n, NULL, &loaded),
         SHMKV_EBUFSIZE);
    cr_assert_eq(n, 20);
    t_expect_str(db, "long", "a-value-of-20-bytes!");
    /* retry with enough room */
    T_OK(shmkv_get_or_set(db, "new", 3, "0123456789", 10, SHMKV_KIND_STRING, buf, 10, &n, NULL,
                          &loaded));
    cr_assert_eq(loaded, 0);
    t_expect_str(db, "new", "0123456789");
    cr_assert_eq(shmkv_size(db), 3);
    t_close(db);
}

/* ---- swap ----------------------------------------------------------------- */

Test(rmw, swap)
{
    shmkv_db *db = fresh();
    char buf[32];
    size_t n = 77;
    shmkv_kind kind = SHMKV_KIND_JSON;
    int loaded = -1;

    T_OK(shmkv_swap(db, "k", 1, "v1", 2, SHMKV_KIND_STRING, buf, sizeof buf, &n, &kind, &loaded));
    cr_assert_eq(loaded, 0, "swap on a missing key reported a previous value");
    t_expect_kind(db, "k", 1, "v1", 2, SHMKV_KIND_STRING);

    memset(buf, 0, sizeof buf);
    loaded = -1;
    T_OK(shmkv_swap(db, "k", 1, "value2", 6, SHMKV_KIND_JSON, buf, sizeof buf, &n, &kind,
                    &loaded));
    cr_assert_eq(loaded, 1);
    cr_assert_eq(n, 2);
    cr_assert(memcmp(buf, "v1", 2) == 0);
    cr_assert_eq(kind, SHMKV_KIND_STRING);
    t_expect_kind(db, "k", 1, "value2", 6, SHMKV_KIND_JSON);

    /* previous value does not fit: nothing stored */
    n = 0;
    T_RC(shmkv_swap(db, "k", 1, "v3", 2, SHMKV_KIND_STRING, buf, 3, &n, NULL, &loaded),
         SHMKV_EBUFSIZE);
    cr_assert_eq(n, 6);
    t_expect_kind(db, "k", 1, "value2", 6, SHMKV_KIND_JSON);

    /* empty previous value with no buffer */
    T_OK(shmkv_set(db, "e", 1, "", 0, SHMKV_KIND_BYTES));
    loaded = -1;
    n = 9;
    T_OK(shmkv_swap(db, "e", 1, "x", 1, SHMKV_KIND_BYTES, NULL, 0, &n, NULL, &loaded));
    cr_assert_eq(loaded, 1);
    cr_assert_eq(n, 0);
    t_expect(db, "e", 1, "x", 1);
    cr_assert_eq(shmkv_size(db), 2);
    t_close(db);
}

/* ---- delete and compare_and_delete --------------------------------------- */

Test(rmw, delete_existed_flag)
{
    shmkv_db *db = fresh();
    int ex = -1;
    T_OK(shmkv_delete(db, "k", 1, &ex));
    cr_assert_eq(ex, 0);
    put(db, "k", "v");
    ex = -1;
    T_OK(shmkv_delete(db, "k", 1, &ex));
    cr_assert_eq(ex, 1);
    ex = -1;
    T_OK(shmkv_delete(db, "k", 1, &ex));
    cr_assert_eq(ex, 0);
    cr_assert_eq(shmkv_size(db), 0);
    t_close(db);
}

Test(rmw, compare_and_delete)
{
    shmkv_db *db = fresh();
    int del = -1;
    T_OK(shmkv_compare_and_delete(db, "k", 1, "v", 1, &del));
    cr_assert_eq(del, 0);
    put(db, "k", "value");
    del = -1;
    T_OK(shmkv_compare_and_delete(db, "k", 1, "valu", 4, &del));
    cr_assert_eq(del, 0);
    T_OK(shmkv_compare_and_delete(db, "k", 1, "value!", 6, &del));
    cr_assert_eq(del, 0);
    T_OK(shmkv_compare_and_delete(db, "k", 1, "VALUE", 5, &del));
    cr_assert_eq(del, 0);
    t_expect_str(db, "k", "value");
    del = -1;
    T_OK(shmkv_compare_and_delete(db, "k", 1, "value", 5, &del));
    cr_assert_eq(del, 1);
    t_expect_absent(db, "k", 1);
    cr_assert_eq(shmkv_size(db), 0);
    /* the index follows: list is empty */
    t_kvlist l;
    T_OK(t_list_all(db, NULL, 0, 0, 0, &l));
    cr_assert_eq(l.n, 0);
    t_kvlist_free(&l);
    /* empty value */
    T_OK(shmkv_set(db, "e", 1, "", 0, SHMKV_KIND_BYTES));
    del = -1;
    T_OK(shmkv_compare_and_delete(db, "e", 1, "", 0, &del));
    cr_assert_eq(del, 1);
    t_expect_absent(db, "e", 1);
    t_close(db);
}

/* ---- atomicity under threads ---------------------------------------------- */

#define NTHREADS 4

struct thr_arg {
    const char *path;
    shmkv_db *shared; /* NULL: open a handle of its own */
    int id;
    int iters;
    int err;
    int64_t wins;
};

static void *incr_thread(void *p)
{
    struct thr_arg *a = p;
    shmkv_db *db = a->shared;
    if (!db) {
        shmkv_options o = t_opts(SHMKV_BACKEND_DISK, 0);
        if ((a->err = shmkv_open(a->path, &o, &db)) != 0)
            return NULL;
    }
    for (int i = 0; i < a->iters; i++) {
        int rc = shmkv_incr(db, "ctr", 3, 1, SHMKV_KIND_STRING, NULL);
        if (rc) {
            a->err = rc;
            break;
        }
        /* CAS loop on a second counter */
        for (;;) {
            char buf[32];
            size_t n = 0;
            rc = shmkv_get(db, "cas", 3, buf, sizeof buf - 1, &n, NULL);
            if (rc) {
                a->err = rc;
                goto out;
            }
            buf[n] = 0;
            long long v = atoll(buf);
            char nb[32];
            int nl = snprintf(nb, sizeof nb, "%lld", v + 1);
            int sw = 0;
            rc = shmkv_cas(db, "cas", 3, buf, n, nb, (size_t)nl, SHMKV_KIND_STRING, &sw);
            if (rc) {
                a->err = rc;
                goto out;
            }
            if (sw)
                break;
        }
        /* one winner per key */
        char k[32];
        int kl = snprintf(k, sizeof k, "once-%d", i);
        int stored = 0;
        rc = shmkv_set_if_absent(db, k, (size_t)kl, &a->id, sizeof a->id, SHMKV_KIND_BYTES,
                                 &stored);
        if (rc) {
            a->err = rc;
            break;
        }
        a->wins += stored;
    }
out:
    if (!a->shared)
        shmkv_close(db);
    return NULL;
}

static void threads_exact(bool shared_handle)
{
    const char *p = t_path("thr");
    shmkv_db *db = t_open(p, SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    put(db, "cas", "0");
    int iters = (int)t_scaled(3000, 200);
    pthread_t th[NTHREADS];
    struct thr_arg a[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        a[i] = (struct thr_arg){p, shared_handle ? db : NULL, i, iters, 0, 0};
        cr_assert_eq(pthread_create(&th[i], NULL, incr_thread, &a[i]), 0);
    }
    int64_t wins = 0;
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        wins += a[i].wins;
    }
    for (int i = 0; i < NTHREADS; i++)
        cr_assert_eq(a[i].err, 0, "thread %d: %d (%s)", i, a[i].err, shmkv_strerror(a[i].err));
    char want[32];
    snprintf(want, sizeof want, "%d", NTHREADS * iters);
    t_expect_str(db, "ctr", want);
    t_expect_str(db, "cas", want);
    cr_assert_eq(wins, iters, "set_if_absent winners %" PRId64 ", expected %d", wins, iters);
    cr_assert_eq(shmkv_size(db), (uint64_t)iters + 2);
    t_close(db);
}

Test(rmw, threads_shared_handle, .timeout = 300) { threads_exact(true); }
Test(rmw, threads_own_handles, .timeout = 300) { threads_exact(false); }
