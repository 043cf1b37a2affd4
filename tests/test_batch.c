/*
 * test_batch.c - get_many, set_many, delete_many and delete_prefix: results,
 * validation before any write, atomicity for other processes, and a writer
 * SIGKILLed at each named point inside a batch.
 *
 * Every test runs on both backends, with key tracking on and off, unless its
 * name says otherwise.
 */
#include "harness.h"
#include "internal.h"

#include <poll.h>
#include <pthread.h>

TestSuite(batch, .init = t_setup, .fini = t_teardown, .timeout = 240);


/* n keys "<pfx><i>" with values "<tag>-<i>", strings owned by the caller. */
typedef struct {
    shmkv_item *it;
    char (*k)[48];
    char (*v)[64];
    size_t n;
} kvset;

static kvset kv_make(const char *pfx, size_t n, const char *tag)
{
    kvset s = {calloc(n, sizeof *s.it), calloc(n, sizeof *s.k), calloc(n, sizeof *s.v), n};
    cr_assert(s.it && s.k && s.v);
    for (size_t i = 0; i < n; i++) {
        int kl = snprintf(s.k[i], sizeof s.k[i], "%s%05zu", pfx, i);
        int vl = snprintf(s.v[i], sizeof s.v[i], "%s-%zu", tag, i);
        s.it[i] = (shmkv_item){s.k[i], (size_t)kl, s.v[i], (size_t)vl, SHMKV_KIND_STRING, 0};
    }
    return s;
}

static void kv_free(kvset *s)
{
    free(s->it);
    free(s->k);
    free(s->v);
}

/* Close, with the check made where the store still exists: a memory store
 * goes away with its last handle. */
static void close_checked(shmkv_db *db, const char *where, shmkv_backend be)
{
    if (be == SHMKV_BACKEND_MEMORY)
        t_dump_check(where, be);
    t_close(db);
    if (be == SHMKV_BACKEND_DISK)
        t_dump_check(where, be);
}

static uint64_t count_of(shmkv_db *db, const char *pfx)
{
    uint64_t n = 0;
    T_OK(shmkv_count(db, pfx, strlen(pfx), &n));
    return n;
}

/* ---- results ------------------------------------------------------------------ */

Test(batch, set_get_delete_many)
{
    for (size_t c = 0; c < T_NCOMBO; c++) {
        const char *where;
        shmkv_db *db = t_open_combo(&t_combos[c], "sgd", &where);
        kvset s = kv_make("k:", 600, "v");
        size_t bad = 99;
        T_OK(shmkv_set_many(db, s.it, s.n, &bad));
        cr_assert_eq(shmkv_size(db), 600);

        /* every key, two absent ones and one twice */
        size_t n = s.n + 3;
        shmkv_item *g = calloc(n, sizeof *g);
        cr_assert(g);
        for (size_t i = 0; i < s.n; i++)
            g[i] = (shmkv_item){s.it[i].key, s.it[i].klen, NULL, 0, 0, 77};
        g[s.n] = (shmkv_item){"nope", 4, NULL, 0, 0, 77};
        g[s.n + 1] = (shmkv_item){"k:99999", 7, NULL, 0, 0, 77};
        g[s.n + 2] = (shmkv_item){s.it[5].key, s.it[5].klen, NULL, 0, 0, 77};
        char *buf = malloc(1 << 16);
        size_t need = 0;
        T_OK(shmkv_get_many(db, g, n, buf, 1 << 16, &need, &bad));
        size_t total = 0;
        for (size_t i = 0; i < s.n; i++) {
            cr_assert_eq(g[i].rc, 0, "%s not found", s.k[i]);
            cr_assert_eq(g[i].vlen, s.it[i].vlen);
            cr_assert_eq(g[i].kind, SHMKV_KIND_STRING);
            cr_assert(memcmp(g[i].val, s.v[i], g[i].vlen) == 0, "%s = %s", s.k[i],
                      t_show(g[i].val, g[i].vlen));
            total += g[i].vlen;
        }
        cr_assert_eq(g[s.n].rc, SHMKV_ENOTFOUND);
        cr_assert_eq(g[s.n + 1].rc, SHMKV_ENOTFOUND);
        cr_assert_eq(g[s.n + 2].rc, 0);
        cr_assert(memcmp(g[s.n + 2].val, s.v[5], g[s.n + 2].vlen) == 0);
        cr_assert_eq(need, total + g[s.n + 2].vlen);

        /* delete every other key, one absent key, one key twice */
        shmkv_item d[303];
        size_t nd = 0;
        for (size_t i = 0; i < s.n; i += 2)
            d[nd++] = (shmkv_item){s.it[i].key, s.it[i].klen, NULL, 0, 0, 77};
        d[nd++] = (shmkv_item){"absent", 6, NULL, 0, 0, 77};
        d[nd++] = (shmkv_item){s.it[0].key, s.it[0].klen, NULL, 0, 0, 77};
        uint64_t deleted = 0;
        T_OK(shmkv_delete_many(db, d, nd, &deleted, &bad));
        cr_assert_eq(deleted, 300, "deleted %" PRIu64, deleted);
        for (size_t i = 0; i < 300; i++)
            cr_assert_eq(d[i].rc, 1, "%s existed", t_show(d[i].key, d[i].klen));
        cr_assert_eq(d[300].rc, 0);
        cr_assert_eq(d[301].rc, 1, "a duplicate reports what its key's deletion found");
        cr_assert_eq(shmkv_size(db), 300);
        cr_assert_eq(count_of(db, "k:"), 300);
        for (size_t i = 0; i < s.n; i++) {
            if (i % 2)
                t_expect(db, s.k[i], strlen(s.k[i]), s.v[i], strlen(s.v[i]));
            else
                t_expect_absent(db, s.k[i], strlen(s.k[i]));
        }
        t_kvlist l;
        T_OK(t_list_all(db, "k:", 2, 0, SHMKV_LIST_KEYS_ONLY, &l));
        cr_assert_eq(l.n, 300);
        t_kvlist_free(&l);
        free(buf);
        free(g);
        close_checked(db, where, t_combos[c].be);
        kv_free(&s);
    }
}

Test(batch, duplicates_last_wins_and_updates_mix)
{
    for (size_t c = 0; c < T_NCOMBO; c++) {
        const char *where;
        shmkv_db *db = t_open_combo(&t_combos[c], "dup", &where);
        t_set(db, "a", "old-a");
        shmkv_item it[] = {
            {"a", 1, "A1", 2, SHMKV_KIND_STRING, 0},
            {"b", 1, "B1", 2, SHMKV_KIND_BYTES, 0},
            {"a", 1, "A2", 2, SHMKV_KIND_JSON, 0},
            {"c", 1, "", 0, SHMKV_KIND_BYTES, 0},
            {"b", 1, "B2", 2, SHMKV_KIND_STRING, 0},
        };
        T_OK(shmkv_set_many(db, it, 5, NULL));
        t_expect_kind(db, "a", 1, "A2", 2, SHMKV_KIND_JSON);
        t_expect_kind(db, "b", 1, "B2", 2, SHMKV_KIND_STRING);
        t_expect(db, "c", 1, "", 0);
        cr_assert_eq(shmkv_size(db), 3);
        cr_assert_eq(count_of(db, ""), 3);
        close_checked(db, where, t_combos[c].be);
    }
}

Test(batch, get_many_buffer_too_small)
{
    shmkv_db *db = t_open(t_path("buf"), SHMKV_BACKEND_DISK, SHMKV_TRACK_DEFAULT);
    t_set(db, "x", "0123456789");
    t_set(db, "y", "abcdefghij");
    shmkv_item g[] = {{"x", 1, NULL, 0, 0, 0}, {"y", 1, NULL, 0, 0, 0}};
    char buf[32];
    size_t need = 0;
    T_RC(shmkv_get_many(db, g, 2, buf, 15, &need, NULL), SHMKV_EBUFSIZE);
    cr_assert_eq(need, 20);
    T_OK(shmkv_get_many(db, g, 2, buf, sizeof buf, &need, NULL));
    cr_assert_eq(need, 20);
    cr_assert(memcmp(g[1].val, "abcdefghij", 10) == 0);
    t_close(db);
}

