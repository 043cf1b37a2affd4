/*
 * test_crash_counts.c - what other processes see right after a writer was
 * killed inside an insert or a delete, before anybody locked the segment
 * the dead writer held.
 *
 * The writer is killed at the library's test hook points (shmkv__test_hook)
 * "set.after_publish" and "delete.after_publish": the slot word is already
 * published, the segment's key count is not yet updated. A process that is
 * still attached then asks size() and random_key(). The store must describe
 * itself consistently: size() equals the number of keys get()/list() find,
 * and random_key() finds a key whenever one exists.
 *
 * History: size() used to read the counts without locks and was off by one
 * here (fixed in 90d4847 by taking each segment lock). random_key() without
 * key tracking still draws by those unlocked counts.
 */
#include "relcr.h"

#include "internal.h"

TestSuite(crash_counts, .init = rc_setup, .fini = rc_teardown, .timeout = 120);

static const char *kill_point;

static void kill_at(const char *point)
{
    if (kill_point && strcmp(point, kill_point) == 0)
        raise(SIGKILL);
}

/* Fork a child that opens where, runs op(db) and is killed at point. */
static void child_killed_at(const char *where, shmkv_backend be, const char *point,
                            void (*op)(shmkv_db *db))
{
    pid_t p = rc_fork();
    if (p == 0) {
        shmkv_options o;
        memset(&o, 0, sizeof o);
        o.backend = be;
        shmkv_db *db = NULL;
        KID_OK(shmkv_open(where, &o, &db));
        kill_point = point;
        shmkv__test_hook = kill_at;
        op(db);
        _exit(4); /* the point was never reached */
    }
    int st = rc_wait(p);
    char b[80];
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
              "child was to die at %s but ended with %s", point, rel_status(st, b, sizeof b));
}

static void op_insert_only(shmkv_db *db)
{
    shmkv_set(db, "only", 4, "v", 1, SHMKV_KIND_STRING);
}

static void op_delete_a(shmkv_db *db)
{
    shmkv_delete(db, "a", 1, NULL);
}

static int count_cb(void *ctx, const void *k, size_t kl, const void *v, size_t vl, shmkv_kind kind)
{
    (void)k, (void)kl, (void)v, (void)vl, (void)kind;
    ++*(uint64_t *)ctx;
    return 0;
}

/* An insert killed after publishing: the key exists (get finds it), so
 * size() must count it and random_key() must be able to draw it. */
static void insert_killed(int track)
{
    const char *name = rc_name("ins");
    shmkv_db *db = rc_open(name, SHMKV_BACKEND_MEMORY, track);
    child_killed_at(name, SHMKV_BACKEND_MEMORY, "set.after_publish", op_insert_only);

    /* Ask before any call that locks the dead writer's segment (size()
     * does lock every segment, so random_key() goes first). */
    char k[16];
    size_t kl = 0;
    int rk = shmkv_random_key(db, NULL, 0, k, sizeof k, &kl);
    uint64_t size_seen = shmkv_size(db);

    uint64_t listed = 0;
    RC_OK(shmkv_list(db, NULL, 0, 0, SHMKV_LIST_KEYS_ONLY, count_cb, &listed));
    cr_assert_eq(shmkv_exists(db, "only", 4), 1, "the published key must be visible");
    cr_assert_eq(listed, 1);
    cr_expect_eq(rk, 0,
                 "random_key() -> %d (%s) although the store holds one key (track_keys %d)", rk,
                 shmkv_strerror(rk), track == SHMKV_TRACK_ON);
    cr_expect_eq(size_seen, 1,
                 "size() = %" PRIu64 " right after an inserting writer died, but get() and "
                 "list() find 1 key (track_keys %d)",
                 size_seen, track == SHMKV_TRACK_ON);
    cr_assert_eq(shmkv_size(db), 1, "size() after the segment was locked again");
    RC_OK(shmkv_close(db));
}

Test(crash_counts, insert_killed_after_publish_untracked)
{
    insert_killed(SHMKV_TRACK_OFF);
}

Test(crash_counts, insert_killed_after_publish_tracked)
{
    insert_killed(SHMKV_TRACK_ON);
}

/* A delete killed after publishing the tombstone: the key is gone, so
 * size() must not count it. */
static void delete_killed(int track)
{
    const char *name = rc_name("del");
    shmkv_db *db = rc_open(name, SHMKV_BACKEND_MEMORY, track);
    RC_OK(shmkv_set(db, "a", 1, "1", 1, SHMKV_KIND_STRING));
    RC_OK(shmkv_set(db, "b", 1, "2", 1, SHMKV_KIND_STRING));
    child_killed_at(name, SHMKV_BACKEND_MEMORY, "delete.after_publish", op_delete_a);

    uint64_t size_seen = shmkv_size(db);
    cr_assert_eq(shmkv_exists(db, "a", 1), 0, "the tombstone was published");
    uint64_t listed = 0;
    RC_OK(shmkv_list(db, NULL, 0, 0, SHMKV_LIST_KEYS_ONLY, count_cb, &listed));
    cr_assert_eq(listed, 1);
    cr_expect_eq(size_seen, 1,
                 "size() = %" PRIu64 " right after a deleting writer died, but get() and "
                 "list() find 1 key (track_keys %d)",
                 size_seen, track == SHMKV_TRACK_ON);
    cr_assert_eq(shmkv_size(db), 1, "size() after the segment was locked again");
    RC_OK(shmkv_close(db));
}

Test(crash_counts, delete_killed_after_publish_untracked)
{
    delete_killed(SHMKV_TRACK_OFF);
}

Test(crash_counts, delete_killed_after_publish_tracked)
{
    delete_killed(SHMKV_TRACK_ON);
}
