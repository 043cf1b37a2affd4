/*
 * region.c - the mapping: open, create, join, close, and growth.
 *
 * Who is attached is decided with open-file-description locks on the store
 * itself (they belong to the descriptor, so closing some other descriptor
 * of the same file cannot drop them, and they vanish with a dead process):
 *   byte 0: the init lock, held exclusively while opening or closing;
 *   byte 1: held shared by every attached process.
 * A process holding the init lock that can also lock byte 1 exclusively
 * knows it is alone: it may re-initialise lock words left by processes that
 * no longer exist, repair an unclean store, or empty a memory store.
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

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static shmkv__map *registry;

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

/* ---- names ------------------------------------------------------------- */

static int memory_object_name(const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    if (n == 0 || n > SHMKV_NAME_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return SHMKV_ENAME;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return SHMKV_ENAME;
    }
    snprintf(out, cap, "/shmkv.%s", name);
    return 0;
}

int shmkv_memory_unlink(const char *name)
{
    char obj[SHMKV_NAME_MAX + 16];
    int rc = memory_object_name(name ? name : "k6kv", obj, sizeof obj);
    if (rc)
        return rc;
    return shm_unlink(obj) == 0 ? 0 : -errno;
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
        return SHMKV_EINVAL;
    r->reserve = o->reserve ? o->reserve : SHMKV__DEFAULT_RESERVE;
    if (r->reserve < SHMKV__MIN_RESERVE || r->reserve > SHMKV__MAX_RESERVE)
        return SHMKV_EINVAL;
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
    if (o->track_keys == SHMKV_TRACK_ON && !h->track_keys)
        return SHMKV_EINCOMPAT;
    if (o->track_keys == SHMKV_TRACK_OFF && h->track_keys)
        return SHMKV_EINCOMPAT;
    if (o->reserve && ((o->reserve + SHMKV__PAGE - 1) & ~(uint64_t)(SHMKV__PAGE - 1)) != h->reserve)
        return SHMKV_EINCOMPAT;
    return 0;
}

/* ---- header validation --------------------------------------------------- */

/* Decide from the first page alone, before mapping anything, whether the
 * file is ours. 1: fresh (empty, all zero, or marked by a creator that
 * died before finishing), 0: a store, negative: refuse. */
static int validate_header(int fd, off_t fsize, shmkv__hdr *out)
{
    unsigned char page[SHMKV__HDR_SIZE];
    if (fsize == 0)
        return 1;
    if (fsize < (off_t)sizeof page) {
        /* Too short to be a store; a zero-filled stub is a crashed creator. */
        ssize_t n = pread(fd, page, (size_t)fsize, 0);
        if (n != fsize)
            return n < 0 ? -errno : SHMKV_ENOTSTORE;
        for (off_t i = 0; i < fsize; i++)
            if (page[i])
                return SHMKV_ENOTSTORE;
        return 1;
    }
    ssize_t n = pread(fd, page, sizeof page, 0);
    if (n != (ssize_t)sizeof page)
        return n < 0 ? -errno : SHMKV_ENOTSTORE;
    bool zero = true;
    for (size_t i = 0; i < sizeof page && zero; i++)
        zero = page[i] == 0;
    if (zero)
        return 1;
    memcpy(out, page, sizeof *out);
    const shmkv__hdr *h = out;
    if (memcmp(h->magic, SHMKV__MAGIC_INIT, 8) == 0)
        return 1; /* a creator died before finishing: start over */
    if (memcmp(h->magic, SHMKV__MAGIC, 8) != 0)
        return SHMKV_ENOTSTORE;
    if (h->version < SHMKV__FORMAT_VERSION_MIN || h->version > SHMKV__FORMAT_VERSION)
        return SHMKV_EVERSION;
    if (h->endian != SHMKV__ENDIAN_CHECK || h->word_size != sizeof(void *) ||
        h->mutex_size != sizeof(pthread_mutex_t) || h->seg_size != sizeof(shmkv__seg))
        return SHMKV_EABI;
    /* The layout follows from nseg alone, so every offset must be exactly
     * what creation would have written. */
    uint64_t idx_off = SHMKV__HDR_SIZE + (uint64_t)h->nseg * sizeof(shmkv__seg);
    uint64_t data_off = (idx_off + sizeof(shmkv__idx) + SHMKV__PAGE - 1) & ~(uint64_t)(SHMKV__PAGE - 1);
    if (h->hdr_size != SHMKV__HDR_SIZE || h->nseg == 0 || h->nseg > SHMKV__MAX_SEGMENTS ||
        (h->nseg & (h->nseg - 1)) || h->track_keys > 1 || h->backend > SHMKV_BACKEND_MEMORY ||
        h->reserve < SHMKV__MIN_RESERVE || h->reserve > SHMKV__MAX_RESERVE ||
        h->reserve % SHMKV__PAGE || h->seg_off != SHMKV__HDR_SIZE || h->idx_off != idx_off ||
        h->data_off != data_off || h->top < h->data_off || h->top > h->reserve)
        return SHMKV_ECORRUPT;
    /* A copy cut short: touching the missing part would SIGBUS. Attached
     * processes may be growing the file right now (no init lock needed for
     * that): they extend it before publishing top, so compare top with a
     * size taken after top was read, not with fsize from before. */
    struct stat now;
    if (fstat(fd, &now) != 0)
        return -errno;
    if ((uint64_t)now.st_size < h->top)
        return SHMKV_ECORRUPT;
    return 0;
}

