/*
 * test_diskfull.c - a store whose file system fills up.
 *
 * A forked child enters a private mount namespace (unshare(CLONE_NEWNS)
 * after making every mount private, so nothing leaks to the host) and
 * mounts a 2 MiB tmpfs: on a scratch directory for the disk backend, over
 * /dev/shm for the memory backend. There it fills a store until a set
 * fails, and checks:
 *   - the failure is -ENOSPC and shmkv_strerror() says so plainly;
 *   - the failed set changed nothing, every earlier key reads back intact,
 *     size() is right, nobody got SIGBUS;
 *   - with key tracking: a writer killed inside an index update while the
 *     file system is full (so the index must be rebuilt, which allocates
 *     every key blob anew) does not wedge the store: deletes, rewrites,
 *     list() and random_key() still work;
 *   - after deleting half of the keys, the deleted keys can be written
 *     again (the freed blocks are reused without growing the file);
 *   - after `mount -o remount,size=8m` the store grows again: as many new
 *     keys as it held at the first failure fit, and everything reads back,
 *     also after a close and reopen.
 * When the namespace or the mount is refused (EPERM, e.g. without root),
 * the child says so and uses RLIMIT_FSIZE instead (raised later in place
 * of the remount). On the CI machine mounting is permitted, and the test
 * insists on tmpfs there unless SHMKV_REL_ALLOW_FSIZE=1.
 */
#include "harness.h"

#include "internal.h" /* shmkv__test_hook */

#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/statvfs.h>

TestSuite(diskfull, .init = t_setup, .fini = t_teardown, .timeout = 300);

#define VAL_LEN 200

typedef struct fullres {
    int mode;          /* 1 tmpfs, 2 RLIMIT_FSIZE */
    uint64_t first;    /* keys stored when the first set failed */
    int first_rc;
    uint64_t rewritten;
    uint64_t second;   /* new keys after the remount */
    uint64_t avail_at_full; /* bytes the file system still had */
} fullres;

static void make_val(char *v, uint64_t i, int gen)
{
    uint64_t x = i * 0x9e3779b97f4a7c15ull + (uint64_t)gen;
    for (int j = 0; j < VAL_LEN; j++) {
        x ^= x >> 13;
        x *= 0xff51afd7ed558ccdull;
        v[j] = (char)('A' + (x >> 59));
    }
}

static int key_of(char *k, uint64_t i)
{
    return sprintf(k, "key-%07" PRIu64, i);
}

static void kid_expect(shmkv_db *db, uint64_t i, int gen)
{
    char k[32], v[VAL_LEN], got[VAL_LEN + 8];
    int kl = key_of(k, i);
    make_val(v, i, gen);
    size_t gl = 0;
    int rc = shmkv_get(db, k, (size_t)kl, got, sizeof got, &gl, NULL);
    CHILD_CHECK(rc == 0, "get(%s) -> %d (%s)", k, rc, shmkv_strerror(rc));
    CHILD_CHECK(gl == VAL_LEN && memcmp(got, v, VAL_LEN) == 0, "%s holds the wrong value", k);
}

static void grow_fs(int mode, const char *mnt)
{
    if (mode == 1) {
        CHILD_CHECK(mount(NULL, mnt, NULL, MS_REMOUNT | MS_NOSUID | MS_NODEV, "size=8m") == 0,
                  "remount,size=8m: %s", strerror(errno));
    } else {
        struct rlimit rl = {8u << 20, 8u << 20};
        CHILD_CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0, "setrlimit: %s", strerror(errno));
    }
}

static int count_cb(void *ctx, const void *k, size_t kl, const void *v, size_t vl, shmkv_kind kind)
{
    (void)k, (void)kl, (void)v, (void)vl, (void)kind;
    ++*(uint64_t *)ctx;
    return 0;
}

