/*
 * test_check_pending.c - shmkv-dump --check on the states that crashes
 * leave behind.
 *
 * A store a process died in is not damaged when the library's own repair
 * (the next locker of a dead owner's lock, or the next opener of an
 * unclean store) puts it right: --check must exit 0 for it and list what
 * will be repaired. A store that no repair can fix must still fail. Each
 * test produces one such state by killing a process at a named point
 * (the hook raises SIGKILL there), runs the checker, then lets the library
 * repair and checks again: sound, nothing left to repair.
 *
 *   - a repairer killed between EOWNERDEAD and pthread_mutex_consistent
 *     (glibc marks the mutex "inconsistent": the next locker repairs again);
 *   - a mutex made not recoverable (unlocked without being made
 *     consistent): every later lock fails, the one state to flag;
 *   - an opener killed in the middle of its open-time repair: recovery
 *     marks on blocks and allocator accounting half rebuilt, in a store
 *     still marked unclean.
 *
 * Needs SHMKV_DUMP (set by meson) to name the shmkv-dump binary.
 */
#include "harness.h"

#include "internal.h"

TestSuite(check_pending, .init = t_setup, .fini = t_teardown, .timeout = 120);

typedef struct {
    int status;
    char text[16384];
} dump_out;

static void run_check(const char *where, shmkv_backend be, dump_out *d)
{
    d->status = t_dump_capture(where, be, d->text, sizeof d->text);
}

static void expect_pending(const char *where, shmkv_backend be, const char *must_say)
{
    static dump_out d;
    run_check(where, be, &d);
    cr_assert_eq(d.status, 0, "--check must pass a store whose repair is pending, got %d:\n%s",
                 d.status, d.text);
    cr_assert(strstr(d.text, "repair: ") != NULL, "--check must list the pending repairs:\n%s",
              d.text);
    cr_assert(strstr(d.text, must_say) != NULL, "--check output lacks \"%s\":\n%s", must_say,
              d.text);
}

static shmkv_db *open_1seg(const char *where, shmkv_backend be)
{
    shmkv_options o;
    memset(&o, 0, sizeof o);
    o.backend = be;
    o.segments = 1; /* every key behind the same lock */
    o.track_keys = SHMKV_TRACK_ON;
    shmkv_db *db = NULL;
    T_OK(shmkv_open(where, &o, &db));
    return db;
}

/* A child that opens the store, writes keys "tag:i" for i < n, then one
 * more with the hook armed for point (where it dies). */
static void writer_dies_at(const char *where, shmkv_backend be, const char *tag, int n,
                           const char *point)
{
    pid_t p = t_fork();
    if (p == 0) {
        shmkv_db *d = NULL;
        shmkv_options o;
        memset(&o, 0, sizeof o);
        o.backend = be;
        CHILD_OK(shmkv_open(where, &o, &d));
        char k[32];
        for (int i = 0; i <= n; i++) {
            if (i == n)
                t_hook_kill_at(point, 0);
            int kl = snprintf(k, sizeof k, "%s:%d", tag, i);
            CHILD_OK(shmkv_set(d, k, (size_t)kl, "value", 5, SHMKV_KIND_STRING));
        }
        _exit(42); /* the point was not reached */
    }
    int st = t_wait(p);
    char b[80];
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "child should die at %s: %s", point,
              t_status_str(st, b, sizeof b));
}

static void expect_keys(shmkv_db *db, const char *tag, int n)
{
    char k[32];
    for (int i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof k, "%s:%d", tag, i);
        cr_assert_eq(shmkv_exists(db, k, (size_t)kl), 1, "%s lost", k);
    }
}

/* The first writer dies holding the lock; the second gets EOWNERDEAD and
 * dies before its repair is done. */
static void repairer_killed(shmkv_backend be)
{
    bool mem = be == SHMKV_BACKEND_MEMORY;
    const char *where = mem ? t_name("inc") : t_path("inc");
    /* Kept open throughout: a lone opener would reset the locks instead
     * of meeting the dead owner. */
    shmkv_db *db = open_1seg(where, be);
    writer_dies_at(where, be, "a", 50, "set.before_publish");
    writer_dies_at(where, be, "b", 0, "lock.repair");
    expect_pending(where, be, "died while repairing");
    T_OK(shmkv_set(db, "after", 5, "x", 1, SHMKV_KIND_STRING));
    expect_keys(db, "a", 50);
    cr_assert_eq(shmkv_size(db), 51);
    T_OK(shmkv_close(db));
    if (!mem)
        t_dump_sound(where, be);
    else
        shmkv_memory_unlink(where);
}

Test(check_pending, killed_repairer_disk_attached)
{
    repairer_killed(SHMKV_BACKEND_DISK);
}

Test(check_pending, killed_repairer_memory_attached)
{
    repairer_killed(SHMKV_BACKEND_MEMORY);
}

