/*
 * index.c - the key index: a counted B+tree over copies of the keys, plus a
 * dense array of the same keys for O(1) uniform sampling.
 *
 * Everything lives in the region and is reached through offsets only. The
 * caller holds the index lock. Inserts and removes write in place, so each
 * records what it overwrites in the undo log first (shmkv__undo_save, shmkv__undo_node, and
 * the allocator through SHMKV__UNDO): a process killed in here is rolled
 * back by the next locker, in time proportional to what it touched. The
 * index lock, the update protocol around these, repair and the bulk paths
 * (rebuild, clear) are in index_repair.c.
 */
#include "index.h"

typedef struct {
    uint64_t node;
    uint32_t i;
} bt_step;

/* A key or prefix searched for, with its prefix word computed once; for a
 * prefix, mask keeps the bytes of a pfx word that the prefix covers. */
typedef struct {
    const unsigned char *k;
    size_t len;
    uint64_t pfx;
    uint64_t mask;
} probe;

/* True for a monotone run of entries at the start of every node: the keys
 * "below" the thing searched for. */
typedef bool (*below_fn)(shmkv__map *m, const shmkv__bt_ent *e, const void *arg);


static probe mkkey(const void *key, size_t klen)
{
    return (probe){ key, klen, shmkv__pfx(key, klen), ~0ull };
}

/* Sign of (entry key - s). The blob is only read when the prefix words tie. */
static int ent_cmp(shmkv__map *m, const shmkv__bt_ent *e, const probe *s)
{
    if (e->pfx != s->pfx)
        return e->pfx < s->pfx ? -1 : 1;
    const shmkv__kblob *kb = blob_at(m, e->key);
    return shmkv__keycmp(kb->key, kb->klen, s->k, s->len);
}

static bool below_lt(shmkv__map *m, const shmkv__bt_ent *e, const void *arg)
{
    return ent_cmp(m, e, arg) < 0;
}

static bool below_le(shmkv__map *m, const shmkv__bt_ent *e, const void *arg)
{
    return ent_cmp(m, e, arg) <= 0;
}

/* Keys before the end of the prefix's range: smaller than the prefix, or
 * starting with it. Counting these equals the rank of the prefix's
 * successor string without having to build it (and gives n when there is
 * none). For prefixes of at most 8 bytes the masked prefix words decide
 * alone: a key whose bytes run out inside the mask is a proper prefix of
 * the prefix, hence smaller. */
static bool below_pfx(shmkv__map *m, const shmkv__bt_ent *e, const void *arg)
{
    const probe *p = arg;
    uint64_t a = e->pfx & p->mask;
    if (a != p->pfx)
        return a < p->pfx;
    if (p->len <= 8)
        return true;
    const shmkv__kblob *kb = blob_at(m, e->key);
    if (kb->klen >= p->len && memcmp(kb->key, p->k, p->len) == 0)
        return true;
    return shmkv__keycmp(kb->key, kb->klen, p->k, p->len) < 0;
}

/* Number of leading entries of nd for which below holds (binary search:
 * keys with a long common prefix make each comparison read a blob). */
static uint32_t nbelow(shmkv__map *m, const shmkv__bt_node *nd, below_fn below,
                       const void *arg)
{
    uint32_t lo = 0, hi = nd->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (below(m, &nd->e[mid], arg))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}


static void ent_insert(shmkv__bt_node *nd, uint32_t at, const shmkv__bt_ent *e)
{
    memmove(&nd->e[at + 1], &nd->e[at], (nd->n - at) * sizeof(nd->e[0]));
    nd->e[at] = *e;
    nd->n++;
}

static void ent_delete(shmkv__bt_node *nd, uint32_t at)
{
    memmove(&nd->e[at], &nd->e[at + 1], (nd->n - at - 1) * sizeof(nd->e[0]));
    nd->n--;
}


/* Move the upper part of an overfull node into the fresh node at right:
 * half of it, or, when the entry that overfilled it went to its end (keys
 * inserted in order, the common way to fill a store), all but a few, so
 * that ordered inserts leave nodes nearly full instead of half empty. */
