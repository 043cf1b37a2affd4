/*
 * index.c - the key index: a counted B+tree over copies of the keys, plus a
 * dense array of the same keys for O(1) uniform sampling.
 *
 * Everything lives in the region and is reached through offsets only. The
 * caller holds the index lock. Inserts and removes write in place, so each
 * records what it overwrites in the undo log first (ul_save, ul_node, and
 * the allocator through SHMKV__UNDO): a process killed in here is rolled
 * back by the next locker, in time proportional to what it touched. The
 * bulk paths (rebuild, clear) are not logged: they mark the index dirty or
 * use the clear generation, and a dead holder there costs a rebuild.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

#define BT_MAX   (SHMKV__BT_SLOTS - 1) /* entries a node keeps at rest */
#define BT_MIN   8u                    /* below this a node tries to merge */
#define BT_FILL  24u                   /* entries per node in a bulk load */
/* Height only grows when the root splits, which takes ~15^h inserts, so 32
 * levels cannot be reached; the bound just sizes the path stacks. */
#define BT_DEPTH 32

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

static inline shmkv__bt_node *node_at(shmkv__map *m, uint64_t off)
{
    return (shmkv__bt_node *)SHMKV__P(m, off);
}

static inline shmkv__kblob *blob_at(shmkv__map *m, uint64_t off)
{
    return (shmkv__kblob *)SHMKV__P(m, off);
}

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

static uint64_t node_sum(const shmkv__bt_node *nd)
{
    if (nd->leaf)
        return nd->n;
    uint64_t s = 0;
    for (uint32_t i = 0; i < nd->n; i++)
        s += nd->e[i].count;
    return s;
}

/* Make the parent's entry for a child describe it again. */
static void ent_refresh(shmkv__map *m, shmkv__bt_ent *pe)
{
    const shmkv__bt_node *c = node_at(m, pe->child);
    pe->pfx = c->e[0].pfx;
    pe->key = c->e[0].key;
}

static shmkv__bt_ent ent_for(shmkv__map *m, uint64_t child)
{
    shmkv__bt_ent e = { 0, 0, child, node_sum(node_at(m, child)) };
    ent_refresh(m, &e);
    return e;
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

static int node_alloc(shmkv__map *m, shmkv__index *index, uint64_t *off)
{
    return shmkv__alloc_block(m, &index->alloc, SHMKV__OWNER_INDEX,
                              sizeof(shmkv__bt_node), off);
}

static void node_init(shmkv__map *m, uint64_t off, bool leaf)
{
    shmkv__bt_node *nd = node_at(m, off);
    nd->leaf = leaf;
    nd->n = 0;
    nd->pad = 0;
}

/* Move the upper half of an overfull node into the fresh node at right. */
static void node_split(shmkv__map *m, shmkv__bt_node *nd, uint64_t right)
{
    shmkv__bt_node *r = node_at(m, right);
    uint32_t keep = nd->n / 2;
    node_init(m, right, nd->leaf);
    r->n = nd->n - keep;
    memcpy(r->e, &nd->e[keep], r->n * sizeof(nd->e[0]));
    nd->n = keep;
}

/* Descend a non-empty tree towards the end of the run of entries below,
 * recording at each level the entry taken (at the leaf: the number of
 * entries below) and counting the keys below into *rank. Returns the depth
 * of the leaf. */
static int descend(shmkv__map *m, below_fn below, const void *arg, bt_step *st,
                   uint64_t *rank)
{
    uint64_t off = shmkv__index_of(m)->root;
    *rank = 0;
    for (int d = 0; d < BT_DEPTH; d++) {
        const shmkv__bt_node *nd = node_at(m, off);
        uint32_t c = nbelow(m, nd, below, arg);
        st[d].node = off;
        if (nd->leaf) {
            st[d].i = c;
            *rank += c;
            return d;
        }
        st[d].i = c ? c - 1 : 0;
        for (uint32_t i = 0; i < st[d].i; i++)
            *rank += nd->e[i].count;
        off = nd->e[st[d].i].child;
    }
    return -1;
}

static uint64_t count_below(shmkv__map *m, below_fn below, const void *arg)
{
    bt_step st[BT_DEPTH];
    uint64_t r = 0;
    if (shmkv__index_of(m)->root)
        descend(m, below, arg, st, &r);
    return r;
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
        while (i + 1 < nd->n && r >= nd->e[i].count)
            r -= nd->e[i++].count;
        st[d].i = i;
        off = nd->e[i].child;
    }
    return -1;
}

