/*
 * test_badfile.c - opening things that are not (usable) stores.
 *
 * shmkv_open must refuse them with SHMKV_ENOTSTORE (or SHMKV_EVERSION /
 * SHMKV_EABI where that is what is wrong) and must never modify them: we
 * compare the bytes, the size and the mtime (set to a fixed past time
 * first, so any write shows) before and after. Symbolic links are never
 * followed (-ELOOP). A zero-length file is initialised as a new store.
 */
#include "harness.h"

#include <dirent.h>
#include "internal.h"

#include <stddef.h>
#include <sys/time.h>

TestSuite(badfile, .init = t_setup, .fini = t_teardown, .timeout = 120);

typedef struct {
    unsigned char *bytes;
    size_t len;
    struct stat st;
} snap;

static void snapshot(const char *path, snap *s)
{
    /* an old, exact mtime: any write by the library would change it */
    struct timespec ts[2] = {{1000000000, 123456789}, {1000000000, 123456789}};
    cr_assert(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) == 0, "utimensat: %s",
              strerror(errno));
    s->bytes = t_read_file(path, &s->len);
    cr_assert(lstat(path, &s->st) == 0);
}

static void assert_unchanged(const char *path, snap *s, const char *what)
{
    struct stat st;
    cr_assert(lstat(path, &st) == 0, "%s: file vanished", what);
    size_t len;
    unsigned char *now = t_read_file(path, &len);
    bool same = len == s->len && memcmp(now, s->bytes, len) == 0;
    free(now);
    cr_assert(same, "%s: the file's bytes changed (%zu -> %zu bytes)", what, s->len, len);
    cr_assert_eq(st.st_size, s->st.st_size, "%s: size changed", what);
    cr_assert(st.st_mtim.tv_sec == s->st.st_mtim.tv_sec &&
                  st.st_mtim.tv_nsec == s->st.st_mtim.tv_nsec,
              "%s: mtime changed", what);
    cr_assert_eq(st.st_mode, s->st.st_mode, "%s: mode changed", what);
    cr_assert_eq(st.st_ino, s->st.st_ino, "%s: file replaced", what);
    free(s->bytes);
    s->bytes = NULL;
}

/* Open `where` (a disk path, or a memory name) with default options,
 * read-only and without creating; each must fail with one of the accepted
 * codes and leave the file (for memory, the /dev/shm object behind the
 * name) as it was. */
static void refuse(shmkv_backend be, const char *where, const int *codes, size_t ncodes,
                   const char *what)
{
    const char *path = be == SHMKV_BACKEND_MEMORY ? t_shm_file(where) : where;
    const uint32_t flags[] = {0, SHMKV_RDONLY, SHMKV_NOCREATE};
    for (size_t f = 0; f < 3; f++) {
        snap s;
        snapshot(path, &s);
        shmkv_options o = t_opts(be, 0);
        o.flags = flags[f];
        shmkv_db *db = NULL;
        int rc = shmkv_open(where, &o, &db);
        if (rc == 0)
            shmkv_close(db);
        bool ok = false;
        for (size_t i = 0; i < ncodes; i++)
            ok |= rc == codes[i];
        if (!ok) {
            free(s.bytes);
            cr_assert_fail("%s (%s, flags %u): open -> %d (%s), expected %d (%s)%s", what,
                           t_backend_name(be), flags[f], rc, shmkv_strerror(rc), codes[0],
                           shmkv_strerror(codes[0]),
                           ncodes > 1 ? " or another listed code" : "");
        }
        assert_unchanged(path, &s, what);
    }
}

static const int NOTSTORE[] = {SHMKV_ENOTSTORE};

/* n random bytes (malloc'd) that are no store and no creator's leftover:
 * the first is neither our magic's first byte nor zero. A file of zeros no
 * longer than a creator's first allocation is its leftover, taken as fresh
 * by design (text_and_zeros); with a zero first byte the 1-byte file was
 * such a leftover once in 256 runs. */
static unsigned char *foreign_bytes(t_rng *r, size_t n)
{
    unsigned char *b = malloc(n);
    cr_assert(b);
    for (size_t j = 0; j < n; j++)
        b[j] = (unsigned char)t_next(r);
    if (b[0] == 'S' || b[0] == 0)
        b[0] = 'X';
    return b;
}

Test(badfile, random_bytes)
{
    t_rng r = t_rng_new();
    const size_t sizes[] = {1, 7, 100, 4095, 4096, 16384, 100000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *b = foreign_bytes(&r, sizes[i]);
        const char *p = t_path("rand");
        t_write_file(p, b, sizes[i]);
        free(b);
        char what[64];
        snprintf(what, sizeof what, "%zu random bytes", sizes[i]);
        refuse(SHMKV_BACKEND_DISK, p, NOTSTORE, 1, what);
    }
}

