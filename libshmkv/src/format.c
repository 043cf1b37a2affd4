/*
 * format.c - the format's one layout computation and its validators.
 *
 * Pure functions over bytes: no file, no lock, no call into the rest of
 * the library. Whatever a header or a block says, nothing here reads
 * outside the view it is given, so the library's open path, its repairs
 * and shmkv-dump can all feed it hostile bytes.
 */
#include "format.h"

int shmkv__fault_code(int fault)
{
    switch (fault) {
    case 0:
        return 0;
    case SHMKV__F_MAGIC:
        return SHMKV_ENOTSTORE;
    case SHMKV__F_VERSION:
        return SHMKV_EVERSION;
    case SHMKV__F_ENDIAN:
    case SHMKV__F_ABI:
        return SHMKV_EABI;
    default:
        return SHMKV_ECORRUPT;
    }
}

/* ---- layout ---------------------------------------------------------------- */

shmkv__layout shmkv__layout_of(uint32_t nseg)
{
    shmkv__layout l;
    l.seg_off = SHMKV__HDR_SIZE;
    l.index_off = l.seg_off + (uint64_t)nseg * sizeof(shmkv__seg);
    l.data_off = shmkv__page_up(l.index_off + sizeof(shmkv__index));
    return l;
}

uint64_t shmkv__creation_size_max(void)
{
    return shmkv__layout_of(SHMKV__MAX_SEGMENTS).data_off;
}

/* ---- header ------------------------------------------------------------------ */

int shmkv__first_page(const unsigned char *page, size_t len)
{
    bool zero = true;
    for (size_t i = 0; i < len && zero; i++)
        zero = page[i] == 0;
    if (zero)
        return SHMKV__PAGE_ZERO;
    if (len == SHMKV__HDR_SIZE && memcmp(page, SHMKV__MAGIC_INIT, 8) == 0)
        return SHMKV__PAGE_INIT;
    return SHMKV__PAGE_OTHER;
}

/* What tells a store of this build from anything else: the fields both
 * the library and a reader refuse to go on without. */
static int hdr_identity(const shmkv__hdr *h)
{
    if (memcmp(h->magic, SHMKV__MAGIC, 8) != 0)
        return SHMKV__F_MAGIC;
    if (h->version < SHMKV__FORMAT_VERSION_MIN || h->version > SHMKV__FORMAT_VERSION)
        return SHMKV__F_VERSION;
    if (h->endian != SHMKV__ENDIAN_CHECK)
        return SHMKV__F_ENDIAN;
    if (h->word_size != sizeof(void *) || h->mutex_size != sizeof(pthread_mutex_t) ||
        h->seg_size != sizeof(shmkv__seg))
        return SHMKV__F_ABI;
    if (h->hdr_size != SHMKV__HDR_SIZE)
        return SHMKV__F_HDR_SIZE;
    if (h->nseg == 0 || h->nseg > SHMKV__MAX_SEGMENTS || (h->nseg & (h->nseg - 1)))
        return SHMKV__F_NSEG;
    return 0;
}

static uint64_t hdr_top(const shmkv__hdr *h)
{
    return atomic_load_explicit(&h->top, memory_order_relaxed);
}

int shmkv__hdr_fault(const shmkv__hdr *h)
{
    int f = hdr_identity(h);
    if (f)
        return f;
    /* The layout follows from nseg alone, so every offset must be exactly
     * what creation would have written. */
    shmkv__layout l = shmkv__layout_of(h->nseg);
    if (h->seg_off != l.seg_off || h->index_off != l.index_off || h->data_off != l.data_off)
        return SHMKV__F_LAYOUT;
    if (h->track_keys > 1 || h->backend > SHMKV_BACKEND_MEMORY)
        return SHMKV__F_FLAGS;
    if (!shmkv__reserve_ok(h->reserve))
        return SHMKV__F_RESERVE;
    uint64_t top = hdr_top(h);
    if (top < h->data_off || top > h->reserve)
        return SHMKV__F_TOP;
    return 0;
}

int shmkv__hdr_check(const shmkv__hdr *h)
{
    return shmkv__fault_code(shmkv__hdr_fault(h));
}