/* ---- undo log ------------------------------------------------------------ */

_Thread_local bool shmkv__undo_on;

/* The update this thread has in progress (one at a time: the index lock
 * is held across it). saved[] keeps nodes already recorded whole. */
static _Thread_local struct {
    shmkv__map *m;
    shmkv__ulog *lg;
    uint64_t cap;
    uint64_t saved[48];
    int nsaved;
} U;

static shmkv__ulog *ulog_of(shmkv__map *m)
{
    uint64_t off = shmkv__index_of(m)->ulog;
    return off ? (shmkv__ulog *)SHMKV__P(m, off) : NULL;
}

static uint64_t ulog_cap(shmkv__map *m, const shmkv__ulog *lg)
{
    const shmkv__block *b = shmkv__block_of(m, (uint64_t)((const unsigned char *)lg - m->base));
    return b->size - SHMKV__BLOCK_HDR - offsetof(shmkv__ulog, rec);
}

/* Append the current bytes of [p, p+len) as a record, then publish it:
 * the write it protects comes after, so a record the repair sees always
 * holds bytes from before the write. */
static void ul_save(const void *p, size_t len)
{
    shmkv__ulog *lg = U.lg;
    if (!U.m || lg->overflow)
        return;
    uint64_t used = atomic_load_explicit(&lg->used, memory_order_relaxed);
    uint64_t need = 16 + ((len + 7) & ~(size_t)7);
    if (need > U.cap - used) {
        /* Cannot record: the repair must not trust the log. */
        lg->overflow = 1;
        atomic_signal_fence(memory_order_seq_cst);
        return;
    }
    unsigned char *r = lg->rec + used;
    uint64_t off = (uint64_t)((const unsigned char *)p - U.m->base), l = len;
    memcpy(r, &off, 8);
    memcpy(r + 8, &l, 8);
    memcpy(r + 16, p, len);
    atomic_store_explicit(&lg->used, used + need, memory_order_release);
    atomic_signal_fence(memory_order_seq_cst);
}

/* Record a whole tree node before its first change in this update. */
static void ul_node(shmkv__map *m, uint64_t off)
{
    if (!U.m)
        return;
    for (int i = 0; i < U.nsaved; i++)
        if (U.saved[i] == off)
            return;
    if (U.nsaved < (int)(sizeof U.saved / sizeof U.saved[0]))
        U.saved[U.nsaved++] = off;
    ul_save(SHMKV__P(m, off), sizeof(shmkv__bt_node));
}

void shmkv__undo_note(shmkv__map *m, const shmkv__alloc *a, const void *p, size_t len)
{
    if (U.m == m && a == &shmkv__index_of(m)->alloc)
        ul_save(p, len);
}

void shmkv__undo_chunk(shmkv__map *m, uint64_t chunk_off)
{
    if (U.m == m)
        ul_save(SHMKV__P(m, chunk_off), 0); /* a record of no bytes: a chunk */
}

void shmkv__index_begin(shmkv__map *m, uint32_t seg, const void *key, size_t klen)
{
    shmkv__ulog *lg = ulog_of(m);
    if (!lg)
        return;
    lg->seg = seg;
    lg->klen = (uint32_t)klen;
    if (key != lg->key)
        memcpy(lg->key, key, klen);
    lg->top0 = atomic_load_explicit(&SHMKV__HDR(m)->top, memory_order_acquire);
    lg->overflow = 0;
    atomic_store_explicit(&lg->used, 0, memory_order_relaxed);
    /* Everything above is in place before the log claims an update. */
    atomic_store_explicit(&lg->state, SHMKV__ULOG_ACTIVE, memory_order_release);
    atomic_signal_fence(memory_order_seq_cst);
    U.m = m;
    U.lg = lg;
    U.cap = ulog_cap(m, lg);
    U.nsaved = 0;
    shmkv__undo_on = true;
    /* root, karr, n, dirty and the allocator state, in one record */
    shmkv__index *index = shmkv__index_of(m);
    ul_save(&index->root, offsetof(shmkv__index, gen) - offsetof(shmkv__index, root));
}