/* ---- validation: nothing written, the bad entry named ------------------------------- */

Test(batch, invalid_entry_writes_nothing)
{
    for (size_t c = 0; c < T_NCOMBO; c++) {
        const char *where;
        shmkv_db *db = t_open_combo(&t_combos[c], "inval", &where);
        t_set(db, "keep", "kept");
        kvset s = kv_make("v:", 8, "x");
        size_t bad = 1234;

        s.it[3].klen = 0;
        T_RC(shmkv_set_many(db, s.it, s.n, &bad), SHMKV_EKEYSIZE);
        cr_assert_eq(bad, 3);
        s.it[3].klen = SHMKV_KEY_MAX + 1;
        T_RC(shmkv_set_many(db, s.it, s.n, &bad), SHMKV_EKEYSIZE);
        cr_assert_eq(bad, 3);
        s.it[3].klen = strlen(s.k[3]);

        s.it[6].vlen = (size_t)SHMKV_VALUE_MAX + 1; /* never read: refused first */
        T_RC(shmkv_set_many(db, s.it, s.n, &bad), SHMKV_EVALSIZE);
        cr_assert_eq(bad, 6);
        s.it[6].vlen = strlen(s.v[6]);

        s.it[7].kind = (shmkv_kind)9;
        T_RC(shmkv_set_many(db, s.it, s.n, &bad), SHMKV_EINVAL);
        cr_assert_eq(bad, 7);
        s.it[7].kind = SHMKV_KIND_BYTES;
        s.it[2].val = NULL;
        T_RC(shmkv_set_many(db, s.it, s.n, &bad), SHMKV_EINVAL);
        cr_assert_eq(bad, 2);
        s.it[2].val = s.v[2];

        cr_assert_eq(shmkv_size(db), 1, "a refused batch wrote something");
        cr_assert_eq(count_of(db, "v:"), 0);
        for (size_t i = 0; i < s.n; i++)
            t_expect_absent(db, s.k[i], strlen(s.k[i]));

        /* delete_many and get_many validate the same way */
        T_OK(shmkv_set_many(db, s.it, s.n, &bad));
        s.it[4].key = NULL;
        uint64_t del = 99;
        T_RC(shmkv_delete_many(db, s.it, s.n, &del, &bad), SHMKV_EKEYSIZE);
        cr_assert_eq(bad, 4);
        cr_assert_eq(shmkv_size(db), 9, "a refused delete_many deleted something");
        char buf[64];
        T_RC(shmkv_get_many(db, s.it, s.n, buf, sizeof buf, NULL, &bad), SHMKV_EKEYSIZE);
        cr_assert_eq(bad, 4);
        kv_free(&s);

        shmkv_options o = t_opts(t_combos[c].be, SHMKV_TRACK_DEFAULT);
        o.flags = SHMKV_RDONLY;
        shmkv_db *ro = t_open_opts(where, &o);
        shmkv_item one = {"keep", 4, "z", 1, SHMKV_KIND_BYTES, 0};
        T_RC(shmkv_set_many(ro, &one, 1, NULL), SHMKV_EREADONLY);
        T_RC(shmkv_delete_many(ro, &one, 1, NULL, NULL), SHMKV_EREADONLY);
        T_RC(shmkv_delete_prefix(ro, "", 0, 0, NULL), SHMKV_EREADONLY);
        cr_assert_eq(shmkv_size(db), 9);
        t_close(ro);
        t_close(db);
    }
}

/* ---- a large batch: rehashes and many inserts into one segment ----------------------- */

Test(batch, large_batch_few_segments)
{
    for (size_t c = 0; c < T_NCOMBO; c++) {
        shmkv_options o = t_opts(t_combos[c].be, t_combos[c].track == SHMKV_TRACK_ON
                                                   ? SHMKV_TRACK_ON : SHMKV_TRACK_DEFAULT);
        o.segments = 4;
        const char *where = t_where(t_combos[c].be, "large");
        shmkv_db *db = t_open_opts(where, &o);
        size_t n = (size_t)t_scaled(20000, 2000);
        kvset pre = kv_make("L:", n / 2, "pre"); /* half exist: updates and inserts mixed */
        T_OK(shmkv_set_many(db, pre.it, pre.n, NULL));
        kvset s = kv_make("L:", n, "new");
        T_OK(shmkv_set_many(db, s.it, s.n, NULL));
        cr_assert_eq(shmkv_size(db), n);
        cr_assert_eq(count_of(db, "L:"), n);
        for (size_t i = 0; i < n; i += 7)
            t_expect(db, s.k[i], strlen(s.k[i]), s.v[i], strlen(s.v[i]));
        uint64_t del = 0;
        T_OK(shmkv_delete_many(db, pre.it, pre.n, &del, NULL));
        cr_assert_eq(del, n / 2);
        cr_assert_eq(shmkv_size(db), n - n / 2);
        close_checked(db, where, t_combos[c].be);
        kv_free(&pre);
        kv_free(&s);
    }
}

/* ---- delete_prefix ----------------------------------------------------------------- */

Test(batch, delete_prefix_with_limit)
{
    for (size_t c = 0; c < T_NCOMBO; c++) {
        const char *where;
        shmkv_db *db = t_open_combo(&t_combos[c], "dpre", &where);
        kvset a = kv_make("a:", 300, "a"), b = kv_make("b:", 100, "b");
        T_OK(shmkv_set_many(db, a.it, a.n, NULL));
        T_OK(shmkv_set_many(db, b.it, b.n, NULL));
        t_set(db, "a", "not under a:");
        uint64_t del = 0;
        T_OK(shmkv_delete_prefix(db, "a:", 2, 120, &del));
        cr_assert_eq(del, 120);
        cr_assert_eq(count_of(db, "a:"), 180);
        if (t_combos[c].track == SHMKV_TRACK_ON) {
            /* with the index the first keys in order go */
            for (size_t i = 0; i < 300; i++) {
                if (i < 120)
                    t_expect_absent(db, a.k[i], strlen(a.k[i]));
                else
                    t_expect(db, a.k[i], strlen(a.k[i]), a.v[i], strlen(a.v[i]));
            }
        }
        T_OK(shmkv_delete_prefix(db, "a:", 2, 0, &del));
        cr_assert_eq(del, 180);
        cr_assert_eq(count_of(db, "a:"), 0);
        cr_assert_eq(count_of(db, "b:"), 100);
        t_expect_str(db, "a", "not under a:");
        T_OK(shmkv_delete_prefix(db, "zz", 2, 0, &del));
        cr_assert_eq(del, 0);
        T_OK(shmkv_delete_prefix(db, NULL, 0, 0, &del));
        cr_assert_eq(del, 101);
        cr_assert_eq(shmkv_size(db), 0);
        close_checked(db, where, t_combos[c].be);
        kv_free(&a);
        kv_free(&b);
    }
}

/* ---- atomic for other processes ------------------------------------------------------ */

#define GK 64   /* keys of the group every batch writes */
#define RUN_MS 1500

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void group(kvset *s, const char *val)
{
    for (size_t i = 0; i < s->n; i++) {
        s->it[i].val = val;
        s->it[i].vlen = strlen(val);
    }
}

/* Writers: set the whole group to one value, delete it with delete_many or
 * delete_prefix, over and over. */
