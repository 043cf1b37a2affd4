/*
 * scan.c - walk the region's chunks and each chunk's blocks, trusting
 * nothing: the walk stops at the first header it cannot make sense of
 * (reporting it) instead of following it.
 */
#include "dump.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

const char *ref_name(int ref)
{
    switch (ref) {
    case REF_ENTRY: return "a table slot (entry)";
    case REF_TABLE: return "a segment (table)";
    case REF_NODE: return "the index tree (node)";
    case REF_BLOB: return "the index tree (key blob)";
    case REF_KARR: return "the index (key array)";
    case REF_FREE: return "a free list";
    case REF_ULOG: return "the index (undo log)";
    default: return "nothing";
    }
}

uint32_t max_class(void)
{
    return SHMKV__NCLASS;
}

static int push_chunk(scan *sc, const chk *c)
{
    if (sc->nc == sc->capc) {
        size_t n = sc->capc ? sc->capc * 2 : 64;
        chk *p = realloc(sc->c, n * sizeof *p);
        if (!p)
            return -ENOMEM;
        sc->c = p;
        sc->capc = n;
    }
    sc->c[sc->nc++] = *c;
    return 0;
}

static int push_blk(scan *sc, const blk *b)
{
    if (sc->nb == sc->capb) {
        size_t n = sc->capb ? sc->capb * 2 : 1024;
        blk *p = realloc(sc->b, n * sizeof *p);
        if (!p)
            return -ENOMEM;
        sc->b = p;
        sc->capb = n;
    }
    sc->b[sc->nb++] = *b;
    return 0;
}

static bool owner_ok(const shmkv__hdr *h, uint32_t owner)
{
    return owner < h->nseg || owner == SHMKV__OWNER_INDEX || owner == SHMKV__OWNER_FREE;
}

int scan_region(const view *v, const shmkv__hdr *h, scan *sc, report *rep)
{
    uint64_t top = atomic_load_explicit(&h->top, memory_order_relaxed);
    memset(sc, 0, sizeof *sc);
    if (top > v->len) {
        if (rep)
            prob(rep, "header: region end (top) %" PRIu64 " lies beyond the %" PRIu64
                 " bytes of the file", top, v->len);
        top = v->len;
    }
    uint64_t off = h->data_off;
    bool broken = false;
    while (off < top) {
        shmkv__chunk ch;
        int f = shmkv__view_chunk(v, off, top, &ch);
        if (f == SHMKV__F_OUTSIDE) {
            if (rep)
                prob(rep, "chunk at 0x%" PRIx64 ": header runs past the region end", off);
            broken = true;
            break;
        }
        if (f == SHMKV__F_MAGIC) {
            if (rep)
                prob(rep, "chunk at 0x%" PRIx64 ": bad magic 0x%08" PRIx32
                     " (chunk chain broken: the %" PRIu64 " bytes up to the region end "
                     "cannot be walked)", off, ch.magic, top - off);
            broken = true;
            break;
        }
        if (f) {
            if (rep)
                prob(rep, "chunk at 0x%" PRIx64 ": bad size %" PRIu64 " (multiple of %u "
                     "within the %" PRIu64 " bytes left; chunk chain broken)", off, ch.size,
                     SHMKV__PAGE, top - off);
            broken = true;
            break;
        }
        chk c = {0};
        c.off = off;
        c.size = ch.size;
        c.used = ch.used;
        c.next = ch.next;
        c.owner = ch.owner;
        c.first = sc->nb;
        if (!owner_ok(h, ch.owner) && rep)
            prob(rep, "chunk at 0x%" PRIx64 ": owner %" PRIu32 " is neither a segment "
                 "(< %" PRIu32 ") nor the index nor the free pool", off, ch.owner, h->nseg);
        if (shmkv__chunk_used_check(&ch)) {
            if (rep)
                prob(rep, "chunk at 0x%" PRIx64 ": used %" PRIu64 " outside [%u, %" PRIu64
                     "]; its blocks cannot be walked", off, ch.used, SHMKV__CHUNK_HDR, ch.size);
        } else {
            uint64_t b = off + SHMKV__CHUNK_HDR, end = off + ch.used;
            c.blocks_ok = true;
            while (b < end) {
                shmkv__block bh;
                if (!vcopy(v, b, &bh, sizeof bh)) {
                    c.blocks_ok = false;
                    break;
                }
                uint64_t bsz;
                if (shmkv__block_walk_check(&bh, b - off, &ch, &bsz)) {
                    if (rep)
                        prob(rep, "chunk at 0x%" PRIx64 ": block at 0x%" PRIx64 ": size %"
                             PRIu32 " / class %u invalid (%" PRIu64 " bytes left in the "
                             "chunk); the rest of the chunk cannot be walked", off, b,
                             bh.size, bh.cls, end - b);
                    c.blocks_ok = false;
                    break;
                }
                blk k = {0};
                k.off = b;
                k.size = bsz;
                k.owner = ch.owner;
                k.cls = bh.cls;
                k.flags = bh.flags;
                k.kind = bh.kind;
                k.chunk = (uint32_t)sc->nc;
                if (push_blk(sc, &k) < 0)
                    return -ENOMEM;
                b += bsz;
            }
        }
        c.nblk = sc->nb - c.first;
        if (push_chunk(sc, &c) < 0)
            return -ENOMEM;
        off += ch.size;
    }
    sc->end = off;
    sc->tiled = !broken && off == top;
    return 0;
}

void scan_free(scan *sc)
{
    free(sc->c);
    free(sc->b);
    memset(sc, 0, sizeof *sc);
}

long scan_find(const scan *sc, uint64_t payload)
{
    if (payload < SHMKV__BLOCK_HDR)
        return -1;
    uint64_t want = payload - SHMKV__BLOCK_HDR;
    size_t lo = 0, hi = sc->nb;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sc->b[mid].off < want)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < sc->nb && sc->b[lo].off == want)
        return (long)lo;
    return -1;
}

long scan_chunk_of(const scan *sc, uint64_t off)
{
    size_t lo = 0, hi = sc->nc;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sc->c[mid].off + sc->c[mid].size <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < sc->nc && sc->c[lo].off <= off && off < sc->c[lo].off + sc->c[lo].size)
        return (long)lo;
    return -1;
}
