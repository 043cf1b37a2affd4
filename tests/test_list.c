/*
 * test_list.c - shmkv_list(): memcmp order (bytes >= 0x80, NUL inside
 * keys, keys that are prefixes of others), prefix, limit, the callback's
 * stop value, KEYS_ONLY; with key tracking on and off; and against a
 * reference model (a sorted array) after thousands of random inserts and
 * deletes.
 */
#include "harness.h"

TestSuite(list, .init = t_setup, .fini = t_teardown, .timeout = 180);

/* ---- reference model: sorted array of distinct keys with values -------- */

typedef struct {
    unsigned char k[24];
    size_t kl;
    char v[24];
    size_t vl;
} m_ent;

typedef struct {
    m_ent *a;
    size_t n, cap;
} model;

/* index of the first entry >= key */
static size_t m_lower(const model *m, const void *k, size_t kl)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (t_keycmp(m->a[mid].k, m->a[mid].kl, k, kl) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void m_set(model *m, const void *k, size_t kl, const char *v, size_t vl)
{
    size_t i = m_lower(m, k, kl);
    if (i < m->n && t_keycmp(m->a[i].k, m->a[i].kl, k, kl) == 0) {
        memcpy(m->a[i].v, v, vl);
        m->a[i].vl = vl;
        return;
    }
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 256;
        m->a = realloc(m->a, m->cap * sizeof *m->a);
        cr_assert(m->a);
    }
    memmove(&m->a[i + 1], &m->a[i], (m->n - i) * sizeof *m->a);
    memcpy(m->a[i].k, k, kl);
    m->a[i].kl = kl;
    memcpy(m->a[i].v, v, vl);
    m->a[i].vl = vl;
    m->n++;
}

static bool m_del(model *m, const void *k, size_t kl)
{
    size_t i = m_lower(m, k, kl);
    if (i < m->n && t_keycmp(m->a[i].k, m->a[i].kl, k, kl) == 0) {
        memmove(&m->a[i], &m->a[i + 1], (m->n - i - 1) * sizeof *m->a);
        m->n--;
        return true;
    }
    return false;
}

static bool has_prefix(const unsigned char *k, size_t kl, const void *p, size_t pl)
{
    return kl >= pl && (pl == 0 || memcmp(k, p, pl) == 0);
}

/* Compare list(prefix, limit) with the model. */
static void check_against_model(shmkv_db *db, const model *m, const void *p, size_t pl,
                                uint64_t limit, unsigned flags)
{
    t_kvlist l;
    int rc = t_list_all(db, p, pl, limit, flags, &l);
    cr_assert_eq(rc, 0, "list -> %d (%s)", rc, shmkv_strerror(rc));
    size_t j = 0;
    for (size_t i = m_lower(m, p, pl); i < m->n && has_prefix(m->a[i].k, m->a[i].kl, p, pl);
         i++) {
        if (limit && j == limit)
            break;
        const m_ent *e = &m->a[i];
        cr_assert(j < l.n, "prefix %s limit %" PRIu64 ": list ended after %zu keys, missing %s",
                  t_show(p, pl), limit, l.n, t_show(e->k, e->kl));
        const t_kv *g = &l.a[j];
        cr_assert(g->kl == e->kl && memcmp(g->k, e->k, e->kl) == 0,
                  "prefix %s: key %zu is %s, expected %s", t_show(p, pl), j, t_show(g->k, g->kl),
                  t_show(e->k, e->kl));
        if (flags & SHMKV_LIST_KEYS_ONLY) {
            cr_assert(g->v == NULL && g->vl == 0, "KEYS_ONLY passed a value");
        } else {
            cr_assert(g->v != NULL, "value pointer NULL without KEYS_ONLY");
            cr_assert(g->vl == e->vl && memcmp(g->v, e->v, e->vl) == 0,
                      "value of %s is %s, expected %s", t_show(e->k, e->kl), t_show(g->v, g->vl),
                      t_show(e->v, e->vl));
        }
        j++;
    }
    cr_assert_eq(l.n, j, "prefix %s limit %" PRIu64 ": list gave %zu keys, model %zu (extra: %s)",
                 t_show(p, pl), limit, l.n, j, l.n > j ? t_show(l.a[j].k, l.a[j].kl) : "-");
    t_kvlist_free(&l);
}

static int track_of(bool on)
{
    return on ? SHMKV_TRACK_ON : SHMKV_TRACK_OFF;
}

/* ---- fixed key set ------------------------------------------------------ */

