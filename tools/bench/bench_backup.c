/*
 * shmkv-bench-backup - backup and restore of a large store, and what a
 * writer in another process sees meanwhile (issue 15: "backup of a 1M-key
 * store: time, and the longest pause a concurrent writer saw").
 *
 *   shmkv-bench-backup [--keys N] [--memory] [--dir DIR]
 *
 * Fills a store with N keys (16-byte keys, 100-byte values), then, while a
 * child process sets keys in a loop and records the longest single set(),
 * takes a consistent backup and a best-effort one, and restores the first
 * into a fresh memory store. Prints one line per step.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "shmkv.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "shmkv-bench-backup: %s: %s\n", what, shmkv_strerror(rc));
    exit(1);
}

/* The child: sets keys until its pipe closes, then writes the longest
 * set() and the count back. */
static void writer(const char *where, shmkv_backend be, int cmd, int res)
{
    shmkv_options o = {.backend = be};
    shmkv_db *db;
    int rc = shmkv_open(where, &o, &db);
    if (rc)
        die("writer open", rc);
    char k[32], v[100];
    memset(v, 'w', sizeof v);
    uint64_t worst = 0, n = 0;
    char c = 0;
    if (write(res, "r", 1) != 1) /* ready */
        _exit(1);
    while (read(cmd, &c, 1) == 1 && c == 'g') {
        /* measure until told to stop */
        worst = 0;
        n = 0;
        for (;;) {
            int kl = snprintf(k, sizeof k, "w%015" PRIu64, n % 100000);
            uint64_t t0 = now_ns();
            if ((rc = shmkv_set(db, k, (size_t)kl, v, sizeof v, SHMKV_KIND_BYTES)) != 0)
                die("writer set", rc);
            uint64_t d = now_ns() - t0;
            worst = d > worst ? d : worst;
            n++;
            char s;
            if (n % 64 == 0 && recv(cmd, &s, 1, MSG_DONTWAIT) == 1)
                break;
        }
        uint64_t out[2] = {worst, n};
        if (write(res, out, sizeof out) != sizeof out)
            _exit(1);
    }
    shmkv_close(db);
    _exit(0);
}

int main(int argc, char **argv)
{
    uint64_t nkeys = 1000000;
    bool memory = false;
    const char *dir = "/tmp";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--keys") && i + 1 < argc)
            nkeys = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--memory"))
            memory = true;
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else {
            fprintf(stderr, "usage: shmkv-bench-backup [--keys N] [--memory] [--dir DIR]\n");
            return 2;
        }
    }
    char where[512], b1[512], b2[512];
    shmkv_backend be = memory ? SHMKV_BACKEND_MEMORY : SHMKV_BACKEND_DISK;
    if (memory)
        snprintf(where, sizeof where, "benchbk%d", (int)getpid());
    else
        snprintf(where, sizeof where, "%s/bench-backup-%d.kv", dir, (int)getpid());
    snprintf(b1, sizeof b1, "%s/bench-backup-%d.b1", dir, (int)getpid());
    snprintf(b2, sizeof b2, "%s/bench-backup-%d.b2", dir, (int)getpid());
    shmkv_options o = {.backend = be, .flags = SHMKV_NOSYNC};
    shmkv_db *db;
    int rc = shmkv_open(where, &o, &db);
    if (rc)
        die("open", rc);

    uint64_t t0 = now_ns();
    enum { B = 1000 };
    static char keys[B][32], val[100];
    memset(val, 'v', sizeof val);
    shmkv_item it[B];
    for (uint64_t i = 0; i < nkeys; i += B) {
        size_t k = nkeys - i < B ? (size_t)(nkeys - i) : B;
        for (size_t j = 0; j < k; j++) {
            int kl = snprintf(keys[j], sizeof keys[j], "key:%011" PRIu64, i + j);
            it[j] = (shmkv_item){.key = keys[j], .klen = (size_t)kl, .val = val, .vlen = sizeof val,
                                 .kind = SHMKV_KIND_BYTES};
        }
        if ((rc = shmkv_set_many(db, it, k, NULL)) != 0)
            die("fill", rc);
    }
    printf("fill: %" PRIu64 " keys in %.2f s (%s)\n", nkeys, (now_ns() - t0) / 1e9,
           memory ? "memory" : "disk");

    int cmd[2], res[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, cmd) != 0 || pipe(res) != 0)
        return 1;
    pid_t kid = fork();
    if (kid == 0) {
        close(cmd[0]);
        close(res[0]);
        writer(where, be, cmd[1], res[1]);
    }
    close(cmd[1]);
    close(res[1]);
    char r;
    if (read(res[0], &r, 1) != 1)
        return 1;

    for (int mode = 0; mode < 3; mode++) {
        /* mode 0: no backup (the writer's baseline); 1 consistent; 2 best effort */
        if (write(cmd[0], "g", 1) != 1)
            return 1;
        usleep(100000);
        shmkv_backup_info bi = {0};
        t0 = now_ns();
        if (mode == 0)
            usleep(500000);
        else if ((rc = shmkv_backup(db, mode == 1 ? b1 : b2, mode == 2 ? SHMKV_BACKUP_CONCURRENT : 0, &bi)) != 0)
            die("backup", rc);
        uint64_t took = now_ns() - t0;
        usleep(100000);
        if (write(cmd[0], "s", 1) != 1)
            return 1;
        uint64_t out[2];
        if (read(res[0], out, sizeof out) != sizeof out)
            return 1;
        if (mode == 0)
            printf("writer alone: %" PRIu64 " sets, longest %.3f ms\n", out[1], out[0] / 1e6);
        else
            printf("backup %s: %" PRIu64 " entries, %.1f MiB in %.3f s; writers paused %.3f s; "
                   "the writer's longest set meanwhile %.3f ms (%" PRIu64 " sets)\n",
                   mode == 1 ? "consistent" : "best-effort", bi.entries, bi.bytes / 1048576.0,
                   took / 1e9, bi.pause_ns / 1e9, out[0] / 1e6, out[1]);
    }
    close(cmd[0]);
    waitpid(kid, NULL, 0);

    char rname[64];
    snprintf(rname, sizeof rname, "benchrs%d", (int)getpid());
    shmkv_options ro = {.backend = SHMKV_BACKEND_MEMORY};
    shmkv_db *dst;
    if ((rc = shmkv_open(rname, &ro, &dst)) != 0)
        die("open restore target", rc);
    shmkv_restore_info ri;
    t0 = now_ns();
    if ((rc = shmkv_restore(dst, b1, 0, 0, &ri)) != 0)
        die("restore", rc);
    printf("restore: %" PRIu64 " entries in %.3f s (into an empty memory store)\n", ri.entries,
           (now_ns() - t0) / 1e9);
    shmkv_close(dst);
    shmkv_close(db);
    unlink(b1);
    unlink(b2);
    if (memory)
        shmkv_memory_unlink(where);
    else
        unlink(where);
    return 0;
}