static void writer(const char *where, shmkv_backend be, int id)
{
    shmkv_db *db = NULL;
    shmkv_options o = t_opts(be, SHMKV_TRACK_DEFAULT);
    CHILD_OK(shmkv_open(where, &o, &db));
    kvset s = kv_make("g:", GK, "x");
    char val[64];
    uint64_t end = now_ms() + RUN_MS;
    for (unsigned it = 0; now_ms() < end; it++) {
        snprintf(val, sizeof val, "w%d-%u-%s", id, it, it % 2 ? "long-long-long-value" : "s");
        group(&s, val);
        CHILD_OK(shmkv_set_many(db, s.it, s.n, NULL));
        if (it % 3 == 1)
            CHILD_OK(shmkv_delete_many(db, s.it, s.n, NULL, NULL));
        else if (it % 3 == 2)
            CHILD_OK(shmkv_delete_prefix(db, "g:", 2, 0, NULL));
    }
    shmkv_close(db);
    _exit(0);
}

/* Others: single-key writes to unrelated keys, so that the segments the
 * batches lock are busy anyway. */
static void other(const char *where, shmkv_backend be)
{
    shmkv_db *db = NULL;
    shmkv_options o = t_opts(be, SHMKV_TRACK_DEFAULT);
    CHILD_OK(shmkv_open(where, &o, &db));
    uint64_t end = now_ms() + RUN_MS;
    char k[32];
    for (unsigned i = 0; now_ms() < end; i++) {
        int kl = snprintf(k, sizeof k, "o:%u", i % 500);
        if (i % 4 == 3)
            CHILD_OK(shmkv_delete(db, k, (size_t)kl, NULL));
        else
            CHILD_OK(shmkv_set(db, k, (size_t)kl, "val", 3, SHMKV_KIND_BYTES));
    }
    shmkv_close(db);
    _exit(0);
}

/* Readers: a get_many of the group sees all of it with one value, or none
 * of it; with tracking, count and scan agree (the index changes under one
 * hold of its lock). */
static void reader(const char *where, shmkv_backend be, int track, int fd)
{
    shmkv_db *db = NULL;
    shmkv_options o = t_opts(be, SHMKV_TRACK_DEFAULT);
    CHILD_OK(shmkv_open(where, &o, &db));
    kvset s = kv_make("g:", GK, "x");
    static char buf[GK * 64];
    uint64_t end = now_ms() + RUN_MS, checks = 0, full = 0, empty = 0;
    while (now_ms() < end) {
        CHILD_OK(shmkv_get_many(db, s.it, s.n, buf, sizeof buf, NULL, NULL));
        size_t found = 0;
        for (size_t i = 0; i < GK; i++) {
            found += s.it[i].rc == 0;
            if (s.it[i].rc == 0 && i > 0 && s.it[0].rc == 0)
                CHILD_CHECK(s.it[i].vlen == s.it[0].vlen &&
                                memcmp(s.it[i].val, s.it[0].val, s.it[0].vlen) == 0,
                            "torn batch: %s = %.*s but %s = %.*s", s.k[0], (int)s.it[0].vlen,
                            (const char *)s.it[0].val, s.k[i], (int)s.it[i].vlen,
                            (const char *)s.it[i].val);
        }
        CHILD_CHECK(found == 0 || found == GK, "torn batch: %zu of %d keys present", found, GK);
        full += found == GK;
        empty += found == 0;
        if (track == SHMKV_TRACK_ON) {
            uint64_t n = 0;
            CHILD_OK(shmkv_count(db, "g:", 2, &n));
            CHILD_CHECK(n == 0 || n == GK, "count(g:) = %" PRIu64, n);
        }
        checks++;
    }
    uint64_t r[3] = {checks, full, empty};
    CHILD_CHECK(fd_write_all(fd, r, sizeof r) == 0, "report");
    shmkv_close(db);
    _exit(0);
}

static void atomic_run(const t_combo *c)
{
    const char *where;
    shmkv_db *db = t_open_combo(c, "atom", &where);
    int fds[2];
    cr_assert(pipe(fds) == 0);
    pid_t kids[7];
    int nk = 0;
    for (int w = 0; w < 2; w++)
        if ((kids[nk++] = t_fork()) == 0)
            writer(where, c->be, w);
    if ((kids[nk++] = t_fork()) == 0)
        other(where, c->be);
    for (int r = 0; r < 2; r++)
        if ((kids[nk++] = t_fork()) == 0)
            reader(where, c->be, c->track, fds[1]);
    close(fds[1]);
    for (int i = 0; i < nk; i++)
        t_wait_ok(kids[i], i < 2 ? "batch writer" : i == 2 ? "single-key writer" : "reader");
    uint64_t checks = 0, full = 0, empty = 0, r[3];
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(fd_read_all(fds[0], r, sizeof r), (ssize_t)sizeof r);
        checks += r[0];
        full += r[1];
        empty += r[2];
    }
    close(fds[0]);
    cr_log_info("%s track=%d: %" PRIu64 " reads, %" PRIu64 " full, %" PRIu64 " empty",
                t_backend_name(c->be), c->track, checks, full, empty);
    cr_assert_gt(checks, 10, "readers made too few checks to mean anything");
    uint64_t n = count_of(db, "g:");
    cr_assert(n == 0 || n == GK, "count(g:) = %" PRIu64 " at the end", n);
    close_checked(db, where, c->be);
}

Test(batch, atomic_for_other_processes_disk)
{
    atomic_run(&t_combos[0]);
    atomic_run(&t_combos[1]);
}

Test(batch, atomic_for_other_processes_memory)
{
    atomic_run(&t_combos[2]);
    atomic_run(&t_combos[3]);
}

/* ---- a writer killed inside a batch --------------------------------------------------- */

#define CK 48
#define MARK 0x4d41524bu

typedef enum { OP_SET, OP_DELETE, OP_PREFIX } crash_op;

static int crash_batch(shmkv_db *db, crash_op op, kvset *s)
{
    if (op == OP_SET)
        return shmkv_set_many(db, s->it, s->n, NULL);
    if (op == OP_DELETE)
        return shmkv_delete_many(db, s->it, s->n, NULL, NULL);
    return shmkv_delete_prefix(db, "c:", 2, 0, NULL);
}

/* The writer of a batch over the n keys "c:<i>". With fd >= 0 it parks at
 * the first call of `point` and says so on fd, for the parent to kill it
 * there; with fd < 0 it SIGKILLs itself at the point's (skip+1)-th call. */
static void crash_child(const char *where, shmkv_backend be, crash_op op, size_t n,
                        const char *point, int skip, int fd)
{
    shmkv_db *db = NULL;
    shmkv_options o = t_opts(be, SHMKV_TRACK_DEFAULT);
    CHILD_OK(shmkv_open(where, &o, &db));
    kvset s = kv_make("c:", n, "new");
    if (fd >= 0)
        t_hook_park_at(point, fd, MARK);
    else
        t_hook_kill_at(point, skip);
    CHILD_OK(crash_batch(db, op, &s));
    _exit(42); /* the point was never reached */
}

/* All keys of ref's group hold `tag` values (tag NULL: all absent)? */
static bool group_is(shmkv_db *db, const kvset *ref, const char *tag, char *why, size_t wn)
{
    kvset g = kv_make("c:", ref->n, "unused");
    char *buf = malloc(ref->n * 64);
    cr_assert(buf);
    T_OK(shmkv_get_many(db, g.it, g.n, buf, ref->n * 64, NULL, NULL));
    bool ok = true;
    for (size_t i = 0; i < ref->n && ok; i++) {
        char want[64];
        int wl = tag ? snprintf(want, sizeof want, "%s-%zu", tag, i) : 0;
        if (!tag && g.it[i].rc != SHMKV_ENOTFOUND) {
            snprintf(why, wn, "%s present", ref->k[i]);
            ok = false;
        } else if (tag && (g.it[i].rc != 0 || g.it[i].vlen != (size_t)wl ||
                           memcmp(g.it[i].val, want, (size_t)wl) != 0)) {
            snprintf(why, wn, "%s is %s, not %s", ref->k[i],
                     g.it[i].rc ? "absent" : t_show(g.it[i].val, g.it[i].vlen), want);
            ok = false;
        }
    }
    free(buf);
    kv_free(&g);
    return ok;
}