Test(badfile, text_and_zeros)
{
    const char *p = t_path("text");
    const char *txt = "hello, this is a text file\nnot a store\n";
    t_write_file(p, txt, strlen(txt));
    refuse(SHMKV_BACKEND_DISK, p, NOTSTORE, 1, "text file");

    /* (An all-zero file is deliberately taken for the leftover of a
     * creator that died before writing the header, so it is not here.) */

    /* SQLite's header */
    unsigned char sq[4096] = "SQLite format 3";
    const char *ps = t_path("sqlite");
    t_write_file(ps, sq, sizeof sq);
    refuse(SHMKV_BACKEND_DISK, ps, NOTSTORE, 1, "SQLite header");
}

Test(badfile, boltdb_like)
{
    /* BoltDB: pages of 4096 bytes; page 0 and 1 are meta pages whose
     * meta struct starts at offset 16 (after the page header) with the
     * magic 0xED0CDAED, then version 2 and the page size. */
    enum { PS = 4096, SIZE = 16384 };
    unsigned char *b = calloc(1, SIZE);
    cr_assert(b);
    for (int pg = 0; pg < 2; pg++) {
        unsigned char *page = b + pg * PS;
        uint64_t id = (uint64_t)pg;
        uint16_t flags = 0x04; /* metaPageFlag */
        memcpy(page, &id, 8);
        memcpy(page + 8, &flags, 2);
        uint32_t magic = 0xED0CDAEDu, version = 2, psz = PS, fl = 0;
        memcpy(page + 16, &magic, 4);
        memcpy(page + 20, &version, 4);
        memcpy(page + 24, &psz, 4);
        memcpy(page + 28, &fl, 4);
        uint64_t root = 3, freelist = 2, pgid = 4, txid = (uint64_t)pg;
        memcpy(page + 32, &root, 8);
        memcpy(page + 48, &freelist, 8);
        memcpy(page + 56, &pgid, 8);
        memcpy(page + 64, &txid, 8);
    }
    const char *p = t_path("bolt");
    t_write_file(p, b, SIZE);
    free(b);
    refuse(SHMKV_BACKEND_DISK, p, NOTSTORE, 1, "BoltDB-like file");
}

/* A real store with some keys, open. */
static shmkv_db *real_open(const char *where, shmkv_backend be)
{
    shmkv_db *db = t_open(where, be, SHMKV_TRACK_ON);
    for (int i = 0; i < 300; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        t_set(db, k, "some value");
    }
    return db;
}

/* A real, closed disk store with some keys. */
static const char *real_store(void)
{
    const char *p = t_path("real");
    t_close(real_open(p, SHMKV_BACKEND_DISK));
    return p;
}

static void write_prefix_copy(const char *src, const char *dst, size_t n)
{
    size_t len;
    unsigned char *b = t_read_file(src, &len);
    cr_assert(len >= n, "store is only %zu bytes", len);
    t_write_file(dst, b, n);
    free(b);
}

Test(badfile, truncated_store)
{
    const char *src = real_store();
    /* the header page is incomplete: not a store */
    const char *p100 = t_path("trunc100");
    write_prefix_copy(src, p100, 100);
    refuse(SHMKV_BACKEND_DISK, p100, NOTSTORE, 1, "first 100 bytes of a store");
    const char *p8 = t_path("trunc8");
    write_prefix_copy(src, p8, 8);
    refuse(SHMKV_BACKEND_DISK, p8, NOTSTORE, 1, "first 8 bytes of a store");

    /* the whole header but none of the data the header points to: refused
     * as not a (complete) store, or as damaged */
    const int codes[] = {SHMKV_ENOTSTORE, SHMKV_ECORRUPT};
    const char *p4k = t_path("trunc4k");
    write_prefix_copy(src, p4k, 4096);
    refuse(SHMKV_BACKEND_DISK, p4k, codes, 2, "first 4096 bytes of a store");
    const char *p5k = t_path("trunc5k");
    write_prefix_copy(src, p5k, 5000);
    refuse(SHMKV_BACKEND_DISK, p5k, codes, 2, "first 5000 bytes of a store");

    /* the original is still fine */
    shmkv_db *db = t_open(src, SHMKV_BACKEND_DISK, 0);
    cr_assert_eq(shmkv_size(db), 300);
    t_close(db);
}

