/*
 * test_basic.c - open/close, single-key operations, limits, options,
 * read-only handles, error strings and shmkv_stat().
 */
#include "harness.h"
#include "internal.h"

TestSuite(basic, .init = t_setup, .fini = t_teardown, .timeout = 120);

/* ---- open / close ---------------------------------------------------- */

Test(basic, open_close_disk)
{
    const char *p = t_path("oc");
    cr_assert(!t_exists(p));
    shmkv_db *db = t_open(p, SHMKV_BACKEND_DISK, 0);
    struct stat st;
    cr_assert(stat(p, &st) == 0, "store file missing while open");
    cr_assert(S_ISREG(st.st_mode));
    cr_assert_eq(st.st_mode & 0777, 0600, "default mode %o, expected 0600",
                 (unsigned)(st.st_mode & 0777));
    cr_assert_eq(shmkv_size(db), 0);
    t_close(db);
    cr_assert(t_exists(p), "disk store removed by close");

    /* NULL options and the NULL path (./.k6.kv; t_setup chdir'ed into the
     * test's directory). */
    shmkv_db *d2 = NULL;
    T_OK(shmkv_open(p, NULL, &d2));
    t_close(d2);
    T_OK(shmkv_open(NULL, NULL, &d2));
    t_set(d2, "a", "1");
    t_close(d2);
    cr_assert(t_exists("./.k6.kv"), "NULL path did not create ./.k6.kv");
}

Test(basic, open_close_memory)
{
    const char *n = t_name("oc");
    const char *f = t_shm_file(n);
    shmkv_db *db = t_open(n, SHMKV_BACKEND_MEMORY, 0);
    cr_assert(t_exists(f), "%s missing while the store is open", f);
    t_set(db, "k", "v");
    t_expect_str(db, "k", "v");
    t_close(db);
    cr_assert(!t_exists(f), "%s left behind after the last close", f);
}

Test(basic, nocreate)
{
    const char *p = t_path("nc");
    shmkv_options o = t_opts(SHMKV_BACKEND_DISK, 0);
    o.flags = SHMKV_NOCREATE;
    shmkv_db *db = NULL;
    T_RC(shmkv_open(p, &o, &db), -ENOENT);
    cr_assert(!t_exists(p), "NOCREATE created the file");
    o.backend = SHMKV_BACKEND_MEMORY;
    const char *n = t_name("nc");
    T_RC(shmkv_open(n, &o, &db), -ENOENT);
    cr_assert(!t_exists(t_shm_file(n)));

    /* and it does open an existing one */
    shmkv_db *a = t_open(p, SHMKV_BACKEND_DISK, 0);
    t_set(a, "x", "y");
    t_close(a);
    o.backend = SHMKV_BACKEND_DISK;
    T_OK(shmkv_open(p, &o, &db));
    t_expect_str(db, "x", "y");
    t_close(db);
}

Test(basic, mode_option)
{
    umask(022);
    const char *p = t_path("mode");
    shmkv_options o = t_opts(SHMKV_BACKEND_DISK, 0);
    o.mode = 0640;
    shmkv_db *db = t_open_opts(p, &o);
    struct stat st;
    cr_assert(stat(p, &st) == 0);
    cr_assert_eq(st.st_mode & 0777, 0640, "mode %o, expected 0640", (unsigned)(st.st_mode & 0777));
    t_close(db);
}

Test(basic, reopen_persists_disk)
{
    const char *p = t_path("persist");
    shmkv_db *db = t_open(p, SHMKV_BACKEND_DISK, 0);
    char k[32], v[64];
    for (int i = 0; i < 500; i++) {
        snprintf(k, sizeof k, "key-%d", i);
        snprintf(v, sizeof v, "value-%d-%0*d", i, i % 40, 7);
        t_set(db, k, v);
    }
    int existed = -1;
    T_OK(shmkv_delete(db, "key-7", 5, &existed));
    cr_assert_eq(existed, 1);
    t_close(db);

    db = t_open(p, SHMKV_BACKEND_DISK, 0);
    cr_assert_eq(shmkv_size(db), 499);
    for (int i = 0; i < 500; i++) {
        snprintf(k, sizeof k, "key-%d", i);
        snprintf(v, sizeof v, "value-%d-%0*d", i, i % 40, 7);
        if (i == 7)
            t_expect_absent(db, k, strlen(k));
        else
            t_expect_str(db, k, v);
    }
    t_close(db);
}

/* ---- single-key operations (both backends) ---------------------------- */

