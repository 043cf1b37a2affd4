/*
 * test_growth_concurrent.c - four processes grow one empty store at once.
 *
 * Each process opens the same freshly created store, waits at a common
 * start line, then inserts its own 500,000 keys (disjoint from the
 * others'), so the region grows from its first page to 2,000,000 keys
 * while four processes extend it, rehash their segments and (with key
 * tracking) split the shared index concurrently. Afterwards:
 *   - no process died (in particular not of SIGBUS);
 *   - size() is exactly 2,000,000 and every key holds its own value;
 *   - list() returns exactly the keys, in order; random_key() draws keys
 *     that exist;
 *   - shmkv-dump --check (when $SHMKV_DUMP names it) finds the store sound.
 * The full size runs in the plain build; sanitizer builds run a fraction
 * (t_scale_heavy()), and so does SHMKV_TEST_SCALE.
 */
#include "harness.h"

TestSuite(growth_concurrent, .init = t_setup, .fini = t_teardown, .timeout = 1200);

#define NPROC 4

static uint64_t per_proc(void)
{
    uint64_t n = (uint64_t)(500000.0 * t_scale_heavy());
    return n < 2000 ? 2000 : n;
}

static int gkey(char *k, int p, uint64_t i)
{
    return sprintf(k, "g%d-%08" PRIu64, p, i);
}

static int gval(char *v, int p, uint64_t i)
{
    uint64_t h = t_mix(((uint64_t)p << 40) ^ i);
    return sprintf(v, "v%d:%" PRIu64 ":%016" PRIx64 "%.*s", p, i, h, (int)(h % 24),
                   "........................");
}

static void __attribute__((noreturn))
grower(const char *where, shmkv_backend be, int p, uint64_t n, int startfd)
{
    shmkv_options o;
    memset(&o, 0, sizeof o);
    o.backend = be;
    shmkv_db *db = NULL;
    CHILD_OK(shmkv_open(where, &o, &db));
    char c;
    CHILD_CHECK(read(startfd, &c, 1) == 1, "start line");
    char k[32], v[96];
    for (uint64_t i = 0; i < n; i++) {
        int kl = gkey(k, p, i), vl = gval(v, p, i);
        int rc = shmkv_set(db, k, (size_t)kl, v, (size_t)vl, SHMKV_KIND_STRING);
        CHILD_CHECK(rc == 0, "set(%s) -> %d (%s)", k, rc, shmkv_strerror(rc));
    }
    char got[128];
    for (uint64_t i = 0; i < n; i++) {
        int kl = gkey(k, p, i), vl = gval(v, p, i);
        size_t gl = 0;
        int rc = shmkv_get(db, k, (size_t)kl, got, sizeof got, &gl, NULL);
        CHILD_CHECK(rc == 0 && gl == (size_t)vl && memcmp(got, v, gl) == 0,
                  "own key %s reads back wrong (rc %d)", k, rc);
    }
    CHILD_OK(shmkv_close(db));
    _exit(0);
}

typedef struct lstate {
    char last[32];
    size_t lastlen;
    uint64_t n, bad_order, bad_key;
} lstate;

static int list_cb(void *ctx, const void *k, size_t kl, const void *v, size_t vl, shmkv_kind kind)
{
    (void)v, (void)vl, (void)kind;
    lstate *l = ctx;
    if (kl >= sizeof l->last || ((const char *)k)[0] != 'g') {
        l->bad_key++;
        return 0;
    }
    if (l->n && t_keycmp(l->last, l->lastlen, k, kl) >= 0)
        l->bad_order++;
    memcpy(l->last, k, kl);
    l->lastlen = kl;
    l->n++;
    return 0;
}

