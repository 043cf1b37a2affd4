/*
 * test_crash.c - a process SIGKILLed inside the library leaves a store the
 * next user can repair.
 *
 * Each test: the parent creates a store and preloads keys. A forked child
 * opens the store itself, runs a workload and acknowledges every finished
 * operation on a pipe (a 4-byte operation number). After ARM_AFTER
 * operations it arms shmkv__test_hook; when the library calls the hook with
 * the chosen point name, the child writes a marker to the pipe and sleeps
 * forever. The parent SIGKILLs it there (inside the library's critical
 * section, with its locks held) and then checks, through a fresh open (disk:
 * the store is not open anywhere else, so recovery starts from the file) or
 * through a handle it kept open all along (memory: a memory store with no
 * live process would be discarded):
 *   - every acknowledged operation is visible, with its exact value;
 *   - the operation in flight is either fully old or fully new (and, where
 *     the point's name says which, exactly that one);
 *   - size(), stat().keys and list() agree, and list() shows exactly the
 *     keys get() finds; size() read first thing after the kill (before any
 *     call has locked, and so repaired, the dead process's segment) is
 *     already right;
 *   - with key tracking, random_key() only returns listed keys;
 *   - the store accepts further writes, which list() and size() see.
 * If the child finishes its workload without reaching the point, the test
 * fails: a hook point that is never called is a failure, not a skip.
 *
 * index.* points exist only with key tracking, so they are tested with
 * tracking on; every other point with tracking on and off.
 */
#include "harness.h"
#include "internal.h"

TestSuite(crash, .init = t_setup, .fini = t_teardown, .timeout = 120);

enum wl { W_INSERT, W_OVERWRITE, W_DELETE, W_INCR, W_CLEAR, W_BIG };
enum mode { M_DISK_REOPEN, M_MEMORY_ATTACHED };
enum strict { S_EITHER, S_OLD, S_NEW };

#define NPRE 200
#define ARM_AFTER 40
#define MAX_OPS 30000
#define BIG_VAL (64u << 10)
#define MARK 0xffffffffu

/* ---- workload ------------------------------------------------------------- */

static size_t val_of(enum wl w, int j, char *buf)
{
    size_t n = w == W_BIG ? BIG_VAL + (size_t)(j % 7) : 10 + (size_t)(j * 37 % 300);
    int h = snprintf(buf, 32, "v%d:", j);
    for (size_t i = (size_t)h; i < n; i++)
        buf[i] = (char)('a' + (j + (int)i) % 26);
    return n;
}

static size_t pre_val(int p, char *buf)
{
    return (size_t)snprintf(buf, 32, "pre-value-%d", p);
}

static int max_ops(enum wl w)
{
    switch (w) {
    case W_DELETE:
        return NPRE;
    case W_CLEAR:
        return ARM_AFTER + 1;
    case W_BIG:
        return 3000;
    default:
        return MAX_OPS;
    }
}

static int do_op(shmkv_db *db, enum wl w, int j, char *vbuf)
{
    char k[32];
    int kl;
    switch (w) {
    case W_INSERT:
        kl = snprintf(k, sizeof k, "new:%d", j);
        return shmkv_set(db, k, (size_t)kl, vbuf, val_of(w, j, vbuf), SHMKV_KIND_BYTES);
    case W_BIG:
        kl = snprintf(k, sizeof k, "big:%d", j);
        return shmkv_set(db, k, (size_t)kl, vbuf, val_of(w, j, vbuf), SHMKV_KIND_BYTES);
    case W_OVERWRITE:
        kl = snprintf(k, sizeof k, "pre:%d", j % NPRE);
        return shmkv_set(db, k, (size_t)kl, vbuf, val_of(w, j, vbuf), SHMKV_KIND_BYTES);
    case W_DELETE: {
        kl = snprintf(k, sizeof k, "pre:%d", j);
        int ex = 0;
        int rc = shmkv_delete(db, k, (size_t)kl, &ex);
        return rc ? rc : (ex ? 0 : -1000);
    }
    case W_INCR:
        return shmkv_incr(db, "ctr", 3, 1, SHMKV_KIND_STRING, NULL);
    case W_CLEAR:
        if (j < ARM_AFTER) {
            kl = snprintf(k, sizeof k, "new:%d", j);
            return shmkv_set(db, k, (size_t)kl, vbuf, val_of(W_INSERT, j, vbuf), SHMKV_KIND_BYTES);
        }
        return shmkv_clear(db);
    }
    return -1;
}

