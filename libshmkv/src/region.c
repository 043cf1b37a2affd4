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


static int attach(shmkv__map *m, const shmkv__resolved *r, const shmkv_options *o, const char *obj,
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
    int state = shmkv__validate_header(m->fd, st->st_size, &hdr);
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
        rc = shmkv__create_store(m, r, m->backend);
    } else {
        rc = shmkv__check_compat(&hdr, o);
        if (!rc)
            rc = shmkv__map_region(m->fd, hdr.reserve, false, &m->base);
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
                rc = shmkv__init_locks(m);
                if (!rc)
                    shmkv__lease_clock_sync(m);
                if (!rc && !atomic_load(&SHMKV__HDR(m)->clean))
                    rc = shmkv__recover_all(m);
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
    int state = shmkv__validate_header(m->fd, st->st_size, &hdr);
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
    if ((rc = shmkv__check_compat(&hdr, o)) != 0 || (rc = shmkv__map_region(m->fd, hdr.reserve, true, &m->base)))
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
    shmkv__resolved r;
    int rc = shmkv__resolve_options(&o, &r);
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
            rc = shmkv__check_compat(SHMKV__HDR(m), &o);
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