/* The group as a batch of op finds it (crash_store): for set_many the first
 * half "old" and the rest absent, for the deletes all of it "old". */
static bool group_before(shmkv_db *db, const kvset *ref, crash_op op, char *why, size_t wn)
{
    if (op != OP_SET)
        return group_is(db, ref, "old", why, wn);
    size_t n = ref->n;
    kvset g = kv_make("c:", n, "unused");
    char *buf = malloc(n * 64);
    cr_assert(buf);
    T_OK(shmkv_get_many(db, g.it, g.n, buf, n * 64, NULL, NULL));
    bool is_old = true;
    for (size_t i = 0; i < n; i++) {
        char want[64];
        int wl = snprintf(want, sizeof want, "old-%zu", i);
        if (i < n / 2 ? (g.it[i].rc || g.it[i].vlen != (size_t)wl ||
                         memcmp(g.it[i].val, want, (size_t)wl))
                      : g.it[i].rc != SHMKV_ENOTFOUND) {
            snprintf(why, wn, "%s: %s", ref->k[i],
                     g.it[i].rc ? "absent" : t_show(g.it[i].val, g.it[i].vlen));
            is_old = false;
        }
    }
    free(buf);
    kv_free(&g);
    return is_old;
}

/* A store of 16 segments holding the group of n keys as a batch of op
 * finds it (half of it for set_many: half updates, half inserts), and one
 * key outside it. reserve 0 keeps the default. */
static shmkv_db *crash_store(shmkv_backend be, int track, crash_op op, size_t n, uint64_t reserve,
                             const char *tag, const char **where, shmkv_options *o, kvset *old)
{
    *o = t_opts(be, track == SHMKV_TRACK_ON ? SHMKV_TRACK_ON : SHMKV_TRACK_DEFAULT);
    o->segments = 16;
    if (reserve)
        o->reserve = reserve;
    *where = t_where(be, tag);
    shmkv_db *db = t_open_opts(*where, o);
    *old = kv_make("c:", n, "old");
    T_OK(shmkv_set_many(db, old->it, op == OP_SET ? n / 2 : n, NULL));
    t_set(db, "other", "x");
    return db;
}

/* What a batch writer killed at `what` leaves: exactly the group before
 * the batch (new_state false) or after it, with size, count and listing
 * to match. Then the same leader leads the next batch (it settles the
 * dead one's verdict first) and the store is sound; the disk store is also
 * reopened from its file alone. strict: shmkv_check must find it sound
 * too, and shmkv-dump sound with no repair pending. The handle to go on
 * with. */
static shmkv_db *crash_verify(shmkv_db *db, const char *where, const shmkv_options *o,
                              crash_op op, const kvset *old, bool new_state, bool strict,
                              const char *what)
{
    size_t n = old->n;
    char why[256] = "";
    if (new_state)
        cr_assert(group_is(db, old, op == OP_SET ? "new" : NULL, why, sizeof why),
                  "%s: the batch committed but was not rolled forward: %s", what, why);
    else
        cr_assert(group_before(db, old, op, why, sizeof why),
                  "%s: the batch had not committed but was not rolled back: %s", what, why);
    uint64_t expect = 1 + (op == OP_SET ? (new_state ? n : n / 2) : (new_state ? 0 : n));
    cr_assert_eq(shmkv_size(db), expect, "%s: size", what);
    cr_assert_eq(count_of(db, "c:"), expect - 1, "%s: count", what);
    t_kvlist l;
    T_OK(t_list_all(db, NULL, 0, 0, SHMKV_LIST_KEYS_ONLY, &l));
    cr_assert_eq(l.n, expect, "%s: list", what);
    t_kvlist_free(&l);
    t_expect_str(db, "other", "x");

    kvset again = kv_make("c:", n, "again");
    T_OK(shmkv_set_many(db, again.it, again.n, NULL));
    cr_assert(group_is(db, old, "again", why, sizeof why), "%s: after: %s", what, why);
    cr_assert_eq(count_of(db, "c:"), n);
    if (strict)
        t_check_sound(db, what);
    if (o->backend == SHMKV_BACKEND_DISK) {
        t_close(db);
        if (strict)
            t_dump_sound(where, o->backend);
        else
            t_dump_check(where, o->backend);
        db = t_open_opts(where, o);
        cr_assert(group_is(db, old, "again", why, sizeof why), "%s: reopened: %s", what, why);
    } else if (strict) {
        t_dump_sound(where, o->backend); /* read-only, beside our live handle */
    } else {
        t_dump_check(where, o->backend);
    }
    kv_free(&again);
    return db;
}

static void crash_run(shmkv_backend be, int track, crash_op op, const char *point, bool new_state)
{
    const char *where;
    shmkv_options o;
    kvset old;
    shmkv_db *db = crash_store(be, track, op, CK, 0, "crash", &where, &o, &old);

    int fds[2];
    cr_assert(pipe(fds) == 0);
    pid_t p = t_fork();
    if (p == 0) {
        close(fds[0]);
        crash_child(where, be, op, CK, point, 0, fds[1]);
    }
    close(fds[1]);
    struct pollfd pf = {fds[0], POLLIN, 0};
    cr_assert_eq(poll(&pf, 1, 60000), 1, "%s: the child never reached the point", point);
    uint32_t mark = 0;
    ssize_t got = fd_read_all(fds[0], &mark, sizeof mark);
    if (got != (ssize_t)sizeof mark) {
        int st = t_wait(p);
        char b[96];
        cr_assert_fail("%s: child finished without reaching the point: %s", point,
                       t_status_str(st, b, sizeof b));
    }
    cr_assert_eq(mark, MARK);
    t_kill(p);
    close(fds[0]);

    db = crash_verify(db, where, &o, op, &old, new_state, false, point);
    t_close(db);
    kv_free(&old);
}

#define POINTS(op)                                                   \
    for (int tr = SHMKV_TRACK_OFF; tr <= SHMKV_TRACK_ON; tr++) {     \
        for (int be = 0; be < 2; be++) {                             \
            crash_run((shmkv_backend)be, tr, op, "batch.prepared", false); \
            crash_run((shmkv_backend)be, tr, op, "batch.committed", true); \
            crash_run((shmkv_backend)be, tr, op, "batch.applying", true);  \
            crash_run((shmkv_backend)be, tr, op, "batch.applied", true);   \
        }                                                            \
    }

Test(batch, killed_in_set_many)
{
    POINTS(OP_SET);
}

Test(batch, killed_in_delete_many)
{
    POINTS(OP_DELETE);
}

Test(batch, killed_in_delete_prefix)
{
    POINTS(OP_PREFIX);
}

/* The last process closes a disk store without having touched the
 * segments a killed batch writer held: the next opener, alone, must still
 * resolve the batch (it only repairs stores not closed cleanly). */
