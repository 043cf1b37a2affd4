/*
 * test_space.c - how the store uses and reuses its space (issue 10, items
 * 3 and 7).
 *
 * Big blocks (item 3): a block that does not fit a largest chunk next to
 * others (over 4 MiB: big values, the key array past 2^19 keys, a table
 * past 2^18 slots) gets a chunk of its own, whatever its size, which is
 * what lets the key array and the tables grow past every size class
 * (test_limits.c goes past the old ceilings with tens of millions of keys,
 * plain build only). Here the same path runs at small sizes in every build:
 * big values and big index structures are written, replaced, freed and
 * reused, a process is killed in the middle of a big allocation, and the
 * store must read back right and pass shmkv-dump --check ($SHMKV_DUMP).
 */
#include "harness.h"

#include "internal.h" /* shmkv__test_hook */

#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/statvfs.h>

TestSuite(space, .init = t_setup, .fini = t_teardown, .timeout = 600);

/* A value whose bytes depend on (id, len), so a torn or misplaced value
 * cannot pass for another. */
static void fill_val(unsigned char *v, size_t len, uint64_t id)
{
    /* Eight bytes a step: the big values are tens of MiB, and sanitizer
     * builds pay for every iteration. */
    uint64_t x = t_mix(id * 0x9e3779b97f4a7c15ull + len);
    for (size_t i = 0; i < len; i += 8) {
        uint64_t w = t_mix(x + i);
        memcpy(v + i, &w, len - i < 8 ? len - i : 8);
    }
}

static void expect_val(shmkv_db *db, const char *k, size_t len, uint64_t id)
{
    unsigned char *want = malloc(len + 1), *got = malloc(len + 1);
    cr_assert(want && got);
    fill_val(want, len, id);
    size_t gl = 0;
    T_OK(shmkv_get(db, k, strlen(k), got, len + 1, &gl, NULL));
    cr_assert_eq(gl, len, "%s: %zu bytes, expected %zu", k, gl, len);
    cr_assert(memcmp(got, want, len) == 0, "%s holds the wrong bytes", k);
    free(want);
    free(got);
}

static void put_val(shmkv_db *db, const char *k, size_t len, uint64_t id)
{
    unsigned char *v = malloc(len ? len : 1);
    cr_assert(v);
    fill_val(v, len, id);
    T_OK(shmkv_set(db, k, strlen(k), v, len, SHMKV_KIND_BYTES));
    free(v);
}

static uint64_t file_bytes(shmkv_db *db)
{
    shmkv_info in;
    T_OK(shmkv_stat(db, &in));
    return in.file_bytes;
}

/* Values over 4 MiB are big blocks: written, replaced by small and big
 * ones, deleted, and their chunks reused by values of other sizes. */
static void big_values(shmkv_backend be)
{
    const char *where = be == SHMKV_BACKEND_MEMORY ? t_name("bigv") : t_path("bigv");
    shmkv_db *db = t_open(where, be, SHMKV_TRACK_ON);
    const size_t sizes[] = {(4u << 20) - 64, (4u << 20) + 1, 9u << 20, SHMKV_VALUE_MAX};
    char k[32];
    for (int i = 0; i < 4; i++) {
        snprintf(k, sizeof k, "big%d", i);
        put_val(db, k, sizes[i], (uint64_t)i);
    }
    put_val(db, "small", 100, 7);
    for (int i = 0; i < 4; i++) {
        snprintf(k, sizeof k, "big%d", i);
        expect_val(db, k, sizes[i], (uint64_t)i);
    }
    t_dump_check(where, be);
    uint64_t before = file_bytes(db);
    /* Replace and delete: the freed chunks must serve what comes next
     * (values of other sizes, and many small ones) without growing. */
    for (int round = 0; round < 2; round++) {
        T_OK(shmkv_delete(db, "big3", 4, NULL));
        put_val(db, "big3", SHMKV_VALUE_MAX - 4096u * (unsigned)round, 100u + (unsigned)round);
        put_val(db, "big2", 5u << 20, 200u + (unsigned)round);
        put_val(db, "big2", 10, 300u + (unsigned)round);
    }
    cr_assert_leq(file_bytes(db), before + (16u << 20),
                  "freed big chunks were not reused: %" PRIu64 " -> %" PRIu64 " bytes", before,
                  file_bytes(db));
    expect_val(db, "big2", 10, 301);
    expect_val(db, "big3", SHMKV_VALUE_MAX - 4096, 101);
    t_dump_check(where, be);
    T_OK(shmkv_close(db));
}

