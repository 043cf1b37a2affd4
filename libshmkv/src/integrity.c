/*
 * integrity.c - shmkv_check: the store's integrity check from inside the
 * library (as SQLite keeps its integrity_check), under every lock, so that
 * what it reads is one moment with no operation half done. It reads the
 * region through the format module's bounded validators only: a damaged
 * store gives problems, never a read outside the published region.
 *
 * What it checks: the header; that chunks tile [data_off, top) and their
 * blocks tile each chunk; each allocator's chunk and byte counts and the
 * free pool's; each segment's table, every live slot's entry (a block of
 * that segment, referenced once, whose key hashes to this segment and slot
 * tag, and is reachable from its home slot) and its key and tombstone
 * counts; and, when the key index is current, its tree (order, counts,
 * keys all live in their tables), its key count and its key array. Not
 * checked: blocks in use that nothing references (leaked space), which
 * shmkv-dump --check reports.
 */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define TREE_DEPTH 40

typedef struct ick {
    shmkv__map *m;
    const shmkv__hdr *h;
    shmkv__view v; /* [0, top) */
    uint64_t problems;
    char *msg;
    size_t cap;
    /* blocks found by the walk, in region order, and their owners */
    uint64_t *blk;
    uint32_t *blk_owner;
    uint8_t *blk_ref;
    size_t nb, capb;
    bool tiled;
    /* per owner slot: nseg segments, then the index */
    uint64_t *nchunks, *chunk_bytes, *used_bytes;
    uint64_t pool;
    uint64_t live_keys;
    bool tables_ok; /* no problem in any table: lookups in them are safe */
    const unsigned char *last_key;
    uint32_t last_klen;
} ick;

static void problem(ick *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(ick *c, const char *fmt, ...)
{
    if (c->problems++ == 0 && c->msg && c->cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->msg, c->cap, fmt, ap);
        va_end(ap);
    }
}

static const char *fault_name(int f)
{
    switch (f) {
    case SHMKV__F_OUTSIDE: return "outside the region";
    case SHMKV__F_MAGIC: return "bad magic";
    case SHMKV__F_SIZE: return "bad size";
    case SHMKV__F_USED: return "used out of range";
    case SHMKV__F_CLASS: return "invalid size or class";
    case SHMKV__F_BIG: return "big block not alone in a full chunk";
    case SHMKV__F_PAST: return "runs past the region end";
    case SHMKV__F_FREE: return "not in use";
    case SHMKV__F_CAP: return "capacity not a power of two";
    case SHMKV__F_FIT: return "contents do not fit the block";
    case SHMKV__F_LEN: return "length out of range";
    case SHMKV__F_BODY: return "header outside the region";
    case SHMKV__F_LEAF: return "bad leaf flag";
    case SHMKV__F_COUNT: return "bad entry count";
    default: return "invalid";
    }
}

static int push_block(ick *c, uint64_t off, uint32_t owner)
{
    if (c->nb == c->capb) {
        size_t n = c->capb ? c->capb * 2 : 1024;
        uint64_t *b = realloc(c->blk, n * sizeof *b);
        if (!b)
            return -ENOMEM;
        c->blk = b;
        uint32_t *o = realloc(c->blk_owner, n * sizeof *o);
        if (!o)
            return -ENOMEM;
        c->blk_owner = o;
        c->capb = n;
    }
    c->blk[c->nb] = off;
    c->blk_owner[c->nb++] = owner;
    return 0;
}

/* Index of the walked block whose payload is at payload, or -1. */
static long block_index(const ick *c, uint64_t payload)
{
    if (payload < SHMKV__BLOCK_HDR)
        return -1;
    uint64_t want = payload - SHMKV__BLOCK_HDR;
    size_t lo = 0, hi = c->nb;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->blk[mid] < want)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < c->nb && c->blk[lo] == want ? (long)lo : -1;
}

/* A reference to a block of owner: it must be a walked block of that
 * owner, referenced once. */