static void patch_copy(const char *src, const char *dst, size_t off, const void *v, size_t n)
{
    size_t len;
    unsigned char *b = t_read_file(src, &len);
    memcpy(b + off, v, n);
    t_write_file(dst, b, len);
    free(b);
}

Test(badfile, other_version)
{
    const char *src = real_store();
    cr_assert_eq(offsetof(shmkv__hdr, version), 8);
    const uint32_t versions[] = {SHMKV__FORMAT_VERSION + 1, 0, 0xffffffffu};
    for (size_t i = 0; i < 3; i++) {
        const char *p = t_path("ver");
        patch_copy(src, p, 8, &versions[i], 4);
        const int codes[] = {SHMKV_EVERSION};
        char what[48];
        snprintf(what, sizeof what, "store with version %u", versions[i]);
        refuse(SHMKV_BACKEND_DISK, p, codes, 1, what);
    }
}

Test(badfile, other_abi)
{
    const char *src = real_store();
    /* byte-swapped endianness check */
    uint32_t e = 0x04030201u;
    const char *p = t_path("endian");
    patch_copy(src, p, offsetof(shmkv__hdr, endian), &e, 4);
    const int codes[] = {SHMKV_EABI};
    refuse(SHMKV_BACKEND_DISK, p, codes, 1, "store with the other byte order");
    /* 4-byte words */
    uint16_t w = 4;
    const char *p2 = t_path("word");
    patch_copy(src, p2, offsetof(shmkv__hdr, word_size), &w, 2);
    refuse(SHMKV_BACKEND_DISK, p2, codes, 1, "store with 4-byte words");
    /* another mutex size */
    uint16_t ms = 24;
    const char *p3 = t_path("mutex");
    patch_copy(src, p3, offsetof(shmkv__hdr, mutex_size), &ms, 2);
    refuse(SHMKV_BACKEND_DISK, p3, codes, 1, "store with another mutex size");
}

Test(badfile, bad_magic)
{
    const char *src = real_store();
    const char *p = t_path("magic");
    patch_copy(src, p, 0, "SHMKVdX", 7);
    refuse(SHMKV_BACKEND_DISK, p, NOTSTORE, 1, "store with a damaged magic");
}