static const struct {
    const char *k;
    size_t kl;
} fixed[] = {
    {"a", 1},
    {"a\0", 2},
    {"a\0\0", 3},
    {"a\0b", 3},
    {"a\x01", 2},
    {"ab", 2},
    {"abc", 3},
    {"abd", 3},
    {"b", 1},
    {"\x7f", 1},
    {"\x80", 1},
    {"\x80\x00", 2},
    {"\xfe\xff", 2},
    {"\xff", 1},
    {"\xff\xff", 2},
    {"\xff\xff\xff", 3},
    {"\0", 1},
    {"\0\0", 2},
    {"\0a", 2},
    {"A", 1},
    {"Z", 1},
    {"aaaaaaaa", 8},
    {"aaaaaaaa\0", 9},
    {"aaaaaaaaa", 9},
    {"aaaaaaab", 8},
    {"aaaaaaa\xff", 8},
    {"\xc3\xa9t\xc3\xa9", 6},
};
#define NFIXED (sizeof fixed / sizeof fixed[0])

static shmkv_db *fixed_store(bool track, model *m)
{
    shmkv_db *db = t_open(t_path("fixed"), SHMKV_BACKEND_DISK, track_of(track));
    memset(m, 0, sizeof *m);
    /* insert in a scrambled order */
    for (size_t s = 0; s < NFIXED; s++) {
        size_t i = (s * 11) % NFIXED;
        char v[24];
        int vl = snprintf(v, sizeof v, "v%zu", i);
        T_OK(shmkv_set(db, fixed[i].k, fixed[i].kl, v, (size_t)vl, (shmkv_kind)(i % 3)));
        m_set(m, fixed[i].k, fixed[i].kl, v, (size_t)vl);
    }
    cr_assert_eq(m->n, NFIXED, "fixed keys are not distinct");
    cr_assert_eq(shmkv_size(db), NFIXED);
    return db;
}

static void order(bool track)
{
    model m;
    shmkv_db *db = fixed_store(track, &m);
    check_against_model(db, &m, NULL, 0, 0, 0);
    check_against_model(db, &m, NULL, 0, 0, SHMKV_LIST_KEYS_ONLY);

    /* kinds arrive with the values */
    t_kvlist l;
    T_OK(t_list_all(db, NULL, 0, 0, 0, &l));
    t_assert_sorted(&l);
    for (size_t j = 0; j < l.n; j++) {
        size_t i;
        for (i = 0; i < NFIXED; i++)
            if (fixed[i].kl == l.a[j].kl && memcmp(fixed[i].k, l.a[j].k, l.a[j].kl) == 0)
                break;
        cr_assert(i < NFIXED);
        cr_assert_eq(l.a[j].kind, (int)(i % 3), "kind of %s", t_show(l.a[j].k, l.a[j].kl));
    }
    t_kvlist_free(&l);
    free(m.a);
    t_close(db);
}

Test(list, order_tracked) { order(true); }
Test(list, order_untracked) { order(false); }