/* ---- creation --------------------------------------------------------------- */

static int map_region(int fd, uint64_t reserve, unsigned char **base)
{
    /* The whole reserve is mapped once; the file grows inside it, so no
     * process ever has to remap. MAP_NORESERVE: address space only. */
    void *p = mmap(NULL, reserve, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED)
        return -errno;
    *base = p;
    return 0;
}

static int init_locks(shmkv__map *m)
{
    shmkv__hdr *h = SHMKV__HDR(m);
    int rc = shmkv__mutex_init(&h->grow_lock);
    for (uint32_t i = 0; i < h->nseg && !rc; i++) {
        /* Alone: no reader can be between two reads of seq. */
        atomic_store_explicit(&shmkv__seg_at(m, i)->seq, 0, memory_order_relaxed);
        rc = shmkv__mutex_init(&shmkv__seg_at(m, i)->lock);
    }
    if (!rc)
        rc = shmkv__mutex_init(&shmkv__idx_of(m)->lock);
    return rc;
}

static int create_store(shmkv__map *m, const resolved *r, int backend)
{
    uint64_t seg_off = SHMKV__HDR_SIZE;
    uint64_t idx_off = seg_off + (uint64_t)r->nseg * sizeof(shmkv__seg);
    uint64_t data_off = (idx_off + sizeof(shmkv__idx) + SHMKV__PAGE - 1) & ~(uint64_t)(SHMKV__PAGE - 1);
    if (data_off >= r->reserve)
        return SHMKV_EINVAL;
    /* Start from zeros even if a crashed creator left something behind. */
    if (ftruncate(m->fd, 0) != 0)
        return -errno;
    int rc = posix_fallocate(m->fd, 0, (off_t)data_off);
    if (rc)
        return -rc;
    rc = map_region(m->fd, r->reserve, &m->base);
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
    h->seg_off = seg_off;
    h->idx_off = idx_off;
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
    if (h->track_keys)
        return shmkv__idx_rebuild(m);
    return 0;
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

static shmkv__map *registry_find(int backend, dev_t dev, ino_t ino)
{
    pid_t me = getpid();
    for (shmkv__map *m = registry; m; m = m->next)
        if (m->owner_pid == me && m->backend == backend && m->dev == dev && m->ino == ino)
            return m;
    return NULL;
}

static int open_fd(const char *where, int backend, const shmkv_options *o, char *obj,
                   size_t objcap, int *fd_out)
{
    mode_t mode = o->mode ? o->mode : 0600;
    int oflags = O_RDWR | O_CLOEXEC | ((o->flags & SHMKV_NOCREATE) ? 0 : O_CREAT);
    int fd;
    if (backend == SHMKV_BACKEND_MEMORY) {
        int rc = memory_object_name(where ? where : "k6kv", obj, objcap);
        if (rc)
            return rc;
        fd = shm_open(obj, oflags, mode);
    } else {
        /* Never follow a symbolic link planted where the store should be. */
        fd = open(where ? where : "./.k6.kv", oflags | O_NOFOLLOW | O_NOCTTY, mode);
    }
    if (fd < 0)
        return -errno;
    *fd_out = fd;
    return 0;
}

/* A memory store can be unlinked by its last closer between our shm_open
 * and our init lock: then we hold a dead object and must open again. */
static bool memory_object_replaced(const char *obj, const struct stat *st)
{
    int fd = shm_open(obj, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return true;
    struct stat now;
    bool same = fstat(fd, &now) == 0 && now.st_dev == st->st_dev && now.st_ino == st->st_ino;
    close(fd);
    return !same;
}

static int attach(shmkv__map *m, const resolved *r, const shmkv_options *o, const char *obj,
                  struct stat *st)
{
    int rc = ofd_lock(m->fd, F_WRLCK, 0, true);
    if (rc)
        return rc;
    if (m->backend == SHMKV_BACKEND_MEMORY && memory_object_replaced(obj, st)) {
        rc = -EAGAIN;
        goto out;
    }
    if (fstat(m->fd, st) != 0) {
        rc = -errno;
        goto out;
    }
    bool alone = ofd_lock(m->fd, F_WRLCK, 1, false) == 0;
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
        if (o->flags & SHMKV_RDONLY) {
            rc = SHMKV_EREADONLY;
            goto out;
        }
        rc = create_store(m, r, m->backend);
    } else {
        rc = check_compat(&hdr, o);
        if (!rc)
            rc = map_region(m->fd, hdr.reserve, &m->base);
        if (!rc) {
            m->reserve = hdr.reserve;
            /* Version 2 only adds encodings (big blocks, free chunks) that a
             * version 1 library would take for damage: a writer marks the
             * store before it can write one, so old libraries refuse it. */
            if (!(o->flags & SHMKV_RDONLY) && SHMKV__HDR(m)->version < SHMKV__FORMAT_VERSION)
                SHMKV__HDR(m)->version = SHMKV__FORMAT_VERSION;
            if (alone) {
                /* Lock words may name threads of processes gone since
                 * (a reboot, a copied file): only the lone opener may
                 * reset them. */
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
    ofd_lock(m->fd, F_UNLCK, 0, false);
    return rc;
}

static void map_free(shmkv__map *m)
{
    if (m->base)
        munmap(m->base, m->reserve);
    if (m->fd >= 0)
        close(m->fd);
    free(m->freed);
    free(m->name);
    free(m);
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

    pthread_mutex_lock(&registry_mu);
    for (int attempt = 0; attempt < 8; attempt++) {
        char obj[SHMKV_NAME_MAX + 16] = "";
        int fd = -1;
        rc = open_fd(where, (int)o.backend, &o, obj, sizeof obj, &fd);
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
        shmkv__map *m = registry_find((int)o.backend, st.st_dev, st.st_ino);
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
        m->backend = (int)o.backend;
        m->owner_pid = getpid();
        m->refs = 1;
        m->attach_slot = -1;
        if (o.backend == SHMKV_BACKEND_MEMORY && !(m->name = strdup(obj))) {
            map_free(m);
            rc = -ENOMEM;
            break;
        }
        rc = attach(m, &r, &o, obj, &st);
        if (rc == -EAGAIN) {
            map_free(m);
            continue;
        }
        if (rc) {
            map_free(m);
            break;
        }
        m->dev = st.st_dev;
        m->ino = st.st_ino;
        m->freed = calloc((size_t)SHMKV__HDR(m)->nseg + 1, sizeof *m->freed);
        m->next = registry;
        registry = m;
        db->m = m;
        break;
    }
    pthread_mutex_unlock(&registry_mu);
    if (rc) {
        free(db);
        return rc;
    }
    *out = db;
    return 0;
}

int shmkv_close(shmkv_db *db)
{
    if (!db)
        return 0;
    shmkv__map *m = db->m;
    int rc = 0;
    pthread_mutex_lock(&registry_mu);
    if (--m->refs == 0) {
        for (shmkv__map **p = &registry; *p; p = &(*p)->next)
            if (*p == m) {
                *p = m->next;
                break;
            }
        shmkv__hdr *h = SHMKV__HDR(m);
        ofd_lock(m->fd, F_WRLCK, 0, true);
        if (m->attach_slot >= 0)
            atomic_store(&h->attach[m->attach_slot].pid, 0);
        bool last = ofd_lock(m->fd, F_WRLCK, 1, false) == 0;
        if (last) {
            if (m->backend == SHMKV_BACKEND_MEMORY) {
                /* The name may already belong to a newer store (after an
                 * explicit unlink); only remove it if it is still ours. */
                struct stat st;
                if (fstat(m->fd, &st) == 0 && !memory_object_replaced(m->name, &st))
                    shm_unlink(m->name);
            } else {
                if (!(db->flags & SHMKV_NOSYNC) &&
                    msync(m->base, atomic_load(&h->top), MS_SYNC) != 0)
                    rc = -errno;
                atomic_store(&h->clean, 1);
            }
        }
        map_free(m); /* closing the descriptor drops both file locks */
    }
    pthread_mutex_unlock(&registry_mu);
    free(db);
    return rc;
}

/* ---- growth ------------------------------------------------------------------ */

int shmkv__grow(shmkv__map *m, uint32_t owner, uint64_t size, uint64_t *chunk_off)
{
    shmkv__hdr *h = SHMKV__HDR(m);
    int rc = shmkv__grow_lock(m);
    if (rc)
        return rc;
    /* Chunks given back by other owners first: the file only grows when
     * the free pool has no run of chunks that large. */
    if (shmkv__pool_take(m, owner, size, chunk_off) == 0)
        goto out;
    uint64_t top = atomic_load(&h->top);
    uint64_t end = top + size;
    if (end > m->reserve || end < top) {
        rc = SHMKV_EFULL;
        goto out;
    }
    /* The file's real size, not the header's idea of it: a copy cut back
     * to its used size would otherwise make us write past its end. */
    struct stat st;
    if (fstat(m->fd, &st) != 0) {
        rc = -errno;
        goto out;
    }
    uint64_t fs = (uint64_t)st.st_size;
    if (end > fs) {
        /* Allocate ahead so that growth is rare, but when the disk cannot
         * give that much, settle for what this chunk needs. fallocate makes
         * a full disk an error here rather than a SIGBUS at first touch. */
        uint64_t want = fs + fs / 4;
        if (want < fs + (256u << 10))
            want = fs + (256u << 10);
        if (want < end)
            want = end;
        if (want > m->reserve)
            want = m->reserve;
        want = (want + SHMKV__PAGE - 1) & ~(uint64_t)(SHMKV__PAGE - 1);
        int e = posix_fallocate(m->fd, (off_t)fs, (off_t)(want - fs));
        if (e && want > end) {
            want = end;
            e = posix_fallocate(m->fd, (off_t)fs, (off_t)(want - fs));
        }
        if (e) {
            rc = e == ENOSPC || e == EFBIG ? -ENOSPC : -e;
            goto out;
        }
        SHMKV__HOOK("grow.after_fallocate");
        atomic_store(&h->file_size, want);
    }
    shmkv__chunk *c = (shmkv__chunk *)SHMKV__P(m, top);
    c->magic = SHMKV__CHUNK_MAGIC;
    c->owner = owner;
    c->size = size;
    c->used = SHMKV__CHUNK_HDR;
    c->next = 0;
    atomic_store_explicit(&h->top, end, memory_order_release);
    *chunk_off = top;
out:
    shmkv__grow_unlock(m);
    return rc;
}