static void __attribute__((noreturn))
kid_fill(shmkv_backend be, int track, const char *mnt, const char *where, int resfd)
{
    fullres res;
    memset(&res, 0, sizeof res);
    res.mode = t_child_small_fs(mnt, NULL);

    shmkv_options o;
    memset(&o, 0, sizeof o);
    o.backend = be;
    o.track_keys = track;
    shmkv_db *db = NULL;
    CHILD_OK(shmkv_open(where, &o, &db));

    /* 1. fill until the file system says no */
    char k[32], v[VAL_LEN];
    uint64_t n = 0;
    int rc;
    for (;; n++) {
        int kl = key_of(k, n);
        make_val(v, n, 0);
        rc = shmkv_set(db, k, (size_t)kl, v, VAL_LEN, SHMKV_KIND_BYTES);
        if (rc)
            break;
        CHILD_CHECK(n < 1000000, "2 MiB never filled up");
    }
    res.first = n;
    res.first_rc = rc;
    struct statvfs sv;
    if (statvfs(mnt, &sv) == 0)
        res.avail_at_full = (uint64_t)sv.f_bavail * sv.f_frsize;
    CHILD_CHECK(rc == -ENOSPC, "the first failing set returned %d (%s), expected -ENOSPC", rc,
              shmkv_strerror(rc));
    const char *msg = shmkv_strerror(rc);
    CHILD_CHECK(strstr(msg, "no space") != NULL && strstr(msg, be == SHMKV_BACKEND_MEMORY ? "/dev/shm" : "disk"),
              "shmkv_strerror(-ENOSPC) = \"%s\"", msg);
    CHILD_CHECK(n > 1000, "only %" PRIu64 " keys fit in 2 MiB", n);

    /* 2. the failed set changed nothing; everything before it is intact */
    int kl = key_of(k, n);
    CHILD_CHECK(shmkv_exists(db, k, (size_t)kl) == 0, "the failed set left %s behind", k);
    CHILD_CHECK(shmkv_size(db) == n, "size() = %" PRIu64 ", expected %" PRIu64, shmkv_size(db), n);
    for (uint64_t i = 0; i < n; i++)
        kid_expect(db, i, 0);
    /* still full: a second attempt fails the same way */
    rc = shmkv_set(db, k, (size_t)kl, v, VAL_LEN, SHMKV_KIND_BYTES);
    CHILD_CHECK(rc == -ENOSPC, "set on a full fs again -> %d (%s)", rc, shmkv_strerror(rc));

    /* 2b. tracked: a writer dies inside an index update on the full fs;
     * the next index user must rebuild the index without new room */
    if (track == SHMKV_TRACK_ON) {
        pid_t g = t_fork_raw();
        CHILD_CHECK(g >= 0, "fork");
        if (g == 0) {
            shmkv_db *d = NULL;
            CHILD_OK(shmkv_open(where, &o, &d));
            t_hook_kill_at("index.remove.mid", 0);
            kl = key_of(k, 1);
            shmkv_delete(d, k, (size_t)kl, NULL);
            _exit(4); /* never reached the hook */
        }
        int gst = 0;
        CHILD_CHECK(t_reap(g, &gst) == 0 && WIFSIGNALED(gst) && WTERMSIG(gst) == SIGKILL,
                  "the writer was to die inside the index update");
        /* killed before the tombstone was published: key 1 is still there */
        CHILD_CHECK(shmkv_size(db) == n, "size() after the index death: %" PRIu64, shmkv_size(db));
        char rk[32];
        size_t rl = 0;
        rc = shmkv_random_key(db, NULL, 0, rk, sizeof rk, &rl);
        CHILD_CHECK(rc == 0, "random_key needing an index rebuild on a full fs -> %d (%s)", rc,
                  shmkv_strerror(rc));
        uint64_t listed = 0;
        rc = shmkv_list(db, NULL, 0, 0, SHMKV_LIST_KEYS_ONLY, count_cb, &listed);
        CHILD_CHECK(rc == 0 && listed == n, "list after the rebuild -> %d, %" PRIu64 " keys", rc,
                  listed);
    }

    /* 3. delete every other key: those keys can be written again */
    for (uint64_t i = 0; i < n; i += 2) {
        int existed = 0;
        kl = key_of(k, i);
        CHILD_OK(shmkv_delete(db, k, (size_t)kl, &existed));
        CHILD_CHECK(existed, "delete(%s): it was not there", k);
    }
    CHILD_CHECK(shmkv_size(db) == n / 2, "size() after deleting half: %" PRIu64, shmkv_size(db));
    for (uint64_t i = 0; i < n; i += 2) {
        kl = key_of(k, i);
        make_val(v, i, 1);
        rc = shmkv_set(db, k, (size_t)kl, v, VAL_LEN, SHMKV_KIND_BYTES);
        CHILD_CHECK(rc == 0, "rewriting deleted key %s on a full fs -> %d (%s)", k, rc,
                  shmkv_strerror(rc));
        res.rewritten++;
    }
    for (uint64_t i = 0; i < n; i++)
        kid_expect(db, i, (i % 2) == 0);

    /* 4. more room: the store grows again */
    grow_fs(res.mode, mnt);
    for (uint64_t i = n; i < 2 * n; i++) {
        kl = key_of(k, i);
        make_val(v, i, 0);
        rc = shmkv_set(db, k, (size_t)kl, v, VAL_LEN, SHMKV_KIND_BYTES);
        CHILD_CHECK(rc == 0, "set(%s) after the file system grew -> %d (%s)", k, rc,
                  shmkv_strerror(rc));
        res.second++;
    }
    CHILD_CHECK(shmkv_size(db) == 2 * n, "size() = %" PRIu64, shmkv_size(db));
    if (track == SHMKV_TRACK_ON) {
        char rk[32];
        size_t rl = 0;
        for (int d = 0; d < 200; d++) {
            CHILD_OK(shmkv_random_key(db, NULL, 0, rk, sizeof rk, &rl));
            CHILD_CHECK(shmkv_exists(db, rk, rl) == 1, "random_key drew a missing key");
        }
    }

    /* 5. and it all survives a close and reopen (the memory store needs a
     * second handle open, or the last close would remove it) */
    shmkv_db *keep = NULL;
    if (be == SHMKV_BACKEND_MEMORY)
        CHILD_OK(shmkv_open(where, &o, &keep));
    CHILD_OK(shmkv_close(db));
    CHILD_OK(shmkv_open(where, &o, &db));
    for (uint64_t i = 0; i < 2 * n; i++)
        kid_expect(db, i, i < n && (i % 2) == 0);
    CHILD_OK(shmkv_close(db));
    if (keep)
        CHILD_OK(shmkv_close(keep));

    CHILD_CHECK(fd_write_all(resfd, &res, sizeof res) == 0, "pipe");
    _exit(0);
}