Test(space, big_values_disk)
{
    big_values(SHMKV_BACKEND_DISK);
}

Test(space, big_values_memory)
{
    big_values(SHMKV_BACKEND_MEMORY);
}

/* One segment with 270,000 keys: its table passes 2^18 slots and the key
 * array 2^19 entries, so both are big blocks; a full rebuild of the index
 * makes a big key array again. */
Test(space, big_table_and_key_array)
{
    const char *where = t_path("bigidx");
    shmkv_options o = {.backend = SHMKV_BACKEND_DISK, .track_keys = SHMKV_TRACK_ON,
                       .segments = 1};
    shmkv_db *db = NULL;
    T_OK(shmkv_open(where, &o, &db));
    const uint32_t n = 270000;
    char k[16];
    for (uint32_t i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof k, "k%06" PRIu32, i);
        T_OK(shmkv_set(db, k, (size_t)kl, "v", 1, SHMKV_KIND_STRING));
    }
    cr_assert_eq(shmkv_size(db), n);
    T_OK(shmkv_rebuild_index(db));
    size_t kl = 0;
    T_OK(shmkv_random_key(db, "k2", 2, k, sizeof k, &kl));
    cr_assert(kl == 7 && k[1] == '2');
    for (uint32_t i = 0; i < n; i += 20) {
        int l = snprintf(k, sizeof k, "k%06" PRIu32, i);
        T_OK(shmkv_delete(db, k, (size_t)l, NULL));
    }
    cr_assert_eq(shmkv_size(db), n - n / 20);
    T_OK(shmkv_close(db));
    T_OK(shmkv_open(where, &o, &db));
    cr_assert_eq(shmkv_size(db), n - n / 20);
    cr_assert_eq(shmkv_exists(db, "k000001", 7), 1);
    cr_assert_eq(shmkv_exists(db, "k000020", 7), 0);
    t_dump_check(where, SHMKV_BACKEND_DISK);
    T_OK(shmkv_close(db));
}

/* A writer killed inside a big allocation, or between writing a big value
 * and publishing it, or after publishing and before freeing the old one:
 * the next locker repairs the segment, no chunk is lost, and the store is
 * sound. */
Test(space, killed_inside_big_allocation)
{
    const char *points[] = {"alloc.big.mid", "set.before_publish", "set.after_publish"};
    const char *where = t_path("bigkill");
    shmkv_db *db = t_open(where, SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    put_val(db, "victim", 6u << 20, 1);
    for (int p = 0; p < 3; p++) {
        pid_t kid = t_fork();
        if (kid == 0) {
            shmkv_db *d = NULL;
            shmkv_options o = {.backend = SHMKV_BACKEND_DISK};
            CHILD_OK(shmkv_open(where, &o, &d));
            unsigned char *v = malloc(8u << 20);
            CHILD_CHECK(v != NULL, "malloc");
            fill_val(v, 8u << 20, 50u + (unsigned)p);
            t_hook_kill_at(points[p], 0);
            shmkv_set(d, "victim", 6, v, 8u << 20, SHMKV_KIND_BYTES);
            _exit(4); /* never reached the kill point */
        }
        int st = t_wait(kid);
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the writer was to die at %s",
                  points[p]);
        /* Old or new, never a mix. */
        unsigned char *got = malloc(8u << 20);
        size_t gl = 0;
        T_OK(shmkv_get(db, "victim", 6, got, 8u << 20, &gl, NULL));
        if (strcmp(points[p], "set.after_publish") == 0)
            cr_assert_eq(gl, 8u << 20, "published at %s but not there", points[p]);
        free(got);
        if (gl == 8u << 20)
            expect_val(db, "victim", gl, 50u + (unsigned)p);
        else
            expect_val(db, "victim", 6u << 20, 1);
        /* The repair ran on the lock above; the segment is whole again. */
        put_val(db, "victim", 6u << 20, 1);
        t_dump_check(where, SHMKV_BACKEND_DISK);
    }
    T_OK(shmkv_close(db));
}