void shmkv__index_commit(shmkv__map *m)
{
    if (U.m != m)
        return;
    shmkv__ulog *lg = U.lg;
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&lg->state, SHMKV__ULOG_IDLE, memory_order_release);
    U.m = NULL;
    U.lg = NULL;
    shmkv__undo_on = false;
    /* Frees during the update kept their chunks (the log could not have
     * taken a give-back to the shared pool back). Give them back now, as a
     * step of its own: a holder killed in it leaves the log at TIDY, and
     * the repair rebuilds the index (and so its allocator) from scratch. */
    shmkv__index *ix = shmkv__index_of(m);
    bool empty = ix->n == 0 && ix->karr;
    if (!empty && !shmkv__alloc_wants_tidy(m, &ix->alloc))
        return;
    atomic_store_explicit(&lg->state, SHMKV__ULOG_TIDY, memory_order_release);
    atomic_signal_fence(memory_order_seq_cst);
    SHMKV__HOOK("index.tidy.begin");
    if (empty) {
        /* An empty index holds no key array; the next insert makes one. */
        uint64_t old = ix->karr;
        ix->karr = 0;
        shmkv__free_block(m, &ix->alloc, old);
    } else {
        shmkv__alloc_tidy(m, &ix->alloc);
    }
    SHMKV__HOOK("index.tidy");
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&lg->state, SHMKV__ULOG_IDLE, memory_order_release);
}

/* Write the records back, newest first; then give chunks the update grew
 * back to the allocator (its state is the one from before they existed).
 * False when the log cannot be trusted. */
static bool ul_rollback(shmkv__map *m, shmkv__ulog *lg)
{
    uint64_t top = atomic_load_explicit(&SHMKV__HDR(m)->top, memory_order_acquire);
    uint64_t used = atomic_load_explicit(&lg->used, memory_order_acquire);
    uint64_t cap = ulog_cap(m, lg), data_off = SHMKV__HDR(m)->data_off;
    if (lg->overflow || used > cap || lg->top0 > top || lg->top0 < data_off)
        return false;
    uint32_t pos[SHMKV__ULOG_BYTES / 16];
    size_t n = 0;
    for (uint64_t at = 0; at < used;) {
        uint64_t off, len;
        memcpy(&off, lg->rec + at, 8);
        memcpy(&len, lg->rec + at + 8, 8);
        uint64_t sz = 16 + ((len + 7) & ~(uint64_t)7);
        /* The index struct sits below data_off; everything else in it. */
        if (sz > used - at || off + len > top || off + len < off ||
            n == sizeof pos / sizeof pos[0])
            return false;
        pos[n++] = (uint32_t)at;
        at += sz;
    }
    size_t all = n;
    while (n--) {
        uint64_t off, len;
        memcpy(&off, lg->rec + pos[n], 8);
        memcpy(&len, lg->rec + pos[n] + 8, 8);
        memcpy(SHMKV__P(m, off), lg->rec + pos[n] + 16, len);
    }
    shmkv__index *index = shmkv__index_of(m);
    /* Chunks the update took from the free pool (records of no bytes): its
     * allocator, now as before, does not know them. */
    for (size_t i = 0; i < all; i++) {
        uint64_t off, len;
        memcpy(&off, lg->rec + pos[i], 8);
        memcpy(&len, lg->rec + pos[i] + 8, 8);
        if (len || off >= lg->top0)
            continue; /* bytes, or a chunk that the walk below finds */
        shmkv__chunk *c = (shmkv__chunk *)SHMKV__P(m, off);
        if (off < data_off || shmkv__chunk_check(c, off, top))
            return false;
        if (c->owner == SHMKV__OWNER_INDEX)
            shmkv__alloc_adopt(m, &index->alloc, off);
    }
    for (uint64_t off = lg->top0; off < top;) {
        shmkv__chunk *c = (shmkv__chunk *)SHMKV__P(m, off);
        if (shmkv__chunk_check(c, off, top))
            return false;
        if (c->owner == SHMKV__OWNER_INDEX)
            shmkv__alloc_adopt(m, &index->alloc, off);
        off += c->size;
    }
    return true;
}