static void node_split(shmkv__map *m, shmkv__bt_node *nd, uint64_t right, uint32_t at)
{
    shmkv__bt_node *r = node_at(m, right);
    uint32_t keep = at + 1 == nd->n ? nd->n - 3 : nd->n / 2;
    node_init(m, right, nd->leaf);
    r->n = nd->n - keep;
    memcpy(r->e, &nd->e[keep], r->n * sizeof(nd->e[0]));
    nd->n = keep;
    nd->pad = node_min(m, nd);
    r->pad = node_min(m, r);
}

/* Descend a non-empty tree towards the end of the run of entries below,
 * recording at each level the entry taken (at the leaf: the number of
 * entries below) and counting the keys below into *rank. Returns the depth
 * of the leaf. */
static int descend(shmkv__map *m, below_fn below, const void *arg, bt_step *st,
                   uint64_t *rank)
{
    uint64_t off = shmkv__index_of(m)->root;
    *rank = 0; /* keys below | claimed keys below << 32, as the counts add */
    for (int d = 0; d < BT_DEPTH; d++) {
        const shmkv__bt_node *nd = node_at(m, off);
        uint32_t c = nbelow(m, nd, below, arg);
        st[d].node = off;
        if (nd->leaf) {
            st[d].i = c;
            for (uint32_t i = 0; i < c; i++)
                *rank += nd->e[i].count;
            return d;
        }
        st[d].i = c ? c - 1 : 0;
        for (uint32_t i = 0; i < st[d].i; i++)
            *rank += nd->e[i].count;
        off = nd->e[st[d].i].child;
    }
    return -1;
}

/* Keys below | claimed keys below << 32. */
static uint64_t count_below2(shmkv__map *m, below_fn below, const void *arg)
{
    bt_step st[BT_DEPTH];
    uint64_t r = 0;
    if (shmkv__index_of(m)->root)
        descend(m, below, arg, st, &r);
    return r;
}

static uint64_t count_below(shmkv__map *m, below_fn below, const void *arg)
{
    return SHMKV__BT_KEYS(count_below2(m, below, arg));
}

/* Unclaimed keys below. */
static uint64_t free_below(shmkv__map *m, below_fn below, const void *arg)
{
    uint64_t c = count_below2(m, below, arg);
    return SHMKV__BT_KEYS(c) - SHMKV__BT_HELD(c);
}

/* Descend to the key of rank r (< n) by counts. Returns the leaf's depth. */
static int descend_rank(shmkv__map *m, uint64_t r, bt_step *st)
{
    uint64_t off = shmkv__index_of(m)->root;
    for (int d = 0; d < BT_DEPTH; d++) {
        const shmkv__bt_node *nd = node_at(m, off);
        st[d].node = off;
        if (nd->leaf) {
            st[d].i = (uint32_t)r;
            return d;
        }
        uint32_t i = 0;
        while (i + 1 < nd->n && r >= SHMKV__BT_KEYS(nd->e[i].count))
            r -= SHMKV__BT_KEYS(nd->e[i++].count);
        st[d].i = i;
        off = nd->e[i].child;
    }
    return -1;
}

/* Find key's leaf entry: its depth (the path in st, the entry at
 * st[d].i - 1), SHMKV_ENOTFOUND, or SHMKV_ECORRUPT. */
static int find(shmkv__map *m, const probe *s, bt_step *st)
{
    uint64_t rank;
    if (!shmkv__index_of(m)->root)
        return SHMKV_ENOTFOUND;
    int d = descend(m, below_le, s, st, &rank);
    if (d < 0)
        return SHMKV_ECORRUPT;
    if (st[d].i == 0 || ent_cmp(m, &node_at(m, st[d].node)->e[st[d].i - 1], s) != 0)
        return SHMKV_ENOTFOUND;
    return d;
}