int shmkv__hdr_readable(const shmkv__hdr *h, uint64_t file_len)
{
    int f = hdr_identity(h);
    if (f)
        return f;
    uint64_t segs_end = h->seg_off + (uint64_t)h->nseg * sizeof(shmkv__seg);
    if (h->seg_off < SHMKV__HDR_SIZE || h->seg_off % 64 || h->seg_off > (1ull << 40) ||
        h->index_off < segs_end || h->index_off % 64 || h->index_off > (1ull << 40) ||
        h->data_off < h->index_off + sizeof(shmkv__index) || h->data_off % SHMKV__PAGE ||
        h->data_off > (1ull << 40))
        return SHMKV__F_LAYOUT;
    if (h->data_off > file_len)
        return SHMKV__F_SHORT;
    uint64_t top = hdr_top(h);
    if (top < h->data_off || top % SHMKV__PAGE)
        return SHMKV__F_TOP;
    return 0;
}

/* ---- chunks and blocks ------------------------------------------------------- */

int shmkv__chunk_check(const shmkv__chunk *c, uint64_t off, uint64_t top)
{
    if (c->magic != SHMKV__CHUNK_MAGIC)
        return SHMKV__F_MAGIC;
    if (c->size < SHMKV__PAGE || c->size % SHMKV__PAGE || c->size > top - off)
        return SHMKV__F_SIZE;
    return 0;
}

int shmkv__chunk_used_check(const shmkv__chunk *c)
{
    return c->used < SHMKV__CHUNK_HDR || c->used > c->size ? SHMKV__F_USED : 0;
}

int shmkv__view_chunk(const shmkv__view *v, uint64_t off, uint64_t top, shmkv__chunk *c)
{
    if (!shmkv__view_copy(v, off, c, sizeof *c) || top - off < SHMKV__CHUNK_HDR) {
        memset(c, 0, sizeof *c);
        return SHMKV__F_OUTSIDE;
    }
    return shmkv__chunk_check(c, off, top);
}

int shmkv__block_walk_check(const shmkv__block *b, uint64_t at, const shmkv__chunk *c,
                            uint64_t *bytes)
{
    if (b->cls == SHMKV__CLS_BIG && b->size == 0 && at == SHMKV__CHUNK_HDR &&
        c->used == c->size) {
        *bytes = c->used - at;
        return 0;
    }
    if (b->size < 16 || b->size % 16 || b->size > c->used - at || b->cls >= SHMKV__NCLASS ||
        shmkv__class_size(b->cls) != b->size)
        return SHMKV__F_CLASS;
    *bytes = b->size;
    return 0;
}

int shmkv__view_block(const shmkv__view *v, uint64_t payload, shmkv__block *b,
                      uint64_t *bytes)
{
    *bytes = 0;
    if (payload < SHMKV__BLOCK_HDR || !shmkv__view_copy(v, payload - SHMKV__BLOCK_HDR, b, sizeof *b)) {
        memset(b, 0, sizeof *b);
        return SHMKV__F_OUTSIDE;
    }
    uint64_t sz = b->size;
    if (b->cls == SHMKV__CLS_BIG) {
        /* Alone in its chunk, which it fills: the chunk says how big. */
        shmkv__chunk ch;
        uint64_t coff = payload - SHMKV__BLOCK_HDR - SHMKV__CHUNK_HDR;
        if (payload < SHMKV__BLOCK_HDR + SHMKV__CHUNK_HDR || b->size != 0 ||
            !shmkv__view_copy(v, coff, &ch, sizeof ch) || ch.magic != SHMKV__CHUNK_MAGIC ||
            ch.used != ch.size || ch.size < SHMKV__PAGE)
            return SHMKV__F_BIG;
        sz = ch.size - SHMKV__CHUNK_HDR;
    } else if (b->size < 16 || b->size % 16 || b->cls >= SHMKV__NCLASS ||
               shmkv__class_size(b->cls) != b->size) {
        return SHMKV__F_CLASS;
    }
    *bytes = sz;
    if (!shmkv__view_at(v, payload - SHMKV__BLOCK_HDR, sz))
        return SHMKV__F_PAST;
    return 0;
}

