/*
 * index_repair.c - the index lock and what keeps the index whole behind it:
 * undo-logged updates (begin, commit), the repair of an index whose lock
 * holder died (roll back, then reconcile the one key in doubt with its
 * segment), and the bulk paths, clear and rebuild, which are not logged:
 * they mark the index dirty or use the clear generation, and a dead holder
 * there costs a rebuild.
 */
#include "index.h"

#include <errno.h>
#include <stdlib.h>

static shmkv__ulog *ulog_of(shmkv__map *m)
{
    uint64_t off = shmkv__index_of(m)->ulog;
    return off ? (shmkv__ulog *)SHMKV__P(m, off) : NULL;
}

/* A fresh, idle log (the index lock held, no update running). Its own
 * allocation is not logged: the index stays marked dirty until the log is
 * published, so a process killed here costs a rebuild, nothing worse. */
static void ul_create(shmkv__map *m)
{
    /* After a failure, try again only once the region has grown, not on
     * every update of a store on a full disk. */
    static _Atomic uint64_t failed_at_top;
    shmkv__index *index = shmkv__index_of(m);
    uint64_t off, top = atomic_load(&SHMKV__HDR(m)->top);
    index->ulog = 0;
    if (atomic_load(&failed_at_top) == top)
        return;
    if (shmkv__alloc_block(m, &index->alloc, SHMKV__OWNER_INDEX,
                           SHMKV__ULOG_BYTES - SHMKV__BLOCK_HDR, &off) != 0) {
        atomic_store(&failed_at_top, top);
        return; /* no space: updates run unlogged, as before the log existed */
    }
    shmkv__ulog *lg = (shmkv__ulog *)SHMKV__P(m, off);
    memset(lg, 0, offsetof(shmkv__ulog, key));
    index->ulog = off;
}

void shmkv__index_begin(shmkv__map *m, uint32_t seg, const void *key, size_t klen)
{
    shmkv__ulog *lg = ulog_of(m);
    if (!lg)
        return;
    lg->seg = seg;
    lg->klen = (uint32_t)klen;
    if (key != lg->key)
        memcpy(lg->key, key, klen);
    lg->top0 = atomic_load_explicit(&SHMKV__HDR(m)->top, memory_order_acquire);
    lg->overflow = 0;
    atomic_store_explicit(&lg->used, 0, memory_order_relaxed);
    /* Everything above is in place before the log claims an update. */
    atomic_store_explicit(&lg->state, SHMKV__ULOG_ACTIVE, memory_order_release);
    atomic_signal_fence(memory_order_seq_cst);
    shmkv__undo_start(m, lg);
    /* root, karr, n, dirty and the allocator state, in one record */
    shmkv__index *index = shmkv__index_of(m);
    shmkv__undo_save(&index->root, offsetof(shmkv__index, gen) - offsetof(shmkv__index, root));
}

void shmkv__index_commit(shmkv__map *m)
{
    if (!shmkv__undo_active(m))
        return;
    shmkv__ulog *lg = ulog_of(m);
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&lg->state, SHMKV__ULOG_IDLE, memory_order_release);
    shmkv__undo_stop();
    /* Frees during the update kept their chunks (the log could not have
     * taken a give-back to the shared pool back). Give them back now, as a
     * step of its own: a holder killed in it leaves the log at TIDY, and
     * the repair rebuilds the index (and so its allocator) from scratch. */
    shmkv__index *ix = shmkv__index_of(m);
    bool empty = ix->n == 0 && ix->karr;
    if (!empty && !shmkv__alloc_wants_tidy(m, &ix->alloc))
        return;
    atomic_store_explicit(&lg->state, SHMKV__ULOG_TIDY, memory_order_release);
    atomic_signal_fence(memory_order_seq_cst);
    SHMKV__HOOK("index.tidy.begin");
    if (empty) {
        /* An empty index holds no key array; the next insert makes one. */
        uint64_t old = ix->karr;
        ix->karr = 0;
        shmkv__free_block(m, &ix->alloc, old);
    } else {
        shmkv__alloc_tidy(m, &ix->alloc);
    }
    SHMKV__HOOK("index.tidy");
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&lg->state, SHMKV__ULOG_IDLE, memory_order_release);
}

/* Write the records back, newest first; then give chunks the update grew
 * back to the allocator (its state is the one from before they existed).
 * False when the log cannot be trusted. */
