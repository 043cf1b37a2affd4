/*
 * region.c - opening a store for inspection without attaching to it:
 * O_RDONLY, header validated with pread, then a PROT_READ mapping of the
 * published part (or a private copy of it for consistent checks).
 */
#include "dump.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static void die_sigbus(int sig)
{
    static const char msg[] =
        "shmkv-dump: the store shrank while it was being read (truncated or "
        "re-created by another process); run again\n";
    (void)sig;
    ssize_t rc = write(2, msg, sizeof msg - 1);
    (void)rc;
    _exit(EXIT_RUNTIME);
}

static void errmsg(store *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void errmsg(store *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->msg, sizeof s->msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "shmkv-dump: %s: %s\n", s->label, s->msg);
}

static bool name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n < 1 || n > SHMKV_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* The format module decides what is wrong (shmkv__hdr_readable); this
 * only words it. */
bool hdr_identify(const shmkv__hdr *h, uint64_t file_len, char *buf, size_t n)
{
    uint64_t top = atomic_load_explicit(&h->top, memory_order_relaxed);
    switch (shmkv__hdr_readable(h, file_len)) {
    case 0:
        return true;
    case SHMKV__F_MAGIC:
        snprintf(buf, n, "no \"SHMKVdb\" signature at offset 0");
        break;
    case SHMKV__F_VERSION:
        snprintf(buf, n, "format version %" PRIu32 " (this tool reads versions %u to %u)",
                 h->version, SHMKV__FORMAT_VERSION_MIN, SHMKV__FORMAT_VERSION);
        break;
    case SHMKV__F_ENDIAN:
        snprintf(buf, n, "byte-order mark is 0x%08" PRIx32 ", not 0x%08x: made on a "
                 "machine of the other byte order, or damaged", h->endian,
                 SHMKV__ENDIAN_CHECK);
        break;
    case SHMKV__F_ABI:
        snprintf(buf, n, "made by an incompatible platform or build (word %u, mutex %u, "
                 "segment %" PRIu32 " bytes; this tool: %zu, %zu, %zu)",
                 h->word_size, h->mutex_size, h->seg_size, sizeof(void *),
                 sizeof(pthread_mutex_t), sizeof(shmkv__seg));
        break;
    case SHMKV__F_HDR_SIZE:
        snprintf(buf, n, "header size %" PRIu32 ", expected %u", h->hdr_size, SHMKV__HDR_SIZE);
        break;
    case SHMKV__F_NSEG:
        snprintf(buf, n, "segment count %" PRIu32 " is not a power of two in [1, %u]",
                 h->nseg, SHMKV__MAX_SEGMENTS);
        break;
    case SHMKV__F_LAYOUT:
        snprintf(buf, n, "inconsistent layout: segments at %" PRIu64 ", index at %" PRIu64
                 ", data at %" PRIu64, h->seg_off, h->index_off, h->data_off);
        break;
    case SHMKV__F_SHORT:
        snprintf(buf, n, "file is %" PRIu64 " bytes, shorter than its fixed part (%" PRIu64
                 " bytes)", file_len, h->data_off);
        break;
    case SHMKV__F_TOP:
    default:
        snprintf(buf, n, "region end (top) %" PRIu64 " is not a page boundary at or after "
                 "the data start %" PRIu64, top, h->data_off);
        break;
    }
    return false;
}

static const char *what_is_it(const unsigned char *p, size_t n)
{
    uint32_t w;
    if (n >= 20) {
        memcpy(&w, p + 16, 4);
        if (w == 0xED0CDAEDu)
            return " (it looks like a BoltDB/bbolt database)";
    }
    if (n >= 16 && memcmp(p, "SQLite format 3", 16) == 0)
        return " (it looks like an SQLite database)";
    return "";
}

int store_open(store *s, const char *where, bool memory)
{
    memset(s, 0, sizeof *s);
    s->fd = -1;
    if (memory) {
        snprintf(s->label, sizeof s->label, "memory:%s", where);
        if (!name_ok(where)) {
            errmsg(s, "invalid memory store name (1 to %u characters from [A-Za-z0-9._-])",
                   SHMKV_NAME_MAX);
            return EXIT_USAGE;
        }
        snprintf(s->path, sizeof s->path, "/dev/shm/shmkv.%s", where);
        s->found_backend = SHMKV_BACKEND_MEMORY;
    } else {
        snprintf(s->label, sizeof s->label, "%s", where);
        snprintf(s->path, sizeof s->path, "%s", where);
        s->found_backend = SHMKV_BACKEND_DISK;
    }
    int flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    s->fd = open(s->path, flags | O_NOATIME);
    if (s->fd < 0 && errno == EPERM)
        s->fd = open(s->path, flags);
    if (s->fd < 0) {
        if (errno == ENOENT && memory)
            errmsg(s, "no memory store of that name (%s does not exist)", s->path);
        else
            errmsg(s, "cannot open: %s", strerror(errno));
        return EXIT_USAGE;
    }
    if (fstat(s->fd, &s->st) < 0) {
        errmsg(s, "cannot stat: %s", strerror(errno));
        return EXIT_USAGE;
    }
    if (S_ISDIR(s->st.st_mode)) {
        errmsg(s, "is a directory, not a shmkv store");
        return EXIT_USAGE;
    }
    if (!S_ISREG(s->st.st_mode)) {
        errmsg(s, "not a regular file, so not a shmkv store");
        return EXIT_USAGE;
    }
    if (s->st.st_size == 0) {
        errmsg(s, "empty file, not a shmkv store");
        return EXIT_USAGE;
    }
    unsigned char raw[sizeof(shmkv__hdr)];
    memset(raw, 0, sizeof raw);
    ssize_t got = pread(s->fd, raw, sizeof raw, 0);
    if (got < 0) {
        errmsg(s, "cannot read: %s", strerror(errno));
        return EXIT_USAGE;
    }
    if ((size_t)got < 8 || memcmp(raw, SHMKV__MAGIC, 8) != 0) {
        errmsg(s, "not a shmkv store: no \"SHMKVdb\" signature at offset 0%s",
               what_is_it(raw, (size_t)got));
        return EXIT_USAGE;
    }
    memcpy(&s->hdr, raw, sizeof s->hdr);
    char why[512];
    if ((uint64_t)s->st.st_size < SHMKV__HDR_SIZE) {
        snprintf(why, sizeof why, "file is %" PRIu64 " bytes, shorter than the %u-byte "
                 "header", (uint64_t)s->st.st_size, SHMKV__HDR_SIZE);
    } else if (hdr_identify(&s->hdr, (uint64_t)s->st.st_size, why, sizeof why)) {
        s->hdr_ok = true;
        return 0;
    }
    s->err = strdup(why);
    return 0;
}