Test(badfile, directory)
{
    char dir[256];
    snprintf(dir, sizeof dir, "%s/adir", t_dir());
    cr_assert(mkdir(dir, 0700) == 0);
    shmkv_db *db = NULL;
    int rc = shmkv_open(dir, NULL, &db);
    if (rc == 0)
        shmkv_close(db);
    cr_assert(rc == -EISDIR || rc == SHMKV_ENOTSTORE, "open(directory) -> %d (%s)", rc,
              shmkv_strerror(rc));
    DIR *d = opendir(dir);
    cr_assert(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    cr_assert_eq(n, 0, "open(directory) created files inside it");
    struct stat st;
    cr_assert(stat(dir, &st) == 0 && S_ISDIR(st.st_mode));
}

Test(badfile, symlink_never_followed)
{
    /* to a real store */
    const char *src = real_store();
    char link[256];
    snprintf(link, sizeof link, "%s/link.kv", t_dir());
    cr_assert(symlink(src, link) == 0);
    snap s;
    snapshot(src, &s);
    shmkv_db *db = NULL;
    int rc = shmkv_open(link, NULL, &db);
    if (rc == 0)
        shmkv_close(db);
    cr_assert_eq(rc, -ELOOP, "open(symlink to a store) -> %d (%s)", rc, shmkv_strerror(rc));
    assert_unchanged(src, &s, "symlink target");

    /* dangling: must not create the target */
    char link2[256], target[256];
    snprintf(target, sizeof target, "%s/not-there.kv", t_dir());
    snprintf(link2, sizeof link2, "%s/dangling.kv", t_dir());
    cr_assert(symlink(target, link2) == 0);
    rc = shmkv_open(link2, NULL, &db);
    if (rc == 0)
        shmkv_close(db);
    cr_assert_eq(rc, -ELOOP, "open(dangling symlink) -> %d (%s)", rc, shmkv_strerror(rc));
    cr_assert(!t_exists(target), "open followed a dangling symlink and created its target");
    shmkv_options o = t_opts(SHMKV_BACKEND_DISK, 0);
    o.flags = SHMKV_RDONLY;
    rc = shmkv_open(link, &o, &db);
    if (rc == 0)
        shmkv_close(db);
    cr_assert_eq(rc, -ELOOP, "read-only open(symlink) -> %d", rc);
    struct stat st;
    cr_assert(lstat(link, &st) == 0 && S_ISLNK(st.st_mode), "the link itself was replaced");
}

Test(badfile, zero_length_file_becomes_store)
{
    const char *p = t_path("zero");
    t_write_file(p, "", 0);
    shmkv_db *db = t_open(p, SHMKV_BACKEND_DISK, 0);
    t_set(db, "k", "v");
    t_close(db);
    struct stat st;
    cr_assert(stat(p, &st) == 0);
    cr_assert(st.st_size >= (off_t)SHMKV__HDR_SIZE);
    db = t_open(p, SHMKV_BACKEND_DISK, 0);
    t_expect_str(db, "k", "v");
    t_close(db);
    size_t len;
    unsigned char *b = t_read_file(p, &len);
    bool magic = len >= 8 && memcmp(b, SHMKV__MAGIC, 8) == 0;
    free(b);
    cr_assert(magic, "initialised file does not start with the magic");
}

Test(badfile, unreadable_file)
{
    if (geteuid() == 0) {
        /* root reads anything: check the open still works rather than
         * pretending to test EACCES */
        const char *p = t_path("noperm");
        t_write_file(p, "", 0);
        cr_assert(chmod(p, 0) == 0);
        shmkv_db *db = NULL;
        int rc = shmkv_open(p, NULL, &db);
        cr_assert_eq(rc, 0, "root open(mode 000) -> %d (%s)", rc, shmkv_strerror(rc));
        shmkv_close(db);
        return;
    }
    const char *p = t_path("noperm");
    t_write_file(p, "", 0);
    cr_assert(chmod(p, 0) == 0);
    shmkv_db *db = NULL;
    T_RC(shmkv_open(p, NULL, &db), -EACCES);
}

/* ---- files that start with zeros (issue 10, item 1) --------------------- */

/* A file whose first page is zero is not necessarily a creator's leftover:
 * an ISO-9660 image starts with 32 KiB of zeros. Only what a creator could
 * really have left (nothing but zeros, no longer than the layout it was
 * writing) may be taken over; anything else is refused and kept. */
static void zero_prefixed(const char *tag, size_t zeros, const void *tail, size_t tlen)
{
    unsigned char *b = calloc(1, zeros + tlen);
    cr_assert(b);
    memcpy(b + zeros, tail, tlen);
    const char *p = t_path(tag);
    t_write_file(p, b, zeros + tlen);
    free(b);
    char what[96];
    snprintf(what, sizeof what, "%zu zero bytes then %zu bytes of data (%s)", zeros, tlen, tag);
    refuse(SHMKV_BACKEND_DISK, p, NOTSTORE, 1, what);
}

Test(badfile, zero_prefixed_foreign_files)
{
    /* ISO-9660: 16 sectors of 2 KiB of zeros, then the volume descriptor */
    unsigned char pvd[2048] = {1, 'C', 'D', '0', '0', '1', 1};
    memcpy(pvd + 40, "MY_BACKUP_2024", 14);
    zero_prefixed("iso", 32768, pvd, sizeof pvd);
    /* one page of zeros, then data */
    zero_prefixed("page", 4096, "data", 4);
    /* zeros up to the last byte, which is not */
    zero_prefixed("last", 65535, "x", 1);
    /* a large file of zeros: longer than any creator writes before its
     * header is complete, so it is somebody's (e.g. a fresh disk image) */
    const char *big = t_path("bigzero");
    int fd = open(big, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert(fd >= 0);
    cr_assert(ftruncate(fd, 8 << 20) == 0);
    close(fd);
    refuse(SHMKV_BACKEND_DISK, big, NOTSTORE, 1, "8 MiB of zeros");
    /* the in-progress magic on a file too long to be a creation */
    unsigned char init[8];
    memcpy(init, SHMKV__MAGIC_INIT, 8);
    const char *pi = t_path("initbig");
    fd = open(pi, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert(fd >= 0);
    cr_assert(pwrite(fd, init, 8, 0) == 8);
    cr_assert(ftruncate(fd, 8 << 20) == 0);
    close(fd);
    refuse(SHMKV_BACKEND_DISK, pi, NOTSTORE, 1, "in-progress magic on 8 MiB");
}

/* What a killed creator does leave (zeros, as long as the layout's start)
 * is still taken over and becomes a store. */
Test(badfile, zero_file_of_creation_size_becomes_store)
{
    const size_t sizes[] = {100, 4096, 69632};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        const char *p = t_path("zeros");
        unsigned char *b = calloc(1, sizes[i]);
        cr_assert(b);
        t_write_file(p, b, sizes[i]);
        free(b);
        shmkv_db *db = t_open(p, SHMKV_BACKEND_DISK, 0);
        t_set(db, "k", "v");
        t_expect_str(db, "k", "v");
        t_close(db);
    }
}

/* ---- foreign objects in /dev/shm ------------------------------------------ */

/* The memory backend has its own open path: a store whose processes are all
 * gone is started empty by its next opener, which must never extend to an
 * object that is not a store. Each object is planted under a fresh name, as
 * any other program could leave it in /dev/shm. (What a killed creator
 * leaves, zeros or the in-progress magic no longer than a creation, is
 * taken over by design, and so is a valid store nobody is attached to: the
 * memory backend's promise is that such a store is found empty.) */
static const char *plant_shm(const char *tag, const void *p, size_t n)
{
    const char *name = t_name(tag);
    t_write_file(t_shm_file(name), p, n);
    return name;
}

/* A copy of a real memory store, taken while it is open (its object goes
 * with its last process), with n bytes at off replaced by v. */
static const char *patched_shm_copy(const unsigned char *store, size_t len, size_t off,
                                    const void *v, size_t n)
{
    unsigned char *b = malloc(len);
    cr_assert(b);
    memcpy(b, store, len);
    memcpy(b + off, v, n);
    const char *name = plant_shm("patched", b, len);
    free(b);
    return name;
}

Test(badfile, foreign_memory_objects)
{
    const shmkv_backend M = SHMKV_BACKEND_MEMORY;

    t_rng r = t_rng_new();
    const size_t sizes[] = {1, 100, 4095, 4096, 16384, 100000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *b = foreign_bytes(&r, sizes[i]);
        const char *name = plant_shm("rand", b, sizes[i]);
        free(b);
        refuse(M, name, NOTSTORE, 1, t_str("object of %zu random bytes", sizes[i]));
    }

    /* ISO-9660-like: 32 KiB of zeros, then volume descriptors; 40 KiB is
     * well within a creation's size, so only the data after the zeros
     * tells it from a creator's leftover */
    enum { ISO_ZEROS = 32768, ISO_SIZE = 40960 };
    unsigned char *iso = calloc(1, ISO_SIZE);
    cr_assert(iso);
    memset(iso + ISO_ZEROS, ' ', ISO_SIZE - ISO_ZEROS);
    memcpy(iso + ISO_ZEROS, (const unsigned char[]){1, 'C', 'D', '0', '0', '1', 1}, 7);
    memcpy(iso + ISO_ZEROS + 40, "MY_BACKUP_2024", 14);
    const char *niso = plant_shm("iso", iso, ISO_SIZE);
    free(iso);
    refuse(M, niso, NOTSTORE, 1, "40 KiB object: 32 KiB of zeros, then an ISO-9660 descriptor");

    const char *txt = "hello, this is a text file\nnot a store\n";
    refuse(M, plant_shm("text", txt, strlen(txt)), NOTSTORE, 1, "text object");

    /* A real memory store's bytes with its identity patched: these say
     * what is wrong (EVERSION, EABI), and must be refused before the
     * "nobody attached, start it empty" rule could apply to them. */
    const char *real = t_name("real");
    shmkv_db *db = real_open(real, M);
    size_t len;
    unsigned char *store = t_read_file(t_shm_file(real), &len);
    t_close(db);
    cr_assert(len >= SHMKV__HDR_SIZE && memcmp(store, SHMKV__MAGIC, 8) == 0,
              "the memory store's object (%zu bytes) does not start with the magic", len);

    const int EVER[] = {SHMKV_EVERSION};
    const uint32_t versions[] = {SHMKV__FORMAT_VERSION + 1, 0, 0xffffffffu};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        const char *name = patched_shm_copy(store, len, offsetof(shmkv__hdr, version),
                                            &versions[i], sizeof versions[i]);
        refuse(M, name, EVER, 1, t_str("memory store with version %u", versions[i]));
    }

    const int EABI[] = {SHMKV_EABI};
    uint32_t e = 0x04030201u;
    refuse(M, patched_shm_copy(store, len, offsetof(shmkv__hdr, endian), &e, sizeof e), EABI, 1,
           "memory store with the other byte order");
    uint16_t w = 4;
    refuse(M, patched_shm_copy(store, len, offsetof(shmkv__hdr, word_size), &w, sizeof w), EABI,
           1, "memory store with 4-byte words");
    uint16_t ms = 24;
    refuse(M, patched_shm_copy(store, len, offsetof(shmkv__hdr, mutex_size), &ms, sizeof ms),
           EABI, 1, "memory store with another mutex size");
    free(store);
}
