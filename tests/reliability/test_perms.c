/*
 * test_perms.c - permissions of new stores, symbolic links, and names.
 *
 *  - a new store file and a new /dev/shm object get mode 0600 (checked with
 *    umask 0, so nothing is hidden by the umask) unless options.mode says
 *    otherwise; an existing store keeps its mode;
 *  - the store path is never followed through a symbolic link: opening a
 *    symlink fails with -ELOOP and whatever it points to is untouched; a
 *    dangling symlink creates nothing; the same holds for a symlink planted
 *    in /dev/shm under a memory store's object name;
 *  - a directory is -EISDIR, a FIFO or a device is SHMKV_ENOTSTORE (and
 *    opening them does not block);
 *  - memory names: '/', empty, 201 characters, ".", "..", and characters
 *    outside [A-Za-z0-9._-] are SHMKV_ENAME (for open and for unlink) and
 *    create nothing; 200 characters is fine.
 */
#include "harness.h"

#include <sys/sysmacros.h>

TestSuite(perms, .init = t_setup, .fini = t_teardown, .timeout = 120);

static mode_t mode_of(const char *p)
{
    struct stat st;
    cr_assert(lstat(p, &st) == 0, "lstat(%s): %s", p, strerror(errno));
    return st.st_mode & 07777;
}

static const char *shm_path(const char *name)
{
    return t_str("/dev/shm/shmkv.%s", name);
}

static shmkv_db *open_mode(const char *where, shmkv_backend be, uint32_t mode)
{
    shmkv_options o;
    memset(&o, 0, sizeof o);
    o.backend = be;
    o.mode = mode;
    shmkv_db *db = NULL;
    int rc = shmkv_open(where, &o, &db);
    cr_assert_eq(rc, 0, "open(%s, mode %o) -> %d (%s)", where, mode, rc, shmkv_strerror(rc));
    return db;
}

Test(perms, disk_default_0600)
{
    umask(0);
    const char *p = t_path("mode");
    shmkv_db *db = open_mode(p, SHMKV_BACKEND_DISK, 0);
    cr_assert_eq(mode_of(p), 0600, "new store file has mode %o", mode_of(p));
    T_OK(shmkv_close(db));
}

Test(perms, disk_mode_option)
{
    umask(0);
    const char *p = t_path("mode");
    shmkv_db *db = open_mode(p, SHMKV_BACKEND_DISK, 0640);
    cr_assert_eq(mode_of(p), 0640, "mode 0640 gave %o", mode_of(p));
    T_OK(shmkv_close(db));
    /* reopening with another mode does not change an existing store */
    db = open_mode(p, SHMKV_BACKEND_DISK, 0666);
    cr_assert_eq(mode_of(p), 0640, "reopening changed the mode to %o", mode_of(p));
    T_OK(shmkv_close(db));
}

Test(perms, memory_default_0600)
{
    umask(0);
    const char *n = t_name("mode");
    shmkv_db *db = open_mode(n, SHMKV_BACKEND_MEMORY, 0);
    cr_assert_eq(mode_of(shm_path(n)), 0600, "new /dev/shm object has mode %o",
                 mode_of(shm_path(n)));
    T_OK(shmkv_close(db));
}

Test(perms, memory_mode_option)
{
    umask(0);
    const char *n = t_name("mode");
    shmkv_db *db = open_mode(n, SHMKV_BACKEND_MEMORY, 0604);
    cr_assert_eq(mode_of(shm_path(n)), 0604, "mode 0604 gave %o", mode_of(shm_path(n)));
    T_OK(shmkv_close(db));
}

/* ---- symbolic links ---------------------------------------------------- */

static unsigned char *slurp(const char *p, size_t *n)
{
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    cr_assert(fd >= 0, "open(%s): %s", p, strerror(errno));
    struct stat st;
    cr_assert(fstat(fd, &st) == 0);
    unsigned char *b = malloc((size_t)st.st_size + 1);
    cr_assert(b);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, b + got, (size_t)st.st_size - got);
        cr_assert(r > 0);
        got += (size_t)r;
    }
    close(fd);
    *n = got;
    return b;
}

