/*
 * test_readonly.c - read-only opens (issue 10): they need only read
 * permission, write nothing, and read correctly without taking a lock.
 *
 *  - a store made readable for another user (mode 0644) can be opened
 *    read-only by that user (a child that drops to nobody; without root,
 *    the file is made 0444 instead), who reads every value, the size, the
 *    listing and random keys, and is refused every write; a read-write open
 *    by that user is -EACCES; the store's bytes and mtime do not change;
 *  - a read-only process reads values that another process overwrites all
 *    the time, and never sees a torn, missing or mis-sized one;
 *  - a writer killed inside a critical section (its segment lock's owner
 *    died, seq left odd) does not stop a read-only reader of that segment
 *    while other writers are attached: it reads the last published value.
 */
#include "harness.h"

#include "internal.h" /* shmkv__test_hook */

#include <grp.h>

TestSuite(readonly, .init = t_setup, .fini = t_teardown, .timeout = 120);

#define NKEYS 300

static shmkv_options opts(shmkv_backend be, int track, uint32_t flags)
{
    shmkv_options o;
    memset(&o, 0, sizeof o);
    o.backend = be;
    o.track_keys = track;
    o.flags = flags;
    return o;
}

static int list_count(void *ctx, const void *k, size_t kl, const void *v, size_t vl, shmkv_kind kind)
{
    (void)kind;
    uint64_t *n = ctx;
    char want[16];
    int wl = snprintf(want, sizeof want, "k%03" PRIu64, *n);
    if ((size_t)wl != kl || memcmp(k, want, kl) != 0)
        return 2; /* out of order or unknown */
    if (v && (vl != 4 || memcmp(v, "v", 1) != 0 || memcmp((const char *)v + 1, want + 1, 3) != 0))
        return 3;
    ++*n;
    return 0;
}

static int list_prefix_count(void *ctx, const void *k, size_t kl, const void *v, size_t vl,
                             shmkv_kind kind)
{
    (void)v, (void)vl, (void)kind;
    if (kl < 2 || memcmp(k, "k1", 2) != 0)
        return 2;
    ++*(uint64_t *)ctx;
    return 0;
}

/* ---- batches, scan, count and sampling without locks (issue 12) ---------- */

/* Collects what scan and random_keys hand out. */
typedef struct seen {
    char keys[1200][16];
    char vals[1200][8];
    int n;
    bool valued;
} seen;

static int seen_cb(void *ctx, const void *k, size_t kl, const void *v, size_t vl, shmkv_kind kind)
{
    (void)kind;
    seen *s = ctx;
    if (s->n >= 1200 || kl >= 16 || (v && vl >= 8))
        return 7;
    memcpy(s->keys[s->n], k, kl);
    s->keys[s->n][kl] = 0;
    s->vals[s->n][0] = 0;
    if (v) {
        memcpy(s->vals[s->n], v, vl);
        s->vals[s->n][vl] = 0;
    }
    s->valued |= v != NULL;
    s->n++;
    return 0;
}

/* The read-only calls of many keys on the store kid_reader reads: keys
 * k000..k299, values v000..v299. */
static void ro_many_checks(shmkv_db *db)
{
    /* get_many: every 7th key, a missing one, a repeated one */
    shmkv_item it[48];
    char ks[48][16];
    size_t n = 0;
    for (int i = 0; i < NKEYS; i += 7, n++) {
        snprintf(ks[n], sizeof ks[n], "k%03d", i);
        it[n] = (shmkv_item){.key = ks[n], .klen = 4};
    }
    it[n++] = (shmkv_item){.key = "nope", .klen = 4};
    it[n++] = (shmkv_item){.key = "k005", .klen = 4};
    char buf[256];
    size_t need = 0;
    int rc = shmkv_get_many(db, it, n, buf, sizeof buf, &need, NULL);
    CHILD_CHECK(rc == 0 && need == 4 * (n - 1), "get_many -> %d (%s), need %zu", rc,
              shmkv_strerror(rc), need);
    for (size_t i = 0; i < n; i++) {
        const char *k = it[i].key;
        if (strcmp(k, "nope") == 0) {
            CHILD_CHECK(it[i].rc == SHMKV_ENOTFOUND, "get_many(nope).rc = %d", it[i].rc);
            continue;
        }
        CHILD_CHECK(it[i].rc == 0 && it[i].vlen == 4 && it[i].val && ((const char *)it[i].val)[0] == 'v' &&
                      memcmp((const char *)it[i].val + 1, k + 1, 3) == 0,
                  "get_many(%s): rc %d, %zu bytes", k, it[i].rc, it[i].vlen);
    }
    rc = shmkv_get_many(db, it, n, buf, 8, &need, NULL);
    CHILD_CHECK(rc == SHMKV_EBUFSIZE && need == 4 * (n - 1), "get_many, small buffer -> %d", rc);

    /* scan: pages of 37 after a cursor, values too: every key once, in order */
    static seen sn;
    memset(&sn, 0, sizeof sn);
    char after[16] = "";
    for (int page = 0; page < 20; page++) {
        int before = sn.n;
        rc = shmkv_scan(db, NULL, 0, after, strlen(after), 37, 0, seen_cb, &sn);
        CHILD_CHECK(rc == 0, "scan page %d -> %d (%s)", page, rc, shmkv_strerror(rc));
        if (sn.n == before)
            break;
        strcpy(after, sn.keys[sn.n - 1]);
    }
    CHILD_CHECK(sn.n == NKEYS, "paged scan gave %d keys", sn.n);
    for (int i = 0; i < sn.n; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%03d", i);
        CHILD_CHECK(strcmp(sn.keys[i], k) == 0 && sn.vals[i][0] == 'v' &&
                      strcmp(sn.vals[i] + 1, k + 1) == 0,
                  "scan #%d: %s=%s", i, sn.keys[i], sn.vals[i]);
    }
    memset(&sn, 0, sizeof sn);
    rc = shmkv_scan(db, "k2", 2, "k249", 4, 0, SHMKV_LIST_KEYS_ONLY, seen_cb, &sn);
    CHILD_CHECK(rc == 0 && sn.n == 50 && !sn.valued && strcmp(sn.keys[0], "k250") == 0 &&
                  strcmp(sn.keys[49], "k299") == 0,
              "scan(k2 after k249) -> %d, %d keys", rc, sn.n);

    /* count */
    const char *pfx[] = {"", "k1", "k29", "zz"};
    const uint64_t want[] = {NKEYS, 100, 10, 0};
    for (int i = 0; i < 4; i++) {
        uint64_t c = 99999;
        rc = shmkv_count(db, pfx[i], strlen(pfx[i]), &c);
        CHILD_CHECK(rc == 0 && c == want[i], "count(%s) -> %d, %" PRIu64, pfx[i], rc, c);
    }

    /* random_keys: distinct and all matching, or every match when fewer */
    memset(&sn, 0, sizeof sn);
    rc = shmkv_random_keys(db, NULL, 0, 50, 1, seen_cb, &sn);
    CHILD_CHECK(rc == 0 && sn.n == 50, "random_keys(50 unique) -> %d, %d keys", rc, sn.n);
    for (int i = 0; i < sn.n; i++) {
        int v = -1;
        CHILD_CHECK(sscanf(sn.keys[i], "k%3d", &v) == 1 && v >= 0 && v < NKEYS && !sn.valued,
                  "random key %s", sn.keys[i]);
        for (int j = 0; j < i; j++)
            CHILD_CHECK(strcmp(sn.keys[i], sn.keys[j]) != 0, "%s drawn twice", sn.keys[i]);
    }
    memset(&sn, 0, sizeof sn);
    rc = shmkv_random_keys(db, "k1", 2, 500, 1, seen_cb, &sn);
    CHILD_CHECK(rc == 0 && sn.n == 100, "random_keys(k1, 500 unique) -> %d, %d keys", rc, sn.n);
    memset(&sn, 0, sizeof sn);
    rc = shmkv_random_keys(db, "k2", 2, 30, 0, seen_cb, &sn);
    CHILD_CHECK(rc == 0 && sn.n == 30, "random_keys(k2, 30) -> %d, %d keys", rc, sn.n);
    for (int i = 0; i < sn.n; i++)
        CHILD_CHECK(strncmp(sn.keys[i], "k2", 2) == 0 && strlen(sn.keys[i]) == 4, "random key %s",
                  sn.keys[i]);

    /* the writes of many keys stay refused */
    shmkv_item w = {.key = "k000", .klen = 4, .val = "x", .vlen = 1, .kind = SHMKV_KIND_STRING};
    uint64_t del = 0;
    CHILD_CHECK(shmkv_set_many(db, &w, 1, NULL) == SHMKV_EREADONLY, "set_many");
    CHILD_CHECK(shmkv_delete_many(db, &w, 1, &del, NULL) == SHMKV_EREADONLY, "delete_many");
    CHILD_CHECK(shmkv_delete_prefix(db, "k", 1, 0, &del) == SHMKV_EREADONLY, "delete_prefix");
}

