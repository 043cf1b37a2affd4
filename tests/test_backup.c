/*
 * test_backup.c - shmkv_backup() and shmkv_restore() (issue 15, item 2).
 *
 * The promises attacked: a consistent backup taken while two processes
 * write is the store at one moment (the writers keep a sum across keys
 * constant, and the backup's sum must be it); a best-effort backup opens
 * and passes shmkv_check(); a truncated or foreign file is refused and the
 * target is unchanged; a process killed inside shmkv_backup() leaves no
 * file at the target name and a usable store; a disk store's own file
 * copied after close restores; a full file system leaves no file and a
 * clear error; the restore guards refuse before anything is written; a
 * process killed inside shmkv_restore() leaves the old keys or whole
 * batches of the backup's, and a sound store.
 */
#include "harness.h"

#include <dirent.h>
#include <stdarg.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>

TestSuite(backup, .init = t_setup, .fini = t_teardown);

enum { WRITERS = 2, PER = 16, START = 1000 };

/* A formatted string from a ring of 8 (t_str's pool is per test and
 * small; the loops here format thousands). */
static const char *ks(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *ks(const char *fmt, ...)
{
    static char ring[8][1100];
    static unsigned at;
    char *b = ring[at++ % 8];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof ring[0], fmt, ap);
    va_end(ap);
    return b;
}

static void key_of(char *k, size_t cap, int w, int i)
{
    snprintf(k, cap, "acct:%d:%02d", w, i);
}

static void seed(shmkv_db *db)
{
    char k[32];
    for (int w = 0; w < WRITERS; w++)
        for (int i = 0; i < PER; i++) {
            key_of(k, sizeof k, w, i);
            t_set(db, k, ks("%d", START));
        }
    for (int i = 0; i < 200; i++) /* some bulk, so the copy takes a while */
        t_set(db, ks("pad:%04d", i), ks("%0500d", i));
}

static long long read_num(shmkv_db *db, const char *k)
{
    char v[32];
    size_t vl = 0;
    int rc = shmkv_get(db, k, strlen(k), v, sizeof v - 1, &vl, NULL);
    if (rc)
        return -1000000000LL;
    v[vl] = 0;
    return atoll(v);
}

/* Writer w owns its PER keys (nobody else writes them), so it knows their
 * values, and moves amounts between two of them in one atomic set_many:
 * the sum over all keys is the same at every instant. */
static void writer(const char *where, shmkv_backend be, int w, int stop_fd)
{
    shmkv_options o = t_opts(be, SHMKV_TRACK_DEFAULT);
    shmkv_db *db = NULL;
    CHILD_OK(shmkv_open(where, &o, &db));
    long long val[PER];
    char keys[PER][32];
    for (int i = 0; i < PER; i++) {
        key_of(keys[i], sizeof keys[i], w, i);
        val[i] = read_num(db, keys[i]);
        CHILD_CHECK(val[i] == START, "seed %s = %lld", keys[i], val[i]);
    }
    t_rng r = t_rng_seeded((uint64_t)getpid());
    char buf[2][32];
    for (uint64_t n = 0;; n++) {
        char c;
        if (n % 64 == 0 && read(stop_fd, &c, 1) == 0)
            break; /* the parent closed the pipe */
        int a = (int)t_below(&r, PER), b = (int)t_below(&r, PER);
        if (a == b)
            continue;
        long long d = (long long)t_below(&r, 50);
        val[a] -= d;
        val[b] += d;
        snprintf(buf[0], sizeof buf[0], "%lld", val[a]);
        snprintf(buf[1], sizeof buf[1], "%lld", val[b]);
        shmkv_item it[2] = {
            {.key = keys[a], .klen = strlen(keys[a]), .val = buf[0], .vlen = strlen(buf[0]),
             .kind = SHMKV_KIND_STRING},
            {.key = keys[b], .klen = strlen(keys[b]), .val = buf[1], .vlen = strlen(buf[1]),
             .kind = SHMKV_KIND_STRING},
        };
        CHILD_OK(shmkv_set_many(db, it, 2, NULL));
    }
    shmkv_close(db);
    _exit(0);
}

static long long sum_of(shmkv_db *db)
{
    char k[32];
    long long s = 0;
    for (int w = 0; w < WRITERS; w++)
        for (int i = 0; i < PER; i++) {
            key_of(k, sizeof k, w, i);
            s += read_num(db, k);
        }
    return s;
}

