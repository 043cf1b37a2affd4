/*
 * fuzz_open.c - libFuzzer harness: arbitrary bytes as a store file.
 *
 * The input is written to a scratch file, followed by runs of zeros so that
 * a header whose `top` lies past the input can still be accepted:
 *   the bytes as they are; plus 4 KiB of zeros; padded to 1 MiB.
 * Each variant is opened with shmkv_open(). What the library promises and
 * this harness checks:
 *   - open never crashes (no SIGSEGV, no SIGBUS, no sanitizer report);
 *   - it returns 0 or one of the documented codes;
 *   - a file it refuses keeps its size; one refused on its header alone
 *     (ENOTSTORE, EVERSION, EABI, EINCOMPAT) is left byte for byte as it
 *     was. (SHMKV_ECORRUPT may also come from a repair of an unclean store
 *     that met damage half-way: by then lock words are re-initialised and
 *     part of the repair is written, which the API does not exclude.)
 *   - when it opens, stat() describes the store it read;
 *   - it opens nothing that holds foreign data: a file without the store
 *     magic is only taken over when it is what a killed creator leaves (all
 *     zero, or the in-progress magic), never when a page of zeros is
 *     followed by somebody's bytes (an ISO-9660 image starts that way).
 *
 * By default (promise mode) that is all. The library validates the header
 * page only: once the header is sound it trusts the structures inside the
 * region (segment tables, chunks, the index). Those are read by the
 * operations and also by open itself when the store was not closed cleanly
 * (the repair walks every segment). So in promise mode the harness marks
 * an input that carries the store magic as cleanly closed before opening
 * it, and runs no operation that reads the internals: what is fuzzed is
 * exactly the header validation and the attach protocol.
 *
 * Built with -DFUZZ_OPEN_DEEP=1 the harness keeps the input as it is (so
 * unclean stores go through the repair) and also runs get / set / list /
 * random_key / incr / delete on every store it opened. Crashes found that
 * way are findings about missing internal checks (kept in
 * tests/fuzz/findings/fuzz_open_deep/ for the lead), not regressions.
 *
 * The scratch directory is $FUZZ_TMPDIR (run.sh sets it) or a fresh one
 * under /tmp, removed at exit (and, after a crash, by the next standalone
 * run).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "internal.h"
#include "shmkv.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef FUZZ_OPEN_DEEP
#define FUZZ_OPEN_DEEP 0
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static char dir[256], path[300];
static bool own_dir;
static unsigned char *back; /* read-back buffer */

/* Scratch directories of earlier standalone runs that crashed (their
 * process is gone) are removed at start-up. */
static void sweep_dead(void)
{
    DIR *d = opendir("/tmp");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int pid = 0;
        if (sscanf(e->d_name, "shmkv-fuzz-open.%d.", &pid) != 1 || pid <= 0 ||
            kill(pid, 0) == 0 || errno != ESRCH)
            continue;
        char p[512];
        snprintf(p, sizeof p, "/tmp/%s/open.%d.kv", e->d_name, pid);
        unlink(p);
        snprintf(p, sizeof p, "/tmp/%s", e->d_name);
        rmdir(p);
    }
    closedir(d);
}

static void cleanup(void)
{
    unlink(path);
    if (own_dir)
        rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *d = getenv("FUZZ_TMPDIR");
    if (d && *d && strlen(d) < 200) {
        snprintf(dir, sizeof dir, "%s", d);
    } else {
        sweep_dead();
        snprintf(dir, sizeof dir, "/tmp/shmkv-fuzz-open.%d.XXXXXX", (int)getpid());
        if (!mkdtemp(dir))
            abort();
        own_dir = true;
    }
    snprintf(path, sizeof path, "%s/open.%d.kv", dir, (int)getpid());
    atexit(cleanup);
    return 0;
}

static bool known_code(int rc)
{
    switch (rc) {
    case SHMKV_ENOTSTORE:
    case SHMKV_EVERSION:
    case SHMKV_EABI:
    case SHMKV_EINCOMPAT:
    case SHMKV_ECORRUPT:
    case SHMKV_ELOCK:
    case -ENOMEM:
    case -ENOSPC:
    case -EINVAL:
        return true;
    default:
        return false;
    }
}

static unsigned char *eff; /* the bytes actually written */

static void write_variant(const uint8_t *data, size_t size, size_t total)
{
    memcpy(eff, data, size);
#if !FUZZ_OPEN_DEEP
    /* promise mode: a store that looks unclean is marked clean, so open
     * does not walk (trusted) internals; see the top of the file */
    const size_t at = offsetof(shmkv__hdr, clean);
    if (size >= at + 4 && memcmp(data, SHMKV__MAGIC, 8) == 0) {
        uint32_t one = 1;
        memcpy(eff + at, &one, 4);
    }
#endif
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        abort();
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, eff + off, size - off);
        if (w <= 0)
            abort();
        off += (size_t)w;
    }
    if (total > size && ftruncate(fd, (off_t)total) != 0)
        abort();
    close(fd);
}

static bool header_refusal(int rc)
{
    return rc == SHMKV_ENOTSTORE || rc == SHMKV_EVERSION || rc == SHMKV_EABI ||
           rc == SHMKV_EINCOMPAT;
}

