/*
 * test_index_repair.c - a process killed inside a key-index update costs the
 * next user a repair proportional to what the update touched, not a
 * rebuild of the whole index under every lock.
 *
 * For each named point inside an index update (and inside the repair
 * itself), a child inserting or deleting keys SIGKILLs itself there, with
 * its segment lock and the index lock held. Then:
 *   - shmkv-dump --check passes, listing the pending repair;
 *   - the next index user repairs; list() then equals the keys get()
 *     finds, in order; list(prefix) and random_key(prefix) (rank and
 *     select) agree with them; size() too;
 *   - the index was not rebuilt: a rebuild lays the key array out in key
 *     order, while updates leave it in insertion order (keys go in in a
 *     scrambled order), so a sorted key array after the repair means the
 *     whole index was rebuilt;
 *   - after a clean close, --check finds the store sound, nothing pending.
 * The stall (time of the call that repairs) is printed, at 200,000 keys
 * (scaled under sanitizers); tools: index-stall measures it at 1M+.
 */
#include "harness.h"

#include "internal.h"

#include <sys/mman.h>

TestSuite(index_repair, .init = t_setup, .fini = t_teardown, .timeout = 600);

static uint64_t nkeys(void)
{
    uint64_t n = (uint64_t)(200000 * t_scale_heavy());
    return n < 4000 ? 4000 : n;
}

static int key_of(uint64_t i, char *k)
{
    /* scrambled order, so that insertion order is not key order */
    return snprintf(k, 40, "k%c:%012" PRIx64, 'a' + (int)(i % 4), (uint64_t)(t_mix(i) & 0xffffffffffffull));
}

static void run_dump(const char *where, bool expect_pending)
{
    if (!expect_pending) {
        t_dump_sound(where, SHMKV_BACKEND_MEMORY);
        return;
    }
    static char text[32768];
    int rc = t_dump_capture(where, SHMKV_BACKEND_MEMORY, text, sizeof text);
    cr_assert(rc == 0, "shmkv-dump --check failed:\n%s", text);
    cr_assert(strstr(text, "repair: index: an update of key") != NULL,
              "--check should list the index repair:\n%s", text);
}

typedef struct {
    char (*k)[40];
    size_t n, cap;
} keyset;

static int collect(void *ctx, const void *k, size_t kl, const void *v, size_t vl, shmkv_kind kd)
{
    (void)v, (void)vl, (void)kd;
    keyset *s = ctx;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->k = realloc(s->k, s->cap * sizeof *s->k);
        if (!s->k)
            return -1;
    }
    cr_assert(kl < 40);
    memcpy(s->k[s->n], k, kl);
    s->k[s->n][kl] = 0;
    s->n++;
    return 0;
}

