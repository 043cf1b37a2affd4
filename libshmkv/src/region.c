/*
 * region.c - opening a store: create, join, close (the process's mappings
 * are map.c's, growth is grow.c's).
 *
 * Who is attached is decided with open-file-description locks on the store
 * itself (they belong to the descriptor, so closing some other descriptor
 * of the same file cannot drop them, and they vanish with a dead process):
 *   byte 0: the init lock, held exclusively while opening or closing (a
 *           read-only opener holds it shared: it changes nothing);
 *   byte 1: held shared by every attached process that may write;
 *   byte 2: held shared by every attached read-only process.
 * A process holding the init lock that can also lock bytes 1 and 2
 * exclusively knows it is alone: it may re-initialise lock words left by
 * processes that no longer exist, repair an unclean store, or empty a
 * memory store. One that can lock byte 1 but not byte 2 knows that every
 * other attached process is a read-only one. Those map the store PROT_READ
 * and never touch a lock word, so it may still re-initialise the locks and
 * repair the store, but not empty it under them. (Readers have a byte of
 * their own rather than writers, so that writers of library versions that
 * knew only bytes 0 and 1 are still seen by everybody.)
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- file locks -------------------------------------------------------- */

static int ofd_lock(int fd, short type, off_t start, bool wait)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = 1};
    for (;;) {
        if (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0)
            return 0;
        if (errno != EINTR)
            return -errno;
    }
}

/* Drop every lock this description holds, in one step: another process
 * must never see the attach byte free while the init byte is still ours.
 * Done explicitly before close(), because close() only drops them when no
 * other process shares the description (a child forked since the open
 * does). */