static void backup_under_writers(shmkv_backend be, int track, unsigned flags)
{
    const char *where = t_where(be, "live");
    shmkv_db *db = t_open(where, be, track);
    seed(db);
    int p[2];
    cr_assert_eq(pipe(p), 0);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    pid_t kids[WRITERS];
    for (int w = 0; w < WRITERS; w++) {
        kids[w] = t_fork();
        if (kids[w] == 0) {
            close(p[1]);
            writer(where, be, w, p[0]);
        }
    }
    close(p[0]);
    t_sleep_us(50000);
    int rounds = (int)t_scaled(8, 2);
    for (int round = 0; round < rounds; round++) {
        const char *bk = t_fresh("backup");
        shmkv_backup_info bi;
        T_OK(shmkv_backup(db, bk, flags, &bi));
        cr_assert_eq(bi.entries, WRITERS * PER + 200, "entries %" PRIu64, bi.entries);
        struct stat st;
        cr_assert_eq(stat(bk, &st), 0);
        cr_assert_eq((uint64_t)st.st_size, bi.bytes);
        cr_assert_eq(bi.best_effort, (flags & SHMKV_BACKUP_CONCURRENT) ? 1 : 0);
        cr_assert_gt(bi.pause_ns, 0);
        /* The backup is a store: open it as one, check it, sum it. */
        shmkv_db *b = t_open(bk, SHMKV_BACKEND_DISK, SHMKV_TRACK_DEFAULT);
        uint64_t problems = 0;
        char msg[256];
        T_OK(shmkv_check(b, &problems, msg, sizeof msg));
        if (!bi.best_effort)
            cr_assert_eq(sum_of(b), (long long)WRITERS * PER * START,
                         "round %d: the backup's sum is %lld", round, sum_of(b));
        else
            for (int w = 0; w < WRITERS; w++)
                for (int i = 0; i < PER; i++) {
                    char k[32];
                    key_of(k, sizeof k, w, i);
                    cr_assert_gt(read_num(b, k), -1000000000LL, "key %s missing", k);
                }
        t_close(b);
        /* And restoring it gives the same sum in a fresh store. */
        const char *rw = t_where(be, "restored");
        shmkv_db *r = t_open(rw, be, track);
        t_set(r, "stale", "x");
        shmkv_restore_info ri;
        T_OK(shmkv_restore(r, bk, 0, 0, &ri));
        cr_assert_eq(ri.entries, bi.entries);
        t_expect_absent(r, "stale", 5);
        if (!bi.best_effort)
            cr_assert_eq(sum_of(r), (long long)WRITERS * PER * START);
        T_OK(shmkv_check(r, NULL, NULL, 0));
        t_close(r);
        if (t_dump_tool()) {
            int st2 = t_dump_run(t_dump_tool(), bk, false, t_fresh("dump.out"), NULL, 0);
            cr_assert(WIFEXITED(st2) && WEXITSTATUS(st2) == 0, "shmkv-dump --check on the backup");
        }
        unlink(bk);
        t_sleep_us(5000);
    }
    close(p[1]);
    for (int w = 0; w < WRITERS; w++)
        t_wait_ok(kids[w], "writer");
    cr_assert_eq(sum_of(db), (long long)WRITERS * PER * START);
    T_OK(shmkv_check(db, NULL, NULL, 0));
    t_close(db);
}

Test(backup, consistent_memory_under_writers)
{
    backup_under_writers(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_ON, 0);
}

Test(backup, consistent_disk_under_writers)
{
    backup_under_writers(SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF, 0);
}

Test(backup, best_effort_memory_under_writers)
{
    backup_under_writers(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_ON, SHMKV_BACKUP_CONCURRENT);
}

Test(backup, best_effort_disk_under_writers)
{
    backup_under_writers(SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF, SHMKV_BACKUP_CONCURRENT);
}

/* Target holds a:1 and b:2 and nothing else. */
static void expect_target(shmkv_db *db)
{
    t_expect_str(db, "a", "1");
    t_expect_str(db, "b", "2");
    cr_assert_eq(shmkv_size(db), 2);
}

static void write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(fd_write_all(fd, p, n), 0);
    close(fd);
}