/* In a child that may only read the store. */
static void __attribute__((noreturn)) kid_reader(const char *where, shmkv_backend be, int track)
{
    shmkv_options rw = opts(be, 0, 0), ro = opts(be, 0, SHMKV_RDONLY);
    shmkv_db *db = NULL;
    int rc = shmkv_open(where, &rw, &db);
    CHILD_CHECK(rc == -EACCES, "read-write open without write permission -> %d (%s)", rc,
              shmkv_strerror(rc));
    rc = shmkv_open(where, &ro, &db);
    CHILD_CHECK(rc == 0, "read-only open with read permission -> %d (%s)", rc, shmkv_strerror(rc));
    for (int i = 0; i < NKEYS; i++) {
        char k[16], v[16], got[16];
        int kl = snprintf(k, sizeof k, "k%03d", i);
        snprintf(v, sizeof v, "v%03d", i);
        size_t gl = 0;
        rc = shmkv_get(db, k, (size_t)kl, got, sizeof got, &gl, NULL);
        CHILD_CHECK(rc == 0 && gl == 4 && memcmp(got, v, 4) == 0, "get(%s) -> %d", k, rc);
        CHILD_CHECK(shmkv_exists(db, k, (size_t)kl) == 1, "exists(%s)", k);
    }
    CHILD_CHECK(shmkv_exists(db, "nope", 4) == 0, "exists(nope)");
    size_t gl = 0;
    char got[16];
    rc = shmkv_get(db, "nope", 4, got, sizeof got, &gl, NULL);
    CHILD_CHECK(rc == SHMKV_ENOTFOUND, "get(nope) -> %d", rc);
    CHILD_CHECK(shmkv_size(db) == NKEYS, "size() = %" PRIu64, shmkv_size(db));
    uint64_t n = 0;
    rc = shmkv_list(db, NULL, 0, 0, 0, list_count, &n);
    CHILD_CHECK(rc == 0 && n == NKEYS, "list -> %d after %" PRIu64 " keys", rc, n);
    n = 0;
    rc = shmkv_list(db, "k1", 2, 0, SHMKV_LIST_KEYS_ONLY, list_prefix_count, &n);
    CHILD_CHECK(rc == 0 && n == 100, "list(k1) -> %d, %" PRIu64 " keys", rc, n);
    n = 0;
    rc = shmkv_list(db, NULL, 0, 10, 0, list_count, &n);
    CHILD_CHECK(rc == 0 && n == 10, "list(limit 10) -> %d, %" PRIu64 " keys", rc, n);
    for (int d = 0; d < 100; d++) {
        char k[16];
        size_t kl = 0;
        rc = shmkv_random_key(db, d & 1 ? "k2" : NULL, d & 1 ? 2 : 0, k, sizeof k, &kl);
        CHILD_CHECK(rc == 0 && kl == 4 && k[0] == 'k' && (!(d & 1) || k[1] == '2'),
                  "random_key -> %d", rc);
    }
    char k[16];
    size_t kl = 0;
    rc = shmkv_random_key(db, "zz", 2, k, sizeof k, &kl);
    CHILD_CHECK(rc == SHMKV_ENOTFOUND, "random_key(zz) -> %d", rc);
    shmkv_info info;
    CHILD_OK(shmkv_stat(db, &info));
    CHILD_CHECK(info.keys == NKEYS && info.track_keys == (track == SHMKV_TRACK_ON), "stat");
    int flag = 0;
    CHILD_CHECK(shmkv_set(db, "k000", 4, "x", 1, SHMKV_KIND_STRING) == SHMKV_EREADONLY, "set");
    CHILD_CHECK(shmkv_delete(db, "k000", 4, &flag) == SHMKV_EREADONLY, "delete");
    CHILD_CHECK(shmkv_clear(db) == SHMKV_EREADONLY, "clear");
    /* tracked: it would take the locks; untracked: nothing to rebuild */
    rc = shmkv_rebuild_index(db);
    CHILD_CHECK(rc == (track == SHMKV_TRACK_ON ? SHMKV_EREADONLY : 0), "rebuild_index -> %d", rc);
    ro_many_checks(db);
    CHILD_OK(shmkv_close(db));
    _exit(0);
}

static unsigned char *slurp(const char *p, size_t *n)
{
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    cr_assert(fd >= 0, "open(%s): %s", p, strerror(errno));
    struct stat st;
    cr_assert(fstat(fd, &st) == 0);
    unsigned char *b = malloc((size_t)st.st_size + 1);
    cr_assert(b);
    cr_assert(fd_read_all(fd, b, (size_t)st.st_size) == st.st_size);
    close(fd);
    *n = (size_t)st.st_size;
    return b;
}

static void read_permission_only(shmkv_backend be, int track)
{
    umask(022);
    /* the other user must be able to reach the file */
    cr_assert(chmod(t_dir(), 0711) == 0);
    const char *where = be == SHMKV_BACKEND_MEMORY ? t_name("ro") : t_path("ro");
    const char *file = be == SHMKV_BACKEND_MEMORY ? t_str("/dev/shm/shmkv.%s", where) : where;
    shmkv_options o = opts(be, track, 0);
    o.mode = 0644;
    shmkv_db *db = NULL;
    T_OK(shmkv_open(where, &o, &db));
    for (int i = 0; i < NKEYS; i++) {
        char k[16], v[16];
        int kl = snprintf(k, sizeof k, "k%03d", i);
        snprintf(v, sizeof v, "v%03d", i);
        T_OK(shmkv_set(db, k, (size_t)kl, v, 4, SHMKV_KIND_STRING));
    }
    bool root = geteuid() == 0;
    if (be == SHMKV_BACKEND_DISK) {
        T_OK(shmkv_close(db)); /* a closed store: nobody attached */
        db = NULL;
    } /* a memory store lives while a process holds it: a writer stays */
    if (!root)
        cr_assert(chmod(file, 0444) == 0);
    struct timespec ts[2] = {{1000000000, 5}, {1000000000, 5}};
    cr_assert(utimensat(AT_FDCWD, file, ts, 0) == 0);
    size_t n0;
    unsigned char *b0 = slurp(file, &n0);

    pid_t kid = t_fork();
    if (kid == 0) {
        if (root) {
            CHILD_CHECK(setgroups(0, NULL) == 0 && setgid(65534) == 0 && setuid(65534) == 0,
                      "dropping to nobody: %s", strerror(errno));
            CHILD_CHECK(geteuid() == 65534, "still root");
        }
        kid_reader(where, be, track);
    }
    t_wait_ok(kid, "the reader with read permission only");

    size_t n1;
    unsigned char *b1 = slurp(file, &n1);
    struct stat st;
    cr_assert(stat(file, &st) == 0);
    bool same = n0 == n1 && memcmp(b0, b1, n0) == 0;
    free(b0);
    free(b1);
    cr_assert(same, "the read-only open changed the store's bytes");
    cr_assert(st.st_mtim.tv_sec == 1000000000 && st.st_mtim.tv_nsec == 5,
              "the read-only open changed the mtime");
    if (db)
        T_OK(shmkv_close(db));
}

