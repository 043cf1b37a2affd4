/*
 * test_multiproc.c - several processes hammering one store.
 *
 * N = 4 children, each opening the store itself after fork, run set, get,
 * delete, incr, cas and set_if_absent on overlapping keys; afterwards the
 * parent checks exact totals: the shared counter is N*K, each child's own
 * counter is K, the CAS counter is exact, every key a child wrote last and
 * did not delete is there with its value, every set_if_absent key has
 * exactly one winner, and size() is exactly the number of keys expected.
 * Both backends, key tracking on and off. The parent stays attached for the
 * whole run (a memory store disappears with its last process).
 */
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>

TestSuite(multiproc, .init = t_setup, .fini = t_teardown, .timeout = 300);

#define NKIDS 4
#define NOWN 64   /* own keys per child */
#define NOVER 50  /* overlapping keys written by everyone */
#define NONCE 200 /* set_if_absent keys */

static uint64_t mix(uint64_t a, uint64_t b)
{
    t_rng r = {a * 0x100000001b3ull ^ (b + 0x9e3779b97f4a7c15ull)};
    return t_next(&r);
}

/* Child i's action on its own key at iteration j: 1 set, 0 delete. */
static int own_action(int i, int j)
{
    return mix((uint64_t)i, (uint64_t)j) % 4 != 0;
}

static bool parse_pair(const char *b, size_t n, int *i, int *j)
{
    char tmp[32];
    if (n == 0 || n >= sizeof tmp)
        return false;
    memcpy(tmp, b, n);
    tmp[n] = 0;
    char *end;
    long a = strtol(tmp, &end, 10);
    if (end == tmp || *end != ':')
        return false;
    char *s = end + 1;
    long c = strtol(s, &end, 10);
    if (end == s || *end)
        return false;
    *i = (int)a;
    *j = (int)c;
    return true;
}

static void child_run(const char *where, shmkv_backend be, int id, int iters, int start_fd)
{
    char b;
    /* wait for the start signal: the parent closes the pipe */
    CHILD_CHECK(read(start_fd, &b, 1) == 0, "start pipe");
    close(start_fd);
    shmkv_db *db = NULL;
    shmkv_options o = t_opts(be, SHMKV_TRACK_DEFAULT);
    CHILD_OK(shmkv_open(where, &o, &db));
    char k[48], v[48], buf[64];
    int wins = 0;
    for (int j = 0; j < iters; j++) {
        CHILD_OK(shmkv_incr(db, "shared", 6, 1, SHMKV_KIND_STRING, NULL));
        int kl = snprintf(k, sizeof k, "c:%d", id);
        int64_t mine = 0;
        CHILD_OK(shmkv_incr(db, k, (size_t)kl, 1, SHMKV_KIND_STRING, &mine));
        CHILD_CHECK(mine == j + 1, "own counter %" PRId64 " at iteration %d", mine, j);

        /* own key */
        kl = snprintf(k, sizeof k, "own:%d:%d", id, j % NOWN);
        if (own_action(id, j)) {
            int vl = snprintf(v, sizeof v, "%d:%d", id, j);
            CHILD_OK(shmkv_set(db, k, (size_t)kl, v, (size_t)vl, SHMKV_KIND_STRING));
        } else {
            CHILD_OK(shmkv_delete(db, k, (size_t)kl, NULL));
        }

        /* overlapping key: last writer wins; every read is a whole value */
        kl = snprintf(k, sizeof k, "over:%d", j % NOVER);
        int vl = snprintf(v, sizeof v, "%d:%d", id, j);
        CHILD_OK(shmkv_set(db, k, (size_t)kl, v, (size_t)vl, SHMKV_KIND_STRING));
        kl = snprintf(k, sizeof k, "over:%d", (j * 7 + id) % NOVER);
        size_t n = 0;
        int rc = shmkv_get(db, k, (size_t)kl, buf, sizeof buf, &n, NULL);
        if (rc == 0) {
            int a, c;
            CHILD_CHECK(parse_pair(buf, n, &a, &c) && a >= 0 && a < NKIDS && c >= 0 && c < iters &&
                            c % NOVER == (j * 7 + id) % NOVER,
                        "torn value \"%.*s\" under %s", (int)n, buf, k);
        } else {
            CHILD_CHECK(rc == SHMKV_ENOTFOUND, "get over -> %d", rc);
        }

        /* churn: a key everybody creates and deletes */
        kl = snprintf(k, sizeof k, "tmp:%d", j % 8);
        CHILD_OK(shmkv_set(db, k, (size_t)kl, v, (size_t)vl, SHMKV_KIND_BYTES));
        CHILD_OK(shmkv_delete(db, k, (size_t)kl, NULL));

        /* CAS counter every 4th iteration */
        if (j % 4 == 0) {
            for (;;) {
                rc = shmkv_get(db, "cas", 3, buf, sizeof buf - 1, &n, NULL);
                CHILD_CHECK(rc == 0, "get cas -> %d", rc);
                buf[n] = 0;
                long long cur = atoll(buf);
                int nl = snprintf(v, sizeof v, "%lld", cur + 1);
                int sw = 0;
                CHILD_OK(shmkv_cas(db, "cas", 3, buf, n, v, (size_t)nl, SHMKV_KIND_STRING, &sw));
                if (sw)
                    break;
            }
        }

        /* one winner per key */
        if (j < NONCE * 2) {
            kl = snprintf(k, sizeof k, "once:%d", j % NONCE);
            int st = -1;
            unsigned char who = (unsigned char)id;
            CHILD_OK(shmkv_set_if_absent(db, k, (size_t)kl, &who, 1, SHMKV_KIND_BYTES, &st));
            CHILD_CHECK(st == 0 || st == 1, "stored flag %d", st);
            wins += st;
        }
    }
    int kl = snprintf(k, sizeof k, "wins:%d", id);
    int vl = snprintf(v, sizeof v, "%d", wins);
    CHILD_OK(shmkv_set(db, k, (size_t)kl, v, (size_t)vl, SHMKV_KIND_STRING));
    CHILD_OK(shmkv_close(db));
}

