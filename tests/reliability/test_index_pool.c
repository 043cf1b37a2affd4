/*
 * test_index_pool.c - the undo-logged index updates meet the shared free
 * pool: a process killed where the two join leaves a sound store.
 *
 * On a 2 MiB tmpfs the store is filled with values and emptied, so the
 * file cannot grow and nearly all of it is in the free pool: every chunk
 * the index needs from then on comes from the pool. A process inserting
 * (or deleting) small keys SIGKILLs itself at a named point:
 *   - inside an index update, right after the index took a chunk from the
 *     pool (under the growth lock, and after it), or while it carves a
 *     block out of one: the rollback must give that chunk back to the
 *     index's allocator (shmkv__undo_chunk), or it is owned and uncounted;
 *   - in the step after the commit that hands the index's freed chunks
 *     back to the pool (log state TIDY): at its start, inside its trim,
 *     while a chunk goes to the pool, at its end;
 *   - deleting the last key, after its blob was freed: the update's frees
 *     must not have reached the pool (its rollback writes into them).
 * Then shmkv-dump --check passes (pending repairs allowed), the next user
 * repairs, every key is present or absent as the kill point allows, list()
 * agrees with get() and size() is exact, and --check finds the store sound
 * with nothing pending. Last, the emptied index gives back every chunk but
 * its log's.
 */
#include "harness.h"

#include "internal.h" /* shmkv__test_hook, the chunk walk */

#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>

TestSuite(index_pool, .init = t_setup, .fini = t_teardown, .timeout = 600);

static uint64_t NBASE = 600; /* keys present before the kill (run_n sets it) */
#define NMORE 6000u /* bound on the keys the killed writer inserts */

static int bkey(char *k, uint64_t i)
{
    /* scrambled, so that the tree splits and merges all over */
    return snprintf(k, 40, "b:%08" PRIx64 ":%04" PRIu64, t_mix(i) & 0xffffffffu, i);
}

static int nkey(char *k, uint64_t i)
{
    return snprintf(k, 40, "n:%08" PRIx64 ":%04" PRIu64, t_mix(i + 77) & 0xffffffffu, i);
}

typedef struct {
    uint64_t n;
    int bad;
} lcount;

static int count_listed(void *ctx, const void *k, size_t kl, const void *v, size_t vl,
                        shmkv_kind kd)
{
    (void)k, (void)kl, (void)v, (void)vl, (void)kd;
    lcount *c = ctx;
    c->n++;
    return 0;
}

/* Every key is where the kill point allows: a key whose writer was cut
 * short may be either way, the others are as written. list(), size() and
 * get() agree. */
static void kid_verify(shmkv_db *db, bool deleting, uint64_t done)
{
    char k[40];
    uint64_t present = 0;
    /* The key the writer was on when it died: inserting, new key done-1;
     * deleting (from NBASE-1 down), base key NBASE-done. */
    for (uint64_t i = 0; i < NBASE; i++) {
        int kl = bkey(k, i), e = shmkv_exists(db, k, (size_t)kl);
        CHILD_CHECK(e == 0 || e == 1, "exists(%s) -> %d", k, e);
        if (!deleting || i + done < NBASE)
            CHILD_CHECK(e == 1, "%s is gone (writer died on its %" PRIu64 "th key)", k, done);
        else if (i + done > NBASE)
            CHILD_CHECK(e == 0, "%s is back (writer died on its %" PRIu64 "th key)", k, done);
        present += (uint64_t)e;
    }
    for (uint64_t i = 0; i < NMORE; i++) {
        int kl = nkey(k, i), e = shmkv_exists(db, k, (size_t)kl);
        CHILD_CHECK(e == 0 || e == 1, "exists(%s) -> %d", k, e);
        if (deleting || i >= done)
            CHILD_CHECK(e == 0, "%s exists, never written", k);
        else if (i + 1 < done)
            CHILD_CHECK(e == 1, "%s is missing", k);
        present += (uint64_t)e;
    }
    lcount c = {0, 0};
    CHILD_OK(shmkv_list(db, NULL, 0, 0, SHMKV_LIST_KEYS_ONLY, count_listed, &c));
    CHILD_CHECK(c.n == present, "list() shows %" PRIu64 " keys, get() finds %" PRIu64, c.n,
              present);
    CHILD_CHECK(shmkv_size(db) == present, "size() %" PRIu64 ", get() finds %" PRIu64,
              shmkv_size(db), present);
}