static void crud(shmkv_backend be)
{
    shmkv_db *db = t_open(t_where(be, "crud"), be, 0);
    cr_assert_eq(shmkv_size(db), 0);
    T_RC(shmkv_exists(db, "a", 1), 0);
    t_expect_absent(db, "a", 1);

    t_set(db, "a", "alpha");
    t_set(db, "b", "beta");
    cr_assert_eq(shmkv_exists(db, "a", 1), 1);
    cr_assert_eq(shmkv_size(db), 2);
    t_expect_str(db, "a", "alpha");
    t_expect_str(db, "b", "beta");

    /* overwrite with longer and shorter values */
    t_set(db, "a", "a much longer value than before, to force another block size");
    t_expect_str(db, "a", "a much longer value than before, to force another block size");
    t_set(db, "a", "A");
    t_expect_str(db, "a", "A");
    cr_assert_eq(shmkv_size(db), 2, "overwrite changed the count");

    int existed = -1;
    T_OK(shmkv_delete(db, "a", 1, &existed));
    cr_assert_eq(existed, 1);
    t_expect_absent(db, "a", 1);
    cr_assert_eq(shmkv_size(db), 1);
    existed = -1;
    T_OK(shmkv_delete(db, "a", 1, &existed));
    cr_assert_eq(existed, 0);
    T_OK(shmkv_delete(db, "zz", 2, NULL));
    cr_assert_eq(shmkv_size(db), 1);

    /* re-insert after delete */
    t_set(db, "a", "again");
    t_expect_str(db, "a", "again");

    char k[16];
    for (int i = 0; i < 300; i++) {
        snprintf(k, sizeof k, "n%d", i);
        t_set(db, k, k);
    }
    cr_assert_eq(shmkv_size(db), 302);
    T_OK(shmkv_clear(db));
    cr_assert_eq(shmkv_size(db), 0);
    t_expect_absent(db, "a", 1);
    t_expect_absent(db, "n5", 2);
    t_set(db, "after", "clear");
    t_expect_str(db, "after", "clear");
    cr_assert_eq(shmkv_size(db), 1);
    t_close(db);
}

Test(basic, crud_disk) { crud(SHMKV_BACKEND_DISK); }
Test(basic, crud_memory) { crud(SHMKV_BACKEND_MEMORY); }

Test(basic, get_small_buffer)
{
    shmkv_db *db = t_open(t_path("buf"), SHMKV_BACKEND_DISK, 0);
    const char *v = "0123456789abcdef";
    t_set(db, "k", v);

    char buf[8];
    memset(buf, '#', sizeof buf);
    size_t need = 0;
    shmkv_kind kind = SHMKV_KIND_JSON;
    T_RC(shmkv_get(db, "k", 1, buf, 8, &need, &kind), SHMKV_EBUFSIZE);
    cr_assert_eq(need, 16, "EBUFSIZE reported %zu, expected 16", need);
    for (size_t i = 0; i < sizeof buf; i++)
        cr_assert_eq(buf[i], '#', "EBUFSIZE wrote into the buffer at %zu", i);

    need = 0;
    T_RC(shmkv_get(db, "k", 1, NULL, 0, &need, NULL), SHMKV_EBUFSIZE);
    cr_assert_eq(need, 16);

    /* one byte short, then exactly enough */
    char b15[15], b16[16];
    T_RC(shmkv_get(db, "k", 1, b15, sizeof b15, &need, NULL), SHMKV_EBUFSIZE);
    cr_assert_eq(need, 16);
    need = 0;
    T_OK(shmkv_get(db, "k", 1, b16, sizeof b16, &need, NULL));
    cr_assert_eq(need, 16);
    cr_assert(memcmp(b16, v, 16) == 0);

    /* missing key: ENOTFOUND, not EBUFSIZE */
    T_RC(shmkv_get(db, "nope", 4, NULL, 0, &need, NULL), SHMKV_ENOTFOUND);
    t_close(db);
}