static void run_full(shmkv_backend be, int track)
{
    fullres res;
    t_small_fs_run(be, track, "full", kid_fill, &res, sizeof res);
    fprintf(stderr,
            "diskfull: %s backend, track_keys %s, %s: full after %" PRIu64 " keys of %d bytes "
            "(set -> %d, %" PRIu64 " KiB left); %" PRIu64 " deleted keys rewritten; "
            "%" PRIu64 " more keys after growing to 8 MiB\n",
            be == SHMKV_BACKEND_MEMORY ? "memory" : "disk", track == SHMKV_TRACK_ON ? "on" : "off",
            res.mode == 1 ? "2 MiB tmpfs" : "RLIMIT_FSIZE 2 MiB", res.first, VAL_LEN,
            res.first_rc, res.avail_at_full >> 10, res.rewritten, res.second);
}

Test(diskfull, disk_untracked)
{
    run_full(SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF);
}

Test(diskfull, disk_tracked)
{
    run_full(SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
}

Test(diskfull, memory_untracked)
{
    run_full(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_OFF);
}

Test(diskfull, memory_tracked)
{
    run_full(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_ON);
}

/* ---- an unclean tracked store on a full file system (issue 10, item 5) ---- */

typedef struct uncleanres {
    uint64_t keys;
    int ro_rc, rw_rc, grown;
    int deferred; /* the open left the index for a later rebuild */
} uncleanres;

/* Keys of many lengths (6 to 35 bytes) in scattered order, so the index's
 * blobs fall in several size classes and its chunks are not filled in key
 * order. A rebuild from scratch then does not land exactly where the old
 * index was, which on a full file system is what used to fail: on 2 and 4
 * MiB tmpfs, both reproduced the -ENOSPC at open before the fix. The
 * numbers are distinct for the first million i (checked offline). */
static int ukey_of(char *k, uint64_t i)
{
    return sprintf(k, "key-%" PRIu64 "-%.*s", (uint64_t)(i * 0x9e3779b97f4a7c15ull) >> 20,
                   (int)(i % 17), "abcdefghijklmnopq");
}

static void kid_uexpect(shmkv_db *db, uint64_t i)
{
    char k[64], v[VAL_LEN], got[VAL_LEN + 8];
    int kl = ukey_of(k, i);
    make_val(v, i, 0);
    size_t gl = 0;
    int rc = shmkv_get(db, k, (size_t)kl, got, sizeof got, &gl, NULL);
    CHILD_CHECK(rc == 0, "get(%s) -> %d (%s)", k, rc, shmkv_strerror(rc));
    CHILD_CHECK(gl == VAL_LEN && memcmp(got, v, VAL_LEN) == 0, "%s holds the wrong value", k);
}

static unsigned char *kid_slurp(const char *p, size_t n)
{
    unsigned char *b = malloc(n ? n : 1);
    CHILD_CHECK(b != NULL, "malloc");
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    CHILD_CHECK(fd >= 0 && fd_read_all(fd, b, n) == (ssize_t)n, "read %s", p);
    close(fd);
    return b;
}

static void kid_open_must_work(shmkv_db *db, uint64_t n, bool ro)
{
    CHILD_CHECK(shmkv_size(db) == n, "size() = %" PRIu64 ", expected %" PRIu64, shmkv_size(db), n);
    for (uint64_t i = 0; i < n; i++)
        kid_uexpect(db, i);
    uint64_t listed = 0;
    int rc = shmkv_list(db, NULL, 0, 0, SHMKV_LIST_KEYS_ONLY, count_cb, &listed);
    CHILD_CHECK(rc == 0 && listed == n, "%s list -> %d (%s), %" PRIu64 " of %" PRIu64 " keys",
              ro ? "read-only" : "read-write", rc, shmkv_strerror(rc), listed, n);
    uint64_t want = 0;
    for (uint64_t i = 0; i < n; i++) {
        char k[64];
        ukey_of(k, i);
        want += strncmp(k, "key-12", 6) == 0;
    }
    listed = 0;
    rc = shmkv_list(db, "key-12", 6, 0, 0, count_cb, &listed);
    CHILD_CHECK(rc == 0 && listed == want, "list(prefix) -> %d, %" PRIu64 " keys, expected %" PRIu64,
              rc, listed, want);
    for (int d = 0; d < 50; d++) {
        char rk[64];
        size_t rl = 0;
        rc = shmkv_random_key(db, d & 1 ? "key-1" : NULL, d & 1 ? 5 : 0, rk, sizeof rk, &rl);
        CHILD_CHECK(rc == 0, "%s random_key -> %d (%s)", ro ? "read-only" : "read-write", rc,
                  shmkv_strerror(rc));
        CHILD_CHECK(shmkv_exists(db, rk, rl) == 1, "random_key drew a missing key");
    }
}

/* The tmpfs options of run_unclean()'s child (NULL: the default 2 MiB). */
static const char *unclean_fs;

static void __attribute__((noreturn)) kid_unclean(const char *mnt, const char *where,
                                                  const char *point, int resfd)
{
    uncleanres res;
    memset(&res, 0, sizeof res);
    CHILD_CHECK(t_child_small_fs(mnt, unclean_fs) == 1, "this test needs a real tmpfs");
    shmkv_options o;
    memset(&o, 0, sizeof o);
    o.backend = SHMKV_BACKEND_DISK;
    o.track_keys = SHMKV_TRACK_ON;

    /* A writer fills the store until the file system is full, then dies:
     * nobody closes the store, so the next opener finds it unclean. With a
     * point, it dies inside a critical section (an index update), so the
     * index is also left for a rebuild. */
    int np[2];
    CHILD_CHECK(pipe(np) == 0, "pipe");
    pid_t w = t_fork_raw();
    CHILD_CHECK(w >= 0, "fork");
    if (w == 0) {
        close(np[0]);
        shmkv_db *db = NULL;
        CHILD_OK(shmkv_open(where, &o, &db));
        char k[64], v[VAL_LEN];
        uint64_t n = 0;
        for (;; n++) {
            int kl = ukey_of(k, n);
            make_val(v, n, 0);
            if (shmkv_set(db, k, (size_t)kl, v, VAL_LEN, SHMKV_KIND_BYTES) != 0)
                break;
        }
        CHILD_CHECK(fd_write_all(np[1], &n, sizeof n) == 0, "pipe");
        if (point) {
            /* delete the last key, dying inside the index update: the
             * tombstone is not published yet, so the key stays */
            t_hook_kill_at(point, 0);
            int kl = ukey_of(k, n - 1);
            shmkv_delete(db, k, (size_t)kl, NULL);
        }
        raise(SIGKILL);
        _exit(4);
    }
    close(np[1]);
    uint64_t n = 0;
    CHILD_CHECK(fd_read_all(np[0], &n, sizeof n) == (ssize_t)sizeof n, "the writer's key count");
    close(np[0]);
    int wst = 0;
    CHILD_CHECK(t_reap(w, &wst) == 0 && WIFSIGNALED(wst) && WTERMSIG(wst) == SIGKILL,
              "the writer was to be killed");
    res.keys = n;
    CHILD_CHECK(n > 1000, "only %" PRIu64 " keys fit", n);
    /* and whatever room the store left is taken by another file */
    const char *filler = t_str("%s/filler", mnt);
    int ffd = open(filler, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHILD_CHECK(ffd >= 0, "filler: %s", strerror(errno));
    static const char page[4096];
    while (write(ffd, page, sizeof page) == (ssize_t)sizeof page) {
    }
    while (write(ffd, page, 1) == 1) {
    }
    close(ffd);

    /* read-only first: it opens, reads everything, and writes nothing
     * (not even the repair: it needs no room, and no write permission) */
    struct stat before, after;
    CHILD_CHECK(stat(where, &before) == 0, "stat");
    unsigned char *bytes0 = kid_slurp(where, (size_t)before.st_size);
    shmkv_options ro = o;
    ro.flags = SHMKV_RDONLY;
    shmkv_db *db = NULL;
    res.ro_rc = shmkv_open(where, &ro, &db);
    CHILD_CHECK(res.ro_rc == 0, "read-only open of the unclean store on a full fs -> %d (%s)",
              res.ro_rc, shmkv_strerror(res.ro_rc));
    kid_open_must_work(db, n, true);
    CHILD_OK(shmkv_close(db));
    CHILD_CHECK(stat(where, &after) == 0, "stat");
    CHILD_CHECK(after.st_size == before.st_size &&
                  after.st_mtim.tv_sec == before.st_mtim.tv_sec &&
                  after.st_mtim.tv_nsec == before.st_mtim.tv_nsec,
              "the read-only open wrote to the store");
    unsigned char *bytes1 = kid_slurp(where, (size_t)after.st_size);
    CHILD_CHECK(memcmp(bytes0, bytes1, (size_t)after.st_size) == 0,
              "the read-only open changed the store's bytes");
    free(bytes0);
    free(bytes1);

    /* read-write: it opens (the repair needs no new room), and works */
    res.rw_rc = shmkv_open(where, &o, &db);
    CHILD_CHECK(res.rw_rc == 0, "open of the unclean store on a full fs -> %d (%s)", res.rw_rc,
              shmkv_strerror(res.rw_rc));
    res.deferred = (int)atomic_load(&shmkv__index_of(db->m)->dirty);
    kid_open_must_work(db, n, false);
    char k[64], v[VAL_LEN];
    for (uint64_t i = 0; i < n; i += 2) {
        int existed = 0, kl = ukey_of(k, i);
        CHILD_OK(shmkv_delete(db, k, (size_t)kl, &existed));
        CHILD_CHECK(existed, "delete(%s): not there", k);
    }
    for (uint64_t i = 0; i < n; i += 2) {
        int kl = ukey_of(k, i);
        make_val(v, i, 0);
        int rc = shmkv_set(db, k, (size_t)kl, v, VAL_LEN, SHMKV_KIND_BYTES);
        CHILD_CHECK(rc == 0, "rewriting %s on the full fs -> %d (%s)", k, rc, shmkv_strerror(rc));
    }
    kid_open_must_work(db, n, false);

    /* with room again, new keys go in and the index is whole */
    CHILD_CHECK(mount(NULL, mnt, NULL, MS_REMOUNT | MS_NOSUID | MS_NODEV, "size=16m") == 0,
              "remount,size=16m: %s", strerror(errno));
    for (uint64_t i = n; i < n + 500; i++) {
        int kl = ukey_of(k, i);
        make_val(v, i, 0);
        CHILD_OK(shmkv_set(db, k, (size_t)kl, v, VAL_LEN, SHMKV_KIND_BYTES));
    }
    res.grown = 500;
    kid_open_must_work(db, n + 500, false);
    CHILD_OK(shmkv_close(db));
    CHILD_OK(shmkv_open(where, &o, &db));
    kid_open_must_work(db, n + 500, false);
    /* the index left for later was rebuilt once there was room */
    CHILD_CHECK(atomic_load(&shmkv__index_of(db->m)->dirty) == 0, "the index is still marked dirty");
    CHILD_OK(shmkv_close(db));

    CHILD_CHECK(fd_write_all(resfd, &res, sizeof res) == 0, "pipe");
    _exit(0);
}

static void run_unclean(const char *fs, const char *point)
{
    unclean_fs = fs;
    const char *mnt;
    const char *where = t_small_fs_store(SHMKV_BACKEND_DISK, "store", &mnt);
    int fd;
    pid_t kid = t_fork_reporting(&fd);
    if (kid == 0)
        kid_unclean(mnt, where, point, fd);
    uncleanres res;
    t_collect_report(kid, fd, &res, sizeof res, t_str("the test child (%s)", fs));
    fprintf(stderr,
            "diskfull: unclean tracked store (writer killed %s) on a full tmpfs (%s), %" PRIu64
            " keys: read-only and read-write opens work (index %s), %d more keys after growing\n",
            point ? point : "after the failed set", fs, res.keys,
            res.deferred ? "left for a later rebuild" : "rebuilt at open", res.grown);
}

Test(diskfull, unclean_tracked_store_opens_when_full)
{
    run_unclean("size=2m,mode=0700", NULL);
    run_unclean("size=4m,mode=0700", NULL);
}

Test(diskfull, unclean_store_with_dead_index_writer_opens_when_full)
{
    run_unclean("size=2m,mode=0700", "index.remove.mid");
    run_unclean("size=4m,mode=0700", "index.remove.mid");
}

/* ---- an index rebuild that finds no room ---------------------------------- */

/* An index that cannot be rebuilt for want of room stays marked dirty; the
 * store goes on without it (writes leave it to the rebuild, listing and
 * counting scan the tables), a process tries again at most once a second,
 * and once a try succeeds the same handle uses the index again. The unclean
 * tests above reach that state only when their repair happens to find no
 * room (on this machine it finds room: the rebuild reuses the old index's
 * space), so this test starts from it: it marks the index as a failed try
 * leaves it, and then fills the store so that every try fails until keys
 * are deleted. */
static uint64_t dkey(char *k, uint64_t i)
{
    return (uint64_t)snprintf(k, 24, "d:%06" PRIu64, i);
}

static void expect_keys(shmkv_db *db, uint64_t n, const char *what)
{
    uint64_t c = 0;
    T_OK(shmkv_count(db, "d:", 2, &c));
    cr_assert_eq(c, n, "%s: count %" PRIu64 ", expected %" PRIu64, what, c, n);
    t_kvlist l = {0};
    T_OK(t_list_all(db, "d:", 2, 0, 0, &l));
    cr_assert_eq(l.n, n, "%s: listed %zu keys, expected %" PRIu64, what, l.n, n);
    t_assert_sorted(&l);
    t_kvlist_free(&l);
    char k[64];
    size_t kl = 0;
    T_OK(shmkv_random_key(db, "d:", 2, k, sizeof k, &kl));
    cr_assert(kl == 8 && shmkv_exists(db, k, kl) == 1, "%s: random_key gave %.*s", what, (int)kl,
              k);
}

static void deferred_rebuild(shmkv_backend be)
{
    const char *where = t_where(be, "defer");
    shmkv_options o = t_opts(be, SHMKV_TRACK_ON);
    o.reserve = SHMKV_RESERVE_MIN;
    shmkv_db *db = t_open_opts(where, &o);
    shmkv__map *m = db->m;
    shmkv__index *index = shmkv__index_of(m);
    char k[24];
    uint64_t n = 0;
    for (; n < 300; n++)
        T_OK(shmkv_set(db, k, dkey(k, n), "v", 1, SHMKV_KIND_STRING));

    /* as a failed try leaves it: marked, the next try a second away */
    atomic_store(&index->dirty, 1);
    atomic_store(&m->index_retry_ns, shmkv__mono_ns() + 1000000000u);
    for (;; n++) {
        int rc = shmkv_set(db, k, dkey(k, n), "v", 1, SHMKV_KIND_STRING);
        if (rc) {
            cr_assert(t_full(rc), "set while the index is marked -> %s", shmkv_strerror(rc));
            break;
        }
    }
    cr_assert_gt(n, 1000, "only %" PRIu64 " keys fit", n);
    cr_assert_eq(atomic_load(&index->dirty), 1);
    expect_keys(db, n, "full, index marked");

    /* the next try comes with the next write after a second, and fails:
     * the index needs room for every key, and the store is full */
    usleep(1100 * 1000);
    uint64_t t0 = shmkv__mono_ns();
    int existed = 0;
    T_OK(shmkv_delete(db, k, dkey(k, --n), &existed));
    cr_assert(existed);
    cr_assert_eq(atomic_load(&index->dirty), 1, "rebuilt in a full store");
    cr_assert_geq(atomic_load(&m->index_retry_ns), t0 + 1000000000u,
                  "no try was made, or a failed try did not put the next one off");
    expect_keys(db, n, "after a failed try");

    /* batches go on without it too: deletes need no room (they failed
     * with SHMKV_EFULL, each trying the rebuild again) */
    char k1[24], k2[24];
    shmkv_item del[2] = {{.key = k1, .klen = dkey(k1, n - 1)}, {.key = k2, .klen = dkey(k2, n - 2)}};
    uint64_t gone = 0;
    size_t bad = 0;
    int rc = shmkv_delete_many(db, del, 2, &gone, &bad);
    cr_assert_eq(rc, 0, "delete_many while the index waits for room -> %s", shmkv_strerror(rc));
    cr_assert_eq(gone, 2);
    n -= 2;
    dkey(k1, n - 1); /* the whole key as a prefix: one key */
    rc = shmkv_delete_prefix(db, k1, 8, 0, &gone);
    cr_assert_eq(rc, 0, "delete_prefix while the index waits for room -> %s", shmkv_strerror(rc));
    cr_assert_eq(gone, 1);
    n -= 1;
    /* with a limit on a tracked store, the first keys in key order go, as
     * through the index (the tables' order would take any three) */
    rc = shmkv_delete_prefix(db, "d:", 2, 3, &gone);
    cr_assert(rc == 0 && gone == 3, "delete_prefix(limit 3) -> %s, %" PRIu64 " deleted",
              shmkv_strerror(rc), gone);
    for (uint64_t i = 0; i < 3; i++)
        cr_assert_eq(shmkv_exists(db, k, dkey(k, i)), 0, "%s is not among the first 3 deleted", k);
    cr_assert_eq(atomic_load(&index->dirty), 1);
    expect_keys(db, n - 3, "after batches without the index");

    /* Room again: all but the first 200 keys deleted. The index needs
     * chunks of its own (about 80 bytes a key), and a segment gives a
     * chunk back to the pool only once all of its blocks are free: with a
     * third of the keys left, scattered, every chunk still held some and
     * the rebuild still found no room (which is right: it retries). Within
     * the second no try is made (each costs a pass over every table);
     * after it, the next write rebuilds. */
    for (uint64_t i = 200; i < n; i++)
        T_OK(shmkv_delete(db, k, dkey(k, i), &existed));
    if (shmkv__mono_ns() + 50000000u < atomic_load(&m->index_retry_ns))
        cr_assert_eq(atomic_load(&index->dirty), 1, "tried again within the second");
    n = 200 - 3; /* d:000003 to d:000199 */
    usleep(1100 * 1000);
    T_OK(shmkv_set(db, "other", 5, "v", 1, SHMKV_KIND_STRING));
    cr_assert_eq(atomic_load(&index->dirty), 0, "not rebuilt once there was room");
    cr_assert_eq(atomic_load(&m->index_retry_ns), 0);
    expect_keys(db, n, "rebuilt");
    t_check_sound(db, "after the deferred rebuild");
    t_close(db);
    if (be == SHMKV_BACKEND_DISK)
        t_dump_sound(where, be);
}

Test(diskfull, index_rebuild_deferred_without_room_disk)
{
    deferred_rebuild(SHMKV_BACKEND_DISK);
}

Test(diskfull, index_rebuild_deferred_without_room_memory)
{
    deferred_rebuild(SHMKV_BACKEND_MEMORY);
}