Test(check_pending, not_recoverable_lock_is_a_problem)
{
    const char *where = t_name("nrec");
    shmkv_db *db = open_1seg(where, SHMKV_BACKEND_MEMORY);
    writer_dies_at(where, SHMKV_BACKEND_MEMORY, "a", 5, "set.before_publish");
    /* Take the dead owner's lock and give it back without making it
     * consistent: the mutex becomes unusable for good. */
    pthread_mutex_t *mu = &shmkv__seg_at(db->m, 0)->lock;
    cr_assert_eq(pthread_mutex_lock(mu), EOWNERDEAD);
    cr_assert_eq(pthread_mutex_unlock(mu), 0);
    T_RC(shmkv_set(db, "k", 1, "v", 1, SHMKV_KIND_STRING), SHMKV_ELOCK);
    static dump_out d;
    run_check(where, SHMKV_BACKEND_MEMORY, &d);
    cr_assert_eq(d.status, 1, "--check must fail a lock nobody can take again, got %d:\n%s",
                 d.status, d.text);
    cr_assert(strstr(d.text, "problem: segment 0: the lock is not recoverable") != NULL,
              "the unrecoverable lock is not the one flagged:\n%s", d.text);
    T_OK(shmkv_close(db));
    shmkv_memory_unlink(where);
}

Test(check_pending, killed_open_time_repair)
{
    const char *where = t_path("reopen");
    shmkv_db *db = open_1seg(where, SHMKV_BACKEND_DISK);
    T_OK(shmkv_close(db));
    /* Unclean: a writer dies with an entry allocated but not published. */
    writer_dies_at(where, SHMKV_BACKEND_DISK, "a", 300, "set.before_publish");
    /* The next opener is alone, so it repairs at open; it dies there,
     * after marking the live blocks and before rebuilding the allocator. */
    pid_t p = t_fork();
    if (p == 0) {
        t_hook_kill_at("recover.marked", 0);
        shmkv_db *d = NULL;
        shmkv_options o;
        memset(&o, 0, sizeof o);
        shmkv_open(where, &o, &d);
        _exit(42);
    }
    int st = t_wait(p);
    char b[80];
    cr_assert(WIFSIGNALED(st), "the opener should die in its repair: %s",
              t_status_str(st, b, sizeof b));
    expect_pending(where, SHMKV_BACKEND_DISK, "recovery mark");
    db = t_open(where, SHMKV_BACKEND_DISK, SHMKV_TRACK_DEFAULT);
    expect_keys(db, "a", 300);
    cr_assert_eq(shmkv_size(db), 300);
    T_OK(shmkv_close(db));
    t_dump_sound(where, SHMKV_BACKEND_DISK);
}

/* A delete batch killed with its marks in the slots (format 4: its intent
 * is the segments' intent words, no block): --check lists it as pending
 * and finds no damage, readers see the verdict before any repair (all the
 * keys before the commit, none of the deleted ones after), and the next
 * locker applies or drops it. */
static void delete_batch_killed(shmkv_backend be, const char *point, bool committed)
{
    bool mem = be == SHMKV_BACKEND_MEMORY;
    const char *where = mem ? t_name("delb") : t_path("delb");
    shmkv_options o;
    memset(&o, 0, sizeof o);
    o.backend = be;
    o.segments = 4;
    shmkv_db *db = NULL;
    T_OK(shmkv_open(where, &o, &db)); /* kept open: the child's locks die, not the store */
    enum { N = 200, D = 100 };
    static char keys[N][16];
    shmkv_item it[D];
    memset(it, 0, sizeof it);
    for (int i = 0; i < N; i++) {
        int kl = snprintf(keys[i], sizeof keys[i], "k:%d", i);
        T_OK(shmkv_set(db, keys[i], (size_t)kl, "value", 5, SHMKV_KIND_STRING));
        if (i < D) {
            it[i].key = keys[i];
            it[i].klen = (size_t)kl;
        }
    }
    pid_t p = t_fork();
    if (p == 0) {
        shmkv_db *d = NULL;
        CHILD_OK(shmkv_open(where, &o, &d));
        t_hook_kill_at(point, 0);
        shmkv_delete_many(d, it, D, NULL, NULL);
        _exit(42);
    }
    int st = t_wait(p);
    char b[80];
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "child should die at %s: %s", point,
              t_status_str(st, b, sizeof b));
    expect_pending(where, be, "a delete batch led by segment");
    for (int i = 0; i < N; i++) {
        int want = i >= D || !committed;
        cr_assert_eq(shmkv_exists(db, keys[i], strlen(keys[i])), want,
                     "%s: before any repair, %s should be %s", point, keys[i],
                     want ? "there" : "gone");
    }
    t_check_sound(db, point); /* takes every lock: repairs */
    cr_assert_eq(shmkv_size(db), committed ? N - D : N, "%s: size after the repair", point);
    for (int i = 0; i < N; i++)
        cr_assert_eq(shmkv_exists(db, keys[i], strlen(keys[i])), i >= D || !committed);
    T_OK(shmkv_close(db));
    if (!mem)
        t_dump_sound(where, be);
    else
        shmkv_memory_unlink(where);
}

Test(check_pending, delete_batch_killed_before_commit)
{
    delete_batch_killed(SHMKV_BACKEND_MEMORY, "batch.prepared", false);
    delete_batch_killed(SHMKV_BACKEND_DISK, "batch.prepared", false);
}

Test(check_pending, delete_batch_killed_after_commit)
{
    delete_batch_killed(SHMKV_BACKEND_MEMORY, "batch.applying", true);
    delete_batch_killed(SHMKV_BACKEND_DISK, "batch.committed", true);
}