/* ---- model ---------------------------------------------------------------- */

typedef struct {
    int pre[NPRE];       /* -2 absent, -1 preload value, j: value of op j */
    unsigned char *newk; /* new:j present */
    unsigned char *bigk; /* big:j present */
    long ctr;            /* -1: absent */
} model;

static void model_init(model *m, int nops)
{
    for (int p = 0; p < NPRE; p++)
        m->pre[p] = -1;
    m->newk = calloc((size_t)nops + 1, 1);
    m->bigk = calloc((size_t)nops + 1, 1);
    cr_assert(m->newk && m->bigk);
    m->ctr = -1;
}

static void model_copy(model *d, const model *s, int nops)
{
    model_init(d, nops);
    memcpy(d->pre, s->pre, sizeof d->pre);
    memcpy(d->newk, s->newk, (size_t)nops + 1);
    memcpy(d->bigk, s->bigk, (size_t)nops + 1);
    d->ctr = s->ctr;
}

static void model_free(model *m)
{
    free(m->newk);
    free(m->bigk);
}

static void model_apply(model *m, enum wl w, int j)
{
    switch (w) {
    case W_INSERT:
        m->newk[j] = 1;
        break;
    case W_BIG:
        m->bigk[j] = 1;
        break;
    case W_OVERWRITE:
        m->pre[j % NPRE] = j;
        break;
    case W_DELETE:
        m->pre[j] = -2;
        break;
    case W_INCR:
        m->ctr = m->ctr < 0 ? 1 : m->ctr + 1;
        break;
    case W_CLEAR:
        if (j < ARM_AFTER) {
            m->newk[j] = 1;
        } else {
            for (int p = 0; p < NPRE; p++)
                m->pre[p] = -2;
            memset(m->newk, 0, (size_t)j + 1);
            m->ctr = -1;
        }
        break;
    }
}

/* Expected value of key in model: returns false if absent; fills buf. */
static bool model_value(const model *m, enum wl w, const char *k, char *buf, size_t *vl)
{
    int x;
    if (sscanf(k, "pre:%d", &x) == 1) {
        if (m->pre[x] == -2)
            return false;
        *vl = m->pre[x] == -1 ? pre_val(x, buf) : val_of(W_OVERWRITE, m->pre[x], buf);
        return true;
    }
    if (sscanf(k, "new:%d", &x) == 1) {
        if (!m->newk[x])
            return false;
        *vl = val_of(W_INSERT, x, buf);
        return true;
    }
    if (sscanf(k, "big:%d", &x) == 1) {
        if (!m->bigk[x])
            return false;
        *vl = val_of(W_BIG, x, buf);
        return true;
    }
    if (strcmp(k, "ctr") == 0) {
        if (m->ctr < 0)
            return false;
        *vl = (size_t)snprintf(buf, 32, "%ld", m->ctr);
        return true;
    }
    (void)w;
    return false;
}

/* ---- the child ------------------------------------------------------------ */

static void child(const char *where, shmkv_backend be, enum wl w, const char *point, int fd)
{
    shmkv_db *db = NULL;
    shmkv_options o = t_opts(be, SHMKV_TRACK_DEFAULT);
    CHILD_OK(shmkv_open(where, &o, &db));
    char *vbuf = malloc(BIG_VAL + 64);
    CHILD_CHECK(vbuf != NULL, "malloc");
    int n = max_ops(w);
    for (int j = 0; j < n; j++) {
        if (j == ARM_AFTER)
            t_hook_park_at(point, fd, MARK);
        int rc = do_op(db, w, j, vbuf);
        CHILD_CHECK(rc == 0, "op %d -> %d (%s)", j, rc, shmkv_strerror(rc));
        uint32_t a = (uint32_t)j;
        CHILD_CHECK(fd_write_all(fd, &a, sizeof a) == 0, "ack");
    }
    /* the point was never reached */
    _exit(42);
}

/* ---- checks --------------------------------------------------------------- */

typedef struct {
    const char *point;
    enum wl w;
    int track;
    enum mode mode;
    enum strict strict;
} scenario;

