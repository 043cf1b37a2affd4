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
#include "relcr.h"

#include "internal.h" /* shmkv__test_hook */

#include <sched.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

TestSuite(space, .init = rc_setup, .fini = rc_teardown, .timeout = 600);

static void dump_check(const char *where, shmkv_backend be)
{
    const char *dump = getenv("SHMKV_DUMP");
    if (!dump || access(dump, X_OK) != 0) {
        fprintf(stderr, "space: SHMKV_DUMP not set: shmkv-dump --check not run\n");
        return;
    }
    const char *out = rc_str("%s/dump.%d.out", rc.sc.dir, ++rc.seq);
    pid_t p = rc_fork();
    if (p == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        if (be == SHMKV_BACKEND_MEMORY)
            execl(dump, "shmkv-dump", "--check", "--memory", where, (char *)NULL);
        else
            execl(dump, "shmkv-dump", "--check", where, (char *)NULL);
        _exit(127);
    }
    int st = rc_wait(p);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        char b[80], text[4096] = "";
        int fd = open(out, O_RDONLY);
        if (fd >= 0) {
            ssize_t r = read(fd, text, sizeof text - 1);
            text[r > 0 ? r : 0] = 0;
            close(fd);
        }
        cr_assert_fail("shmkv-dump --check %s: %s\n%s", where, rel_status(st, b, sizeof b), text);
    }
}

/* A value whose bytes depend on (id, len), so a torn or misplaced value
 * cannot pass for another. */
static void fill_val(unsigned char *v, size_t len, uint64_t id)
{
    uint64_t x = id * 0x9e3779b97f4a7c15ull + len;
    for (size_t i = 0; i < len; i++) {
        x ^= x >> 29;
        x *= 0xbf58476d1ce4e5b9ull;
        v[i] = (unsigned char)(x >> 56);
    }
}

static void expect_val(shmkv_db *db, const char *k, size_t len, uint64_t id)
{
    unsigned char *want = malloc(len + 1), *got = malloc(len + 1);
    cr_assert(want && got);
    fill_val(want, len, id);
    size_t gl = 0;
    RC_OK(shmkv_get(db, k, strlen(k), got, len + 1, &gl, NULL));
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
    RC_OK(shmkv_set(db, k, strlen(k), v, len, SHMKV_KIND_BYTES));
    free(v);
}

static uint64_t file_bytes(shmkv_db *db)
{
    shmkv_info in;
    RC_OK(shmkv_stat(db, &in));
    return in.file_bytes;
}

/* Values over 4 MiB are big blocks: written, replaced by small and big
 * ones, deleted, and their chunks reused by values of other sizes. */
static void big_values(shmkv_backend be)
{
    const char *where = be == SHMKV_BACKEND_MEMORY ? rc_name("bigv") : rc_path("bigv");
    shmkv_db *db = rc_open(where, be, SHMKV_TRACK_ON);
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
    dump_check(where, be);
    uint64_t before = file_bytes(db);
    /* Replace and delete: the freed chunks must serve what comes next
     * (values of other sizes, and many small ones) without growing. */
    for (int round = 0; round < 3; round++) {
        RC_OK(shmkv_delete(db, "big3", 4, NULL));
        put_val(db, "big3", SHMKV_VALUE_MAX - 4096u * (unsigned)round, 100u + (unsigned)round);
        put_val(db, "big2", 5u << 20, 200u + (unsigned)round);
        put_val(db, "big2", 10, 300u + (unsigned)round);
    }
    cr_assert_leq(file_bytes(db), before + (16u << 20),
                  "freed big chunks were not reused: %" PRIu64 " -> %" PRIu64 " bytes", before,
                  file_bytes(db));
    expect_val(db, "big2", 10, 302);
    expect_val(db, "big3", SHMKV_VALUE_MAX - 8192, 102);
    dump_check(where, be);
    RC_OK(shmkv_close(db));
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
    const char *where = rc_path("bigidx");
    shmkv_options o = {.backend = SHMKV_BACKEND_DISK, .track_keys = SHMKV_TRACK_ON,
                       .segments = 1};
    shmkv_db *db = NULL;
    RC_OK(shmkv_open(where, &o, &db));
    const uint32_t n = 270000;
    char k[16];
    for (uint32_t i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof k, "k%06" PRIu32, i);
        RC_OK(shmkv_set(db, k, (size_t)kl, "v", 1, SHMKV_KIND_STRING));
    }
    cr_assert_eq(shmkv_size(db), n);
    dump_check(where, SHMKV_BACKEND_DISK);
    RC_OK(shmkv_rebuild_index(db));
    size_t kl = 0;
    RC_OK(shmkv_random_key(db, "k2", 2, k, sizeof k, &kl));
    cr_assert(kl == 7 && k[1] == '2');
    for (uint32_t i = 0; i < n; i += 2) {
        int l = snprintf(k, sizeof k, "k%06" PRIu32, i);
        RC_OK(shmkv_delete(db, k, (size_t)l, NULL));
    }
    cr_assert_eq(shmkv_size(db), n / 2);
    RC_OK(shmkv_close(db));
    RC_OK(shmkv_open(where, &o, &db));
    cr_assert_eq(shmkv_size(db), n / 2);
    cr_assert_eq(shmkv_exists(db, "k000001", 7), 1);
    cr_assert_eq(shmkv_exists(db, "k000002", 7), 0);
    dump_check(where, SHMKV_BACKEND_DISK);
    RC_OK(shmkv_close(db));
}