Test(backup, truncated_and_foreign_files_refused)
{
    shmkv_db *src = t_open(t_where(SHMKV_BACKEND_MEMORY, "src"), SHMKV_BACKEND_MEMORY, 0);
    for (int i = 0; i < 500; i++)
        t_set(src, ks("k%03d", i), ks("%0200d", i));
    const char *bk = t_fresh("good");
    T_OK(shmkv_backup(src, bk, 0, NULL));
    /* A best-effort backup is exactly [0, top) too: one byte short is
     * refused. */
    const char *be = t_fresh("besteffort");
    T_OK(shmkv_backup(src, be, SHMKV_BACKUP_CONCURRENT, NULL));
    t_close(src);
    struct stat bst;
    cr_assert_eq(stat(be, &bst), 0);
    cr_assert_eq(truncate(be, bst.st_size - 1), 0);
    struct stat st;
    cr_assert_eq(stat(bk, &st), 0);

    shmkv_db *dst = t_open(t_where(SHMKV_BACKEND_DISK, "dst"), SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    t_set(dst, "a", "1");
    t_set(dst, "b", "2");

    /* Cut short: at several lengths, from inside the header to one byte short. */
    static char whole[8 << 20];
    cr_assert_lt((size_t)st.st_size, sizeof whole);
    int fd = open(bk, O_RDONLY);
    cr_assert_eq(fd_read_all(fd, whole, (size_t)st.st_size), st.st_size);
    close(fd);
    off_t cuts[] = {0, 7, 100, 4096, st.st_size / 2, st.st_size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        const char *tr = t_fresh("cut");
        write_file(tr, whole, (size_t)cuts[i]);
        int rc = shmkv_restore(dst, tr, 0, 0, NULL);
        cr_assert(rc == SHMKV_ENOTSTORE || rc == SHMKV_ECORRUPT,
                  "cut at %lld: %d (%s)", (long long)cuts[i], rc, shmkv_strerror(rc));
        expect_target(dst);
        struct stat st2;
        cr_assert_eq(stat(tr, &st2), 0);
        cr_assert_eq(st2.st_size, cuts[i], "the refused file was changed");
    }
    T_RC(shmkv_restore(dst, be, 0, 0, NULL), SHMKV_ECORRUPT);
    expect_target(dst);
    /* Foreign: zeros, text, a store header with another version. */
    memset(whole + st.st_size, 0, 65536);
    const char *z = t_fresh("zeros");
    write_file(z, whole + st.st_size, 65536);
    T_RC(shmkv_restore(dst, z, 0, 0, NULL), SHMKV_ENOTSTORE);
    const char *txt = t_fresh("text");
    write_file(txt, "{\"key\":\"a\",\"value\":1}\n", 22);
    T_RC(shmkv_restore(dst, txt, 0, 0, NULL), SHMKV_ENOTSTORE);
    T_RC(shmkv_restore(dst, t_fresh("missing"), 0, 0, NULL), -ENOENT);
    const char *ver = t_fresh("version");
    uint32_t bad = 999;
    memcpy(whole + 8, &bad, sizeof bad);
    write_file(ver, whole, (size_t)st.st_size);
    T_RC(shmkv_restore(dst, ver, 0, 0, NULL), SHMKV_EVERSION);
    expect_target(dst);
    T_OK(shmkv_check(dst, NULL, NULL, 0));
    t_close(dst);
}

Test(backup, guards_refuse_before_writing)
{
    shmkv_db *src = t_open(t_where(SHMKV_BACKEND_DISK, "src"), SHMKV_BACKEND_DISK, 0);
    for (int i = 0; i < 100; i++)
        t_set(src, ks("k%03d", i), "0123456789"); /* 4 + 10 bytes each */
    const char *bk = t_fresh("b");
    shmkv_backup_info bi;
    T_OK(shmkv_backup(src, bk, 0, &bi));
    cr_assert_eq(bi.entries, 100);
    t_close(src);
    shmkv_db *dst = t_open(t_where(SHMKV_BACKEND_MEMORY, "dst"), SHMKV_BACKEND_MEMORY, 0);
    t_set(dst, "a", "1");
    t_set(dst, "b", "2");
    shmkv_restore_info ri;
    T_RC(shmkv_restore(dst, bk, 99, 0, &ri), SHMKV_EFULL);
    cr_assert_eq(ri.entries, 100);
    expect_target(dst);
    T_RC(shmkv_restore(dst, bk, 0, 1399, &ri), SHMKV_EFULL);
    cr_assert_eq(ri.bytes, 1400);
    expect_target(dst);
    T_OK(shmkv_restore(dst, bk, 100, 1400, &ri));
    cr_assert_eq(shmkv_size(dst), 100);
    /* A backup this process may not write is read through a read-only
     * handle. Root may write anything, so a child that is root gives up
     * root first, on a copy of the backup it can read but not write. */
    char ro_dir[] = "/tmp/shmkv-ro.XXXXXX";
    cr_assert(mkdtemp(ro_dir) != NULL);
    cr_assert_eq(chmod(ro_dir, 0755), 0);
    char ro[64];
    snprintf(ro, sizeof ro, "%s/b.kv", ro_dir);
    char *cmd = strdup(t_str("cp '%s' '%s' && chmod 0444 '%s'", bk, ro, ro));
    cr_assert_eq(system(cmd), 0);
    free(cmd);
    const char *rname = t_where(SHMKV_BACKEND_MEMORY, "ro-target");
    pid_t kid = t_fork();
    if (kid == 0) {
        if (getuid() == 0)
            CHILD_CHECK(setgroups(0, NULL) == 0 && setresgid(65534, 65534, 65534) == 0 &&
                            setresuid(65534, 65534, 65534) == 0,
                        "cannot give up root");
        CHILD_CHECK(access(ro, W_OK) != 0, "the copy is writable");
        shmkv_options o = t_opts(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_DEFAULT);
        o.mode = 0666;
        shmkv_db *c = NULL;
        CHILD_OK(shmkv_open(rname, &o, &c));
        CHILD_OK(shmkv_set(c, "a", 1, "1", 1, SHMKV_KIND_STRING));
        shmkv_restore_info cri;
        CHILD_OK(shmkv_restore(c, ro, 0, 0, &cri));
        CHILD_CHECK(cri.entries == 100 && shmkv_size(c) == 100, "%" PRIu64 " entries restored",
                    cri.entries);
        CHILD_CHECK(shmkv_exists(c, "a", 1) == 0, "the target was not replaced");
        shmkv_close(c);
        _exit(0);
    }
    t_wait_ok(kid, "read-only restore");
    unlink(ro);
    rmdir(ro_dir);
    t_expect_str(dst, "k042", "0123456789");
    t_expect_absent(dst, "a", 1);
    t_close(dst);
}

/* A disk store's file copied (like cp) while nobody has it open is a backup. */
Test(backup, closed_store_file_copy_restores)
{
    const char *live = t_where(SHMKV_BACKEND_DISK, "live");
    shmkv_db *db = t_open(live, SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    for (int i = 0; i < 1000; i++)
        t_set(db, ks("u%04d", i), ks("v%d", i));
    t_close(db);
    /* Onto its own file, and from it: nothing is written or cleared. */
    db = t_open(live, SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    shmkv_backup_info bi;
    struct stat before, after;
    cr_assert_eq(stat(live, &before), 0);
    T_OK(shmkv_backup(db, live, 0, &bi));
    cr_assert_eq(bi.entries, 1000);
    cr_assert_eq(stat(live, &after), 0);
    cr_assert_eq(before.st_ino, after.st_ino, "the live file was replaced");
    shmkv_restore_info sri;
    T_OK(shmkv_restore(db, live, 0, 0, &sri));
    cr_assert_eq(sri.entries, 1000);
    cr_assert_eq(shmkv_size(db), 1000);
    t_close(db);
    const char *cp = t_fresh("copy");
    char *cmd = strdup(t_str("cp '%s' '%s'", live, cp));
    cr_assert_eq(system(cmd), 0);
    free(cmd);
    shmkv_db *dst = t_open(t_where(SHMKV_BACKEND_MEMORY, "dst"), SHMKV_BACKEND_MEMORY, 0);
    shmkv_restore_info ri;
    T_OK(shmkv_restore(dst, cp, 0, 0, &ri));
    cr_assert_eq(ri.entries, 1000);
    t_expect_str(dst, "u0999", "v999");
    t_close(dst);
}

/* Killed in the middle of the copy (writers' locks held): no file at the
 * target name, and the live store goes on (the next locker repairs). */
Test(backup, killed_inside_backup)
{
    const char *live = t_where(SHMKV_BACKEND_MEMORY, "live");
    shmkv_db *db = t_open(live, SHMKV_BACKEND_MEMORY, SHMKV_TRACK_ON);
    for (int i = 0; i < 3000; i++)
        t_set(db, ks("k%05d", i), ks("%0300d", i));
    const char *bk = t_fresh("target");
    const char *points[] = {"backup.copy.mid", "backup.copied"};
    for (unsigned flags = 0; flags < 2; flags++)
        for (size_t pi = 0; pi < 2; pi++) {
            pid_t kid = t_fork();
            if (kid == 0) {
                shmkv_options o = t_opts(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_DEFAULT);
                shmkv_db *c = NULL;
                CHILD_OK(shmkv_open(live, &o, &c));
                t_hook_kill_at(points[pi], 0);
                shmkv_backup(c, bk, flags, NULL);
                _exit(5); /* the hook should have killed us */
            }
            int st;
            cr_assert_eq(t_reap(kid, &st), 0);
            cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "child not killed at %s",
                      points[pi]);
            struct stat s2;
            cr_assert_neq(stat(bk, &s2), 0, "a file was left at the target after a kill at %s",
                          points[pi]);
            t_set(db, "after", "kill");
            t_expect_str(db, "k02999", ks("%0300d", 2999));
            T_OK(shmkv_check(db, NULL, NULL, 0));
        }
    /* The killed backups left their temporary files; the next backup to
     * the same name removes them (their processes are gone). */
    DIR *d = opendir(t_dir());
    cr_assert(d != NULL);
    int left = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        left += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    cr_assert_gt(left, 0, "no temporary file was left by the killed backups");
    T_OK(shmkv_backup(db, bk, 0, NULL));
    d = opendir(t_dir());
    left = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        left += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    cr_assert_eq(left, 0, "the next backup did not remove the dead backups' temporary files");
    t_close(db);
}

/* A full file system: the error is -ENOSPC and nothing is left behind. */
Test(backup, full_filesystem)
{
    const char *live = t_where(SHMKV_BACKEND_MEMORY, "live");
    shmkv_db *db = t_open(live, SHMKV_BACKEND_MEMORY, 0);
    for (int i = 0; i < 4000; i++)
        t_set(db, ks("k%05d", i), ks("%01000d", i)); /* about 4 MiB */
    const char *mnt = t_fresh("mnt");
    cr_assert_eq(mkdir(mnt, 0700), 0);
    pid_t kid = t_fork();
    if (kid == 0) {
        const char *why = NULL;
        int mode = t_small_fs(mnt, "size=1m,mode=0700", 1 << 20, &why);
        if (mode == 0)
            _exit(77);
        shmkv_options o = t_opts(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_DEFAULT);
        shmkv_db *c = NULL;
        CHILD_OK(shmkv_open(live, &o, &c));
        char target[512];
        snprintf(target, sizeof target, "%s/backup", mnt);
        shmkv_backup_info bi;
        int rc = shmkv_backup(c, target, 0, &bi);
        CHILD_CHECK(rc == -ENOSPC || rc == -EFBIG, "backup on a full fs -> %d (%s)", rc,
                    shmkv_strerror(rc));
        rc = shmkv_backup(c, target, SHMKV_BACKUP_CONCURRENT, &bi);
        CHILD_CHECK(rc == -ENOSPC || rc == -EFBIG || rc == SHMKV_EFULL,
                    "best-effort backup on a full fs -> %d (%s)", rc, shmkv_strerror(rc));
        int n = 0;
        DIR *d = opendir(mnt);
        CHILD_CHECK(d != NULL, "opendir");
        for (struct dirent *e; (e = readdir(d)) != NULL;)
            if (e->d_name[0] != '.')
                n++;
        closedir(d);
        CHILD_CHECK(n == 0, "%d files left on the full file system", n);
        CHILD_OK(shmkv_check(c, NULL, NULL, 0));
        shmkv_close(c);
        _exit(0);
    }
    int st;
    cr_assert_eq(t_reap(kid, &st), 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
        t_close(db);
        cr_skip("no tmpfs could be mounted here");
    }
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child failed");
    T_OK(shmkv_check(db, NULL, NULL, 0));
    t_close(db);
}

/* Killed inside shmkv_restore(): a restore is a clear and then batches of
 * set_many, so after any kill the store holds all of its old keys and
 * none of the backup's, or none of its old keys and whole batches of the
 * backup's (4096 keys a batch here, backup.c's BATCH_KEYS), each with the
 * backup's value; it is sound, and the next restore loads all of it. */
enum { OLD_KEYS = 2000, NEW_KEYS = 10000, RESTORE_BATCH = 4096 };

static void restore_state(shmkv_db *db, const char *what, uint64_t *old, uint64_t *fresh)
{
    *old = *fresh = 0;
    char v[128];
    for (int i = 0; i < OLD_KEYS; i++)
        *old += shmkv_exists(db, ks("old:%05d", i), 9) == 1;
    for (int i = 0; i < NEW_KEYS; i++) {
        size_t vl = 0;
        int rc = shmkv_get(db, ks("new:%05d", i), 9, v, sizeof v, &vl, NULL);
        if (rc == SHMKV_ENOTFOUND)
            continue;
        cr_assert_eq(rc, 0, "%s: get new:%05d -> %s", what, i, shmkv_strerror(rc));
        const char *want = ks("%0100d", i);
        cr_assert(vl == 100 && memcmp(v, want, 100) == 0, "%s: new:%05d holds another value",
                  what, i);
        (*fresh)++;
    }
    cr_assert(*old == 0 || *old == OLD_KEYS, "%s: %" PRIu64 " of the %d old keys left: a torn clear",
              what, *old, OLD_KEYS);
    cr_assert(*old == 0 || *fresh == 0, "%s: old keys beside %" PRIu64 " restored ones", what,
              *fresh);
    cr_assert(*fresh % RESTORE_BATCH == 0 || *fresh == NEW_KEYS,
              "%s: %" PRIu64 " restored keys, not whole batches of %d", what, *fresh, RESTORE_BATCH);
    cr_assert_eq(shmkv_size(db), *old + *fresh, "%s: size", what);
    T_OK(shmkv_check(db, NULL, NULL, 0));
}

static void killed_inside_restore(shmkv_backend be)
{
    /* the backup: a closed disk store of NEW_KEYS keys */
    const char *bk = t_fresh("backup");
    shmkv_db *src = t_open(bk, SHMKV_BACKEND_DISK, 0);
    for (int i = 0; i < NEW_KEYS; i++)
        t_set(src, ks("new:%05d", i), ks("%0100d", i));
    t_close(src);

    const struct {
        const char *point;
        int skip;
        long old, fresh; /* what must be there after the kill; -1: either */
    } at[] = {
        {"clear.before_commit", 0, OLD_KEYS, 0},
        {"clear.mid", 3, 0, 0}, /* the generation is published before any segment is emptied */
        {"clear.segments_done", 0, 0, 0},
        {"restore.cleared", 0, 0, 0},
        {"batch.prepared", 0, 0, 0},
        {"batch.committed", 0, 0, RESTORE_BATCH},
        {"batch.applying", 1, 0, 2 * RESTORE_BATCH},
        {"batch.applied", 2, 0, NEW_KEYS},
    };
    for (int track = 0; track < 2; track++)
        for (size_t p = 0; p < sizeof at / sizeof at[0]; p++) {
            const char *what = t_str("%s, %s, kill at %s (skip %d)", t_backend_name(be),
                                     track ? "tracked" : "untracked", at[p].point, at[p].skip);
            const char *live = t_where(be, "live");
            shmkv_db *db = t_open(live, be, track ? SHMKV_TRACK_ON : SHMKV_TRACK_OFF);
            for (int i = 0; i < OLD_KEYS; i++)
                t_set(db, ks("old:%05d", i), ks("old value %d", i));
            pid_t kid = t_fork();
            if (kid == 0) {
                shmkv_options o = t_opts(be, SHMKV_TRACK_DEFAULT);
                shmkv_db *c = NULL;
                CHILD_OK(shmkv_open(live, &o, &c));
                t_hook_kill_at(at[p].point, at[p].skip);
                shmkv_restore(c, bk, 0, 0, NULL);
                _exit(5); /* the hook should have killed us */
            }
            int st;
            cr_assert_eq(t_reap(kid, &st), 0);
            cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s: the child was not killed",
                      what);
            uint64_t old, fresh;
            restore_state(db, what, &old, &fresh);
            cr_assert_eq(old, (uint64_t)at[p].old, "%s: old keys", what);
            cr_assert_eq(fresh, (uint64_t)at[p].fresh, "%s: restored keys", what);
            /* the next restore, by a process that was not killed, loads it all */
            shmkv_restore_info ri;
            T_OK(shmkv_restore(db, bk, 0, 0, &ri));
            cr_assert_eq(ri.entries, NEW_KEYS, "%s", what);
            restore_state(db, what, &old, &fresh);
            cr_assert(old == 0 && fresh == NEW_KEYS, "%s: after a second restore", what);
            t_close(db);
            if (be == SHMKV_BACKEND_DISK) {
                t_dump_sound(live, be);
                unlink(live);
            }
        }
}

Test(backup, killed_inside_restore_memory)
{
    killed_inside_restore(SHMKV_BACKEND_MEMORY);
}

Test(backup, killed_inside_restore_disk)
{
    killed_inside_restore(SHMKV_BACKEND_DISK);
}