static void open_link_refused(const char *link, shmkv_backend be, const char *where, uint32_t flags)
{
    shmkv_options o;
    memset(&o, 0, sizeof o);
    o.backend = be;
    o.flags = flags;
    shmkv_db *db = NULL;
    int rc = shmkv_open(where, &o, &db);
    cr_assert_eq(rc, -ELOOP, "open through the symlink %s -> %d (%s), expected -ELOOP", link, rc,
                 shmkv_strerror(rc));
    cr_assert_null(db);
    struct stat st;
    cr_assert(lstat(link, &st) == 0 && S_ISLNK(st.st_mode), "the symlink itself was replaced");
}

/* A symlink to a file that is not a store: refused, file untouched. */
Test(perms, disk_symlink_to_file)
{
    const char *target = t_path("target");
    const char *link = t_path("link");
    int fd = open(target, O_WRONLY | O_CREAT | O_EXCL, 0644);
    cr_assert(fd >= 0);
    cr_assert(write(fd, "precious data\n", 14) == 14);
    close(fd);
    struct stat before, after;
    cr_assert(stat(target, &before) == 0);
    cr_assert(symlink(target, link) == 0);
    open_link_refused(link, SHMKV_BACKEND_DISK, link, 0);
    open_link_refused(link, SHMKV_BACKEND_DISK, link, SHMKV_NOCREATE);
    size_t n;
    unsigned char *b = slurp(target, &n);
    cr_assert(n == 14 && memcmp(b, "precious data\n", 14) == 0, "the target was changed");
    free(b);
    cr_assert(stat(target, &after) == 0);
    cr_assert(after.st_mtim.tv_sec == before.st_mtim.tv_sec &&
                  after.st_mtim.tv_nsec == before.st_mtim.tv_nsec && after.st_mode == before.st_mode,
              "the target's metadata changed");
}

/* A symlink to a real store: refused all the same, store untouched. */
Test(perms, disk_symlink_to_store)
{
    const char *target = t_path("store");
    const char *link = t_path("link");
    shmkv_db *db = open_mode(target, SHMKV_BACKEND_DISK, 0);
    T_OK(shmkv_set(db, "k", 1, "v", 1, SHMKV_KIND_STRING));
    T_OK(shmkv_close(db));
    size_t n0, n1;
    unsigned char *b0 = slurp(target, &n0);
    cr_assert(symlink(target, link) == 0);
    open_link_refused(link, SHMKV_BACKEND_DISK, link, 0);
    unsigned char *b1 = slurp(target, &n1);
    cr_assert(n0 == n1 && memcmp(b0, b1, n0) == 0, "the store behind the symlink was modified");
    free(b0);
    free(b1);
}

/* A dangling symlink: refused, and nothing is created at its target. */
Test(perms, disk_dangling_symlink)
{
    const char *target = t_path("nowhere");
    const char *link = t_path("link");
    cr_assert(symlink(target, link) == 0);
    open_link_refused(link, SHMKV_BACKEND_DISK, link, 0);
    struct stat st;
    cr_assert(lstat(target, &st) != 0 && errno == ENOENT, "opening created the link's target");
}

/* The same for a symlink planted in /dev/shm under the object's name. */
Test(perms, memory_symlink)
{
    const char *target = t_path("shmtarget");
    int fd = open(target, O_WRONLY | O_CREAT | O_EXCL, 0600);
    cr_assert(fd >= 0);
    cr_assert(write(fd, "keep", 4) == 4);
    close(fd);
    const char *n = t_name("lnk");
    const char *link = shm_path(n);
    cr_assert(symlink(target, link) == 0, "symlink %s: %s", link, strerror(errno));
    open_link_refused(link, SHMKV_BACKEND_MEMORY, n, 0);
    size_t len;
    unsigned char *b = slurp(target, &len);
    cr_assert(len == 4 && memcmp(b, "keep", 4) == 0, "the target was changed");
    free(b);
    unlink(link);

    const char *n2 = t_name("dang");
    const char *gone = t_path("shmnowhere");
    cr_assert(symlink(gone, shm_path(n2)) == 0);
    open_link_refused(shm_path(n2), SHMKV_BACKEND_MEMORY, n2, 0);
    struct stat st;
    cr_assert(lstat(gone, &st) != 0 && errno == ENOENT, "opening created the link's target");
    unlink(shm_path(n2));
}