/* Make leaf entry pos (on path st, leaf at depth d) count as claimed
 * until exp (0: not claimed), and the counts and earliest expiries above
 * it agree. Logged field by field: a claim changes a few words per level. */
static void lease_apply(shmkv__map *m, bt_step *st, int d, uint32_t pos, uint64_t exp)
{
    shmkv__bt_node *leaf = node_at(m, st[d].node);
    shmkv__bt_ent *e = &leaf->e[pos];
    if (e->child == exp)
        return;
    bool was = e->child != 0, is = exp != 0;
    shmkv__undo_save(e, sizeof *e);
    e->child = exp;
    e->count = 1 | (is ? SHMKV__BT_ONE_HELD : 0);
    uint64_t old_min = leaf->pad;
    shmkv__undo_save(&leaf->pad, sizeof leaf->pad);
    leaf->pad = node_min(m, leaf);
    uint64_t new_min = leaf->pad;
    for (int l = d - 1; l >= 0; l--) {
        shmkv__bt_node *p = node_at(m, st[l].node);
        shmkv__bt_ent *pe = &p->e[st[l].i];
        if (was != is) {
            shmkv__undo_save(&pe->count, sizeof pe->count);
            pe->count = is ? pe->count + SHMKV__BT_ONE_HELD : pe->count - SHMKV__BT_ONE_HELD;
        }
        uint64_t pold = p->pad;
        if (old_min != new_min) {
            /* The child's earliest expiry moved: an earlier one lowers
             * ours; losing the one we had means looking at every child. */
            uint64_t np = pold;
            if (new_min && (!pold || new_min < pold))
                np = new_min;
            else if (old_min == pold)
                np = node_min(m, p);
            if (np != pold) {
                shmkv__undo_save(&p->pad, sizeof p->pad);
                p->pad = np;
            }
        }
        old_min = pold;
        new_min = p->pad;
    }
}

