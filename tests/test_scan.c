/*
 * test_scan.c - ordered scan from a cursor, count by prefix and sampling of
 * many keys, on both backends with key tracking on and off.
 */
#include "harness.h"

#include <poll.h>

TestSuite(scan, .init = t_setup, .fini = t_teardown, .timeout = 240);


static int key_of(char *buf, size_t n, const char *pfx, unsigned i)
{
    return snprintf(buf, n, "%s%06u", pfx, i);
}

/* Insert keys pfx0..pfx(n-1) in a shuffled order, value "val-<i>". */
static void fill(shmkv_db *db, const char *pfx, unsigned n)
{
    unsigned *order = malloc(n * sizeof *order);
    cr_assert(order);
    for (unsigned i = 0; i < n; i++)
        order[i] = i;
    t_rng r = {0x5eed + n};
    for (unsigned i = n; i > 1; i--) {
        unsigned j = (unsigned)t_below(&r, i), t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
    for (unsigned i = 0; i < n; i++) {
        char k[64], v[64];
        int kl = key_of(k, sizeof k, pfx, order[i]);
        int vl = snprintf(v, sizeof v, "val-%u", order[i]);
        T_OK(shmkv_set(db, k, (size_t)kl, v, (size_t)vl, SHMKV_KIND_STRING));
    }
    free(order);
}

/* Page through prefix with `page` keys a call; every page but the last is
 * full. Returns all keys seen, in order. */
static void scan_all(shmkv_db *db, const char *pfx, uint64_t page, unsigned flags, t_kvlist *all)
{
    memset(all, 0, sizeof *all);
    unsigned char cur[SHMKV_KEY_MAX];
    size_t curlen = 0;
    for (int pages = 0;; pages++) {
        cr_assert(pages < 1000000, "scan does not end");
        t_kvlist l;
        memset(&l, 0, sizeof l);
        T_OK(shmkv_scan(db, pfx, strlen(pfx), cur, curlen, page, flags, t_collect, &l));
        for (size_t i = 0; i < l.n; i++) {
            t_collect(all, l.a[i].k, l.a[i].kl, l.a[i].v, l.a[i].vl, (shmkv_kind)l.a[i].kind);
        }
        size_t got = l.n;
        if (got) {
            memcpy(cur, l.a[got - 1].k, l.a[got - 1].kl);
            curlen = l.a[got - 1].kl;
        }
        t_kvlist_free(&l);
        if (got < page || page == 0)
            break;
    }
}

Test(scan, pages_return_every_key_once_in_order)
{
    for (size_t c = 0; c < T_NCOMBO; c++) {
        shmkv_db *db = t_open_combo(&t_combos[c], "pages", NULL);
        fill(db, "s:", 1234);
        fill(db, "r:", 50);
        fill(db, "t:", 50);
        uint64_t pages[] = {1, 7, 100, 1234, 5000, 0};
        for (size_t p = 0; p < sizeof pages / sizeof pages[0]; p++) {
            for (int withv = 0; withv < 2; withv++) {
                t_kvlist all;
                scan_all(db, "s:", pages[p], withv ? 0 : SHMKV_LIST_KEYS_ONLY, &all);
                cr_assert_eq(all.n, 1234, "page %" PRIu64 ": %zu keys", pages[p], all.n);
                t_assert_sorted(&all);
                for (unsigned i = 0; i < all.n; i++) {
                    char k[64], v[64];
                    int kl = key_of(k, sizeof k, "s:", i);
                    cr_assert(all.a[i].kl == (size_t)kl && !memcmp(all.a[i].k, k, (size_t)kl));
                    if (withv) {
                        int vl = snprintf(v, sizeof v, "val-%u", i);
                        cr_assert(all.a[i].v && all.a[i].vl == (size_t)vl &&
                                  !memcmp(all.a[i].v, v, (size_t)vl));
                        cr_assert_eq(all.a[i].kind, SHMKV_KIND_STRING);
                    } else {
                        cr_assert_null(all.a[i].v);
                    }
                }
                t_kvlist_free(&all);
            }
        }
        /* a cursor that is not a key, and one past the end */
        t_kvlist l = {0};
        T_OK(shmkv_scan(db, "s:", 2, "s:000099x", 9, 3, SHMKV_LIST_KEYS_ONLY, t_collect, &l));
        cr_assert_eq(l.n, 3);
        cr_assert(l.a[0].kl == 8 && !memcmp(l.a[0].k, "s:000100", 8));
        t_kvlist_free(&l);
        T_OK(shmkv_scan(db, "s:", 2, "s:~", 3, 10, SHMKV_LIST_KEYS_ONLY, t_collect, &l));
        cr_assert_eq(l.n, 0);
        /* no prefix: everything after "r:~" is s: then t: */
        T_OK(shmkv_scan(db, NULL, 0, "r:~", 3, 0, SHMKV_LIST_KEYS_ONLY, t_collect, &l));
        cr_assert_eq(l.n, 1284);
        t_assert_sorted(&l);
        t_kvlist_free(&l);
        T_RC(shmkv_scan(db, NULL, 0, NULL, 3, 0, 0, t_collect, &l), SHMKV_EINVAL);
        T_RC(shmkv_scan(db, NULL, 0, NULL, 0, 0, 0x80, t_collect, &l), SHMKV_EINVAL);
        t_close(db);
    }
}

/* A child inserts and deletes keys between the stable ones while the
 * parent pages through: each stable key comes back exactly once, the
 * others at most once, all in order. */
Test(scan, cursor_survives_concurrent_writes)
{
    for (size_t c = 0; c < T_NCOMBO; c++) {
        const char *where = t_where(t_combos[c].be, "conc");
        shmkv_db *db = t_open(where, t_combos[c].be,
                              t_combos[c].track == SHMKV_TRACK_ON ? SHMKV_TRACK_ON
                                                                : SHMKV_TRACK_DEFAULT);
        unsigned n = (unsigned)t_scaled(3000, 600);
        fill(db, "s:", n);
        int go[2], ready[2];
        cr_assert(pipe(go) == 0 && pipe(ready) == 0);
        pid_t p = t_fork();
        if (p == 0) {
            close(go[1]);
            close(ready[0]);
            shmkv_db *w = NULL;
            shmkv_options o = t_opts(t_combos[c].be, SHMKV_TRACK_DEFAULT);
            CHILD_OK(shmkv_open(where, &o, &w));
            t_rng r = {42};
            char k[64];
            struct pollfd pf = {go[0], POLLIN, 0};
            for (unsigned i = 0; poll(&pf, 1, 0) == 0; i++) {
                /* "s:000123v" sorts between s:000123 and s:000124 */
                int kl = snprintf(k, sizeof k, "s:%06uv", (unsigned)t_below(&r, n));
                if (i % 2)
                    CHILD_OK(shmkv_delete(w, k, (size_t)kl, NULL));
                else
                    CHILD_OK(shmkv_set(w, k, (size_t)kl, "x", 1, SHMKV_KIND_BYTES));
                if (i == 200)
                    CHILD_CHECK(write(ready[1], "r", 1) == 1, "ready");
            }
            shmkv_close(w);
            _exit(0);
        }
        close(go[0]);
        close(ready[1]);
        char r;
        cr_assert_eq(read(ready[0], &r, 1), 1, "the writer did not start");
        close(ready[0]);
        uint64_t volatile_seen = 0;
        for (int round = 0; round < 3; round++) {
            t_kvlist all;
            scan_all(db, "s:", 37, round == 1 ? 0 : SHMKV_LIST_KEYS_ONLY, &all);
            t_assert_sorted(&all); /* strictly: nothing twice */
            unsigned stable = 0;
            for (size_t i = 0; i < all.n; i++)
                stable += all.a[i].kl == 8;
            cr_assert_eq(stable, n, "round %d: %u of %u stable keys", round, stable, n);
            volatile_seen += all.n - stable;
            t_kvlist_free(&all);
        }
        cr_assert_gt(volatile_seen, 0, "the writer's keys never showed: no concurrency tested");
        close(go[1]);
        t_wait_ok(p, "writer");
        t_close(db);
    }
}

Test(scan, count_by_prefix)
{
    for (size_t c = 0; c < T_NCOMBO; c++) {
        shmkv_db *db = t_open_combo(&t_combos[c], "count", NULL);
        fill(db, "alpha:", 300);
        fill(db, "alpha:long-prefix-over-8:", 40);
        fill(db, "b", 7);
        uint64_t n = 0;
        T_OK(shmkv_count(db, "alpha:", 6, &n));
        cr_assert_eq(n, 340);
        T_OK(shmkv_count(db, "alpha:long-prefix-over-8:", 25, &n));
        cr_assert_eq(n, 40);
        T_OK(shmkv_count(db, "alpha:0001", 10, &n));
        cr_assert_eq(n, 100);
        T_OK(shmkv_count(db, "a", 1, &n));
        cr_assert_eq(n, 340);
        T_OK(shmkv_count(db, NULL, 0, &n));
        cr_assert_eq(n, 347);
        T_OK(shmkv_count(db, "zzz", 3, &n));
        cr_assert_eq(n, 0);
        T_OK(shmkv_delete(db, "alpha:000000", 12, NULL));
        T_OK(shmkv_count(db, "alpha:", 6, &n));
        cr_assert_eq(n, 339);
        T_RC(shmkv_count(db, NULL, 0, NULL), SHMKV_EINVAL);
        t_close(db);
    }
}

/* ---- sampling ------------------------------------------------------------------- */

typedef struct {
    unsigned hits[16];
    unsigned calls;
    bool bad;
} tally;

static int tally_key(void *ctx, const void *key, size_t klen, const void *val, size_t vlen,
                     shmkv_kind kind)
{
    tally *t = ctx;
    unsigned i;
    char k[32];
    (void)kind;
    t->calls++;
    if (val || vlen || klen >= sizeof k) {
        t->bad = true;
        return 0;
    }
    memcpy(k, key, klen);
    k[klen] = 0;
    if (sscanf(k, "m:%06u", &i) != 1 || i >= 16 || klen != 8)
        t->bad = true;
    else
        t->hits[i]++;
    return 0;
}

Test(scan, random_keys_uniform_with_and_without_replacement)
{
    for (size_t c = 0; c < T_NCOMBO; c++) {
        shmkv_db *db = t_open_combo(&t_combos[c], "rnd", NULL);
        fill(db, "m:", 10);
        fill(db, "n:", 500); /* non-matching keys around them */
        fill(db, "l:", 500);

        tally t = {0};
        T_OK(shmkv_random_keys(db, "m:", 2, 5000, 0, tally_key, &t));
        cr_assert(!t.bad);
        cr_assert_eq(t.calls, 5000);
        for (int i = 0; i < 10; i++) /* expected 500 each */
            cr_assert(t.hits[i] > 350 && t.hits[i] < 650, "with replacement: key %d drawn %u times",
                      i, t.hits[i]);

        /* without replacement: 3 of 10, many times: distinct, and each key
         * equally often (expected 3000 * 3 / 10 = 900) */
        memset(&t, 0, sizeof t);
        for (int round = 0; round < 3000; round++) {
            tally one = {0};
            T_OK(shmkv_random_keys(db, "m:", 2, 3, 1, tally_key, &one));
            cr_assert(!one.bad);
            cr_assert_eq(one.calls, 3);
            for (int i = 0; i < 10; i++) {
                cr_assert(one.hits[i] <= 1, "without replacement: key %d twice", i);
                t.hits[i] += one.hits[i];
            }
        }
        for (int i = 0; i < 10; i++)
            /* 900 +- 180: over 7 standard deviations (25.1) */
            cr_assert(t.hits[i] > 720 && t.hits[i] < 1080, "without replacement: key %d drawn %u times",
                      i, t.hits[i]);

        /* more than match: all of them, once */
        memset(&t, 0, sizeof t);
        T_OK(shmkv_random_keys(db, "m:", 2, 50, 1, tally_key, &t));
        cr_assert_eq(t.calls, 10);
        for (int i = 0; i < 10; i++)
            cr_assert_eq(t.hits[i], 1);

        /* nothing matches: no call, no error */
        memset(&t, 0, sizeof t);
        T_OK(shmkv_random_keys(db, "zz", 2, 5, 0, tally_key, &t));
        T_OK(shmkv_random_keys(db, "zz", 2, 5, 1, tally_key, &t));
        cr_assert_eq(t.calls, 0);
        T_RC(shmkv_random_keys(db, NULL, 0, 5, 2, tally_key, &t), SHMKV_EINVAL);
        t_close(db);
    }
}

/* ---- tracking turned on by an opener --------------------------------------------- */

#define UNIVERSE 800

/* Every key of the universe is listed (from the index) exactly when get
 * finds it, count agrees, and prefixed draws only return existing keys. */
static void index_matches_tables(shmkv_db *db, const char *what)
{
    t_kvlist l;
    T_OK(t_list_all(db, "a:", 2, 0, SHMKV_LIST_KEYS_ONLY, &l));
    t_assert_sorted(&l);
    size_t present = 0, li = 0;
    for (unsigned i = 0; i < UNIVERSE; i++) {
        char k[32];
        int kl = key_of(k, sizeof k, "a:", i);
        int ex = shmkv_exists(db, k, (size_t)kl);
        bool in_list = li < l.n && l.a[li].kl == (size_t)kl && !memcmp(l.a[li].k, k, (size_t)kl);
        cr_assert_eq(ex == 1, in_list, "%s: %s exists=%d but listed=%d", what, k, ex, in_list);
        li += in_list;
        present += ex == 1;
    }
    cr_assert_eq(li, l.n, "%s: the index lists keys no table holds", what);
    uint64_t n = 0;
    T_OK(shmkv_count(db, "a:", 2, &n));
    cr_assert_eq(n, present, "%s: count %" PRIu64 ", %zu present", what, n, present);
    for (int d = 0; d < 200 && present; d++) {
        char k[64];
        size_t kl = 0;
        T_OK(shmkv_random_key(db, "a:", 2, k, sizeof k, &kl));
        cr_assert_eq(shmkv_exists(db, k, kl), 1, "%s: drew %s", what, t_show(k, kl));
    }
    t_kvlist_free(&l);
}

/* A writes in a loop with a handle opened untracked; B opens with
 * tracking on meanwhile; afterwards the index holds exactly the keys. */
static void track_on_while_writing(shmkv_backend be)
{
    const char *where = t_where(be, "trackon");
    shmkv_db *keep = t_open(where, be, SHMKV_TRACK_OFF); /* keeps a memory store alive */
    int stop[2], ready[2];
    cr_assert(pipe(stop) == 0 && pipe(ready) == 0);
    pid_t a = t_fork();
    if (a == 0) {
        close(stop[1]);
        close(ready[0]);
        shmkv_db *db = NULL;
        shmkv_options o = t_opts(be, SHMKV_TRACK_OFF);
        CHILD_OK(shmkv_open(where, &o, &db));
        t_rng r = {7};
        struct pollfd pf = {stop[0], POLLIN, 0};
        char k[32];
        for (unsigned i = 0; poll(&pf, 1, 0) == 0; i++) {
            int kl = key_of(k, sizeof k, "a:", (unsigned)t_below(&r, UNIVERSE));
            switch (i % 5) {
            case 0:
            case 1:
                CHILD_OK(shmkv_set(db, k, (size_t)kl, "v", 1, SHMKV_KIND_BYTES));
                break;
            case 2:
                CHILD_OK(shmkv_delete(db, k, (size_t)kl, NULL));
                break;
            case 3: {
                shmkv_item it[3] = {{k, (size_t)kl, "w", 1, SHMKV_KIND_BYTES, 0},
                                    {"z:batch1", 8, "1", 1, SHMKV_KIND_BYTES, 0},
                                    {"z:batch2", 8, "2", 1, SHMKV_KIND_BYTES, 0}};
                CHILD_OK(shmkv_set_many(db, it, 3, NULL));
                break;
            }
            default:
                CHILD_OK(shmkv_delete_many(db, (shmkv_item[]){{k, (size_t)kl, NULL, 0, 0, 0},
                                                              {"z:batch1", 8, NULL, 0, 0, 0}},
                                           2, NULL, NULL));
            }
            if (i == 2000)
                CHILD_CHECK(write(ready[1], "r", 1) == 1, "ready");
        }
        shmkv_close(db);
        _exit(0);
    }
    close(stop[0]);
    close(ready[1]);
    char c;
    cr_assert_eq(read(ready[0], &c, 1), 1, "writer A did not start");
    close(ready[0]);

    pid_t b = t_fork();
    if (b == 0) {
        shmkv_db *db = NULL;
        shmkv_options o = t_opts(be, SHMKV_TRACK_ON);
        CHILD_OK(shmkv_open(where, &o, &db));
        shmkv_info info;
        CHILD_OK(shmkv_stat(db, &info));
        CHILD_CHECK(info.track_keys == 1, "tracking not on");
        /* B writes too, through the index */
        for (unsigned i = 0; i < 2000; i++) {
            char k[32];
            int kl = key_of(k, sizeof k, "a:", (i * 7919) % UNIVERSE);
            if (i % 3)
                CHILD_OK(shmkv_set(db, k, (size_t)kl, "b", 1, SHMKV_KIND_BYTES));
            else
                CHILD_OK(shmkv_delete(db, k, (size_t)kl, NULL));
        }
        shmkv_close(db);
        _exit(0);
    }
    t_wait_ok(b, "opener with tracking on");
    usleep(100 * 1000); /* A goes on writing with tracking on */
    close(stop[1]);
    t_wait_ok(a, "untracked writer");

    shmkv_info info;
    T_OK(shmkv_stat(keep, &info));
    cr_assert_eq(info.track_keys, 1, "the handle opened before sees tracking on");
    index_matches_tables(keep, t_backend_name(be));
    if (be == SHMKV_BACKEND_MEMORY)
        t_dump_check(where, be);
    t_close(keep);
    if (be == SHMKV_BACKEND_DISK) {
        t_dump_check(where, be);
        /* it stays on for the next opener, who asks for nothing */
        shmkv_db *db = t_open(where, be, SHMKV_TRACK_DEFAULT);
        T_OK(shmkv_stat(db, &info));
        cr_assert_eq(info.track_keys, 1);
        index_matches_tables(db, "reopened");
        t_close(db);
    }
}

Test(scan, track_on_by_a_later_opener_disk) { track_on_while_writing(SHMKV_BACKEND_DISK); }
Test(scan, track_on_by_a_later_opener_memory) { track_on_while_writing(SHMKV_BACKEND_MEMORY); }

/* In one process: a second handle turns it on, the first handle's writes
 * keep the index current; asking for tracking off joins and keeps it. */
Test(scan, track_on_and_off_in_one_process)
{
    for (int be = 0; be < 2; be++) {
        const char *where = t_where((shmkv_backend)be, "track1");
        shmkv_db *a = t_open(where, (shmkv_backend)be, SHMKV_TRACK_DEFAULT);
        fill(a, "a:", UNIVERSE / 2);
        shmkv_db *b = t_open(where, (shmkv_backend)be, SHMKV_TRACK_ON);
        shmkv_info info;
        T_OK(shmkv_stat(a, &info));
        cr_assert_eq(info.track_keys, 1);
        for (unsigned i = 0; i < UNIVERSE; i += 3) {
            char k[32];
            int kl = key_of(k, sizeof k, "a:", i);
            if (i % 2)
                T_OK(shmkv_delete(a, k, (size_t)kl, NULL));
            else
                T_OK(shmkv_set(a, k, (size_t)kl, "x", 1, SHMKV_KIND_BYTES));
        }
        index_matches_tables(b, "one process");
        shmkv_db *c = t_open(where, (shmkv_backend)be, SHMKV_TRACK_OFF);
        T_OK(shmkv_stat(c, &info));
        cr_assert_eq(info.track_keys, 1, "track off on a tracked store keeps tracking");
        T_OK(shmkv_delete_prefix(c, "a:0001", 6, 0, NULL));
        index_matches_tables(c, "after track off");
        /* a read-only handle cannot build the index */
        shmkv_db *untracked = NULL;
        const char *w2 = t_where((shmkv_backend)be, "track2");
        shmkv_db *d = t_open(w2, (shmkv_backend)be, SHMKV_TRACK_DEFAULT);
        shmkv_options o = t_opts((shmkv_backend)be, SHMKV_TRACK_ON);
        o.flags = SHMKV_RDONLY;
        T_RC(shmkv_open(w2, &o, &untracked), SHMKV_EINCOMPAT);
        t_close(d);
        if (be == SHMKV_BACKEND_MEMORY)
            t_dump_check(where, (shmkv_backend)be);
        t_close(c);
        t_close(b);
        t_close(a);
        if (be == SHMKV_BACKEND_DISK)
            t_dump_check(where, (shmkv_backend)be);
    }
}

Test(scan, tracking_enable_call)
{
    for (int be = 0; be < 2; be++) {
        const char *where = t_where((shmkv_backend)be, "enable");
        shmkv_db *a = t_open(where, (shmkv_backend)be, SHMKV_TRACK_DEFAULT);
        fill(a, "a:", UNIVERSE / 2);
        shmkv_options o = t_opts((shmkv_backend)be, SHMKV_TRACK_DEFAULT);
        o.flags = SHMKV_RDONLY;
        shmkv_db *ro = t_open_opts(where, &o);
        T_RC(shmkv_tracking_enable(ro), SHMKV_EREADONLY);
        shmkv_info info;
        T_OK(shmkv_stat(a, &info));
        cr_assert_eq(info.track_keys, 0);
        T_OK(shmkv_tracking_enable(a));
        T_OK(shmkv_tracking_enable(a)); /* again: nothing to do */
        T_OK(shmkv_tracking_enable(ro)); /* already on: not a write */
        T_OK(shmkv_stat(ro, &info));
        cr_assert_eq(info.track_keys, 1);
        T_OK(shmkv_delete(a, "a:000001", 8, NULL));
        index_matches_tables(ro, "enabled by call");
        if (be == SHMKV_BACKEND_MEMORY)
            t_dump_check(where, (shmkv_backend)be);
        t_close(ro);
        t_close(a);
        if (be == SHMKV_BACKEND_DISK)
            t_dump_check(where, (shmkv_backend)be);
    }
}
