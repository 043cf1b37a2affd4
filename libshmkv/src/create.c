/*
 * create.c - a store's file before it is joined: the open options, the
 * first page's check, creation, lock words and the repair an opener that
 * is alone runs (region.c decides who is alone and calls these).
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- options ------------------------------------------------------------ */


int shmkv__resolve_options(const shmkv_options *o, shmkv__resolved *r)
{
    r->nseg = o->segments ? o->segments : SHMKV__DEFAULT_SEGMENTS;
    if (r->nseg > SHMKV__MAX_SEGMENTS || (r->nseg & (r->nseg - 1)))
        return SHMKV_ESEGMENTS;
    r->reserve = o->reserve ? o->reserve : SHMKV__DEFAULT_RESERVE;
    if (r->reserve < SHMKV__MIN_RESERVE || r->reserve > SHMKV__MAX_RESERVE)
        return SHMKV_ERESERVE;
    r->reserve = shmkv__page_up(r->reserve);
    if (o->track_keys < SHMKV_TRACK_DEFAULT || o->track_keys > SHMKV_TRACK_ON)
        return SHMKV_EINVAL;
    r->track = o->track_keys == SHMKV_TRACK_ON;
    if ((unsigned)o->backend > SHMKV_BACKEND_MEMORY)
        return SHMKV_EINVAL;
    if (o->flags & ~(SHMKV_RDONLY | SHMKV_NOCREATE | SHMKV_SYNC | SHMKV_NOSYNC))
        return SHMKV_EINVAL;
    if (o->mode & ~07777u)
        return SHMKV_EINVAL;
    return 0;
}

/* A joiner may leave an option to the store; one it states must agree. */
int shmkv__check_compat(const shmkv__hdr *h, const shmkv_options *o)
{
    if (o->segments && o->segments != h->nseg)
        return SHMKV_EINCOMPAT;
    /* Key tracking is reconciled instead: on asks the store to start it
     * (after the open, see shmkv__track_on), off joins a tracked store as
     * it is. Only a read-only handle cannot start it. */
    if (o->track_keys == SHMKV_TRACK_ON && !__atomic_load_n(&h->track_keys, __ATOMIC_ACQUIRE) &&
        (o->flags & SHMKV_RDONLY))
        return SHMKV_EINCOMPAT;
    if (o->reserve && shmkv__page_up(o->reserve) != h->reserve)
        return SHMKV_EINCOMPAT;
    return 0;
}

/* ---- header validation --------------------------------------------------- */

/* 1 when bytes [from, fsize) of the file are all zero, 0 when not,
 * negative on a read error. */
static int rest_is_zero(int fd, off_t from, off_t fsize)
{
    unsigned char buf[16384];
    for (off_t at = from; at < fsize;) {
        size_t want = fsize - at < (off_t)sizeof buf ? (size_t)(fsize - at) : sizeof buf;
        ssize_t n = pread(fd, buf, want, at);
        if (n <= 0)
            return n < 0 ? -errno : 0; /* shrank under us: not a creator's stub */
        for (ssize_t i = 0; i < n; i++)
            if (buf[i])
                return 0;
        at += n;
    }
    return 1;
}

/* Decide from the first page alone, before mapping anything, whether the
 * file is ours. 1: fresh (empty, or what a creator that died before
 * finishing can leave), 0: a store, negative: refuse.
 *
 * A foreign file may well begin with a page of zeros (an ISO-9660 image
 * begins with 32 KiB of them), and taking it for a creator's leftover would
 * truncate it. So "fresh" needs all of what a creator could have left: only
 * zeros, or the in-progress magic, and no more bytes than a creator
 * allocates before its header is complete. */
int shmkv__validate_header(int fd, off_t fsize, shmkv__hdr *out)
{
    unsigned char page[SHMKV__HDR_SIZE];
    if (fsize == 0)
        return 1;
    size_t len = fsize < (off_t)sizeof page ? (size_t)fsize : sizeof page;
    ssize_t n = pread(fd, page, len, 0);
    if (n != (ssize_t)len)
        return n < 0 ? -errno : SHMKV_ENOTSTORE;
    int page_state = shmkv__first_page(page, len);
    if (page_state != SHMKV__PAGE_OTHER) {
        if ((uint64_t)fsize > shmkv__creation_size_max())
            return SHMKV_ENOTSTORE;
        if (page_state == SHMKV__PAGE_INIT)
            return 1; /* a creator died before finishing: start over */
        int rz = rest_is_zero(fd, (off_t)len, fsize);
        return rz < 0 ? rz : rz ? 1 : SHMKV_ENOTSTORE;
    }
    if (len < sizeof page)
        return SHMKV_ENOTSTORE; /* too short to be a store */
    memcpy(out, page, sizeof *out);
    int rc = shmkv__hdr_check(out);
    if (rc)
        return rc;
    /* A copy cut short: touching the missing part would SIGBUS. Attached
     * processes may be growing the file right now (no init lock needed for
     * that): they extend it before publishing top, so compare top with a
     * size taken after top was read, not with fsize from before. */
    struct stat now;
    if (fstat(fd, &now) != 0)
        return -errno;
    if ((uint64_t)now.st_size < atomic_load(&out->top))
        return SHMKV_ECORRUPT;
    return 0;
}

/* ---- creation --------------------------------------------------------------- */