Test(batch, killed_then_store_closed_untouched)
{
    const char *points[] = {"batch.prepared", "batch.applying"};
    for (int q = 0; q < 4; q++) {
        int pi = q % 2;
        crash_op op = q < 2 ? OP_SET : OP_DELETE;
        shmkv_options o = t_opts(SHMKV_BACKEND_DISK, SHMKV_TRACK_DEFAULT);
        o.segments = 16;
        const char *where = t_path("untouched");
        shmkv_db *db = t_open_opts(where, &o);
        kvset old = kv_make("c:", CK, "old");
        T_OK(shmkv_set_many(db, old.it, old.n, NULL));
        int fds[2];
        cr_assert(pipe(fds) == 0);
        pid_t p = t_fork();
        if (p == 0) {
            close(fds[0]);
            crash_child(where, SHMKV_BACKEND_DISK, op, CK, points[pi], 0, fds[1]);
        }
        close(fds[1]);
        struct pollfd pf = {fds[0], POLLIN, 0};
        cr_assert_eq(poll(&pf, 1, 60000), 1, "the child never reached %s", points[pi]);
        uint32_t mark = 0;
        cr_assert_eq(fd_read_all(fds[0], &mark, sizeof mark), (ssize_t)sizeof mark);
        t_kill(p);
        close(fds[0]);
        t_close(db); /* last close, nothing locked since the kill */
        db = t_open_opts(where, &o);
        char why[256] = "";
        const char *want = pi == 0 ? "old" : op == OP_SET ? "new" : NULL;
        cr_assert(group_is(db, &old, want, why, sizeof why), "killed at %s, reopened: %s",
                  points[pi], why);
        cr_assert_eq(shmkv_size(db), want ? CK : 0);
        t_close(db);
        t_dump_check(where, SHMKV_BACKEND_DISK);
        kv_free(&old);
    }
}

/* A get_many reading without locks is paused after its first segment while
 * another process replaces the whole group with one set_many: the read must
 * not mix the two (it has to notice and read again). */
static int g_pause_go = -1, g_paused_fd = -1, g_pauses;

static void pause_hook(const char *point)
{
    if (strcmp(point, "get_many.unlocked") != 0 || g_pauses++ > 0)
        return;
    char c = 'p';
    if (write(g_paused_fd, &c, 1) != 1)
        _exit(5);
    struct pollfd pf = {g_pause_go, POLLIN, 0};
    if (poll(&pf, 1, 30000) != 1 || read(g_pause_go, &c, 1) != 1)
        _exit(6);
}

Test(batch, get_many_without_locks_sees_no_half_batch)
{
    for (int be = 0; be < 2; be++) {
        const char *where = t_where((shmkv_backend)be, "pause");
        shmkv_db *db = t_open(where, (shmkv_backend)be, SHMKV_TRACK_DEFAULT);
        kvset old = kv_make("c:", CK, "old");
        T_OK(shmkv_set_many(db, old.it, old.n, NULL));
        int paused[2], go[2], res[2];
        cr_assert(pipe(paused) == 0 && pipe(go) == 0 && pipe(res) == 0);
        pid_t p = t_fork();
        if (p == 0) {
            shmkv_db *r = NULL;
            shmkv_options o = t_opts((shmkv_backend)be, SHMKV_TRACK_DEFAULT);
            CHILD_OK(shmkv_open(where, &o, &r));
            g_paused_fd = paused[1];
            g_pause_go = go[0];
            shmkv__test_hook = pause_hook;
            kvset g = kv_make("c:", CK, "unused");
            static char buf[CK * 64];
            CHILD_OK(shmkv_get_many(r, g.it, g.n, buf, sizeof buf, NULL, NULL));
            CHILD_CHECK(g_pauses > 0, "the reader never read without locks");
            char first = 0;
            unsigned news = 0;
            for (size_t i = 0; i < CK; i++) {
                CHILD_CHECK(g.it[i].rc == 0, "%s absent", g.k[i]);
                news += g.it[i].vlen >= 3 && memcmp(g.it[i].val, "new", 3) == 0;
                first = first ? first : ((const char *)g.it[i].val)[0];
            }
            CHILD_CHECK(news == 0 || news == CK, "half a batch: %u of %d keys new", news, CK);
            CHILD_CHECK(fd_write_all(res[1], &news, sizeof news) == 0, "report");
            _exit(0);
        }
        char c;
        struct pollfd pf = {paused[0], POLLIN, 0};
        cr_assert_eq(poll(&pf, 1, 30000), 1, "the reader did not pause");
        cr_assert_eq(read(paused[0], &c, 1), 1);
        kvset nw = kv_make("c:", CK, "new");
        T_OK(shmkv_set_many(db, nw.it, nw.n, NULL)); /* while the reader is paused */
        cr_assert_eq(write(go[1], "g", 1), 1);
        t_wait_ok(p, "paused reader");
        unsigned news = 0;
        cr_assert_eq(fd_read_all(res[0], &news, sizeof news), (ssize_t)sizeof news);
        cr_assert_eq(news, CK, "the reader returned the old values after the batch it straddled");
        for (int i = 0; i < 2; i++) {
            close(paused[i]);
            close(go[i]);
            close(res[i]);
        }
        t_close(db);
        kv_free(&old);
        kv_free(&nw);
    }
}

/* The same as atomic_for_other_processes, with threads of one process
 * sharing one handle (k6's VUs): also what ThreadSanitizer can see. */
typedef struct {
    shmkv_db *db;
    int id;
    uint64_t checks;
    char err[256];
} thr;

static void *thr_writer(void *arg)
{
    thr *t = arg;
    kvset s = kv_make("g:", GK, "x");
    char val[64];
    uint64_t end = now_ms() + RUN_MS / 2;
    for (unsigned it = 0; now_ms() < end && !t->err[0]; it++) {
        snprintf(val, sizeof val, "t%d-%u%s", t->id, it, it % 2 ? "-longer-value" : "");
        group(&s, val);
        int rc = shmkv_set_many(t->db, s.it, s.n, NULL);
        if (!rc && it % 3 == 1)
            rc = shmkv_delete_many(t->db, s.it, s.n, NULL, NULL);
        else if (!rc && it % 3 == 2)
            rc = shmkv_delete_prefix(t->db, "g:", 2, 0, NULL);
        if (rc)
            snprintf(t->err, sizeof t->err, "writer %d: %s", t->id, shmkv_strerror(rc));
    }
    kv_free(&s);
    return NULL;
}

static void *thr_reader(void *arg)
{
    thr *t = arg;
    kvset s = kv_make("g:", GK, "x");
    char *buf = malloc(GK * 64);
    uint64_t end = now_ms() + RUN_MS / 2;
    while (now_ms() < end && !t->err[0]) {
        int rc = shmkv_get_many(t->db, s.it, s.n, buf, GK * 64, NULL, NULL);
        if (rc) {
            snprintf(t->err, sizeof t->err, "get_many: %s", shmkv_strerror(rc));
            break;
        }
        size_t found = 0;
        for (size_t i = 0; i < GK; i++) {
            found += s.it[i].rc == 0;
            if (s.it[i].rc == 0 && s.it[0].rc == 0 &&
                (s.it[i].vlen != s.it[0].vlen || memcmp(s.it[i].val, s.it[0].val, s.it[0].vlen)))
                snprintf(t->err, sizeof t->err, "torn batch: two values in one read");
        }
        if (found != 0 && found != GK)
            snprintf(t->err, sizeof t->err, "torn batch: %zu of %d keys", found, GK);
        t->checks++;
    }
    free(buf);
    kv_free(&s);
    return NULL;
}

Test(batch, atomic_for_threads_of_one_process)
{
    for (size_t c = 0; c < T_NCOMBO; c++) {
        const char *where;
        shmkv_db *db = t_open_combo(&t_combos[c], "thr", &where);
        thr t[4];
        pthread_t id[4];
        for (int i = 0; i < 4; i++) {
            memset(&t[i], 0, sizeof t[i]);
            t[i].db = db;
            t[i].id = i;
            cr_assert(pthread_create(&id[i], NULL, i < 2 ? thr_writer : thr_reader, &t[i]) == 0);
        }
        for (int i = 0; i < 4; i++)
            pthread_join(id[i], NULL);
        for (int i = 0; i < 4; i++)
            cr_assert(!t[i].err[0], "%s: %s", t_backend_name(t_combos[c].be), t[i].err);
        cr_assert_gt(t[2].checks + t[3].checks, 10);
        close_checked(db, where, t_combos[c].be);
    }
}

/* ---- a full store (1 MiB reserve) ----------------------------------------------- */

