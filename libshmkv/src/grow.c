/*
 * grow.c - chunks: the region's growth and the free pool of chunks.
 *
 * A chunk is a run of the region handed to one owner. New chunks come from
 * the free pool (chunks given back, owner SHMKV__OWNER_FREE) or are
 * appended at the region's top, which grows the file inside the mapping
 * (see docs/design.md: growth without remapping). All of it runs under the
 * growth lock, whose wrapper lives here because the pool's byte count is
 * what a holder that died can leave wrong.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

static inline shmkv__chunk *chunk_at(shmkv__map *m, uint64_t off)
{
    return (shmkv__chunk *)SHMKV__P(m, off);
}

static bool chunk_sane(const shmkv__chunk *c, uint64_t off, uint64_t top)
{
    return shmkv__chunk_check(c, off, top) == 0;
}

/* Give a chunk to the pool (growth lock held). The owner changes last:
 * until then it is an empty chunk of its old owner. */
void shmkv__pool_put(shmkv__map *m, uint64_t off)
{
    shmkv__chunk *c = chunk_at(m, off);
    c->used = SHMKV__CHUNK_HDR;
    c->next = 0;
    atomic_signal_fence(memory_order_release);
    SHMKV__HOOK("pool.put.mid");
    if (c->owner == SHMKV__OWNER_INDEX)
        SHMKV__HOOK("pool.put.mid.index");
    c->owner = SHMKV__OWNER_FREE;
    SHMKV__HDR(m)->pool_bytes += c->size;
}

int shmkv__pool_take(shmkv__map *m, uint32_t owner, uint64_t size, uint64_t *chunk_off)
{
    shmkv__hdr *h = SHMKV__HDR(m);
    if (h->pool_bytes < size)
        return 1;
    uint64_t top = atomic_load_explicit(&h->top, memory_order_acquire);
    uint64_t run = 0; /* first chunk of the current run of free neighbours */
    for (uint64_t off = h->data_off; off < top;) {
        shmkv__chunk *c = chunk_at(m, off);
        if (!chunk_sane(c, off, top))
            return 1; /* damaged: leave the pool alone, grow instead */
        uint64_t next = off + c->size;
        if (c->owner != SHMKV__OWNER_FREE) {
            run = 0;
            off = next;
            continue;
        }
        /* Neighbours merge with one store of the first one's size; the
         * second header is left behind as dead bytes inside it. */
        if (run)
            chunk_at(m, run)->size += c->size;
        else
            run = off;
        shmkv__chunk *r = chunk_at(m, run);
        if (r->size >= size) {
            if (r->size > size) {
                /* The rest stays free: its header first, then the cut. */
                shmkv__chunk *t = chunk_at(m, run + size);
                *t = (shmkv__chunk){ .magic = SHMKV__CHUNK_MAGIC, .owner = SHMKV__OWNER_FREE,
                                     .size = r->size - size, .used = SHMKV__CHUNK_HDR };
                atomic_signal_fence(memory_order_release);
                r->size = size;
            }
            h->pool_bytes -= size;
            r->used = SHMKV__CHUNK_HDR;
            r->next = 0;
            atomic_signal_fence(memory_order_release);
            SHMKV__HOOK("pool.take.mid");
            r->owner = owner;
            *chunk_off = run;
            return 0;
        }
        off = next;
    }
    return 1;
}

void shmkv__pool_recount(shmkv__map *m)
{
    shmkv__hdr *h = SHMKV__HDR(m);
    uint64_t top = atomic_load_explicit(&h->top, memory_order_acquire), sum = 0;
    for (uint64_t off = h->data_off; off < top; off += chunk_at(m, off)->size) {
        if (!chunk_sane(chunk_at(m, off), off, top))
            break;
        if (chunk_at(m, off)->owner == SHMKV__OWNER_FREE)
            sum += chunk_at(m, off)->size;
    }
    h->pool_bytes = sum;
}

int shmkv__grow_lock(shmkv__map *m)
{
    pthread_mutex_t *mu = &SHMKV__HDR(m)->grow_lock;
    int rc = shmkv__mutex_lock(mu);
    /* Growth publishes `top` last, after the chunk header and the
     * fallocate, and every chunk change leaves the chunks tiling: a dead
     * holder leaves at most the free pool's byte count off. */
    if (rc == SHMKV__OWNER_DIED) {
        shmkv__pool_recount(m);
        pthread_mutex_consistent(mu);
        rc = 0;
    }
    return rc;
}

void shmkv__grow_unlock(shmkv__map *m)
{
    pthread_mutex_unlock(&SHMKV__HDR(m)->grow_lock);
}

int shmkv__grow(shmkv__map *m, uint32_t owner, uint64_t size, uint64_t *chunk_off)
{
    shmkv__hdr *h = SHMKV__HDR(m);
    int rc = shmkv__grow_lock(m);
    if (rc)
        return rc;
    /* Chunks given back by other owners first: the file only grows when
     * the free pool has no run of chunks that large. */
    if (shmkv__pool_take(m, owner, size, chunk_off) == 0) {
        /* An index update's rollback hands back the chunks above where
         * the region's top was; one from the pool lies below, so the undo
         * log is told (still under the growth lock, so no other process
         * can take it from us first). */
        if (owner == SHMKV__OWNER_INDEX) {
            shmkv__undo_chunk(m, *chunk_off);
            SHMKV__HOOK("grow.pool.index");
        }
        goto out;
    }
    uint64_t top = atomic_load(&h->top);
    uint64_t end = top + size;
    if (end > m->reserve || end < top) {
        rc = SHMKV_EFULL;
        goto out;
    }
    /* The file's real size, not the header's idea of it: a copy cut back
     * to its used size would otherwise make us write past its end. */
    struct stat st;
    if (fstat(m->fd, &st) != 0) {
        rc = -errno;
        goto out;
    }
    uint64_t fs = (uint64_t)st.st_size;
    if (end > fs) {
        /* Allocate ahead (1/32: what lies ahead is held for nothing) so
         * that growth is rare, but when the disk cannot
         * give that much, settle for what this chunk needs. fallocate makes
         * a full disk an error here rather than a SIGBUS at first touch. */
        uint64_t want = fs + fs / 32;
        if (want < fs + (256u << 10))
            want = fs + (256u << 10);
        if (want < end)
            want = end;
        if (want > m->reserve)
            want = m->reserve;
        want = shmkv__page_up(want);
        int e = posix_fallocate(m->fd, (off_t)fs, (off_t)(want - fs));
        if (e && want > end) {
            want = end;
            e = posix_fallocate(m->fd, (off_t)fs, (off_t)(want - fs));
        }
        if (e) {
            rc = e == ENOSPC || e == EFBIG ? -ENOSPC : -e;
            goto out;
        }
        SHMKV__HOOK("grow.after_fallocate");
        atomic_store(&h->file_size, want);
    } else if (atomic_load(&h->file_size) < end) {
        /* A grower that died between its fallocate and the store above
         * left the file larger than the header says, and no fallocate
         * will come to correct it once the file has reached the reserve:
         * record what is there before `top` passes the header's idea. */
        atomic_store(&h->file_size, fs < m->reserve ? fs : m->reserve);
    }
    shmkv__chunk *c = (shmkv__chunk *)SHMKV__P(m, top);
    c->magic = SHMKV__CHUNK_MAGIC;
    c->owner = owner;
    c->size = size;
    c->used = SHMKV__CHUNK_HDR;
    c->next = 0;
    atomic_store_explicit(&h->top, end, memory_order_release);
    *chunk_off = top;
out:
    shmkv__grow_unlock(m);
    return rc;
}