static bool block_ref(ick *c, uint64_t payload, uint32_t owner, const char *what, uint32_t seg)
{
    long i = block_index(c, payload);
    if (i < 0) {
        problem(c, "%s of segment %" PRIu32 ": 0x%" PRIx64 " is not the start of a block",
                what, seg, payload);
        return false;
    }
    if (c->blk_owner[i] != owner) {
        problem(c, "%s of segment %" PRIu32 ": block 0x%" PRIx64 " belongs to owner %" PRIu32,
                what, seg, payload, c->blk_owner[i]);
        return false;
    }
    if (c->blk_ref[i]++) {
        problem(c, "%s of segment %" PRIu32 ": block 0x%" PRIx64 " is referenced twice", what,
                seg, payload);
        return false;
    }
    return true;
}

static uint32_t owner_slot(const ick *c, uint32_t owner)
{
    if (owner < c->h->nseg)
        return owner;
    return owner == SHMKV__OWNER_INDEX ? c->h->nseg : UINT32_MAX;
}

/* ---- chunks and blocks ------------------------------------------------------ */

static int walk_region(ick *c)
{
    uint64_t top = c->v.len, off = c->h->data_off;
    while (off < top) {
        shmkv__chunk ch;
        int f = shmkv__view_chunk(&c->v, off, top, &ch);
        if (f) {
            problem(c, "chunk at 0x%" PRIx64 ": %s; the region past it cannot be walked", off,
                    fault_name(f));
            return 0;
        }
        uint32_t slot = owner_slot(c, ch.owner);
        if (ch.owner == SHMKV__OWNER_FREE)
            c->pool += ch.size;
        else if (slot == UINT32_MAX)
            problem(c, "chunk at 0x%" PRIx64 ": owner %" PRIu32 " is not a segment, the index "
                    "or the free pool", off, ch.owner);
        if (slot != UINT32_MAX) {
            c->nchunks[slot]++;
            c->chunk_bytes[slot] += ch.size;
        }
        if (shmkv__chunk_used_check(&ch)) {
            problem(c, "chunk at 0x%" PRIx64 ": used %" PRIu64 " outside [%u, %" PRIu64 "]",
                    off, ch.used, SHMKV__CHUNK_HDR, ch.size);
        } else {
            for (uint64_t b = SHMKV__CHUNK_HDR, bs; b < ch.used; b += bs) {
                const shmkv__block *bh = shmkv__view_at(&c->v, off + b, SHMKV__BLOCK_HDR);
                shmkv__block blk;
                if (!bh) {
                    problem(c, "block at 0x%" PRIx64 ": header runs past the region end",
                            off + b);
                    break;
                }
                memcpy(&blk, bh, sizeof blk);
                if (shmkv__block_walk_check(&blk, b, &ch, &bs)) {
                    problem(c, "block at 0x%" PRIx64 ": size %" PRIu32 " / class %u invalid",
                            off + b, blk.size, blk.cls);
                    break;
                }
                if (push_block(c, off + b, ch.owner) < 0)
                    return -ENOMEM;
                if (slot != UINT32_MAX && (blk.flags & SHMKV__BF_USED))
                    c->used_bytes[slot] += bs;
            }
        }
        off += ch.size;
    }
    c->tiled = true;
    return 0;
}

static void check_alloc(ick *c, uint32_t slot, const shmkv__alloc *a, const char *name,
                        uint32_t seg)
{
    if (!c->tiled)
        return;
    if (a->nchunks != c->nchunks[slot] || a->chunk_bytes != c->chunk_bytes[slot])
        problem(c, "%s %" PRIu32 ": allocator counts %" PRIu64 " chunks of %" PRIu64
                " bytes, the region has %" PRIu64 " of %" PRIu64, name, seg, a->nchunks,
                a->chunk_bytes, c->nchunks[slot], c->chunk_bytes[slot]);
    if (a->used_bytes != c->used_bytes[slot])
        problem(c, "%s %" PRIu32 ": allocator counts %" PRIu64 " bytes in use, its blocks "
                "hold %" PRIu64, name, seg, a->used_bytes, c->used_bytes[slot]);
}

/* Each free list: blocks of this owner and class, not in use, each met
 * once (a loop would hang the allocator). Marks the blocks it meets. */