static int cmpk(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* The index agrees with the tables for every key in [0, upto) plus the
 * dead writer's key; rank/select through prefixes. */
static void verify(shmkv_db *db, uint64_t upto)
{
    keyset want = {0}, got = {0};
    char k[40];
    for (uint64_t i = 0; i < upto; i++) {
        int kl = key_of(i, k);
        int e = shmkv_exists(db, k, (size_t)kl);
        cr_assert(e == 0 || e == 1);
        if (e)
            collect(&want, k, (size_t)kl, NULL, 0, 0);
    }
    qsort(want.k, want.n, sizeof *want.k, cmpk);
    T_OK(shmkv_list(db, NULL, 0, 0, SHMKV_LIST_KEYS_ONLY, collect, &got));
    cr_assert_eq(got.n, want.n, "list() shows %zu keys, get() finds %zu", got.n, want.n);
    for (size_t i = 0; i < got.n; i++)
        cr_assert_str_eq(got.k[i], want.k[i], "list()[%zu]", i);
    cr_assert_eq(shmkv_size(db), (uint64_t)want.n);
    for (int p = 0; p < 4; p++) {
        char pf[3] = {'k', (char)('a' + p), 0};
        keyset pl = {0};
        size_t in = 0;
        for (size_t i = 0; i < want.n; i++)
            in += strncmp(want.k[i], pf, 2) == 0;
        T_OK(shmkv_list(db, pf, 2, 0, SHMKV_LIST_KEYS_ONLY, collect, &pl));
        cr_assert_eq(pl.n, in, "list(%s) %zu keys, expected %zu", pf, pl.n, in);
        for (int d = 0; d < 20 && in; d++) {
            char kb[40];
            size_t kl = 0;
            T_OK(shmkv_random_key(db, pf, 2, kb, sizeof kb - 1, &kl));
            kb[kl] = 0;
            cr_assert(bsearch(kb, want.k, want.n, sizeof *want.k, cmpk) && strncmp(kb, pf, 2) == 0,
                      "random_key(%s) drew %s", pf, kb);
        }
        free(pl.k);
    }
    free(want.k);
    free(got.k);
}

static bool karr_sorted(shmkv_db *db)
{
    shmkv__map *m = db->m;
    shmkv__index *ix = shmkv__index_of(m);
    shmkv__karr *ka = SHMKV__P(m, ix->karr);
    for (uint64_t i = 1; i < ix->n; i++) {
        const shmkv__kblob *a = SHMKV__P(m, ka->off[i - 1]), *b = SHMKV__P(m, ka->off[i]);
        if (shmkv__keycmp(a->key, a->klen, b->key, b->klen) > 0)
            return false;
    }
    return true;
}

/* A child that inserts keys from `from` on (or deletes from `from` down)
 * and dies at the skip-th hit of point; and, when repair_point is given,
 * a second child that dies there while repairing. */
static volatile uint64_t *g_done; /* shared page: keys the writer started on */

static uint64_t kill_at(const char *where, const char *point, int skip, bool deleting,
                        uint64_t from, const char *repair_point)
{
    if (!g_done) {
        void *pg = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert(pg != MAP_FAILED);
        g_done = pg;
    }
    *g_done = 0;
    pid_t p = t_fork();
    if (p == 0) {
        shmkv_db *d = NULL;
        shmkv_options o;
        memset(&o, 0, sizeof o);
        o.backend = SHMKV_BACKEND_MEMORY;
        CHILD_OK(shmkv_open(where, &o, &d));
        t_hook_kill_at(point, skip);
        char k[40];
        /* a root split may take a few times the store's size to come */
        for (uint64_t i = 0; i < (deleting ? from : 8 * from); i++) {
            *g_done = i + 1;
            int kl = key_of(deleting ? from - 1 - i : from + i, k);
            if (deleting)
                CHILD_OK(shmkv_delete(d, k, (size_t)kl, NULL));
            else
                CHILD_OK(shmkv_set(d, k, (size_t)kl, "v", 1, SHMKV_KIND_STRING));
        }
        _exit(42);
    }
    int st = t_wait(p);
    char b[80];
    cr_assert(WIFSIGNALED(st), "the writer should die at %s: %s", point, t_status_str(st, b, sizeof b));
    uint64_t done = *g_done;
    if (!repair_point)
        return done;
    p = t_fork();
    if (p == 0) {
        shmkv_db *d = NULL;
        shmkv_options o;
        memset(&o, 0, sizeof o);
        o.backend = SHMKV_BACKEND_MEMORY;
        CHILD_OK(shmkv_open(where, &o, &d));
        t_hook_kill_at(repair_point, 0);
        char kb[40];
        size_t kl;
        shmkv_random_key(d, NULL, 0, kb, sizeof kb, &kl); /* takes the index lock */
        _exit(42);
    }
    st = t_wait(p);
    cr_assert(WIFSIGNALED(st), "the repairer should die at %s: %s", repair_point,
              t_status_str(st, b, sizeof b));
    return done;
}

static void one_point_n(const char *point, int skip, bool deleting, const char *repair_point,
                        uint64_t n)
{
    const char *where = t_name("index");
    shmkv_options o;
    memset(&o, 0, sizeof o);
    o.backend = SHMKV_BACKEND_MEMORY;
    o.track_keys = SHMKV_TRACK_ON;
    shmkv_db *db = NULL;
    T_OK(shmkv_open(where, &o, &db));
    char k[40];
    for (uint64_t i = 0; i < n; i++) {
        int kl = key_of(i, k);
        T_OK(shmkv_set(db, k, (size_t)kl, "v", 1, SHMKV_KIND_STRING));
    }
    cr_assert(!karr_sorted(db), "the test needs a key array in insertion order");
    uint64_t done = kill_at(where, point, skip, deleting, n, repair_point);
    run_dump(where, true);
    uint64_t t0 = t_now_ns();
    char kb[40];
    size_t kl;
    T_OK(shmkv_random_key(db, NULL, 0, kb, sizeof kb, &kl)); /* repairs */
    uint64_t us = (t_now_ns() - t0) / 1000;
    cr_assert(!karr_sorted(db),
              "%s: the key array is in key order after the repair: the whole index was rebuilt",
              point);
    verify(db, deleting ? n : n + done);
    fprintf(stderr, "index_repair: %s%s%s: %" PRIu64 " keys, the repairing call took %" PRIu64
            " us\n", point, repair_point ? " then " : "", repair_point ? repair_point : "", n, us);
    run_dump(where, false);
    /* still a working index */
    for (uint64_t i = 0; i < 500; i++) {
        int l = snprintf(k, sizeof k, "after:%04" PRIu64, i);
        T_OK(shmkv_set(db, k, (size_t)l, "v", 1, SHMKV_KIND_STRING));
    }
    keyset a = {0};
    T_OK(shmkv_list(db, "after:", 6, 0, SHMKV_LIST_KEYS_ONLY, collect, &a));
    cr_assert_eq(a.n, 500);
    free(a.k);
    T_OK(shmkv_close(db));
    shmkv_memory_unlink(where);
}

static void one_point(const char *point, int skip, bool deleting, const char *repair_point)
{
    one_point_n(point, skip, deleting, repair_point, nkeys());
}

Test(index_repair, insert_mid)       { one_point("index.insert.mid", 0, false, NULL); }
Test(index_repair, insert_split)     { one_point("index.insert.split", 0, false, NULL); }
/* A root split comes after the tree's size times its fan-out: from a small
 * store, so that it comes soon in every build. */
Test(index_repair, insert_new_root)  { one_point_n("index.insert.new_root", 0, false, NULL, 4000); }
Test(index_repair, insert_karr_grown){ one_point("index.insert.karr_grown", 0, false, NULL); }
Test(index_repair, insert_done)      { one_point("index.insert.done", 0, false, NULL); }
Test(index_repair, insert_published) { one_point("set.after_publish", 3, false, NULL); }
Test(index_repair, remove_mid)       { one_point("index.remove.mid", 0, true, NULL); }
Test(index_repair, remove_merge)     { one_point("index.remove.merge", 2, true, NULL); }
Test(index_repair, remove_done)      { one_point("index.remove.done", 0, true, NULL); }
Test(index_repair, remove_published) { one_point("delete.after_publish", 3, true, NULL); }
Test(index_repair, alloc_in_index)   { one_point("alloc.mid.index", 0, false, NULL); }
Test(index_repair, repairer_killed_after_rollback)
{
    one_point("index.insert.split", 0, false, "index.rolled_back");
}
Test(index_repair, repairer_killed_in_reconcile)
{
    one_point("set.after_publish", 0, false, "index.reconcile");
}

/* The last process closes a disk store while the lock of a process killed
 * inside an index update was never taken again: nobody repaired it, so the
 * store must not be marked clean (the next lone opener resets every lock
 * without repairing a clean store). It must reopen consistent. */
Test(index_repair, dead_owner_then_last_close)
{
    const char *where = t_path("lastclose");
    shmkv_options o;
    memset(&o, 0, sizeof o);
    o.backend = SHMKV_BACKEND_DISK;
    o.track_keys = SHMKV_TRACK_ON;
    shmkv_db *db = NULL;
    T_OK(shmkv_open(where, &o, &db));
    uint64_t n = 4000;
    char k[40];
    for (uint64_t i = 0; i < n; i++) {
        int kl = key_of(i, k);
        T_OK(shmkv_set(db, k, (size_t)kl, "v", 1, SHMKV_KIND_STRING));
    }
    pid_t p = t_fork();
    if (p == 0) {
        shmkv_db *d = NULL;
        shmkv_options c;
        memset(&c, 0, sizeof c);
        CHILD_OK(shmkv_open(where, &c, &d));
        t_hook_kill_at("index.insert.split", 0);
        for (uint64_t i = n; i < 2 * n; i++) {
            int kl = key_of(i, k);
            CHILD_OK(shmkv_set(d, k, (size_t)kl, "v", 1, SHMKV_KIND_STRING));
        }
        _exit(42);
    }
    int st = t_wait(p);
    cr_assert(WIFSIGNALED(st), "the writer should die at index.insert.split");
    T_OK(shmkv_close(db)); /* the last one: nobody took the dead lock */
    db = t_open(where, SHMKV_BACKEND_DISK, SHMKV_TRACK_DEFAULT);
    verify(db, 2 * n);
    T_OK(shmkv_close(db));
    t_dump_sound(where, SHMKV_BACKEND_DISK);
}
