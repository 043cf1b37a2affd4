/*
 * mkseeds.c - writes the seed corpus of fuzz_open: small real stores made
 * through the public API, with their trailing zeros cut off (the harness
 * pads files with zeros again, so the seeds stay a few KiB).
 *
 *   mkseeds OUTDIR
 *
 * The committed seeds in tests/fuzz/corpus/fuzz_open/ came from this
 * program; run.sh does not need it. To rebuild them, compile this file
 * together with every libshmkv/src .c file (-D_GNU_SOURCE -Ilibshmkv/include
 * -Ilibshmkv/src -lpthread) and run it with tests/fuzz/corpus/fuzz_open.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "shmkv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[128];

static void die(const char *what, int rc)
{
    fprintf(stderr, "mkseeds: %s: %d (%s)\n", what, rc, shmkv_strerror(rc));
    exit(1);
}

/* Copy src to OUTDIR/name without its trailing zero bytes. */
static void emit(const char *src, const char *outdir, const char *name)
{
    int fd = open(src, O_RDONLY);
    if (fd < 0)
        die(src, -errno);
    struct stat st;
    fstat(fd, &st);
    unsigned char *b = malloc((size_t)st.st_size + 1);
    ssize_t n = pread(fd, b, (size_t)st.st_size, 0);
    close(fd);
    if (n != st.st_size)
        die("read", -EIO);
    size_t len = (size_t)n;
    while (len > 0 && b[len - 1] == 0)
        len--;
    char out[512];
    snprintf(out, sizeof out, "%s/%s", outdir, name);
    fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, b, len) != (ssize_t)len)
        die(out, -errno);
    close(fd);
    free(b);
    printf("%s: %zu bytes\n", out, len);
}

static shmkv_db *make(const char *path, unsigned segs, int track)
{
    shmkv_options o;
    memset(&o, 0, sizeof o);
    o.segments = segs;
    o.reserve = 1u << 20;
    o.track_keys = track;
    unlink(path);
    shmkv_db *db;
    int rc = shmkv_open(path, &o, &db);
    if (rc)
        die("open", rc);
    return db;
}

static void fill(shmkv_db *db, int n)
{
    char k[32], v[64];
    for (int i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof k, "key-%d", i);
        int vl = snprintf(v, sizeof v, "value %d %.*s", i, i % 40, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        int rc = shmkv_set(db, k, (size_t)kl, v, (size_t)vl, (shmkv_kind)(i % 3));
        if (rc)
            die("set", rc);
    }
    int64_t r;
    shmkv_incr(db, "k", 1, 42, SHMKV_KIND_JSON, &r);
    for (int i = 0; i < n; i += 3) {
        int kl = snprintf(k, sizeof k, "key-%d", i);
        shmkv_delete(db, k, (size_t)kl, NULL);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: mkseeds OUTDIR\n");
        return 2;
    }
    const char *out = argv[1];
    snprintf(tmpdir, sizeof tmpdir, "/tmp/shmkv-mkseeds.%d.XXXXXX", (int)getpid());
    if (!mkdtemp(tmpdir))
        die("mkdtemp", -errno);
    char p[256];
    snprintf(p, sizeof p, "%s/s.kv", tmpdir);

    /* clean stores */
    shmkv_db *db = make(p, 1, SHMKV_TRACK_OFF);
    shmkv_close(db);
    emit(p, out, "empty-1seg");

    db = make(p, 1, SHMKV_TRACK_OFF);
    fill(db, 12);
    shmkv_close(db);
    emit(p, out, "keys-1seg");

    db = make(p, 1, SHMKV_TRACK_ON);
    fill(db, 20);
    shmkv_close(db);
    emit(p, out, "keys-1seg-tracked");

    db = make(p, 2, SHMKV_TRACK_ON);
    fill(db, 6);
    shmkv_close(db);
    emit(p, out, "keys-2seg-tracked");

    /* an unclean store: its only process died without closing it, so the
     * next opener runs the repair path */
    unlink(p);
    pid_t c = fork();
    if (c == 0) {
        db = make(p, 1, SHMKV_TRACK_ON);
        fill(db, 9);
        _exit(0);
    }
    int st;
    waitpid(c, &st, 0);
    emit(p, out, "keys-1seg-unclean");

    unlink(p);
    rmdir(tmpdir);
    return 0;
}