static void check_free_lists(ick *c, const shmkv__alloc *a, uint32_t owner, const char *name,
                             uint32_t seg)
{
    if (!c->tiled)
        return;
    for (uint32_t cls = 0; cls < SHMKV__NCLASS; cls++) {
        uint64_t p = a->free_head[cls];
        for (size_t steps = 0; p; steps++) {
            long i = block_index(c, p);
            if (i < 0 || c->blk_owner[i] != owner || steps > c->nb) {
                problem(c, "%s %" PRIu32 ": free list of class %" PRIu32 " reaches 0x%" PRIx64
                        ", which is not a block of it", name, seg, cls, p);
                break;
            }
            const shmkv__block *b = shmkv__view_at(&c->v, p - SHMKV__BLOCK_HDR, sizeof *b);
            if (c->blk_ref[i]++ || b->cls != cls || (b->flags & SHMKV__BF_USED)) {
                problem(c, "%s %" PRIu32 ": free list of class %" PRIu32 " loops or holds "
                        "block 0x%" PRIx64 " of class %u%s", name, seg, cls, p, b->cls,
                        (b->flags & SHMKV__BF_USED) ? " in use" : "");
                break;
            }
            memcpy(&p, c->v.base + p, 8);
        }
    }
}

/* ---- segments ------------------------------------------------------------------ */

static int check_segment(ick *c, uint32_t i)
{
    shmkv__seg *s = shmkv__seg_at(c->m, i);
    uint64_t toff = atomic_load_explicit(&s->table, memory_order_relaxed);
    uint64_t count = atomic_load_explicit(&s->count, memory_order_relaxed);
    if (s->id != i)
        problem(c, "segment %" PRIu32 ": id field is %" PRIu32, i, s->id);
    check_alloc(c, i, &s->alloc, "segment", i);
    check_free_lists(c, &s->alloc, i, "segment", i);
    if (!toff) {
        if (count || s->tombs)
            problem(c, "segment %" PRIu32 ": no table but %" PRIu64 " keys and %" PRIu64
                    " tombstones", i, count, s->tombs);
        return 0;
    }
    shmkv__block tb;
    uint64_t cap, bytes;
    int f = shmkv__view_table(&c->v, toff, &tb, &cap, &bytes);
    if (f) {
        problem(c, "segment %" PRIu32 ": table 0x%" PRIx64 ": %s", i, toff, fault_name(f));
        return 0;
    }
    if (c->tiled && !block_ref(c, toff, i, "table", i))
        return 0;
    const shmkv__table *t = shmkv__view_at(&c->v, toff, 8 + cap * 8);
    uint64_t *hs = malloc(cap * sizeof *hs); /* hash of each checked live slot */
    if (!hs)
        return -ENOMEM;
    for (uint64_t j = 0; j < cap; j++)
        hs[j] = UINT64_MAX;
    uint64_t live = 0, tombs = 0;
    for (uint64_t j = 0; j < cap; j++) {
        uint64_t w = atomic_load_explicit(&t->slot[j], memory_order_relaxed);
        if (w == SHMKV__SLOT_EMPTY)
            continue;
        if (w == SHMKV__SLOT_TOMB) {
            tombs++;
            continue;
        }
        if (!SHMKV__SLOT_LIVE(w)) {
            problem(c, "segment %" PRIu32 " slot %" PRIu64 ": malformed word 0x%016" PRIx64, i,
                    j, w);
            continue;
        }
        live++;
        uint64_t eoff = SHMKV__SLOT_OFF(w);
        shmkv__block eb;
        shmkv__entry e;
        f = shmkv__view_entry(&c->v, eoff, &eb, &e, &bytes);
        if (f) {
            problem(c, "segment %" PRIu32 " slot %" PRIu64 ": entry 0x%" PRIx64 ": %s", i, j,
                    eoff, fault_name(f));
            continue;
        }
        if (c->tiled && !block_ref(c, eoff, i, "entry", i))
            continue;
        const unsigned char *key = c->v.base + eoff + sizeof e;
        uint64_t hh = shmkv__hash(key, e.klen);
        if (((uint32_t)(hh >> 32) & (c->h->nseg - 1)) != i)
            problem(c, "segment %" PRIu32 " slot %" PRIu64 ": its key belongs to segment %" PRIu32,
                    i, j, (uint32_t)(hh >> 32) & (c->h->nseg - 1));
        else if (SHMKV__SLOT_TAG(w) != (uint16_t)(hh >> 48))
            problem(c, "segment %" PRIu32 " slot %" PRIu64 ": tag does not match its key", i, j);
        if (eb.kind > SHMKV_KIND_JSON)
            problem(c, "segment %" PRIu32 " slot %" PRIu64 ": unknown value kind %u", i, j,
                    eb.kind);
        hs[j] = hh;
    }
    /* Lookups probe from the home slot to the first empty one: going round
     * once from an empty slot, an entry is reachable when it lies within
     * the run of non-empty slots that ends at it. One pass, whatever the
     * table's clusters. */
    uint64_t empty = cap;
    for (uint64_t j = 0; j < cap && empty == cap; j++)
        if (atomic_load_explicit(&t->slot[j], memory_order_relaxed) == SHMKV__SLOT_EMPTY)
            empty = j;
    for (uint64_t k = 1, run = 0; empty < cap && k <= cap; k++) {
        uint64_t j = (empty + k) & (cap - 1);
        if (atomic_load_explicit(&t->slot[j], memory_order_relaxed) == SHMKV__SLOT_EMPTY) {
            run = 0;
            continue;
        }
        run++;
        if (hs[j] != UINT64_MAX && ((j - (hs[j] & (cap - 1))) & (cap - 1)) >= run)
            problem(c, "segment %" PRIu32 " slot %" PRIu64 ": unreachable from its home "
                    "slot %" PRIu64, i, j, hs[j] & (cap - 1));
    }
    free(hs);
    if (live != count || tombs != s->tombs)
        problem(c, "segment %" PRIu32 ": counts %" PRIu64 " keys and %" PRIu64 " tombstones, "
                "its table holds %" PRIu64 " and %" PRIu64, i, count, s->tombs, live, tombs);
    c->live_keys += live;
    return 0;
}

