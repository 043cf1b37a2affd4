/*
 * backup.c - a store copied to a file, and a copy loaded back.
 *
 * A backup is a closed disk store: for a consistent backup, the bytes
 * [0, top) of the region copied under every lock and fixed up so that the
 * file reads as a store that was closed cleanly; for a best-effort one, a
 * store built through the library one segment at a time. So the store
 * format versions it, the checks of any open and shmkv_check() validate
 * it, shmkv-dump reads it, and a disk store's own file, copied while no
 * process has it open, is a backup as it is. See docs/format.md, "Backups".
 *
 * Top of the library: it calls the open path and the checker.
 */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Copy [from, to) of the live region into fd at the same offsets (the
 * caller holds every lock: nothing in it changes meanwhile). */
static int copy_range(shmkv__map *m, int fd, uint64_t from, uint64_t to)
{
    const uint64_t step = 1u << 20;
    for (uint64_t at = from; at < to;) {
        size_t want = (size_t)(to - at < step ? to - at : step);
        ssize_t n = pwrite(fd, m->base + at, want, (off_t)at);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        at += (uint64_t)n;
        if (at >= from + (to - from) / 2 && at - (uint64_t)n < from + (to - from) / 2)
            SHMKV__HOOK("backup.copy.mid");
    }
    return 0;
}

/* Make the copy in fd (len bytes) read as a closed store: no lock word
 * names a thread of this process, no process is listed as attached, and
 * the clean flag says whether its next opener may skip the repair. Only
 * the copy is written, never the live store. */
static int fix_copy(int fd, uint64_t len, uint64_t *entries)
{
    void *p = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return -errno;
    shmkv__map cm = {.base = p, .reserve = len, .fd = fd, .attach_slot = -1};
    shmkv__map *m = &cm;
    shmkv__hdr *h = SHMKV__HDR(m);
    int rc = 0;
    bool settled = true;
    *entries = 0;
    h->backend = SHMKV_BACKEND_DISK; /* a file now, whatever it was copied from */
    atomic_store(&h->file_size, len);
    for (unsigned i = 0; i < SHMKV__ATTACH_SLOTS; i++)
        atomic_store(&h->attach[i].pid, 0);
    rc = shmkv__mutex_init(&h->grow_lock);
    for (uint32_t i = 0; i < h->nseg && !rc; i++) {
        shmkv__seg *s = shmkv__seg_at(m, i);
        uint32_t v = atomic_load(&s->seq);
        /* Odd: locked (by us) while copied, with nothing half done. */
        if (v & 1)
            atomic_store(&s->seq, v + 1);
        if (atomic_load(&s->intent))
            settled = false;
        *entries += atomic_load(&s->count);
        rc = shmkv__mutex_init(&s->lock);
    }
    if (!rc)
        rc = shmkv__mutex_init(&shmkv__index_of(m)->lock);
    atomic_store(&h->clean, settled ? 1u : 0u);
    if (!rc && msync(p, (size_t)len, MS_SYNC) != 0)
        rc = -errno;
    munmap(p, (size_t)len);
    return rc;
}

static int fsync_dir_of(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) >= sizeof dir)
        return -ENAMETOOLONG;
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    int rc = fsync(dfd) != 0 ? -errno : 0;
    close(dfd);
    return rc;
}

/* The consistent copy into fd: every lock that keeps the region still is
 * held for the copy alone (segments in order, then the index, then the
 * growth lock: the order of docs/design.md), and the time they were held
 * is the writers' pause. */
static int take_copy(shmkv_db *db, int fd, uint64_t *len, uint64_t *pause_ns)
{
    shmkv__map *m = db->m;
    shmkv__hdr *h = SHMKV__HDR(m);
    int rc;
    shmkv__call_begin(db);
    if ((rc = shmkv__hold_all(m)) != 0)
        return rc;
    uint64_t t0 = shmkv__mono_ns();
    uint64_t top = atomic_load(&h->top);
    rc = copy_range(m, fd, 0, top);
    *pause_ns = shmkv__mono_ns() - t0;
    shmkv__release_all(m);
    *len = top;
    return rc;
}

/* ---- the best-effort copy ---------------------------------------------- */

