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
#include "relcr.h"

#include "internal.h" /* shmkv__test_hook */

#include <grp.h>

TestSuite(readonly, .init = rc_setup, .fini = rc_teardown, .timeout = 120);

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

/* In a child that may only read the store. */
static void __attribute__((noreturn)) kid_reader(const char *where, shmkv_backend be, int track)
{
    shmkv_options rw = opts(be, 0, 0), ro = opts(be, 0, SHMKV_RDONLY);
    shmkv_db *db = NULL;
    int rc = shmkv_open(where, &rw, &db);
    KID_CHECK(rc == -EACCES, "read-write open without write permission -> %d (%s)", rc,
              shmkv_strerror(rc));
    rc = shmkv_open(where, &ro, &db);
    KID_CHECK(rc == 0, "read-only open with read permission -> %d (%s)", rc, shmkv_strerror(rc));
    for (int i = 0; i < NKEYS; i++) {
        char k[16], v[16], got[16];
        int kl = snprintf(k, sizeof k, "k%03d", i);
        snprintf(v, sizeof v, "v%03d", i);
        size_t gl = 0;
        rc = shmkv_get(db, k, (size_t)kl, got, sizeof got, &gl, NULL);
        KID_CHECK(rc == 0 && gl == 4 && memcmp(got, v, 4) == 0, "get(%s) -> %d", k, rc);
        KID_CHECK(shmkv_exists(db, k, (size_t)kl) == 1, "exists(%s)", k);
    }
    KID_CHECK(shmkv_exists(db, "nope", 4) == 0, "exists(nope)");
    size_t gl = 0;
    char got[16];
    rc = shmkv_get(db, "nope", 4, got, sizeof got, &gl, NULL);
    KID_CHECK(rc == SHMKV_ENOTFOUND, "get(nope) -> %d", rc);
    KID_CHECK(shmkv_size(db) == NKEYS, "size() = %" PRIu64, shmkv_size(db));
    uint64_t n = 0;
    rc = shmkv_list(db, NULL, 0, 0, 0, list_count, &n);
    KID_CHECK(rc == 0 && n == NKEYS, "list -> %d after %" PRIu64 " keys", rc, n);
    n = 0;
    rc = shmkv_list(db, "k1", 2, 0, SHMKV_LIST_KEYS_ONLY, list_prefix_count, &n);
    KID_CHECK(rc == 0 && n == 100, "list(k1) -> %d, %" PRIu64 " keys", rc, n);
    n = 0;
    rc = shmkv_list(db, NULL, 0, 10, 0, list_count, &n);
    KID_CHECK(rc == 0 && n == 10, "list(limit 10) -> %d, %" PRIu64 " keys", rc, n);
    for (int d = 0; d < 100; d++) {
        char k[16];
        size_t kl = 0;
        rc = shmkv_random_key(db, d & 1 ? "k2" : NULL, d & 1 ? 2 : 0, k, sizeof k, &kl);
        KID_CHECK(rc == 0 && kl == 4 && k[0] == 'k' && (!(d & 1) || k[1] == '2'),
                  "random_key -> %d", rc);
    }
    char k[16];
    size_t kl = 0;
    rc = shmkv_random_key(db, "zz", 2, k, sizeof k, &kl);
    KID_CHECK(rc == SHMKV_ENOTFOUND, "random_key(zz) -> %d", rc);
    shmkv_info info;
    KID_OK(shmkv_stat(db, &info));
    KID_CHECK(info.keys == NKEYS && info.track_keys == (track == SHMKV_TRACK_ON), "stat");
    int flag = 0;
    KID_CHECK(shmkv_set(db, "k000", 4, "x", 1, SHMKV_KIND_STRING) == SHMKV_EREADONLY, "set");
    KID_CHECK(shmkv_delete(db, "k000", 4, &flag) == SHMKV_EREADONLY, "delete");
    KID_CHECK(shmkv_clear(db) == SHMKV_EREADONLY, "clear");
    KID_CHECK(shmkv_rebuild_index(db) == SHMKV_EREADONLY, "rebuild_index");
    KID_OK(shmkv_close(db));
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
    cr_assert(chmod(rc.sc.dir, 0711) == 0);
    const char *where = be == SHMKV_BACKEND_MEMORY ? rc_name("ro") : rc_path("ro");
    const char *file = be == SHMKV_BACKEND_MEMORY ? rc_str("/dev/shm/shmkv.%s", where) : where;
    shmkv_options o = opts(be, track, 0);
    o.mode = 0644;
    shmkv_db *db = NULL;
    RC_OK(shmkv_open(where, &o, &db));
    for (int i = 0; i < NKEYS; i++) {
        char k[16], v[16];
        int kl = snprintf(k, sizeof k, "k%03d", i);
        snprintf(v, sizeof v, "v%03d", i);
        RC_OK(shmkv_set(db, k, (size_t)kl, v, 4, SHMKV_KIND_STRING));
    }
    bool root = geteuid() == 0;
    if (be == SHMKV_BACKEND_DISK) {
        RC_OK(shmkv_close(db)); /* a closed store: nobody attached */
        db = NULL;
    } /* a memory store lives while a process holds it: a writer stays */
    if (!root)
        cr_assert(chmod(file, 0444) == 0);
    struct timespec ts[2] = {{1000000000, 5}, {1000000000, 5}};
    cr_assert(utimensat(AT_FDCWD, file, ts, 0) == 0);
    size_t n0;
    unsigned char *b0 = slurp(file, &n0);

    pid_t kid = rc_fork();
    if (kid == 0) {
        if (root) {
            KID_CHECK(setgroups(0, NULL) == 0 && setgid(65534) == 0 && setuid(65534) == 0,
                      "dropping to nobody: %s", strerror(errno));
            KID_CHECK(geteuid() == 65534, "still root");
        }
        kid_reader(where, be, track);
    }
    rc_wait_ok(kid, "the reader with read permission only");

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
        RC_OK(shmkv_close(db));
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
    KID_OK(shmkv_open(where, &o, &db));
    char v[512], k[32];
    uint64_t end = rel_now_ns() + (uint64_t)seconds * 1000000000u;
    for (uint64_t ver = 1; rel_now_ns() < end; ver++) {
        int i = (int)(ver % HOT);
        int kl = snprintf(k, sizeof k, "hot%d", i);
        size_t vl = make_value(v, i, ver);
        KID_OK(shmkv_set(db, k, (size_t)kl, v, vl, SHMKV_KIND_BYTES));
        /* churn: keys come and go, so tables are rehashed and blocks reused */
        kl = snprintf(k, sizeof k, "churn%" PRIu64, ver % 5000);
        if (ver % 3)
            shmkv_set(db, k, (size_t)kl, v, vl % 40, SHMKV_KIND_BYTES);
        else
            shmkv_delete(db, k, (size_t)kl, NULL);
    }
    KID_OK(shmkv_close(db));
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
    const char *where = rc_name("mix");
    shmkv_options o = opts(SHMKV_BACKEND_MEMORY, 0, 0);
    o.segments = 2; /* every writer in the reader's segments */
    shmkv_db *db = NULL;
    RC_OK(shmkv_open(where, &o, &db));
    char v[512], k[32];
    for (int i = 0; i < HOT; i++) {
        int kl = snprintf(k, sizeof k, "hot%d", i);
        size_t vl = make_value(v, i, 0);
        RC_OK(shmkv_set(db, k, (size_t)kl, v, vl, SHMKV_KIND_BYTES));
    }
    int secs = REL_TSAN ? 1 : 2;
    pid_t w1 = rc_fork();
    if (w1 == 0)
        kid_writer(where, secs);
    pid_t w2 = rc_fork();
    if (w2 == 0)
        kid_writer(where, secs);
    pid_t r = rc_fork();
    if (r == 0) {
        shmkv_options ro = opts(SHMKV_BACKEND_MEMORY, 0, SHMKV_RDONLY);
        shmkv_db *d = NULL;
        KID_OK(shmkv_open(where, &ro, &d));
        KID_CHECK(d->m->rdonly, "the reader does not have a read-only mapping");
        uint64_t end = rel_now_ns() + (uint64_t)secs * 1000000000u, reads = 0, lists = 0;
        char got[512];
        while (rel_now_ns() < end) {
            for (int i = 0; i < HOT; i++) {
                int kl = snprintf(k, sizeof k, "hot%d", i);
                size_t gl = 0;
                int rc = shmkv_get(d, k, (size_t)kl, got, sizeof got, &gl, NULL);
                KID_CHECK(rc == 0, "get(%s) -> %d (%s)", k, rc, shmkv_strerror(rc));
                KID_CHECK(value_ok(got, gl, i), "get(%s): a torn or mis-sized value (%zu bytes)",
                          k, gl);
                KID_CHECK(shmkv_exists(d, k, (size_t)kl) == 1, "exists(%s)", k);
                reads++;
            }
            if (reads % 64 == 0) {
                int seen = 0;
                int rc = shmkv_list(d, "hot", 3, 0, 0, hot_cb, &seen);
                KID_CHECK(rc == 0 && seen == HOT, "list(hot) -> %d, %d keys", rc, seen);
                uint64_t sz = shmkv_size(d);
                KID_CHECK(sz >= HOT && sz <= HOT + 5000, "size() = %" PRIu64, sz);
                lists++;
            }
        }
        fprintf(stderr, "readonly: %" PRIu64 " checked reads and %" PRIu64
                " listings by a read-only process among two writers\n", reads, lists);
        KID_CHECK(reads > 100, "only %" PRIu64 " reads", reads);
        KID_OK(shmkv_close(d));
        _exit(0);
    }
    rc_wait_ok(w1, "writer 1");
    rc_wait_ok(w2, "writer 2");
    rc_wait_ok(r, "read-only reader");
    RC_OK(shmkv_close(db));
}

