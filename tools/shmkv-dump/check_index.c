/*
 * check_index.c - --check of the key index: the B+tree, the key array, the
 * undo log, and the agreement of the index with the tables.
 */
#include "check.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#define EXAMPLES 5      /* keys named when index and tables disagree */
#define BT_MAXN (SHMKV__BT_SLOTS - 1)
#define TREE_DEPTH 40

/* ---- key index -------------------------------------------------------------------- */

typedef struct frame {
    uint64_t off;
    shmkv__bt_node nd;
    uint32_t i;
    shmkv__bt_sum sum; /* keys, claimed keys and earliest claim end below */
    uint64_t min_key; /* blob of the smallest key below, 0: none */
    uint64_t min_pfx;
    bool partial;     /* some subtree could not be walked */
} frame;

/* Validate the node at off and copy it; false (reported) when unusable. */
static bool load_node(ck *c, uint64_t off, bool root, shmkv__bt_node *nd)
{
    long bi = scan_find(&c->sc, off);
    if (bi < 0) {
        if (!unknown_at(c, off))
            prob(c->r, "index: tree node 0x%" PRIx64 " is not a block", off);
        return false;
    }
    blk *b = &c->sc.b[bi];
    if (b->owner != SHMKV__OWNER_INDEX || !(b->flags & SHMKV__BF_USED) ||
        b->size < SHMKV__BLOCK_HDR + sizeof *nd) {
        prob(c->r, "index: tree node 0x%" PRIx64 " is a %s block of owner %" PRIu32
             " and %" PRIu64 " bytes", off, (b->flags & SHMKV__BF_USED) ? "used" : "free",
             b->owner, b->size);
        return false;
    }
    if (b->ref != REF_NONE) {
        prob(c->r, "index: tree node 0x%" PRIx64 " is also referenced by %s (a cycle or a "
             "shared node)", off, ref_name(b->ref));
        return false;
    }
    b->ref = REF_NODE;
    if (!vcopy(c->v, off, nd, sizeof *nd))
        return false;
    int f = shmkv__bt_node_check(nd);
    if (f == SHMKV__F_LEAF) {
        prob(c->r, "index: tree node 0x%" PRIx64 ": leaf flag is %" PRIu32, off, nd->leaf);
        return false;
    }
    if (f) {
        prob(c->r, "index: tree node 0x%" PRIx64 " holds %" PRIu32 " entries (1 to %u)", off,
             nd->n, BT_MAXN);
        return false;
    }
    if (nd->n > BT_MAXN)
        prob(c->r, "index: tree node 0x%" PRIx64 " is over-full (%" PRIu32 " entries)", off,
             nd->n);
    if (root && !nd->leaf && nd->n < 2)
        warn(c->r, "index: the root 0x%" PRIx64 " is an internal node with one child", off);
    return true;
}

static int push_tkey(ck *c, const unsigned char *k, uint32_t klen, uint64_t child)
{
    if (c->ntk == c->captk) {
        size_t n = c->captk ? c->captk * 2 : 1024;
        tkey *p = realloc(c->tk, n * sizeof *p);
        if (!p)
            return -ENOMEM;
        c->tk = p;
        c->captk = n;
    }
    c->tk[c->ntk++] = (tkey){ k, klen, child };
    return 0;
}