/* Version 2 only adds encodings; a version 1 store opens as it is, and a
 * writer marks it version 2 before it can hold one (so that a version 1
 * library refuses it instead of taking a big block for damage). A
 * read-only opener leaves it alone. */
Test(space, version_1_store_is_upgraded_by_a_writer)
{
    const char *where = t_path("v1");
    shmkv_db *db = t_open(where, SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    put_val(db, "a", 10, 1);
    T_OK(shmkv_close(db));
    int fd = open(where, O_RDWR);
    cr_assert(fd >= 0);
    uint32_t v = 1;
    cr_assert_eq(pwrite(fd, &v, 4, 8), 4);
    shmkv_options o = {.backend = SHMKV_BACKEND_DISK, .flags = SHMKV_RDONLY};
    T_OK(shmkv_open(where, &o, &db));
    shmkv_info in;
    T_OK(shmkv_stat(db, &in));
    cr_assert_eq(in.format_version, 1);
    expect_val(db, "a", 10, 1);
    T_OK(shmkv_close(db));
    cr_assert_eq(pread(fd, &v, 4, 8), 4);
    cr_assert_eq(v, 1, "a read-only open changed the version");
    db = t_open(where, SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    T_OK(shmkv_stat(db, &in));
    cr_assert_eq(in.format_version, SHMKV__FORMAT_VERSION);
    put_val(db, "b", 5u << 20, 2);
    expect_val(db, "a", 10, 1);
    T_OK(shmkv_close(db));
    cr_assert_eq(pread(fd, &v, 4, 8), 4);
    cr_assert_eq(v, SHMKV__FORMAT_VERSION);
    close(fd);
    t_dump_check(where, SHMKV_BACKEND_DISK);
}

/* ---- item 7: freed space serves any size, in any segment ---------------- */

/* Fill/delete/refill on a 2 MiB file system. Each round fills the store
 * until the file system is full, checks every value, deletes every key and
 * checks size() is 0; the next round does the same with values of other
 * sizes. Freed space used to stay with its size class and its segment, so
 * after a round of 200-byte values not one 1,000-byte value fitted. Every
 * round must now store at least 3/4 of the value bytes the first one held
 * (size classes round blocks up by as much as a quarter, and per-key costs
 * differ with the value size), and a single value of 3/4 of that must fit
 * once everything is deleted. shmkv-dump --check then finds the store and
 * its free pool sound. */
#define ROUNDS 6

typedef struct cycres {
    int mode;
    uint64_t keys[ROUNDS];
    uint64_t bytes[ROUNDS];
    int last_rc[ROUNDS];
    int single_rc;
    uint64_t single_len;
} cycres;

static size_t round_len(int r, uint64_t i)
{
    switch (r) {
    case 0: return 200;
    case 1: return 1000;
    case 2: return 40 + (size_t)(t_mix(i) % 4000); /* mixed */
    case 3: return 16000;
    case 4: return 24 + (size_t)(t_mix(i + 7) % 300);
    default: return 200;
    }
}

static void kid_value(unsigned char *v, size_t len, uint64_t i, int r)
{
    fill_val(v, len, i * 16 + (uint64_t)r);
}

static void __attribute__((noreturn))
kid_cycle(shmkv_backend be, int track, const char *mnt, const char *where, int resfd)
{
    cycres res;
    memset(&res, 0, sizeof res);
    res.mode = t_child_small_fs(mnt, NULL);
    shmkv_options o = {.backend = be, .track_keys = track};
    shmkv_db *db = NULL;
    CHILD_OK(shmkv_open(where, &o, &db));
    static unsigned char v[1u << 20], got[1u << 20];
    char k[32];
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t n = 0;
        int rc;
        for (;; n++) {
            size_t len = round_len(r, n);
            int kl = snprintf(k, sizeof k, "r%d-%" PRIu64, r, n);
            kid_value(v, len, n, r);
            rc = shmkv_set(db, k, (size_t)kl, v, len, SHMKV_KIND_BYTES);
            if (rc)
                break;
            res.bytes[r] += len;
            CHILD_CHECK(n < 1000000, "2 MiB never filled up");
        }
        res.keys[r] = n;
        res.last_rc[r] = rc;
        CHILD_CHECK(rc == -ENOSPC, "round %d: the set that failed returned %d (%s)", r, rc,
                  shmkv_strerror(rc));
        CHILD_CHECK(shmkv_size(db) == n, "round %d: size() %" PRIu64 " of %" PRIu64, r,
                  shmkv_size(db), n);
        for (uint64_t i = 0; i < n; i++) {
            size_t len = round_len(r, i), gl = 0;
            int kl = snprintf(k, sizeof k, "r%d-%" PRIu64, r, i);
            kid_value(v, len, i, r);
            CHILD_OK(shmkv_get(db, k, (size_t)kl, got, sizeof got, &gl, NULL));
            CHILD_CHECK(gl == len && memcmp(got, v, len) == 0, "round %d: %s reads back wrong", r,
                      k);
        }
        /* The mixed round is emptied by clear(), the others key by key. */
        for (uint64_t i = 0; i < n && r != 2; i++) {
            int kl = snprintf(k, sizeof k, "r%d-%" PRIu64, r, i), existed = 0;
            CHILD_OK(shmkv_delete(db, k, (size_t)kl, &existed));
            CHILD_CHECK(existed, "round %d: %s was gone before its delete", r, k);
        }
        if (r == 2)
            CHILD_OK(shmkv_clear(db));
        CHILD_CHECK(shmkv_size(db) == 0, "round %d: size() %" PRIu64 " after deleting all", r,
                  shmkv_size(db));
    }
    /* Everything deleted: one value of 3/4 of what the first round held. */
    res.single_len = res.bytes[0] / 4 * 3;
    if (res.single_len > sizeof v)
        res.single_len = sizeof v;
    kid_value(v, res.single_len, 1, 99);
    res.single_rc = shmkv_set(db, "one", 3, v, res.single_len, SHMKV_KIND_BYTES);
    if (res.single_rc == 0) {
        size_t gl = 0;
        CHILD_OK(shmkv_get(db, "one", 3, got, sizeof got, &gl, NULL));
        CHILD_CHECK(gl == res.single_len && memcmp(got, v, gl) == 0, "the single value reads back wrong");
    }
    t_child_dump_check(where, be, false);
    CHILD_OK(shmkv_close(db));
    CHILD_CHECK(fd_write_all(resfd, &res, sizeof res) == 0, "pipe");
    _exit(0);
}

static void cycle(shmkv_backend be, int track)
{
    cycres res;
    t_small_fs_run(be, track, "cyc", kid_cycle, &res, sizeof res);
    fprintf(stderr, "space: %s backend, track_keys %s, %s:", be == SHMKV_BACKEND_MEMORY ? "memory" : "disk",
            track == SHMKV_TRACK_ON ? "on" : "off", res.mode == 1 ? "2 MiB tmpfs" : "RLIMIT_FSIZE");
    for (int r = 0; r < ROUNDS; r++)
        fprintf(stderr, " round %d: %" PRIu64 " keys, %" PRIu64 " KiB;", r, res.keys[r],
                res.bytes[r] >> 10);
    fprintf(stderr, " single value of %" PRIu64 " KiB -> %d\n", res.single_len >> 10,
            res.single_rc);
    for (int r = 1; r < ROUNDS; r++)
        cr_assert_geq(res.bytes[r] * 4, res.bytes[0] * 3,
                      "round %d stored %" PRIu64 " bytes of values after the store held %" PRIu64
                      " and all was deleted", r, res.bytes[r], res.bytes[0]);
    cr_assert_eq(res.single_rc, 0, "a %" PRIu64 "-byte value did not fit an emptied store: %s",
                 res.single_len, shmkv_strerror(res.single_rc));
}

Test(space, refill_disk_untracked)
{
    cycle(SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF);
}

Test(space, refill_disk_tracked)
{
    cycle(SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
}

Test(space, refill_memory_untracked)
{
    cycle(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_OFF);
}

Test(space, refill_memory_tracked)
{
    cycle(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_ON);
}

/* A process killed while it gives a chunk to the pool (deleting a big
 * value) or takes one from it (writing a big value into freed space) holds
 * the growth lock and a segment lock. With another process attached
 * (`alone` false), the next holders of those locks repair both (the pool's
 * byte count is recounted, the segment rebuilt). With no other process
 * attached, the next opener is alone, re-initialises the lock words (so no
 * lock reports a dead owner) and repairs the unclean store itself: the
 * pool's count must be right after that repair too, or the chunk is lost
 * to every later writer. Either way the operation is all or nothing, the
 * chunk is back in the pool, and shmkv_check and shmkv-dump --check are
 * clean. */
static void kill_inside_pool_change(bool alone)
{
    const char *points[] = {"pool.put.mid", "pool.take.mid"};
    for (int p = 0; p < 2; p++) {
        const char *where = t_path(alone ? "poolkill1" : "poolkill");
        shmkv_db *db = t_open(where, SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
        put_val(db, "b1", 5u << 20, 1);
        put_val(db, "small", 100, 2);
        if (p == 1)
            T_OK(shmkv_delete(db, "b1", 2, NULL)); /* its chunk to the pool */
        if (alone)
            T_OK(shmkv_close(db));
        pid_t kid = t_fork();
        if (kid == 0) {
            shmkv_db *d = NULL;
            shmkv_options o = {.backend = SHMKV_BACKEND_DISK};
            CHILD_OK(shmkv_open(where, &o, &d));
            unsigned char *v = malloc(5u << 20);
            CHILD_CHECK(v != NULL, "malloc");
            fill_val(v, 5u << 20, 3);
            t_hook_kill_at(points[p], 0);
            if (p == 0)
                shmkv_delete(d, "b1", 2, NULL);
            else
                shmkv_set(d, "b2", 2, v, 5u << 20, SHMKV_KIND_BYTES);
            _exit(4); /* never reached the kill point */
        }
        int st = t_wait(kid);
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the writer was to die at %s",
                  points[p]);
        if (alone)
            db = t_open(where, SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
        /* The delete was published before the free; the set never was. */
        cr_assert_eq(shmkv_exists(db, "b1", 2), 0);
        cr_assert_eq(shmkv_exists(db, "b2", 2), 0);
        expect_val(db, "small", 100, 2);
        uint64_t problems = 0;
        char msg[256] = "";
        cr_assert_eq(shmkv_check(db, &problems, msg, sizeof msg), 0,
                     "after a kill at %s (alone: %d): %s", points[p], alone, msg);
        /* The emptied chunk (or the one taken but never owned) is back in
         * the pool, counted. */
        cr_assert_geq(SHMKV__HDR(db->m)->pool_bytes, 5u << 20, "the chunk was lost at %s",
                      points[p]);
        /* A big value and a few small ones fit without the file growing. */
        put_val(db, "b3", 5u << 20, 4);
        for (int i = 0; i < 50; i++) {
            char k[16];
            snprintf(k, sizeof k, "s%d", i);
            put_val(db, k, 300, (uint64_t)i);
        }
        expect_val(db, "b3", 5u << 20, 4);
        expect_val(db, "s49", 300, 49);
        t_dump_check(where, SHMKV_BACKEND_DISK);
        T_OK(shmkv_close(db));
        t_dump_check(where, SHMKV_BACKEND_DISK);
    }
}

Test(space, killed_inside_pool_change)
{
    kill_inside_pool_change(false);
}

Test(space, killed_inside_pool_change_alone)
{
    kill_inside_pool_change(true);
}

/* A queue: the oldest nine keys in ten are consumed while every segment
 * still holds keys. The chunks that held them are then wholly free but
 * still belong to their segments, whose other blocks are in use; each
 * owner gives such chunks back to the pool as it frees, so values of
 * another size fit in at least 40% of the space the consumed ones held
 * (the chunks that still hold the newest keys stay with their segments). */
typedef struct qres {
    uint64_t n, bytes0, kept, n1, bytes1;
} qres;

static void __attribute__((noreturn))
kid_queue(shmkv_backend be, int track, const char *mnt, const char *where, int resfd)
{
    qres res;
    memset(&res, 0, sizeof res);
    (void)t_child_small_fs(mnt, NULL);
    shmkv_options o = {.backend = be, .track_keys = track};
    shmkv_db *db = NULL;
    CHILD_OK(shmkv_open(where, &o, &db));
    static unsigned char v[1000], got[1000];
    char k[32];
    int rc;
    uint64_t n = 0;
    for (;; n++) {
        int kl = snprintf(k, sizeof k, "old-%" PRIu64, n);
        kid_value(v, 200, n, 0);
        if ((rc = shmkv_set(db, k, (size_t)kl, v, 200, SHMKV_KIND_BYTES)) != 0)
            break;
        res.bytes0 += 200;
    }
    CHILD_CHECK(rc == -ENOSPC, "filling: %d (%s)", rc, shmkv_strerror(rc));
    res.n = n;
    uint64_t first_kept = n / 10 * 9;
    for (uint64_t i = 0; i < first_kept; i++) {
        int kl = snprintf(k, sizeof k, "old-%" PRIu64, i);
        CHILD_OK(shmkv_delete(db, k, (size_t)kl, NULL));
    }
    res.kept = n - first_kept;
    uint64_t m = 0;
    for (;; m++) {
        int kl = snprintf(k, sizeof k, "new-%" PRIu64, m);
        kid_value(v, 1000, m, 1);
        if ((rc = shmkv_set(db, k, (size_t)kl, v, 1000, SHMKV_KIND_BYTES)) != 0)
            break;
        res.bytes1 += 1000;
    }
    CHILD_CHECK(rc == -ENOSPC, "refilling: %d (%s)", rc, shmkv_strerror(rc));
    res.n1 = m;
    CHILD_CHECK(shmkv_size(db) == res.kept + m, "size() %" PRIu64, shmkv_size(db));
    for (uint64_t i = first_kept; i < n; i++) {
        size_t gl = 0;
        int kl = snprintf(k, sizeof k, "old-%" PRIu64, i);
        kid_value(v, 200, i, 0);
        CHILD_OK(shmkv_get(db, k, (size_t)kl, got, sizeof got, &gl, NULL));
        CHILD_CHECK(gl == 200 && memcmp(got, v, 200) == 0, "%s reads back wrong", k);
    }
    for (uint64_t i = 0; i < m; i++) {
        size_t gl = 0;
        int kl = snprintf(k, sizeof k, "new-%" PRIu64, i);
        kid_value(v, 1000, i, 1);
        CHILD_OK(shmkv_get(db, k, (size_t)kl, got, sizeof got, &gl, NULL));
        CHILD_CHECK(gl == 1000 && memcmp(got, v, 1000) == 0, "%s reads back wrong", k);
    }
    t_child_dump_check(where, be, false);
    CHILD_OK(shmkv_close(db));
    CHILD_CHECK(fd_write_all(resfd, &res, sizeof res) == 0, "pipe");
    _exit(0);
}

static void queue(shmkv_backend be, int track)
{
    qres res;
    t_small_fs_run(be, track, "queue", kid_queue, &res, sizeof res);
    uint64_t freed = res.bytes0 / res.n * (res.n - res.kept);
    fprintf(stderr, "space: queue, %s backend, track_keys %s: %" PRIu64 " keys of 200 bytes, "
            "%" PRIu64 " consumed (%" PRIu64 " KiB), then %" PRIu64 " of 1,000 bytes (%" PRIu64
            " KiB)\n", be == SHMKV_BACKEND_MEMORY ? "memory" : "disk",
            track == SHMKV_TRACK_ON ? "on" : "off", res.n, res.n - res.kept, freed >> 10, res.n1,
            res.bytes1 >> 10);
    cr_assert_geq(res.bytes1 * 5, freed * 2, "only %" PRIu64 " bytes of 1,000-byte values fitted "
                  "where %" PRIu64 " bytes of 200-byte values were consumed", res.bytes1, freed);
}

Test(space, queue_disk_untracked)
{
    queue(SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF);
}

Test(space, queue_memory_tracked)
{
    queue(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_ON);
}

/* A process killed while it trims an owner (after freeing half of it)
 * holds the owner's lock and the growth lock: the next locker rebuilds the
 * owner from its table, and the deletes that returned, and only those, are
 * gone. */
Test(space, killed_inside_trim)
{
    const char *where = t_path("trimkill");
    shmkv_options o = {.backend = SHMKV_BACKEND_DISK, .segments = 1,
                       .track_keys = SHMKV_TRACK_OFF};
    shmkv_db *db = NULL;
    T_OK(shmkv_open(where, &o, &db));
    const int n = 3000;
    char k[16];
    for (int i = 0; i < n; i++) {
        snprintf(k, sizeof k, "t%d", i);
        put_val(db, k, 200, (uint64_t)i);
    }
    int pf[2];
    cr_assert(pipe(pf) == 0);
    pid_t kid = t_fork();
    if (kid == 0) {
        close(pf[0]);
        shmkv_db *d = NULL;
        CHILD_OK(shmkv_open(where, &o, &d));
        t_hook_kill_at("alloc.trim", 0);
        for (int i = 0; i < n; i++) {
            char kk[16];
            snprintf(kk, sizeof kk, "t%d", i);
            /* Report each key before its delete: the parent knows which
             * one was in flight. */
            CHILD_CHECK(fd_write_all(pf[1], &i, sizeof i) == 0, "pipe");
            CHILD_OK(shmkv_delete(d, kk, strlen(kk), NULL));
        }
        _exit(4); /* never trimmed */
    }
    close(pf[1]);
    int last = -1, i;
    while (read(pf[0], &i, sizeof i) == (ssize_t)sizeof i)
        last = i;
    close(pf[0]);
    int st = t_wait(kid);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the deleter was to die in a trim");
    cr_assert(last > 0 && last < n);
    /* Key `last` was deleted (the trim runs after the tombstone); every
     * later key is intact. */
    for (int j = 0; j < n; j++) {
        snprintf(k, sizeof k, "t%d", j);
        if (j <= last)
            cr_assert_eq(shmkv_exists(db, k, strlen(k)), 0, "%s survived its delete", k);
        else
            expect_val(db, k, 200, (uint64_t)j);
    }
    cr_assert_eq(shmkv_size(db), (uint64_t)(n - last - 1));
    for (int j = 0; j < 500; j++) {
        snprintf(k, sizeof k, "u%d", j);
        put_val(db, k, 1000, (uint64_t)j);
    }
    expect_val(db, "u499", 1000, 499);
    t_dump_check(where, SHMKV_BACKEND_DISK);
    T_OK(shmkv_close(db));
    t_dump_check(where, SHMKV_BACKEND_DISK);
}

/* The index's real limit: 2^32 - 1 keys (a key blob keeps its position in
 * 32 bits). Past it a new key is refused with SHMKV_ETOOMANY, not with a
 * misleading size error, and nothing changes. 2^32 keys cannot be written
 * here, so the count is set to the limit by hand, and put back after. */
Test(space, index_limit_is_etoomany)
{
    const char *where = t_path("toomany");
    shmkv_db *db = t_open(where, SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    put_val(db, "a", 10, 1);
    shmkv__index *ix = shmkv__index_of(db->m);
    cr_assert_eq(ix->n, 1);
    ix->n = UINT32_MAX;
    unsigned char v = 'x';
    T_RC(shmkv_set(db, "b", 1, &v, 1, SHMKV_KIND_BYTES), SHMKV_ETOOMANY);
    cr_assert(strstr(shmkv_strerror(SHMKV_ETOOMANY), "2^32 - 1") != NULL);
    cr_assert_eq(shmkv_exists(db, "b", 1), 0);
    put_val(db, "a", 20, 2); /* replacing a value adds no key */
    ix->n = 1;
    cr_assert_eq(shmkv_size(db), 1);
    put_val(db, "b", 1, 3);
    expect_val(db, "a", 20, 2);
    T_OK(shmkv_close(db));
    t_dump_check(where, SHMKV_BACKEND_DISK);
}

/* A store is full only when what is left of its reserve cannot hold a
 * chunk for the block asked for: a chunk grows by 1/32 of what its owner
 * holds (about 2 MiB for a segment of 64 MiB), and when that much no
 * longer fits, a chunk just large enough does. Before, the store refused
 * with up to one such step of its reserve unused. One segment is filled
 * with 4,000-byte values (new keys: the last may be refused for want of a
 * larger table), then its keys are overwritten with 6,000-byte values (no
 * table room needed) until one is refused. */
static void fills_to_the_end(shmkv_backend be)
{
    const char *where = t_where(be, "tail");
    shmkv_options o = {.backend = be, .reserve = 64u << 20, .segments = 1,
                       .track_keys = SHMKV_TRACK_OFF};
    shmkv_db *db = t_open_opts(where, &o);
    unsigned char *v = malloc(6000);
    cr_assert(v);
    uint64_t n = 0, over = 0;
    int rc = 0;
    for (; rc == 0; n++) {
        char k[24];
        snprintf(k, sizeof k, "t:%06" PRIu64, n);
        fill_val(v, 4000, n);
        rc = shmkv_set(db, k, strlen(k), v, 4000, SHMKV_KIND_BYTES);
        cr_assert(rc == 0 || t_full(rc), "set -> %d (%s)", rc, shmkv_strerror(rc));
        cr_assert_lt(n, 100000u, "a 64 MiB store never fills");
    }
    n--; /* the last was refused */
    for (rc = 0; rc == 0 && over < n; over++) {
        char k[24];
        snprintf(k, sizeof k, "t:%06" PRIu64, over);
        fill_val(v, 6000, over);
        rc = shmkv_set(db, k, strlen(k), v, 6000, SHMKV_KIND_BYTES);
        cr_assert(rc == 0 || t_full(rc), "overwrite -> %d (%s)", rc,
                  shmkv_strerror(rc));
    }
    over--;
    cr_assert_lt(over, n, "%s: every overwrite fit: the store was not full", where);
    uint64_t top = atomic_load(&SHMKV__HDR(db->m)->top);
    uint64_t least = shmkv__page_up(shmkv__class_size(shmkv__class_of(6000 + 8 + 8 + SHMKV__BLOCK_HDR)) +
                                    SHMKV__CHUNK_HDR);
    cr_log_info("%s: %" PRIu64 " values, %" PRIu64 " overwritten; %" PRIu64
                " bytes of the reserve past the last chunk, a chunk for the block needs %" PRIu64,
                where, n, over, o.reserve - top, least);
    cr_assert_lt(o.reserve - top, least, "%s: refused as full with %" PRIu64 " bytes of the reserve unused",
                 where, o.reserve - top);
    for (uint64_t i = 0; i < n; i += 97) {
        char k[24];
        snprintf(k, sizeof k, "t:%06" PRIu64, i);
        expect_val(db, k, i < over ? 6000 : 4000, i);
    }
    free(v);
    t_close(db);
}

Test(space, fills_to_the_end_memory) { fills_to_the_end(SHMKV_BACKEND_MEMORY); }
Test(space, fills_to_the_end_disk) { fills_to_the_end(SHMKV_BACKEND_DISK); }
