/*
 * map.c - the process side of a store: one mapping per store per process,
 * shared by every handle to it (the registry), what fork() does to those
 * mappings, and the store's name and file. region.c runs the open and
 * close protocol on top of these.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static shmkv__map *registry;
/* Guards the links of the registry list only (registry_mu guards the open
 * protocol, which can wait on a file lock). fork() takes it, so that the
 * child finds a whole list; it is never held while waiting for anything. */
static pthread_mutex_t list_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

/* ---- fork ------------------------------------------------------------------ */

/* A child of fork() shares each store's open file description with its
 * parent, and the file locks that say "the parent is attached" (and, during
 * an open or close, "the parent holds the init lock") live on that
 * description. If the child kept its reference, a parent that died without
 * closing would stay attached, or keep the init lock, for as long as the
 * child lives. So the child lets go of every inherited descriptor at once
 * (with close(), which is async-signal-safe; nothing here allocates). Its
 * inherited handles are then only good for shmkv_close(); it opens its
 * own. */
static void fork_prepare(void)
{
    pthread_mutex_lock(&list_mu);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&list_mu);
}

static void fork_child(void)
{
    for (shmkv__map *m = registry; m; m = m->next) {
        if (m->fd >= 0) {
            close(m->fd);
            m->fd = -1;
        }
        m->base = NULL; /* MADV_DONTFORK: the child has no mapping */
    }
    pthread_mutex_unlock(&list_mu);
    /* A thread that was inside shmkv_open or shmkv_close at the fork does
     * not exist in the child, so registry_mu may look held forever. */
    pthread_mutex_init(&registry_mu, NULL);
}

static void fork_hooks_install(void)
{
    /* Without the handlers (out of memory), a child only keeps a dead
     * parent's locks until it exits or execs (the descriptor is
     * O_CLOEXEC): degraded, not wrong, so the open goes on. */
    (void)pthread_atfork(fork_prepare, fork_parent, fork_child);
}

void shmkv__registry_add(shmkv__map *m)
{
    pthread_mutex_lock(&list_mu);
    m->next = registry;
    registry = m;
    pthread_mutex_unlock(&list_mu);
}

void shmkv__registry_remove(shmkv__map *m)
{
    pthread_mutex_lock(&list_mu);
    for (shmkv__map **p = &registry; *p; p = &(*p)->next)
        if (*p == m) {
            *p = m->next;
            break;
        }
    pthread_mutex_unlock(&list_mu);
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

/* A read-only open may share a writable mapping; a writable open needs
 * one of its own. */
shmkv__map *shmkv__registry_find(int backend, dev_t dev, ino_t ino, bool rdonly)
{
    pid_t me = getpid();
    for (shmkv__map *m = registry; m; m = m->next)
        if (m->owner_pid == me && m->attached && m->backend == backend && m->dev == dev &&
            m->ino == ino && (rdonly || !m->rdonly))
            return m;
    return NULL;
}

static int open_one(const char *where, int backend, const char *obj, int oflags, mode_t mode)
{
    if (backend == SHMKV_BACKEND_MEMORY)
        return shm_open(obj, oflags, mode);
    /* Never follow a symbolic link planted where the store should be. */
    return open(where ? where : "./.k6.kv", oflags | O_NOFOLLOW | O_NOCTTY, mode);
}

/* A read-only open never creates: a store that does not exist is -ENOENT
 * for it, and leaving a 0-byte file or object behind would be a write. A
 * file this call creates gets exactly the requested mode (open() and
 * shm_open() narrow it by the umask), which is why creation is told apart
 * from joining with O_EXCL. */
int shmkv__open_fd(const char *where, int backend, const shmkv_options *o, char *obj,
                  size_t objcap, int *fd_out)
{
    mode_t mode = o->mode ? o->mode : 0600;
    bool create = !(o->flags & (SHMKV_NOCREATE | SHMKV_RDONLY));
    if (backend == SHMKV_BACKEND_MEMORY) {
        int rc = memory_object_name(where ? where : "k6kv", obj, objcap);
        if (rc)
            return rc;
    }
    /* Read-only: read permission is all it needs, so a store made
     * readable for another user can be read by them. */
    int oflags = ((o->flags & SHMKV_RDONLY) ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    for (int attempt = 0;; attempt++) {
        if (create) {
            int fd = open_one(where, backend, obj, oflags | O_CREAT | O_EXCL, mode);
            if (fd >= 0) {
                if (fchmod(fd, mode) != 0) {
                    int e = errno;
                    close(fd);
                    return -e;
                }
                *fd_out = fd;
                return 0;
            }
            if (errno != EEXIST)
                return -errno;
        }
        int fd = open_one(where, backend, obj, oflags, 0);
        if (fd >= 0) {
            *fd_out = fd;
            return 0;
        }
        /* Removed between the two calls: create it after all. */
        if (errno != ENOENT || !create || attempt >= 8)
            return -errno;
    }
}

/* A memory store can be unlinked by its last closer between our shm_open
 * and our init lock: then we hold a dead object and must open again. */
bool shmkv__memory_object_replaced(const char *obj, const struct stat *st)
{
    int fd = shm_open(obj, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return true;
    struct stat now;
    bool same = fstat(fd, &now) == 0 && now.st_dev == st->st_dev && now.st_ino == st->st_ino;
    close(fd);
    return !same;
}

void shmkv__map_free(shmkv__map *m)
{
    if (m->base)
        munmap(m->base, m->reserve);
    if (m->fd >= 0)
        close(m->fd);
    free(m->freed);
    free(m->name);
    free(m->dead_seq);
    free(m);
}

void shmkv__maps_lock(void)
{
    pthread_once(&fork_once, fork_hooks_install);
    pthread_mutex_lock(&registry_mu);
}

void shmkv__maps_unlock(void)
{
    pthread_mutex_unlock(&registry_mu);
}