static bool ul_rollback(shmkv__map *m, shmkv__ulog *lg)
{
    uint64_t top = atomic_load_explicit(&SHMKV__HDR(m)->top, memory_order_acquire);
    uint64_t used = atomic_load_explicit(&lg->used, memory_order_acquire);
    uint64_t cap = shmkv__ulog_cap(m, lg), data_off = SHMKV__HDR(m)->data_off;
    if (lg->overflow || used > cap || lg->top0 > top || lg->top0 < data_off)
        return false;
    uint32_t pos[SHMKV__ULOG_BYTES / 16];
    size_t n = 0;
    for (uint64_t at = 0; at < used;) {
        uint64_t off, len;
        memcpy(&off, lg->rec + at, 8);
        memcpy(&len, lg->rec + at + 8, 8);
        uint64_t sz = 16 + ((len + 7) & ~(uint64_t)7);
        /* The index struct sits below data_off; everything else in it. */
        if (sz > used - at || off + len > top || off + len < off ||
            n == sizeof pos / sizeof pos[0])
            return false;
        pos[n++] = (uint32_t)at;
        at += sz;
    }
    size_t all = n;
    while (n--) {
        uint64_t off, len;
        memcpy(&off, lg->rec + pos[n], 8);
        memcpy(&len, lg->rec + pos[n] + 8, 8);
        memcpy(SHMKV__P(m, off), lg->rec + pos[n] + 16, len);
    }
    shmkv__index *index = shmkv__index_of(m);
    /* Chunks the update took from the free pool (records of no bytes): its
     * allocator, now as before, does not know them. */
    for (size_t i = 0; i < all; i++) {
        uint64_t off, len;
        memcpy(&off, lg->rec + pos[i], 8);
        memcpy(&len, lg->rec + pos[i] + 8, 8);
        if (len || off >= lg->top0)
            continue; /* bytes, or a chunk that the walk below finds */
        shmkv__chunk *c = (shmkv__chunk *)SHMKV__P(m, off);
        if (off < data_off || shmkv__chunk_check(c, off, top))
            return false;
        if (c->owner == SHMKV__OWNER_INDEX)
            shmkv__alloc_adopt(m, &index->alloc, off);
    }
    for (uint64_t off = lg->top0; off < top;) {
        shmkv__chunk *c = (shmkv__chunk *)SHMKV__P(m, off);
        if (shmkv__chunk_check(c, off, top))
            return false;
        if (c->owner == SHMKV__OWNER_INDEX)
            shmkv__alloc_adopt(m, &index->alloc, off);
        off += c->size;
    }
    return true;
}

void shmkv__index_repair(shmkv__map *m)
{
    shmkv__index *index = shmkv__index_of(m);
    shmkv__ulog *lg = ulog_of(m);
    uint64_t gen = atomic_load(&SHMKV__HDR(m)->clear_gen);
    shmkv__undo_stop();
    if (index->gen != gen) {
        /* A clear() decided, then died before emptying the index. */
        shmkv__index_clear(m, gen);
        return;
    }
    if (atomic_load(&index->dirty) || !lg)
        goto rebuild;
    switch (atomic_load(&lg->state)) {
    case SHMKV__ULOG_IDLE:      /* died holding the lock, between updates */
    case SHMKV__ULOG_RECONCILE: /* already rolled back; settle finishes */
        return;
    case SHMKV__ULOG_ACTIVE:
        if (!ul_rollback(m, lg))
            goto rebuild;
        SHMKV__HOOK("index.rolled_back");
        atomic_store(&lg->state, SHMKV__ULOG_RECONCILE);
        return;
    default:
        goto rebuild;
    }
rebuild:
    atomic_store(&index->dirty, 1);
}

/* The claim the index should count for the key at lk: its lease's expiry
 * while it runs, else none. */
static uint64_t live_expiry(shmkv__map *m, const shmkv__lookup *lk)
{
    const shmkv__lease *ls = lk->found ? shmkv__entry_lease(m, lk->off) : NULL;
    return ls && ls->expiry > shmkv__lease_now(m) ? ls->expiry : 0;
}

/* The update of the key in lg was rolled back; the key's slot may or may
 * not have been published before its writer died. Make the index agree
 * with the table for that key alone, its claim included. Caller holds s
 * (the key's segment) and the index lock. */