/* A byte copy taken while writers go on would hold tables and entries of
 * different moments (a table copied after an entry it names was written,
 * or before), which is no state any crash leaves. So a best-effort backup
 * is built through the library instead: a new store at the temporary path
 * with the live store's options, filled one segment at a time, each
 * segment copied out under its own lock (writers of that segment wait for
 * that copy, those of others not at all). Each segment is as of one
 * moment; the whole is not (a batch written meanwhile across segments may
 * be there in part). */
typedef struct seg_copy {
    shmkv__map *m;
    shmkv__buf b;   /* key, value of each entry, one after the other */
    shmkv_item *it;
    size_t n, cap;
} seg_copy;

static int seg_copy_one(void *ctx, uint64_t off)
{
    seg_copy *c = ctx;
    const shmkv__entry *e = shmkv__entry_at(c->m, off);
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 1024;
        shmkv_item *it = realloc(c->it, nc * sizeof *it);
        if (!it)
            return -ENOMEM;
        c->it = it;
        c->cap = nc;
    }
    size_t len = (size_t)e->klen + e->vlen;
    int rc = shmkv__buf_reserve(&c->b, len);
    if (rc)
        return rc;
    /* Offsets for now: the buffer may move as it grows. */
    c->it[c->n++] = (shmkv_item){.key = (const void *)(uintptr_t)c->b.len, .klen = e->klen,
                                 .vlen = e->vlen,
                                 .kind = (shmkv_kind)shmkv__block_of(c->m, off)->kind};
    memcpy(c->b.p + c->b.len, e->data, len);
    c->b.len += len;
    return 0;
}

static int take_logical(shmkv_db *db, const char *tmp, uint64_t *pause_ns, uint64_t *entries)
{
    shmkv__map *m = db->m;
    shmkv__hdr *h = SHMKV__HDR(m);
    shmkv_options o = {.backend = SHMKV_BACKEND_DISK, .segments = h->nseg, .reserve = h->reserve,
                       .track_keys = __atomic_load_n(&h->track_keys, __ATOMIC_ACQUIRE) ? SHMKV_TRACK_ON
                                                                            : SHMKV_TRACK_OFF,
                       .flags = SHMKV_NOSYNC, .mode = 0600};
    shmkv_db *out = NULL;
    int rc = shmkv_open(tmp, &o, &out);
    if (rc)
        return rc;
    seg_copy c = {.m = m};
    *pause_ns = 0;
    *entries = 0;
    for (uint32_t i = 0; i < h->nseg && !rc; i++) {
        if (i == h->nseg / 2)
            SHMKV__HOOK("backup.copy.mid");
        c.n = 0;
        c.b.len = 0;
        shmkv__seg *s = shmkv__seg_at(m, i);
        shmkv__call_begin(db);
        if ((rc = shmkv__seg_lock(m, s)) != 0)
            break;
        uint64_t t0 = shmkv__mono_ns();
        rc = shmkv__seg_visit(m, s, seg_copy_one, &c);
        uint64_t held = shmkv__mono_ns() - t0;
        shmkv__seg_unlock(s);
        *pause_ns = held > *pause_ns ? held : *pause_ns;
        for (size_t j = 0; j < c.n; j++) {
            uintptr_t at = (uintptr_t)c.it[j].key;
            c.it[j].key = c.b.p + at;
            c.it[j].val = c.b.p + at + c.it[j].klen;
        }
        for (size_t j = 0; j < c.n && !rc; j += 4096)
            rc = shmkv_set_many(out, c.it + j, c.n - j < 4096 ? c.n - j : 4096, NULL);
        *entries += c.n;
    }
    free(c.it);
    free(c.b.p);
    /* Without SHMKV_NOSYNC the close msyncs; the caller fsyncs the file. */
    int crc = shmkv_close(out);
    return rc ? rc : crc;
}

/* Remove the temporary files (path.tmp.PID.N) that backups to path by
 * processes that no longer exist left behind (a backup killed midway).
 * Best effort: a failure here is no failure of the backup. */
static void sweep_leftovers(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    const char *base = slash ? slash + 1 : path;
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) < sizeof dir)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    else
        return;
    size_t blen = strlen(base);
    DIR *d = opendir(dir);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        const char *n = e->d_name;
        if (strncmp(n, base, blen) != 0 || strncmp(n + blen, ".tmp.", 5) != 0)
            continue;
        char *end;
        long pid = strtol(n + blen + 5, &end, 10);
        if (pid <= 0 || *end != '.' || pid == (long)getpid())
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue; /* alive, or not ours to judge */
        char full[4096 + 256];
        snprintf(full, sizeof full, "%s/%s", dir, n);
        (void)unlink(full);
    }
    closedir(d);
}