Test(basic, kinds_roundtrip)
{
    shmkv_db *db = t_open(t_path("kinds"), SHMKV_BACKEND_DISK, 0);
    const unsigned char bin[] = {0, 1, 2, 0xff, 0x80, 0};
    const char *str = "h\xc3\xa9llo";
    const char *json = "{\"a\":[1,2,3]}";
    T_OK(shmkv_set(db, "bin", 3, bin, sizeof bin, SHMKV_KIND_BYTES));
    T_OK(shmkv_set(db, "str", 3, str, strlen(str), SHMKV_KIND_STRING));
    T_OK(shmkv_set(db, "json", 4, json, strlen(json), SHMKV_KIND_JSON));
    t_expect_kind(db, "bin", 3, bin, sizeof bin, SHMKV_KIND_BYTES);
    t_expect_kind(db, "str", 3, str, strlen(str), SHMKV_KIND_STRING);
    t_expect_kind(db, "json", 4, json, strlen(json), SHMKV_KIND_JSON);
    /* the kind follows the latest set */
    T_OK(shmkv_set(db, "json", 4, json, strlen(json), SHMKV_KIND_BYTES));
    t_expect_kind(db, "json", 4, json, strlen(json), SHMKV_KIND_BYTES);
    T_OK(shmkv_set(db, "bin", 3, bin, sizeof bin, SHMKV_KIND_JSON));
    t_expect_kind(db, "bin", 3, bin, sizeof bin, SHMKV_KIND_JSON);
    t_close(db);
}

Test(basic, empty_value)
{
    shmkv_db *db = t_open(t_path("empty"), SHMKV_BACKEND_DISK, 0);
    T_OK(shmkv_set(db, "e", 1, "", 0, SHMKV_KIND_STRING));
    cr_assert_eq(shmkv_exists(db, "e", 1), 1);
    size_t n = 99;
    shmkv_kind kind = SHMKV_KIND_BYTES;
    T_OK(shmkv_get(db, "e", 1, NULL, 0, &n, &kind));
    cr_assert_eq(n, 0);
    cr_assert_eq(kind, SHMKV_KIND_STRING);
    char b[4];
    n = 99;
    T_OK(shmkv_get(db, "e", 1, b, sizeof b, &n, NULL));
    cr_assert_eq(n, 0);
    /* NULL value pointer with length 0 */
    T_OK(shmkv_set(db, "e2", 2, NULL, 0, SHMKV_KIND_BYTES));
    t_expect_kind(db, "e2", 2, "", 0, SHMKV_KIND_BYTES);
    cr_assert_eq(shmkv_size(db), 2);
    /* empty -> non-empty -> empty */
    t_set(db, "e", "x");
    t_expect_str(db, "e", "x");
    T_OK(shmkv_set(db, "e", 1, "", 0, SHMKV_KIND_STRING));
    t_expect(db, "e", 1, "", 0);
    t_close(db);
}

Test(basic, key_size_limits)
{
    shmkv_db *db = t_open(t_path("klim"), SHMKV_BACKEND_DISK, 0);
    size_t big = SHMKV_KEY_MAX + 1;
    unsigned char *k = malloc(big);
    cr_assert(k);
    for (size_t i = 0; i < big; i++)
        k[i] = (unsigned char)(i * 7 + 3);
    char buf[8];
    size_t n;

    T_RC(shmkv_set(db, "x", 0, "v", 1, SHMKV_KIND_BYTES), SHMKV_EKEYSIZE);
    T_RC(shmkv_set(db, k, big, "v", 1, SHMKV_KIND_BYTES), SHMKV_EKEYSIZE);
    T_RC(shmkv_get(db, "x", 0, buf, sizeof buf, &n, NULL), SHMKV_EKEYSIZE);
    T_RC(shmkv_get(db, k, big, buf, sizeof buf, &n, NULL), SHMKV_EKEYSIZE);
    T_RC(shmkv_delete(db, "x", 0, NULL), SHMKV_EKEYSIZE);
    T_RC(shmkv_delete(db, k, big, NULL), SHMKV_EKEYSIZE);
    T_RC(shmkv_exists(db, "x", 0), SHMKV_EKEYSIZE);
    T_RC(shmkv_exists(db, k, big), SHMKV_EKEYSIZE);
    T_RC(shmkv_incr(db, k, big, 1, SHMKV_KIND_STRING, NULL), SHMKV_EKEYSIZE);
    cr_assert_eq(shmkv_size(db), 0, "a rejected key was stored");

    /* exactly SHMKV_KEY_MAX works, and differs from its 1-shorter prefix */
    t_setb(db, k, SHMKV_KEY_MAX, "max", 3);
    t_setb(db, k, SHMKV_KEY_MAX - 1, "max-1", 5);
    t_expect(db, k, SHMKV_KEY_MAX, "max", 3);
    t_expect(db, k, SHMKV_KEY_MAX - 1, "max-1", 5);
    cr_assert_eq(shmkv_size(db), 2);
    t_setb(db, k, 1, "one", 3);
    t_expect(db, k, 1, "one", 3);
    int existed = 0;
    T_OK(shmkv_delete(db, k, SHMKV_KEY_MAX, &existed));
    cr_assert_eq(existed, 1);
    t_expect_absent(db, k, SHMKV_KEY_MAX);
    t_expect(db, k, SHMKV_KEY_MAX - 1, "max-1", 5);
    free(k);
    t_close(db);
}