Test(readonly, disk_read_permission_only) { read_permission_only(SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF); }
Test(readonly, disk_tracked_read_permission_only) { read_permission_only(SHMKV_BACKEND_DISK, SHMKV_TRACK_ON); }
Test(readonly, memory_read_permission_only) { read_permission_only(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_OFF); }
Test(readonly, memory_tracked_read_permission_only) { read_permission_only(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_ON); }

/* ---- a read-only reader among writers ------------------------------------ */

#define HOT 16

/* value of key i at version ver: "i:ver:" then 0..289 bytes of filler */
static size_t make_value(char *v, int i, uint64_t ver)
{
    size_t h = (size_t)snprintf(v, 64, "%d:%" PRIu64 ":", i, ver);
    size_t len = h + (size_t)((ver * 2654435761u + (uint64_t)i) % 290);
    for (size_t j = h; j < len; j++)
        v[j] = (char)('a' + (ver + j) % 26);
    return len;
}

static bool value_ok(const char *v, size_t len, int i)
{
    int ki = -1;
    uint64_t ver = 0;
    char tmp[512];
    if (len >= sizeof tmp)
        return false;
    memcpy(tmp, v, len);
    tmp[len] = 0;
    if (sscanf(tmp, "%d:%" SCNu64 ":", &ki, &ver) != 2 || ki != i)
        return false;
    char want[512];
    size_t wl = make_value(want, i, ver);
    return wl == len && memcmp(want, v, len) == 0;
}

static void __attribute__((noreturn)) kid_writer(const char *where, int seconds)
{
    shmkv_options o = opts(SHMKV_BACKEND_MEMORY, 0, 0);
    shmkv_db *db = NULL;
    CHILD_OK(shmkv_open(where, &o, &db));
    char v[512], k[32];
    uint64_t end = t_now_ns() + (uint64_t)seconds * 1000000000u;
    for (uint64_t ver = 1; t_now_ns() < end; ver++) {
        int i = (int)(ver % HOT);
        int kl = snprintf(k, sizeof k, "hot%d", i);
        size_t vl = make_value(v, i, ver);
        CHILD_OK(shmkv_set(db, k, (size_t)kl, v, vl, SHMKV_KIND_BYTES));
        /* churn: keys come and go, so tables are rehashed and blocks reused */
        kl = snprintf(k, sizeof k, "churn%" PRIu64, ver % 5000);
        if (ver % 3)
            shmkv_set(db, k, (size_t)kl, v, vl % 40, SHMKV_KIND_BYTES);
        else
            shmkv_delete(db, k, (size_t)kl, NULL);
    }
    CHILD_OK(shmkv_close(db));
    _exit(0);
}

static int hot_cb(void *ctx, const void *k, size_t kl, const void *v, size_t vl, shmkv_kind kind)
{
    (void)kind;
    int i = -1;
    char key[16];
    if (kl >= sizeof key)
        return 5;
    memcpy(key, k, kl);
    key[kl] = 0;
    if (sscanf(key, "hot%d", &i) != 1 || !value_ok(v, vl, i))
        return 6;
    ++*(int *)ctx;
    return 0;
}

Test(readonly, reader_among_writers_sees_whole_values)
{
    const char *where = t_name("mix");
    shmkv_options o = opts(SHMKV_BACKEND_MEMORY, 0, 0);
    o.segments = 2; /* every writer in the reader's segments */
    shmkv_db *db = NULL;
    T_OK(shmkv_open(where, &o, &db));
    char v[512], k[32];
    for (int i = 0; i < HOT; i++) {
        int kl = snprintf(k, sizeof k, "hot%d", i);
        size_t vl = make_value(v, i, 0);
        T_OK(shmkv_set(db, k, (size_t)kl, v, vl, SHMKV_KIND_BYTES));
    }
    int secs = T_TSAN ? 1 : 2;
    pid_t w1 = t_fork();
    if (w1 == 0)
        kid_writer(where, secs);
    pid_t w2 = t_fork();
    if (w2 == 0)
        kid_writer(where, secs);
    pid_t r = t_fork();
    if (r == 0) {
        shmkv_options ro = opts(SHMKV_BACKEND_MEMORY, 0, SHMKV_RDONLY);
        shmkv_db *d = NULL;
        CHILD_OK(shmkv_open(where, &ro, &d));
        CHILD_CHECK(d->m->rdonly, "the reader does not have a read-only mapping");
        uint64_t end = t_now_ns() + (uint64_t)secs * 1000000000u, reads = 0, lists = 0;
        char got[512];
        while (t_now_ns() < end) {
            for (int i = 0; i < HOT; i++) {
                int kl = snprintf(k, sizeof k, "hot%d", i);
                size_t gl = 0;
                int rc = shmkv_get(d, k, (size_t)kl, got, sizeof got, &gl, NULL);
                CHILD_CHECK(rc == 0, "get(%s) -> %d (%s)", k, rc, shmkv_strerror(rc));
                CHILD_CHECK(value_ok(got, gl, i), "get(%s): a torn or mis-sized value (%zu bytes)",
                          k, gl);
                CHILD_CHECK(shmkv_exists(d, k, (size_t)kl) == 1, "exists(%s)", k);
                reads++;
            }
            if (reads % 64 == 0) {
                int seen = 0;
                int rc = shmkv_list(d, "hot", 3, 0, 0, hot_cb, &seen);
                CHILD_CHECK(rc == 0 && seen == HOT, "list(hot) -> %d, %d keys", rc, seen);
                uint64_t sz = shmkv_size(d);
                CHILD_CHECK(sz >= HOT && sz <= HOT + 5000, "size() = %" PRIu64, sz);
                lists++;
            }
        }
        fprintf(stderr, "readonly: %" PRIu64 " checked reads and %" PRIu64
                " listings by a read-only process among two writers\n", reads, lists);
        CHILD_CHECK(reads > 100, "only %" PRIu64 " reads", reads);
        CHILD_OK(shmkv_close(d));
        _exit(0);
    }
    t_wait_ok(w1, "writer 1");
    t_wait_ok(w2, "writer 2");
    t_wait_ok(r, "read-only reader");
    T_OK(shmkv_close(db));
}

/* ---- a holder that died ------------------------------------------------------ */