/* Keys the state before / after the interrupted operation holds, among
 * those check_key looked at: a whole-store operation (clear) must leave one
 * of the two states for every key at once, not a key-by-key mix. */
static uint64_t g_in_old, g_in_new;

static void check_key(shmkv_db *db, const scenario *sc, const model *m0, const model *m1,
                      const char *k, uint64_t *present)
{
    static char want0[BIG_VAL + 64], want1[BIG_VAL + 64], got[BIG_VAL + 64];
    size_t l0 = 0, l1 = 0, gl = 0;
    bool p0 = model_value(m0, sc->w, k, want0, &l0);
    bool p1 = model_value(m1, sc->w, k, want1, &l1);
    int rc = shmkv_get(db, k, strlen(k), got, sizeof got, &gl, NULL);
    cr_assert(rc == 0 || rc == SHMKV_ENOTFOUND, "get(%s) -> %d (%s)", k, rc, shmkv_strerror(rc));
    bool has = rc == 0;
    bool is0 = has == p0 && (!has || (gl == l0 && memcmp(got, want0, gl) == 0));
    bool is1 = has == p1 && (!has || (gl == l1 && memcmp(got, want1, gl) == 0));
    const char *shown = has ? t_show(got, gl < 40 ? gl : 40) : "(absent)";
    switch (sc->strict) {
    case S_OLD:
        cr_assert(is0, "%s: %s = %s; expected the state before the interrupted operation (%s)",
                  sc->point, k, shown, p0 ? t_show(want0, l0 < 40 ? l0 : 40) : "absent");
        break;
    case S_NEW:
        cr_assert(is1, "%s: %s = %s; expected the state after the interrupted operation (%s)",
                  sc->point, k, shown, p1 ? t_show(want1, l1 < 40 ? l1 : 40) : "absent");
        break;
    default:
        cr_assert(is0 || is1, "%s: %s = %s; expected %s or %s", sc->point, k, shown,
                  p0 ? t_show(want0, l0 < 40 ? l0 : 40) : "absent",
                  p1 ? t_show(want1, l1 < 40 ? l1 : 40) : "absent");
    }
    if (has)
        (*present)++;
    g_in_old += p0;
    g_in_new += p1;
    cr_assert_eq(shmkv_exists(db, k, strlen(k)), has ? 1 : 0, "exists(%s) disagrees with get", k);
}