/* A leaf entry: its blob. Returns the key or NULL (reported). */
static const unsigned char *leaf_entry(ck *c, uint64_t node, uint32_t i, const shmkv__bt_ent *e,
                                       uint32_t *klen)
{
    char kb[256];
    if (e->count != shmkv__bt_leaf_count(e->child))
        prob(c->r, "index: leaf 0x%" PRIx64 " entry %" PRIu32 ": count 0x%" PRIx64 " with claim "
             "end %" PRIu64 " (a leaf entry counts 1 key, and 1 claimed when its claim end is "
             "not 0)", node, i, e->count, e->child);
    long bi = scan_find(&c->sc, e->key);
    if (bi < 0 && unknown_at(c, e->key))
        return NULL;
    if (bi < 0) {
        prob(c->r, "index: leaf 0x%" PRIx64 " entry %" PRIu32 ": key blob 0x%" PRIx64
             " is not a block", node, i, e->key);
        return NULL;
    }
    blk *b = &c->sc.b[bi];
    if (b->owner != SHMKV__OWNER_INDEX || !(b->flags & SHMKV__BF_USED)) {
        prob(c->r, "index: leaf 0x%" PRIx64 " entry %" PRIu32 ": key blob 0x%" PRIx64
             " is a %s block of owner %" PRIu32, node, i, e->key,
             (b->flags & SHMKV__BF_USED) ? "used" : "free", b->owner);
        return NULL;
    }
    if (b->ref != REF_NONE) {
        prob(c->r, "index: leaf 0x%" PRIx64 " entry %" PRIu32 ": key blob 0x%" PRIx64
             " is also referenced by %s", node, i, e->key, ref_name(b->ref));
        return NULL;
    }
    b->ref = REF_BLOB;
    shmkv__kblob kh = {0};
    if (!vcopy(c->v, e->key, &kh, sizeof kh) || shmkv__kblob_check(&kh, b->size)) {
        prob(c->r, "index: key blob 0x%" PRIx64 ": length %" PRIu32 " invalid for its %" PRIu64
             "-byte block", e->key, kh.klen, b->size);
        return NULL;
    }
    const unsigned char *k = vptr(c->v, e->key + sizeof kh, kh.klen);
    if (!k)
        return NULL;
    if (e->pfx != shmkv__pfx(k, kh.klen))
        prob(c->r, "index: leaf 0x%" PRIx64 " entry %" PRIu32 ": prefix word 0x%016" PRIx64
             " does not match key %s", node, i, e->pfx, kdesc(k, kh.klen, kb, sizeof kb));
    *klen = kh.klen;
    return k;
}

static int check_tree(ck *c, uint64_t root)
{
    frame *st = calloc(TREE_DEPTH, sizeof *st);
    char kb[256], kb2[256];
    int leaf_depth = -1, rc = 0;
    bool partial = false;
    if (!st)
        return -ENOMEM;
    if (!load_node(c, root, true, &st[0].nd)) {
        free(st);
        c->ow[c->h->nseg].walk_ok = false;
        return 0;
    }
    st[0].off = root;
    int d = 0;
    while (d >= 0) {
        frame *f = &st[d];
        if (f->i < f->nd.n && f->nd.leaf) {
            const shmkv__bt_ent *e = &f->nd.e[f->i];
            uint32_t klen = 0;
            const unsigned char *k = leaf_entry(c, f->off, f->i, e, &klen);
            if (k) {
                if (c->ntk) {
                    const tkey *p = &c->tk[c->ntk - 1];
                    if (shmkv__keycmp(p->k, p->klen, k, klen) >= 0) {
                        prob(c->r, "index: key %s follows %s: tree out of order or holding a "
                             "key twice", kdesc(k, klen, kb, sizeof kb),
                             kdesc(p->k, p->klen, kb2, sizeof kb2));
                        c->tree_sorted = false;
                    }
                }
                if ((rc = push_tkey(c, k, klen, e->child)) < 0)
                    break;
                shmkv__bt_sum_leaf(&f->sum, e);
                if (f->i == 0) {
                    f->min_key = e->key;
                    f->min_pfx = e->pfx;
                }
            } else {
                f->partial = true;
            }
            f->i++;
            continue;
        }
        if (f->i < f->nd.n) {
            uint64_t child = f->nd.e[f->i].child;
            if (d + 1 >= TREE_DEPTH) {
                prob(c->r, "index: tree deeper than %d levels (a cycle?)", TREE_DEPTH);
                f->partial = true;
                f->i++;
                continue;
            }
            frame *g = &st[d + 1];
            memset(g, 0, sizeof *g);
            if (!load_node(c, child, false, &g->nd)) {
                f->partial = true;
                f->i++;
                continue;
            }
            g->off = child;
            d++;
            continue;
        }
        /* Node finished. */
        if (f->nd.leaf) {
            if (leaf_depth < 0)
                leaf_depth = d;
            else if (leaf_depth != d)
                prob(c->r, "index: leaf 0x%" PRIx64 " at depth %d, other leaves at depth %d",
                     f->off, d, leaf_depth);
        }
        if (f->partial)
            partial = true;
        else if (f->nd.pad != f->sum.earliest)
            prob(c->r, "index: node 0x%" PRIx64 " says its earliest claim end is %" PRIu64
                 ", its subtree's is %" PRIu64 "%s", f->off, f->nd.pad, f->sum.earliest,
                 f->sum.earliest ? "" : " (none)");
        if (d == 0)
            break;
        frame *p = &st[d - 1];
        const shmkv__bt_ent *pe = &p->nd.e[p->i];
        if (!f->partial) {
            if (SHMKV__BT_KEYS(pe->count) != f->sum.keys)
                prob(c->r, "index: node 0x%" PRIx64 " entry %" PRIu32 " counts %" PRIu64
                     " keys, its subtree holds %" PRIu64, p->off, p->i,
                     (uint64_t)SHMKV__BT_KEYS(pe->count), f->sum.keys);
            if (SHMKV__BT_HELD(pe->count) != f->sum.held)
                prob(c->r, "index: node 0x%" PRIx64 " entry %" PRIu32 " counts %" PRIu64
                     " claimed keys, its subtree holds %" PRIu64, p->off, p->i,
                     (uint64_t)SHMKV__BT_HELD(pe->count), f->sum.held);
            if (pe->key != f->min_key || pe->pfx != f->min_pfx)
                prob(c->r, "index: node 0x%" PRIx64 " entry %" PRIu32 " does not name the "
                     "smallest key of its subtree", p->off, p->i);
        } else {
            p->partial = true;
        }
        shmkv__bt_sum_add(&p->sum, &f->sum);
        if (p->i == 0) {
            p->min_key = f->min_key;
            p->min_pfx = f->min_pfx;
        }
        p->i++;
        d--;
    }
    if (partial)
        c->ow[c->h->nseg].walk_ok = false;
    free(st);
    return rc;
}