Test(readonly, dead_holder_does_not_stop_reader)
{
    const char *where = t_name("dead");
    shmkv_options o = opts(SHMKV_BACKEND_MEMORY, 0, 0);
    o.segments = 1;
    shmkv_db *db = NULL;
    T_OK(shmkv_open(where, &o, &db)); /* a writer stays attached throughout */
    T_OK(shmkv_set(db, "k", 1, "old", 3, SHMKV_KIND_STRING));
    pid_t w = t_fork();
    if (w == 0) {
        shmkv_db *d = NULL;
        CHILD_OK(shmkv_open(where, &o, &d));
        t_hook_kill_at("set.before_publish", 0);
        shmkv_set(d, "k", 1, "new", 3, SHMKV_KIND_STRING);
        _exit(4);
    }
    int st = t_wait(w);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the writer was to die holding the lock");
    pid_t r = t_fork();
    if (r == 0) {
        alarm(20);
        shmkv_options ro = opts(SHMKV_BACKEND_MEMORY, 0, SHMKV_RDONLY);
        shmkv_db *d = NULL;
        CHILD_OK(shmkv_open(where, &ro, &d));
        uint64_t t0 = t_now_ns();
        char got[8];
        size_t gl = 0;
        int rc = shmkv_get(d, "k", 1, got, sizeof got, &gl, NULL);
        CHILD_CHECK(rc == 0 && gl == 3 && memcmp(got, "old", 3) == 0,
                  "get under a dead holder -> %d (%s)", rc, shmkv_strerror(rc));
        CHILD_CHECK(shmkv_size(d) == 1, "size() = %" PRIu64, shmkv_size(d));
        CHILD_CHECK(t_now_ns() - t0 < 2000000000u, "the reader waited for a dead holder");
        CHILD_OK(shmkv_close(d));
        _exit(0);
    }
    t_wait_ok(r, "the read-only reader");
    /* and the writer that stayed repairs it on its next lock */
    char got[8];
    size_t gl = 0;
    T_OK(shmkv_get(db, "k", 1, got, sizeof got, &gl, NULL));
    cr_assert(gl == 3 && memcmp(got, "old", 3) == 0);
    T_OK(shmkv_set(db, "k", 1, "v2", 2, SHMKV_KIND_STRING));
    T_OK(shmkv_close(db));
}

/* ---- a live holder that is stopped ------------------------------------------ */

static int count_cb(void *ctx, const void *k, size_t kl, const void *v, size_t vl, shmkv_kind kind)
{
    (void)k, (void)kl, (void)v, (void)vl, (void)kind;
    ++*(uint64_t *)ctx;
    return 0;
}

/* In the reader: the call's code must be SHMKV_ETIMEDOUT, and it must have
 * waited the handle's whole lock timeout (ms) first, within a bound. */
#define RO_TIMES_OUT(call, ms, what)                                                             \
    do {                                                                                         \
        uint64_t t0_ = t_now_ns();                                                               \
        int rc_ = (call);                                                                        \
        double el_ = (double)(t_now_ns() - t0_) / 1e6;                                           \
        CHILD_CHECK(rc_ == SHMKV_ETIMEDOUT, "%s under a stopped holder -> %d (%s)", what, rc_,   \
                    shmkv_strerror(rc_));                                                        \
        CHILD_CHECK(el_ >= (ms) && el_ < 20000, "%s gave up after %.0f ms (timeout %d ms)", what, \
                    el_, (int)(ms));                                                             \
    } while (0)

/* A live writer stopped while it holds a segment's lock (SIGSTOP: a
 * debugger, a frozen container). A read-only reader takes no lock and
 * cannot tell it from a slow writer, so whatever needs that segment waits
 * out the handle's lock timeout and fails with SHMKV_ETIMEDOUT, changing
 * nothing; keys of the other segments answer. Once the writer goes on,
 * readers see its value. */
Test(readonly, stopped_live_writer_times_out_reader)
{
    const char *where = t_name("stopped");
    shmkv_options o = opts(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_OFF, 0);
    o.segments = 4;
    shmkv_db *db = NULL;
    T_OK(shmkv_open(where, &o, &db)); /* a writer stays attached throughout */
    char k[16], v[16];
    for (int i = 0; i < NKEYS; i++) {
        snprintf(k, sizeof k, "k%03d", i);
        snprintf(v, sizeof v, "v%03d", i);
        T_OK(shmkv_set(db, k, 4, v, 4, SHMKV_KIND_STRING));
    }
    const char *hot = "k000";
    char cold[16];
    for (int i = 1;; i++) {
        snprintf(cold, sizeof cold, "k%03d", i);
        if (t_seg_of(db, cold, 4) != t_seg_of(db, hot, 4))
            break;
    }
    pid_t w = t_fork();
    if (w == 0) {
        shmkv_db *d = NULL;
        CHILD_OK(shmkv_open(where, &o, &d));
        t_hook_stop_at("set.before_publish", -1);
        CHILD_OK(shmkv_set(d, hot, 4, "new!", 4, SHMKV_KIND_STRING));
        CHILD_OK(shmkv_close(d));
        _exit(0);
    }
    int st = t_wait_stopped(w, 30);
    cr_assert(WIFSTOPPED(st), "the writer was to stop holding the lock");
    const int ms = 300;
    pid_t r = t_fork();
    if (r == 0) {
        alarm(120);
        shmkv_options ro = opts(SHMKV_BACKEND_MEMORY, 0, SHMKV_RDONLY);
        ro.lock_timeout_ms = ms;
        shmkv_db *d = NULL;
        CHILD_OK(shmkv_open(where, &ro, &d));
        char got[16];
        size_t gl = 0;
        CHILD_OK(shmkv_get(d, cold, 4, got, sizeof got, &gl, NULL));
        CHILD_CHECK(gl == 4 && got[0] == 'v' && memcmp(got + 1, cold + 1, 3) == 0,
                    "another segment's key");
        RO_TIMES_OUT(shmkv_get(d, hot, 4, got, sizeof got, &gl, NULL), ms, "get");
        RO_TIMES_OUT(shmkv_exists(d, hot, 4), ms, "exists");
        shmkv_item items[2] = {{.key = cold, .klen = 4}, {.key = hot, .klen = 4}};
        char buf[64];
        size_t need = 0, bad = 0;
        RO_TIMES_OUT(shmkv_get_many(d, items, 2, buf, sizeof buf, &need, &bad), ms, "get_many");
        uint64_t n = 0;
        RO_TIMES_OUT(shmkv_scan(d, "k", 1, NULL, 0, 0, 0, count_cb, &n), ms, "scan");
        RO_TIMES_OUT(shmkv_count(d, NULL, 0, &n), ms, "count");
        RO_TIMES_OUT(shmkv_count(d, "k", 1, &n), ms, "count of a prefix");
        RO_TIMES_OUT(shmkv_random_keys(d, "k", 1, 5, 1, count_cb, &n), ms, "random_keys");
        /* and the other segment still answers after all that waiting */
        CHILD_OK(shmkv_get(d, cold, 4, got, sizeof got, &gl, NULL));
        CHILD_OK(shmkv_close(d));
        _exit(0);
    }
    t_wait_ok(r, "the read-only reader");
    cr_assert_eq(kill(w, SIGCONT), 0);
    t_wait_ok(w, "the writer, resumed");
    r = t_fork();
    if (r == 0) {
        alarm(60);
        shmkv_options ro = opts(SHMKV_BACKEND_MEMORY, 0, SHMKV_RDONLY);
        shmkv_db *d = NULL;
        CHILD_OK(shmkv_open(where, &ro, &d));
        char got[16];
        size_t gl = 0;
        CHILD_OK(shmkv_get(d, hot, 4, got, sizeof got, &gl, NULL));
        CHILD_CHECK(gl == 4 && memcmp(got, "new!", 4) == 0, "the resumed writer's value");
        uint64_t n = 0;
        CHILD_OK(shmkv_count(d, NULL, 0, &n));
        CHILD_CHECK(n == NKEYS, "count %" PRIu64 " after the reader's timeouts", n);
        CHILD_OK(shmkv_close(d));
        _exit(0);
    }
    t_wait_ok(r, "a reader after the writer went on");
    t_check_sound(db, "after the stopped writer went on");
    T_OK(shmkv_close(db));
}