static void expect_int(shmkv_db *db, const char *k, long long want)
{
    char w[32];
    snprintf(w, sizeof w, "%lld", want);
    t_expect_str(db, k, w);
}

static void hammer(shmkv_backend be, bool track)
{
    const char *where = t_where(be, "hammer");
    shmkv_options o = t_opts(be, track ? SHMKV_TRACK_ON : SHMKV_TRACK_OFF);
    o.segments = 8; /* fewer stripes: more contention */
    shmkv_db *db = t_open_opts(where, &o);
    t_set(db, "cas", "0");
    int iters = (int)t_scaled(20000, 400);

    int start[2];
    cr_assert(pipe(start) == 0);
    pid_t kids[NKIDS];
    for (int i = 0; i < NKIDS; i++) {
        kids[i] = t_fork();
        if (kids[i] == 0) {
            close(start[1]);
            child_run(where, be, i, iters, start[0]);
            _exit(0);
        }
    }
    close(start[0]);
    close(start[1]); /* go */
    for (int i = 0; i < NKIDS; i++)
        t_wait_ok(kids[i], "hammer");

    expect_int(db, "shared", (long long)NKIDS * iters);
    for (int i = 0; i < NKIDS; i++) {
        char k[32];
        snprintf(k, sizeof k, "c:%d", i);
        expect_int(db, k, iters);
    }
    expect_int(db, "cas", (long long)NKIDS * ((iters + 3) / 4));

    uint64_t want = 2 + NKIDS; /* shared, cas, c:* */
    /* own keys: replay each child's sequence */
    for (int i = 0; i < NKIDS; i++) {
        for (int m = 0; m < NOWN && m < iters; m++) {
            int last = m + ((iters - 1 - m) / NOWN) * NOWN; /* last j with j % NOWN == m */
            char k[32], v[32];
            int kl = snprintf(k, sizeof k, "own:%d:%d", i, m);
            if (own_action(i, last)) {
                snprintf(v, sizeof v, "%d:%d", i, last);
                t_expect_str(db, k, v);
                want++;
            } else {
                t_expect_absent(db, k, (size_t)kl);
            }
        }
    }
    /* overlapping keys: present, whole, and written at an iteration of
     * the right residue */
    for (int r = 0; r < NOVER && r < iters; r++) {
        char k[32], buf[64];
        int kl = snprintf(k, sizeof k, "over:%d", r);
        size_t n = 0;
        T_OK(shmkv_get(db, k, (size_t)kl, buf, sizeof buf, &n, NULL));
        int a, c;
        cr_assert(parse_pair(buf, n, &a, &c) && a >= 0 && a < NKIDS && c % NOVER == r,
                  "%s = \"%.*s\"", k, (int)n, buf);
        /* the last writer of over:r wrote at the last j with j % NOVER == r */
        int last = r + ((iters - 1 - r) / NOVER) * NOVER;
        cr_assert_eq(c, last, "%s written at %d, but every child wrote it last at %d", k, c, last);
        want++;
    }
    /* tmp keys were all deleted by their writers... but a delete by one
     * child may be followed by another's set+delete: all end deleted */
    for (int r = 0; r < 8; r++) {
        char k[16];
        int kl = snprintf(k, sizeof k, "tmp:%d", r);
        t_expect_absent(db, k, (size_t)kl);
    }
    /* once keys: exactly one winner each */
    int nonce = iters < NONCE ? iters : NONCE;
    long long wins = 0;
    for (int i = 0; i < NKIDS; i++) {
        char k[32], buf[32];
        size_t n = 0;
        int kl = snprintf(k, sizeof k, "wins:%d", i);
        T_OK(shmkv_get(db, k, (size_t)kl, buf, sizeof buf - 1, &n, NULL));
        buf[n] = 0;
        wins += atoll(buf);
        want++;
    }
    cr_assert_eq(wins, nonce, "set_if_absent winners %lld, keys %d", wins, nonce);
    for (int r = 0; r < nonce; r++) {
        char k[32];
        unsigned char who = 0xff;
        size_t n = 0;
        int kl = snprintf(k, sizeof k, "once:%d", r);
        T_OK(shmkv_get(db, k, (size_t)kl, &who, 1, &n, NULL));
        cr_assert(n == 1 && who < NKIDS, "once:%d holds %u", r, who);
        want++;
    }
    cr_assert_eq(shmkv_size(db), want, "size %" PRIu64 ", expected %" PRIu64, shmkv_size(db),
                 want);
    t_kvlist l;
    T_OK(t_list_all(db, NULL, 0, 0, SHMKV_LIST_KEYS_ONLY, &l));
    cr_assert_eq(l.n, want, "list gave %zu keys, expected %" PRIu64, l.n, want);
    t_assert_sorted(&l);
    t_kvlist_free(&l);
    shmkv_info info;
    T_OK(shmkv_stat(db, &info));
    cr_assert_eq(info.keys, want);
    t_close(db);
}