static bool listed(const t_kvlist *l, const void *k, size_t kl)
{
    size_t lo = 0, hi = l->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = t_keycmp(l->a[mid].k, l->a[mid].kl, k, kl);
        if (c == 0)
            return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

static void check_consistent(shmkv_db *db, const scenario *sc, const char *when)
{
    t_kvlist l;
    T_OK(t_list_all(db, NULL, 0, 0, SHMKV_LIST_KEYS_ONLY, &l));
    t_assert_sorted(&l);
    uint64_t size = shmkv_size(db);
    shmkv_info info;
    T_OK(shmkv_stat(db, &info));
    size_t n = l.n;
    /* every listed key exists */
    for (size_t i = 0; i < l.n; i++) {
        int e = shmkv_exists(db, l.a[i].k, l.a[i].kl);
        if (e != 1) {
            char shown[200];
            snprintf(shown, sizeof shown, "%s", t_show(l.a[i].k, l.a[i].kl));
            t_kvlist_free(&l);
            cr_assert_fail("%s %s: listed key %s does not exist (%d)", sc->point, when, shown, e);
        }
    }
    if (sc->track == SHMKV_TRACK_ON) {
        for (int d = 0; d < 300; d++) {
            char kb[64];
            size_t kl = 0;
            int rc = shmkv_random_key(db, NULL, 0, kb, sizeof kb, &kl);
            if (n == 0) {
                cr_assert_eq(rc, SHMKV_ENOTFOUND, "%s %s: random_key on an empty list -> %d",
                             sc->point, when, rc);
                break;
            }
            cr_assert_eq(rc, 0, "%s %s: random_key -> %d (%s)", sc->point, when, rc,
                         shmkv_strerror(rc));
            bool in = listed(&l, kb, kl);
            if (!in) {
                t_kvlist_free(&l);
                cr_assert_fail("%s %s: random_key returned %s, which list() does not show",
                               sc->point, when, t_show(kb, kl));
            }
        }
    }
    t_kvlist_free(&l);
    cr_assert_eq(size, (uint64_t)n, "%s %s: size() = %" PRIu64 " but list() shows %zu keys",
                 sc->point, when, size, n);
    cr_assert_eq(info.keys, (uint64_t)n, "%s %s: stat keys = %" PRIu64 ", list() %zu", sc->point,
                 when, info.keys, n);
}

static void verify(shmkv_db *db, const scenario *sc, int acked, uint64_t size_first)
{
    int nops = max_ops(sc->w);
    model m0, m1;
    model_init(&m0, nops);
    for (int j = 0; j < acked; j++)
        model_apply(&m0, sc->w, j);
    model_copy(&m1, &m0, nops);
    if (acked < nops)
        model_apply(&m1, sc->w, acked);

    uint64_t present = 0;
    g_in_old = g_in_new = 0;
    char k[32];
    for (int p = 0; p < NPRE; p++) {
        snprintf(k, sizeof k, "pre:%d", p);
        check_key(db, sc, &m0, &m1, k, &present);
    }
    for (int j = 0; j <= acked && j < nops; j++) {
        if (sc->w == W_INSERT || sc->w == W_CLEAR) {
            snprintf(k, sizeof k, "new:%d", j);
            check_key(db, sc, &m0, &m1, k, &present);
        }
        if (sc->w == W_BIG) {
            snprintf(k, sizeof k, "big:%d", j);
            check_key(db, sc, &m0, &m1, k, &present);
        }
    }
    check_key(db, sc, &m0, &m1, "ctr", &present);
    model_free(&m0);
    model_free(&m1);
    if (sc->w == W_CLEAR)
        cr_assert(present == g_in_old || present == g_in_new,
                  "%s: a killed clear() left %" PRIu64 " keys: neither all %" PRIu64
                  " of before nor the %" PRIu64 " of after",
                  sc->point, present, g_in_old, g_in_new);

    /* size() is lock-free; read before anything else touched the dead
     * process's segment it must still be the number of keys */
    cr_assert_eq(size_first, present,
                 "%s: size() read first after the kill was %" PRIu64 ", but the store holds %" PRIu64
                 " keys",
                 sc->point, size_first, present);

    /* list shows exactly what get finds: nothing else, nothing less */
    t_kvlist l;
    T_OK(t_list_all(db, NULL, 0, 0, 0, &l));
    size_t n = l.n;
    t_kvlist_free(&l);
    cr_assert_eq((uint64_t)n, present,
                 "%s: list() shows %zu keys but get() finds %" PRIu64 " of the expected ones",
                 sc->point, n, present);
    check_consistent(db, sc, "after recovery");
}

static void further_writes(shmkv_db *db, const scenario *sc)
{
    uint64_t before = shmkv_size(db);
    t_set(db, "after:a", "1");
    t_set(db, "after:b", "2");
    int64_t r = 0;
    T_OK(shmkv_incr(db, "after:ctr", 9, 5, SHMKV_KIND_STRING, &r));
    cr_assert_eq(r, 5);
    /* many more, to run through rehash and allocation again */
    char k[32], v[64];
    for (int i = 0; i < 500; i++) {
        int kl = snprintf(k, sizeof k, "after:%d", i);
        int vl = snprintf(v, sizeof v, "value %d", i);
        T_OK(shmkv_set(db, k, (size_t)kl, v, (size_t)vl, SHMKV_KIND_STRING));
    }
    for (int i = 0; i < 500; i += 2) {
        int kl = snprintf(k, sizeof k, "after:%d", i);
        int ex = 0;
        T_OK(shmkv_delete(db, k, (size_t)kl, &ex));
        cr_assert_eq(ex, 1);
    }
    t_expect_str(db, "after:a", "1");
    t_expect_str(db, "after:ctr", "5");
    t_expect_str(db, "after:499", "value 499");
    cr_assert_eq(shmkv_size(db), before + 3 + 250, "%s: size after further writes", sc->point);
    check_consistent(db, sc, "after further writes");
    if (sc->track == SHMKV_TRACK_ON) {
        T_OK(shmkv_rebuild_index(db));
        check_consistent(db, sc, "after rebuild_index");
    }
}

static void run(const scenario *sc)
{
    shmkv_backend be = sc->mode == M_DISK_REOPEN ? SHMKV_BACKEND_DISK : SHMKV_BACKEND_MEMORY;
    const char *where = t_where(be, "crash");
    shmkv_options o = t_opts(be, sc->track);
    o.segments = 16;
    shmkv_db *db = t_open_opts(where, &o);
    char v[32], k[32];
    for (int p = 0; p < NPRE; p++) {
        int kl = snprintf(k, sizeof k, "pre:%d", p);
        T_OK(shmkv_set(db, k, (size_t)kl, v, pre_val(p, v), SHMKV_KIND_BYTES));
    }
    if (sc->mode == M_DISK_REOPEN) {
        t_close(db);
        db = NULL;
    }

    int fds[2];
    cr_assert(pipe(fds) == 0);
    pid_t pid = t_fork();
    if (pid == 0) {
        close(fds[0]);
        child(where, be, sc->w, sc->point, fds[1]);
        _exit(0);
    }
    close(fds[1]);
    int acked = 0;
    bool reached = false;
    for (;;) {
        uint32_t rec;
        ssize_t r = fd_read_all(fds[0], &rec, sizeof rec);
        if (r != (ssize_t)sizeof rec)
            break;
        if (rec == MARK) {
            reached = true;
            break;
        }
        cr_assert_eq(rec, (uint32_t)acked, "acknowledgements out of order");
        acked++;
    }
    close(fds[0]);
    if (!reached) {
        int st = t_wait(pid);
        char b[96];
        cr_assert_fail("hook point \"%s\" was never reached: the child acknowledged %d operations "
                       "and %s (42: workload finished without reaching it)",
                       sc->point, acked, t_status_str(st, b, sizeof b));
    }
    cr_assert(acked >= ARM_AFTER, "hook fired before it was armed");
    t_kill(pid);
    cr_log_info("%s: killed after %d acknowledged operations", sc->point, acked);

    if (!db)
        db = t_open(where, be, SHMKV_TRACK_DEFAULT);
    uint64_t size_first = shmkv_size(db);
    verify(db, sc, acked, size_first);
    further_writes(db, sc);
    uint64_t size = shmkv_size(db);
    t_close(db);
    if (sc->mode == M_DISK_REOPEN) {
        db = t_open(where, be, SHMKV_TRACK_DEFAULT);
        cr_assert_eq(shmkv_size(db), size, "%s: size changed across close/reopen", sc->point);
        check_consistent(db, sc, "after reopen");
        t_close(db);
    }
}

/* One test: a point and workload under one tracking mode and store mode. */
#define CRASH1(name, point, w, track, mode, strict)                                            \
    Test(crash, name)                                                                          \
    {                                                                                          \
        scenario sc = {point, w, track, mode, strict};                                         \
        run(&sc);                                                                              \
    }

/* index.* points are only reached with key tracking: disk store reopened
 * after the kill, memory store kept open by the parent. */
#define CRASH2(name, point, w, strict)                                                         \
    CRASH1(name##_tracked_disk, point, w, SHMKV_TRACK_ON, M_DISK_REOPEN, strict)               \
    CRASH1(name##_tracked_memory, point, w, SHMKV_TRACK_ON, M_MEMORY_ATTACHED, strict)

/* Every other point: the same, with key tracking on and off. */
#define CRASH4(name, point, w, strict)                                                         \
    CRASH2(name, point, w, strict)                                                             \
    CRASH1(name##_untracked_disk, point, w, SHMKV_TRACK_OFF, M_DISK_REOPEN, strict)            \
    CRASH1(name##_untracked_memory, point, w, SHMKV_TRACK_OFF, M_MEMORY_ATTACHED, strict)

CRASH4(set_before_publish_insert, "set.before_publish", W_INSERT, S_OLD)
CRASH4(set_before_publish_overwrite, "set.before_publish", W_OVERWRITE, S_OLD)
CRASH4(set_after_publish_insert, "set.after_publish", W_INSERT, S_NEW)
CRASH4(set_after_publish_overwrite, "set.after_publish", W_OVERWRITE, S_NEW)
CRASH4(delete_after_publish, "delete.after_publish", W_DELETE, S_NEW)
CRASH4(rehash_before_publish, "rehash.before_publish", W_INSERT, S_EITHER)
CRASH4(rehash_after_publish, "rehash.after_publish", W_INSERT, S_EITHER)
CRASH4(alloc_mid_insert, "alloc.mid", W_INSERT, S_EITHER)
CRASH4(alloc_mid_overwrite, "alloc.mid", W_OVERWRITE, S_EITHER)
CRASH4(grow_after_fallocate, "grow.after_fallocate", W_BIG, S_EITHER)
CRASH4(clear_before_commit, "clear.before_commit", W_CLEAR, S_OLD)
CRASH4(clear_mid, "clear.mid", W_CLEAR, S_NEW)
CRASH4(clear_segments_done, "clear.segments_done", W_CLEAR, S_NEW)
CRASH4(incr_before_publish, "incr.before_publish", W_INCR, S_OLD)
CRASH2(index_insert_mid, "index.insert.mid", W_INSERT, S_EITHER)
CRASH2(index_remove_mid, "index.remove.mid", W_DELETE, S_EITHER)
/* Every write of an index update is undone by the next locker (the slot is
 * published only after the index changed, so each leaves the old state). */
CRASH2(index_insert_split, "index.insert.split", W_INSERT, S_OLD)
CRASH2(index_insert_new_root, "index.insert.new_root", W_INSERT, S_OLD)
CRASH2(index_insert_karr_grown, "index.insert.karr_grown", W_INSERT, S_OLD)
CRASH2(index_insert_done, "index.insert.done", W_INSERT, S_OLD)
CRASH2(index_remove_merge, "index.remove.merge", W_DELETE, S_OLD)
CRASH2(index_remove_done, "index.remove.done", W_DELETE, S_OLD)

/* A kill at a point no other process is waiting on, followed by two
 * processes that race to take the dead owner's locks: both must see a
 * consistent store. */
Test(crash, two_processes_race_to_recover)
{
    scenario sc = {"set.before_publish", W_INSERT, SHMKV_TRACK_ON, M_MEMORY_ATTACHED, S_OLD};
    const char *where = t_name("race");
    shmkv_options o = t_opts(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_ON);
    o.segments = 1; /* every key in the dead owner's segment */
    shmkv_db *db = t_open_opts(where, &o);
    int fds[2];
    cr_assert(pipe(fds) == 0);
    pid_t pid = t_fork();
    if (pid == 0) {
        close(fds[0]);
        child(where, SHMKV_BACKEND_MEMORY, W_INSERT, sc.point, fds[1]);
        _exit(0);
    }
    close(fds[1]);
    int acked = 0;
    bool reached = false;
    uint32_t rec;
    while (fd_read_all(fds[0], &rec, sizeof rec) == (ssize_t)sizeof rec) {
        if (rec == MARK) {
            reached = true;
            break;
        }
        acked++;
    }
    close(fds[0]);
    cr_assert(reached, "set.before_publish never reached");
    t_kill(pid);

    int go[2];
    cr_assert(pipe(go) == 0);
    pid_t r[2];
    for (int c = 0; c < 2; c++) {
        r[c] = t_fork();
        if (r[c] == 0) {
            close(go[1]);
            shmkv_db *d = NULL;
            shmkv_options x = t_opts(SHMKV_BACKEND_MEMORY, 0);
            CHILD_OK(shmkv_open(where, &x, &d));
            char b;
            CHILD_CHECK(read(go[0], &b, 1) == 0, "go");
            for (int i = 0; i < 200; i++) {
                char k[32];
                int kl = snprintf(k, sizeof k, "racer%d:%d", c, i);
                CHILD_OK(shmkv_set(d, k, (size_t)kl, "x", 1, SHMKV_KIND_STRING));
            }
            CHILD_OK(shmkv_close(d));
            _exit(0);
        }
    }
    close(go[0]);
    close(go[1]);
    t_wait_ok(r[0], "racer 0");
    t_wait_ok(r[1], "racer 1");
    cr_assert_eq(shmkv_size(db), (uint64_t)acked + 400,
                 "size %" PRIu64 ", expected %d acknowledged + 400", shmkv_size(db), acked);
    check_consistent(db, &sc, "after racing recovery");
    t_close(db);
}
