/*
 * test_check.c - shmkv_check(): sound stores of every shape pass (tables
 * with tombstones, big blocks, the free pool, batches, the key index), and
 * damage written into a store's bytes is found and named.
 */
#include "harness.h"
#include "internal.h"

TestSuite(check, .init = t_setup, .fini = t_teardown, .timeout = 240);

static void fill(shmkv_db *db, int n)
{
    char k[32], v[64];
    for (int i = 0; i < n; i++) {
        snprintf(k, sizeof k, "key:%06d", i);
        snprintf(v, sizeof v, "value %d", i * 7);
        t_set(db, k, v);
    }
}

static void sound_shapes(shmkv_backend be, int track)
{
    const char *where = t_where(be, track == SHMKV_TRACK_ON ? "ct" : "cu");
    shmkv_db *db = t_open(where, be, track);
    t_check_sound(db, "empty");
    int n = (int)t_scaled(3000, 300);
    fill(db, n);
    t_check_sound(db, "filled");
    char k[32];
    for (int i = 0; i < n; i += 3) {
        snprintf(k, sizeof k, "key:%06d", i);
        T_OK(shmkv_delete(db, k, strlen(k), NULL));
    }
    t_check_sound(db, "after deletes (tombstones)");
    /* A value over 4 MiB is a big block alone in its chunk. */
    size_t big = (5u << 20) + 123;
    char *val = malloc(big);
    cr_assert(val);
    memset(val, 'b', big);
    T_OK(shmkv_set(db, "big", 3, val, big, SHMKV_KIND_BYTES));
    t_check_sound(db, "with a big block");
    T_OK(shmkv_delete(db, "big", 3, NULL));
    free(val);
    t_check_sound(db, "big block freed (free pool)");
    shmkv_item items[3] = {
        {.key = "b1", .klen = 2, .val = "1", .vlen = 1, .kind = SHMKV_KIND_STRING},
        {.key = "b2", .klen = 2, .val = "2", .vlen = 1, .kind = SHMKV_KIND_STRING},
        {.key = "b3", .klen = 2, .val = "3", .vlen = 1, .kind = SHMKV_KIND_STRING},
    };
    T_OK(shmkv_set_many(db, items, 3, NULL));
    t_check_sound(db, "after a batch");
    T_OK(shmkv_clear(db));
    t_check_sound(db, "cleared");
    fill(db, 100);
    t_check_sound(db, "refilled");
    t_close(db);
}

Test(check, sound_disk_untracked) { sound_shapes(SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF); }
Test(check, sound_disk_tracked) { sound_shapes(SHMKV_BACKEND_DISK, SHMKV_TRACK_ON); }
Test(check, sound_memory_tracked) { sound_shapes(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_ON); }

