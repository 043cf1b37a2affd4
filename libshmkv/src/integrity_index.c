/*
 * integrity_index.c - shmkv_check of the key index: the counted B+tree
 * (order, counts, depth), its key count and the key array, and that every
 * key it holds is live in its table (see integrity.h).
 */
#include "integrity.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define TREE_DEPTH 40

/* ---- key index --------------------------------------------------------------- */

/* A block of the index at payload, in use, of at least need bytes. */
static bool index_block(shmkv__ick *c, uint64_t payload, uint64_t need, const char *what,
                        uint64_t *bytes)
{
    shmkv__block b;
    int f = shmkv__view_block(&c->v, payload, &b, bytes);
    if (!f && !(b.flags & SHMKV__BF_USED))
        f = SHMKV__F_FREE;
    if (!f && *bytes < need)
        f = SHMKV__F_FIT;
    if (f) {
        shmkv__ick_problem(c, "index: %s 0x%" PRIx64 ": %s", what, payload, shmkv__ick_fault_name(f));
        return false;
    }
    long i = c->tiled ? shmkv__ick_block_index(c, payload) : 0;
    if (i < 0 || (c->tiled && c->blk_owner[i] != SHMKV__OWNER_INDEX)) {
        shmkv__ick_problem(c, "index: %s 0x%" PRIx64 " is not a block of the index", what, payload);
        return false;
    }
    if (c->tiled && c->blk_ref[i]++) {
        shmkv__ick_problem(c, "index: %s 0x%" PRIx64 " is referenced twice", what, payload);
        return false;
    }
    return true;
}

/* The claim the index counts for a key (expiry child, not 0) must be the
 * lease of its entry, with that expiry; a live one is counted for the
 * check that no live lease goes uncounted. Only with sound tables. */
static void check_counted(shmkv__ick *c, uint64_t blob, const unsigned char *key, uint32_t klen,
                          uint64_t child)
{
    shmkv__seg *s = shmkv__seg_of(c->m, key, klen);
    shmkv__lookup lk;
    shmkv__seg_find(c->m, s, shmkv__hash(key, klen), key, klen, &lk);
    if (!lk.found)
        return; /* reported as a key the segment does not hold */
    shmkv__block b;
    shmkv__entry e;
    shmkv__lease l;
    uint64_t bytes;
    if (shmkv__view_entry(&c->v, lk.off, &b, &e, &bytes) || !(b.flags & SHMKV__BF_LEASE) ||
        shmkv__view_lease(&c->v, lk.off, &e, bytes, UINT64_MAX, UINT64_MAX, &l)) {
        shmkv__ick_problem(c, "index: counts a claim on a key (blob 0x%" PRIx64 ") whose entry "
                "has no lease", blob);
        return;
    }
    if (l.expiry != child) {
        shmkv__ick_problem(c, "index: counts a claim ending at %" PRIu64 " on a key (blob 0x%"
                PRIx64 ") whose lease ends at %" PRIu64, child, blob, l.expiry);
        return;
    }
    if (child > c->now)
        c->counted_live++;
}

/* What lies below node into *sum; false when the walk cannot go on. */
static bool check_node(shmkv__ick *c, uint64_t off, int depth, shmkv__bt_sum *sum,
                       uint64_t *min_key)
{
    uint64_t bytes;
    if (depth >= TREE_DEPTH) {
        shmkv__ick_problem(c, "index: tree deeper than %d levels", TREE_DEPTH);
        return false;
    }
    if (!index_block(c, off, SHMKV__BLOCK_HDR + sizeof(shmkv__bt_node), "tree node", &bytes))
        return false;
    shmkv__bt_node nd;
    memcpy(&nd, c->v.base + off, sizeof nd);
    int f = shmkv__bt_node_check(&nd);
    if (f) {
        shmkv__ick_problem(c, "index: tree node 0x%" PRIx64 ": %s", off, shmkv__ick_fault_name(f));
        return false;
    }
    *sum = (shmkv__bt_sum){0};
    for (uint32_t k = 0; k < nd.n; k++) {
        const shmkv__bt_ent *e = &nd.e[k];
        uint64_t first = 0;
        if (nd.leaf) {
            shmkv__kblob kb;
            if (!index_block(c, e->key, SHMKV__BLOCK_HDR + sizeof kb, "key blob", &bytes))
                return false;
            memcpy(&kb, c->v.base + e->key, sizeof kb);
            if (shmkv__kblob_check(&kb, bytes)) {
                shmkv__ick_problem(c, "index: key blob 0x%" PRIx64 ": length %" PRIu32 " invalid", e->key,
                        kb.klen);
                return false;
            }
            const unsigned char *key = c->v.base + e->key + sizeof kb;
            if (e->count != shmkv__bt_leaf_count(e->child) || e->pfx != shmkv__pfx(key, kb.klen))
                shmkv__ick_problem(c, "index: leaf 0x%" PRIx64 " entry %" PRIu32 ": count or "
                        "prefix word wrong", off, k);
            if (c->last_key && shmkv__keycmp(c->last_key, c->last_klen, key, kb.klen) >= 0)
                shmkv__ick_problem(c, "index: key blob 0x%" PRIx64 " out of order or held twice", e->key);
            c->last_key = key;
            c->last_klen = kb.klen;
            shmkv__seg *s = shmkv__seg_of(c->m, key, kb.klen);
            if (c->tables_ok && !shmkv__seg_has(c->m, s, key, kb.klen))
                shmkv__ick_problem(c, "index: holds a key (blob 0x%" PRIx64 ") that segment %" PRIu32
                        " does not", e->key, s->id);
            else if (c->tables_ok && e->child)
                check_counted(c, e->key, key, kb.klen, e->child);
            shmkv__bt_sum_leaf(sum, e);
            first = e->key;
        } else {
            shmkv__bt_sum below;
            if (!check_node(c, e->child, depth + 1, &below, &first))
                return false;
            if (!shmkv__bt_count_ok(e->count, &below) || e->key != first)
                shmkv__ick_problem(c, "index: node 0x%" PRIx64 " entry %" PRIu32 ": counts %" PRIu64
                        " keys (%" PRIu64 " claimed) or names a key its subtree does not start "
                        "with (%" PRIu64 " keys below, %" PRIu64 " claimed)", off, k,
                        (uint64_t)SHMKV__BT_KEYS(e->count), (uint64_t)SHMKV__BT_HELD(e->count), below.keys,
                        below.held);
            shmkv__bt_sum_add(sum, &below);
        }
        if (k == 0)
            *min_key = first;
    }
    if (nd.pad != sum->earliest)
        shmkv__ick_problem(c, "index: tree node 0x%" PRIx64 ": earliest claim end %" PRIu64
                ", its subtree's is %" PRIu64, off, nd.pad, sum->earliest);
    return true;
}

