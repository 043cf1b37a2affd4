/*
 * batch_get.c - get_many: the values of many keys as of one instant.
 */
#include "batch.h"

#include <errno.h>
#include <stdlib.h>

/* get_many first reads without locks, like get (reader.c): note the seq of
 * every involved segment, read them all, then check that no seq moved.
 * A batch holds all its segments from before its first store to after its
 * last, so if none of ours changed, no batch (or single write) touched our
 * keys while we read them: the values are one instant's. What is read
 * before the check may be garbage, so every offset is bounded by the
 * published top first, and the caller's items and buffer only count once
 * the check passed (a failed attempt is overwritten by the next one). */
SHMKV__SEQ_READER static bool get_many_unlocked(batch *b, shmkv_item *items, unsigned char *buf,
                                         size_t cap, uint32_t *seqs, const uint32_t *dead,
                                         size_t *used)
{
    shmkv__map *m = b->m;
    for (size_t j = 0; j < b->nsegs; j++) {
        seqs[j] = atomic_load_explicit(&shmkv__seg_at(m, b->segs[j])->seq, memory_order_acquire);
        if ((seqs[j] & 1) && !(dead && dead[j] == seqs[j]))
            return false;
    }
    uint64_t lo, top = shmkv__ro_top(m, &lo);
    size_t u = 0;
    for (size_t j = 0; j < b->nsegs; j++) {
        shmkv__ro_tab rt;
        if (shmkv__ro_table(m, shmkv__seg_at(m, b->segs[j]), seqs[j], lo, top, &rt))
            return false;
        for (size_t i = b->first[j]; i < b->first[j + 1]; i++) {
            bitem *x = &b->it[i];
            shmkv_item *out = &items[x->at];
            out->rc = SHMKV_ENOTFOUND;
            out->val = NULL;
            out->vlen = 0;
            out->kind = SHMKV_KIND_BYTES;
            if (!rt.t)
                continue;
            uint64_t off, ev;
            int rc = shmkv__ro_find(m, &rt, x->h, x->src->key, x->src->klen, &off, &ev);
            if (rc == SHMKV__READ_RETRY)
                return false;
            if (rc)
                continue;
            out->rc = 0;
            out->vlen = (size_t)ev;
            out->kind = (shmkv_kind)shmkv__block_of(m, off)->kind;
            if (u + ev <= cap) {
                out->val = buf + u;
                if (ev)
                    shmkv__racy_copy(buf + u, shmkv__entry_at(m, off)->data + x->src->klen,
                                     (size_t)ev);
            }
            u += (size_t)ev;
        }
        if (j == 0)
            SHMKV__HOOK("get_many.unlocked");
    }
    atomic_thread_fence(memory_order_acquire);
    for (size_t j = 0; j < b->nsegs; j++)
        if (atomic_load_explicit(&shmkv__seg_at(m, b->segs[j])->seq, memory_order_relaxed) != seqs[j])
            return false;
    *used = u;
    return true;
}

int shmkv_get_many(shmkv_db *db, shmkv_item *items, size_t n, void *buf, size_t cap,
                   size_t *need, size_t *bad)
{
    int rc = shmkv__batch_check_db(db);
    if (rc)
        return rc;
    if ((n && !items) || (cap && !buf))
        return SHMKV_EINVAL;
    if ((rc = shmkv__batch_check_keys(items, n, bad)) != 0)
        return rc;
    if (need)
        *need = 0;
    if (n == 0)
        return 0;
    batch b = {.db = db, .m = db->m};
    size_t used = 0;
    uint32_t *seqs = NULL, *dead = NULL;
    if ((rc = shmkv__batch_plan(&b, items, n, false)) != 0)
        goto out;
    if ((seqs = malloc(b.nsegs * sizeof *seqs)) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if (b.m->rdonly) {
        /* No lock to fall back on: read again until every involved segment
         * held still (or was left by a dead holder) for a whole attempt,
         * waiting for live holders as long as the call's lock timeout. */
        uint64_t start = shmkv__mono_ns();
        if ((dead = malloc(b.nsegs * sizeof *dead)) == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        for (int attempt = 0;; attempt++) {
            for (size_t j = 0; j < b.nsegs; j++)
                dead[j] = shmkv__dead_seq(b.m, shmkv__seg_at(b.m, b.segs[j]));
            if (get_many_unlocked(&b, items, buf, cap, seqs, dead, &used))
                break;
            if (!shmkv__ro_backoff(attempt, start)) {
                rc = SHMKV_ETIMEDOUT;
                goto out;
            }
        }
        rc = used > cap ? SHMKV_EBUFSIZE : 0;
        if (need)
            *need = used;
        goto out;
    }
    for (int attempt = 0; attempt < 4; attempt++) {
        if (get_many_unlocked(&b, items, buf, cap, seqs, NULL, &used)) {
            rc = used > cap ? SHMKV_EBUFSIZE : 0;
            if (need)
                *need = used;
            goto out;
        }
    }
    /* Busy segments (or a dead holder's, which the lock repairs): read
     * under all the locks instead. */
    used = 0;
    if ((rc = shmkv__batch_lock(&b, false)) != 0)
        goto out;
    for (size_t j = 0; j < b.nsegs; j++) {
        shmkv__table *t = shmkv__table_of(b.m, shmkv__seg_at(b.m, b.segs[j]));
        for (size_t i = b.first[j]; i < b.first[j + 1]; i++) {
            bitem *x = &b.it[i];
            shmkv_item *out = &items[x->at];
            shmkv__batch_lookup(b.m, t, x);
            out->rc = x->found ? 0 : SHMKV_ENOTFOUND;
            out->val = NULL;
            out->vlen = 0;
            out->kind = SHMKV_KIND_BYTES;
            if (!x->found)
                continue;
            const shmkv__entry *e = SHMKV__P(b.m, x->old);
            out->vlen = e->vlen;
            out->kind = (shmkv_kind)shmkv__block_of(b.m, x->old)->kind;
            if (used + e->vlen <= cap) {
                out->val = (unsigned char *)buf + used;
                if (e->vlen)
                    memcpy((unsigned char *)buf + used, e->data + e->klen, e->vlen);
            }
            used += e->vlen;
        }
    }
    shmkv__batch_unlock(&b);
    if (need)
        *need = used;
    rc = used > cap ? SHMKV_EBUFSIZE : 0;
out:
    free(seqs);
    free(dead);
    shmkv__batch_free(&b);
    return rc;
}