Test(multiproc, hammer_disk_tracked, .timeout = 600) { hammer(SHMKV_BACKEND_DISK, true); }
Test(multiproc, hammer_disk_untracked, .timeout = 600) { hammer(SHMKV_BACKEND_DISK, false); }
Test(multiproc, hammer_memory_tracked, .timeout = 600) { hammer(SHMKV_BACKEND_MEMORY, true); }
Test(multiproc, hammer_memory_untracked, .timeout = 600) { hammer(SHMKV_BACKEND_MEMORY, false); }

/* Every child inserts many distinct keys at once, so the region grows and
 * tables rehash while the other processes have it mapped. */
static void grow_together(shmkv_backend be, bool track)
{
    const char *where = t_where(be, "grow");
    shmkv_options o = t_opts(be, track ? SHMKV_TRACK_ON : SHMKV_TRACK_OFF);
    shmkv_db *db = t_open_opts(where, &o);
    int per = (int)t_scaled(25000, 2000);
    int start[2];
    cr_assert(pipe(start) == 0);
    pid_t kids[NKIDS];
    for (int i = 0; i < NKIDS; i++) {
        kids[i] = t_fork();
        if (kids[i] == 0) {
            close(start[1]);
            char b;
            CHILD_CHECK(read(start[0], &b, 1) == 0, "start");
            shmkv_db *d = NULL;
            shmkv_options x = t_opts(be, 0);
            CHILD_OK(shmkv_open(where, &x, &d));
            char k[32], v[160];
            memset(v, 'a' + i, sizeof v);
            for (int j = 0; j < per; j++) {
                int kl = snprintf(k, sizeof k, "g:%d:%d", i, j);
                size_t vl = 16 + (size_t)(j % 128);
                memcpy(v, k, (size_t)kl);
                CHILD_OK(shmkv_set(d, k, (size_t)kl, v, vl, SHMKV_KIND_BYTES));
            }
            for (int j = 0; j < per; j++) {
                int kl = snprintf(k, sizeof k, "g:%d:%d", i, j);
                char buf[160];
                size_t n = 0;
                CHILD_OK(shmkv_get(d, k, (size_t)kl, buf, sizeof buf, &n, NULL));
                CHILD_CHECK(n == 16 + (size_t)(j % 128) && memcmp(buf, k, (size_t)kl) == 0,
                            "value of %s", k);
            }
            CHILD_OK(shmkv_close(d));
            _exit(0);
        }
    }
    close(start[0]);
    close(start[1]);
    for (int i = 0; i < NKIDS; i++)
        t_wait_ok(kids[i], "grower");
    cr_assert_eq(shmkv_size(db), (uint64_t)NKIDS * per);
    char k[32], buf[160];
    for (int i = 0; i < NKIDS; i++) {
        for (int j = 0; j < per; j += 7) {
            int kl = snprintf(k, sizeof k, "g:%d:%d", i, j);
            size_t n = 0;
            T_OK(shmkv_get(db, k, (size_t)kl, buf, sizeof buf, &n, NULL));
            cr_assert(n == 16 + (size_t)(j % 128) && memcmp(buf, k, (size_t)kl) == 0 &&
                          (n <= (size_t)kl || buf[n - 1] == 'a' + i),
                      "value of %s", k);
        }
    }
    if (track) {
        t_kvlist l;
        T_OK(t_list_all(db, "g:1:", 4, 0, SHMKV_LIST_KEYS_ONLY, &l));
        cr_assert_eq(l.n, (size_t)per);
        t_assert_sorted(&l);
        t_kvlist_free(&l);
    }
    t_close(db);
}