/* ---- key index --------------------------------------------------------------- */

/* A block of the index at payload, in use, of at least need bytes. */
static bool index_block(ick *c, uint64_t payload, uint64_t need, const char *what,
                        uint64_t *bytes)
{
    shmkv__block b;
    int f = shmkv__view_block(&c->v, payload, &b, bytes);
    if (!f && !(b.flags & SHMKV__BF_USED))
        f = SHMKV__F_FREE;
    if (!f && *bytes < need)
        f = SHMKV__F_FIT;
    if (f) {
        problem(c, "index: %s 0x%" PRIx64 ": %s", what, payload, fault_name(f));
        return false;
    }
    long i = c->tiled ? block_index(c, payload) : 0;
    if (i < 0 || (c->tiled && c->blk_owner[i] != SHMKV__OWNER_INDEX)) {
        problem(c, "index: %s 0x%" PRIx64 " is not a block of the index", what, payload);
        return false;
    }
    if (c->tiled && c->blk_ref[i]++) {
        problem(c, "index: %s 0x%" PRIx64 " is referenced twice", what, payload);
        return false;
    }
    return true;
}

/* Keys below node; false when the walk cannot go on. */
static bool check_node(ick *c, uint64_t off, int depth, uint64_t *keys, uint64_t *min_key)
{
    uint64_t bytes;
    if (depth >= TREE_DEPTH) {
        problem(c, "index: tree deeper than %d levels", TREE_DEPTH);
        return false;
    }
    if (!index_block(c, off, SHMKV__BLOCK_HDR + sizeof(shmkv__bt_node), "tree node", &bytes))
        return false;
    shmkv__bt_node nd;
    memcpy(&nd, c->v.base + off, sizeof nd);
    int f = shmkv__bt_node_check(&nd);
    if (f) {
        problem(c, "index: tree node 0x%" PRIx64 ": %s", off, fault_name(f));
        return false;
    }
    *keys = 0;
    for (uint32_t k = 0; k < nd.n; k++) {
        const shmkv__bt_ent *e = &nd.e[k];
        uint64_t below = 0, first = 0;
        if (nd.leaf) {
            shmkv__kblob kb;
            if (!index_block(c, e->key, SHMKV__BLOCK_HDR + sizeof kb, "key blob", &bytes))
                return false;
            memcpy(&kb, c->v.base + e->key, sizeof kb);
            if (shmkv__kblob_check(&kb, bytes)) {
                problem(c, "index: key blob 0x%" PRIx64 ": length %" PRIu32 " invalid", e->key,
                        kb.klen);
                return false;
            }
            const unsigned char *key = c->v.base + e->key + sizeof kb;
            if (e->child || e->count != 1 || e->pfx != shmkv__pfx(key, kb.klen))
                problem(c, "index: leaf 0x%" PRIx64 " entry %" PRIu32 ": child, count or "
                        "prefix word wrong", off, k);
            if (c->last_key && shmkv__keycmp(c->last_key, c->last_klen, key, kb.klen) >= 0)
                problem(c, "index: key blob 0x%" PRIx64 " out of order or held twice", e->key);
            c->last_key = key;
            c->last_klen = kb.klen;
            shmkv__seg *s = shmkv__seg_of(c->m, key, kb.klen);
            if (c->tables_ok && !shmkv__seg_has(c->m, s, key, kb.klen))
                problem(c, "index: holds a key (blob 0x%" PRIx64 ") that segment %" PRIu32
                        " does not", e->key, s->id);
            below = 1;
            first = e->key;
        } else {
            if (!check_node(c, e->child, depth + 1, &below, &first))
                return false;
            if (e->count != below || e->key != first)
                problem(c, "index: node 0x%" PRIx64 " entry %" PRIu32 ": counts %" PRIu64
                        " keys or names a key its subtree does not start with (%" PRIu64
                        " keys below)", off, k, e->count, below);
        }
        if (k == 0)
            *min_key = first;
        *keys += below;
    }
    return true;
}

