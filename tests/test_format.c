/*
 * test_format.c - the format module (libshmkv/src/format.c) on its own:
 * the layout, the header validators, and the view validators at the edges
 * of their view, where a hostile offset must give a fault, never a read
 * outside. Opening hostile files through the library is test_badfile's
 * and the fuzzer's; the dump's wording of each fault is tests/cli's.
 */
#include "format.h"

#include <criterion/criterion.h>
#include <stdlib.h>

TestSuite(format, .timeout = 60);

Test(format, layout)
{
    shmkv__layout l = shmkv__layout_of(1);
    cr_assert_eq(l.seg_off, 4096);
    cr_assert_eq(l.index_off, 4096 + sizeof(shmkv__seg));
    cr_assert_eq(l.data_off, 8192);
    l = shmkv__layout_of(64);
    cr_assert_eq(l.index_off, 4096 + 64 * 960);
    cr_assert_eq(l.data_off % SHMKV__PAGE, 0);
    cr_assert_geq(l.data_off, l.index_off + sizeof(shmkv__index));
    cr_assert_lt(l.data_off - SHMKV__PAGE, l.index_off + sizeof(shmkv__index));
    /* docs/format.md states it */
    cr_assert_eq(shmkv__creation_size_max(), 3940352);
    cr_assert_eq(shmkv__creation_size_max(), shmkv__layout_of(SHMKV__MAX_SEGMENTS).data_off);
}

/* A header as create_store writes it. */
static void good_hdr(shmkv__hdr *h, uint32_t nseg)
{
    memset(h, 0, sizeof *h);
    shmkv__layout l = shmkv__layout_of(nseg);
    memcpy(h->magic, SHMKV__MAGIC, 8);
    h->version = SHMKV__FORMAT_VERSION;
    h->hdr_size = SHMKV__HDR_SIZE;
    h->endian = SHMKV__ENDIAN_CHECK;
    h->word_size = sizeof(void *);
    h->mutex_size = sizeof(pthread_mutex_t);
    h->seg_size = sizeof(shmkv__seg);
    h->nseg = nseg;
    h->reserve = SHMKV__DEFAULT_RESERVE;
    h->seg_off = l.seg_off;
    h->index_off = l.index_off;
    h->data_off = l.data_off;
    atomic_store(&h->top, l.data_off);
}