static void check_karr(ck *c, uint64_t karr, uint64_t n)
{
    long bi = scan_find(&c->sc, karr);
    if (bi < 0) {
        if (!unknown_at(c, karr))
            prob(c->r, "index: key array 0x%" PRIx64 " is not a block", karr);
        c->ow[c->h->nseg].walk_ok = false;
        return;
    }
    blk *b = &c->sc.b[bi];
    if (b->owner != SHMKV__OWNER_INDEX || !(b->flags & SHMKV__BF_USED) || b->ref != REF_NONE) {
        prob(c->r, "index: key array 0x%" PRIx64 " is a %s block of owner %" PRIu32 " (%s)",
             karr, (b->flags & SHMKV__BF_USED) ? "used" : "free", b->owner,
             b->ref ? ref_name(b->ref) : "unreferenced");
        c->ow[c->h->nseg].walk_ok = false;
        return;
    }
    b->ref = REF_KARR;
    uint64_t cap;
    if (!vu64(c->v, karr, &cap))
        return;
    uint64_t fit = (b->size - SHMKV__BLOCK_HDR - sizeof(shmkv__karr)) / 8;
    if (cap > fit) {
        prob(c->r, "index: key array capacity %" PRIu64 " does not fit its %" PRIu64
             "-byte block", cap, b->size);
        cap = fit;
    }
    if (n > cap) {
        prob(c->r, "index: %" PRIu64 " keys but the key array holds %" PRIu64, n, cap);
        n = cap;
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t off;
        if (!vu64(c->v, karr + sizeof(shmkv__karr) + i * 8, &off))
            break;
        long ki = scan_find(&c->sc, off);
        if (ki < 0 || c->sc.b[ki].ref != REF_BLOB) {
            /* With part of the tree unwalkable this is expected. */
            if (c->ow[c->h->nseg].walk_ok && c->karr_bad++ < EXAMPLES)
                prob(c->r, "index: key array entry %" PRIu64 " (0x%" PRIx64 ") is not a key "
                     "of the tree", i, off);
            continue;
        }
        if (c->sc.b[ki].aux) {
            prob(c->r, "index: key array holds key blob 0x%" PRIx64 " twice", off);
            continue;
        }
        c->sc.b[ki].aux = 1;
        uint32_t pos;
        if (vu32(c->v, off + offsetof(shmkv__kblob, pos), &pos) && pos != i)
            prob(c->r, "index: key blob 0x%" PRIx64 " says position %" PRIu32 ", the key array "
                 "has it at %" PRIu64, off, pos, i);
    }
}

static void karr_total(ck *c)
{
    if (c->karr_bad > EXAMPLES)
        prob(c->r, "index: %" PRIu64 " key array entries are not keys of the tree in all",
             c->karr_bad);
}

static int tkey_cmp(const void *a, const void *b)
{
    const tkey *x = a, *y = b;
    return shmkv__keycmp(x->k, x->klen, y->k, y->klen);
}

