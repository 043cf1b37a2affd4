/*
 * integrity_walk.c - shmkv_check's bottom half: the problem log, the walk of
 * chunks and blocks over [data_off, top), and each allocator's counts and
 * free lists against that walk (see integrity.h).
 */
#include "integrity.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void shmkv__ick_problem(shmkv__ick *c, const char *fmt, ...)
{
    if (c->problems++ == 0 && c->msg && c->cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->msg, c->cap, fmt, ap);
        va_end(ap);
    }
}

const char *shmkv__ick_fault_name(int f)
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
    case SHMKV__F_LEASE: return "lease does not fit after the key and value";
    case SHMKV__F_OWNER: return "lease owner longer than 256 bytes";
    case SHMKV__F_TOKEN: return "lease token 0 or never issued";
    case SHMKV__F_EXPIRY: return "lease ends after the latest end granted";
    default: return "invalid";
    }
}

static int push_block(shmkv__ick *c, uint64_t off, uint32_t owner)
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
long shmkv__ick_block_index(const shmkv__ick *c, uint64_t payload)
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
bool shmkv__ick_block_ref(shmkv__ick *c, uint64_t payload, uint32_t owner, const char *what, uint32_t seg)
{
    long i = shmkv__ick_block_index(c, payload);
    if (i < 0) {
        shmkv__ick_problem(c, "%s of segment %" PRIu32 ": 0x%" PRIx64 " is not the start of a block",
                what, seg, payload);
        return false;
    }
    if (c->blk_owner[i] != owner) {
        shmkv__ick_problem(c, "%s of segment %" PRIu32 ": block 0x%" PRIx64 " belongs to owner %" PRIu32,
                what, seg, payload, c->blk_owner[i]);
        return false;
    }
    if (c->blk_ref[i]++) {
        shmkv__ick_problem(c, "%s of segment %" PRIu32 ": block 0x%" PRIx64 " is referenced twice", what,
                seg, payload);
        return false;
    }
    return true;
}

uint32_t shmkv__ick_owner_slot(const shmkv__ick *c, uint32_t owner)
{
    if (owner < c->h->nseg)
        return owner;
    return owner == SHMKV__OWNER_INDEX ? c->h->nseg : UINT32_MAX;
}

/* ---- chunks and blocks ------------------------------------------------------ */

int shmkv__ick_walk_region(shmkv__ick *c)
{
    uint64_t top = c->v.len, off = c->h->data_off;
    while (off < top) {
        shmkv__chunk ch;
        int f = shmkv__view_chunk(&c->v, off, top, &ch);
        if (f) {
            shmkv__ick_problem(c, "chunk at 0x%" PRIx64 ": %s; the region past it cannot be walked", off,
                    shmkv__ick_fault_name(f));
            return 0;
        }
        uint32_t slot = shmkv__ick_owner_slot(c, ch.owner);
        if (ch.owner == SHMKV__OWNER_FREE)
            c->pool += ch.size;
        else if (slot == UINT32_MAX)
            shmkv__ick_problem(c, "chunk at 0x%" PRIx64 ": owner %" PRIu32 " is not a segment, the index "
                    "or the free pool", off, ch.owner);
        if (slot != UINT32_MAX) {
            c->nchunks[slot]++;
            c->chunk_bytes[slot] += ch.size;
        }
        if (shmkv__chunk_used_check(&ch)) {
            shmkv__ick_problem(c, "chunk at 0x%" PRIx64 ": used %" PRIu64 " outside [%u, %" PRIu64 "]",
                    off, ch.used, SHMKV__CHUNK_HDR, ch.size);
        } else {
            for (uint64_t b = SHMKV__CHUNK_HDR, bs; b < ch.used; b += bs) {
                const shmkv__block *bh = shmkv__view_at(&c->v, off + b, SHMKV__BLOCK_HDR);
                shmkv__block blk;
                if (!bh) {
                    shmkv__ick_problem(c, "block at 0x%" PRIx64 ": header runs past the region end",
                            off + b);
                    break;
                }
                memcpy(&blk, bh, sizeof blk);
                if (shmkv__block_walk_check(&blk, b, &ch, &bs)) {
                    shmkv__ick_problem(c, "block at 0x%" PRIx64 ": size %" PRIu32 " / class %u invalid",
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

void shmkv__ick_check_alloc(shmkv__ick *c, uint32_t slot, const shmkv__alloc *a, const char *name,
                        uint32_t seg)
{
    if (!c->tiled)
        return;
    if (a->nchunks != c->nchunks[slot] || a->chunk_bytes != c->chunk_bytes[slot])
        shmkv__ick_problem(c, "%s %" PRIu32 ": allocator counts %" PRIu64 " chunks of %" PRIu64
                " bytes, the region has %" PRIu64 " of %" PRIu64, name, seg, a->nchunks,
                a->chunk_bytes, c->nchunks[slot], c->chunk_bytes[slot]);
    if (a->used_bytes != c->used_bytes[slot])
        shmkv__ick_problem(c, "%s %" PRIu32 ": allocator counts %" PRIu64 " bytes in use, its blocks "
                "hold %" PRIu64, name, seg, a->used_bytes, c->used_bytes[slot]);
}

/* Each free list: blocks of this owner and class, not in use, each met
 * once (a loop would hang the allocator). Marks the blocks it meets. */
void shmkv__ick_check_free_lists(shmkv__ick *c, const shmkv__alloc *a, uint32_t owner, const char *name,
                             uint32_t seg)
{
    if (!c->tiled)
        return;
    for (uint32_t cls = 0; cls < SHMKV__NCLASS; cls++) {
        uint64_t p = a->free_head[cls];
        for (size_t steps = 0; p; steps++) {
            long i = shmkv__ick_block_index(c, p);
            if (i < 0 || c->blk_owner[i] != owner || steps > c->nb) {
                shmkv__ick_problem(c, "%s %" PRIu32 ": free list of class %" PRIu32 " reaches 0x%" PRIx64
                        ", which is not a block of it", name, seg, cls, p);
                break;
            }
            const shmkv__block *b = shmkv__view_at(&c->v, p - SHMKV__BLOCK_HDR, sizeof *b);
            if (c->blk_ref[i]++ || b->cls != cls || (b->flags & SHMKV__BF_USED)) {
                shmkv__ick_problem(c, "%s %" PRIu32 ": free list of class %" PRIu32 " loops or holds "
                        "block 0x%" PRIx64 " of class %u%s", name, seg, cls, p, b->cls,
                        (b->flags & SHMKV__BF_USED) ? " in use" : "");
                break;
            }
            memcpy(&p, c->v.base + p, 8);
        }
    }
}