Test(format, header_faults)
{
    shmkv__hdr h;
    good_hdr(&h, 16);
    cr_assert_eq(shmkv__hdr_fault(&h), 0);
    cr_assert_eq(shmkv__hdr_check(&h), 0);
    cr_assert_eq(shmkv__hdr_readable(&h, h.data_off), 0);
    h.version = 1;
    cr_assert_eq(shmkv__hdr_fault(&h), 0, "version 1 is read");

#define EXPECT(field_change, fault, code)                                                   \
    do {                                                                                     \
        good_hdr(&h, 16);                                                                    \
        field_change;                                                                        \
        cr_assert_eq(shmkv__hdr_fault(&h), fault, "%s", #field_change);                      \
        cr_assert_eq(shmkv__hdr_check(&h), code, "%s", #field_change);                       \
    } while (0)
    EXPECT(h.magic[0] = 'X', SHMKV__F_MAGIC, SHMKV_ENOTSTORE);
    EXPECT(memcpy(h.magic, SHMKV__MAGIC_INIT, 8), SHMKV__F_MAGIC, SHMKV_ENOTSTORE);
    EXPECT(h.version = 0, SHMKV__F_VERSION, SHMKV_EVERSION);
    EXPECT(h.version = SHMKV__FORMAT_VERSION + 1, SHMKV__F_VERSION, SHMKV_EVERSION);
    EXPECT(h.endian = 0x04030201u, SHMKV__F_ENDIAN, SHMKV_EABI);
    EXPECT(h.word_size = 4, SHMKV__F_ABI, SHMKV_EABI);
    EXPECT(h.mutex_size = 24, SHMKV__F_ABI, SHMKV_EABI);
    EXPECT(h.seg_size = 512, SHMKV__F_ABI, SHMKV_EABI);
    EXPECT(h.hdr_size = 8192, SHMKV__F_HDR_SIZE, SHMKV_ECORRUPT);
    EXPECT(h.nseg = 0, SHMKV__F_NSEG, SHMKV_ECORRUPT);
    EXPECT(h.nseg = 3, SHMKV__F_NSEG, SHMKV_ECORRUPT);
    EXPECT(h.nseg = 2 * SHMKV__MAX_SEGMENTS, SHMKV__F_NSEG, SHMKV_ECORRUPT);
    EXPECT(h.nseg = 8, SHMKV__F_LAYOUT, SHMKV_ECORRUPT); /* offsets of 16 segments */
    EXPECT(h.seg_off = 8192, SHMKV__F_LAYOUT, SHMKV_ECORRUPT);
    EXPECT(h.data_off += SHMKV__PAGE, SHMKV__F_LAYOUT, SHMKV_ECORRUPT);
    EXPECT(h.track_keys = 2, SHMKV__F_FLAGS, SHMKV_ECORRUPT);
    EXPECT(h.backend = 2, SHMKV__F_FLAGS, SHMKV_ECORRUPT);
    EXPECT(h.reserve = SHMKV__MIN_RESERVE - SHMKV__PAGE, SHMKV__F_RESERVE, SHMKV_ECORRUPT);
    EXPECT(h.reserve += 1, SHMKV__F_RESERVE, SHMKV_ECORRUPT);
    EXPECT(atomic_store(&h.top, h.data_off - 1), SHMKV__F_TOP, SHMKV_ECORRUPT);
    EXPECT(atomic_store(&h.top, h.reserve + SHMKV__PAGE), SHMKV__F_TOP, SHMKV_ECORRUPT);
#undef EXPECT

    /* The reader's check is looser about offsets, and holds the file's
     * length against the fixed part. */
    good_hdr(&h, 16);
    h.data_off += SHMKV__PAGE;
    atomic_store(&h.top, h.data_off);
    cr_assert_eq(shmkv__hdr_readable(&h, h.data_off), 0);
    cr_assert_eq(shmkv__hdr_readable(&h, h.data_off - 1), SHMKV__F_SHORT);
    h.index_off = h.seg_off; /* over the segments */
    cr_assert_eq(shmkv__hdr_readable(&h, h.data_off), SHMKV__F_LAYOUT);
    good_hdr(&h, 16);
    h.data_off = UINT64_MAX & ~(uint64_t)(SHMKV__PAGE - 1);
    cr_assert_eq(shmkv__hdr_readable(&h, UINT64_MAX), SHMKV__F_LAYOUT);
    good_hdr(&h, 16);
    atomic_store(&h.top, h.data_off + 100);
    cr_assert_eq(shmkv__hdr_readable(&h, UINT64_MAX), SHMKV__F_TOP);
}

Test(format, first_page)
{
    unsigned char page[SHMKV__HDR_SIZE] = {0};
    cr_assert_eq(shmkv__first_page(page, sizeof page), SHMKV__PAGE_ZERO);
    cr_assert_eq(shmkv__first_page(page, 10), SHMKV__PAGE_ZERO);
    memcpy(page, SHMKV__MAGIC_INIT, 8);
    cr_assert_eq(shmkv__first_page(page, sizeof page), SHMKV__PAGE_INIT);
    /* the in-progress magic on a short file is nothing a creator leaves */
    cr_assert_eq(shmkv__first_page(page, 100), SHMKV__PAGE_OTHER);
    memcpy(page, SHMKV__MAGIC, 8);
    cr_assert_eq(shmkv__first_page(page, sizeof page), SHMKV__PAGE_OTHER);
}

/* A region of one chunk at data (0 here: views start where the caller
 * says) holding one 32-byte block; the view ends right after it. */
enum { CH = 0, BLK = SHMKV__CHUNK_HDR, PAY = BLK + SHMKV__BLOCK_HDR };

static unsigned char *region(size_t len)
{
    unsigned char *r = calloc(1, len);
    cr_assert(r);
    shmkv__chunk c = {.magic = SHMKV__CHUNK_MAGIC, .owner = 0, .size = SHMKV__PAGE,
                      .used = BLK + 32};
    memcpy(r + CH, &c, sizeof c);
    shmkv__block b = {.size = 32, .cls = 1, .flags = SHMKV__BF_USED};
    memcpy(r + BLK, &b, sizeof b);
    return r;
}

Test(format, chunks)
{
    unsigned char *r = region(SHMKV__PAGE);
    shmkv__view v = {r, SHMKV__PAGE};
    shmkv__chunk c;
    cr_assert_eq(shmkv__view_chunk(&v, 0, SHMKV__PAGE, &c), 0);
    cr_assert_eq(shmkv__chunk_used_check(&c), 0);
    /* top cuts the chunk short, or its header */
    cr_assert_eq(shmkv__view_chunk(&v, 0, SHMKV__PAGE - 1, &c), SHMKV__F_SIZE);
    cr_assert_eq(shmkv__view_chunk(&v, 0, SHMKV__CHUNK_HDR - 1, &c), SHMKV__F_OUTSIDE);
    /* the view ends inside the header */
    shmkv__view shortv = {r, SHMKV__CHUNK_HDR - 1};
    cr_assert_eq(shmkv__view_chunk(&shortv, 0, SHMKV__PAGE, &c), SHMKV__F_OUTSIDE);
    cr_assert_eq(c.magic, 0);
    r[0] ^= 1;
    cr_assert_eq(shmkv__view_chunk(&v, 0, SHMKV__PAGE, &c), SHMKV__F_MAGIC);
    r[0] ^= 1;
    c.used = SHMKV__CHUNK_HDR - 1;
    cr_assert_eq(shmkv__chunk_used_check(&c), SHMKV__F_USED);
    c.used = c.size + 1;
    cr_assert_eq(shmkv__chunk_used_check(&c), SHMKV__F_USED);

    /* the walk of the chunk's blocks */
    shmkv__view_chunk(&v, 0, SHMKV__PAGE, &c);
    shmkv__block b;
    uint64_t bytes = 0;
    memcpy(&b, r + BLK, sizeof b);
    cr_assert_eq(shmkv__block_walk_check(&b, BLK, &c, &bytes), 0);
    cr_assert_eq(bytes, 32);
    c.used = BLK + 16; /* the block would end past used */
    cr_assert_eq(shmkv__block_walk_check(&b, BLK, &c, &bytes), SHMKV__F_CLASS);
    c.used = BLK + 32;
    b.cls = 2; /* 48-byte class */
    cr_assert_eq(shmkv__block_walk_check(&b, BLK, &c, &bytes), SHMKV__F_CLASS);
    b = (shmkv__block){.size = 0, .cls = SHMKV__CLS_BIG, .flags = SHMKV__BF_USED};
    cr_assert_eq(shmkv__block_walk_check(&b, BLK, &c, &bytes), SHMKV__F_CLASS,
                 "a big block fills its chunk");
    c.used = c.size;
    cr_assert_eq(shmkv__block_walk_check(&b, BLK, &c, &bytes), 0);
    cr_assert_eq(bytes, SHMKV__PAGE - BLK);
    cr_assert_eq(shmkv__block_walk_check(&b, BLK + 16, &c, &bytes), SHMKV__F_CLASS,
                 "a big block starts its chunk");
    free(r);
}

Test(format, blocks_at_the_view_edge)
{
    unsigned char *r = region(SHMKV__PAGE);
    shmkv__view v = {r, PAY + 24}; /* the block's last byte is the view's */
    shmkv__block b;
    uint64_t bytes;
    cr_assert_eq(shmkv__view_block(&v, PAY, &b, &bytes), 0);
    cr_assert_eq(bytes, 32);
    v.len--;
    cr_assert_eq(shmkv__view_block(&v, PAY, &b, &bytes), SHMKV__F_PAST);
    cr_assert_eq(bytes, 32, "the size, for the message");
    cr_assert_eq(shmkv__view_block(&v, 0, &b, &bytes), SHMKV__F_OUTSIDE);
    cr_assert_eq(shmkv__view_block(&v, 7, &b, &bytes), SHMKV__F_OUTSIDE);
    cr_assert_eq(shmkv__view_block(&v, UINT64_MAX, &b, &bytes), SHMKV__F_OUTSIDE);
    cr_assert_eq(shmkv__view_block(&v, v.len + 1, &b, &bytes), SHMKV__F_OUTSIDE);
    /* a big block's chunk header must be in the view, whole and full */
    v.len = SHMKV__PAGE;
    shmkv__block big = {.size = 0, .cls = SHMKV__CLS_BIG, .flags = SHMKV__BF_USED};
    memcpy(r + BLK, &big, sizeof big);
    cr_assert_eq(shmkv__view_block(&v, PAY, &b, &bytes), SHMKV__F_BIG, "chunk not full");
    shmkv__chunk c;
    memcpy(&c, r, sizeof c);
    c.used = c.size;
    memcpy(r, &c, sizeof c);
    cr_assert_eq(shmkv__view_block(&v, PAY, &b, &bytes), 0);
    cr_assert_eq(bytes, SHMKV__PAGE - SHMKV__CHUNK_HDR);
    v.len = SHMKV__PAGE - 1;
    cr_assert_eq(shmkv__view_block(&v, PAY, &b, &bytes), SHMKV__F_PAST);
    /* a big block too near the start to have a chunk header before it */
    memcpy(r + 8, &big, sizeof big);
    cr_assert_eq(shmkv__view_block(&v, 16, &b, &bytes), SHMKV__F_BIG);
    free(r);
}

Test(format, tables_and_entries)
{
    unsigned char *r = region(SHMKV__PAGE);
    shmkv__view v = {r, SHMKV__PAGE};
    shmkv__block b;
    uint64_t cap, bytes;
    shmkv__entry e;
    /* 32-byte block: a table of two slots fits (8 header + 8 cap + 8 x 2) */
    uint64_t two = 2, three = 3, four = 4;
    memcpy(r + PAY, &two, 8);
    cr_assert_eq(shmkv__view_table(&v, PAY, &b, &cap, &bytes), 0);
    cr_assert_eq(cap, 2);
    memcpy(r + PAY, &four, 8);
    cr_assert_eq(shmkv__view_table(&v, PAY, &b, &cap, &bytes), SHMKV__F_FIT);
    memcpy(r + PAY, &three, 8);
    cr_assert_eq(shmkv__view_table(&v, PAY, &b, &cap, &bytes), SHMKV__F_CAP);
    cr_assert_eq(cap, 3);
    /* entries: 8 header + 8 lengths + 16 bytes of key and value */
    e = (shmkv__entry){.klen = 10, .vlen = 6};
    memcpy(r + PAY, &e, sizeof e);
    cr_assert_eq(shmkv__view_entry(&v, PAY, &b, &e, &bytes), 0);
    e = (shmkv__entry){.klen = 10, .vlen = 7};
    memcpy(r + PAY, &e, sizeof e);
    cr_assert_eq(shmkv__view_entry(&v, PAY, &b, &e, &bytes), SHMKV__F_FIT);
    e = (shmkv__entry){.klen = 0, .vlen = 1};
    memcpy(r + PAY, &e, sizeof e);
    cr_assert_eq(shmkv__view_entry(&v, PAY, &b, &e, &bytes), SHMKV__F_LEN);
    e = (shmkv__entry){.klen = UINT32_MAX, .vlen = UINT32_MAX};
    memcpy(r + PAY, &e, sizeof e);
    cr_assert_eq(shmkv__view_entry(&v, PAY, &b, &e, &bytes), SHMKV__F_LEN);
    r[BLK + 5] = 0; /* flags: free */
    cr_assert_eq(shmkv__view_entry(&v, PAY, &b, &e, &bytes), SHMKV__F_FREE);
    cr_assert_eq(shmkv__view_table(&v, PAY, &b, &cap, &bytes), SHMKV__F_FREE);
    free(r);
}

Test(format, nodes_and_blobs)
{
    shmkv__bt_node nd = {.leaf = 1, .n = 1};
    cr_assert_eq(shmkv__bt_node_check(&nd), 0);
    nd.n = SHMKV__BT_SLOTS;
    cr_assert_eq(shmkv__bt_node_check(&nd), 0);
    nd.n = SHMKV__BT_SLOTS + 1;
    cr_assert_eq(shmkv__bt_node_check(&nd), SHMKV__F_COUNT);
    nd.n = 0;
    cr_assert_eq(shmkv__bt_node_check(&nd), SHMKV__F_COUNT);
    nd.n = 1;
    nd.leaf = 2;
    cr_assert_eq(shmkv__bt_node_check(&nd), SHMKV__F_LEAF);
    shmkv__kblob kb = {.klen = 16};
    cr_assert_eq(shmkv__kblob_check(&kb, 32), 0);
    kb.klen = 17;
    cr_assert_eq(shmkv__kblob_check(&kb, 32), SHMKV__F_LEN);
    kb.klen = 0;
    cr_assert_eq(shmkv__kblob_check(&kb, 32), SHMKV__F_LEN);
    kb.klen = SHMKV_KEY_MAX + 1;
    cr_assert_eq(shmkv__kblob_check(&kb, UINT64_MAX), SHMKV__F_LEN);
}

Test(format, size_classes)
{
    /* every class's size maps back to it, and sizes grow */
    for (uint32_t c = 0; c < SHMKV__NCLASS; c++) {
        cr_assert_eq(shmkv__class_of(shmkv__class_size(c)), c, "class %u", c);
        if (c)
            cr_assert_gt(shmkv__class_size(c), shmkv__class_size(c - 1));
    }
    cr_assert_eq(shmkv__class_size(15), 256);
    cr_assert_eq(shmkv__class_size(16), 320);
}

/* Reachable by the definition: probing from the home slot meets no empty
 * slot before the entry. */
static bool reachable_slow(const uint64_t *w, uint64_t cap, uint64_t home, uint64_t j)
{
    for (uint64_t i = home; i != j; i = (i + 1) & (cap - 1))
        if (w[i] == SHMKV__SLOT_EMPTY)
            return false;
    return true;
}

/* Every unreachable slot, in walk order, from each empty slot. */
static size_t unreachable_all(const uint64_t *w, const uint64_t *hs, uint64_t cap,
                              uint64_t empty, uint64_t *out)
{
    shmkv__reach r = {0};
    size_t n = 0;
    for (uint64_t j; (j = shmkv__table_unreachable(w, hs, cap, empty, &r)) < cap;) {
        cr_assert_lt(n, cap, "a slot reported twice");
        out[n++] = j;
    }
    cr_assert_eq(shmkv__table_unreachable(w, hs, cap, empty, &r), cap, "not finished");
    return n;
}

Test(format, table_reachability)
{
    enum { CAP = 16 };
    uint64_t w[CAP], hs[CAP], got[CAP];
    /* a cluster wrapping round the end of the table: slots 14, 15, 0, 1
     * with homes 14, 14, 15, 1 */
    memset(w, 0, sizeof w);
    for (int j = 0; j < CAP; j++)
        hs[j] = UINT64_MAX;
    w[14] = w[15] = w[0] = w[1] = 2;
    hs[14] = 14, hs[15] = 14, hs[0] = 15, hs[1] = 1;
    cr_assert_eq(unreachable_all(w, hs, CAP, 5, got), 0);
    /* slot 15 emptied: slot 0, home 14, is cut off */
    w[15] = SHMKV__SLOT_EMPTY;
    hs[15] = UINT64_MAX;
    hs[0] = 14;
    cr_assert_eq(unreachable_all(w, hs, CAP, 5, got), 1);
    cr_assert_eq(got[0], 0);
    /* a tombstone keeps the probe going; unjudged slots are skipped */
    w[15] = SHMKV__SLOT_TOMB;
    cr_assert_eq(unreachable_all(w, hs, CAP, 5, got), 0);
    hs[0] = 1; /* before its home, with empty slots on the way round */
    cr_assert_eq(unreachable_all(w, hs, CAP, 5, got), 1);
    cr_assert_eq(got[0], 0);
    hs[0] = UINT64_MAX;
    cr_assert_eq(unreachable_all(w, hs, CAP, 5, got), 0);

    /* random tables against the definition, from every empty slot */
    srand(11);
    for (int round = 0; round < 2000; round++) {
        uint64_t cap = 1ull << (1 + rand() % 4);
        for (uint64_t j = 0; j < cap; j++) {
            int r = rand() % 4;
            w[j] = r == 0 ? SHMKV__SLOT_EMPTY : r == 1 ? SHMKV__SLOT_TOMB : 2;
            hs[j] = w[j] == 2 && rand() % 8 ? (uint64_t)rand() : UINT64_MAX;
        }
        uint64_t want = 0;
        bool any_empty = false;
        for (uint64_t j = 0; j < cap; j++) {
            any_empty |= w[j] == SHMKV__SLOT_EMPTY;
            want += hs[j] != UINT64_MAX && !reachable_slow(w, cap, hs[j] & (cap - 1), j);
        }
        for (uint64_t e = 0; any_empty && e < cap; e++) {
            if (w[e] != SHMKV__SLOT_EMPTY)
                continue;
            size_t n = unreachable_all(w, hs, cap, e, got);
            cr_assert_eq(n, want, "round %d from %llu", round, (unsigned long long)e);
            for (size_t i = 0; i < n; i++)
                cr_assert(!reachable_slow(w, cap, hs[got[i]] & (cap - 1), got[i]));
        }
    }
}

/* An entry with a lease: the lease after key and value (8-aligned), its
 * owner after it, all inside the block and the view, or a fault. */
Test(format, leases)
{
    /* a 64-byte block (class 3): payload 56 bytes; key 3 + value 2 after the
     * 8-byte lengths end at 13, so the lease is at 16 and its owner at 40 */
    unsigned char *r = calloc(1, SHMKV__PAGE);
    cr_assert(r);
    shmkv__chunk c = {.magic = SHMKV__CHUNK_MAGIC, .size = SHMKV__PAGE, .used = BLK + 64};
    memcpy(r + CH, &c, sizeof c);
    shmkv__block b = {.size = 64, .cls = 3, .flags = SHMKV__BF_USED | SHMKV__BF_LEASE};
    memcpy(r + BLK, &b, sizeof b);
    shmkv__entry e = {.klen = 3, .vlen = 2};
    memcpy(r + PAY, &e, sizeof e);
    cr_assert_eq(shmkv__lease_at(3, 2), 16);
    shmkv__lease l = {.token = 5, .expiry = 1234, .olen = 16};
    memcpy(r + PAY + 16, &l, sizeof l);
    shmkv__view v = {r, PAY + 56};
    shmkv__block bb;
    uint64_t bytes;
    shmkv__lease got;
    cr_assert_eq(shmkv__view_entry(&v, PAY, &bb, &e, &bytes), 0);
    cr_assert_eq(shmkv__view_lease(&v, PAY, &e, bytes, 5, UINT64_MAX, &got), 0);
    cr_assert_eq(got.token, 5);
    cr_assert_eq(got.expiry, 1234);
    cr_assert_eq(got.olen, 16);
    /* the owner's last byte is the block's and the view's */
    v.len--;
    cr_assert_eq(shmkv__view_lease(&v, PAY, &e, bytes, 5, UINT64_MAX, &got), SHMKV__F_LEASE);
    v.len++;
    l.olen = 17;
    memcpy(r + PAY + 16, &l, sizeof l);
    cr_assert_eq(shmkv__view_lease(&v, PAY, &e, bytes, 5, UINT64_MAX, &got), SHMKV__F_LEASE);
    l.olen = SHMKV_OWNER_MAX + 1;
    memcpy(r + PAY + 16, &l, sizeof l);
    cr_assert_eq(shmkv__view_lease(&v, PAY, &e, bytes, 5, UINT64_MAX, &got), SHMKV__F_OWNER);
    l.olen = UINT32_MAX;
    memcpy(r + PAY + 16, &l, sizeof l);
    cr_assert_eq(shmkv__view_lease(&v, PAY, &e, bytes, 5, UINT64_MAX, &got), SHMKV__F_OWNER);
    /* tokens: never 0, never past the last one issued */
    l.olen = 0;
    memcpy(r + PAY + 16, &l, sizeof l);
    cr_assert_eq(shmkv__view_lease(&v, PAY, &e, bytes, 5, UINT64_MAX, &got), 0);
    cr_assert_eq(shmkv__view_lease(&v, PAY, &e, bytes, 4, UINT64_MAX, &got), SHMKV__F_TOKEN);
    /* the end: never after the latest one granted */
    cr_assert_eq(shmkv__view_lease(&v, PAY, &e, bytes, 5, 1234, &got), 0);
    cr_assert_eq(shmkv__view_lease(&v, PAY, &e, bytes, 5, 1233, &got), SHMKV__F_EXPIRY);
    l.token = 0;
    memcpy(r + PAY + 16, &l, sizeof l);
    cr_assert_eq(shmkv__view_lease(&v, PAY, &e, bytes, 5, UINT64_MAX, &got), SHMKV__F_TOKEN);
    /* a value that leaves no room for the lease's fixed part */
    e.vlen = 21; /* lease at 32, 24 bytes: 56 fits exactly */
    cr_assert_eq(shmkv__view_lease(&v, PAY, &e, bytes, 5, UINT64_MAX, &got), SHMKV__F_TOKEN);
    e.vlen = 22; /* lease at 40: runs past the block */
    cr_assert_eq(shmkv__view_lease(&v, PAY, &e, bytes, 5, UINT64_MAX, &got), SHMKV__F_LEASE);
    cr_assert_eq(got.token, 0, "nothing read");
    e.vlen = UINT32_MAX;
    cr_assert_eq(shmkv__view_lease(&v, PAY, &e, bytes, 5, UINT64_MAX, &got), SHMKV__F_LEASE);
    e.vlen = 2;
    /* a view that ends inside the lease's fixed part */
    v.len = PAY + 16 + 23;
    cr_assert_eq(shmkv__view_lease(&v, PAY, &e, 64, 5, UINT64_MAX, &got), SHMKV__F_LEASE);
    free(r);
}

/* The index's packed counts and earliest expiry, as walkers sum them. */
Test(format, claimed_counts)
{
    cr_assert_eq(shmkv__bt_leaf_count(0), 1);
    cr_assert_eq(shmkv__bt_leaf_count(77), 1 | SHMKV__BT_ONE_HELD);
    cr_assert_eq(SHMKV__BT_KEYS(shmkv__bt_leaf_count(77)), 1);
    cr_assert_eq(SHMKV__BT_HELD(shmkv__bt_leaf_count(77)), 1);
    cr_assert_eq(shmkv__expiry_min(0, 0), 0);
    cr_assert_eq(shmkv__expiry_min(0, 9), 9);
    cr_assert_eq(shmkv__expiry_min(9, 0), 9);
    cr_assert_eq(shmkv__expiry_min(9, 3), 3);
    shmkv__bt_ent leaves[3] = {{.child = 0}, {.child = 50}, {.child = 20}};
    shmkv__bt_sum s = {0}, t = {0};
    for (int i = 0; i < 3; i++)
        shmkv__bt_sum_leaf(&s, &leaves[i]);
    cr_assert_eq(s.keys, 3);
    cr_assert_eq(s.held, 2);
    cr_assert_eq(s.earliest, 20);
    cr_assert(shmkv__bt_count_ok(3 | 2ull << 32, &s));
    cr_assert_not(shmkv__bt_count_ok(3, &s), "the claimed half counts");
    cr_assert_not(shmkv__bt_count_ok(4 | 2ull << 32, &s));
    shmkv__bt_sum_add(&t, &s);
    shmkv__bt_sum_add(&t, &(shmkv__bt_sum){.keys = 5});
    cr_assert_eq(t.keys, 8);
    cr_assert_eq(t.held, 2);
    cr_assert_eq(t.earliest, 20);
    cr_assert_not(shmkv__bt_count_ok(0, &(shmkv__bt_sum){.keys = 1ull << 32}), "keys overflow");
}