static void prefixes(bool track)
{
    model m;
    shmkv_db *db = fixed_store(track, &m);
    const struct {
        const char *p;
        size_t pl;
        size_t want;
    } cases[] = {
        {"a", 1, 13},      {"a\0", 2, 3},  {"a\0\0", 3, 1}, {"ab", 2, 3},   {"abc", 3, 1},
        {"abcd", 4, 0},    {"\xff", 1, 3}, {"\xff\xff", 2, 2}, {"\xff\xff\xff\xff", 4, 0},
        {"\0", 1, 3},      {"\x80", 1, 2}, {"c", 1, 0},     {"aaaaaaaa", 8, 3},
        {"aaaaaaa", 7, 5}, {"\x7f", 1, 1}, {"\xfe", 1, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t cnt = 0;
        for (size_t i = 0; i < m.n; i++)
            cnt += has_prefix(m.a[i].k, m.a[i].kl, cases[c].p, cases[c].pl);
        cr_assert_eq(cnt, cases[c].want, "test table wrong for prefix %s",
                     t_show(cases[c].p, cases[c].pl));
        check_against_model(db, &m, cases[c].p, cases[c].pl, 0, 0);
        check_against_model(db, &m, cases[c].p, cases[c].pl, 2,
                            SHMKV_LIST_KEYS_ONLY);
    }
    free(m.a);
    t_close(db);
}

Test(list, prefix_tracked) { prefixes(true); }
Test(list, prefix_untracked) { prefixes(false); }

static void limits(bool track)
{
    model m;
    shmkv_db *db = fixed_store(track, &m);
    const uint64_t lims[] = {1, 2, 3, 5, NFIXED - 1, NFIXED, NFIXED + 1, 1000};
    for (size_t i = 0; i < sizeof lims / sizeof lims[0]; i++) {
        check_against_model(db, &m, NULL, 0, lims[i], 0);
        check_against_model(db, &m, (const unsigned char *)"a", 1, lims[i], 0);
    }
    free(m.a);
    t_close(db);
}

Test(list, limit_tracked) { limits(true); }
Test(list, limit_untracked) { limits(false); }

static void stop_value(bool track)
{
    model m;
    shmkv_db *db = fixed_store(track, &m);
    for (size_t after = 1; after <= 5; after++) {
        t_kvlist l;
        memset(&l, 0, sizeof l);
        l.stop_after = after;
        l.stop_value = 40 + (int)after;
        int rc = shmkv_list(db, NULL, 0, 0, 0, t_collect, &l);
        cr_assert_eq(rc, 40 + (int)after, "list returned %d, callback stopped with %d", rc,
                     40 + (int)after);
        cr_assert_eq(l.calls, after, "callback called %zu times after asking to stop at %zu",
                     l.calls, after);
        for (size_t j = 0; j < after; j++)
            cr_assert(l.a[j].kl == m.a[j].kl && memcmp(l.a[j].k, m.a[j].k, m.a[j].kl) == 0);
        t_kvlist_free(&l);
    }
    /* a negative stop value propagates too */
    t_kvlist l;
    memset(&l, 0, sizeof l);
    l.stop_after = 2;
    l.stop_value = -12345;
    T_RC(shmkv_list(db, "a", 1, 0, SHMKV_LIST_KEYS_ONLY, t_collect, &l), -12345);
    cr_assert_eq(l.calls, 2);
    t_kvlist_free(&l);
    free(m.a);
    t_close(db);
}

Test(list, callback_stop_tracked) { stop_value(true); }
Test(list, callback_stop_untracked) { stop_value(false); }

static void empty(bool track)
{
    shmkv_db *db = t_open(t_path("empty"), SHMKV_BACKEND_DISK, track_of(track));
    t_kvlist l;
    T_OK(t_list_all(db, NULL, 0, 0, 0, &l));
    cr_assert_eq(l.calls, 0);
    t_kvlist_free(&l);
    t_set(db, "x", "1");
    T_OK(shmkv_delete(db, "x", 1, NULL));
    T_OK(t_list_all(db, "x", 1, 0, 0, &l));
    cr_assert_eq(l.calls, 0);
    t_kvlist_free(&l);
    t_close(db);
}

Test(list, empty_tracked) { empty(true); }
Test(list, empty_untracked) { empty(false); }

/* Values seen by list follow overwrites, and a cleared store lists
 * nothing; rebuild_index keeps the listing. */
static void updates(bool track)
{
    model m;
    shmkv_db *db = fixed_store(track, &m);
    T_OK(shmkv_set(db, "ab", 2, "new", 3, SHMKV_KIND_STRING));
    m_set(&m, "ab", 2, "new", 3);
    check_against_model(db, &m, NULL, 0, 0, 0);
    T_OK(shmkv_rebuild_index(db));
    check_against_model(db, &m, NULL, 0, 0, 0);
    T_OK(shmkv_clear(db));
    m.n = 0;
    check_against_model(db, &m, NULL, 0, 0, 0);
    T_OK(shmkv_set(db, "\xff", 1, "z", 1, SHMKV_KIND_STRING));
    m_set(&m, "\xff", 1, "z", 1);
    check_against_model(db, &m, NULL, 0, 0, 0);
    free(m.a);
    t_close(db);
}

Test(list, updates_tracked) { updates(true); }
Test(list, updates_untracked) { updates(false); }

/* ---- random model ------------------------------------------------------- */

static size_t gen_key(t_rng *r, unsigned char *k)
{
    /* Few distinct leading bytes so prefixes are shared; alphabet includes
     * NUL, 0x7f, 0x80 and 0xff. */
    static const unsigned char alpha[] = {0x00, 0x01, 'a', 'b', 0x7f, 0x80, 0xfe, 0xff};
    size_t kl = 1 + t_below(r, 10);
    for (size_t i = 0; i < kl; i++)
        k[i] = alpha[t_below(r, i < 3 ? 4 : 8) + (i < 3 ? (t_below(r, 2) * 4) : 0)];
    return kl;
}

static void random_model(bool track, shmkv_backend be)
{
    shmkv_options o = t_opts(be, track_of(track));
    o.segments = 16;
    shmkv_db *db = t_open_opts(t_where(be, "model"), &o);
    t_rng r = t_rng_new();
    model m = {0};
    int ops = (int)t_scaled(8000, 2000);
    unsigned char k[24];
    for (int op = 1; op <= ops; op++) {
        size_t kl;
        /* bias toward deletes of existing keys half of the time */
        if (m.n && t_below(&r, 100) < 35) {
            m_ent *e = &m.a[t_below(&r, m.n)];
            kl = e->kl;
            memcpy(k, e->k, kl);
            int ex = -1;
            T_OK(shmkv_delete(db, k, kl, &ex));
            cr_assert_eq(ex, 1, "delete(%s) of a model key: existed=%d", t_show(k, kl), ex);
            m_del(&m, k, kl);
        } else {
            kl = gen_key(&r, k);
            if (t_below(&r, 100) < 15) {
                int ex = -1;
                T_OK(shmkv_delete(db, k, kl, &ex));
                bool had = m_del(&m, k, kl);
                cr_assert_eq(ex, had ? 1 : 0, "delete(%s) existed=%d, model %d", t_show(k, kl), ex,
                             had);
            } else {
                char v[24];
                int vl = snprintf(v, sizeof v, "%d", op);
                T_OK(shmkv_set(db, k, kl, v, (size_t)vl, SHMKV_KIND_STRING));
                m_set(&m, k, kl, v, (size_t)vl);
            }
        }
        if (op % 2000 == 0 || op == ops) {
            cr_assert_eq(shmkv_size(db), m.n, "after %d ops: size %" PRIu64 ", model %zu", op,
                         shmkv_size(db), m.n);
            check_against_model(db, &m, NULL, 0, 0, 0);
        }
    }
    /* prefixes taken from keys in the model and from random bytes */
    for (int i = 0; i < 60; i++) {
        unsigned char p[24];
        size_t pl;
        if (m.n && i % 2 == 0) {
            const m_ent *e = &m.a[t_below(&r, m.n)];
            pl = 1 + t_below(&r, e->kl);
            memcpy(p, e->k, pl);
        } else {
            pl = gen_key(&r, p);
            if (pl > 3)
                pl = 3;
        }
        check_against_model(db, &m, p, pl, 0, (unsigned)(i % 3 == 0 ? SHMKV_LIST_KEYS_ONLY : 0));
        check_against_model(db, &m, p, pl, 1 + t_below(&r, 20), 0);
    }
    if (track) {
        T_OK(shmkv_rebuild_index(db));
        check_against_model(db, &m, NULL, 0, 0, 0);
    }
    free(m.a);
    t_close(db);
}

Test(list, random_model_tracked, .timeout = 300) { random_model(true, SHMKV_BACKEND_DISK); }
Test(list, random_model_untracked, .timeout = 300) { random_model(false, SHMKV_BACKEND_DISK); }
Test(list, random_model_tracked_memory, .timeout = 300)
{
    random_model(true, SHMKV_BACKEND_MEMORY);
}

/* A bigger tracked store, so the index has several levels: list with
 * prefix and limit from the middle. */
Test(list, large_tracked_prefix, .timeout = 300)
{
    shmkv_db *db = t_open(t_path("large"), SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    model m = {0};
    int n = (int)t_scaled(20000, 3000);
    for (int i = 0; i < n; i++) {
        char k[24], v[24];
        /* reverse-digit order keys so inserts land all over the tree */
        int kl = snprintf(k, sizeof k, "%c%c/%d", 'a' + (i % 7), 'a' + (i / 7) % 5, i * 7919 % n);
        int vl = snprintf(v, sizeof v, "%d", i);
        T_OK(shmkv_set(db, k, (size_t)kl, v, (size_t)vl, SHMKV_KIND_STRING));
        m_set(&m, k, (size_t)kl, v, (size_t)vl);
    }
    cr_assert_eq(shmkv_size(db), m.n);
    check_against_model(db, &m, NULL, 0, 0, SHMKV_LIST_KEYS_ONLY);
    check_against_model(db, &m, "c", 1, 0, 0);
    check_against_model(db, &m, "cd/", 3, 0, 0);
    check_against_model(db, &m, "cd/1", 4, 17, 0);
    check_against_model(db, &m, "g", 1, 100, 0);
    check_against_model(db, &m, "h", 1, 0, 0);
    /* delete every third key and check again */
    for (size_t i = 0; i < m.n;) {
        if (i % 3 == 0) {
            T_OK(shmkv_delete(db, m.a[i].k, m.a[i].kl, NULL));
            m_del(&m, m.a[i].k, m.a[i].kl);
        } else {
            i++;
        }
    }
    cr_assert_eq(shmkv_size(db), m.n);
    check_against_model(db, &m, NULL, 0, 0, 0);
    check_against_model(db, &m, "b", 1, 50, 0);
    free(m.a);
    t_close(db);
}