Test(basic, value_size_limit, .timeout = 240)
{
    shmkv_db *db = t_open(t_path("vlim"), SHMKV_BACKEND_DISK, 0);
    size_t big = (size_t)SHMKV_VALUE_MAX + 1;
    unsigned char *v = malloc(big);
    cr_assert(v);
    for (size_t i = 0; i < big; i += 4096)
        v[i] = (unsigned char)(i >> 12);
    v[big - 1] = 0x5a;
    v[big - 2] = 0xa5;
    T_RC(shmkv_set(db, "big", 3, v, big, SHMKV_KIND_BYTES), SHMKV_EVALSIZE);
    cr_assert_eq(shmkv_exists(db, "big", 3), 0);
    T_RC(shmkv_set_if_absent(db, "big", 3, v, big, SHMKV_KIND_BYTES, NULL), SHMKV_EVALSIZE);
    cr_assert_eq(shmkv_exists(db, "big", 3), 0);

    /* an existing value survives a rejected overwrite */
    t_set(db, "big", "small");
    T_RC(shmkv_set(db, "big", 3, v, big, SHMKV_KIND_BYTES), SHMKV_EVALSIZE);
    t_expect_str(db, "big", "small");

    /* exactly SHMKV_VALUE_MAX is accepted and round-trips */
    T_OK(shmkv_set(db, "max", 3, v, SHMKV_VALUE_MAX, SHMKV_KIND_BYTES));
    unsigned char *out = malloc(SHMKV_VALUE_MAX);
    cr_assert(out);
    size_t n = 0;
    T_OK(shmkv_get(db, "max", 3, out, SHMKV_VALUE_MAX, &n, NULL));
    cr_assert_eq(n, SHMKV_VALUE_MAX);
    cr_assert(memcmp(out, v, SHMKV_VALUE_MAX) == 0, "64 MiB value corrupted");
    free(out);
    free(v);
    int existed = 0;
    T_OK(shmkv_delete(db, "max", 3, &existed));
    cr_assert_eq(existed, 1);
    t_close(db);
}

Test(basic, binary_keys)
{
    shmkv_db *db = t_open(t_path("bink"), SHMKV_BACKEND_DISK, 0);
    const char k1[] = {'a', 0, 'b'};
    const char k2[] = {'a', 0, 'c'};
    const char k3[] = {'a'};
    const char k4[] = {'a', 0};
    const char k5[] = {0};
    const char k6[] = {0, 0};
    const unsigned char k7[] = {0xff, 0xfe, 0x80, 0x00, 0x01};
    t_setb(db, k1, 3, "1", 1);
    t_setb(db, k2, 3, "2", 1);
    t_setb(db, k3, 1, "3", 1);
    t_setb(db, k4, 2, "4", 1);
    t_setb(db, k5, 1, "5", 1);
    t_setb(db, k6, 2, "6", 1);
    t_setb(db, k7, 5, "7", 1);
    cr_assert_eq(shmkv_size(db), 7);
    t_expect(db, k1, 3, "1", 1);
    t_expect(db, k2, 3, "2", 1);
    t_expect(db, k3, 1, "3", 1);
    t_expect(db, k4, 2, "4", 1);
    t_expect(db, k5, 1, "5", 1);
    t_expect(db, k6, 2, "6", 1);
    t_expect(db, k7, 5, "7", 1);
    T_OK(shmkv_delete(db, k4, 2, NULL));
    t_expect_absent(db, k4, 2);
    t_expect(db, k3, 1, "3", 1);
    t_expect(db, k1, 3, "1", 1);
    t_close(db);
}