/* ---- a copy taken while a lock was held ------------------------------------ */

/* A copied store (or one that outlived a reboot) holds lock words naming
 * threads that do not exist, which no kernel will ever mark as dead. A
 * read-only opener that is alone must still read it (it knows any odd seq
 * was left by a dead holder), and a writer that joins while only readers
 * are attached must re-initialise the locks, or its first lock hangs. */
static void pause_in_set(const char *point)
{
    if (strcmp(point, "set.before_publish") == 0)
        pause();
}

Test(readonly, copied_store_with_held_lock)
{
    const char *orig = t_path("orig");
    const char *copy = t_path("copy");
    shmkv_options o = opts(SHMKV_BACKEND_DISK, 0, 0);
    o.segments = 1;
    shmkv_db *db = NULL;
    T_OK(shmkv_open(orig, &o, &db));
    T_OK(shmkv_set(db, "k", 1, "old", 3, SHMKV_KIND_STRING));
    T_OK(shmkv_close(db));
    int ready[2];
    cr_assert(pipe(ready) == 0);
    pid_t w = t_fork();
    if (w == 0) {
        close(ready[0]);
        shmkv_db *d = NULL;
        CHILD_OK(shmkv_open(orig, &o, &d));
        shmkv__test_hook = pause_in_set;
        CHILD_CHECK(write(ready[1], "r", 1) == 1, "pipe");
        shmkv_set(d, "k", 1, "new", 3, SHMKV_KIND_STRING); /* stops inside */
        _exit(4);
    }
    close(ready[1]);
    char c;
    cr_assert(read(ready[0], &c, 1) == 1);
    close(ready[0]);
    /* the writer is inside the critical section once seq is odd */
    bool held = false;
    for (int i = 0; i < 2000 && !held; i++) {
        size_t n;
        unsigned char *b = slurp(orig, &n);
        uint32_t seq;
        memcpy(&seq, b + SHMKV__HDR_SIZE + offsetof(shmkv__seg, seq), 4);
        held = seq & 1;
        if (held) {
            int fd = open(copy, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            cr_assert(fd >= 0);
            cr_assert(fd_write_all(fd, b, n) == 0);
            close(fd);
        }
        free(b);
        if (!held)
            t_sleep_us(1000);
    }
    cr_assert(held, "the writer never entered its critical section");
    kill(w, SIGKILL);
    t_wait(w);

    pid_t k = t_fork();
    if (k == 0) {
        alarm(20); /* a hang is the failure this guards against */
        shmkv_options ro = opts(SHMKV_BACKEND_DISK, 0, SHMKV_RDONLY);
        shmkv_db *r = NULL;
        CHILD_OK(shmkv_open(copy, &ro, &r));
        char got[8];
        size_t gl = 0;
        int rc = shmkv_get(r, "k", 1, got, sizeof got, &gl, NULL);
        CHILD_CHECK(rc == 0 && gl == 3 && memcmp(got, "old", 3) == 0,
                  "read-only get on the copy -> %d (%s)", rc, shmkv_strerror(rc));
        CHILD_CHECK(shmkv_size(r) == 1, "size() = %" PRIu64, shmkv_size(r));
        /* a writer joins while the reader stays attached */
        shmkv_db *d = NULL;
        CHILD_OK(shmkv_open(copy, &o, &d));
        CHILD_OK(shmkv_set(d, "k", 1, "v2", 2, SHMKV_KIND_STRING));
        CHILD_OK(shmkv_set(d, "k2", 2, "x", 1, SHMKV_KIND_STRING));
        rc = shmkv_get(r, "k", 1, got, sizeof got, &gl, NULL);
        CHILD_CHECK(rc == 0 && gl == 2 && memcmp(got, "v2", 2) == 0,
                  "the reader after the writer's set -> %d", rc);
        CHILD_CHECK(shmkv_size(r) == 2, "size() = %" PRIu64, shmkv_size(r));
        CHILD_OK(shmkv_close(d));
        CHILD_OK(shmkv_close(r));
        _exit(0);
    }
    t_wait_ok(k, "reader and writer on the copied store");
}

/* ---- many keys at once, without locks, among writers (issue 12) ------------- */

#define GROUP 16
#define STABLE 200

static size_t group_value(char *v, int i, uint64_t ver)
{
    /* "ver:i:" then filler, so values move between size classes */
    size_t h = (size_t)snprintf(v, 64, "%" PRIu64 ":%d:", ver, i);
    size_t len = h + (size_t)((ver * 7 + (uint64_t)i * 13) % 90);
    for (size_t j = h; j < len; j++)
        v[j] = (char)('a' + (ver + j) % 26);
    return len;
}

/* The version of a well-formed group value of key i, or -1. */
static int64_t group_ver(const void *v, size_t len, int i)
{
    char tmp[256];
    uint64_t ver = 0;
    int ki = -1;
    if (len >= sizeof tmp)
        return -1;
    memcpy(tmp, v, len);
    tmp[len] = 0;
    if (sscanf(tmp, "%" SCNu64 ":%d:", &ver, &ki) != 2 || ki != i)
        return -1;
    char want[256];
    size_t wl = group_value(want, i, ver);
    return wl == len && memcmp(want, v, len) == 0 ? (int64_t)ver : -1;
}

static void group_items(shmkv_item *it, char (*ks)[16], char (*vs)[256], uint64_t ver)
{
    for (int i = 0; i < GROUP; i++) {
        int kl = snprintf(ks[i], 16, "g%02d", i);
        it[i] = (shmkv_item){.key = ks[i], .klen = (size_t)kl};
        if (vs) {
            it[i].val = vs[i];
            it[i].vlen = group_value(vs[i], i, ver);
            it[i].kind = SHMKV_KIND_BYTES;
        }
    }
}

static void __attribute__((noreturn)) kid_batch_writer(const char *where, int seconds, int who)
{
    shmkv_options o = opts(SHMKV_BACKEND_MEMORY, 0, 0);
    shmkv_db *db = NULL;
    CHILD_OK(shmkv_open(where, &o, &db));
    shmkv_item it[GROUP];
    char ks[GROUP][16], vs[GROUP][256], k[32];
    uint64_t end = t_now_ns() + (uint64_t)seconds * 1000000000u;
    for (uint64_t ver = 1; t_now_ns() < end; ver++) {
        group_items(it, ks, vs, ver * 2 + (uint64_t)who);
        CHILD_OK(shmkv_set_many(db, it, GROUP, NULL));
        /* churn between the stable keys ("s012" < "s012+3" < "s013") */
        int kl = snprintf(k, sizeof k, "s%03d+%d", (int)(ver % STABLE), who);
        if (ver % 4 == 3) {
            shmkv_item d = {.key = k, .klen = (size_t)kl};
            CHILD_OK(shmkv_delete_many(db, &d, 1, NULL, NULL));
        } else {
            CHILD_OK(shmkv_set(db, k, (size_t)kl, "c", 1, SHMKV_KIND_STRING));
        }
        kl = snprintf(k, sizeof k, "t%d.%" PRIu64, who, ver % 50);
        CHILD_OK(shmkv_set(db, k, (size_t)kl, "t", 1, SHMKV_KIND_STRING));
        if (ver % 50 == 49)
            CHILD_OK(shmkv_delete_prefix(db, k, 2, 0, NULL));
    }
    CHILD_OK(shmkv_close(db));
    _exit(0);
}

typedef struct sscan {
    char last[32];
    int stable, churn, bad;
} sscan;

static int stable_cb(void *ctx, const void *k, size_t kl, const void *v, size_t vl,
                     shmkv_kind kind)
{
    (void)v, (void)vl, (void)kind;
    sscan *s = ctx;
    char key[32];
    if (kl >= sizeof key)
        return 8;
    memcpy(key, k, kl);
    key[kl] = 0;
    if (s->last[0] && strcmp(s->last, key) >= 0)
        return 9; /* out of order, or twice */
    strcpy(s->last, key);
    if (kl == 4)
        s->stable++;
    else
        s->churn++;
    return 0;
}

static int group_cb(void *ctx, const void *k, size_t kl, const void *v, size_t vl,
                    shmkv_kind kind)
{
    (void)kind;
    int i = -1;
    char key[8];
    if (kl != 3)
        return 10;
    memcpy(key, k, 3);
    key[3] = 0;
    if (sscanf(key, "g%2d", &i) != 1 || (v && group_ver(v, vl, i) < 0))
        return 11;
    ++*(int *)ctx;
    return 0;
}

/* One pass of every call of many keys a read-only handle has; the group
 * was written by batches only, the stable keys exist throughout. */
static void ro_pass(shmkv_db *d, int64_t *ver_seen)
{
    shmkv_item it[GROUP];
    char ks[GROUP][16], buf[GROUP * 256];
    group_items(it, ks, NULL, 0);
    size_t need = 0;
    int rc = shmkv_get_many(d, it, GROUP, buf, sizeof buf, &need, NULL);
    CHILD_CHECK(rc == 0, "get_many -> %d (%s)", rc, shmkv_strerror(rc));
    int64_t ver = -1;
    for (int i = 0; i < GROUP; i++) {
        CHILD_CHECK(it[i].rc == 0, "get_many(%s).rc = %d", ks[i], it[i].rc);
        int64_t v = group_ver(it[i].val, it[i].vlen, i);
        CHILD_CHECK(v >= 0, "get_many(%s): a torn value (%zu bytes)", ks[i], it[i].vlen);
        CHILD_CHECK(i == 0 || v == ver,
                  "get_many mixed two batches: %s at version %" PRId64 ", g00 at %" PRId64,
                  ks[i], v, ver);
        ver = v;
    }
    if (ver_seen)
        *ver_seen = ver;
    sscan sc = {{0}, 0, 0, 0};
    char after[32] = "";
    for (int page = 0; page < 1000; page++) {
        sscan pg = sc;
        rc = shmkv_scan(d, "s", 1, after, strlen(after), 23, SHMKV_LIST_KEYS_ONLY, stable_cb, &pg);
        CHILD_CHECK(rc == 0, "scan(s) page %d -> %d (%s)", page, rc, shmkv_strerror(rc));
        if (pg.stable + pg.churn == sc.stable + sc.churn)
            break;
        sc = pg;
        strcpy(after, sc.last);
    }
    CHILD_CHECK(sc.stable == STABLE, "the paged scan saw %d of the %d stable keys", sc.stable,
              STABLE);
    int g = 0;
    rc = shmkv_scan(d, "g", 1, NULL, 0, 0, 0, group_cb, &g);
    CHILD_CHECK(rc == 0 && g == GROUP, "scan(g) -> %d, %d keys", rc, g);
    uint64_t c = 0;
    rc = shmkv_count(d, "g", 1, &c);
    CHILD_CHECK(rc == 0 && c == GROUP, "count(g) -> %d, %" PRIu64, rc, c);
    rc = shmkv_count(d, "s", 1, &c);
    CHILD_CHECK(rc == 0 && c >= STABLE && c <= STABLE * 3, "count(s) -> %d, %" PRIu64, rc, c);
    g = 0;
    rc = shmkv_random_keys(d, "g", 1, GROUP + 5, 1, group_cb, &g);
    CHILD_CHECK(rc == 0 && g == GROUP, "random_keys(g, unique) -> %d, %d keys", rc, g);
    g = 0;
    rc = shmkv_random_keys(d, "g", 1, 7, 0, group_cb, &g);
    CHILD_CHECK(rc == 0 && g == 7, "random_keys(g) -> %d, %d keys", rc, g);
}

static shmkv_db *group_store(const char *where, uint32_t segments)
{
    shmkv_options o = opts(SHMKV_BACKEND_MEMORY, 0, 0);
    o.segments = segments;
    shmkv_db *db = NULL;
    T_OK(shmkv_open(where, &o, &db));
    shmkv_item it[GROUP];
    char ks[GROUP][16], vs[GROUP][256], k[16];
    group_items(it, ks, vs, 0);
    T_OK(shmkv_set_many(db, it, GROUP, NULL));
    for (int i = 0; i < STABLE; i++) {
        int kl = snprintf(k, sizeof k, "s%03d", i);
        T_OK(shmkv_set(db, k, (size_t)kl, "s", 1, SHMKV_KIND_STRING));
    }
    return db;
}

Test(readonly, many_keys_among_batch_writers)
{
    const char *where = t_name("many");
    shmkv_db *db = group_store(where, 4); /* few segments: the writers are always near */
    int secs = T_TSAN ? 1 : 2;
    pid_t w1 = t_fork();
    if (w1 == 0)
        kid_batch_writer(where, secs, 0);
    pid_t w2 = t_fork();
    if (w2 == 0)
        kid_batch_writer(where, secs, 1);
    pid_t r = t_fork();
    if (r == 0) {
        shmkv_options ro = opts(SHMKV_BACKEND_MEMORY, 0, SHMKV_RDONLY);
        shmkv_db *d = NULL;
        CHILD_OK(shmkv_open(where, &ro, &d));
        CHILD_CHECK(d->m->rdonly, "the reader does not have a read-only mapping");
        /* At least 4 passes, however slow the machine (a loaded TSan run
         * once managed 1 in a second); the hard end only bounds a hang. */
        uint64_t now = t_now_ns(), passes = 0;
        uint64_t end = now + (uint64_t)secs * 1000000000u, hard = now + 120000000000u;
        int64_t first = -1, last = -1;
        while ((t_now_ns() < end || passes < 4) && t_now_ns() < hard) {
            ro_pass(d, &last);
            if (first < 0)
                first = last;
            passes++;
        }
        fprintf(stderr, "readonly: %" PRIu64 " passes of get_many/scan/count/random_keys, "
                "group versions %" PRId64 "..%" PRId64 "\n", passes, first, last);
        CHILD_CHECK(passes > 3, "only %" PRIu64 " passes", passes);
        CHILD_OK(shmkv_close(d));
        _exit(0);
    }
    t_wait_ok(w1, "batch writer 1");
    t_wait_ok(w2, "batch writer 2");
    t_wait_ok(r, "read-only reader");
    T_OK(shmkv_close(db));
}

/* ---- many keys at once under a dead holder ---------------------------------- */

/* A writer (another stays attached, so the reader learns of the death from
 * the lock word) is killed at point while writing group version 1 (or, for
 * a delete, removing the group); a read-only reader must then see, fast,
 * what the repair will make of it: want_ver, or no group at all (-1). */
static void dead_holder_many(const char *point, bool del, int64_t want_ver)
{
    const char *where = t_name("deadmany");
    shmkv_db *db = group_store(where, 4);
    pid_t w = t_fork();
    if (w == 0) {
        shmkv_options o = opts(SHMKV_BACKEND_MEMORY, 0, 0);
        shmkv_db *d = NULL;
        CHILD_OK(shmkv_open(where, &o, &d));
        shmkv_item it[GROUP];
        char ks[GROUP][16], vs[GROUP][256];
        group_items(it, ks, vs, 1);
        t_hook_kill_at(point, 0);
        if (del)
            shmkv_delete_many(d, it, GROUP, NULL, NULL);
        else if (strncmp(point, "batch.", 6) == 0)
            shmkv_set_many(d, it, GROUP, NULL);
        else
            for (int i = 0; i < GROUP; i++)
                shmkv_set(d, it[i].key, it[i].klen, it[i].val, it[i].vlen, it[i].kind);
        _exit(4);
    }
    int st = t_wait(w);
    char b[80];
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
              "the writer was to die at %s: %s", point, t_status_str(st, b, sizeof b));
    pid_t r = t_fork();
    if (r == 0) {
        alarm(30);
        shmkv_options ro = opts(SHMKV_BACKEND_MEMORY, 0, SHMKV_RDONLY);
        shmkv_db *d = NULL;
        CHILD_OK(shmkv_open(where, &ro, &d));
        uint64_t t0 = t_now_ns();
        shmkv_item it[GROUP];
        char ks[GROUP][16], buf[GROUP * 256];
        group_items(it, ks, NULL, 0);
        int rc = shmkv_get_many(d, it, GROUP, buf, sizeof buf, NULL, NULL);
        CHILD_CHECK(rc == 0, "get_many under a dead holder -> %d (%s)", rc, shmkv_strerror(rc));
        for (int i = 0; i < GROUP; i++) {
            if (want_ver < 0) {
                CHILD_CHECK(it[i].rc == SHMKV_ENOTFOUND, "%s: rc %d, the delete committed", ks[i],
                          it[i].rc);
                continue;
            }
            CHILD_CHECK(it[i].rc == 0 && group_ver(it[i].val, it[i].vlen, i) == want_ver,
                      "%s: rc %d, version %" PRId64 ", want %" PRId64 " (killed at %s)", ks[i],
                      it[i].rc, it[i].rc ? -2 : group_ver(it[i].val, it[i].vlen, i), want_ver,
                      point);
        }
        for (int i = 0; i < GROUP; i++) {
            char v[256];
            size_t vl = 0;
            rc = shmkv_get(d, ks[i], 3, v, sizeof v, &vl, NULL);
            CHILD_CHECK(want_ver < 0 ? rc == SHMKV_ENOTFOUND
                                   : rc == 0 && group_ver(v, vl, i) == want_ver,
                      "get(%s) -> %d (killed at %s)", ks[i], rc, point);
        }
        uint64_t c = 0;
        rc = shmkv_count(d, "g", 1, &c);
        CHILD_CHECK(rc == 0 && c == (want_ver < 0 ? 0 : GROUP), "count(g) -> %d, %" PRIu64, rc, c);
        CHILD_CHECK(shmkv_size(d) == STABLE + c, "size() = %" PRIu64, shmkv_size(d));
        int g = 0;
        rc = shmkv_scan(d, "g", 1, NULL, 0, 0, 0, group_cb, &g);
        CHILD_CHECK(rc == 0 && (uint64_t)g == c, "scan(g) -> %d, %d keys", rc, g);
        g = 0;
        rc = shmkv_random_keys(d, "g", 1, GROUP, 1, group_cb, &g);
        CHILD_CHECK(rc == 0 && (uint64_t)g == c, "random_keys(g) -> %d, %d keys", rc, g);
        sscan sc = {{0}, 0, 0, 0};
        rc = shmkv_scan(d, "s", 1, NULL, 0, 0, SHMKV_LIST_KEYS_ONLY, stable_cb, &sc);
        CHILD_CHECK(rc == 0 && sc.stable == STABLE, "scan(s) -> %d, %d keys", rc, sc.stable);
        CHILD_CHECK(t_now_ns() - t0 < 5000000000u, "the reader waited for a dead holder");
        CHILD_OK(shmkv_close(d));
        _exit(0);
    }
    t_wait_ok(r, "the read-only reader");
    /* the writer that stayed repairs, and agrees with what the reader saw */
    shmkv_item it[GROUP];
    char ks[GROUP][16], buf[GROUP * 256];
    group_items(it, ks, NULL, 0);
    T_OK(shmkv_get_many(db, it, GROUP, buf, sizeof buf, NULL, NULL));
    for (int i = 0; i < GROUP; i++)
        cr_assert(want_ver < 0 ? it[i].rc == SHMKV_ENOTFOUND
                               : it[i].rc == 0 && group_ver(it[i].val, it[i].vlen, i) == want_ver,
                  "the repaired %s disagrees with the reader", ks[i]);
    T_OK(shmkv_close(db));
}