static shmkv_db *open_small(const t_combo *c, const char *tag, const char **where)
{
    *where = t_where(c->be, tag);
    shmkv_options o = t_opts(c->be, c->track == SHMKV_TRACK_ON ? SHMKV_TRACK_ON
                                                                : SHMKV_TRACK_DEFAULT);
    o.reserve = SHMKV_RESERVE_MIN;
    return t_open_opts(*where, &o);
}

/* Single sets of 500-byte values "<pfx><i>" until one fails (or 100,000
 * went in); the number that fit, and *rc the failure. */
static size_t fill_until_refused(shmkv_db *db, const char *pfx, int *rc)
{
    static char val[500];
    memset(val, 'x', sizeof val);
    for (size_t n = 0; n < 100000; n++) {
        char k[48];
        int kl = snprintf(k, sizeof k, "%s%zu", pfx, n);
        if ((*rc = shmkv_set(db, k, (size_t)kl, val, sizeof val, SHMKV_KIND_STRING)) != 0)
            return n;
    }
    *rc = 0;
    return 100000;
}

/* fill_until_refused, where only a full store may refuse. */
static size_t fill_singles(shmkv_db *db, const char *pfx)
{
    int rc;
    size_t n = fill_until_refused(db, pfx, &rc);
    cr_assert(t_full(rc), "set %s%zu -> %d (%s)%s", pfx, n, rc, shmkv_strerror(rc),
              rc ? "" : ": a 1 MiB store never fills");
    return n;
}

/* A set_many far too big for the store: it must fail as full and write
 * nothing. */
static void failed_set_many(shmkv_db *db)
{
    static char val[500];
    memset(val, 'y', sizeof val);
    size_t n = 3000;
    shmkv_item *it = calloc(n, sizeof *it);
    char (*k)[24] = calloc(n, sizeof *k);
    cr_assert(it && k);
    for (size_t i = 0; i < n; i++) {
        int kl = snprintf(k[i], sizeof k[i], "f:%zu", i);
        it[i] = (shmkv_item){k[i], (size_t)kl, val, sizeof val, SHMKV_KIND_STRING, 0};
    }
    uint64_t before = shmkv_size(db);
    int rc = shmkv_set_many(db, it, n, NULL);
    cr_assert(t_full(rc), "set_many of 1.5 MB into 1 MiB -> %d (%s)", rc, shmkv_strerror(rc));
    cr_assert_eq(shmkv_size(db), before, "a failed set_many wrote something");
    free(it);
    free(k);
}

/* A failed batch leaves the store as it was, its free space included: as
 * many values fit after it as before it. */
Test(batch, failed_set_many_keeps_space)
{
    for (size_t c = 0; c < T_NCOMBO; c++) {
        const char *where;
        shmkv_db *db = open_small(&t_combos[c], "fsk", &where);
        size_t before = 0;
        for (int r = 0; r < 3; r++) {
            before = fill_singles(db, "s:");
            T_OK(shmkv_clear(db));
        }
        cr_assert_gt(before, 500, "combo %zu: only %zu values fit", c, before);
        for (int r = 0; r < 3; r++) {
            failed_set_many(db);
            size_t n = fill_singles(db, "s:");
            cr_assert_eq(n, before, "combo %zu round %d: %zu values fit after a failed set_many, %zu before",
                         c, r, n, before);
            T_OK(shmkv_clear(db));
        }
        /* Failing on a store that holds keys keeps them and their room. */
        size_t half = fill_singles(db, "h:");
        T_OK(shmkv_clear(db));
        for (size_t i = 0; i < half / 2; i++) {
            char k[24];
            int kl = snprintf(k, sizeof k, "h:%zu", i);
            T_OK(shmkv_set(db, k, (size_t)kl, "v", 1, SHMKV_KIND_STRING));
        }
        failed_set_many(db);
        cr_assert_eq(shmkv_size(db), half / 2);
        close_checked(db, where, t_combos[c].be);
    }
}

static int collect_key(void *ctx, const void *key, size_t klen, const void *val, size_t vlen,
                       shmkv_kind kind)
{
    (void)val;
    (void)vlen;
    (void)kind;
    kvset *s = ctx;
    if (klen >= sizeof s->k[0])
        return 1;
    memcpy(s->k[s->n], key, klen);
    s->k[s->n][klen] = 0;
    s->it[s->n] = (shmkv_item){s->k[s->n], klen, NULL, 0, 0, 0};
    s->n++;
    return 0;
}

/* Deleting frees space, so it must work on a full store: delete_many and
 * delete_prefix of every key, with or without a failed set_many first. */
/* One segment filled to its last block, with big values and then with the
 * smallest: no free block of any size is left but the tables it outgrew.
 * A delete batch of every key must still work, because its intent takes no
 * room (format 4); with an intent block it needed 16 bytes a key and
 * failed as full. */
Test(batch, deletes_need_no_room)
{
    for (size_t c = 0; c < T_NCOMBO; c++) {
        for (int prefix = 0; prefix < 2; prefix++) {
            const char *where = t_where(t_combos[c].be, prefix ? "dnrp" : "dnr");
            shmkv_options o = t_opts(t_combos[c].be, t_combos[c].track == SHMKV_TRACK_ON
                                                       ? SHMKV_TRACK_ON
                                                       : SHMKV_TRACK_DEFAULT);
            o.reserve = SHMKV_RESERVE_MIN;
            o.segments = 1;
            shmkv_db *db = t_open_opts(where, &o);
            size_t big = fill_singles(db, "s:");
            size_t small = 0;
            for (;; small++) {
                char k[48];
                int kl = snprintf(k, sizeof k, "t:%zu", small);
                int rc = shmkv_set(db, k, (size_t)kl, "v", 1, SHMKV_KIND_STRING);
                if (rc) {
                    cr_assert(t_full(rc), "set %s -> %d (%s)", k, rc, shmkv_strerror(rc));
                    break;
                }
            }
            size_t n = big + small;
            cr_assert_gt(big, 100);
            uint64_t del = 0;
            int rc;
            if (prefix) {
                uint64_t d2 = 0;
                rc = shmkv_delete_prefix(db, "s:", 2, 0, &del);
                if (!rc)
                    rc = shmkv_delete_prefix(db, "t:", 2, 0, &d2);
                del += d2;
            } else {
                kvset s = {calloc(n, sizeof *s.it), calloc(n, sizeof *s.k), NULL, 0};
                cr_assert(s.it && s.k);
                T_OK(shmkv_list(db, NULL, 0, 0, SHMKV_LIST_KEYS_ONLY, collect_key, &s));
                cr_assert_eq(s.n, n);
                rc = shmkv_delete_many(db, s.it, s.n, &del, NULL);
                free(s.it);
                free(s.k);
            }
            cr_assert_eq(rc, 0, "%s, %s: deleting all %zu keys of a full segment -> %d (%s)",
                         t_backend_name(t_combos[c].be), prefix ? "delete_prefix" : "delete_many",
                         n, rc, shmkv_strerror(rc));
            cr_assert_eq(del, n);
            cr_assert_eq(shmkv_size(db), 0);
            size_t again = fill_singles(db, "s:");
            /* At least as many: the refill of the emptied segment meets
             * the end of the reserve with other chunks than the first
             * fill, and since a chunk just large enough is taken there it
             * may fit a few more. */
            cr_assert_geq(again, big, "%zu of %zu values fit again", again, big);
            close_checked(db, where, t_combos[c].be);
        }
    }
}