/* ---- things that are not regular files ----------------------------------- */

Test(perms, not_regular_files)
{
    shmkv_options o;
    memset(&o, 0, sizeof o);
    shmkv_db *db = NULL;
    const char *d = t_path("dir");
    cr_assert(mkdir(d, 0700) == 0);
    int rc = shmkv_open(d, &o, &db);
    cr_assert(rc == -EISDIR, "a directory -> %d (%s)", rc, shmkv_strerror(rc));

    const char *f = t_path("fifo");
    cr_assert(mkfifo(f, 0600) == 0);
    rc = shmkv_open(f, &o, &db);
    cr_assert(rc == SHMKV_ENOTSTORE, "a FIFO -> %d (%s)", rc, shmkv_strerror(rc));

    rc = shmkv_open("/dev/null", &o, &db);
    cr_assert(rc == SHMKV_ENOTSTORE, "/dev/null -> %d (%s)", rc, shmkv_strerror(rc));
    struct stat st;
    cr_assert(stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode), "/dev/null changed");
    cr_assert_null(db);
}

/* ---- memory-store names ------------------------------------------------ */

Test(perms, memory_bad_names)
{
    char longname[256];
    memset(longname, 'a', 201);
    longname[201] = 0;
    const char *bad[] = {"a/b",  "/abs",  "",     longname, "..",  ".",  "a b", "a\nb",
                         "a*",   "a:b",   "a\\b", "caf\xc3\xa9", "~x", "a\tb", "%s", "a$b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        shmkv_options o;
        memset(&o, 0, sizeof o);
        o.backend = SHMKV_BACKEND_MEMORY;
        shmkv_db *db = NULL;
        int rc = shmkv_open(bad[i], &o, &db);
        cr_expect_eq(rc, SHMKV_ENAME, "open(memory \"%s\") -> %d (%s), expected SHMKV_ENAME",
                     strlen(bad[i]) > 20 ? "(201 chars)" : bad[i], rc, shmkv_strerror(rc));
        if (rc == 0)
            shmkv_close(db);
        rc = shmkv_memory_unlink(bad[i]);
        cr_expect_eq(rc, SHMKV_ENAME, "memory_unlink(\"%s\") -> %d, expected SHMKV_ENAME",
                     strlen(bad[i]) > 20 ? "(201 chars)" : bad[i], rc);
        /* nothing appeared under the name it would have had (checked by
         * name: other processes may use /dev/shm meanwhile) */
        if (!strchr(bad[i], '/') && strlen(bad[i]) < 230) {
            struct stat st;
            const char *p = t_str("/dev/shm/shmkv.%s", bad[i]);
            cr_expect(lstat(p, &st) != 0, "refused name \"%s\" created %s", bad[i], p);
        }
    }
}

Test(perms, memory_name_200_chars)
{
    /* our prefix, padded to exactly SHMKV_NAME_MAX with name characters */
    char name[SHMKV_NAME_MAX + 1];
    int n = snprintf(name, sizeof name, "%s200.", t_name_prefix());
    memset(name + n, 'Z', SHMKV_NAME_MAX - (size_t)n);
    name[SHMKV_NAME_MAX] = 0;
    cr_assert_eq(strlen(name), SHMKV_NAME_MAX);
    shmkv_db *db = open_mode(name, SHMKV_BACKEND_MEMORY, 0);
    T_OK(shmkv_set(db, "k", 1, "v", 1, SHMKV_KIND_STRING));
    struct stat st;
    cr_assert(stat(shm_path(name), &st) == 0, "no /dev/shm object for a 200-character name");
    T_OK(shmkv_close(db));
    /* and the other allowed characters */
    const char *ok = t_name("A-z_0.9");
    db = open_mode(ok, SHMKV_BACKEND_MEMORY, 0);
    T_OK(shmkv_close(db));
}