Test(readonly, many_keys_dead_single_key_writer)
{
    dead_holder_many("set.before_publish", false, 0);
}

Test(readonly, many_keys_dead_batch_before_commit)
{
    dead_holder_many("batch.prepared", false, 0);
}

Test(readonly, many_keys_dead_batch_half_applied)
{
    dead_holder_many("batch.applying", false, 1);
}

Test(readonly, many_keys_dead_delete_batch_half_applied)
{
    dead_holder_many("batch.applying", true, -1);
}

/* A clear() killed after publishing its generation, with the first segment
 * emptied and the rest not: the clear has happened (the repair of each
 * segment behind it empties it), so a read-only reader sees no key. */
Test(readonly, many_keys_dead_clear)
{
    const char *where = t_name("deadclear");
    shmkv_db *db = group_store(where, 4);
    pid_t w = t_fork();
    if (w == 0) {
        shmkv_options o = opts(SHMKV_BACKEND_MEMORY, 0, 0);
        shmkv_db *d = NULL;
        CHILD_OK(shmkv_open(where, &o, &d));
        t_hook_kill_at("clear.mid", 0);
        shmkv_clear(d);
        _exit(4);
    }
    int st = t_wait(w);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the clear was to die half-way");
    pid_t r = t_fork();
    if (r == 0) {
        alarm(30);
        shmkv_options ro = opts(SHMKV_BACKEND_MEMORY, 0, SHMKV_RDONLY);
        shmkv_db *d = NULL;
        CHILD_OK(shmkv_open(where, &ro, &d));
        shmkv_item it[GROUP];
        char ks[GROUP][16], buf[GROUP * 256];
        group_items(it, ks, NULL, 0);
        int rc = shmkv_get_many(d, it, GROUP, buf, sizeof buf, NULL, NULL);
        CHILD_CHECK(rc == 0, "get_many -> %d (%s)", rc, shmkv_strerror(rc));
        for (int i = 0; i < GROUP; i++) {
            CHILD_CHECK(it[i].rc == SHMKV_ENOTFOUND, "get_many(%s) found a cleared key", ks[i]);
            CHILD_CHECK(shmkv_exists(d, ks[i], 3) == 0, "exists(%s) after the clear", ks[i]);
        }
        uint64_t c = 99;
        rc = shmkv_count(d, NULL, 0, &c);
        CHILD_CHECK(rc == 0 && c == 0, "count -> %d, %" PRIu64, rc, c);
        CHILD_CHECK(shmkv_size(d) == 0, "size() = %" PRIu64, shmkv_size(d));
        sscan sc = {{0}, 0, 0, 0};
        rc = shmkv_scan(d, NULL, 0, NULL, 0, 0, SHMKV_LIST_KEYS_ONLY, stable_cb, &sc);
        CHILD_CHECK(rc == 0 && sc.stable + sc.churn == 0, "scan -> %d, %d keys", rc,
                  sc.stable + sc.churn);
        int g = 0;
        rc = shmkv_random_keys(d, NULL, 0, 5, 1, group_cb, &g);
        CHILD_CHECK(rc == 0 && g == 0, "random_keys -> %d, %d keys", rc, g);
        CHILD_OK(shmkv_close(d));
        _exit(0);
    }
    t_wait_ok(r, "the read-only reader");
    cr_assert_eq(shmkv_size(db), 0, "the repaired store is not empty");
    T_OK(shmkv_close(db));
}

