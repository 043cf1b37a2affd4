/*
 * fdio.h - whole-buffer reads and writes on pipes and files, shared by the
 * Criterion tests (common.h) and the reliability programs (reliability/rel.h).
 * Header-only and static, with no dependency on Criterion.
 */
#ifndef SHMKV_TESTS_FDIO_H
#define SHMKV_TESTS_FDIO_H

#include <errno.h>
#include <stddef.h>
#include <sys/types.h>
#include <unistd.h>

/* Write exactly n bytes: 0, or -1 on an error or a short write. */
static __attribute__((unused)) int fd_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read up to n bytes: n, or fewer at EOF, or -1. */
static __attribute__((unused)) ssize_t fd_read_all(int fd, void *p, size_t n)
{
    char *c = p;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, c + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

#endif