void shmkv__index_repair(shmkv__map *m)
{
    shmkv__index *index = shmkv__index_of(m);
    shmkv__ulog *lg = ulog_of(m);
    uint64_t gen = atomic_load(&SHMKV__HDR(m)->clear_gen);
    U.m = NULL;
    shmkv__undo_on = false;
    if (index->gen != gen) {
        /* A clear() decided, then died before emptying the index. */
        shmkv__index_clear(m, gen);
        return;
    }
    if (atomic_load(&index->dirty) || !lg)
        goto rebuild;
    switch (atomic_load(&lg->state)) {
    case SHMKV__ULOG_IDLE:      /* died holding the lock, between updates */
    case SHMKV__ULOG_RECONCILE: /* already rolled back; settle finishes */
        return;
    case SHMKV__ULOG_ACTIVE:
        if (!ul_rollback(m, lg))
            goto rebuild;
        SHMKV__HOOK("index.rolled_back");
        atomic_store(&lg->state, SHMKV__ULOG_RECONCILE);
        return;
    default:
        goto rebuild;
    }
rebuild:
    atomic_store(&index->dirty, 1);
}

/* A fresh, idle log (the index lock held, no update running). Its own
 * allocation is not logged: the index stays marked dirty until the log is
 * published, so a process killed here costs a rebuild, nothing worse. */
static void ul_create(shmkv__map *m)
{
    /* After a failure, try again only once the region has grown, not on
     * every update of a store on a full disk. */
    static _Atomic uint64_t failed_at_top;
    shmkv__index *index = shmkv__index_of(m);
    uint64_t off, top = atomic_load(&SHMKV__HDR(m)->top);
    index->ulog = 0;
    if (atomic_load(&failed_at_top) == top)
        return;
    if (shmkv__alloc_block(m, &index->alloc, SHMKV__OWNER_INDEX,
                           SHMKV__ULOG_BYTES - SHMKV__BLOCK_HDR, &off) != 0) {
        atomic_store(&failed_at_top, top);
        return; /* no space: updates run unlogged, as before the log existed */
    }
    shmkv__ulog *lg = (shmkv__ulog *)SHMKV__P(m, off);
    memset(lg, 0, offsetof(shmkv__ulog, key));
    index->ulog = off;
}

static bool index_has(shmkv__map *m, const void *key, size_t klen);

/* The update of the key in lg was rolled back; the key's slot may or may
 * not have been published before its writer died. Make the index agree
 * with the table for that key alone. Caller holds s (the key's segment)
 * and the index lock. */
static int reconcile(shmkv__map *m, shmkv__seg *s, shmkv__ulog *lg)
{
    bool in_table = shmkv__seg_has(m, s, lg->key, lg->klen);
    bool in_index = index_has(m, lg->key, lg->klen);
    if (in_table == in_index) {
        atomic_store(&lg->state, SHMKV__ULOG_IDLE);
        return 0;
    }
    shmkv__index_begin(m, s->id, lg->key, lg->klen);
    SHMKV__HOOK("index.reconcile");
    int rc = in_table ? shmkv__index_insert(m, lg->key, lg->klen)
                      : shmkv__index_remove(m, lg->key, lg->klen);
    shmkv__index_commit(m);
    if (rc)
        atomic_store(&shmkv__index_of(m)->dirty, 1); /* e.g. no space: rebuild later */
    return 0;
}