Test(check, arguments)
{
    cr_assert_eq(shmkv_check(NULL, NULL, NULL, 0), SHMKV_EINVAL);
    const char *p = t_path("ca");
    shmkv_db *db = t_open(p, SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    fill(db, 10);
    T_OK(shmkv_check(db, NULL, NULL, 0));
    t_close(db);
    /* A read-only handle with a mapping of its own (PROT_READ) cannot
     * lock (one that shares a writable mapping of its process can). */
    shmkv_options o = t_opts(SHMKV_BACKEND_DISK, SHMKV_TRACK_DEFAULT);
    o.flags = SHMKV_RDONLY;
    shmkv_db *ro = t_open_opts(p, &o);
    uint64_t n = 7;
    cr_assert_eq(shmkv_check(ro, &n, NULL, 0), SHMKV_EREADONLY);
    cr_assert_eq(n, 0);
    t_close(ro);
}

/* The first segment holding a key, and one of its live slot words. */
static shmkv__seg *loaded_segment(shmkv__map *m, uint64_t *word)
{
    for (uint32_t i = 0; i < SHMKV__HDR(m)->nseg; i++) {
        shmkv__seg *s = shmkv__seg_at(m, i);
        uint64_t toff = atomic_load(&s->table);
        if (!toff || !atomic_load(&s->count))
            continue;
        shmkv__table *t = SHMKV__P(m, toff);
        for (uint64_t j = 0; j < t->cap; j++)
            if (SHMKV__SLOT_LIVE(atomic_load(&t->slot[j]))) {
                *word = atomic_load(&t->slot[j]);
                return s;
            }
    }
    cr_assert_fail("no segment holds a key");
    return NULL;
}

static void expect_problem(shmkv_db *db, const char *what, const char *needle)
{
    uint64_t n = 0;
    char msg[256];
    int rc = shmkv_check(db, &n, msg, sizeof msg);
    cr_assert_eq(rc, SHMKV_ECORRUPT, "%s: shmkv_check -> %d (%s)", what, rc,
                 shmkv_strerror(rc));
    cr_assert_geq(n, 1, "%s", what);
    cr_assert(strstr(msg, needle), "%s: first problem \"%s\" does not say \"%s\"", what, msg,
              needle);
    /* a short buffer gets the start of the same message */
    char small[8];
    cr_assert_eq(shmkv_check(db, NULL, small, sizeof small), SHMKV_ECORRUPT);
    cr_assert_eq(strlen(small), sizeof small - 1);
    cr_assert(strncmp(small, msg, sizeof small - 1) == 0);
}

Test(check, damaged_count)
{
    shmkv_db *db = t_open(t_path("cc"), SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF);
    fill(db, 200);
    uint64_t w;
    shmkv__seg *s = loaded_segment(db->m, &w);
    atomic_fetch_add(&s->count, 1);
    expect_problem(db, "segment count", "keys and");
    atomic_fetch_sub(&s->count, 1);
    t_check_sound(db, "count restored");
    t_close(db);
}

/* A slot marked for a delete batch (format 4) while no batch holds the
 * segment: no repair would ever clear it. */
Test(check, stray_delete_mark)
{
    shmkv_db *db = t_open(t_path("cdm"), SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF);
    fill(db, 200);
    uint64_t w;
    shmkv__seg *s = loaded_segment(db->m, &w);
    shmkv__table *t = SHMKV__P(db->m, atomic_load(&s->table));
    uint64_t j = 0;
    while (atomic_load(&t->slot[j]) != w)
        j++;
    atomic_store(&t->slot[j], w | SHMKV__SLOT_DOOM);
    expect_problem(db, "stray mark", "marked for a delete batch");
    atomic_store(&t->slot[j], w);
    t_check_sound(db, "mark cleared");
    t_close(db);
}

Test(check, damaged_entry)
{
    shmkv_db *db = t_open(t_path("ce"), SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    fill(db, 200);
    uint64_t w;
    loaded_segment(db->m, &w);
    shmkv__entry *e = SHMKV__P(db->m, SHMKV__SLOT_OFF(w));
    uint32_t klen = e->klen;
    e->klen = SHMKV_KEY_MAX + 1;
    expect_problem(db, "entry key length", "length out of range");
    e->klen = klen;
    /* a key byte: the key no longer hashes to its segment or tag, and the
     * index holds a key no table has */
    e->data[0] ^= 0x55;
    expect_problem(db, "entry key byte", "slot");
    e->data[0] ^= 0x55;
    t_check_sound(db, "entry restored");
    t_close(db);
}

/* An entry moved to the slot just before its home: a lookup starting at
 * the home never gets there. */
Test(check, damaged_reachability)
{
    shmkv_db *db = t_open(t_path("cr"), SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF);
    fill(db, 300);
    shmkv__map *m = db->m;
    for (uint32_t i = 0; i < SHMKV__HDR(m)->nseg; i++) {
        shmkv__seg *s = shmkv__seg_at(m, i);
        uint64_t toff = atomic_load(&s->table);
        if (!toff)
            continue;
        shmkv__table *t = SHMKV__P(m, toff);
        for (uint64_t j = 0; j < t->cap; j++) {
            uint64_t w = atomic_load(&t->slot[j]);
            if (!SHMKV__SLOT_LIVE(w))
                continue;
            shmkv__entry *e = SHMKV__P(m, SHMKV__SLOT_OFF(w));
            uint64_t before = (shmkv__hash(e->data, e->klen) - 1) & (t->cap - 1);
            if (atomic_load(&t->slot[before]) != SHMKV__SLOT_EMPTY)
                continue;
            atomic_store(&t->slot[before], w);
            atomic_store(&t->slot[j], SHMKV__SLOT_EMPTY);
            expect_problem(db, "entry before its home", "unreachable");
            atomic_store(&t->slot[j], w);
            atomic_store(&t->slot[before], SHMKV__SLOT_EMPTY);
            t_check_sound(db, "entry back home");
            t_close(db);
            return;
        }
    }
    cr_assert_fail("no entry with an empty slot before its home");
}

Test(check, damaged_index)
{
    shmkv_db *db = t_open(t_path("ci"), SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    fill(db, 500);
    shmkv__index *ix = shmkv__index_of(db->m);
    ix->n++;
    expect_problem(db, "index count", "index: counts");
    ix->n--;
    t_check_sound(db, "index count restored");
    /* the first leaf's first key swapped with its second: out of order */
    shmkv__bt_node *nd = SHMKV__P(db->m, ix->root);
    while (!nd->leaf)
        nd = SHMKV__P(db->m, nd->e[0].child);
    shmkv__bt_ent t = nd->e[0];
    nd->e[0] = nd->e[1];
    nd->e[1] = t;
    expect_problem(db, "index order", "index:");
    nd->e[1] = nd->e[0];
    nd->e[0] = t;
    t_check_sound(db, "index order restored");
    t_close(db);
}

Test(check, damaged_chunk)
{
    shmkv_db *db = t_open(t_path("ck"), SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF);
    fill(db, 100);
    shmkv__chunk *c = SHMKV__P(db->m, SHMKV__HDR(db->m)->data_off);
    c->magic ^= 1;
    expect_problem(db, "chunk magic", "bad magic");
    c->magic ^= 1;
    t_check_sound(db, "chunk restored");
    t_close(db);
}

/* Writers in other processes, and one killed mid-write: every check sees
 * a quiet moment (it holds every lock, and locking repairs what the dead
 * writer left), so the store is sound each time. */
Test(check, while_others_write)
{
    const char *p = t_path("cw");
    shmkv_db *db = t_open(p, SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    fill(db, 200);
    pid_t kids[2];
    for (int w = 0; w < 2; w++) {
        kids[w] = t_fork();
        if (kids[w] == 0) {
            shmkv_db *c = NULL;
            shmkv_options o = t_opts(SHMKV_BACKEND_DISK, SHMKV_TRACK_DEFAULT);
            CHILD_OK(shmkv_open(p, &o, &c));
            t_rng r = {(uint64_t)getpid() * 0x9e3779b97f4a7c15ull}; /* no cr_log in a child */
            char k[32], v[300];
            memset(v, 'v', sizeof v);
            for (;;) {
                snprintf(k, sizeof k, "w%d:%04" PRIu64, w, t_below(&r, 2000));
                size_t vl = (size_t)t_below(&r, sizeof v);
                if (t_below(&r, 3) == 0) {
                    int rc = shmkv_delete(c, k, strlen(k), NULL);
                    CHILD_CHECK(rc == 0, "delete -> %d", rc);
                } else {
                    CHILD_OK(shmkv_set(c, k, strlen(k), v, vl, SHMKV_KIND_BYTES));
                }
            }
        }
    }
    int rounds = (int)t_scaled(40, 8);
    for (int i = 0; i < rounds; i++) {
        usleep(20000);
        if (i == rounds / 2)
            t_kill(kids[0]); /* killed wherever it was */
        t_check_sound(db, i < rounds / 2 ? "two writers" : "one writer, one killed");
    }
    t_kill(kids[1]);
    t_check_sound(db, "writers gone");
    t_close(db);
}

/* The index's claim bookkeeping (format 3) on a store without claims:
 * each damage is found, and putting the bytes back makes it sound. */
Test(check, damaged_claim_counts)
{
    shmkv_db *db = t_open(t_path("cn"), SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    fill(db, 500);
    shmkv__index *ix = shmkv__index_of(db->m);
    shmkv__bt_node *root = SHMKV__P(db->m, ix->root);
    cr_assert_not(root->leaf, "500 keys fill more than one leaf");
    root->pad = 12345;
    expect_problem(db, "node pad", "earliest claim end 12345");
    root->pad = 0;
    root->e[0].count += SHMKV__BT_ONE_HELD;
    expect_problem(db, "claimed count", "claimed");
    root->e[0].count -= SHMKV__BT_ONE_HELD;
    t_check_sound(db, "counts restored");
    /* a leaf entry counted claimed with no claim end */
    shmkv__bt_node *path[40];
    int d = 0;
    path[0] = root;
    while (!path[d]->leaf) {
        path[d + 1] = SHMKV__P(db->m, path[d]->e[0].child);
        d++;
    }
    shmkv__bt_ent *le = &path[d]->e[0];
    le->count |= SHMKV__BT_ONE_HELD;
    expect_problem(db, "leaf count", "count or prefix word wrong");
    le->count = 1;
    /* a claim the index counts consistently (leaf, ancestors, pads) on a
     * key whose entry has no lease */
    le->child = 999;
    le->count = shmkv__bt_leaf_count(999);
    for (int k = 0; k <= d; k++) {
        path[k]->pad = 999;
        if (k < d)
            path[k]->e[0].count += SHMKV__BT_ONE_HELD;
    }
    expect_problem(db, "counted claim without a lease", "whose entry has no lease");
    le->child = 0;
    le->count = 1;
    for (int k = 0; k <= d; k++) {
        path[k]->pad = 0;
        if (k < d)
            path[k]->e[0].count -= SHMKV__BT_ONE_HELD;
    }
    t_check_sound(db, "claim removed");
    t_close(db);
}

/* A lease flag on an entry with no room for a lease, or zeros there. */
Test(check, damaged_lease_flag)
{
    shmkv_db *db = t_open(t_path("cf"), SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF);
    fill(db, 50);
    uint64_t w;
    loaded_segment(db->m, &w);
    shmkv__block *b = shmkv__block_of(db->m, SHMKV__SLOT_OFF(w));
    b->flags |= SHMKV__BF_LEASE;
    expect_problem(db, "lease flag", "lease");
    b->flags &= (uint8_t)~SHMKV__BF_LEASE;
    t_check_sound(db, "flag cleared");
    t_close(db);
}

/* ---- claims (format 3) ---- */

/* Claim key k for ten minutes, as "tester". */
static uint64_t claim_for_test(shmkv_db *db, const char *k)
{
    shmkv_lease l = {.owner = "tester", .olen = 6, .ttl_ms = 600000};
    shmkv_claim c;
    T_OK(shmkv_claim_key(db, k, strlen(k), &l, &c, NULL, 0, NULL, NULL));
    return c.token;
}

static uint64_t claim_of(shmkv_db *db, const char *k, uint64_t ttl_ms)
{
    shmkv_lease l = {.owner = "tester", .olen = 6, .ttl_ms = ttl_ms};
    shmkv_claim c;
    T_OK(shmkv_claim_key(db, k, strlen(k), &l, &c, NULL, 0, NULL, NULL));
    return c.token;
}

/* Claims of every kind leave a sound store, tracked or not. */
static void sound_claims(int track)
{
    shmkv_db *db = t_open(t_path(track == SHMKV_TRACK_ON ? "clt" : "clu"), SHMKV_BACKEND_DISK,
                          track);
    fill(db, 300);
    char k[32];
    uint64_t tok[100];
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof k, "key:%06d", i);
        tok[i] = claim_of(db, k, i % 10 == 0 ? 1 : 600000);
    }
    t_check_sound(db, "100 claims");
    usleep(20000); /* every tenth lease runs out */
    t_check_sound(db, "some leases ran out");
    for (int i = 0; i < 100; i += 3) {
        snprintf(k, sizeof k, "key:%06d", i);
        int rc = i % 2 ? shmkv_claim_release(db, k, strlen(k), tok[i])
                       : shmkv_claim_complete(db, k, strlen(k), tok[i], i % 4 == 0);
        cr_assert(rc == 0 || (i % 10 == 0 && rc == SHMKV_ESTALE), "%s: %d", k, rc);
    }
    t_check_sound(db, "released and completed");
    shmkv_lease ten = {.ttl_ms = 600000};
    shmkv_claim c;
    T_OK(shmkv_claim_renew(db, "key:000001", 10, tok[1], &ten, &c));
    t_check_sound(db, "renewed");
    /* expired claims taken over, random claims and pops */
    for (int i = 0; i < 50; i++) {
        char kb[64];
        size_t kl;
        shmkv_lease l = {.ttl_ms = 600000};
        int rc = shmkv_claim_random(db, "key:", 4, &l, kb, sizeof kb, &kl, &c, NULL, 0, NULL,
                                    NULL);
        cr_assert(rc == 0 || rc == SHMKV_ENOTFOUND, "claim_random: %d", rc);
        rc = shmkv_pop_random(db, "key:", 4, kb, sizeof kb, &kl, NULL, 0, NULL, NULL);
        cr_assert(rc == 0 || rc == SHMKV_ENOTFOUND, "pop_random: %d", rc);
    }
    t_check_sound(db, "random claims and pops");
    /* a set keeps the claim; a delete ends it */
    t_set(db, "key:000002", "new value");
    T_OK(shmkv_delete(db, "key:000005", 10, NULL));
    t_check_sound(db, "set and delete of claimed keys");
    t_close(db);
}

Test(check, sound_claims_tracked) { sound_claims(SHMKV_TRACK_ON); }
Test(check, sound_claims_untracked) { sound_claims(SHMKV_TRACK_OFF); }

/* The lease of key k's entry, and its block. */
static shmkv__lease *lease_of(shmkv_db *db, const char *k, shmkv__block **b)
{
    shmkv__seg *s = shmkv__seg_of(db->m, k, strlen(k));
    shmkv__lookup lk;
    shmkv__seg_find(db->m, s, shmkv__hash(k, strlen(k)), k, strlen(k), &lk);
    cr_assert(lk.found, "%s", k);
    *b = shmkv__block_of(db->m, lk.off);
    cr_assert((*b)->flags & SHMKV__BF_LEASE, "%s is claimed", k);
    shmkv__entry *e = SHMKV__P(db->m, lk.off);
    return SHMKV__P(db->m, lk.off + shmkv__lease_at(e->klen, e->vlen));
}

Test(check, damaged_leases)
{
    shmkv_db *db = t_open(t_path("cl"), SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    fill(db, 500);
    claim_for_test(db, "key:000000");
    t_check_sound(db, "a live claim");
    shmkv__block *b;
    shmkv__lease *l = lease_of(db, "key:000000", &b);
    shmkv__lease keep = *l;
    l->olen = SHMKV_OWNER_MAX + 1;
    expect_problem(db, "owner length", "lease owner longer");
    l->olen = SHMKV_OWNER_MAX;
    expect_problem(db, "owner past the block", "lease does not fit");
    *l = keep;
    l->token = atomic_load(&SHMKV__HDR(db->m)->claim_token) + 1;
    expect_problem(db, "token never issued", "lease token");
    l->token = 0;
    expect_problem(db, "token 0", "lease token");
    *l = keep;
    t_check_sound(db, "lease restored");
    /* the index counts a claim the entry does not have, or another end */
    b->flags &= (uint8_t)~SHMKV__BF_LEASE;
    expect_problem(db, "lease flag dropped", "whose entry has no lease");
    b->flags |= SHMKV__BF_LEASE;
    l->expiry -= 1000;
    expect_problem(db, "lease end moved", "whose lease ends at");
    l->expiry = atomic_load(&SHMKV__HDR(db->m)->lease_high) + 1;
    expect_problem(db, "lease end never granted", "lease ends after the latest end granted");
    *l = keep;
    t_check_sound(db, "lease restored again");
    t_close(db);
}

/* A live lease the index does not count, the index otherwise consistent
 * (leaf, claimed counts, pads). */
Test(check, uncounted_lease)
{
    shmkv_db *db = t_open(t_path("cu"), SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
    fill(db, 500);
    claim_for_test(db, "key:000000"); /* the smallest key: always e[0] */
    shmkv__index *ix = shmkv__index_of(db->m);
    shmkv__bt_node *path[40];
    int d = 0;
    path[0] = SHMKV__P(db->m, ix->root);
    while (!path[d]->leaf) {
        path[d + 1] = SHMKV__P(db->m, path[d]->e[0].child);
        d++;
    }
    shmkv__bt_ent saved = path[d]->e[0];
    cr_assert_neq(saved.child, 0, "the index counts the claim");
    uint64_t pads[40];
    for (int k = 0; k <= d; k++)
        pads[k] = path[k]->pad;
    path[d]->e[0].child = 0;
    path[d]->e[0].count = 1;
    for (int k = 0; k <= d; k++) {
        path[k]->pad = 0; /* the only claim */
        if (k < d)
            path[k]->e[0].count -= SHMKV__BT_ONE_HELD;
    }
    expect_problem(db, "uncounted live lease", "live claims of the tables");
    path[d]->e[0] = saved;
    for (int k = 0; k <= d; k++) {
        path[k]->pad = pads[k];
        if (k < d)
            path[k]->e[0].count += SHMKV__BT_ONE_HELD;
    }
    t_check_sound(db, "counted again");
    t_close(db);
}