Test(multiproc, grow_together_disk, .timeout = 600) { grow_together(SHMKV_BACKEND_DISK, false); }
Test(multiproc, grow_together_memory_tracked, .timeout = 600)
{
    grow_together(SHMKV_BACKEND_MEMORY, true);
}

/* ---- reads without the lock ------------------------------------------------------ */

/* get and exists read a segment without its lock and keep the result only if
 * no writer was in the segment meanwhile. Writers here overwrite a few keys
 * with self-checking values of changing lengths (so blocks of every size
 * class are freed and reused under the readers), and churn thousands of
 * other keys in the same 2 segments (so tables are rehashed and replaced).
 * Readers must never see a torn value, a missing key, or a wrong length;
 * threads in one process, so the TSan build watches it too. */
#define SR_KEYS 16
#define SR_SECONDS 1.5

typedef struct sr_ctx {
    shmkv_db *db;
    int id;
    _Atomic bool stop;
    _Atomic long reads, writes;
    char fail[160];
} sr_ctx;

typedef struct sr_arg {
    sr_ctx *c;
    int id;
} sr_arg;

static size_t sr_value(unsigned char *v, uint64_t r)
{
    size_t n = 1 + (size_t)(r % 300);
    for (size_t i = 0; i < n; i++)
        v[i] = (unsigned char)(n * 31 + i);
    return n;
}

static bool sr_check(const unsigned char *v, size_t n)
{
    if (n < 1 || n > 300)
        return false;
    for (size_t i = 0; i < n; i++)
        if (v[i] != (unsigned char)(n * 31 + i))
            return false;
    return true;
}