/* The claim the index counts for a key (tk->child, 0: none) against its
 * entry's lease: a counted claim is the lease, with its end; a live lease
 * is always counted (one that ran out may still be: it is reclaimed
 * lazily). */
static void compare_claim(ck *c, const ent *e, const tkey *tk)
{
    char kb[256];
    if (tk->child && !e->leased)
        prob(c->r, "index: counts a claim on key %s, whose entry has no lease",
             kdesc(e->key, e->klen, kb, sizeof kb));
    else if (tk->child && e->expiry != tk->child)
        prob(c->r, "index: counts a claim on key %s ending at %" PRIu64 ", its lease ends at %"
             PRIu64, kdesc(e->key, e->klen, kb, sizeof kb), tk->child, e->expiry);
    else if (!tk->child && e->leased && lclock_live(&c->clk, e->expiry))
        prob(c->r, "index: key %s has a live claim (token %" PRIu64 ") that the index does not "
             "count", kdesc(e->key, e->klen, kb, sizeof kb), e->token);
}

static void compare_index(ck *c)
{
    char kb[256];
    uint64_t missing = 0, extra = 0;
    size_t i = 0, j = 0;
    if (!c->tree_sorted && c->ntk > 1)
        qsort(c->tk, c->ntk, sizeof *c->tk, tkey_cmp);
    while (i < c->ne || j < c->ntk) {
        int cmp;
        if (i == c->ne)
            cmp = 1;
        else if (j == c->ntk)
            cmp = -1;
        else
            cmp = shmkv__keycmp(c->e[i].key, c->e[i].klen, c->tk[j].k, c->tk[j].klen);
        if (cmp == 0) {
            compare_claim(c, &c->e[i], &c->tk[j]);
            i++, j++;
        } else if (cmp < 0) {
            if (missing++ < EXAMPLES)
                prob(c->r, "index: key %s of segment %" PRIu32 " is missing from the index",
                     kdesc(c->e[i].key, c->e[i].klen, kb, sizeof kb), c->e[i].seg);
            i++;
        } else {
            if (extra++ < EXAMPLES)
                prob(c->r, "index: holds key %s, which no table has",
                     kdesc(c->tk[j].k, c->tk[j].klen, kb, sizeof kb));
            j++;
        }
    }
    if (missing > EXAMPLES)
        prob(c->r, "index: %" PRIu64 " keys of the tables are missing from it in all", missing);
    if (extra > EXAMPLES)
        prob(c->r, "index: holds %" PRIu64 " keys that no table has in all", extra);
}

/* The undo log: its block, and whether an update was cut short. Returns
 * its state (SHMKV__ULOG_*), or -1 when there is none or it is unusable. */
static int check_ulog(ck *c, uint64_t off)
{
    char kb[256];
    long bi = scan_find(&c->sc, off);
    if (bi < 0) {
        if (!unknown_at(c, off))
            prob(c->r, "index: undo log 0x%" PRIx64 " is not a block", off);
        return -1;
    }
    blk *b = &c->sc.b[bi];
    if (b->owner != SHMKV__OWNER_INDEX || !(b->flags & SHMKV__BF_USED) || b->ref != REF_NONE ||
        b->size < sizeof(shmkv__ulog) + SHMKV__BLOCK_HDR) {
        prob(c->r, "index: undo log 0x%" PRIx64 " is a %s %" PRIu64 "-byte block of owner %"
             PRIu32 " (%s)", off, (b->flags & SHMKV__BF_USED) ? "used" : "free", b->size,
             b->owner, b->ref ? ref_name(b->ref) : "unreferenced");
        return -1;
    }
    b->ref = REF_ULOG;
    shmkv__ulog lg;
    if (!vcopy(c->v, off, &lg, offsetof(shmkv__ulog, key)))
        return -1;
    uint32_t state = atomic_load_explicit(&lg.state, memory_order_relaxed);
    uint64_t used = atomic_load_explicit(&lg.used, memory_order_relaxed);
    const unsigned char *key = lg.klen <= SHMKV_KEY_MAX
        ? vptr(c->v, off + offsetof(shmkv__ulog, key), lg.klen) : NULL;
    const char *k = key ? kdesc(key, lg.klen, kb, sizeof kb) : "(unreadable)";
    switch (state) {
    case SHMKV__ULOG_IDLE:
        return (int)state;
    case SHMKV__ULOG_ACTIVE:
        pend(c->r, "index: an update of key %s was cut short; the next process to take the "
             "index lock writes back the %" PRIu64 " bytes it recorded%s, then settles that "
             "key from its table", k, used,
             lg.overflow ? " (the record overflowed: it rebuilds the index instead)" : "");
        return (int)state;
    case SHMKV__ULOG_RECONCILE:
        pend(c->r, "index: an update of key %s was rolled back; the next index user adds or "
             "removes that key to match segment %" PRIu32 "'s table", k, lg.seg);
        return (int)state;
    case SHMKV__ULOG_TIDY:
        pend(c->r, "index: a process died handing the index's freed chunks back to the "
             "pool after an update of key %s; the next process to take the index lock "
             "rebuilds the index from the tables", k);
        return (int)state;
    default:
        prob(c->r, "index: undo log state is %" PRIu32 ", not 0, 1, 2 or 3", state);
        return -1;
    }
}