/* ---- a holder that died ------------------------------------------------------ */

static void die_before_publish(const char *point)
{
    if (strcmp(point, "set.before_publish") == 0)
        raise(SIGKILL);
}

Test(readonly, dead_holder_does_not_stop_reader)
{
    const char *where = rc_name("dead");
    shmkv_options o = opts(SHMKV_BACKEND_MEMORY, 0, 0);
    o.segments = 1;
    shmkv_db *db = NULL;
    RC_OK(shmkv_open(where, &o, &db)); /* a writer stays attached throughout */
    RC_OK(shmkv_set(db, "k", 1, "old", 3, SHMKV_KIND_STRING));
    pid_t w = rc_fork();
    if (w == 0) {
        shmkv_db *d = NULL;
        KID_OK(shmkv_open(where, &o, &d));
        shmkv__test_hook = die_before_publish;
        shmkv_set(d, "k", 1, "new", 3, SHMKV_KIND_STRING);
        _exit(4);
    }
    int st = rc_wait(w);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the writer was to die holding the lock");
    pid_t r = rc_fork();
    if (r == 0) {
        alarm(20);
        shmkv_options ro = opts(SHMKV_BACKEND_MEMORY, 0, SHMKV_RDONLY);
        shmkv_db *d = NULL;
        KID_OK(shmkv_open(where, &ro, &d));
        uint64_t t0 = rel_now_ns();
        char got[8];
        size_t gl = 0;
        int rc = shmkv_get(d, "k", 1, got, sizeof got, &gl, NULL);
        KID_CHECK(rc == 0 && gl == 3 && memcmp(got, "old", 3) == 0,
                  "get under a dead holder -> %d (%s)", rc, shmkv_strerror(rc));
        KID_CHECK(shmkv_size(d) == 1, "size() = %" PRIu64, shmkv_size(d));
        KID_CHECK(rel_now_ns() - t0 < 2000000000u, "the reader waited for a dead holder");
        KID_OK(shmkv_close(d));
        _exit(0);
    }
    rc_wait_ok(r, "the read-only reader");
    /* and the writer that stayed repairs it on its next lock */
    char got[8];
    size_t gl = 0;
    RC_OK(shmkv_get(db, "k", 1, got, sizeof got, &gl, NULL));
    cr_assert(gl == 3 && memcmp(got, "old", 3) == 0);
    RC_OK(shmkv_set(db, "k", 1, "v2", 2, SHMKV_KIND_STRING));
    RC_OK(shmkv_close(db));
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
    const char *orig = rc_path("orig");
    const char *copy = rc_path("copy");
    shmkv_options o = opts(SHMKV_BACKEND_DISK, 0, 0);
    o.segments = 1;
    shmkv_db *db = NULL;
    RC_OK(shmkv_open(orig, &o, &db));
    RC_OK(shmkv_set(db, "k", 1, "old", 3, SHMKV_KIND_STRING));
    RC_OK(shmkv_close(db));
    int ready[2];
    cr_assert(pipe(ready) == 0);
    pid_t w = rc_fork();
    if (w == 0) {
        close(ready[0]);
        shmkv_db *d = NULL;
        KID_OK(shmkv_open(orig, &o, &d));
        shmkv__test_hook = pause_in_set;
        KID_CHECK(write(ready[1], "r", 1) == 1, "pipe");
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
            rel_sleep_us(1000);
    }
    cr_assert(held, "the writer never entered its critical section");
    kill(w, SIGKILL);
    rc_wait(w);

    pid_t k = rc_fork();
    if (k == 0) {
        alarm(20); /* a hang is the failure this guards against */
        shmkv_options ro = opts(SHMKV_BACKEND_DISK, 0, SHMKV_RDONLY);
        shmkv_db *r = NULL;
        KID_OK(shmkv_open(copy, &ro, &r));
        char got[8];
        size_t gl = 0;
        int rc = shmkv_get(r, "k", 1, got, sizeof got, &gl, NULL);
        KID_CHECK(rc == 0 && gl == 3 && memcmp(got, "old", 3) == 0,
                  "read-only get on the copy -> %d (%s)", rc, shmkv_strerror(rc));
        KID_CHECK(shmkv_size(r) == 1, "size() = %" PRIu64, shmkv_size(r));
        /* a writer joins while the reader stays attached */
        shmkv_db *d = NULL;
        KID_OK(shmkv_open(copy, &o, &d));
        KID_OK(shmkv_set(d, "k", 1, "v2", 2, SHMKV_KIND_STRING));
        KID_OK(shmkv_set(d, "k2", 2, "x", 1, SHMKV_KIND_STRING));
        rc = shmkv_get(r, "k", 1, got, sizeof got, &gl, NULL);
        KID_CHECK(rc == 0 && gl == 2 && memcmp(got, "v2", 2) == 0,
                  "the reader after the writer's set -> %d", rc);
        KID_CHECK(shmkv_size(r) == 2, "size() = %" PRIu64, shmkv_size(r));
        KID_OK(shmkv_close(d));
        KID_OK(shmkv_close(r));
        _exit(0);
    }
    rc_wait_ok(k, "reader and writer on the copied store");
}