int shmkv__view_table(const shmkv__view *v, uint64_t toff, shmkv__block *b, uint64_t *cap,
                      uint64_t *bytes)
{
    *cap = 0;
    int f = shmkv__view_block(v, toff, b, bytes);
    if (f)
        return f;
    if (!(b->flags & SHMKV__BF_USED))
        return SHMKV__F_FREE;
    uint64_t c = 0;
    if (!shmkv__view_u64(v, toff, &c) || c == 0 || (c & (c - 1))) {
        *cap = c;
        return SHMKV__F_CAP;
    }
    *cap = c;
    if (c > (*bytes - SHMKV__BLOCK_HDR - sizeof(shmkv__table)) / 8)
        return SHMKV__F_FIT;
    return 0;
}

int shmkv__view_entry(const shmkv__view *v, uint64_t payload, shmkv__block *b,
                      shmkv__entry *e, uint64_t *bytes)
{
    memset(e, 0, sizeof *e);
    int f = shmkv__view_block(v, payload, b, bytes);
    if (f)
        return f;
    if (!(b->flags & SHMKV__BF_USED))
        return SHMKV__F_FREE;
    if (!shmkv__view_copy(v, payload, e, sizeof *e))
        return SHMKV__F_BODY;
    if (e->klen == 0 || e->klen > SHMKV_KEY_MAX || e->vlen > SHMKV_VALUE_MAX)
        return SHMKV__F_LEN;
    if (SHMKV__BLOCK_HDR + sizeof *e + (uint64_t)e->klen + e->vlen > *bytes)
        return SHMKV__F_FIT;
    return 0;
}

uint64_t shmkv__table_unreachable(const uint64_t *w, const uint64_t *hs, uint64_t cap,
                                  uint64_t empty, shmkv__reach *r)
{
    while (r->k < cap) {
        uint64_t j = (empty + ++r->k) & (cap - 1);
        if (w[j] == SHMKV__SLOT_EMPTY) {
            r->run = 0;
            continue;
        }
        r->run++;
        if (hs[j] != UINT64_MAX && ((j - (hs[j] & (cap - 1))) & (cap - 1)) >= r->run)
            return j;
    }
    return cap;
}

int shmkv__bt_node_check(const shmkv__bt_node *nd)
{
    if (nd->leaf > 1)
        return SHMKV__F_LEAF;
    if (nd->n == 0 || nd->n > SHMKV__BT_SLOTS)
        return SHMKV__F_COUNT;
    return 0;
}

int shmkv__kblob_check(const shmkv__kblob *kb, uint64_t block_bytes)
{
    if (kb->klen == 0 || kb->klen > SHMKV_KEY_MAX ||
        SHMKV__BLOCK_HDR + sizeof *kb + (uint64_t)kb->klen > block_bytes)
        return SHMKV__F_LEN;
    return 0;
}

/* ---- claims ------------------------------------------------------------------- */

int shmkv__view_lease(const shmkv__view *v, uint64_t payload, const shmkv__entry *e,
                      uint64_t bytes, uint64_t claim_token, uint64_t lease_high,
                      shmkv__lease *l)
{
    memset(l, 0, sizeof *l);
    /* the block ends at payload - header + bytes; everything of the lease
     * lies before that and inside the view */
    uint64_t at = shmkv__lease_at(e->klen, e->vlen);
    uint64_t room = bytes > SHMKV__BLOCK_HDR ? bytes - SHMKV__BLOCK_HDR : 0;
    if (at > room || room - at < sizeof *l || !shmkv__view_copy(v, payload + at, l, sizeof *l)) {
        memset(l, 0, sizeof *l);
        return SHMKV__F_LEASE;
    }
    if (l->olen > SHMKV_OWNER_MAX)
        return SHMKV__F_OWNER;
    if (l->olen > room - at - sizeof *l || !shmkv__view_at(v, payload + at + sizeof *l, l->olen))
        return SHMKV__F_LEASE;
    if (l->token == 0 || l->token > claim_token)
        return SHMKV__F_TOKEN;
    if (l->expiry > lease_high)
        return SHMKV__F_EXPIRY;
    return 0;
}