Test(batch, deletes_work_on_a_full_store)
{
    for (size_t c = 0; c < T_NCOMBO; c++) {
        for (int fail_first = 0; fail_first < 2; fail_first++) {
            const char *where;
            shmkv_db *db = open_small(&t_combos[c], fail_first ? "dff" : "dfn", &where);
            if (fail_first)
                failed_set_many(db);
            size_t n = fill_singles(db, "s:");
            kvset s = {calloc(n, sizeof *s.it), calloc(n, sizeof *s.k), NULL, 0};
            cr_assert(s.it && s.k);
            T_OK(shmkv_list(db, "s:", 2, 0, SHMKV_LIST_KEYS_ONLY, collect_key, &s));
            cr_assert_eq(s.n, n);
            uint64_t del = 0;
            int rc = shmkv_delete_many(db, s.it, s.n, &del, NULL);
            cr_assert_eq(rc, 0, "combo %zu fail_first %d: delete_many of %zu keys on a full store -> %d (%s)",
                         c, fail_first, n, rc, shmkv_strerror(rc));
            cr_assert_eq(del, n);
            cr_assert_eq(shmkv_size(db), 0);
            if (fail_first)
                failed_set_many(db);
            size_t n2 = fill_singles(db, "s:");
            cr_assert_gt(n2, 0);
            rc = shmkv_delete_prefix(db, "s:", 2, 0, &del);
            cr_assert_eq(rc, 0, "combo %zu fail_first %d: delete_prefix on a full store -> %d (%s)", c,
                         fail_first, rc, shmkv_strerror(rc));
            cr_assert_eq(del, n2);
            cr_assert_eq(shmkv_size(db), 0);
            /* And one key at a time in a batch of one. */
            n2 = fill_singles(db, "s:");
            shmkv_item one = {"s:0", 3, NULL, 0, 0, 0};
            T_OK(shmkv_delete_many(db, &one, 1, &del, NULL));
            cr_assert_eq(del, 1);
            free(s.it);
            free(s.k);
            close_checked(db, where, t_combos[c].be);
        }
    }
}

/* ---- a full file system (-ENOSPC) ------------------------------------------------ */

/* The same promises when the file system fills before the reserve (a
 * 2 MiB tmpfs, t_small_fs_run): the refused set_many is -ENOSPC, writes
 * nothing and keeps no room (as many values fit after it as before), and
 * delete_many and delete_prefix work on the full file system. Runs in a
 * child, which holds the mount: CHILD_CHECK, not cr_assert. */
typedef struct {
    uint64_t before, after, deleted;
} fullfs_res;

/* -ENOSPC on the tmpfs; -EFBIG where the harness could not mount one and
 * fell back to RLIMIT_FSIZE */
static bool fs_full(int rc)
{
    return rc == -ENOSPC || rc == -EFBIG;
}

static size_t child_fill(shmkv_db *db, const char *pfx)
{
    int rc;
    size_t n = fill_until_refused(db, pfx, &rc);
    CHILD_CHECK(fs_full(rc), "set %s%zu on a full file system -> %d (%s)%s", pfx, n, rc,
                shmkv_strerror(rc), rc ? "" : ": a 2 MiB file system never fills");
    return n;
}

static void fullfs_kid(shmkv_backend be, int track, const char *mnt, const char *where, int resfd)
{
    CHILD_CHECK(t_child_small_fs(mnt, NULL) > 0, "no small file system at %s", mnt);
    shmkv_options o = t_opts(be, track);
    shmkv_db *db = NULL;
    CHILD_OK(shmkv_open(where, &o, &db));
    fullfs_res res = {0};
    for (int r = 0; r < 2; r++) { /* the second fill is the settled one */
        res.before = child_fill(db, "s:");
        CHILD_OK(shmkv_clear(db));
    }
    CHILD_CHECK(res.before > 500, "only %" PRIu64 " values fit", res.before);

    static char val[500];
    memset(val, 'y', sizeof val);
    enum { N = 6000 }; /* 3 MB */
    shmkv_item *it = calloc(N, sizeof *it);
    char (*k)[24] = calloc(N, sizeof *k);
    CHILD_CHECK(it && k, "calloc");
    for (size_t i = 0; i < N; i++) {
        int kl = snprintf(k[i], sizeof k[i], "f:%zu", i);
        it[i] = (shmkv_item){k[i], (size_t)kl, val, sizeof val, SHMKV_KIND_STRING, 0};
    }
    size_t bad = 0;
    int rc = shmkv_set_many(db, it, N, &bad);
    CHILD_CHECK(fs_full(rc), "set_many of 3 MB on a 2 MiB file system -> %d (%s)", rc,
                shmkv_strerror(rc));
    CHILD_CHECK(shmkv_size(db) == 0, "a refused set_many wrote %" PRIu64 " keys", shmkv_size(db));
    res.after = child_fill(db, "s:");
    CHILD_CHECK(res.after == res.before, "%" PRIu64 " values fit after a refused set_many, %" PRIu64
                " before", res.after, res.before);

    /* full: delete half the keys in one batch, the rest by prefix */
    size_t half = res.after / 2;
    for (size_t i = 0; i < half; i++) {
        int kl = snprintf(k[i], sizeof k[i], "s:%zu", i);
        it[i] = (shmkv_item){k[i], (size_t)kl, NULL, 0, 0, 0};
    }
    uint64_t del = 0;
    rc = shmkv_delete_many(db, it, half, &del, &bad);
    CHILD_CHECK(rc == 0 && del == half, "delete_many of %zu keys on the full file system -> %d (%s), "
                "%" PRIu64 " deleted", half, rc, shmkv_strerror(rc), del);
    res.deleted = del;
    rc = shmkv_delete_prefix(db, "s:", 2, 0, &del);
    CHILD_CHECK(rc == 0 && del == res.after - half, "delete_prefix on the full file system -> %d (%s), "
                "%" PRIu64 " deleted", rc, shmkv_strerror(rc), del);
    res.deleted += del;
    CHILD_CHECK(shmkv_size(db) == 0, "%" PRIu64 " keys left", shmkv_size(db));
    free(it);
    free(k);
    t_child_dump_check(where, be, true); /* while open: a memory store goes with its last user */
    CHILD_OK(shmkv_close(db));
    CHILD_CHECK(fd_write_all(resfd, &res, sizeof res) == 0, "report");
}

Test(batch, full_file_system_refuses_and_deletes)
{
    for (size_t c = 0; c < T_NCOMBO; c++) {
        fullfs_res res;
        t_small_fs_run(t_combos[c].be, t_combos[c].track, "bfull", fullfs_kid, &res, sizeof res);
        cr_assert_eq(res.after, res.before);
        cr_assert_eq(res.deleted, res.after);
    }
}

/* ---- a writer killed while it prepares a batch ------------------------------------------ */

/*
 * killed_in_* stop the writer once every segment is prepared. Here it dies
 * on the way there: at each hook point the preparation passes (allocating
 * the new entries and intents, growing tables, changing the index), at the
 * point's first, middle and last call. Nothing has committed, so the repair
 * must roll all of it back, and give back whatever room the dead writer
 * took.
 *
 * PK keys over 16 segments: set_many's half of them new (about 19 a
 * segment, beside as many old ones) is enough to grow the tables of the
 * segments that hold more than their share, inside the batch; the counting
 * run requires that it does. A 1 MiB reserve keeps the room check short.
 *
 * An untracked delete_many passes no hook point before its commit (it
 * allocates nothing, so that it works on a full store): there is nothing
 * to kill it at, and killed_in_delete_many's batch.prepared, after its
 * last segment, is all there is. Should the library grow a point there,
 * this test kills at it too.
 */
#define PK 600
#define NPP 32 /* distinct hook points a preparation may pass */

typedef struct {
    int rc;        /* the batch's result */
    int n;         /* distinct points passed before batch.prepared */
    bool overflow; /* more than NPP of them, or a name too long */
    char name[NPP][40];
    int hits[NPP];
} prep_hits;

static prep_hits g_hits;
static bool g_counting;

/* Counts the hook calls of a batch until batch.prepared: all it does
 * before its commit. */
