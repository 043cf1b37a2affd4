/*
 * test_index.c - the key index (index.c), driven through the public API and
 * checked by reaching into the region: every counted-B+tree invariant, the
 * key array, and rank/select/walk/prefix_end against a sorted reference.
 */
#include "internal.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define KMAX 24

typedef struct {
    unsigned char k[KMAX];
    size_t len;
} rkey;

/* The keys the store should hold, sorted in memcmp order. */
static rkey *ref;
static size_t nref, refcap;

static char path[128];
static shmkv_db *db;
static uint64_t rng;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int rcmp(const rkey *a, const rkey *b)
{
    return shmkv__keycmp(a->k, a->len, b->k, b->len);
}

static size_t ref_lower(const void *k, size_t len)
{
    size_t lo = 0, hi = nref;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (shmkv__keycmp(ref[mid].k, ref[mid].len, k, len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool ref_has(const rkey *k)
{
    size_t at = ref_lower(k->k, k->len);
    return at < nref && rcmp(&ref[at], k) == 0;
}

static void ref_add(const rkey *k)
{
    size_t at = ref_lower(k->k, k->len);
    if (at < nref && rcmp(&ref[at], k) == 0)
        return;
    if (nref == refcap) {
        refcap = refcap ? refcap * 2 : 1024;
        ref = realloc(ref, refcap * sizeof(*ref));
        cr_assert_not_null(ref);
    }
    memmove(&ref[at + 1], &ref[at], (nref - at) * sizeof(*ref));
    ref[at] = *k;
    nref++;
}

static void ref_del(const rkey *k)
{
    size_t at = ref_lower(k->k, k->len);
    if (at < nref && rcmp(&ref[at], k) == 0) {
        memmove(&ref[at], &ref[at + 1], (nref - at - 1) * sizeof(*ref));
        nref--;
    }
}

/* Rank just past the keys starting with p, computed the slow way: the
 * first key that is greater than p and does not start with it. */
static size_t ref_prefix_end(const unsigned char *p, size_t plen)
{
    size_t i = ref_lower(p, plen);
    while (i < nref && ref[i].len >= plen && memcmp(ref[i].k, p, plen) == 0)
        i++;
    return i;
}

/* Keys from a small alphabet with 0x00 and 0xff, and shared 8-byte heads,
 * so that prefix words tie often and blobs must be compared. */
static void randkey(rkey *k)
{
    static const char *heads[] = { "", "user:", "user:000", "\xff\xff", "a", "\x00" };
    static const unsigned char alpha[] = { 0x00, 'a', 'b', 0xfe, 0xff };
    size_t h = rnd() % 6;
    size_t hl = h == 5 ? 1 : strlen(heads[h]);
    memcpy(k->k, heads[h], hl);
    k->len = hl + 1 + rnd() % 10;
    for (size_t i = hl; i < k->len; i++)
        k->k[i] = rnd() % 3 ? alpha[rnd() % 5] : (unsigned char)rnd();
}

static void open_store(uint64_t reserve)
{
    static int seq;
    shmkv_options o = { 0 };
    o.track_keys = SHMKV_TRACK_ON;
    o.segments = 8;
    o.reserve = reserve;
    snprintf(path, sizeof(path), "/tmp/shmkv-index-%d-%d.db", (int)getpid(), seq++);
    unlink(path);
    cr_assert_eq(shmkv_open(path, &o, &db), 0);
}

static void setup(void)
{
    rng = 0x9e3779b97f4a7c15ull;
    nref = 0;
    open_store(1ull << 30);
}

static void teardown(void)
{
    if (db)
        shmkv_close(db);
    db = NULL;
    unlink(path);
    free(ref);
    ref = NULL;
    nref = refcap = 0;
}

TestSuite(index, .init = setup, .fini = teardown);

static void set_key(const rkey *k)
{
    cr_assert_eq(shmkv_set(db, k->k, k->len, "v", 1, SHMKV_KIND_BYTES), 0);
    ref_add(k);
}

static void del_key(const rkey *k)
{
    int existed = -1;
    cr_assert_eq(shmkv_delete(db, k->k, k->len, &existed), 0);
    cr_assert_eq(existed, ref_has(k));
    ref_del(k);
}

/* ---- checks, run under the index lock; they return a message instead of
 * asserting so that the lock is always released first ---------------- */

static char msg[256];
#define FAIL_IF(c, ...)                                        \
    do {                                                       \
        if (c) {                                               \
            snprintf(msg, sizeof(msg), __VA_ARGS__);           \
            return msg;                                        \
        }                                                      \
    } while (0)

typedef struct {
    shmkv__map *m;
    int leaf_depth;
    const shmkv__kblob *prev;
    uint64_t nodes, leaves, leaf_ents;
} walkst;

static const char *check_node(walkst *w, uint64_t off, int depth, uint64_t *sum)
{
    shmkv__map *m = w->m;
    shmkv__index *index = shmkv__index_of(m);
    shmkv__karr *ka = SHMKV__P(m, index->karr);
    shmkv__bt_node *nd = SHMKV__P(m, off);
    const char *err;

    FAIL_IF(depth > 20, "tree deeper than 20");
    FAIL_IF(!shmkv__in_region(m, off, sizeof(*nd)), "node %llu outside region",
            (unsigned long long)off);
    FAIL_IF(nd->n < 1 || nd->n > SHMKV__BT_SLOTS - 1, "node with %u entries", nd->n);
    w->nodes++;
    *sum = 0;
    if (nd->leaf) {
        if (w->leaf_depth < 0)
            w->leaf_depth = depth;
        FAIL_IF(w->leaf_depth != depth, "leaves at depths %d and %d", w->leaf_depth, depth);
        w->leaves++;
        w->leaf_ents += nd->n;
        for (uint32_t i = 0; i < nd->n; i++) {
            const shmkv__bt_ent *e = &nd->e[i];
            const shmkv__kblob *kb = SHMKV__P(m, e->key);
            FAIL_IF(e->child != 0 || e->count != 1, "leaf entry child/count wrong");
            FAIL_IF(e->pfx != shmkv__pfx(kb->key, kb->klen), "leaf pfx wrong");
            FAIL_IF(w->prev && shmkv__keycmp(w->prev->key, w->prev->klen, kb->key, kb->klen) >= 0,
                    "keys out of order");
            FAIL_IF(kb->pos >= index->n, "blob pos %u >= n", kb->pos);
            FAIL_IF(ka->off[kb->pos] != e->key, "key array slot %u does not point back", kb->pos);
            w->prev = kb;
        }
        *sum = nd->n;
        return NULL;
    }
    for (uint32_t i = 0; i < nd->n; i++) {
        const shmkv__bt_ent *e = &nd->e[i];
        const shmkv__bt_node *c = SHMKV__P(m, e->child);
        uint64_t cs;
        FAIL_IF(e->pfx != c->e[0].pfx || e->key != c->e[0].key, "stale subtree minimum");
        if ((err = check_node(w, e->child, depth + 1, &cs)))
            return err;
        FAIL_IF(cs != e->count, "count %llu, children hold %llu",
                (unsigned long long)e->count, (unsigned long long)cs);
        *sum += cs;
    }
    return NULL;
}

/* Every structural invariant, then the index against the reference. */
static const char *check_all(shmkv__map *m, walkst *w)
{
    shmkv__index *index = shmkv__index_of(m);
    const char *err;
    uint64_t total = 0;

    *w = (walkst){ m, -1, NULL, 0, 0, 0 };
    FAIL_IF(atomic_load(&index->dirty), "index dirty");
    FAIL_IF(index->n != nref, "index has %llu keys, reference %zu",
            (unsigned long long)index->n, nref);
    if (index->root == 0) {
        FAIL_IF(nref != 0, "empty tree with %zu keys", nref);
        return NULL;
    }
    shmkv__karr *ka = SHMKV__P(m, index->karr);
    FAIL_IF(index->karr == 0 || ka->cap < index->n, "key array missing or too small");
    const shmkv__bt_node *root = SHMKV__P(m, index->root);
    FAIL_IF(!root->leaf && root->n < 2, "internal root with one child");
    if ((err = check_node(w, index->root, 0, &total)))
        return err;
    FAIL_IF(total != index->n, "tree holds %llu keys, n %llu",
            (unsigned long long)total, (unsigned long long)index->n);
    for (size_t r = 0; r < nref; r++) {
        const shmkv__kblob *kb = SHMKV__P(m, shmkv__index_select(m, r));
        FAIL_IF(shmkv__keycmp(kb->key, kb->klen, ref[r].k, ref[r].len) != 0,
                "select(%zu) differs from reference", r);
        FAIL_IF(shmkv__index_rank(m, ref[r].k, ref[r].len) != r, "rank of key %zu", r);
    }
    for (int t = 0; t < 200; t++) {
        rkey k;
        randkey(&k);
        uint64_t got = shmkv__index_rank(m, k.k, k.len);
        FAIL_IF(got != ref_lower(k.k, k.len), "rank of a random key: %llu, want %zu",
                (unsigned long long)got, ref_lower(k.k, k.len));
    }
    return NULL;
}

/* RESTART means a rebuild ran and nothing is held: just ask again. */
static void lock_index(void)
{
    int rc;
    while ((rc = shmkv__index_lock(db->m, NULL)) == SHMKV__RESTART)
        ;
    cr_assert_eq(rc, 0, "index_lock: %s", shmkv_strerror(rc));
}

static walkst verify(void)
{
    walkst w;
    lock_index();
    const char *err = check_all(db->m, &w);
    shmkv__index_unlock(db->m);
    cr_assert_null(err, "%s", err);
    cr_assert_eq(shmkv_size(db), nref);
    return w;
}

/* ---- walking ---------------------------------------------------------- */

typedef struct {
    size_t at;       /* reference rank expected next */
    uint64_t seen;
    uint64_t stop;   /* return 42 on this visit (0: never) */
    bool bad;
} wctx;

static int visit(void *c, const shmkv__kblob *kb)
{
    wctx *w = c;
    if (w->at >= nref || shmkv__keycmp(kb->key, kb->klen, ref[w->at].k, ref[w->at].len))
        w->bad = true;
    w->at++;
    w->seen++;
    return w->stop && w->seen == w->stop ? 42 : 0;
}

/* prefix_end and walk for one prefix, limit and stop point. */
static void check_prefix(const unsigned char *p, size_t plen, uint64_t limit, uint64_t stop)
{
    shmkv__map *m = db->m;
    lock_index();
    uint64_t from = shmkv__index_rank(m, p, plen);
    uint64_t end = shmkv__index_prefix_end(m, p, plen);
    wctx w = { from, 0, stop, false };
    int rc = shmkv__index_walk(m, from, p, plen, limit, visit, &w);
    shmkv__index_unlock(m);

    size_t want_end = ref_prefix_end(p, plen);
    cr_assert_eq(from, ref_lower(p, plen));
    cr_assert_eq(end, want_end, "prefix_end %llu, want %zu (plen %zu)",
                 (unsigned long long)end, want_end, plen);
    uint64_t want = want_end - from;
    if (limit && limit < want)
        want = limit;
    cr_assert(!w.bad, "walk visited a key out of order");
    if (stop && stop <= want) {
        cr_assert_eq(rc, 42);
        cr_assert_eq(w.seen, stop);
    } else {
        cr_assert_eq(rc, 0);
        cr_assert_eq(w.seen, want, "walk saw %llu keys, want %llu",
                     (unsigned long long)w.seen, (unsigned long long)want);
    }
}

static void check_random_prefixes(int rounds)
{
    for (int t = 0; t < rounds; t++) {
        rkey p;
        if (nref && rnd() % 2) {
            p = ref[rnd() % nref];
            p.len = rnd() % (p.len + 1);
        } else {
            randkey(&p);
        }
        for (size_t add = rnd() % 3; add && p.len < KMAX; add--)
            p.k[p.len++] = 0xff;
        check_prefix(p.k, p.len, rnd() % 3 ? 0 : 1 + rnd() % 6, rnd() % 3 ? 0 : 1 + rnd() % 6);
    }
}

/* ---- tests ------------------------------------------------------------ */

Test(index, random_set_delete_matches_reference)
{
    verify();
    /* Grow, churn, then shrink, so splits, merges and root changes all run. */
    for (int op = 0; op < 15000; op++) {
        int phase = op / 5000;
        unsigned ins_pct = phase == 0 ? 80 : phase == 1 ? 50 : 20;
        rkey k;
        if (rnd() % 100 < ins_pct) {
            randkey(&k);
            set_key(&k);
        } else {
            if (nref && rnd() % 4)
                k = ref[rnd() % nref];
            else
                randkey(&k);
            del_key(&k);
        }
        if (op % 1000 == 999)
            verify();
    }
    check_random_prefixes(300);
    while (nref) {
        rkey k = ref[rnd() % nref];
        del_key(&k);
        if (nref % 1000 == 0)
            verify();
    }
    lock_index();
    uint64_t root = shmkv__index_of(db->m)->root;
    shmkv__index_unlock(db->m);
    cr_assert_eq(root, 0, "an emptied index keeps a root");
}

Test(index, sequential_keys_split_merge_and_collapse)
{
    rkey k = { .len = 6 };
    for (uint32_t i = 0; i < 20000; i++) {
        snprintf((char *)k.k, sizeof(k.k), "%06u", i);
        set_key(&k);
    }
    walkst w = verify();
    cr_assert_geq(w.leaf_depth, 2);
    /* Delete most keys from the front: merges must keep the node count
     * proportional to the keys that remain. */
    for (uint32_t i = 0; i < 19900; i++) {
        snprintf((char *)k.k, sizeof(k.k), "%06u", i);
        del_key(&k);
        if (i % 1000 == 999)
            verify();
    }
    w = verify();
    cr_assert_leq(w.nodes, 30, "%llu nodes for 100 keys", (unsigned long long)w.nodes);
    for (uint32_t i = 20000; i-- > 19900;) {
        snprintf((char *)k.k, sizeof(k.k), "%06u", i);
        del_key(&k);
    }
    verify();
}

Test(index, sparse_deletes_merge_thin_nodes)
{
    rkey k = { .len = 6 };
    for (uint32_t i = 0; i < 20000; i++) {
        snprintf((char *)k.k, sizeof(k.k), "%06u", i);
        set_key(&k);
    }
    /* Thin every leaf out to a key or two: without merging, the tree would
     * keep ~1300 leaves for 2000 keys. The first half is thinned upwards
     * (merges into the left neighbour), the second downwards (the left one
     * is still full, so merges go right). */
    for (uint32_t j = 0; j < 20000; j++) {
        uint32_t i = j < 10000 ? j : 29999 - j;
        if (i % 10 == 0)
            continue;
        snprintf((char *)k.k, sizeof(k.k), "%06u", i);
        del_key(&k);
        if (j % 2000 == 1999)
            verify();
    }
    walkst w = verify();
    cr_assert_geq(w.leaf_ents, 6 * w.leaves, "%llu keys in %llu leaves",
                  (unsigned long long)w.leaf_ents, (unsigned long long)w.leaves);
}

Test(index, prefix_end_with_ff_bytes)
{
    static const struct { const char *s; size_t len; } keys[] = {
        { "a", 1 }, { "a\xff", 2 }, { "a\xff\x00", 3 }, { "a\xff\xff", 3 },
        { "a\xff\xffz", 4 }, { "b", 1 }, { "b\x00", 2 }, { "\xfe\xff", 2 },
        { "\xff", 1 }, { "\xff\xff", 2 }, { "\xff\xff\xff\xff\xff\xff\xff\xff\xff", 9 },
        { "\xff\xffz", 3 }, { "0123456789abcdef", 16 }, { "01234567\xff\xff", 10 },
        { "01234568", 8 },
    };
    rkey k;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        k.len = keys[i].len;
        memcpy(k.k, keys[i].s, k.len);
        set_key(&k);
    }
    verify();

    lock_index();
    shmkv__map *m = db->m;
    uint64_t n = shmkv__index_of(m)->n;
    uint64_t e_a_ff = shmkv__index_prefix_end(m, "a\xff", 2);
    uint64_t e_ff = shmkv__index_prefix_end(m, "\xff", 1);
    uint64_t e_ffff = shmkv__index_prefix_end(m, "\xff\xff", 2);
    uint64_t e_none = shmkv__index_prefix_end(m, "", 0);
    uint64_t e_long = shmkv__index_prefix_end(m, "01234567\xff", 9);
    uint64_t r_b = shmkv__index_rank(m, "b", 1);
    uint64_t r_0124 = shmkv__index_rank(m, "01234568", 8);
    shmkv__index_unlock(m);

    /* "a\xff" ends where its successor "b" starts. */
    cr_assert_eq(e_a_ff, r_b);
    /* All-0xff prefixes have no successor. */
    cr_assert_eq(e_ff, n);
    cr_assert_eq(e_ffff, n);
    cr_assert_eq(e_none, n);
    /* A prefix longer than the 8-byte word: successor "01234568". */
    cr_assert_eq(e_long, r_0124);

    static const char *pfx[] = { "a", "a\xff", "a\xff\xff", "a\xff\xff\xff", "\xfe", "\xfe\xff",
                                 "\xff", "\xff\xff", "\xff\xff\xff", "b", "0123456", "01234567",
                                 "01234567\xff", "01234567\xff\xff", "c" };
    for (size_t i = 0; i < sizeof(pfx) / sizeof(pfx[0]); i++)
        check_prefix((const unsigned char *)pfx[i], strlen(pfx[i]), 0, 0);
    check_prefix((const unsigned char *)"b\x00", 2, 0, 0);
    check_prefix((const unsigned char *)"\x00", 1, 0, 0);
}

Test(index, walk_with_prefix_limit_and_stop)
{
    rkey k;
    for (int i = 0; i < 3000; i++) {
        k.len = (size_t)snprintf((char *)k.k, sizeof(k.k), "%s:%04d", i % 3 ? "item" : "user", i);
        set_key(&k);
    }
    for (int i = 0; i < 2000; i++) {
        randkey(&k);
        set_key(&k);
    }
    verify();
    const unsigned char *p = (const unsigned char *)"user:01";
    check_prefix(p, 7, 0, 0);
    check_prefix(p, 7, 5, 0);
    check_prefix(p, 7, 0, 3);
    check_prefix(p, 7, 1000, 0);
    check_prefix((const unsigned char *)"item:", 5, 0, 0);
    check_prefix((const unsigned char *)"item:", 5, 1999, 0);
    check_prefix((const unsigned char *)"", 0, 0, 0);
    check_prefix((const unsigned char *)"", 0, 17, 0);
    check_prefix((const unsigned char *)"zzz", 3, 0, 0);
    check_random_prefixes(300);

    /* Walking from an arbitrary rank without a prefix, and past the end. */
    lock_index();
    wctx w = { 1234, 0, 0, false };
    int rc1 = shmkv__index_walk(db->m, 1234, NULL, 0, 0, visit, &w);
    wctx w2 = { nref, 0, 0, false };
    int rc2 = shmkv__index_walk(db->m, nref, NULL, 0, 0, visit, &w2);
    shmkv__index_unlock(db->m);
    cr_assert_eq(rc1, 0);
    cr_assert(!w.bad);
    cr_assert_eq(w.seen, nref - 1234);
    cr_assert_eq(rc2, 0);
    cr_assert_eq(w2.seen, 0);
}

typedef struct {
    size_t at;
    uint64_t seen;
    bool bad;
} lctx;

static int list_cb(void *c, const void *key, size_t klen, const void *val, size_t vlen,
                   shmkv_kind kind)
{
    lctx *l = c;
    (void)val, (void)vlen, (void)kind;
    if (l->at >= nref || shmkv__keycmp(key, klen, ref[l->at].k, ref[l->at].len))
        l->bad = true;
    l->at++;
    l->seen++;
    return 0;
}

Test(index, public_list_and_random_key_follow_the_index)
{
    rkey k;
    for (int i = 0; i < 4000; i++) {
        randkey(&k);
        set_key(&k);
    }
    verify();
    static const char *pfx[] = { "user:", "user:000", "\xff\xff", "a", "" };
    for (size_t i = 0; i < sizeof(pfx) / sizeof(pfx[0]); i++) {
        size_t plen = strlen(pfx[i]);
        size_t from = ref_lower(pfx[i], plen);
        size_t want = ref_prefix_end((const unsigned char *)pfx[i], plen) - from;
        lctx l = { from, 0, false };
        cr_assert_eq(shmkv_list(db, pfx[i], plen, 0, SHMKV_LIST_KEYS_ONLY, list_cb, &l), 0);
        cr_assert(!l.bad, "list order differs for prefix %zu", i);
        cr_assert_eq(l.seen, want);
        lctx l2 = { from, 0, false };
        cr_assert_eq(shmkv_list(db, pfx[i], plen, 7, 0, list_cb, &l2), 0);
        cr_assert_eq(l2.seen, want < 7 ? want : 7);

        unsigned char buf[64];
        size_t kl;
        for (int t = 0; t < 20 && want; t++) {
            cr_assert_eq(shmkv_random_key(db, pfx[i], plen, buf, sizeof(buf), &kl), 0);
            cr_assert(kl >= plen && memcmp(buf, pfx[i], plen) == 0);
            cr_assert_eq(shmkv_exists(db, buf, kl), 1);
        }
    }
}

Test(index, rebuild_gives_the_same_order)
{
    rkey k;
    for (int op = 0; op < 8000; op++) {
        randkey(&k);
        if (rnd() % 4)
            set_key(&k);
        else
            del_key(nref && rnd() % 2 ? &ref[rnd() % nref] : &k);
    }
    verify();

    /* A key the tables do not have: a rebuild must forget it. */
    shmkv__map *m = db->m;
    lock_index();
    int rc = shmkv__index_insert(m, "ghost-key", 9);
    uint64_t n1 = shmkv__index_of(m)->n;
    int rc2 = shmkv__index_remove(m, "no-such-key", 11);
    uint64_t n2 = shmkv__index_of(m)->n;
    shmkv__index_unlock(m);
    cr_assert_eq(rc, 0);
    cr_assert_eq(rc2, 0);
    cr_assert_eq(n1, nref + 1);
    cr_assert_eq(n2, n1, "removing an absent key changed n");

    cr_assert_eq(shmkv_rebuild_index(db), 0);
    walkst w = verify();
    /* Bulk loading packs leaves well: on average at least 16 per leaf. */
    cr_assert_geq(w.leaf_ents, 16 * w.leaves);

    /* The rebuilt index must keep working under updates. */
    for (int op = 0; op < 3000; op++) {
        randkey(&k);
        if (rnd() % 2)
            set_key(&k);
        else
            del_key(nref && rnd() % 2 ? &ref[rnd() % nref] : &k);
        if (op % 1000 == 999)
            verify();
    }
    check_random_prefixes(100);
}

Test(index, rebuild_of_empty_and_tiny_stores)
{
    cr_assert_eq(shmkv_rebuild_index(db), 0);
    verify();
    rkey k = { .k = "x", .len = 1 };
    set_key(&k);
    cr_assert_eq(shmkv_rebuild_index(db), 0);
    verify();
    del_key(&k);
    verify();
}

Test(index, full_reserve_leaves_index_consistent)
{
    /* A store that runs out of room: failed sets must leave the index
     * exactly as it was, and the index must stay usable. */
    shmkv_close(db);
    db = NULL;
    unlink(path);
    open_store(SHMKV__MIN_RESERVE);
    rkey k;
    int fails = 0;
    for (int i = 0; i < 40000 && fails < 200; i++) {
        randkey(&k);
        int rc = shmkv_set(db, k.k, k.len, "value-bytes", 11, SHMKV_KIND_BYTES);
        if (rc == 0) {
            ref_add(&k);
        } else {
            cr_assert(rc == SHMKV_EFULL || rc == -ENOSPC, "set: %s", shmkv_strerror(rc));
            fails++;
            if (!ref_has(&k))
                cr_assert_eq(shmkv_exists(db, k.k, k.len), 0);
        }
        if (i % 1000 == 999)
            verify();
    }
    cr_assert_gt(fails, 0, "the store never filled up");
    verify();
    for (size_t i = 0; i < nref; i += 2)
        del_key(&ref[i]);
    verify();
}