static int reconcile(shmkv__map *m, shmkv__seg *s, shmkv__ulog *lg)
{
    shmkv__lookup lk;
    shmkv__seg_find(m, s, shmkv__hash(lg->key, lg->klen), lg->key, lg->klen, &lk);
    bool in_index = shmkv__index_has(m, lg->key, lg->klen);
    uint64_t exp = live_expiry(m, &lk);
    if (lk.found == in_index && (!lk.found || shmkv__index_lease_of(m, lg->key, lg->klen) == exp)) {
        atomic_store(&lg->state, SHMKV__ULOG_IDLE);
        return 0;
    }
    shmkv__index_begin(m, s->id, lg->key, lg->klen);
    SHMKV__HOOK("index.reconcile");
    int rc = 0;
    if (lk.found != in_index)
        rc = lk.found ? shmkv__index_insert(m, lg->key, lg->klen)
                      : shmkv__index_remove(m, lg->key, lg->klen);
    if (!rc && lk.found)
        rc = shmkv__index_lease_set(m, lg->key, lg->klen, exp);
    shmkv__index_commit(m);
    if (rc)
        atomic_store(&shmkv__index_of(m)->dirty, 1); /* e.g. no space: rebuild later */
    return 0;
}

int shmkv__index_settle(shmkv__map *m, shmkv__seg *held)
{
    shmkv__index *index = shmkv__index_of(m);
    shmkv__ulog *lg = ulog_of(m);
    if (!lg) {
        /* An old store, or no space earlier: try to start logging. */
        atomic_store(&index->dirty, 1);
        ul_create(m);
        atomic_store(&index->dirty, 0);
        return 0;
    }
    if (atomic_load(&lg->state) != SHMKV__ULOG_RECONCILE)
        return 0;
    shmkv__seg *s = shmkv__seg_at(m, lg->seg);
    if (held == s) {
        reconcile(m, s, lg);
        return 0;
    }
    /* The key's segment lock comes before the index lock: let go, take
     * both in order, and have the caller start over. */
    shmkv__index_unlock(m);
    if (held)
        shmkv__seg_unlock(held);
    int rc = shmkv__seg_lock(m, s);
    if (rc)
        return rc;
    rc = shmkv__index_lock_raw(m);
    if (rc) {
        shmkv__seg_unlock(s);
        return rc;
    }
    lg = ulog_of(m);
    if (!atomic_load(&index->dirty) && lg && atomic_load(&lg->state) == SHMKV__ULOG_RECONCILE &&
        shmkv__seg_at(m, lg->seg) == s)
        reconcile(m, s, lg);
    shmkv__index_unlock(m);
    shmkv__seg_unlock(s);
    return SHMKV__RESTART;
}

void shmkv__index_clear(shmkv__map *m, uint64_t gen)
{
    shmkv__index *index = shmkv__index_of(m);
    index->root = index->karr = index->n = 0;
    shmkv__alloc_reset(m, &index->alloc, SHMKV__OWNER_INDEX);
    ul_create(m); /* the reset forgot the old log's block */
    atomic_store(&index->dirty, 0);
    index->gen = gen;
}

static int blob_qcmp(const void *a, const void *b, void *arg)
{
    shmkv__map *m = arg;
    const shmkv__kblob *x = blob_at(m, *(const uint64_t *)a);
    const shmkv__kblob *y = blob_at(m, *(const uint64_t *)b);
    return shmkv__keycmp(x->key, x->klen, y->key, y->klen);
}

/* Build one tree level over items[0..n): blob offsets for the leaves, node
 * offsets above. The new nodes' offsets overwrite items from the front,
 * which is safe because node j reads only items at or past j. Entries are
 * spread evenly so that no node of a level is left nearly empty. */
static int build_level(shmkv__map *m, shmkv__index *index, uint64_t *items, uint64_t n,
                       bool leaf, uint64_t *nout)
{
    uint64_t groups = (n + BT_FILL - 1) / BT_FILL;
    for (uint64_t g = 0; g < groups; g++) {
        uint64_t a = n * g / groups, b = n * (g + 1) / groups, off;
        int rc = node_alloc(m, index, &off);
        if (rc < 0)
            return rc;
        node_init(m, off, leaf);
        shmkv__bt_node *nd = node_at(m, off);
        for (uint64_t i = a; i < b; i++) {
            shmkv__bt_ent *e = &nd->e[nd->n++];
            if (leaf) {
                const shmkv__kblob *kb = blob_at(m, items[i]);
                *e = (shmkv__bt_ent){ shmkv__pfx(kb->key, kb->klen), items[i], 0, 1 };
            } else {
                *e = ent_for(m, items[i]);
            }
        }
        items[g] = off;
    }
    *nout = groups;
    return 0;
}

static int count_claim(void *ctx, uint64_t off)
{
    shmkv__map *m = ctx;
    const shmkv__lease *ls = shmkv__entry_lease(m, off);
    if (!ls || ls->expiry <= shmkv__lease_now(m))
        return 0;
    const shmkv__entry *e = shmkv__entry_at(m, off);
    return shmkv__index_lease_set(m, e->data, e->klen, ls->expiry) ? SHMKV_ECORRUPT : 0;
}