static void check_karr(ick *c, uint64_t karr, uint64_t n)
{
    uint64_t bytes, cap;
    if (!index_block(c, karr, SHMKV__BLOCK_HDR + sizeof(shmkv__karr), "key array", &bytes))
        return;
    memcpy(&cap, c->v.base + karr, 8);
    if (cap > (bytes - SHMKV__BLOCK_HDR - sizeof(shmkv__karr)) / 8 || n > cap) {
        problem(c, "index: key array of capacity %" PRIu64 " in %" PRIu64 " bytes for %" PRIu64
                " keys", cap, bytes, n);
        return;
    }
    const shmkv__karr *ka = (const shmkv__karr *)(c->v.base + karr);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t off = ka->off[i];
        shmkv__kblob kb;
        if (!shmkv__view_at(&c->v, off, sizeof kb)) {
            problem(c, "index: key array entry %" PRIu64 " is outside the region", i);
            return;
        }
        memcpy(&kb, c->v.base + off, sizeof kb);
        /* every blob was met once in the tree: it is a blob of it */
        long bi = c->tiled ? block_index(c, off) : -1;
        if ((c->tiled && (bi < 0 || c->blk_ref[bi] != 1)) || kb.pos != i) {
            problem(c, "index: key array entry %" PRIu64 " (0x%" PRIx64 ") is not the tree's "
                    "key at that position", i, off);
            return;
        }
        if (c->tiled)
            c->blk_ref[bi] = 2;
    }
}

static void check_index(ick *c)
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
    check_alloc(c, slot, &ix->alloc, "index", 0);
    check_free_lists(c, &ix->alloc, SHMKV__OWNER_INDEX, "index", 0);
    if (!c->h->track_keys)
        return;
    uint64_t keys = 0, first = 0;
    if (!ix->root != !ix->n)
        problem(c, "index: root 0x%" PRIx64 " but %" PRIu64 " keys", ix->root, ix->n);
    if (ix->root && !check_node(c, ix->root, 0, &keys, &first))
        return;
    if (keys != ix->n || ix->n != c->live_keys)
        problem(c, "index: counts %" PRIu64 " keys, its tree holds %" PRIu64 ", the tables %"
                PRIu64, ix->n, keys, c->live_keys);
    else if (ix->karr)
        check_karr(c, ix->karr, ix->n);
    else if (ix->n)
        problem(c, "index: %" PRIu64 " keys but no key array", ix->n);
}