/* A refused file keeps its size; refused on its header, its bytes too. */
static void check_untouched(size_t size, size_t total, int rc)
{
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size != total) {
        fprintf(stderr, "fuzz_open: FAIL: open refused the file (%d: %s) but changed its size to %lld, not %zu\n",
                rc, shmkv_strerror(rc), (long long)st.st_size, total);
        abort();
    }
    if (!header_refusal(rc))
        return;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        abort();
    size_t chk = total < (64u << 10) ? total : size; /* the zero pad of the 1 MiB case: size only */
    size_t got = 0;
    while (got < chk) {
        ssize_t r = pread(fd, back + got, chk - got, (off_t)got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    bool same = got == chk && memcmp(back, eff, size < chk ? size : chk) == 0;
    for (size_t i = size; same && i < chk; i++)
        same = back[i] == 0;
    if (!same) {
        fprintf(stderr, "fuzz_open: FAIL: open refused the file (%d: %s) but modified its contents\n", rc,
                shmkv_strerror(rc));
        abort();
    }
}

/* The bytes written hold data that is neither a store nor what a creator
 * killed before its header was complete leaves behind. */
static bool foreign(size_t size)
{
    if (size >= 8 && (memcmp(eff, SHMKV__MAGIC, 8) == 0 || memcmp(eff, SHMKV__MAGIC_INIT, 8) == 0))
        return false;
    for (size_t i = 0; i < size; i++)
        if (eff[i])
            return true;
    return false;
}

#if FUZZ_OPEN_DEEP
static int list_cb(void *ctx, const void *k, size_t kl, const void *v, size_t vl, shmkv_kind kind)
{
    (void)k, (void)kl, (void)v, (void)vl, (void)kind;
    return ++*(int *)ctx >= 200;
}

static void exercise(shmkv_db *db)
{
    char buf[256];
    size_t n = 0;
    shmkv_get(db, "k", 1, buf, sizeof buf, &n, NULL);
    shmkv_get(db, "key-0", 5, buf, sizeof buf, &n, NULL);
    int listed = 0;
    shmkv_list(db, NULL, 0, 0, 0, list_cb, &listed);
    shmkv_random_key(db, NULL, 0, buf, sizeof buf, &n);
    shmkv_random_key(db, "k", 1, buf, sizeof buf, &n);
    if (shmkv_set(db, "fuzz-key", 8, "fuzz-value", 10, SHMKV_KIND_STRING) == 0) {
        int rc = shmkv_get(db, "fuzz-key", 8, buf, sizeof buf, &n, NULL);
        if (rc != 0 || n != 10 || memcmp(buf, "fuzz-value", 10) != 0) {
            fprintf(stderr, "fuzz_open: FAIL: a value just set reads back as rc %d, %zu bytes\n", rc, n);
            abort();
        }
        shmkv_delete(db, "fuzz-key", 8, NULL);
    }
    int64_t r;
    shmkv_incr(db, "ctr", 3, 1, SHMKV_KIND_STRING, &r);
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!back && !(back = malloc(64u << 10)))
        abort();
    if (!eff && !(eff = malloc(1u << 20)))
        abort();
    if (size > (1u << 20) - 4096)
        return 0;
    size_t totals[3] = {size, size + 4096, 1u << 20};
    for (int v = 0; v < 3; v++) {
        size_t total = totals[v];
        write_variant(data, size, total);
        shmkv_db *db = NULL;
        shmkv_options o;
        memset(&o, 0, sizeof o);
        int rc = shmkv_open(path, &o, &db);
        if (rc != 0) {
            if (!known_code(rc)) {
                fprintf(stderr, "fuzz_open: FAIL: shmkv_open returned the undocumented %d (%s)\n", rc,
                        shmkv_strerror(rc));
                abort();
            }
            if (db != NULL) {
                fprintf(stderr, "fuzz_open: FAIL: shmkv_open failed but set *out\n");
                abort();
            }
            check_untouched(size, total, rc);
            continue;
        }
        if (foreign(size)) {
            fprintf(stderr, "fuzz_open: FAIL: shmkv_open took over a file holding foreign data "
                            "(no store magic, not all zero)\n");
            abort();
        }
        shmkv_info info;
        if (shmkv_stat(db, &info) != 0 ||
            (info.backend != SHMKV_BACKEND_DISK && info.backend != SHMKV_BACKEND_MEMORY) ||
            info.segments == 0 || info.segments > 4096 || (info.segments & (info.segments - 1)) ||
            info.format_version != SHMKV__FORMAT_VERSION || info.attached < 1 ||
            (info.track_keys != 0 && info.track_keys != 1)) {
            fprintf(stderr,
                    "fuzz_open: FAIL: stat of an opened store is nonsense: backend %d, segments %u, "
                    "format %u, attached %u, track_keys %d\n",
                    info.backend, info.segments, info.format_version, info.attached,
                    info.track_keys);
            abort();
        }
        (void)shmkv_size(db);
#if FUZZ_OPEN_DEEP
        exercise(db);
#endif
        shmkv_close(db);
    }
    return 0;
}