/* ---- read-only opens of stores that do not exist (issue 10, item 8) ------ */

static int open_flags(const char *where, shmkv_backend be, uint32_t flags)
{
    shmkv_options o;
    memset(&o, 0, sizeof o);
    o.backend = be;
    o.flags = flags;
    shmkv_db *db = NULL;
    int rc = shmkv_open(where, &o, &db);
    if (rc == 0)
        shmkv_close(db);
    return rc;
}

Test(perms, readonly_open_of_missing_store_creates_nothing)
{
    const char *p = t_path("ro-missing");
    int rc = open_flags(p, SHMKV_BACKEND_DISK, SHMKV_RDONLY);
    cr_expect_eq(rc, -ENOENT, "read-only open of a missing file -> %d (%s), expected -ENOENT", rc,
                 shmkv_strerror(rc));
    struct stat st;
    cr_assert(lstat(p, &st) != 0 && errno == ENOENT, "a read-only open created %s", p);

    const char *n = t_name("romiss");
    rc = open_flags(n, SHMKV_BACKEND_MEMORY, SHMKV_RDONLY);
    cr_expect_eq(rc, -ENOENT, "read-only open of a missing memory store -> %d (%s)", rc,
                 shmkv_strerror(rc));
    cr_assert(lstat(shm_path(n), &st) != 0 && errno == ENOENT,
              "a read-only open created %s", shm_path(n));

    /* an empty file is not a store yet: read-only, it stays as it is */
    const char *e = t_path("ro-empty");
    int fd = open(e, O_WRONLY | O_CREAT | O_EXCL, 0600);
    cr_assert(fd >= 0);
    close(fd);
    rc = open_flags(e, SHMKV_BACKEND_DISK, SHMKV_RDONLY);
    cr_expect_eq(rc, -ENOENT, "read-only open of an empty file -> %d (%s)", rc,
                 shmkv_strerror(rc));
    cr_assert(lstat(e, &st) == 0 && st.st_size == 0, "a read-only open wrote to an empty file");

    /* a memory store whose processes are all gone is gone: the same */
    const char *g = t_name("rogone");
    pid_t kid = t_fork();
    if (kid == 0) {
        /* a process that dies holding the store leaves the object behind */
        shmkv_db *d = NULL;
        CHILD_OK(shmkv_open(g, &(shmkv_options){.backend = SHMKV_BACKEND_MEMORY}, &d));
        CHILD_OK(shmkv_set(d, "k", 1, "v", 1, SHMKV_KIND_STRING));
        raise(SIGKILL);
        _exit(1);
    }
    t_wait(kid);
    cr_assert(lstat(shm_path(g), &st) == 0, "the dead process's object is missing");
    rc = open_flags(g, SHMKV_BACKEND_MEMORY, SHMKV_RDONLY);
    cr_expect_eq(rc, -ENOENT, "read-only open of a memory store nobody holds -> %d (%s)", rc,
                 shmkv_strerror(rc));
    shmkv_memory_unlink(g);
}

/* ---- the umask does not narrow the requested mode -------------------------- */

Test(perms, mode_is_exact_under_umask)
{
    umask(077);
    const char *p = t_path("umask");
    shmkv_db *db = open_mode(p, SHMKV_BACKEND_DISK, 0644);
    mode_t m = mode_of(p);
    T_OK(shmkv_close(db));
    cr_expect_eq(m, 0644, "mode 0644 under umask 077 gave %o", m);

    const char *n = t_name("umask");
    db = open_mode(n, SHMKV_BACKEND_MEMORY, 0640);
    m = mode_of(shm_path(n));
    T_OK(shmkv_close(db));
    cr_expect_eq(m, 0640, "memory mode 0640 under umask 077 gave %o", m);

    /* the default stays 0600 whatever the umask */
    umask(0);
    const char *d = t_path("umask0");
    db = open_mode(d, SHMKV_BACKEND_DISK, 0);
    m = mode_of(d);
    T_OK(shmkv_close(db));
    cr_expect_eq(m, 0600, "default mode under umask 0 gave %o", m);
}