/* A batch so large that its intent record is a big block (one segment,
 * more than 4 MiB of slot changes) is killed right after it committed:
 * its repair must roll it forward, and a read-only reader must read it
 * forward too. The intent's size is the big block's chunk, not the
 * block header's size field (0 for a big block). */
#define BIG_N 280000

Test(readonly, big_batch_killed_after_commit, .timeout = 300)
{
    const char *where = t_name("bigbatch");
    shmkv_options o = opts(SHMKV_BACKEND_MEMORY, 0, 0);
    o.segments = 1;
    shmkv_db *db = NULL;
    T_OK(shmkv_open(where, &o, &db)); /* stays attached: the reader learns of the death from the lock */
    shmkv_item *it = calloc(BIG_N, sizeof *it);
    char (*ks)[12] = calloc(BIG_N, sizeof *ks);
    cr_assert(it && ks);
    for (int i = 0; i < BIG_N; i++) {
        int kl = snprintf(ks[i], sizeof ks[i], "b%06d", i);
        it[i] = (shmkv_item){.key = ks[i], .klen = (size_t)kl, .val = "old", .vlen = 3,
                             .kind = SHMKV_KIND_STRING};
    }
    T_OK(shmkv_set_many(db, it, BIG_N, NULL));
    pid_t w = t_fork();
    if (w == 0) {
        shmkv_db *d = NULL;
        CHILD_OK(shmkv_open(where, &o, &d));
        for (int i = 0; i < BIG_N; i++)
            it[i].val = "new";
        t_hook_kill_at("batch.committed", 0);
        shmkv_set_many(d, it, BIG_N, NULL);
        _exit(4);
    }
    int st = t_wait(w);
    char b[80];
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the batch was to die committed: %s",
              t_status_str(st, b, sizeof b));
    const int probe[] = {0, 1, 4711, BIG_N / 2, BIG_N - 1};
    pid_t r = t_fork();
    if (r == 0) {
        alarm(120);
        shmkv_options ro = opts(SHMKV_BACKEND_MEMORY, 0, SHMKV_RDONLY);
        shmkv_db *d = NULL;
        CHILD_OK(shmkv_open(where, &ro, &d));
        for (size_t i = 0; i < sizeof probe / sizeof probe[0]; i++) {
            char got[8];
            size_t gl = 0;
            int rc = shmkv_get(d, ks[probe[i]], 7, got, sizeof got, &gl, NULL);
            CHILD_CHECK(rc == 0 && gl == 3 && memcmp(got, "new", 3) == 0,
                      "read-only get(%s) -> %d, %.*s: the committed batch is not read forward",
                      ks[probe[i]], rc, (int)gl, got);
        }
        CHILD_OK(shmkv_close(d));
        _exit(0);
    }
    t_wait_ok(r, "the read-only reader");
    /* the writer that stayed repairs the segment on its next lock */
    T_OK(shmkv_delete(db, "zz", 2, NULL));
    for (size_t i = 0; i < sizeof probe / sizeof probe[0]; i++) {
        char got[8];
        size_t gl = 0;
        T_OK(shmkv_get(db, ks[probe[i]], 7, got, sizeof got, &gl, NULL));
        cr_assert(gl == 3 && memcmp(got, "new", 3) == 0,
                  "after the repair, %s is %.*s: the committed batch was dropped", ks[probe[i]],
                  (int)gl, got);
    }
    cr_assert_eq(shmkv_size(db), BIG_N);
    free(it);
    free(ks);
    T_OK(shmkv_close(db));
}

