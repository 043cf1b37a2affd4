/*
 * index.h - the B+tree's node helpers, shared by the tree's own updates
 * (index.c) and its bulk rebuild (index_repair.c). Private to those two.
 */
#ifndef SHMKV_INDEX_H
#define SHMKV_INDEX_H

#include "internal.h"

#define BT_MAX   (SHMKV__BT_SLOTS - 1) /* entries a node keeps at rest */
#define BT_MIN   8u                    /* below this a node tries to merge */
#define BT_FILL  24u                   /* entries per node in a bulk load */
/* Height only grows when the root splits, which takes ~15^h inserts, so 32
 * levels cannot be reached; the bound just sizes the path stacks. */
#define BT_DEPTH 32

static inline shmkv__bt_node *node_at(shmkv__map *m, uint64_t off)
{
    return (shmkv__bt_node *)SHMKV__P(m, off);
}

static inline shmkv__kblob *blob_at(shmkv__map *m, uint64_t off)
{
    return (shmkv__kblob *)SHMKV__P(m, off);
}

/* Keys below a node and, in the high half, claimed keys below (a leaf
 * entry counts 1 | claimed << 32): the halves add up separately. */
static inline uint64_t node_sum(const shmkv__bt_node *nd)
{
    uint64_t s = 0;
    for (uint32_t i = 0; i < nd->n; i++)
        s += nd->e[i].count;
    return s;
}

/* Make the parent's entry for a child describe it again. */
static inline void ent_refresh(shmkv__map *m, shmkv__bt_ent *pe)
{
    const shmkv__bt_node *c = node_at(m, pe->child);
    pe->pfx = c->e[0].pfx;
    pe->key = c->e[0].key;
}

static inline uint64_t nzmin(uint64_t a, uint64_t b)
{
    return !a ? b : !b ? a : a < b ? a : b;
}

/* The earliest claim expiry below a node (0: none): its leaf entries'
 * expiries, or its children's own. */
static inline uint64_t node_min(shmkv__map *m, const shmkv__bt_node *nd)
{
    uint64_t x = 0;
    for (uint32_t i = 0; i < nd->n; i++)
        x = nzmin(x, nd->leaf ? nd->e[i].child : node_at(m, nd->e[i].child)->pad);
    return x;
}

static inline shmkv__bt_ent ent_for(shmkv__map *m, uint64_t child)
{
    shmkv__bt_ent e = { 0, 0, child, node_sum(node_at(m, child)) };
    ent_refresh(m, &e);
    return e;
}

static inline int node_alloc(shmkv__map *m, shmkv__index *index, uint64_t *off)
{
    return shmkv__alloc_block(m, &index->alloc, SHMKV__OWNER_INDEX,
                              sizeof(shmkv__bt_node), off);
}

static inline void node_init(shmkv__map *m, uint64_t off, bool leaf)
{
    shmkv__bt_node *nd = node_at(m, off);
    nd->leaf = leaf;
    nd->n = 0;
    nd->pad = 0;
}

#endif /* SHMKV_INDEX_H */