static void count_hook(const char *point)
{
    if (!g_counting)
        return;
    if (strcmp(point, "batch.prepared") == 0) {
        g_counting = false;
        return;
    }
    for (int i = 0; i < g_hits.n; i++) {
        if (strcmp(g_hits.name[i], point) == 0) {
            g_hits.hits[i]++;
            return;
        }
    }
    if (g_hits.n == NPP || strlen(point) >= sizeof g_hits.name[0]) {
        g_hits.overflow = true;
        return;
    }
    snprintf(g_hits.name[g_hits.n], sizeof g_hits.name[0], "%s", point);
    g_hits.hits[g_hits.n++] = 1;
}

/*
 * The points and their calls, from the same batch run to its end by a
 * child on a store built as the killed ones are. The library draws nothing
 * at random on this path and every store starts the same, so each killed
 * writer passes the same calls in the same order: a kill at a call counted
 * here comes before the commit. (The parent checks that too, from the
 * leader's word.)
 */
static prep_hits count_points(const t_combo *c, crash_op op)
{
    const char *where;
    shmkv_options o;
    kvset old;
    shmkv_db *db = crash_store(c->be, c->track, op, PK, SHMKV_RESERVE_MIN, "count", &where, &o,
                               &old);
    int fd;
    pid_t p = t_fork_reporting(&fd);
    if (p == 0) {
        shmkv_db *w = NULL;
        shmkv_options wo = t_opts(c->be, SHMKV_TRACK_DEFAULT);
        CHILD_OK(shmkv_open(where, &wo, &w));
        kvset s = kv_make("c:", PK, "new");
        memset(&g_hits, 0, sizeof g_hits);
        g_counting = true;
        shmkv__test_hook = count_hook;
        g_hits.rc = crash_batch(w, op, &s);
        shmkv__test_hook = NULL;
        CHILD_CHECK(fd_write_all(fd, &g_hits, sizeof g_hits) == 0, "report");
        _exit(0);
    }
    prep_hits h;
    t_collect_report(p, fd, &h, sizeof h, "the counting writer");
    cr_assert_eq(h.rc, 0, "%s: the counted batch -> %d (%s)", t_combo_name(c), h.rc,
                 shmkv_strerror(h.rc));
    cr_assert(!h.overflow, "%s: more than %d hook points, or a name too long", t_combo_name(c),
              NPP);
    t_close(db);
    if (c->be == SHMKV_BACKEND_DISK)
        unlink(where);
    kv_free(&old);
    return h;
}

/* Values of 500 B that fit once the store is cleared: the failed_set_many
 * measure. A clear gives every chunk back to the pool, so this counts
 * what the chunks, the pool and the region hold, whatever lies where.
 * Blocks left in use inside a segment with nothing pointing at them are
 * what shmkv_check and the dump report as leaked. */
static size_t room_after_clear(shmkv_db *db)
{
    T_OK(shmkv_clear(db));
    return fill_singles(db, "s:");
}

/* The same on a store built alike that took the steps of crash_verify
 * with no writer killed before them. */
static size_t room_unkilled(const t_combo *c, crash_op op)
{
    const char *where;
    shmkv_options o;
    kvset old;
    shmkv_db *db = crash_store(c->be, c->track, op, PK, SHMKV_RESERVE_MIN, "unkilled", &where,
                               &o, &old);
    kvset again = kv_make("c:", PK, "again");
    T_OK(shmkv_set_many(db, again.it, again.n, NULL));
    if (c->be == SHMKV_BACKEND_DISK) {
        t_close(db);
        db = t_open_opts(where, &o);
    }
    size_t room = room_after_clear(db);
    cr_assert_gt(room, 500, "%s: only %zu values fit", t_combo_name(c), room);
    t_close(db);
    if (c->be == SHMKV_BACKEND_DISK)
        unlink(where);
    kv_free(&again);
    kv_free(&old);
    return room;
}

static bool has_point(const prep_hits *h, const char *prefix)
{
    for (int i = 0; i < h->n; i++)
        if (strncmp(h->name[i], prefix, strlen(prefix)) == 0)
            return true;
    return false;
}

/* One writer killed at the (skip+1)-th call of point, and what it leaves;
 * room: room_unkilled(). */
static void kill_preparing(const t_combo *c, crash_op op, const char *point, int skip,
                           size_t room)
{
    const char *what = t_str("%s %s, killed at %s call %d", t_combo_name(c),
                             op == OP_SET ? "set_many" : "delete_many", point, skip + 1);
    const char *where;
    shmkv_options o;
    kvset old;
    shmkv_db *db = crash_store(c->be, c->track, op, PK, SHMKV_RESERVE_MIN, "prep", &where, &o,
                               &old);
    pid_t p = t_fork();
    if (p == 0)
        crash_child(where, c->be, op, PK, point, skip, -1);
    int st = t_wait(p);
    char b[96];
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
              "%s: the writer was to die there, but it ended with %s", what,
              t_status_str(st, b, sizeof b));
    /* Read before anything repairs the store. One leader says PREPARED:
     * the writer died inside the batch and before its commit (a kill
     * before the batch leaves every word FREE, one after the commit leaves
     * COMMITTED or FREE). */
    uint32_t nseg = SHMKV__HDR(db->m)->nseg, prepared = 0, busy = 0;
    for (uint32_t j = 0; j < nseg; j++) {
        uint64_t w = atomic_load(&shmkv__seg_at(db->m, j)->batch);
        prepared += (w & 3u) == SHMKV__B_PREPARED;
        busy += (w & 3u) != SHMKV__B_FREE;
    }
    cr_assert(prepared == 1 && busy == 1,
              "%s: not killed while preparing: %u leaders PREPARED, %u not FREE", what, prepared,
              busy);

    db = crash_verify(db, where, &o, op, &old, false, true, what);
    size_t r = room_after_clear(db);
    cr_assert_geq(r, room,
                  "%s: space lost: %zu values of 500 B fit after a clear, %zu without the kill",
                  what, r, room);
    t_check_sound(db, t_str("%s, refilled", what));
    t_close(db);
    if (c->be == SHMKV_BACKEND_DISK)
        unlink(where);
    kv_free(&old);
}

static void kill_while_preparing(crash_op op)
{
    T_FOR_COMBOS(c) {
        prep_hits h = count_points(c, op);
        bool tracked = c->track == SHMKV_TRACK_ON;
        if (op == OP_SET) {
            cr_assert(has_point(&h, "alloc."), "%s: set_many allocated nothing", t_combo_name(c));
            cr_assert(has_point(&h, "rehash."), "%s: no table grew inside the batch",
                      t_combo_name(c));
            cr_assert(!tracked || has_point(&h, "index.insert."),
                      "%s: the batch inserted nothing into the index", t_combo_name(c));
        } else {
            cr_assert(!tracked || has_point(&h, "index.remove."),
                      "%s: the batch removed nothing from the index", t_combo_name(c));
        }
        size_t room = h.n ? room_unkilled(c, op) : 0;
        int kills = 0;
        char seen[512] = "";
        for (int i = 0; i < h.n; i++) {
            /* Counted over the whole preparation, a point's first, middle
             * and last calls fall in its first segment (or key), half way
             * (some segments with their intent published, the rest not)
             * and at its end. */
            int last = h.hits[i] - 1, skips[3] = {0, last / 2, last};
            for (int k = 0; k < 3; k++) {
                if (k > 0 && skips[k] == skips[k - 1])
                    continue;
                kill_preparing(c, op, h.name[i], skips[k], room);
                kills++;
            }
            size_t at = strlen(seen);
            snprintf(seen + at, sizeof seen - at, "%s%s x%d", i ? ", " : "", h.name[i],
                     h.hits[i]);
        }
        t_note("%s: %d kills at %s", t_combo_name(c), kills,
               h.n ? seen : "no point: nothing runs a hook before the commit");
    }
}

Test(batch, killed_while_preparing_set_many)
{
    kill_while_preparing(OP_SET);
}

Test(batch, killed_while_preparing_delete_many)
{
    kill_while_preparing(OP_DELETE);
}