static void check_karr(shmkv__ick *c, uint64_t karr, uint64_t n)
{
    uint64_t bytes, cap;
    if (!index_block(c, karr, SHMKV__BLOCK_HDR + sizeof(shmkv__karr), "key array", &bytes))
        return;
    memcpy(&cap, c->v.base + karr, 8);
    if (cap > (bytes - SHMKV__BLOCK_HDR - sizeof(shmkv__karr)) / 8 || n > cap) {
        shmkv__ick_problem(c, "index: key array of capacity %" PRIu64 " in %" PRIu64 " bytes for %" PRIu64
                " keys", cap, bytes, n);
        return;
    }
    const shmkv__karr *ka = (const shmkv__karr *)(c->v.base + karr);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t off = ka->off[i];
        shmkv__kblob kb;
        if (!shmkv__view_at(&c->v, off, sizeof kb)) {
            shmkv__ick_problem(c, "index: key array entry %" PRIu64 " is outside the region", i);
            return;
        }
        memcpy(&kb, c->v.base + off, sizeof kb);
        /* every blob was met once in the tree: it is a blob of it */
        long bi = c->tiled ? shmkv__ick_block_index(c, off) : -1;
        if ((c->tiled && (bi < 0 || c->blk_ref[bi] != 1)) || kb.pos != i) {
            shmkv__ick_problem(c, "index: key array entry %" PRIu64 " (0x%" PRIx64 ") is not the tree's "
                    "key at that position", i, off);
            return;
        }
        if (c->tiled)
            c->blk_ref[bi] = 2;
    }
}

void shmkv__ick_check_index(shmkv__ick *c)
{
    shmkv__index *ix = shmkv__index_of(c->m);
    uint32_t slot = c->h->nseg;
    /* An index still to be rebuilt, emptied, or settled for one key is
     * not wrong: its next user finishes that first. */
    const shmkv__ulog *lg = NULL;
    uint64_t bytes;
    if (ix->ulog &&
        index_block(c, ix->ulog, SHMKV__BLOCK_HDR + sizeof(shmkv__ulog), "undo log", &bytes))
        lg = (const shmkv__ulog *)(c->v.base + ix->ulog);
    if (atomic_load(&ix->dirty) || ix->gen != atomic_load(&c->h->clear_gen) ||
        (lg && atomic_load(&lg->state) != SHMKV__ULOG_IDLE))
        return;
    shmkv__ick_check_alloc(c, slot, &ix->alloc, "index", 0);
    shmkv__ick_check_free_lists(c, &ix->alloc, SHMKV__OWNER_INDEX, "index", 0);
    if (!c->h->track_keys)
        return;
    shmkv__bt_sum sum = {0};
    uint64_t keys, first = 0;
    if (!ix->root != !ix->n)
        shmkv__ick_problem(c, "index: root 0x%" PRIx64 " but %" PRIu64 " keys", ix->root, ix->n);
    if (ix->root && !check_node(c, ix->root, 0, &sum, &first))
        return;
    keys = sum.keys;
    /* every live lease is one the index counts (each counted one was
     * matched to its key's lease above) */
    if (c->tables_ok && c->counted_live != c->live_leases)
        shmkv__ick_problem(c, "index: counts %" PRIu64 " of the %" PRIu64 " live claims of the "
                "tables", c->counted_live, c->live_leases);
    if (keys != ix->n || ix->n != c->live_keys)
        shmkv__ick_problem(c, "index: counts %" PRIu64 " keys, its tree holds %" PRIu64 ", the tables %"
                PRIu64, ix->n, keys, c->live_keys);
    else if (ix->karr)
        check_karr(c, ix->karr, ix->n);
    else if (ix->n)
        shmkv__ick_problem(c, "index: %" PRIu64 " keys but no key array", ix->n);
}