static void ofd_unlock_all(int fd)
{
    struct flock fl = {.l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    while (fcntl(fd, F_OFD_SETLK, &fl) != 0 && errno == EINTR) {
    }
}


/* ---- options ------------------------------------------------------------ */

typedef struct resolved {
    uint32_t nseg;
    uint64_t reserve;
    uint32_t track;
} resolved;

static int resolve_options(const shmkv_options *o, resolved *r)
{
    r->nseg = o->segments ? o->segments : SHMKV__DEFAULT_SEGMENTS;
    if (r->nseg > SHMKV__MAX_SEGMENTS || (r->nseg & (r->nseg - 1)))
        return SHMKV_ESEGMENTS;
    r->reserve = o->reserve ? o->reserve : SHMKV__DEFAULT_RESERVE;
    if (r->reserve < SHMKV__MIN_RESERVE || r->reserve > SHMKV__MAX_RESERVE)
        return SHMKV_ERESERVE;
    r->reserve = (r->reserve + SHMKV__PAGE - 1) & ~(uint64_t)(SHMKV__PAGE - 1);
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
static int check_compat(const shmkv__hdr *h, const shmkv_options *o)
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
static int validate_header(int fd, off_t fsize, shmkv__hdr *out)
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

static int map_region(int fd, uint64_t reserve, bool rdonly, unsigned char **base)
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

static int init_locks(shmkv__map *m)
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

static int create_store(shmkv__map *m, const resolved *r, int backend)
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
    rc = map_region(m->fd, r->reserve, false, &m->base);
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
    for (uint32_t i = 0; i < r->nseg; i++)
        shmkv__seg_at(m, i)->id = i;
    rc = init_locks(m);
    if (rc)
        return rc;
    /* The magic goes last: until it is there, the file reads as a crashed
     * creation and the next opener starts over. */
    atomic_signal_fence(memory_order_release); /* openers read it under the init file lock */
    memcpy(h->magic, SHMKV__MAGIC, 8);
    return 0;
}

/* Bring an unclean store back to a consistent state. Only called by a
 * process that proved it is alone, so no lock is needed. */
static int recover_all(shmkv__map *m)
{
    shmkv__hdr *h = SHMKV__HDR(m);
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

/* ---- attach table -------------------------------------------------------- */

static int attach_slot_take(shmkv__hdr *h)
{
    pid_t me = getpid();
    for (unsigned i = 0; i < SHMKV__ATTACH_SLOTS; i++) {
        int32_t p = atomic_load(&h->attach[i].pid);
        /* Slots of dead processes are reused; the table is only for tools. */
        if (p == 0 || (kill(p, 0) != 0 && errno == ESRCH)) {
            h->attach[i].since = (uint64_t)time(NULL);
            atomic_store(&h->attach[i].pid, me);
            return (int)i;
        }
    }
    return -1; /* more processes than slots: still attached, just not listed */
}

/* ---- open ------------------------------------------------------------------ */


static int attach(shmkv__map *m, const resolved *r, const shmkv_options *o, const char *obj,
                  struct stat *st)
{
    int rc = ofd_lock(m->fd, F_WRLCK, 0, true);
    if (rc)
        return rc;
    if (m->backend == SHMKV_BACKEND_MEMORY && shmkv__memory_object_replaced(obj, st)) {
        rc = -EAGAIN;
        goto out;
    }
    if (fstat(m->fd, st) != 0) {
        rc = -errno;
        goto out;
    }
    /* No other writer; read-only processes (they never touch lock words)
     * may be attached, unless we are alone. */
    bool lone_writer = ofd_lock(m->fd, F_WRLCK, 1, false) == 0;
    bool alone = lone_writer && ofd_lock(m->fd, F_WRLCK, 2, false) == 0;
    shmkv__hdr hdr;
    int state = validate_header(m->fd, st->st_size, &hdr);
    if (state < 0) {
        rc = state;
        goto out;
    }
    /* A memory store nobody is attached to is gone: start it empty. */
    if (state == 0 && alone && m->backend == SHMKV_BACKEND_MEMORY)
        state = 1;
    if (state == 1) {
        if (!alone) {
            rc = SHMKV_ECORRUPT; /* attached processes on a blank file */
            goto out;
        }
        rc = create_store(m, r, m->backend);
    } else {
        rc = check_compat(&hdr, o);
        if (!rc)
            rc = map_region(m->fd, hdr.reserve, false, &m->base);
        if (!rc) {
            m->reserve = hdr.reserve;
            /* Version 2 only adds encodings (big blocks, free chunks) that a
             * version 1 library would take for damage: a writer marks the
             * store before it can write one, so old libraries refuse it. */
            if (!(o->flags & SHMKV_RDONLY) && SHMKV__HDR(m)->version < SHMKV__FORMAT_VERSION)
                SHMKV__HDR(m)->version = SHMKV__FORMAT_VERSION;
            if (lone_writer) {
                /* Lock words may name threads of processes gone since
                 * (a reboot, a copied file): only an opener with no other
                 * writer attached may reset them (readers never use them). */
                rc = init_locks(m);
                if (!rc && !atomic_load(&SHMKV__HDR(m)->clean))
                    rc = recover_all(m);
            }
        }
    }
    if (rc)
        goto out;
    shmkv__hdr *h = SHMKV__HDR(m);
    atomic_store(&h->clean, 0);
    atomic_fetch_add(&h->opens, 1);
    m->attach_slot = attach_slot_take(h);
    rc = ofd_lock(m->fd, F_RDLCK, 1, false);
out:
    if (rc) {
        ofd_unlock_all(m->fd); /* the alone tests may have taken bytes 1 and 2 */
    } else {
        ofd_lock(m->fd, F_UNLCK, 2, false); /* held only to prove we were alone */
        ofd_lock(m->fd, F_UNLCK, 0, false);
    }
    return rc;
}

/* Whether another open file description holds a lock on `byte` that an
 * exclusive lock would conflict with. F_OFD_GETLK works on a descriptor
 * opened read-only, where an exclusive lock could not be taken. */
static int ofd_held(int fd, off_t byte, bool *held)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1};
    if (fcntl(fd, F_OFD_GETLK, &fl) != 0)
        return -errno;
    *held = fl.l_type != F_UNLCK;
    return 0;
}

/* A read-only opener writes nothing: not the header, not the attach table,
 * not a lock word (its mapping is PROT_READ). It never repairs, so what it
 * reads must be right as the store is, which the lock-free readers in
 * reader.c see to. It is attached all the same (byte 1), so that no writer
 * empties or re-creates a store under its mapping. */