static const char *kill_point;
static void kill_at(const char *point)
{
    if (strcmp(point, kill_point) == 0)
        raise(SIGKILL);
}

/* A writer killed inside a big allocation, or between writing a big value
 * and publishing it, or after publishing and before freeing the old one:
 * the next locker repairs the segment, no chunk is lost, and the store is
 * sound. */
Test(space, killed_inside_big_allocation)
{
    const char *points[] = {"alloc.big.mid", "set.before_publish", "set.after_publish"};
    const char *where = rc_path("bigkill");
    shmkv_db *db = rc_open(where, SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    put_val(db, "victim", 6u << 20, 1);
    for (int p = 0; p < 3; p++) {
        kill_point = points[p];
        pid_t kid = rc_fork();
        if (kid == 0) {
            shmkv_db *d = NULL;
            shmkv_options o = {.backend = SHMKV_BACKEND_DISK};
            KID_OK(shmkv_open(where, &o, &d));
            unsigned char *v = malloc(8u << 20);
            KID_CHECK(v != NULL, "malloc");
            fill_val(v, 8u << 20, 50u + (unsigned)p);
            shmkv__test_hook = kill_at;
            shmkv_set(d, "victim", 6, v, 8u << 20, SHMKV_KIND_BYTES);
            _exit(4); /* never reached the kill point */
        }
        int st = rc_wait(kid);
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the writer was to die at %s",
                  points[p]);
        /* Old or new, never a mix. */
        unsigned char *got = malloc(8u << 20);
        size_t gl = 0;
        RC_OK(shmkv_get(db, "victim", 6, got, 8u << 20, &gl, NULL));
        if (strcmp(points[p], "set.after_publish") == 0)
            cr_assert_eq(gl, 8u << 20, "published at %s but not there", points[p]);
        free(got);
        if (gl == 8u << 20)
            expect_val(db, "victim", gl, 50u + (unsigned)p);
        else
            expect_val(db, "victim", 6u << 20, 1);
        /* The repair ran on the lock above; the segment is whole again. */
        put_val(db, "victim", 6u << 20, 1);
        dump_check(where, SHMKV_BACKEND_DISK);
    }
    RC_OK(shmkv_close(db));
}

/* Version 2 only adds encodings; a version 1 store opens as it is, and a
 * writer marks it version 2 before it can hold one (so that a version 1
 * library refuses it instead of taking a big block for damage). A
 * read-only opener leaves it alone. */
Test(space, version_1_store_is_upgraded_by_a_writer)
{
    const char *where = rc_path("v1");
    shmkv_db *db = rc_open(where, SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    put_val(db, "a", 10, 1);
    RC_OK(shmkv_close(db));
    int fd = open(where, O_RDWR);
    cr_assert(fd >= 0);
    uint32_t v = 1;
    cr_assert_eq(pwrite(fd, &v, 4, 8), 4);
    shmkv_options o = {.backend = SHMKV_BACKEND_DISK, .flags = SHMKV_RDONLY};
    RC_OK(shmkv_open(where, &o, &db));
    shmkv_info in;
    RC_OK(shmkv_stat(db, &in));
    cr_assert_eq(in.format_version, 1);
    expect_val(db, "a", 10, 1);
    RC_OK(shmkv_close(db));
    cr_assert_eq(pread(fd, &v, 4, 8), 4);
    cr_assert_eq(v, 1, "a read-only open changed the version");
    db = rc_open(where, SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    RC_OK(shmkv_stat(db, &in));
    cr_assert_eq(in.format_version, 2);
    put_val(db, "b", 5u << 20, 2);
    expect_val(db, "a", 10, 1);
    RC_OK(shmkv_close(db));
    cr_assert_eq(pread(fd, &v, 4, 8), 4);
    cr_assert_eq(v, 2);
    close(fd);
    dump_check(where, SHMKV_BACKEND_DISK);
}