/* Chunks the index owns, by walking the region (no other process runs). */
static uint64_t index_chunks(shmkv_db *db)
{
    shmkv__map *m = db->m;
    shmkv__hdr *h = SHMKV__HDR(m);
    uint64_t n = 0;
    for (uint64_t off = h->data_off; off < h->top;) {
        shmkv__chunk *c = SHMKV__P(m, off);
        CHILD_CHECK(c->magic == SHMKV__CHUNK_MAGIC && c->size >= SHMKV__PAGE, "chunk at %" PRIu64,
                  off);
        n += c->owner == SHMKV__OWNER_INDEX;
        off += c->size;
    }
    return n;
}

static void __attribute__((noreturn))
kid_run(const char *mnt, const char *point, int skip, bool deleting, volatile uint64_t *done)
{
    t_child_small_fs(mnt, NULL);
    char where[512], out[512];
    snprintf(where, sizeof where, "%s/store.kv", mnt);
    snprintf(out, sizeof out, "%s.dump", mnt); /* outside the small fs */
    shmkv_options o = {.backend = SHMKV_BACKEND_DISK, .track_keys = SHMKV_TRACK_ON};
    shmkv_db *db = NULL;
    CHILD_OK(shmkv_open(where, &o, &db));
    /* Fill the file system, then empty the store: the pool holds it all. */
    static unsigned char v[1000];
    memset(v, 'x', sizeof v);
    char k[40];
    uint64_t n = 0;
    int rc;
    for (;; n++) {
        int kl = snprintf(k, sizeof k, "fill%06" PRIu64, n);
        if ((rc = shmkv_set(db, k, (size_t)kl, v, sizeof v, SHMKV_KIND_BYTES)) != 0)
            break;
        CHILD_CHECK(n < 100000, "2 MiB never filled up");
    }
    CHILD_CHECK(rc == -ENOSPC, "filling: %d (%s)", rc, shmkv_strerror(rc));
    for (uint64_t i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof k, "fill%06" PRIu64, i);
        CHILD_OK(shmkv_delete(db, k, (size_t)kl, NULL));
    }
    shmkv__hdr *h = SHMKV__HDR(db->m);
    CHILD_CHECK(h->pool_bytes >= h->top / 2, "only %" PRIu64 " of %" PRIu64 " bytes in the pool",
              h->pool_bytes, h->top);
    for (uint64_t i = 0; i < NBASE; i++) {
        int kl = bkey(k, i);
        CHILD_OK(shmkv_set(db, k, (size_t)kl, "v", 1, SHMKV_KIND_STRING));
    }
    CHILD_CHECK(index_chunks(db) > 1, "the index took no chunk from the pool");

    pid_t p = t_fork_raw();
    CHILD_CHECK(p >= 0, "fork");
    if (p == 0) {
        shmkv_db *d = NULL;
        shmkv_options c = {.backend = SHMKV_BACKEND_DISK};
        CHILD_OK(shmkv_open(where, &c, &d));
        t_hook_kill_at(point, skip);
        for (uint64_t i = 0; i < (deleting ? NBASE : NMORE); i++) {
            *done = i + 1;
            if (deleting) {
                int kl = bkey(k, NBASE - 1 - i);
                CHILD_OK(shmkv_delete(d, k, (size_t)kl, NULL));
            } else {
                int kl = nkey(k, i);
                CHILD_OK(shmkv_set(d, k, (size_t)kl, "v", 1, SHMKV_KIND_STRING));
            }
        }
        _exit(42);
    }
    int st = 0;
    CHILD_CHECK(t_reap(p, &st) == 0, "waitpid");
    char b[80];
    CHILD_CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the writer was to die at %s: %s",
              point, t_status_str(st, b, sizeof b));
    t_child_dump_check(where, SHMKV_BACKEND_DISK, false);
    /* The next writer repairs (and rebuilds an index marked for it). */
    CHILD_OK(shmkv_set(db, "after", 5, "v", 1, SHMKV_KIND_STRING));
    CHILD_OK(shmkv_delete(db, "after", 5, NULL));
    kid_verify(db, deleting, *done);
    t_child_dump_check(where, SHMKV_BACKEND_DISK, true);
    /* Still a working store: more keys, then none, and the empty index
     * keeps only its log's chunk. */
    for (uint64_t i = 0; i < 300; i++) {
        int kl = snprintf(k, sizeof k, "z%04" PRIu64, i);
        CHILD_OK(shmkv_set(db, k, (size_t)kl, "v", 1, SHMKV_KIND_STRING));
    }
    CHILD_OK(shmkv_clear(db));
    for (uint64_t i = 0; i < 300; i++) {
        int kl = snprintf(k, sizeof k, "y%04" PRIu64, i);
        CHILD_OK(shmkv_set(db, k, (size_t)kl, "v", 1, SHMKV_KIND_STRING));
    }
    for (uint64_t i = 0; i < 300; i++) {
        int kl = snprintf(k, sizeof k, "y%04" PRIu64, i);
        CHILD_OK(shmkv_delete(db, k, (size_t)kl, NULL));
    }
    CHILD_CHECK(shmkv_size(db) == 0, "size() %" PRIu64 " after deleting all", shmkv_size(db));
    CHILD_CHECK(index_chunks(db) == 1, "an empty index holds %" PRIu64 " chunks", index_chunks(db));
    t_child_dump_check(where, SHMKV_BACKEND_DISK, true);
    CHILD_OK(shmkv_close(db));
    _exit(0);
}