static int attach_rdonly(shmkv__map *m, const shmkv_options *o, const char *obj, struct stat *st)
{
    int rc = ofd_lock(m->fd, F_RDLCK, 0, true);
    if (rc)
        return rc;
    bool readers = false, writers = false;
    if (m->backend == SHMKV_BACKEND_MEMORY && shmkv__memory_object_replaced(obj, st)) {
        rc = -EAGAIN;
        goto out;
    }
    if (fstat(m->fd, st) != 0) {
        rc = -errno;
        goto out;
    }
    if ((rc = ofd_held(m->fd, 1, &writers)) != 0 || (rc = ofd_held(m->fd, 2, &readers)) != 0)
        goto out;
    shmkv__hdr hdr;
    int state = validate_header(m->fd, st->st_size, &hdr);
    if (state < 0) {
        rc = state;
        goto out;
    }
    /* Nothing to read: no store yet, or a memory store whose users are all
     * gone (the next writer would start it empty). */
    if (state == 1 || (!writers && !readers && m->backend == SHMKV_BACKEND_MEMORY)) {
        rc = -ENOENT;
        goto out;
    }
    if ((rc = check_compat(&hdr, o)) != 0 || (rc = map_region(m->fd, hdr.reserve, true, &m->base)))
        goto out;
    m->reserve = hdr.reserve;
    if (!writers) {
        /* No writer is attached, so a segment whose seq is odd now was left
         * so by a holder that died: its table is as that holder published
         * it, and readers may use it while seq stays at this value (a
         * writer that joins later and takes the lock moves it on). */
        const shmkv__hdr *h = SHMKV__HDR(m);
        m->dead_seq = calloc(h->nseg, sizeof *m->dead_seq);
        if (!m->dead_seq) {
            rc = -ENOMEM;
            goto out;
        }
        for (uint32_t i = 0; i < h->nseg; i++) {
            uint32_t v = atomic_load(&shmkv__seg_at(m, i)->seq);
            m->dead_seq[i] = (v & 1) ? v : 0;
        }
    }
    rc = ofd_lock(m->fd, F_RDLCK, 2, false);
out:
    ofd_lock(m->fd, F_UNLCK, 0, false);
    return rc;
}


int shmkv_open(const char *where, const shmkv_options *opts, shmkv_db **out)
{
    shmkv_options o = {0};
    if (opts)
        o = *opts;
    if (!out)
        return SHMKV_EINVAL;
    *out = NULL;
    resolved r;
    int rc = resolve_options(&o, &r);
    if (rc)
        return rc;
    shmkv_db *db = calloc(1, sizeof *db);
    if (!db)
        return -ENOMEM;
    db->flags = o.flags;
    db->lock_timeout_ms = o.lock_timeout_ms;

    shmkv__maps_lock();
    for (int attempt = 0; attempt < 8; attempt++) {
        char obj[SHMKV_NAME_MAX + 16] = "";
        int fd = -1;
        rc = shmkv__open_fd(where, (int)o.backend, &o, obj, sizeof obj, &fd);
        if (rc)
            break;
        struct stat st;
        if (fstat(fd, &st) != 0) {
            rc = -errno;
            close(fd);
            break;
        }
        if (!S_ISREG(st.st_mode)) {
            close(fd);
            rc = S_ISDIR(st.st_mode) ? -EISDIR : SHMKV_ENOTSTORE;
            break;
        }
        bool rdonly = o.flags & SHMKV_RDONLY;
        shmkv__map *m = shmkv__registry_find((int)o.backend, st.st_dev, st.st_ino, rdonly);
        if (m) {
            /* Our descriptor carries no lock, so closing it is harmless. */
            close(fd);
            rc = check_compat(SHMKV__HDR(m), &o);
            if (!rc) {
                m->refs++;
                db->m = m;
            }
            break;
        }
        m = calloc(1, sizeof *m);
        if (!m) {
            close(fd);
            rc = -ENOMEM;
            break;
        }
        m->fd = fd;
        m->rdonly = rdonly;
        m->backend = (int)o.backend;
        m->owner_pid = getpid();
        m->refs = 1;
        m->attach_slot = -1;
        if (o.backend == SHMKV_BACKEND_MEMORY && !(m->name = strdup(obj))) {
            shmkv__map_free(m);
            rc = -ENOMEM;
            break;
        }
        /* Listed before it takes any file lock, so that a fork() from
         * another thread during the attach already lets go of it. */
        shmkv__registry_add(m);
        rc = rdonly ? attach_rdonly(m, &o, obj, &st) : attach(m, &r, &o, obj, &st);
        if (rc) {
            shmkv__registry_remove(m);
            shmkv__map_free(m);
            if (rc == -EAGAIN)
                continue;
            break;
        }
        m->dev = st.st_dev;
        m->ino = st.st_ino;
        m->attached = true;
        m->freed = calloc((size_t)SHMKV__HDR(m)->nseg + 1, sizeof *m->freed);
        db->m = m;
        break;
    }
    shmkv__maps_unlock();
    if (rc) {
        free(db);
        return rc;
    }
    if (o.track_keys == SHMKV_TRACK_ON && (rc = shmkv__track_on(db->m)) != 0) {
        shmkv_close(db);
        return rc;
    }
    *out = db;
    return 0;
}