int check_index(ck *c)
{
    shmkv__index ix;
    uint32_t islot = c->h->nseg;
    if (!vcopy(c->v, c->h->index_off, &ix, sizeof ix)) {
        prob(c->r, "index: lies outside the file");
        c->ow[islot].walk_ok = false;
        return 0;
    }
    uint32_t dirty = atomic_load_explicit(&ix.dirty, memory_order_relaxed);
    if (!c->h->track_keys) {
        if (ix.root || ix.karr || ix.n) {
            warn(c->r, "index: key tracking is off but the index is not empty (root 0x%" PRIx64
                 ", %" PRIu64 " keys)", ix.root, ix.n);
            c->ow[islot].walk_ok = false;
        }
        return 0;
    }
    if (dirty > 1)
        prob(c->r, "index: dirty flag is %" PRIu32 ", not 0 or 1", dirty);
    int ul = ix.ulog ? check_ulog(c, ix.ulog) : -1;
    if (ix.gen != atomic_load_explicit(&c->h->clear_gen, memory_order_relaxed)) {
        pend(c->r, "index: a clear() died before emptying it; the next process to take the "
             "index lock empties it");
        c->ow[islot].walk_ok = false;
        return 0;
    }
    if (ul == SHMKV__ULOG_TIDY) {
        c->ow[islot].walk_ok = false; /* its allocator may be half walked */
        return 0;
    }
    if (ul == SHMKV__ULOG_ACTIVE && !dirty) {
        c->ow[islot].walk_ok = false; /* half changed: its contents mean nothing yet */
        return 0;
    }
    if (!dirty && c->ow[islot].lock == LOCK_DEAD && ul < 0) {
        pend(c->r, "index: its lock's owner died, so the next process to take the lock "
             "rebuilds it from the tables; its contents were not checked");
        c->ow[islot].walk_ok = false;
        return 0;
    }
    if (dirty) {
        pend(c->r, "index: marked for rebuilding (a process died updating it); the next "
             "writer rebuilds it from the tables, so its contents were not checked");
        c->ow[islot].walk_ok = false;
        return 0;
    }
    if (c->reopen_repair) {
        pend(c->r, "index: the store was not closed cleanly, so its next opener rebuilds the "
             "index from the tables; its contents were not checked");
        c->ow[islot].walk_ok = false;
        return 0;
    }
    c->index_keys = ix.n;
    c->tree_sorted = true;
    if (!ix.root != !ix.n)
        prob(c->r, "index: root 0x%" PRIx64 " but %" PRIu64 " keys", ix.root, ix.n);
    if (ix.root) {
        int rc = check_tree(c, ix.root);
        if (rc < 0)
            return rc;
    }
    if (c->ow[islot].walk_ok && ix.n != c->ntk)
        prob(c->r, "index: counts %" PRIu64 " keys, its tree holds %zu", ix.n, c->ntk);
    if (ix.karr) {
        check_karr(c, ix.karr, ix.n);
        karr_total(c);
    }
    else if (ix.n)
        prob(c->r, "index: %" PRIu64 " keys but no key array", ix.n);
    /* Agreement with the tables means something only when both sides were
     * read completely; what stopped either is reported already. */
    if (!c->tables_complete || !c->ow[islot].walk_ok)
        return 0;
    /* One key may still disagree with its table (listed as a repair). */
    if (ul == SHMKV__ULOG_RECONCILE)
        return 0;
    if (ix.n != c->live_slots)
        prob(c->r, "index: counts %" PRIu64 " keys, the tables hold %" PRIu64, ix.n,
             c->live_slots);
    compare_index(c);
    return 0;
}