static void grow_together(shmkv_backend be, int track)
{
    const char *where = be == SHMKV_BACKEND_MEMORY ? t_name("grow") : t_path("grow");
    uint64_t n = per_proc();
    /* The parent creates the empty store and keeps it open (a memory
     * store must have somebody attached to survive its writers). */
    shmkv_db *db = t_open(where, be, track);
    shmkv_info info;
    T_OK(shmkv_stat(db, &info));
    uint64_t start_bytes = info.file_bytes;

    int go[2];
    cr_assert(pipe(go) == 0);
    pid_t kids[NPROC];
    for (int p = 0; p < NPROC; p++) {
        kids[p] = t_fork();
        if (kids[p] == 0) {
            close(go[1]);
            grower(where, be, p, n, go[0]);
        }
    }
    close(go[0]);
    uint64_t t0 = t_now_ns();
    char ones[NPROC];
    memset(ones, 1, sizeof ones);
    cr_assert(fd_write_all(go[1], ones, sizeof ones) == 0);
    close(go[1]);
    for (int p = 0; p < NPROC; p++) {
        int st = t_wait(kids[p]);
        char b[80];
        cr_assert(!(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS), "grower %d died of SIGBUS", p);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "grower %d: %s (see above)", p,
                  t_status_str(st, b, sizeof b));
    }
    double secs = (double)(t_now_ns() - t0) / 1e9;

    uint64_t total = n * NPROC;
    cr_assert_eq(shmkv_size(db), total, "size() = %" PRIu64 ", expected %" PRIu64, shmkv_size(db),
                 total);
    char k[32], v[96], got[128];
    uint64_t wrong = 0;
    for (int p = 0; p < NPROC; p++)
        for (uint64_t i = 0; i < n; i++) {
            int kl = gkey(k, p, i), vl = gval(v, p, i);
            size_t gl = 0;
            int rc = shmkv_get(db, k, (size_t)kl, got, sizeof got, &gl, NULL);
            if (rc != 0 || gl != (size_t)vl || memcmp(got, v, gl) != 0) {
                if (wrong++ < 5)
                    fprintf(stderr, "growth_concurrent: %s: rc %d, %zu bytes\n", k, rc, gl);
            }
        }
    cr_assert_eq(wrong, 0, "%" PRIu64 " of %" PRIu64 " keys lost or wrong", wrong, total);

    lstate l;
    memset(&l, 0, sizeof l);
    T_OK(shmkv_list(db, NULL, 0, 0, SHMKV_LIST_KEYS_ONLY, list_cb, &l));
    cr_assert_eq(l.bad_key, 0);
    cr_assert_eq(l.bad_order, 0, "list() out of order %" PRIu64 " times", l.bad_order);
    cr_assert_eq(l.n, total, "list() returned %" PRIu64 " keys", l.n);
    /* Without tracking a prefixed draw scans every key (by design), so
     * only a few of those. */
    int prefixed = track == SHMKV_TRACK_ON ? 500 : 5;
    for (int d = 0; d < 1000 + prefixed; d++) {
        char rk[32];
        size_t rl = 0;
        bool pre = d >= 1000;
        T_OK(shmkv_random_key(db, pre ? "g2-" : NULL, pre ? 3 : 0, rk, sizeof rk, &rl));
        cr_assert_eq(shmkv_exists(db, rk, rl), 1, "random_key drew a missing key");
        cr_assert(!pre || (rl > 3 && memcmp(rk, "g2-", 3) == 0), "random_key ignored its prefix");
    }
    T_OK(shmkv_stat(db, &info));
    fprintf(stderr,
            "growth_concurrent: %s, track_keys %s: %d processes grew %" PRIu64 " KiB to %" PRIu64
            " MiB with %" PRIu64 " keys in %.1f s, all verified\n",
            be == SHMKV_BACKEND_MEMORY ? "memory" : "disk", track == SHMKV_TRACK_ON ? "on" : "off",
            NPROC, start_bytes >> 10, info.file_bytes >> 20, total, secs);
    t_dump_check(where, be);
    T_OK(shmkv_close(db));
}

Test(growth_concurrent, memory_untracked)
{
    grow_together(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_OFF);
}

Test(growth_concurrent, disk_tracked)
{
    grow_together(SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
}