/* Clean means the next lone opener may skip repair. Not while work that
 * only a repair finishes is left: a dead batch writer's intents, or a lock
 * whose owner died and nobody has taken since (its half-done write). */
static bool may_mark_clean(shmkv__map *m)
{
    return !shmkv__batch_pending(m) && shmkv__locks_settled(m);
}

int shmkv_close(shmkv_db *db)
{
    if (!db)
        return 0;
    shmkv__map *m = db->m;
    int rc = 0;
    shmkv__maps_lock();
    if (--m->refs == 0 && m->owner_pid != getpid()) {
        /* Inherited through fork(): the attachment is the parent's, and so
         * are the locks on the description (if it is still open here). The
         * mapping was not inherited (MADV_DONTFORK), and its address range
         * may hold something else of the child's by now. */
        shmkv__registry_remove(m);
        m->base = NULL;
        shmkv__map_free(m);
    } else if (m->refs == 0) {
        shmkv__registry_remove(m);
        shmkv__hdr *h = SHMKV__HDR(m);
        if (m->rdonly)
            goto unmap; /* wrote nothing, leaves nothing to do */
        ofd_lock(m->fd, F_WRLCK, 0, true);
        SHMKV__HOOK("close.init_locked");
        if (m->attach_slot >= 0)
            atomic_store(&h->attach[m->attach_slot].pid, 0);
        bool last_writer = ofd_lock(m->fd, F_WRLCK, 1, false) == 0;
        bool last = last_writer && ofd_lock(m->fd, F_WRLCK, 2, false) == 0;
        /* Only readers stay: nobody will write, so the store is as clean
         * as a closed one (and the next writer need not repair it). */
        if (last_writer && !last) {
            if (m->backend == SHMKV_BACKEND_DISK && !(db->flags & SHMKV_NOSYNC) &&
                msync(m->base, atomic_load(&h->top), MS_SYNC) != 0)
                rc = -errno;
            if (may_mark_clean(m))
                atomic_store(&h->clean, 1);
        }
        if (last) {
            if (m->backend == SHMKV_BACKEND_MEMORY) {
                /* The name may already belong to a newer store (after an
                 * explicit unlink); only remove it if it is still ours. */
                struct stat st;
                if (fstat(m->fd, &st) == 0 && !shmkv__memory_object_replaced(m->name, &st))
                    shm_unlink(m->name);
            } else {
                if (!(db->flags & SHMKV_NOSYNC) &&
                    msync(m->base, atomic_load(&h->top), MS_SYNC) != 0)
                    rc = -errno;
                if (may_mark_clean(m))
                    atomic_store(&h->clean, 1);
            }
        }
    unmap:
        /* Explicitly: a child forked a moment ago may still share the
         * description, and closing our descriptor alone would not drop
         * the locks. */
        ofd_unlock_all(m->fd);
        shmkv__map_free(m);
    }
    shmkv__maps_unlock();
    free(db);
    return rc;
}