int shmkv__index_insert(shmkv__map *m, const void *key, size_t klen)
{
    shmkv__index *index = shmkv__index_of(m);
    shmkv__karr *ka = index->karr ? SHMKV__P(m, index->karr) : NULL;
    probe s = mkkey(key, klen);
    bt_step st[BT_DEPTH];
    uint64_t blob, newarr = 0, nodes[BT_DEPTH + 1], rank;
    int d = -1, need = 1, got = 0, rc;

    if (index->root) {
        if ((d = descend(m, below_lt, &s, st, &rank)) < 0)
            return SHMKV_ECORRUPT;
        /* A split climbs only through full nodes; past the root it needs a
         * new root too. */
        need = 0;
        for (int l = d; l >= 0 && node_at(m, st[l].node)->n == BT_MAX; l--)
            need++;
        if (need == d + 1)
            need++;
    }

    if (index->n >= UINT32_MAX)
        return SHMKV_ETOOMANY; /* kblob.pos is 32 bits */
    if ((rc = shmkv__alloc_block(m, &index->alloc, SHMKV__OWNER_INDEX,
                                 sizeof(shmkv__kblob) + klen, &blob)) < 0)
        return rc;
    uint64_t cap = ka ? ka->cap : 0;
    if (index->n == cap) {
        cap = cap ? cap * 2 : 16;
        rc = shmkv__alloc_block(m, &index->alloc, SHMKV__OWNER_INDEX,
                                sizeof(shmkv__karr) + cap * sizeof(uint64_t), &newarr);
        if (rc < 0)
            newarr = 0;
    }
    while (rc == 0 && got < need)
        if ((rc = node_alloc(m, index, &nodes[got])) == 0)
            got++;
    if (rc < 0) {
        while (got > 0)
            shmkv__free_block(m, &index->alloc, nodes[--got]);
        if (newarr)
            shmkv__free_block(m, &index->alloc, newarr);
        shmkv__free_block(m, &index->alloc, blob);
        return rc;
    }

    shmkv__kblob *kb = blob_at(m, blob);
    kb->klen = (uint32_t)klen;
    kb->pos = (uint32_t)index->n;
    memcpy(kb->key, key, klen);
    shmkv__bt_ent ent = { s.pfx, blob, 0, 1 };
    got = 0;

    if (!index->root) {
        node_init(m, nodes[got], true);
        ent_insert(node_at(m, nodes[got]), 0, &ent);
        index->root = nodes[got++];
    } else {
        shmkv__bt_node *leaf = node_at(m, st[d].node);
        uint64_t sib = 0;
        shmkv__undo_node(m, st[d].node);
        ent_insert(leaf, st[d].i, &ent);
        if (leaf->n > BT_MAX) {
            node_split(m, leaf, sib = nodes[got++], st[d].i);
            SHMKV__HOOK("index.insert.split");
        }
        for (int l = d - 1; l >= 0; l--) {
            shmkv__bt_node *p = node_at(m, st[l].node);
            shmkv__bt_ent *pe = &p->e[st[l].i];
            shmkv__undo_node(m, st[l].node);
            pe->count = sib ? node_sum(node_at(m, pe->child)) : pe->count + 1;
            ent_refresh(m, pe);
            if (sib) {
                shmkv__bt_ent se = ent_for(m, sib);
                ent_insert(p, st[l].i + 1, &se);
                sib = 0;
                if (p->n > BT_MAX)
                    node_split(m, p, sib = nodes[got++], st[l].i + 1);
            }
        }
        if (sib) {
            uint64_t nr = nodes[got++];
            shmkv__bt_ent a = ent_for(m, index->root), b = ent_for(m, sib);
            node_init(m, nr, false);
            ent_insert(node_at(m, nr), 0, &a);
            ent_insert(node_at(m, nr), 1, &b);
            node_at(m, nr)->pad = node_min(m, node_at(m, nr));
            index->root = nr;
            SHMKV__HOOK("index.insert.new_root");
        }
    }
    /* Counted exactly, but a miscount must not leak. */
    while (got < need)
        shmkv__free_block(m, &index->alloc, nodes[got++]);

    SHMKV__HOOK("index.insert.mid");

    if (newarr) {
        shmkv__karr *na = (shmkv__karr *)SHMKV__P(m, newarr);
        na->cap = cap;
        if (ka)
            memcpy(na->off, ka->off, index->n * sizeof(uint64_t));
        uint64_t old = index->karr;
        index->karr = newarr;
        SHMKV__HOOK("index.insert.karr_grown");
        if (old)
            shmkv__free_block(m, &index->alloc, old);
        ka = na;
    }
    shmkv__undo_save(&ka->off[index->n], 8);
    ka->off[index->n++] = blob;
    SHMKV__HOOK("index.insert.done");
    return 0;
}

/* Fold the right neighbour of entry j into entry j's child. */
static void node_merge(shmkv__map *m, shmkv__index *index, shmkv__bt_node *p, uint32_t j)
{
    shmkv__bt_node *l = node_at(m, p->e[j].child);
    uint64_t roff = p->e[j + 1].child;
    shmkv__bt_node *r = node_at(m, roff);
    memcpy(&l->e[l->n], r->e, r->n * sizeof(r->e[0]));
    l->n += r->n;
    l->pad = nzmin(l->pad, r->pad);
    p->e[j].count += p->e[j + 1].count;
    ent_delete(p, j + 1);
    shmkv__free_block(m, &index->alloc, roff);
}