static void open_twice(shmkv_backend be)
{
    const char *w = t_where(be, "twice");
    shmkv_db *a = t_open(w, be, 0);
    shmkv_db *b = t_open(w, be, 0);
    cr_assert(a != b, "two opens returned the same handle");
    t_set(a, "from-a", "1");
    t_expect_str(b, "from-a", "1");
    t_set(b, "from-b", "2");
    t_expect_str(a, "from-b", "2");
    cr_assert_eq(shmkv_size(a), 2);
    shmkv_info ia, ib;
    T_OK(shmkv_stat(a, &ia));
    T_OK(shmkv_stat(b, &ib));
    cr_assert_eq(ia.attached, 1, "one process, attached=%u", ia.attached);
    cr_assert_eq(ib.attached, 1);
    t_close(a);
    /* b still works after a is closed (for memory: the store survives) */
    t_expect_str(b, "from-a", "1");
    t_set(b, "late", "3");
    t_expect_str(b, "late", "3");
    shmkv_db *c = t_open(w, be, 0);
    t_expect_str(c, "late", "3");
    t_close(c);
    t_close(b);
}

Test(basic, open_twice_shares_disk) { open_twice(SHMKV_BACKEND_DISK); }
Test(basic, open_twice_shares_memory) { open_twice(SHMKV_BACKEND_MEMORY); }

static void incompat(shmkv_backend be)
{
    const char *w = t_where(be, "incompat");
    shmkv_options o = t_opts(be, SHMKV_TRACK_ON);
    o.segments = 16;
    shmkv_db *a = t_open_opts(w, &o);
    t_set(a, "k", "v");

    shmkv_db *b = NULL;
    shmkv_options j = t_opts(be, 0);
    j.segments = 32;
    T_RC(shmkv_open(w, &j, &b), SHMKV_EINCOMPAT);
    /* tracking off joins a tracked store, which keeps tracking */
    j = t_opts(be, SHMKV_TRACK_OFF);
    b = t_open_opts(w, &j);
    shmkv_info ti;
    T_OK(shmkv_stat(b, &ti));
    cr_assert_eq(ti.track_keys, 1);
    t_close(b);

    /* leaving them to the store, or agreeing, works */
    j = t_opts(be, SHMKV_TRACK_DEFAULT);
    b = t_open_opts(w, &j);
    shmkv_info info;
    T_OK(shmkv_stat(b, &info));
    cr_assert_eq(info.segments, 16);
    cr_assert_eq(info.track_keys, 1);
    t_expect_str(b, "k", "v");
    t_close(b);
    j = t_opts(be, SHMKV_TRACK_ON);
    j.segments = 16;
    b = t_open_opts(w, &j);
    t_close(b);

    /* the same from another process */
    pid_t p = t_fork();
    if (p == 0) {
        shmkv_db *c = NULL;
        shmkv_options x = t_opts(be, 0);
        x.segments = 8;
        int rc = shmkv_open(w, &x, &c);
        CHILD_CHECK(rc == SHMKV_EINCOMPAT, "segments 8 -> %d", rc);
        x = t_opts(be, SHMKV_TRACK_OFF);
        CHILD_OK(shmkv_open(w, &x, &c));
        CHILD_OK(shmkv_close(c));
        x = t_opts(be, 0);
        CHILD_OK(shmkv_open(w, &x, &c));
        char buf[8];
        size_t n = 0;
        CHILD_OK(shmkv_get(c, "k", 1, buf, sizeof buf, &n, NULL));
        CHILD_CHECK(n == 1 && buf[0] == 'v', "value");
        CHILD_OK(shmkv_close(c));
        _exit(0);
    }
    t_wait_ok(p, "incompat joiner");
    t_close(a);

    if (be == SHMKV_BACKEND_DISK) {
        /* a closed disk store keeps its options too */
        j = t_opts(be, 0);
        j.segments = 64;
        T_RC(shmkv_open(w, &j, &b), SHMKV_EINCOMPAT);
        j = t_opts(be, SHMKV_TRACK_OFF);
        b = t_open_opts(w, &j);
        t_close(b);
        j = t_opts(SHMKV_BACKEND_DISK, 0);
        b = t_open_opts(w, &j);
        t_expect_str(b, "k", "v");
        t_close(b);
    }
}

Test(basic, incompatible_options_disk) { incompat(SHMKV_BACKEND_DISK); }
Test(basic, incompatible_options_memory) { incompat(SHMKV_BACKEND_MEMORY); }