/* ---- the call ---------------------------------------------------------------- */

static int run(ick *c)
{
    const shmkv__hdr *h = c->h;
    int f = shmkv__hdr_fault(h);
    if (f) {
        problem(c, "header: %s", f == SHMKV__F_LAYOUT ? "offsets not what creation writes"
                                                      : fault_name(f));
        return 0;
    }
    uint64_t fs = atomic_load(&h->file_size);
    if (fs < c->v.len || fs > h->reserve)
        problem(c, "header: allocated file size %" PRIu64 " outside [top %" PRIu64
                ", reserve %" PRIu64 "]", fs, c->v.len, h->reserve);
    if (atomic_load(&h->clean) > 1)
        problem(c, "header: clean flag is %" PRIu32, atomic_load(&h->clean));
    for (uint32_t i = 0; i < SHMKV__ATTACH_SLOTS; i++)
        if (atomic_load(&h->attach[i].pid) < 0)
            problem(c, "header: attach slot %" PRIu32 " holds pid %" PRId32, i,
                    atomic_load(&h->attach[i].pid));
    uint32_t n = h->nseg + 1;
    c->nchunks = calloc(n, 8);
    c->chunk_bytes = calloc(n, 8);
    c->used_bytes = calloc(n, 8);
    if (!c->nchunks || !c->chunk_bytes || !c->used_bytes)
        return -ENOMEM;
    int rc = walk_region(c);
    if (rc)
        return rc;
    if (c->nb && !(c->blk_ref = calloc(c->nb, 1)))
        return -ENOMEM;
    if (c->tiled && c->pool != h->pool_bytes)
        problem(c, "header: free pool holds %" PRIu64 " bytes, pool_bytes says %" PRIu64,
                c->pool, h->pool_bytes);
    for (uint32_t i = 0; i < h->nseg; i++)
        if ((rc = check_segment(c, i)) != 0)
            return rc;
    c->tables_ok = c->problems == 0;
    check_index(c);
    return 0;
}

int shmkv_check(shmkv_db *db, uint64_t *problems, char *msg, size_t cap)
{
    if (problems)
        *problems = 0;
    if (msg && cap)
        msg[0] = 0;
    if (!shmkv__db_usable(db))
        return SHMKV_EINVAL;
    shmkv__map *m = db->m;
    if (m->rdonly)
        return SHMKV_EREADONLY; /* it cannot take the locks */
    shmkv__call_begin(db);
    int rc = shmkv__lock_all(m);
    if (rc)
        return rc;
    if ((rc = shmkv__index_lock_raw(m)) != 0) {
        shmkv__unlock_all(m);
        return rc;
    }
    /* With every owner locked nobody grows the region; the growth lock
     * makes pool_bytes exact (its holder recounts it if its last one died). */
    if ((rc = shmkv__grow_lock(m)) != 0) {
        shmkv__index_unlock(m);
        shmkv__unlock_all(m);
        return rc;
    }
    ick c = {.m = m, .h = SHMKV__HDR(m), .msg = msg, .cap = cap};
    c.v.base = m->base;
    c.v.len = atomic_load(&SHMKV__HDR(m)->top);
    rc = run(&c);
    shmkv__grow_unlock(m);
    shmkv__index_unlock(m);
    shmkv__unlock_all(m);
    free(c.blk);
    free(c.blk_owner);
    free(c.blk_ref);
    free(c.nchunks);
    free(c.chunk_bytes);
    free(c.used_bytes);
    if (rc)
        return rc;
    if (problems)
        *problems = c.problems;
    return c.problems ? SHMKV_ECORRUPT : 0;
}