int shmkv__index_remove(shmkv__map *m, const void *key, size_t klen)
{
    shmkv__index *index = shmkv__index_of(m);
    probe s = mkkey(key, klen);
    bt_step st[BT_DEPTH];
    int d = find(m, &s, st);
    if (d == SHMKV_ENOTFOUND)
        return 0;
    if (d < 0)
        return d;
    shmkv__bt_node *leaf = node_at(m, st[d].node);
    uint32_t pos = st[d].i - 1;
    uint64_t blob = leaf->e[pos].key;
    /* A claimed key stops being counted as one first, so that below only
     * unclaimed keys leave and the earliest expiries stay as they are. */
    lease_apply(m, st, d, pos, 0);
    shmkv__undo_node(m, st[d].node);
    ent_delete(leaf, pos);

    for (int l = d - 1; l >= 0; l--) {
        shmkv__bt_node *p = node_at(m, st[l].node);
        uint32_t i = st[l].i;
        shmkv__bt_node *c = node_at(m, p->e[i].child);
        shmkv__undo_node(m, st[l].node);
        if (c->n == 0) {
            shmkv__free_block(m, &index->alloc, p->e[i].child);
            ent_delete(p, i);
            continue;
        }
        p->e[i].count--;
        ent_refresh(m, &p->e[i]);
        if (c->n >= BT_MIN)
            continue;
        if (i > 0 && node_at(m, p->e[i - 1].child)->n + c->n <= BT_MAX) {
            shmkv__undo_node(m, p->e[i - 1].child);
            node_merge(m, index, p, i - 1);
            SHMKV__HOOK("index.remove.merge");
        } else if (i + 1 < p->n && node_at(m, p->e[i + 1].child)->n + c->n <= BT_MAX) {
            node_merge(m, index, p, i);
            SHMKV__HOOK("index.remove.merge");
        }
    }
    shmkv__bt_node *r = node_at(m, index->root);
    if (r->n == 0) {
        shmkv__free_block(m, &index->alloc, index->root);
        index->root = 0;
    } else {
        while (!r->leaf && r->n == 1) {
            uint64_t old = index->root;
            index->root = r->e[0].child;
            shmkv__free_block(m, &index->alloc, old);
            r = node_at(m, index->root);
        }
    }

    SHMKV__HOOK("index.remove.mid");

    shmkv__karr *ka = SHMKV__P(m, index->karr);
    uint32_t at = blob_at(m, blob)->pos;
    uint64_t last = ka->off[--index->n];
    shmkv__undo_save(&ka->off[at], 8);
    ka->off[at] = last;
    shmkv__undo_save(&blob_at(m, last)->pos, sizeof(uint32_t));
    blob_at(m, last)->pos = at;
    shmkv__free_block(m, &index->alloc, blob);
    SHMKV__HOOK("index.remove.done");
    return 0;
}

uint64_t shmkv__index_rank(shmkv__map *m, const void *key, size_t klen)
{
    probe s = mkkey(key, klen);
    return count_below(m, below_lt, &s);
}

uint64_t shmkv__index_rank_after(shmkv__map *m, const void *key, size_t klen)
{
    probe s = mkkey(key, klen);
    return count_below(m, below_le, &s);
}

bool shmkv__index_has(shmkv__map *m, const void *key, size_t klen)
{
    bt_step st[BT_DEPTH];
    probe s = mkkey(key, klen);
    return find(m, &s, st) >= 0;
}

uint64_t shmkv__index_select(shmkv__map *m, uint64_t r)
{
    bt_step st[BT_DEPTH];
    if (r >= shmkv__index_of(m)->n)
        return 0;
    int d = descend_rank(m, r, st);
    if (d < 0)
        return 0;
    return node_at(m, st[d].node)->e[st[d].i].key;
}

uint64_t shmkv__index_prefix_end(shmkv__map *m, const void *prefix, size_t plen)
{
    if (plen == 0)
        return shmkv__index_of(m)->n;
    probe p = mkkey(prefix, plen); /* zero padding already fits the mask */
    if (plen < 8)
        p.mask <<= 64 - 8 * plen;
    return count_below(m, below_pfx, &p);
}