Test(basic, invalid_options)
{
    const uint32_t bad_segments[] = {3, 6, 100, 4095, 8192, 1u << 31};
    for (size_t i = 0; i < sizeof bad_segments / sizeof bad_segments[0]; i++) {
        for (int be = 0; be < 2; be++) {
            shmkv_options o = t_opts((shmkv_backend)be, 0);
            o.segments = bad_segments[i];
            shmkv_db *db = NULL;
            const char *w = t_where((shmkv_backend)be, "inval");
            int rc = shmkv_open(w, &o, &db);
            if (rc == 0)
                shmkv_close(db);
            cr_assert_eq(rc, SHMKV_ESEGMENTS, "%s segments=%u -> %d (%s)",
                         t_backend_name((shmkv_backend)be), bad_segments[i], rc,
                         shmkv_strerror(rc));
        }
    }
    /* valid extremes */
    const uint32_t good[] = {1, 2, 4096};
    for (size_t i = 0; i < 3; i++) {
        shmkv_options o = t_opts(SHMKV_BACKEND_DISK, 0);
        o.segments = good[i];
        shmkv_db *db = t_open_opts(t_path("segs"), &o);
        shmkv_info info;
        T_OK(shmkv_stat(db, &info));
        cr_assert_eq(info.segments, good[i]);
        t_set(db, "a", "b");
        t_set(db, "c", "d");
        t_expect_str(db, "a", "b");
        cr_assert_eq(shmkv_size(db), 2);
        t_close(db);
    }
    /* an invalid backend and track value */
    shmkv_options o = t_opts((shmkv_backend)7, 0);
    shmkv_db *db = NULL;
    int rc = shmkv_open(t_path("be"), &o, &db);
    if (rc == 0)
        shmkv_close(db);
    cr_assert_eq(rc, SHMKV_EINVAL, "backend 7 -> %d", rc);
    o = t_opts(SHMKV_BACKEND_DISK, 9);
    rc = shmkv_open(t_path("tk"), &o, &db);
    if (rc == 0)
        shmkv_close(db);
    cr_assert_eq(rc, SHMKV_EINVAL, "track_keys 9 -> %d", rc);
}

Test(basic, invalid_memory_names)
{
    char longname[SHMKV_NAME_MAX + 2];
    memset(longname, 'a', sizeof longname);
    longname[SHMKV_NAME_MAX + 1] = 0;
    const char *bad[] = {"", "a/b", "/abs", "sp ace", "star*", "..\x01", longname};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        shmkv_options o = t_opts(SHMKV_BACKEND_MEMORY, 0);
        shmkv_db *db = NULL;
        int rc = shmkv_open(bad[i], &o, &db);
        if (rc == 0)
            shmkv_close(db);
        cr_assert_eq(rc, SHMKV_ENAME, "name \"%s\" -> %d (%s)", t_show(bad[i], strlen(bad[i])), rc,
                     shmkv_strerror(rc));
    }
    /* the longest valid name works (it is ours: t<pid>x prefix) */
    char maxname[SHMKV_NAME_MAX + 1];
    memset(maxname, 'z', SHMKV_NAME_MAX);
    maxname[SHMKV_NAME_MAX] = 0;
    size_t pl = strlen(t_name_prefix());
    memcpy(maxname, t_name_prefix(), pl);
    shmkv_db *db = t_open(maxname, SHMKV_BACKEND_MEMORY, 0);
    t_set(db, "k", "v");
    t_expect_str(db, "k", "v");
    t_close(db);
}

