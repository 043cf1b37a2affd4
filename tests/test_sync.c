/*
 * test_sync.c - SHMKV_SYNC and the last close's msync (docs/reliability.md,
 * section 2). Power cannot be cut in a test; what can be checked is that
 * the library asks the kernel to write the pages back when it promises to.
 * This executable is linked with -Wl,--wrap=msync, so every msync() of the
 * library comes through __wrap_msync below, which counts the calls that
 * write back synchronously (MS_SYNC) and then makes them.
 *
 * Promise: with SHMKV_SYNC every write msyncs what it wrote before it
 * returns; without it no write does; the last process to close a disk
 * store msyncs it unless SHMKV_NOSYNC; a close that is not the last does
 * not (another process still writes).
 */
#include "harness.h"

#include <stdatomic.h>
#include <sys/mman.h>

TestSuite(sync, .init = t_setup, .fini = t_teardown, .timeout = 120);

int __real_msync(void *addr, size_t len, int flags);
int __wrap_msync(void *addr, size_t len, int flags);

static _Atomic unsigned long syncs;

int __wrap_msync(void *addr, size_t len, int flags)
{
    if (flags & MS_SYNC)
        atomic_fetch_add(&syncs, 1);
    return __real_msync(addr, len, flags);
}

static unsigned long taken(void)
{
    return atomic_exchange(&syncs, 0);
}

static shmkv_db *open_flags(const char *where, shmkv_backend be, uint32_t flags)
{
    shmkv_options o = t_opts(be, SHMKV_TRACK_ON);
    o.flags = flags;
    return t_open_opts(where, &o);
}

/* Every kind of write the API has, each on its own; `want` says whether
 * each must have msynced. */
static void writes(shmkv_db *db, bool want, const char *what)
{
    int flag = 0;
    int64_t num = 0;
    uint64_t n = 0;
    size_t bad = 0, len = 0;
    char buf[64];
    shmkv_kind kind;
    shmkv_lease lease = {.ttl_ms = 60000};
    shmkv_claim c;
    shmkv_item items[2] = {{.key = "m1", .klen = 2, .val = "v", .vlen = 1},
                           {.key = "m2", .klen = 2, .val = "v", .vlen = 1}};
#define WRITE(call)                                                                            \
    do {                                                                                       \
        taken();                                                                               \
        T_OK(call);                                                                            \
        unsigned long s_ = taken();                                                            \
        cr_assert(want ? s_ > 0 : s_ == 0, "%s: %s made %lu synchronous msync calls", what,    \
                  #call, s_);                                                                  \
    } while (0)
    WRITE(shmkv_set(db, "a", 1, "1", 1, SHMKV_KIND_STRING));
    WRITE(shmkv_set(db, "a", 1, "2", 1, SHMKV_KIND_STRING));
    WRITE(shmkv_incr(db, "n", 1, 5, SHMKV_KIND_STRING, &num));
    WRITE(shmkv_cas(db, "a", 1, "2", 1, "3", 1, SHMKV_KIND_STRING, &flag));
    WRITE(shmkv_set_if_absent(db, "b", 1, "1", 1, SHMKV_KIND_STRING, &flag));
    WRITE(shmkv_swap(db, "b", 1, "2", 1, SHMKV_KIND_STRING, buf, sizeof buf, &len, &kind, &flag));
    WRITE(shmkv_get_or_set(db, "g", 1, "1", 1, SHMKV_KIND_STRING, buf, sizeof buf, &len, &kind,
                           &flag));
    WRITE(shmkv_compare_and_delete(db, "b", 1, "2", 1, &flag));
    WRITE(shmkv_delete(db, "g", 1, &flag));
    WRITE(shmkv_set_many(db, items, 2, &bad));
    WRITE(shmkv_delete_many(db, items, 2, &n, &bad));
    WRITE(shmkv_set(db, "p:1", 3, "v", 1, SHMKV_KIND_STRING));
    WRITE(shmkv_delete_prefix(db, "p:", 2, 0, &n));
    WRITE(shmkv_claim_key(db, "a", 1, &lease, &c, NULL, 0, NULL, NULL));
    WRITE(shmkv_claim_renew(db, "a", 1, c.token, &lease, &c));
    WRITE(shmkv_claim_release(db, "a", 1, c.token));
    WRITE(shmkv_claim_random(db, "a", 1, &lease, buf, sizeof buf, &len, &c, NULL, 0, NULL, NULL));
    WRITE(shmkv_claim_complete(db, "a", 1, c.token, 1));
    WRITE(shmkv_pop_random(db, "n", 1, buf, sizeof buf, &len, NULL, 0, NULL, NULL));
    WRITE(shmkv_clear(db));
#undef WRITE
}

static void each_write(shmkv_backend be)
{
    const char *where = t_where(be, "sync");
    shmkv_db *db = open_flags(where, be, SHMKV_SYNC);
    writes(db, true, t_str("%s, SHMKV_SYNC", t_backend_name(be)));
    t_close(db);
    where = t_where(be, "nosync");
    db = open_flags(where, be, 0);
    writes(db, false, t_str("%s, no SHMKV_SYNC", t_backend_name(be)));
    t_close(db);
}

Test(sync, each_write_disk)
{
    each_write(SHMKV_BACKEND_DISK);
}

Test(sync, each_write_memory)
{
    each_write(SHMKV_BACKEND_MEMORY);
}

/* Open with flags, write, close: the synchronous msyncs of the close. */
static unsigned long close_syncs(const char *where, shmkv_backend be, uint32_t flags)
{
    shmkv_db *db = open_flags(where, be, flags);
    t_set(db, "k", "v");
    taken();
    T_OK(shmkv_close(db));
    return taken();
}

/* The last close of a disk store msyncs it, unless SHMKV_NOSYNC; a close
 * while another process is attached does not. */
Test(sync, last_close_disk)
{
    const char *where = t_path("close");
    cr_assert_gt(close_syncs(where, SHMKV_BACKEND_DISK, 0), 0, "the last close did not msync");
    cr_assert_eq(close_syncs(where, SHMKV_BACKEND_DISK, SHMKV_NOSYNC), 0,
                 "the last close msynced under SHMKV_NOSYNC");

    /* another writer stays: not the last close */
    t_attached other = t_attach_child(where, SHMKV_BACKEND_DISK);
    cr_assert_eq(close_syncs(where, SHMKV_BACKEND_DISK, 0), 0,
                 "a close with another writer attached msynced");
    t_detach_child(&other);
}

/* A memory store has no disk to reach: its last close removes it. */
Test(sync, last_close_memory)
{
    const char *where = t_name("close");
    cr_assert_eq(close_syncs(where, SHMKV_BACKEND_MEMORY, 0), 0,
                 "the last close of a memory store msynced");
    cr_assert(!t_exists(t_shm_file(where)));
}