int shmkv__index_walk(shmkv__map *m, uint64_t from, const void *prefix, size_t plen,
                    uint64_t limit, shmkv__index_visit_fn fn, void *ctx)
{
    bt_step st[BT_DEPTH];
    uint64_t seen = 0;
    if (from >= shmkv__index_of(m)->n)
        return 0;
    int d = descend_rank(m, from, st);
    if (d < 0)
        return SHMKV_ECORRUPT;
    for (;;) {
        const shmkv__bt_node *leaf = node_at(m, st[d].node);
        const shmkv__kblob *kb = blob_at(m, leaf->e[st[d].i].key);
        if (plen && (kb->klen < plen || memcmp(kb->key, prefix, plen) != 0))
            return 0;
        int rc = fn(ctx, kb);
        if (rc)
            return rc;
        if (limit && ++seen == limit)
            return 0;
        if (++st[d].i < leaf->n)
            continue;
        /* Leaf done: climb to the first ancestor with a next child, then
         * take the leftmost path below it. All leaves sit at depth d. */
        int l = d - 1;
        while (l >= 0 && ++st[l].i >= node_at(m, st[l].node)->n)
            l--;
        if (l < 0)
            return 0;
        for (l++; l <= d; l++) {
            st[l].node = node_at(m, st[l - 1].node)->e[st[l - 1].i].child;
            st[l].i = 0;
        }
    }
}

/* ---- claims: the claimed counts and the earliest expiries ------------------------------ */

int shmkv__index_lease_set(shmkv__map *m, const void *key, size_t klen, uint64_t expiry)
{
    bt_step st[BT_DEPTH];
    probe s = mkkey(key, klen);
    int d = find(m, &s, st);
    if (d < 0)
        return d;
    lease_apply(m, st, d, st[d].i - 1, expiry);
    return 0;
}

uint64_t shmkv__index_lease_of(shmkv__map *m, const void *key, size_t klen)
{
    bt_step st[BT_DEPTH];
    probe s = mkkey(key, klen);
    int d = find(m, &s, st);
    return d < 0 ? 0 : node_at(m, st[d].node)->e[st[d].i - 1].child;
}

uint64_t shmkv__index_free_range(shmkv__map *m, const void *prefix, size_t plen, uint64_t *lo)
{
    shmkv__index *ix = shmkv__index_of(m);
    if (!ix->root) {
        *lo = 0;
        return 0;
    }
    if (plen == 0) {
        uint64_t c = node_sum(node_at(m, ix->root));
        *lo = 0;
        return SHMKV__BT_KEYS(c) - SHMKV__BT_HELD(c);
    }
    probe s = mkkey(prefix, plen), p = s;
    if (plen < 8)
        p.mask <<= 64 - 8 * plen;
    *lo = free_below(m, below_lt, &s);
    return free_below(m, below_pfx, &p) - *lo;
}

uint64_t shmkv__index_free_select(shmkv__map *m, uint64_t r)
{
    uint64_t off = shmkv__index_of(m)->root;
    for (int d = 0; off && d < BT_DEPTH; d++) {
        const shmkv__bt_node *nd = node_at(m, off);
        if (nd->leaf) {
            for (uint32_t i = 0; i < nd->n; i++)
                if (!nd->e[i].child && r-- == 0)
                    return nd->e[i].key;
            return 0;
        }
        uint32_t i = 0;
        for (; i < nd->n; i++) {
            uint64_t c = nd->e[i].count, f = SHMKV__BT_KEYS(c) - SHMKV__BT_HELD(c);
            if (r < f)
                break;
            r -= f;
        }
        if (i == nd->n)
            return 0;
        off = nd->e[i].child;
    }
    return 0;
}

uint64_t shmkv__index_expired(shmkv__map *m, uint64_t now)
{
    uint64_t off = shmkv__index_of(m)->root;
    if (!off || !node_at(m, off)->pad || node_at(m, off)->pad > now)
        return 0;
    /* Follow the earliest expiry down: each node's pad is its children's
     * least, so some child holds the same value. */
    for (int d = 0; d < BT_DEPTH; d++) {
        const shmkv__bt_node *nd = node_at(m, off);
        uint32_t i = 0;
        while (i < nd->n && (nd->leaf ? nd->e[i].child : node_at(m, nd->e[i].child)->pad) != nd->pad)
            i++;
        if (i == nd->n)
            return 0; /* pads disagree: shmkv_check reports it */
        if (nd->leaf)
            return nd->e[i].key;
        off = nd->e[i].child;
    }
    return 0;
}