static void *sr_writer(void *p)
{
    sr_arg *a = p;
    sr_ctx *c = a->c;
    t_rng r = {0x5eed0000u + (uint64_t)a->id};
    unsigned char v[300];
    char k[32];
    long w = 0;
    while (!atomic_load(&c->stop)) {
        int kl = snprintf(k, sizeof k, "sr:%u", (unsigned)(t_next(&r) % SR_KEYS));
        size_t n = sr_value(v, t_next(&r));
        if (shmkv_set(c->db, k, (size_t)kl, v, n, SHMKV_KIND_BYTES) != 0) {
            snprintf(c->fail, sizeof c->fail, "writer: set %s failed", k);
            break;
        }
        /* churn: grow the tables with a burst of keys, then delete them */
        unsigned base = (unsigned)(w % 64) * 100 + (unsigned)a->id * 100000;
        for (unsigned i = 0; i < 40; i++) {
            kl = snprintf(k, sizeof k, "churn:%u", base + i);
            if (w % 2 == 0)
                shmkv_set(c->db, k, (size_t)kl, v, 8, SHMKV_KIND_BYTES);
            else
                shmkv_delete(c->db, k, (size_t)kl, NULL);
        }
        w++;
    }
    atomic_fetch_add(&c->writes, w);
    return NULL;
}

static void *sr_reader(void *p)
{
    sr_arg *a = p;
    sr_ctx *c = a->c;
    t_rng r = {0xbeef0000u + (uint64_t)a->id};
    unsigned char v[300];
    char k[32];
    long n = 0;
    while (!atomic_load(&c->stop)) {
        int kl = snprintf(k, sizeof k, "sr:%u", (unsigned)(t_next(&r) % SR_KEYS));
        size_t vl = 0;
        shmkv_kind kind = SHMKV_KIND_JSON;
        int rc = shmkv_get(c->db, k, (size_t)kl, v, sizeof v, &vl, &kind);
        if (rc != 0 || kind != SHMKV_KIND_BYTES || !sr_check(v, vl)) {
            snprintf(c->fail, sizeof c->fail, "reader: get %s -> %d, kind %d, %zu bytes%s", k, rc,
                     (int)kind, vl, rc == 0 && !sr_check(v, vl) ? " (torn)" : "");
            atomic_store(&c->stop, true);
            break;
        }
        /* a buffer too small: the length needed, and nothing else */
        rc = shmkv_get(c->db, k, (size_t)kl, v, 0, &vl, NULL);
        if ((rc != 0 && rc != SHMKV_EBUFSIZE) || vl < 1 || vl > 300) {
            snprintf(c->fail, sizeof c->fail, "reader: get %s with no room -> %d, %zu", k, rc, vl);
            atomic_store(&c->stop, true);
            break;
        }
        if (shmkv_exists(c->db, k, (size_t)kl) != 1) {
            snprintf(c->fail, sizeof c->fail, "reader: exists %s is not 1", k);
            atomic_store(&c->stop, true);
            break;
        }
        n++;
    }
    atomic_fetch_add(&c->reads, n);
    return NULL;
}

Test(multiproc, reads_without_lock_never_torn, .timeout = 120)
{
    shmkv_options o = t_opts(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_OFF);
    o.segments = 2;
    static sr_ctx c;
    memset(&c, 0, sizeof c);
    c.db = t_open_opts(t_name("seqread"), &o);
    unsigned char v[300];
    char k[32];
    for (unsigned i = 0; i < SR_KEYS; i++) {
        int kl = snprintf(k, sizeof k, "sr:%u", i);
        t_setb(c.db, k, (size_t)kl, v, sr_value(v, i));
    }
    pthread_t th[4];
    sr_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (sr_arg){&c, i};
        cr_assert_eq(pthread_create(&th[i], NULL, i < 2 ? sr_writer : sr_reader, &args[i]), 0);
    }
    struct timespec ts = {1, (long)((SR_SECONDS - 1) * 1e9)};
    nanosleep(&ts, NULL);
    atomic_store(&c.stop, true);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    cr_log_info("reads without lock: %ld reads, %ld write rounds", (long)c.reads, (long)c.writes);
    cr_assert(c.fail[0] == 0, "%s", c.fail);
    cr_assert_gt(c.reads, 1000, "readers barely ran: %ld reads", (long)c.reads);
    cr_assert_gt(c.writes, 100, "writers barely ran: %ld rounds", (long)c.writes);
    t_close(c.db);
}