int shmkv__index_settle(shmkv__map *m, shmkv__seg *held)
{
    shmkv__index *index = shmkv__index_of(m);
    shmkv__ulog *lg = ulog_of(m);
    if (!lg) {
        /* An old store, or no space earlier: try to start logging. */
        atomic_store(&index->dirty, 1);
        ul_create(m);
        atomic_store(&index->dirty, 0);
        return 0;
    }
    if (atomic_load(&lg->state) != SHMKV__ULOG_RECONCILE)
        return 0;
    shmkv__seg *s = shmkv__seg_at(m, lg->seg);
    if (held == s) {
        reconcile(m, s, lg);
        return 0;
    }
    /* The key's segment lock comes before the index lock: let go, take
     * both in order, and have the caller start over. */
    shmkv__index_unlock(m);
    if (held)
        shmkv__seg_unlock(held);
    int rc = shmkv__seg_lock(m, s);
    if (rc)
        return rc;
    rc = shmkv__index_lock_raw(m);
    if (rc) {
        shmkv__seg_unlock(s);
        return rc;
    }
    lg = ulog_of(m);
    if (!atomic_load(&index->dirty) && lg && atomic_load(&lg->state) == SHMKV__ULOG_RECONCILE &&
        shmkv__seg_at(m, lg->seg) == s)
        reconcile(m, s, lg);
    shmkv__index_unlock(m);
    shmkv__seg_unlock(s);
    return SHMKV__RESTART;
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
        ul_node(m, st[d].node);
        ent_insert(leaf, st[d].i, &ent);
        if (leaf->n > BT_MAX) {
            node_split(m, leaf, sib = nodes[got++]);
            SHMKV__HOOK("index.insert.split");
        }
        for (int l = d - 1; l >= 0; l--) {
            shmkv__bt_node *p = node_at(m, st[l].node);
            shmkv__bt_ent *pe = &p->e[st[l].i];
            ul_node(m, st[l].node);
            pe->count = sib ? node_sum(node_at(m, pe->child)) : pe->count + 1;
            ent_refresh(m, pe);
            if (sib) {
                shmkv__bt_ent se = ent_for(m, sib);
                ent_insert(p, st[l].i + 1, &se);
                sib = 0;
                if (p->n > BT_MAX)
                    node_split(m, p, sib = nodes[got++]);
            }
        }
        if (sib) {
            uint64_t nr = nodes[got++];
            shmkv__bt_ent a = ent_for(m, index->root), b = ent_for(m, sib);
            node_init(m, nr, false);
            ent_insert(node_at(m, nr), 0, &a);
            ent_insert(node_at(m, nr), 1, &b);
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
    ul_save(&ka->off[index->n], 8);
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
    p->e[j].count += p->e[j + 1].count;
    ent_delete(p, j + 1);
    shmkv__free_block(m, &index->alloc, roff);
}

int shmkv__index_remove(shmkv__map *m, const void *key, size_t klen)
{
    shmkv__index *index = shmkv__index_of(m);
    probe s = mkkey(key, klen);
    bt_step st[BT_DEPTH];
    uint64_t rank;
    int d;

    if (!index->root)
        return 0;
    if ((d = descend(m, below_le, &s, st, &rank)) < 0)
        return SHMKV_ECORRUPT;
    shmkv__bt_node *leaf = node_at(m, st[d].node);
    if (st[d].i == 0 || ent_cmp(m, &leaf->e[st[d].i - 1], &s) != 0)
        return 0;
    uint32_t pos = st[d].i - 1;
    uint64_t blob = leaf->e[pos].key;
    ul_node(m, st[d].node);
    ent_delete(leaf, pos);

    for (int l = d - 1; l >= 0; l--) {
        shmkv__bt_node *p = node_at(m, st[l].node);
        uint32_t i = st[l].i;
        shmkv__bt_node *c = node_at(m, p->e[i].child);
        ul_node(m, st[l].node);
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
            ul_node(m, p->e[i - 1].child);
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
    ul_save(&ka->off[at], 8);
    ka->off[at] = last;
    ul_save(&blob_at(m, last)->pos, sizeof(uint32_t));
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

static bool index_has(shmkv__map *m, const void *key, size_t klen)
{
    bt_step st[BT_DEPTH];
    probe s = mkkey(key, klen);
    uint64_t rank;
    if (!shmkv__index_of(m)->root)
        return false;
    int d = descend(m, below_le, &s, st, &rank);
    if (d < 0 || st[d].i == 0)
        return false;
    return ent_cmp(m, &node_at(m, st[d].node)->e[st[d].i - 1], &s) == 0;
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

void shmkv__index_clear(shmkv__map *m, uint64_t gen)
{
    shmkv__index *index = shmkv__index_of(m);
    index->root = index->karr = index->n = 0;
    shmkv__alloc_reset(m, &index->alloc, SHMKV__OWNER_INDEX);
    ul_create(m); /* the reset forgot the old log's block */
    atomic_store(&index->dirty, 0);
    index->gen = gen;
}

static int blob_qcmp(const void *a, const void *b, void *arg)
{
    shmkv__map *m = arg;
    const shmkv__kblob *x = blob_at(m, *(const uint64_t *)a);
    const shmkv__kblob *y = blob_at(m, *(const uint64_t *)b);
    return shmkv__keycmp(x->key, x->klen, y->key, y->klen);
}

/* Build one tree level over items[0..n): blob offsets for the leaves, node
 * offsets above. The new nodes' offsets overwrite items from the front,
 * which is safe because node j reads only items at or past j. Entries are
 * spread evenly so that no node of a level is left nearly empty. */
static int build_level(shmkv__map *m, shmkv__index *index, uint64_t *items, uint64_t n,
                       bool leaf, uint64_t *nout)
{
    uint64_t groups = (n + BT_FILL - 1) / BT_FILL;
    for (uint64_t g = 0; g < groups; g++) {
        uint64_t a = n * g / groups, b = n * (g + 1) / groups, off;
        int rc = node_alloc(m, index, &off);
        if (rc < 0)
            return rc;
        node_init(m, off, leaf);
        shmkv__bt_node *nd = node_at(m, off);
        for (uint64_t i = a; i < b; i++) {
            shmkv__bt_ent *e = &nd->e[nd->n++];
            if (leaf) {
                const shmkv__kblob *kb = blob_at(m, items[i]);
                *e = (shmkv__bt_ent){ shmkv__pfx(kb->key, kb->klen), items[i], 0, 1 };
            } else {
                *e = ent_for(m, items[i]);
            }
        }
        items[g] = off;
    }
    *nout = groups;
    return 0;
}

int shmkv__index_rebuild(shmkv__map *m)
{
    shmkv__hdr *h = SHMKV__HDR(m);
    shmkv__index *index = shmkv__index_of(m);
    uint64_t n = 0, k = 0, *items = NULL;
    int rc = 0;

    /* Until the end, a failure or a crash must leave the index marked. */
    atomic_store(&index->dirty, 1);
    shmkv__alloc_reset(m, &index->alloc, SHMKV__OWNER_INDEX);
    index->root = index->karr = index->n = 0;
    index->ulog = 0; /* its block was just forgotten */

    for (uint32_t i = 0; i < h->nseg; i++) {
        uint64_t t = atomic_load(&shmkv__seg_at(m, i)->table);
        if (!t)
            continue;
        shmkv__table *tb = SHMKV__P(m, t);
        for (uint64_t j = 0; j < tb->cap; j++)
            n += SHMKV__SLOT_LIVE(atomic_load(&tb->slot[j]));
    }
    if (n == 0)
        goto done;
    if (n > UINT32_MAX)
        return SHMKV_ETOOMANY; /* kblob.pos is 32 bits */
    if (!(items = malloc(n * sizeof(*items))))
        return -ENOMEM;

    for (uint32_t i = 0; i < h->nseg && k < n; i++) {
        uint64_t t = atomic_load(&shmkv__seg_at(m, i)->table);
        if (!t)
            continue;
        shmkv__table *tb = SHMKV__P(m, t);
        for (uint64_t j = 0; j < tb->cap && k < n; j++) {
            uint64_t w = atomic_load(&tb->slot[j]);
            if (!SHMKV__SLOT_LIVE(w))
                continue;
            const shmkv__entry *en = SHMKV__P(m, SHMKV__SLOT_OFF(w));
            /* Also run on stores found unclean: a bad slot must not crash. */
            if (!shmkv__in_region(m, SHMKV__SLOT_OFF(w), sizeof(*en)) || en->klen == 0 ||
                en->klen > SHMKV_KEY_MAX) {
                rc = SHMKV_ECORRUPT;
                goto out;
            }
            if ((rc = shmkv__alloc_block(m, &index->alloc, SHMKV__OWNER_INDEX,
                                         sizeof(shmkv__kblob) + en->klen, &items[k])) < 0)
                goto out;
            shmkv__kblob *kb = blob_at(m, items[k]);
            kb->klen = en->klen;
            memcpy(kb->key, en->data, en->klen);
            k++;
        }
    }
    n = k;
    qsort_r(items, n, sizeof(*items), blob_qcmp, m);

    uint64_t cap = 16, arr;
    while (cap < n)
        cap *= 2;
    if ((rc = shmkv__alloc_block(m, &index->alloc, SHMKV__OWNER_INDEX,
                                 sizeof(shmkv__karr) + cap * sizeof(uint64_t), &arr)) < 0)
        goto out;
    shmkv__karr *ka = (shmkv__karr *)SHMKV__P(m, arr);
    ka->cap = cap;
    for (uint64_t i = 0; i < n; i++) {
        ka->off[i] = items[i];
        blob_at(m, items[i])->pos = (uint32_t)i;
    }

    bool leaf = true;
    for (k = n; leaf || k > 1; leaf = false)
        if ((rc = build_level(m, index, items, k, leaf, &k)) < 0)
            goto out;
    index->root = items[0];
    index->karr = arr;
    index->n = n;
done:
    ul_create(m); /* last: the keys have the first claim on the space */
    /* Built from tables that every pending clear has reached (the caller
     * holds every segment lock, each repaired on the way in). */
    index->gen = atomic_load(&h->clear_gen);
    atomic_store(&index->dirty, 0);
out:
    free(items);
    return rc;
}