static void run_n(const char *point, int skip, bool deleting, uint64_t nbase)
{
    NBASE = nbase;
    const char *mnt = t_fresh("mnt");
    cr_assert(mkdir(mnt, 0700) == 0, "mkdir %s: %s", mnt, strerror(errno));
    volatile uint64_t *done =
        mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert(done != MAP_FAILED);
    pid_t kid = t_fork();
    if (kid == 0)
        kid_run(mnt, point, skip, deleting, done);
    int st = t_wait(kid);
    char b[80];
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: the test child ended with %s (see above)",
              point, t_status_str(st, b, sizeof b));
    fprintf(stderr, "index_pool: killed at %s (skip %d) %s its %" PRIu64 "th key: sound\n", point,
            skip, deleting ? "deleting" : "inserting", *done);
    munmap((void *)done, 4096);
}

static void run(const char *point, int skip, bool deleting)
{
    run_n(point, skip, deleting, 600);
}

/* Inside an index update, with a chunk taken from the pool. */
Test(index_pool, insert_pool_take)    { run("grow.pool.index", 2, false); }
Test(index_pool, insert_chunk_taken)  { run("alloc.chunk.index", 2, false); }
Test(index_pool, insert_alloc_mid)    { run("alloc.mid.index", 40, false); }
/* In the give-back step after the commit. */
Test(index_pool, delete_tidy_begin)   { run("index.tidy.begin", 0, true); }
Test(index_pool, delete_tidy_trim)    { run("alloc.trim.index", 0, true); }
Test(index_pool, delete_tidy_put)     { run("pool.put.mid.index", 0, true); }
Test(index_pool, delete_tidy_end)     { run("index.tidy", 0, true); }
/* A trim of an index that still holds keys, so the rebuild has work. */
Test(index_pool, delete_tidy_partial) { run_n("alloc.trim.index", 0, true, 3000); }
/* The last key's update, after its blob was freed. */
Test(index_pool, delete_last_freed)   { run("index.remove.done", 600 - 1, true); }