int shmkv__map_region(int fd, uint64_t reserve, bool rdonly, unsigned char **base)
{
    /* The whole reserve is mapped once; the file grows inside it, so no
     * process ever has to remap. MAP_NORESERVE: address space only. */
    void *p = mmap(NULL, reserve, rdonly ? PROT_READ : PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED)
        return -errno;
    /* A mapping holds a reference to the open file description, which
     * carries the store's file locks: a child of fork() that inherited the
     * mapping would keep this process attached after it closed or died.
     * Children get no mapping; they open the store themselves. (Failure only
     * loses that protection, so it is not an error.) */
    (void)madvise(p, reserve, MADV_DONTFORK);
    *base = p;
    return 0;
}

int shmkv__init_locks(shmkv__map *m)
{
    shmkv__hdr *h = SHMKV__HDR(m);
    int rc = shmkv__mutex_init(&h->grow_lock);
    for (uint32_t i = 0; i < h->nseg && !rc; i++) {
        /* seq left odd by a dead holder becomes even, and moves: read-only
         * processes may be attached, reading without locks, and a reader
         * that saw the old value must see that it changed. */
        shmkv__seg *s = shmkv__seg_at(m, i);
        uint32_t v = atomic_load_explicit(&s->seq, memory_order_relaxed);
        if (v & 1)
            atomic_store_explicit(&s->seq, v + 1, memory_order_release);
        rc = shmkv__mutex_init(&s->lock);
    }
    if (!rc)
        rc = shmkv__mutex_init(&shmkv__index_of(m)->lock);
    return rc;
}

int shmkv__create_store(shmkv__map *m, const shmkv__resolved *r, int backend)
{
    shmkv__layout l = shmkv__layout_of(r->nseg);
    uint64_t data_off = l.data_off;
    if (data_off >= r->reserve)
        return SHMKV_EINVAL;
    /* Start from zeros even if a crashed creator left something behind. */
    if (ftruncate(m->fd, 0) != 0)
        return -errno;
    int rc = posix_fallocate(m->fd, 0, (off_t)data_off);
    if (rc)
        return -rc;
    rc = shmkv__map_region(m->fd, r->reserve, false, &m->base);
    if (rc)
        return rc;
    m->reserve = r->reserve;

    shmkv__hdr *h = SHMKV__HDR(m);
    /* Marked first, so that a creator killed from here on leaves a file the
     * next opener recognises as an unfinished creation, not a foreign file. */
    memcpy(h->magic, SHMKV__MAGIC_INIT, 8);
    atomic_signal_fence(memory_order_release);
    h->version = SHMKV__FORMAT_VERSION;
    h->hdr_size = SHMKV__HDR_SIZE;
    h->endian = SHMKV__ENDIAN_CHECK;
    h->word_size = sizeof(void *);
    h->mutex_size = sizeof(pthread_mutex_t);
    h->seg_size = sizeof(shmkv__seg);
    h->nseg = r->nseg;
    h->track_keys = r->track;
    h->backend = (uint32_t)backend;
    h->reserve = r->reserve;
    h->seg_off = l.seg_off;
    h->index_off = l.index_off;
    h->data_off = data_off;
    atomic_store(&h->top, data_off);
    atomic_store(&h->file_size, data_off);
    h->created = (uint64_t)time(NULL);
    shmkv__lease_clock_sync(m);
    for (uint32_t i = 0; i < r->nseg; i++)
        shmkv__seg_at(m, i)->id = i;
    rc = shmkv__init_locks(m);
    if (rc)
        return rc;
    /* The magic goes last: until it is there, the file reads as a crashed
     * creation and the next opener starts over. */
    atomic_signal_fence(memory_order_release); /* openers read it under the init file lock */
    memcpy(h->magic, SHMKV__MAGIC, 8);
    return 0;
}

void shmkv__lease_clock_sync(shmkv__map *m)
{
    shmkv__hdr *h = SHMKV__HDR(m);
    const char *id = shmkv__boot_id();
    if (strncmp(h->boot_id, id, sizeof h->boot_id) == 0)
        return;
    /* A new boot (or a store from before claims): CLOCK_BOOTTIME started
     * over, so the lease clock is moved past every expiry ever granted,
     * which ends every lease of the earlier boot. */
    uint64_t now = shmkv__boot_ns(), high = atomic_load(&h->lease_high);
    h->lease_base = high >= now ? high - now + 1 : 0;
    memset(h->boot_id, 0, sizeof h->boot_id);
    memcpy(h->boot_id, id, strnlen(id, sizeof h->boot_id - 1));
}

/* Bring an unclean store back to a consistent state. Only called by a
 * process that proved it is alone, so no lock is needed. */
int shmkv__recover_all(shmkv__map *m)
{
    shmkv__hdr *h = SHMKV__HDR(m);
    /* The growth lock was re-initialised with the others, so a holder that
     * died inside a pool change is never reported by it: the pool's byte
     * count is recounted here, as the lock's next holder would have. */
    shmkv__pool_recount(m);
    for (uint32_t i = 0; i < h->nseg; i++) {
        int rc = shmkv__seg_recover(m, shmkv__seg_at(m, i));
        if (rc)
            return rc;
    }
    if (!h->track_keys)
        return 0;
    /* The data is whole once the segments are; an index that cannot be
     * rebuilt for want of room stays marked dirty, and the store opens
     * without it (see shmkv__index_lock). */
    int rc = shmkv__index_rebuild(m);
    if (shmkv__index_no_room(rc)) {
        atomic_store(&shmkv__index_of(m)->dirty, 1);
        rc = 0;
    }
    return rc;
}