/* A store's file may run past top (room allocated ahead); a backup is
 * exactly [0, top), so that a copy cut short by even one byte is seen as
 * one. The store is closed: nothing else has it open. */
static int trim_to_top(int fd)
{
    uint64_t top;
    if (pread(fd, &top, sizeof top, (off_t)offsetof(shmkv__hdr, top)) != (ssize_t)sizeof top)
        return errno ? -errno : SHMKV_ECORRUPT;
    if (ftruncate(fd, (off_t)top) != 0)
        return -errno;
    if (pwrite(fd, &top, sizeof top, (off_t)offsetof(shmkv__hdr, file_size)) != (ssize_t)sizeof top)
        return errno ? -errno : -EIO;
    return 0;
}

int shmkv_backup(shmkv_db *db, const char *path, unsigned flags, shmkv_backup_info *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!shmkv__db_usable(db) || !path || !*path || (flags & ~SHMKV_BACKUP_CONCURRENT))
        return SHMKV_EINVAL;
    if (db->m->rdonly)
        return SHMKV_EREADONLY; /* a consistent copy takes the locks */
    bool consistent = !(flags & SHMKV_BACKUP_CONCURRENT);
    /* A disk store backed up onto its own file: renaming a copy over it
     * would swap the file under the processes that have it open. Its file
     * is already what a backup would hold once they close it; nothing is
     * written (as the fork does for its own file). */
    struct stat self;
    if (stat(path, &self) == 0 && self.st_dev == db->m->dev && self.st_ino == db->m->ino) {
        if (db->m->backend != SHMKV_BACKEND_DISK)
            return SHMKV_EINVAL; /* a memory store's own object is no backup */
        if (out) {
            out->entries = shmkv_size(db);
            out->bytes = (uint64_t)self.st_size;
        }
        return 0;
    }
    sweep_leftovers(path);
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 48);
    if (!tmp)
        return -ENOMEM;
    static _Atomic unsigned seqno;
    snprintf(tmp, plen + 48, "%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&seqno, 1));

    int rc = 0;
    uint64_t len = 0, pause = 0, entries = 0;
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        rc = -errno;
    if (!rc && consistent) {
        rc = take_copy(db, fd, &len, &pause);
        SHMKV__HOOK("backup.copied");
        if (!rc)
            rc = fix_copy(fd, len, &entries);
    } else if (!rc) {
        /* An empty file: the open in take_logical creates the store in it. */
        rc = take_logical(db, tmp, &pause, &entries);
        SHMKV__HOOK("backup.copied");
        if (!rc)
            rc = trim_to_top(fd);
    }
    struct stat st;
    if (!rc && fstat(fd, &st) == 0)
        len = (uint64_t)st.st_size;
    if (!rc && fsync(fd) != 0)
        rc = -errno;
    if (fd >= 0)
        close(fd);
    if (rc && fd >= 0)
        unlink(tmp);
    if (!rc) {
        if (rename(tmp, path) != 0)
            rc = -errno;
        else
            rc = fsync_dir_of(path);
        if (rc)
            unlink(tmp);
    }
    free(tmp);
    if (rc)
        return rc;
    if (out) {
        out->entries = entries;
        out->bytes = len;
        out->pause_ns = pause;
        out->best_effort = !consistent;
    }
    return 0;
}

/* ---- restore ---------------------------------------------------------- */

typedef struct restore_ctx {
    shmkv_db *dst;
    shmkv_item *items;
    size_t n, cap;
    unsigned char *buf;
    size_t used, bcap;
    uint64_t entries, bytes;
    int rc;
} restore_ctx;

enum { BATCH_KEYS = 4096, BATCH_BYTES = 8u << 20 };

static int restore_flush(restore_ctx *c)
{
    if (!c->n)
        return 0;
    /* The items point into buf, which only grows between flushes. */
    int rc = shmkv_set_many(c->dst, c->items, c->n, NULL);
    c->n = 0;
    c->used = 0;
    return rc;
}