bool store_read_hdr(const store *s, shmkv__hdr *h)
{
    memset(h, 0, sizeof *h);
    return pread(s->fd, h, sizeof *h, 0) == (ssize_t)sizeof *h;
}

int store_map(store *s)
{
    struct stat st;
    if (fstat(s->fd, &st) < 0) {
        errmsg(s, "cannot stat: %s", strerror(errno));
        return EXIT_USAGE;
    }
    s->st = st;
    uint64_t top = atomic_load_explicit(&s->hdr.top, memory_order_relaxed);
    uint64_t len = top < (uint64_t)st.st_size ? top : (uint64_t)st.st_size;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = die_sigbus;
    sigaction(SIGBUS, &sa, NULL);
    void *p = mmap(NULL, len, PROT_READ, MAP_SHARED, s->fd, 0);
    if (p == MAP_FAILED) {
        errmsg(s, "cannot map %" PRIu64 " bytes: %s", len, strerror(errno));
        return EXIT_RUNTIME;
    }
    s->map = p;
    s->maplen = len;
    s->v.base = p;
    s->v.len = len;
    return 0;
}

bool store_remap(store *s)
{
    shmkv__hdr h;
    struct stat st;
    char why[512];
    if (!store_read_hdr(s, &h) || fstat(s->fd, &st) < 0 ||
        memcmp(h.magic, SHMKV__MAGIC, 8) != 0 ||
        !hdr_identify(&h, (uint64_t)st.st_size, why, sizeof why) || h.nseg != s->hdr.nseg ||
        h.seg_off != s->hdr.seg_off || h.index_off != s->hdr.index_off)
        return false;
    uint64_t top = atomic_load_explicit(&h.top, memory_order_relaxed);
    uint64_t len = top < (uint64_t)st.st_size ? top : (uint64_t)st.st_size;
    if (len <= s->maplen)
        return false;
    void *p = mmap(NULL, len, PROT_READ, MAP_SHARED, s->fd, 0);
    if (p == MAP_FAILED)
        return false;
    munmap(s->map, s->maplen);
    s->map = p;
    s->maplen = len;
    s->v.base = p;
    s->v.len = len;
    s->st = st;
    memcpy(&s->hdr, &h, sizeof h);
    return true;
}

int store_snapshot(const store *s, view *out, shmkv__hdr *h, uint64_t *file_len)
{
    struct stat st;
    char why[512];
    out->base = NULL;
    out->len = 0;
    if (!store_read_hdr(s, h) || fstat(s->fd, &st) < 0)
        return EXIT_RUNTIME;
    if (memcmp(h->magic, SHMKV__MAGIC, 8) != 0 ||
        !hdr_identify(h, (uint64_t)st.st_size, why, sizeof why))
        return EXIT_USAGE;
    uint64_t top = atomic_load_explicit(&h->top, memory_order_relaxed);
    uint64_t len = top < (uint64_t)st.st_size ? top : (uint64_t)st.st_size;
    unsigned char *buf = malloc(len ? len : 1);
    if (!buf)
        return EXIT_RUNTIME;
    uint64_t done = 0;
    while (done < len) {
        ssize_t r = pread(s->fd, buf + done, len - done, (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        done += (uint64_t)r;
    }
    /* The header copy used for the checks is the one in the snapshot; the
     * file size to hold it against is taken after the copy, so that it is
     * at least what any header in the copy says was allocated. */
    if (done >= sizeof *h)
        memcpy(h, buf, sizeof *h);
    if (fstat(s->fd, &st) == 0)
        *file_len = (uint64_t)st.st_size;
    out->base = buf;
    out->len = done;
    return 0;
}

void store_close(store *s)
{
    if (s->map)
        munmap(s->map, s->maplen);
    if (s->fd >= 0)
        close(s->fd);
    free(s->err);
    s->map = NULL;
    s->fd = -1;
    s->err = NULL;
}

bool pid_alive(int32_t pid)
{
    if (pid <= 0)
        return false;
    return kill(pid, 0) == 0 || errno == EPERM;
}

bool store_attached(const store *s)
{
    /* Every attached process holds a shared OFD lock on byte 1 of the
     * store; asking whether a write lock could be taken changes nothing. */
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 1, .l_len = 1};
    if (fcntl(s->fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK)
        return true;
    shmkv__hdr h;
    if (store_read_hdr(s, &h) && store_live_procs(&h) > 0)
        return true;
    return false;
}

uint32_t store_live_procs(const shmkv__hdr *h)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < SHMKV__ATTACH_SLOTS; i++) {
        int32_t pid = atomic_load_explicit(&h->attach[i].pid, memory_order_relaxed);
        if (pid_alive(pid))
            n++;
    }
    return n;
}