/* The tree is built with every key unclaimed; count the live claims (a
 * lookup each: claims are few next to keys). */
static int count_claims(shmkv__map *m)
{
    shmkv__hdr *h = SHMKV__HDR(m);
    if (!atomic_load(&h->claim_token))
        return 0;
    for (uint32_t i = 0; i < h->nseg; i++) {
        int rc = shmkv__seg_visit(m, shmkv__seg_at(m, i), count_claim, m);
        if (rc)
            return rc;
    }
    return 0;
}

int shmkv__index_rebuild(shmkv__map *m)
{
    shmkv__hdr *h = SHMKV__HDR(m);
    shmkv__index *index = shmkv__index_of(m);
    uint64_t n = 0, k = 0, *items = NULL;
    int rc = 0;

    /* Until the end, a failure or a crash must leave the index marked. */
    atomic_store(&index->dirty, 1);
    shmkv__alloc_reset(m, &index->alloc, SHMKV__OWNER_INDEX);
    index->root = index->karr = index->n = 0;
    index->ulog = 0; /* its block was just forgotten */

    for (uint32_t i = 0; i < h->nseg; i++) {
        uint64_t t = atomic_load(&shmkv__seg_at(m, i)->table);
        if (!t)
            continue;
        shmkv__table *tb = SHMKV__P(m, t);
        for (uint64_t j = 0; j < tb->cap; j++)
            n += SHMKV__SLOT_LIVE(atomic_load(&tb->slot[j]));
    }
    if (n == 0)
        goto done;
    if (n > UINT32_MAX)
        return SHMKV_ETOOMANY; /* kblob.pos is 32 bits */
    if (!(items = malloc(n * sizeof(*items))))
        return -ENOMEM;

    for (uint32_t i = 0; i < h->nseg && k < n; i++) {
        uint64_t t = atomic_load(&shmkv__seg_at(m, i)->table);
        if (!t)
            continue;
        shmkv__table *tb = SHMKV__P(m, t);
        for (uint64_t j = 0; j < tb->cap && k < n; j++) {
            uint64_t w = atomic_load(&tb->slot[j]);
            if (!SHMKV__SLOT_LIVE(w))
                continue;
            const shmkv__entry *en = SHMKV__P(m, SHMKV__SLOT_OFF(w));
            /* Also run on stores found unclean: a bad slot must not crash. */
            if (!shmkv__in_region(m, SHMKV__SLOT_OFF(w), sizeof(*en)) || en->klen == 0 ||
                en->klen > SHMKV_KEY_MAX) {
                rc = SHMKV_ECORRUPT;
                goto out;
            }
            if ((rc = shmkv__alloc_block(m, &index->alloc, SHMKV__OWNER_INDEX,
                                         sizeof(shmkv__kblob) + en->klen, &items[k])) < 0)
                goto out;
            shmkv__kblob *kb = blob_at(m, items[k]);
            kb->klen = en->klen;
            memcpy(kb->key, en->data, en->klen);
            k++;
        }
    }
    n = k;
    qsort_r(items, n, sizeof(*items), blob_qcmp, m);

    uint64_t cap = 16, arr;
    while (cap < n)
        cap *= 2;
    if ((rc = shmkv__alloc_block(m, &index->alloc, SHMKV__OWNER_INDEX,
                                 sizeof(shmkv__karr) + cap * sizeof(uint64_t), &arr)) < 0)
        goto out;
    shmkv__karr *ka = (shmkv__karr *)SHMKV__P(m, arr);
    ka->cap = cap;
    for (uint64_t i = 0; i < n; i++) {
        ka->off[i] = items[i];
        blob_at(m, items[i])->pos = (uint32_t)i;
    }

    bool leaf = true;
    for (k = n; leaf || k > 1; leaf = false)
        if ((rc = build_level(m, index, items, k, leaf, &k)) < 0)
            goto out;
    index->root = items[0];
    index->karr = arr;
    index->n = n;
    if ((rc = count_claims(m)) < 0)
        goto out;
done:
    ul_create(m); /* last: the keys have the first claim on the space */
    /* Built from tables that every pending clear has reached (the caller
     * holds every segment lock, each repaired on the way in). */
    index->gen = atomic_load(&h->clear_gen);
    atomic_store(&index->dirty, 0);
out:
    free(items);
    return rc;
}

int shmkv__index_lock_raw(shmkv__map *m)
{
    shmkv__index *ix = shmkv__index_of(m);
    int rc = shmkv__mutex_lock(&ix->lock);
    if (rc != SHMKV__OWNER_DIED)
        return rc;
    atomic_fetch_add(&SHMKV__HDR(m)->recoveries, 1);
    shmkv__index_repair(m);
    pthread_mutex_consistent(&ix->lock);
    return 0;
}