static int restore_count(void *ctx, const void *key, size_t klen, const void *val, size_t vlen,
                         shmkv_kind kind)
{
    (void)key, (void)val, (void)kind;
    restore_ctx *c = ctx;
    c->entries++;
    c->bytes += klen + vlen;
    return 0;
}

static int restore_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen,
                       shmkv_kind kind)
{
    restore_ctx *c = ctx;
    if (c->n == c->cap || c->used + klen + vlen > c->bcap) {
        if ((c->rc = restore_flush(c)) != 0)
            return 1;
    }
    if (klen + vlen > c->bcap) {
        unsigned char *nb = malloc(klen + vlen);
        if (!nb) {
            c->rc = -ENOMEM;
            return 1;
        }
        free(c->buf);
        c->buf = nb;
        c->bcap = klen + vlen;
    }
    unsigned char *k = c->buf + c->used;
    memcpy(k, key, klen);
    if (vlen)
        memcpy(k + klen, val, vlen);
    c->used += klen + vlen;
    c->items[c->n++] = (shmkv_item){.key = k, .klen = klen, .val = k + klen, .vlen = vlen,
                                    .kind = kind};
    c->entries++;
    c->bytes += klen + vlen;
    return 0;
}

int shmkv_restore(shmkv_db *db, const char *path, uint64_t max_entries, uint64_t max_bytes,
                  shmkv_restore_info *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!shmkv__db_usable(db) || !path || !*path)
        return SHMKV_EINVAL;
    if (db->flags & SHMKV_RDONLY)
        return SHMKV_EREADONLY;
    /* Only a finished store is a backup: an empty or zero-filled file would
     * otherwise be taken for a store to create, and written to. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    char magic[8];
    ssize_t n = pread(fd, magic, sizeof magic, 0);
    int err = errno;
    close(fd);
    if (n < 0)
        return -err;
    if (n != (ssize_t)sizeof magic || memcmp(magic, SHMKV__MAGIC, sizeof magic) != 0)
        return SHMKV_ENOTSTORE;

    /* Opened like any store, so that a backup of a store whose writer died
     * is repaired first, and checked; a file this process may not write
     * (a read-only medium, mode 0400) is read through a read-only handle
     * instead, which reads consistently without repairing or checking. */
    shmkv_options o = {.backend = SHMKV_BACKEND_DISK, .flags = SHMKV_NOCREATE};
    shmkv_db *src = NULL;
    int rc = shmkv_open(path, &o, &src);
    if (rc == -EACCES || rc == -EROFS || rc == -EPERM) {
        o.flags = SHMKV_RDONLY;
        rc = shmkv_open(path, &o, &src);
    }
    if (rc)
        return rc;
    if (src->m == db->m) {
        /* The store's own file: it holds what it holds already. */
        if (out)
            out->entries = shmkv_size(db);
        shmkv_close(src);
        return 0;
    }
    restore_ctx c = {.dst = db, .cap = BATCH_KEYS, .bcap = BATCH_BYTES};
    if (!(o.flags & SHMKV_RDONLY) && (rc = shmkv_check(src, NULL, NULL, 0)) != 0)
        goto out;
    /* The guards are checked against the whole backup before anything is
     * written. */
    if ((rc = shmkv_scan(src, NULL, 0, NULL, 0, 0, 0, restore_count, &c)) != 0)
        goto out;
    if (out) {
        out->entries = c.entries;
        out->bytes = c.bytes;
    }
    if ((max_entries && c.entries > max_entries) || (max_bytes && c.bytes > max_bytes)) {
        rc = SHMKV_EFULL;
        goto out;
    }
    c.items = malloc(c.cap * sizeof *c.items);
    c.buf = malloc(c.bcap);
    if (!c.items || !c.buf) {
        rc = -ENOMEM;
        goto out;
    }
    c.entries = c.bytes = 0;
    if ((rc = shmkv_clear(db)) != 0)
        goto out;
    SHMKV__HOOK("restore.cleared");
    rc = shmkv_scan(src, NULL, 0, NULL, 0, 0, 0, restore_one, &c);
    if (rc == 1)
        rc = c.rc;
    if (!rc)
        rc = restore_flush(&c);
    if (!rc && out) {
        out->entries = c.entries;
        out->bytes = c.bytes;
    }
out:
    free(c.items);
    free(c.buf);
    int crc = shmkv_close(src);
    return rc ? rc : crc;
}