/* ---- the last writer closes under a reader, a dead holder unrepaired -------- */

/* A reader that opened while writers were attached learns of a dead holder
 * from the kernel's owner-died mark on the lock word. The last writer to
 * close must leave that mark alone (and the store unclean): if it took the
 * dead lock to test it, the reader would see seq odd with nobody on the
 * lock and wait for a holder that never comes. */
Test(readonly, last_writer_closes_under_reader_with_dead_holder)
{
    const char *where = t_path("lastclose");
    shmkv_options o = opts(SHMKV_BACKEND_DISK, 0, 0);
    o.segments = 1;
    shmkv_db *db = NULL;
    T_OK(shmkv_open(where, &o, &db));
    T_OK(shmkv_set(db, "k", 1, "old", 3, SHMKV_KIND_STRING));
    int go[2], ready[2];
    cr_assert(pipe(go) == 0 && pipe(ready) == 0);
    pid_t r = t_fork();
    if (r == 0) {
        close(go[1]);
        close(ready[0]);
        alarm(30);
        shmkv_options ro = opts(SHMKV_BACKEND_DISK, 0, SHMKV_RDONLY);
        ro.lock_timeout_ms = 8000;
        shmkv_db *d = NULL;
        CHILD_OK(shmkv_open(where, &ro, &d)); /* a writer is attached: no dead_seq */
        char c = 'r';
        CHILD_CHECK(write(ready[1], &c, 1) == 1, "pipe");
        CHILD_CHECK(read(go[0], &c, 1) == 1, "pipe"); /* the writers are gone */
        uint64_t t0 = t_now_ns();
        char got[8];
        size_t gl = 0;
        int rc = shmkv_get(d, "new", 3, got, sizeof got, &gl, NULL);
        CHILD_CHECK(rc == 0 && gl == 1, "get(new) -> %d (%s)", rc, shmkv_strerror(rc));
        shmkv_item it[2] = {{.key = "k", .klen = 1}, {.key = "new", .klen = 3}};
        rc = shmkv_get_many(d, it, 2, got, sizeof got, NULL, NULL);
        CHILD_CHECK(rc == 0 && it[0].rc == 0 && it[1].rc == 0, "get_many -> %d (%s)", rc,
                  shmkv_strerror(rc));
        uint64_t c2 = 0;
        rc = shmkv_count(d, NULL, 0, &c2);
        CHILD_CHECK(rc == 0 && c2 == 2, "count -> %d (%s), %" PRIu64, rc, shmkv_strerror(rc), c2);
        CHILD_CHECK(t_now_ns() - t0 < 4000000000u,
                  "the reader waited %.1f s for a holder that is dead",
                  (double)(t_now_ns() - t0) / 1e9);
        CHILD_OK(shmkv_close(d));
        _exit(0);
    }
    close(ready[1]);
    close(go[0]);
    char c;
    cr_assert(read(ready[0], &c, 1) == 1, "the reader did not open");
    close(ready[0]);
    pid_t w = t_fork();
    if (w == 0) {
        shmkv_db *d = NULL;
        CHILD_OK(shmkv_open(where, &o, &d));
        t_hook_kill_at("set.after_publish", 0);
        shmkv_set(d, "new", 3, "n", 1, SHMKV_KIND_STRING);
        _exit(4);
    }
    int st = t_wait(w);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the writer was to die holding the lock");
    T_OK(shmkv_close(db)); /* the last writer: the reader stays */
    db = NULL;
    cr_assert(write(go[1], "g", 1) == 1);
    close(go[1]);
    t_wait_ok(r, "the read-only reader");
    /* and the next writer, alone among writers, repairs: the count is exact */
    T_OK(shmkv_open(where, &o, &db));
    cr_assert_eq(shmkv_size(db), 2);
    T_OK(shmkv_close(db));
}