void shmkv__index_unlock(shmkv__map *m)
{
    pthread_mutex_unlock(&shmkv__index_of(m)->lock);
}

int shmkv__hold_all(shmkv__map *m)
{
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
    }
    return rc;
}

void shmkv__release_all(shmkv__map *m)
{
    shmkv__grow_unlock(m);
    shmkv__index_unlock(m);
    shmkv__unlock_all(m);
}

/* Rebuild the index under every lock: what repairs a dead index owner
 * when its undo log cannot (an old store without one, a log overflow, a
 * rebuild or log creation cut short), and what rebuild_index() does. */
static int rebuild_all(shmkv__map *m, bool only_if_dirty)
{
    int rc = shmkv__lock_all(m);
    if (rc)
        return rc;
    rc = shmkv__index_lock_raw(m);
    if (!rc) {
        /* Several processes that found it marked queue up here: the
         * first rebuilds, the others find it clean and need not. */
        if (!only_if_dirty || atomic_load(&shmkv__index_of(m)->dirty))
            rc = shmkv__index_rebuild(m);
        shmkv__index_unlock(m);
    }
    shmkv__unlock_all(m);
    return rc;
}

int shmkv__index_rebuild_all(shmkv__map *m)
{
    return rebuild_all(m, false);
}

/* A rebuild allocates a whole new index. When the disk, /dev/shm or the
 * reserve cannot give that room, the index stays marked dirty and the
 * store goes on without it (NOINDEX): the tables alone hold the data, and
 * the marked index is rebuilt from them once a try succeeds. Tries are
 * spaced out so that every write does not pay an O(n) failed rebuild. */
#define IDX_RETRY_NS 1000000000u

static bool no_room(int rc)
{
    return rc == -ENOSPC || rc == SHMKV_EFULL || rc == -ENOMEM || rc == -EFBIG;
}

int shmkv__index_lock(shmkv__map *m, shmkv__seg *held)
{
    int rc = shmkv__index_lock_raw(m);
    if (rc) {
        if (held)
            shmkv__seg_unlock(held);
        return rc;
    }
    if (!atomic_load(&shmkv__index_of(m)->dirty))
        return shmkv__index_settle(m, held);
    if (shmkv__index_deferred(m)) {
        shmkv__index_unlock(m);
        return SHMKV__NOINDEX;
    }
    /* Rebuilding needs every segment lock, which may not be taken while
     * holding the index lock or a higher segment: drop everything. After
     * a try that found no room, the restarted call finds it deferred. */
    shmkv__index_unlock(m);
    if (held)
        shmkv__seg_unlock(held);
    rc = shmkv__index_rebuild_or_defer(m);
    return rc ? rc : SHMKV__RESTART;
}

bool shmkv__index_deferred(shmkv__map *m)
{
    return atomic_load(&shmkv__index_of(m)->dirty) &&
           shmkv__mono_ns() < atomic_load(&m->index_retry_ns);
}

int shmkv__index_rebuild_or_defer(shmkv__map *m)
{
    int rc = rebuild_all(m, true);
    if (no_room(rc)) {
        atomic_store(&m->index_retry_ns, shmkv__mono_ns() + IDX_RETRY_NS);
        return 0;
    }
    if (!rc)
        atomic_store(&m->index_retry_ns, 0);
    return rc;
}

int shmkv__index_enter(shmkv__map *m)
{
    int rc;
    while ((rc = shmkv__index_lock(m, NULL)) == SHMKV__RESTART)
        ;
    return rc;
}

bool shmkv__index_no_room(int rc)
{
    return no_room(rc);
}

/* Every write reads track_keys under its segment lock, and this sets it
 * holding all of them plus the index lock, right after building the index:
 * a process that opened the store before sees tracking on at its next
 * write and keeps the index current from then on. */
int shmkv__track_on(shmkv__map *m)
{
    shmkv__hdr *h = SHMKV__HDR(m);
    if (__atomic_load_n(&h->track_keys, __ATOMIC_ACQUIRE))
        return 0;
    int rc = shmkv__lock_all(m);
    if (rc)
        return rc;
    if ((rc = shmkv__index_lock_raw(m)) == 0) {
        if (!h->track_keys && (rc = shmkv__index_rebuild(m)) == 0)
            __atomic_store_n(&h->track_keys, 1, __ATOMIC_RELEASE);
        shmkv__index_unlock(m);
    }
    shmkv__unlock_all(m);
    return rc;
}