static void readonly(shmkv_backend be)
{
    const char *w = t_where(be, "ro");
    shmkv_db *rw = t_open(w, be, SHMKV_TRACK_ON);
    t_set(rw, "k", "v");
    t_set(rw, "n", "5");
    shmkv_options o = t_opts(be, 0);
    o.flags = SHMKV_RDONLY;
    shmkv_db *ro = t_open_opts(w, &o);
    t_expect_str(ro, "k", "v");
    cr_assert_eq(shmkv_exists(ro, "k", 1), 1);
    cr_assert_eq(shmkv_size(ro), 2);

    int flag = -1;
    size_t n = 0;
    char buf[16];
    int64_t r = 0;
    T_RC(shmkv_set(ro, "k", 1, "X", 1, SHMKV_KIND_BYTES), SHMKV_EREADONLY);
    T_RC(shmkv_set(ro, "new", 3, "X", 1, SHMKV_KIND_BYTES), SHMKV_EREADONLY);
    T_RC(shmkv_delete(ro, "k", 1, &flag), SHMKV_EREADONLY);
    T_RC(shmkv_clear(ro), SHMKV_EREADONLY);
    T_RC(shmkv_incr(ro, "n", 1, 1, SHMKV_KIND_STRING, &r), SHMKV_EREADONLY);
    T_RC(shmkv_cas(ro, "k", 1, "v", 1, "X", 1, SHMKV_KIND_BYTES, &flag), SHMKV_EREADONLY);
    T_RC(shmkv_set_if_absent(ro, "new", 3, "X", 1, SHMKV_KIND_BYTES, &flag), SHMKV_EREADONLY);
    T_RC(shmkv_swap(ro, "k", 1, "X", 1, SHMKV_KIND_BYTES, buf, sizeof buf, &n, NULL, &flag),
         SHMKV_EREADONLY);
    T_RC(shmkv_get_or_set(ro, "new", 3, "X", 1, SHMKV_KIND_BYTES, buf, sizeof buf, &n, NULL,
                          &flag),
         SHMKV_EREADONLY);
    T_RC(shmkv_compare_and_delete(ro, "k", 1, "v", 1, &flag), SHMKV_EREADONLY);

    /* nothing changed */
    t_expect_str(rw, "k", "v");
    t_expect_str(rw, "n", "5");
    t_expect_absent(rw, "new", 3);
    cr_assert_eq(shmkv_size(rw), 2);

    /* reads through the RDONLY handle see writes through the other one */
    t_set(rw, "k", "w");
    t_expect_str(ro, "k", "w");
    t_kvlist l;
    T_OK(t_list_all(ro, NULL, 0, 0, 0, &l));
    cr_assert_eq(l.n, 2);
    t_kvlist_free(&l);
    char kb[8];
    size_t kl = 0;
    T_OK(shmkv_random_key(ro, NULL, 0, kb, sizeof kb, &kl));
    t_close(ro);
    t_close(rw);
}

Test(basic, readonly_disk) { readonly(SHMKV_BACKEND_DISK); }
Test(basic, readonly_memory) { readonly(SHMKV_BACKEND_MEMORY); }

Test(basic, readonly_only_handle_disk)
{
    /* a read-only open of a closed disk store, as the only handle */
    const char *p = t_path("ro1");
    shmkv_db *rw = t_open(p, SHMKV_BACKEND_DISK, 0);
    t_set(rw, "a", "1");
    t_close(rw);
    shmkv_options o = t_opts(SHMKV_BACKEND_DISK, 0);
    o.flags = SHMKV_RDONLY;
    shmkv_db *ro = t_open_opts(p, &o);
    t_expect_str(ro, "a", "1");
    T_RC(shmkv_set(ro, "a", 1, "2", 1, SHMKV_KIND_STRING), SHMKV_EREADONLY);
    t_close(ro);
    rw = t_open(p, SHMKV_BACKEND_DISK, 0);
    t_expect_str(rw, "a", "1");
    t_close(rw);
}

Test(basic, strerror_all_codes)
{
    const char *seen[SHMKV_ERR_BASE - SHMKV_ERR_LAST + 1];
    for (int c = SHMKV_ERR_LAST; c <= SHMKV_ERR_BASE; c++) {
        const char *m = shmkv_strerror(c);
        cr_assert(m != NULL, "strerror(%d) is NULL", c);
        cr_assert(m[0] != 0, "strerror(%d) is empty", c);
        seen[c - SHMKV_ERR_LAST] = m;
        for (int d = SHMKV_ERR_LAST; d < c; d++)
            cr_assert(strcmp(seen[d - SHMKV_ERR_LAST], m) != 0,
                      "codes %d and %d share the message \"%s\"", d, c, m);
    }
    const int errs[] = {-ENOSPC, -EACCES, -ENOENT, -ELOOP, -EISDIR, -ENOMEM};
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        const char *m = shmkv_strerror(errs[i]);
        cr_assert(m != NULL && m[0] != 0, "strerror(%d) empty", errs[i]);
    }
    /* -ENOSPC is explained as the errno, not as a library code */
    cr_assert(strcmp(shmkv_strerror(-ENOSPC), shmkv_strerror(SHMKV_EFULL)) != 0);
    cr_assert(shmkv_strerror(0) != NULL && shmkv_strerror(0)[0] != 0);
    cr_assert(shmkv_strerror(-24750) != NULL);
    cr_assert(shmkv_strerror(12345) != NULL);

    char v[32];
    snprintf(v, sizeof v, "%d.%d.%d", SHMKV_VERSION_MAJOR, SHMKV_VERSION_MINOR,
             SHMKV_VERSION_PATCH);
    cr_assert_str_eq(shmkv_version(), v);
}

