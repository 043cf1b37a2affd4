/*
 * test_truncated.c - a store file cut back to the part in use.
 *
 * A store's file is longer than its used part (`top`): growth allocates
 * ahead. A copy or a tool may drop that tail (`truncate -s <top>`); the
 * header still records the old file size. Such a file passes validation
 * (everything below `top` is there), so it must also be safe to use: the
 * next growth has to extend the real file before touching it, never write
 * past its end (which is SIGBUS on a shared mapping).
 *
 * Also: a file shorter than `top` is refused with SHMKV_ECORRUPT and left
 * as it is.
 */
#include "harness.h"

#include "internal.h"

#include <stddef.h>

TestSuite(truncated, .init = t_setup, .fini = t_teardown, .timeout = 300);

static uint64_t header_u64(const char *p, size_t off)
{
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    cr_assert(fd >= 0);
    uint64_t v = 0;
    cr_assert(pread(fd, &v, 8, (off_t)off) == 8);
    close(fd);
    return v;
}

static off_t file_size(const char *p)
{
    struct stat st;
    cr_assert(stat(p, &st) == 0);
    return st.st_size;
}

static void __attribute__((noreturn)) fill_more(const char *p, uint64_t from, uint64_t n)
{
    shmkv_options o;
    memset(&o, 0, sizeof o);
    shmkv_db *db = NULL;
    CHILD_OK(shmkv_open(p, &o, &db));
    char k[32], v[64];
    for (uint64_t i = from; i < from + n; i++) {
        int kl = sprintf(k, "key-%06" PRIu64, i);
        int vl = sprintf(v, "value-%06" PRIu64 "-padding-padding", i);
        int rc = shmkv_set(db, k, (size_t)kl, v, (size_t)vl, SHMKV_KIND_STRING);
        CHILD_CHECK(rc == 0, "set(%s) -> %d (%s)", k, rc, shmkv_strerror(rc));
    }
    for (uint64_t i = 0; i < from + n; i++) {
        int kl = sprintf(k, "key-%06" PRIu64, i);
        int vl = sprintf(v, "value-%06" PRIu64 "-padding-padding", i);
        char got[64];
        size_t gl = 0;
        int rc = shmkv_get(db, k, (size_t)kl, got, sizeof got, &gl, NULL);
        CHILD_CHECK(rc == 0 && gl == (size_t)vl && memcmp(got, v, gl) == 0, "%s reads back wrong", k);
    }
    CHILD_OK(shmkv_close(db));
    _exit(0);
}

Test(truncated, cut_to_top_then_grow)
{
    const char *p = t_path("cut");
    shmkv_db *db = t_open(p, SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    char k[32], v[64];
    for (int i = 0; i < 100; i++) {
        int kl = sprintf(k, "key-%06d", i);
        int vl = sprintf(v, "value-%06d-padding-padding", i);
        T_OK(shmkv_set(db, k, (size_t)kl, v, (size_t)vl, SHMKV_KIND_STRING));
    }
    T_OK(shmkv_close(db));
    uint64_t top = header_u64(p, offsetof(shmkv__hdr, top));
    cr_assert(file_size(p) > (off_t)top, "no preallocated tail to cut (size %lld, top %" PRIu64 ")",
              (long long)file_size(p), top);
    cr_assert(truncate(p, (off_t)top) == 0);

    /* A child grows it well past the old file size; SIGBUS would kill it. */
    pid_t kid = t_fork();
    if (kid == 0)
        fill_more(p, 100, 50000);
    int st = t_wait(kid);
    char b[80];
    cr_assert(!(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS),
              "growing a store cut back to its used size: SIGBUS (wrote past the end of the file)");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer: %s", t_status_str(st, b, sizeof b));
    uint64_t top2 = header_u64(p, offsetof(shmkv__hdr, top));
    cr_assert(file_size(p) >= (off_t)top2, "the file (%lld bytes) ends before top (%" PRIu64 ")",
              (long long)file_size(p), top2);
}

Test(truncated, shorter_than_top_refused)
{
    const char *p = t_path("short");
    shmkv_db *db = t_open(p, SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF);
    T_OK(shmkv_set(db, "a", 1, "b", 1, SHMKV_KIND_STRING));
    T_OK(shmkv_close(db));
    uint64_t top = header_u64(p, offsetof(shmkv__hdr, top));
    off_t cut = (off_t)top - 4096;
    cr_assert(truncate(p, cut) == 0);
    int fd = open(p, O_RDONLY);
    cr_assert(fd >= 0);
    unsigned char *before = malloc((size_t)cut);
    cr_assert(pread(fd, before, (size_t)cut, 0) == cut);
    close(fd);

    shmkv_options o;
    memset(&o, 0, sizeof o);
    db = NULL;
    T_RC(shmkv_open(p, &o, &db), SHMKV_ECORRUPT);
    cr_assert_eq(file_size(p), cut, "the refused file changed size");
    unsigned char *after = malloc((size_t)cut);
    fd = open(p, O_RDONLY);
    cr_assert(pread(fd, after, (size_t)cut, 0) == cut);
    close(fd);
    cr_assert(memcmp(before, after, (size_t)cut) == 0, "the refused file was modified");
    free(before);
    free(after);
}