static void stat_counts(shmkv_backend be)
{
    const char *w = t_where(be, "stat");
    shmkv_options o = t_opts(be, SHMKV_TRACK_ON);
    o.segments = 8;
    o.reserve = 64ull << 20;
    shmkv_db *db = t_open_opts(w, &o);
    shmkv_info i0;
    T_OK(shmkv_stat(db, &i0));
    cr_assert_eq(i0.keys, 0);
    cr_assert_eq(i0.segments, 8);
    cr_assert_eq(i0.track_keys, 1);
    cr_assert_eq(i0.backend, (int)be);
    cr_assert_eq(i0.format_version, SHMKV__FORMAT_VERSION);
    cr_assert_eq(i0.reserve_bytes, 64ull << 20);
    cr_assert_eq(i0.attached, 1);
    cr_assert(i0.file_bytes >= SHMKV__HDR_SIZE);
    cr_assert(i0.file_bytes <= i0.reserve_bytes);

    char k[32], v[200];
    memset(v, 'v', sizeof v);
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof k, "stat-%d", i);
        T_OK(shmkv_set(db, k, strlen(k), v, sizeof v, SHMKV_KIND_BYTES));
    }
    shmkv_info i1;
    T_OK(shmkv_stat(db, &i1));
    cr_assert_eq(i1.keys, 1000);
    cr_assert_eq(shmkv_size(db), 1000);
    cr_assert(i1.used_bytes >= i0.used_bytes + 1000u * sizeof v, "used %" PRIu64 " -> %" PRIu64,
              i0.used_bytes, i1.used_bytes);
    cr_assert(i1.file_bytes >= i1.used_bytes, "file %" PRIu64 " < used %" PRIu64, i1.file_bytes,
              i1.used_bytes);
    cr_assert(i1.file_bytes <= i1.reserve_bytes);
    if (be == SHMKV_BACKEND_DISK) {
        struct stat st;
        cr_assert(stat(w, &st) == 0);
        cr_assert((uint64_t)st.st_size >= i1.file_bytes, "file is %jd bytes, stat says %" PRIu64,
                  (intmax_t)st.st_size, i1.file_bytes);
    }
    for (int i = 0; i < 400; i++) {
        snprintf(k, sizeof k, "stat-%d", i);
        T_OK(shmkv_delete(db, k, strlen(k), NULL));
    }
    shmkv_info i2;
    T_OK(shmkv_stat(db, &i2));
    cr_assert_eq(i2.keys, 600);

    /* attached counts processes */
    int go[2], done[2];
    cr_assert(pipe(go) == 0 && pipe(done) == 0);
    pid_t p = t_fork();
    if (p == 0) {
        close(go[0]);
        close(done[1]);
        shmkv_db *c = NULL;
        shmkv_options x = t_opts(be, 0);
        CHILD_OK(shmkv_open(w, &x, &c));
        CHILD_CHECK(shmkv_size(c) == 600, "child sees %" PRIu64, shmkv_size(c));
        char b = 1;
        CHILD_CHECK(write(go[1], &b, 1) == 1, "write");
        CHILD_CHECK(read(done[0], &b, 1) == 0, "read");
        CHILD_OK(shmkv_close(c));
        _exit(0);
    }
    close(go[1]);
    close(done[0]);
    char b;
    cr_assert_eq(read(go[0], &b, 1), 1, "child did not open");
    shmkv_info i3;
    T_OK(shmkv_stat(db, &i3));
    cr_assert_eq(i3.attached, 2, "attached=%u with two processes", i3.attached);
    close(done[1]);
    close(go[0]);
    t_wait_ok(p, "stat child");
    T_OK(shmkv_stat(db, &i3));
    cr_assert_eq(i3.attached, 1, "attached=%u after the child closed", i3.attached);
    T_OK(shmkv_clear(db));
    T_OK(shmkv_stat(db, &i3));
    cr_assert_eq(i3.keys, 0);
    t_close(db);
}

Test(basic, stat_disk) { stat_counts(SHMKV_BACKEND_DISK); }
Test(basic, stat_memory) { stat_counts(SHMKV_BACKEND_MEMORY); }

Test(basic, failed_open_returns_no_handle)
{
    /* a failed open leaves *out alone or NULL; never a live handle */
    shmkv_db *db = (shmkv_db *)0x1;
    shmkv_options o = t_opts(SHMKV_BACKEND_DISK, 0);
    o.segments = 5;
    T_RC(shmkv_open(t_path("f"), &o, &db), SHMKV_ESEGMENTS);
    cr_assert(db == (shmkv_db *)0x1 || db == NULL);
}
