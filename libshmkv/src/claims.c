/*
 * claims.c - claims (leases on keys) and pop_random.
 *
 * A claim lives in its key's entry: a lease (token, expiry, owner) after
 * the key and value, flagged in the block header (format.h). Claiming,
 * renewing or releasing a key writes a new entry, out of place, with the
 * new lease or none, and publishes it with the one slot store every write
 * uses; completing with the key's deletion is a delete. So the segment lock
 * covers a key and its claim together, and a process killed anywhere
 * leaves the old entry or the new one, never a half-made claim.
 *
 * With key tracking the index also counts, per subtree, how many keys are
 * claimed and the earliest expiry among them (index.c), updated under its
 * undo log in the same critical section. claim_random and pop_random draw
 * among the keys the index counts as unclaimed in O(log n), however many
 * are claimed; claims that ran out are found by the earliest expiries and
 * counted unclaimed again by the next draw, one O(log n) step each, never
 * by a sweep. Without tracking they draw random keys, then count and walk
 * the segments.
 *
 * The lease clock is CLOCK_BOOTTIME plus the store's lease_base (set for
 * each boot by the first writer after it, create.c), so every process on
 * the host agrees on it. Tokens come from one counter in the header: each
 * claim takes the next, so a token identifies one claim of one key, and a
 * holder whose lease ran out (even if the key was claimed again since)
 * cannot release, complete or renew with its old token.
 */
#include "internal.h"

#include <errno.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef shmkv__op cop;

/* A lease as claims build it: the header and room for the owner. */
typedef struct lease_buf {
    alignas(8) unsigned char b[sizeof(shmkv__lease) + SHMKV_OWNER_MAX];
} lease_buf;

#define PICK_AGAIN 0x41474e21 /* "AGN!": the drawn key was taken meanwhile */
#define PICK_TRIES 1000

static void cop_unlock(cop *c)
{
    if (c->locked)
        shmkv__seg_unlock(c->s);
    c->locked = false;
}


/* The live lease of the found key, or NULL. */
static const shmkv__lease *live_lease(cop *c, uint64_t now)
{
    const shmkv__lease *ls = c->lk.found ? shmkv__entry_lease(c->m, c->lk.off) : NULL;
    return ls && ls->expiry > now ? ls : NULL;
}

static uint64_t ttl_ns(const shmkv_lease *o)
{
    uint64_t ms = o && o->ttl_ms ? o->ttl_ms : SHMKV_TTL_DEFAULT_MS;
    return ms * 1000000u;
}

static int check_lease(const shmkv_lease *o)
{
    if (!o)
        return 0;
    if (o->olen > SHMKV_OWNER_MAX || (o->olen && !o->owner) || o->ttl_ms > SHMKV_TTL_MAX_MS)
        return SHMKV_EINVAL;
    return 0;
}

static int check_db(shmkv_db *db, bool write)
{
    if (!shmkv__db_usable(db))
        return SHMKV_EINVAL;
    if (write && (db->flags & SHMKV_RDONLY))
        return SHMKV_EREADONLY;
    if (db->m->rdonly)
        return SHMKV_EREADONLY; /* claims read and write under the segment locks */
    shmkv__call_begin(db);
    return 0;
}

/* A call on one key: the handle, the key, the lease asked for (may be
 * NULL). */
static int check_call(shmkv_db *db, bool write, const void *key, size_t klen,
                      const shmkv_lease *lease)
{
    int rc = check_db(db, write);
    if (!rc && (klen == 0 || klen > SHMKV_KEY_MAX || !key))
        rc = SHMKV_EKEYSIZE;
    return rc ? rc : check_lease(lease);
}

static void fill_claim(shmkv_claim *out, uint64_t token, uint64_t expiry, uint64_t now)
{
    if (!out)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t left = expiry > now ? expiry - now : 0;
    out->token = token;
    out->ttl_ms = (left + 999999u) / 1000000u;
    out->expires_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + (int64_t)out->ttl_ms;
}

static void raise_high(shmkv__hdr *h, uint64_t exp)
{
    uint64_t cur = atomic_load(&h->lease_high);
    while (cur < exp && !atomic_compare_exchange_weak(&h->lease_high, &cur, exp))
        ;
}

/* The value of the found key into the caller's buffer: checked before
 * anything changes, copied while the entry is still there. */
static int value_fits(cop *c, const void *vbuf, size_t cap, size_t *vlen)
{
    const shmkv__entry *e = shmkv__entry_at(c->m, c->lk.off);
    if (vlen)
        *vlen = e->vlen;
    return vbuf && e->vlen > cap ? SHMKV_EBUFSIZE : 0;
}

static void value_copy(cop *c, void *vbuf, shmkv_kind *kind)
{
    const shmkv__entry *e = shmkv__entry_at(c->m, c->lk.off);
    if (vbuf && e->vlen)
        memcpy(vbuf, e->data + e->klen, e->vlen);
    if (kind)
        *kind = (shmkv_kind)shmkv__block_of(c->m, c->lk.off)->kind;
}

static void hook(const char *op, const char *point)
{
    if (!shmkv__test_hook)
        return;
    char name[64];
    snprintf(name, sizeof name, "claims.%s.%s", op, point);
    shmkv__test_hook(name);
}

/* Replace the found key's entry by one with the same key and value and
 * lease ls (NULL: no claim), and make the index count it. */
static int republish(cop *c, const shmkv__lease *ls, const char *op)
{
    shmkv__map *m = c->m;
    /* The index first: a failure there must not leave a block behind. */
    int rc = shmkv__op_index_open(c);
    if (rc < 0 || rc == SHMKV__RESTART)
        return rc;
    bool track = rc == 1;
    const shmkv__entry *e = shmkv__entry_at(m, c->lk.off);
    shmkv_kind kind = (shmkv_kind)shmkv__block_of(m, c->lk.off)->kind;
    uint64_t noff;
    rc = shmkv__entry_make(m, c->s, e->data, e->klen, e->data + e->klen, e->vlen, kind, ls, &noff);
    if (rc) {
        if (track)
            shmkv__op_index_close(c);
        return rc;
    }
    hook(op, "built");
    if (track) {
        rc = shmkv__index_lease_set(m, c->key, c->klen, ls ? ls->expiry : 0);
        if (rc == SHMKV_ENOTFOUND) {
            /* The index lacks a key its table has: only damage does that. */
            atomic_store(&shmkv__index_of(m)->dirty, 1);
            rc = 0;
        }
        if (rc) {
            shmkv__op_index_close(c);
            shmkv__free_block(m, &c->s->alloc, noff);
            return rc;
        }
        hook(op, "indexed");
    }
    uint64_t old = c->lk.off;
    shmkv__seg_replace(&c->lk, c->h, noff);
    hook(op, "published");
    if (track)
        shmkv__op_index_close(c);
    shmkv__op_sync(c, noff);
    shmkv__free_block(m, &c->s->alloc, old);
    c->lk.off = noff;
    return 0;
}

/* Delete the found key (its claim goes with it). */
static int remove_key(cop *c, const char *op)
{
    shmkv__map *m = c->m;
    hook(op, "built");
    int rc = shmkv__op_index_open(c);
    if (rc < 0 || rc == SHMKV__RESTART)
        return rc;
    bool track = rc == 1;
    if (track) {
        if ((rc = shmkv__index_remove(m, c->key, c->klen)) != 0) {
            shmkv__op_index_close(c);
            return rc;
        }
        hook(op, "indexed");
    }
    uint64_t old = c->lk.off;
    shmkv__seg_remove(c->s, &c->lk);
    hook(op, "published");
    if (track)
        shmkv__op_index_close(c);
    shmkv__op_sync(c, 0);
    shmkv__free_block(m, &c->s->alloc, old);
    shmkv__seg_shrink(m, c->s, &c->lk);
    c->lk.found = false;
    return 0;
}

/* A new claim on the found, unclaimed key. */
static int take(cop *c, const shmkv_lease *o, uint64_t now, shmkv_claim *out)
{
    shmkv__hdr *h = SHMKV__HDR(c->m);
    lease_buf lb;
    shmkv__lease *ls = (shmkv__lease *)lb.b;
    ls->expiry = now + ttl_ns(o);
    ls->olen = o ? (uint32_t)o->olen : 0;
    ls->pad = 0;
    if (ls->olen)
        memcpy(ls->owner, o->owner, ls->olen);
    /* A store's first claim starts its tokens at a random multiple of 2^32
     * below 2^52, so that a token of another store (a script holding refs
     * of two stores) is not taken for one of this store's; there is room
     * for 2^52 claims before tokens leave the integers a double holds. */
    uint64_t t = atomic_load(&h->claim_token);
    if (t == 0) {
        uint64_t base = (shmkv__rand_below((1ull << 20) - 1) + 1) << 32;
        atomic_compare_exchange_strong(&h->claim_token, &t, base);
    }
    /* Taken under the segment lock, so a key's tokens grow in the order of
     * its claims; a step that fails after this only skips a number. */
    ls->token = atomic_fetch_add(&h->claim_token, 1) + 1;
    raise_high(h, ls->expiry);
    int rc = republish(c, ls, "claim");
    if (rc == 0)
        fill_claim(out, ls->token, ls->expiry, now);
    return rc;
}

/* ---- one named key -------------------------------------------------------------- */

int shmkv_claim_key(shmkv_db *db, const void *key, size_t klen, const shmkv_lease *lease,
                    shmkv_claim *out, void *vbuf, size_t cap, size_t *vlen, shmkv_kind *kind)
{
    int rc = check_call(db, true, key, klen, lease);
    if (!rc && cap && !vbuf)
        rc = SHMKV_EINVAL;
    if (rc)
        return rc;
    cop c;
    shmkv__op_init(&c, db, key, klen);
    do {
        if ((rc = shmkv__op_begin(&c)) != 0)
            return rc;
        uint64_t now = shmkv__lease_now(c.m);
        if (!c.lk.found)
            rc = SHMKV_ENOTFOUND;
        else if (live_lease(&c, now))
            rc = SHMKV_EHELD;
        else if ((rc = value_fits(&c, vbuf, cap, vlen)) == 0) {
            value_copy(&c, vbuf, kind);
            rc = take(&c, lease, now, out);
        }
    } while (rc == SHMKV__RESTART);
    cop_unlock(&c);
    return rc;
}

/* Release, complete or renew: find the key's live claim `token`. */
typedef enum { END_RELEASE, END_COMPLETE, END_DELETE, END_RENEW } end_kind;

static int end_claim(shmkv_db *db, const void *key, size_t klen, uint64_t token, end_kind how,
                     const shmkv_lease *lease, shmkv_claim *out)
{
    int rc = check_call(db, true, key, klen, lease);
    if (rc)
        return rc;
    static const char *const names[] = { "release", "complete", "complete", "renew" };
    cop c;
    shmkv__op_init(&c, db, key, klen);
    do {
        if ((rc = shmkv__op_begin(&c)) != 0)
            return rc;
        uint64_t now = shmkv__lease_now(c.m);
        const shmkv__lease *ls = live_lease(&c, now);
        if (!ls || ls->token != token || token == 0) {
            rc = SHMKV_ESTALE;
        } else if (how == END_DELETE) {
            rc = remove_key(&c, names[how]);
        } else if (how == END_RENEW) {
            lease_buf lb;
            shmkv__lease *nl = (shmkv__lease *)lb.b;
            memcpy(nl, ls, sizeof *ls + ls->olen);
            nl->expiry = now + ttl_ns(lease);
            raise_high(SHMKV__HDR(c.m), nl->expiry);
            if ((rc = republish(&c, nl, names[how])) == 0)
                fill_claim(out, token, nl->expiry, now);
        } else {
            rc = republish(&c, NULL, names[how]);
        }
    } while (rc == SHMKV__RESTART);
    cop_unlock(&c);
    return rc;
}

int shmkv_claim_release(shmkv_db *db, const void *key, size_t klen, uint64_t token)
{
    return end_claim(db, key, klen, token, END_RELEASE, NULL, NULL);
}

int shmkv_claim_complete(shmkv_db *db, const void *key, size_t klen, uint64_t token,
                         int delete_key)
{
    return end_claim(db, key, klen, token, delete_key ? END_DELETE : END_COMPLETE, NULL, NULL);
}

int shmkv_claim_renew(shmkv_db *db, const void *key, size_t klen, uint64_t token,
                      const shmkv_lease *lease, shmkv_claim *out)
{
    return end_claim(db, key, klen, token, END_RENEW, lease, out);
}

int shmkv_claim_get(shmkv_db *db, const void *key, size_t klen, shmkv_claim *out, void *owner,
                    size_t ocap, size_t *olen)
{
    int rc = check_call(db, false, key, klen, NULL);
    if (!rc && ocap && !owner)
        rc = SHMKV_EINVAL;
    if (rc)
        return rc;
    cop c;
    shmkv__op_init(&c, db, key, klen);
    if ((rc = shmkv__op_begin(&c)) != 0)
        return rc;
    uint64_t now = shmkv__lease_now(c.m);
    const shmkv__lease *ls = live_lease(&c, now);
    if (!c.lk.found) {
        rc = SHMKV_ENOTFOUND;
    } else if (!ls) {
        rc = SHMKV_ESTALE;
    } else {
        fill_claim(out, ls->token, ls->expiry, now);
        if (olen)
            *olen = ls->olen;
        if (owner && ls->olen > ocap)
            rc = SHMKV_EBUFSIZE;
        else if (owner && ls->olen)
            memcpy(owner, ls->owner, ls->olen);
    }
    cop_unlock(&c);
    return rc;
}

/* ---- counting ------------------------------------------------------------------- */

typedef struct tally {
    shmkv__map *m;
    const void *prefix;
    size_t plen;
    uint64_t now;
    uint64_t live, expired;
} tally;

static int tally_one(void *ctx, uint64_t off)
{
    tally *t = ctx;
    const shmkv__lease *ls = shmkv__entry_lease(t->m, off);
    if (!ls)
        return 0;
    const shmkv__entry *e = shmkv__entry_at(t->m, off);
    if (!shmkv__has_prefix(e->data, e->klen, t->prefix, t->plen))
        return 0;
    if (ls->expiry > t->now)
        t->live++;
    else
        t->expired++;
    return 0;
}

int shmkv_claim_count(shmkv_db *db, const void *prefix, size_t plen, uint64_t *live,
                      uint64_t *expired)
{
    int rc = check_db(db, false);
    if (rc)
        return rc;
    if (plen && !prefix)
        return SHMKV_EINVAL;
    shmkv__map *m = db->m;
    tally t = { .m = m, .prefix = prefix, .plen = plen };
    if (atomic_load(&SHMKV__HDR(m)->claim_token)) { /* no claim ever: nothing to count */
        for (uint32_t i = 0; i < SHMKV__HDR(m)->nseg; i++) {
            shmkv__seg *s = shmkv__seg_at(m, i);
            if ((rc = shmkv__seg_lock(m, s)) != 0)
                return rc;
            t.now = shmkv__lease_now(m);
            shmkv__seg_visit(m, s, tally_one, &t);
            shmkv__seg_unlock(s);
        }
    }
    if (live)
        *live = t.live;
    if (expired)
        *expired = t.expired;
    return 0;
}

/* ---- drawing a claimable key ----------------------------------------------------------- */

/* What to do with the drawn key, under its segment lock: claim it or pop
 * it. Returns 0, an error, SHMKV__RESTART (lock dropped, draw again). */
typedef struct act {
    bool pop;
    const shmkv_lease *lease;
    shmkv_claim *out;
    void *kbuf, *vbuf;
    size_t kcap, cap;
    size_t *klen, *vlen;
    shmkv_kind *kind;
} act;

static int act_on(cop *c, act *a, uint64_t now)
{
    if (a->klen)
        *a->klen = c->klen;
    if (c->klen > a->kcap) {
        if (a->vlen)
            *a->vlen = shmkv__entry_at(c->m, c->lk.off)->vlen;
        return SHMKV_EBUFSIZE;
    }
    int rc = value_fits(c, a->vbuf, a->cap, a->vlen);
    if (rc)
        return rc;
    if (a->kbuf != c->key)
        memcpy(a->kbuf, c->key, c->klen);
    value_copy(c, a->vbuf, a->kind);
    return a->pop ? remove_key(c, "pop") : take(c, a->lease, now, a->out);
}

/* Lock the segment of the key in kbuf (klen bytes), and act on it if it is
 * still there and claimable. */
static int act_on_key(shmkv_db *db, act *a, const void *key, size_t klen)
{
    cop c;
    shmkv__op_init(&c, db, key, klen);
    int rc = shmkv__op_begin(&c);
    if (rc)
        return rc;
    uint64_t now = shmkv__lease_now(c.m);
    if (!c.lk.found || live_lease(&c, now))
        rc = PICK_AGAIN;
    else
        rc = act_on(&c, a, now);
    cop_unlock(&c);
    return rc;
}

/* Count claims that ran out as unclaimed again, the earliest first, at
 * most `budget` of them (each its own logged update). Index lock held. */
static uint64_t reclaim(shmkv__map *m, uint64_t now, uint64_t budget)
{
    uint64_t done = 0;
    uint64_t kb;
    while (done < budget && (kb = shmkv__index_expired(m, now)) != 0) {
        const shmkv__kblob *b = SHMKV__P(m, kb);
        uint32_t seg = shmkv__seg_for(m, shmkv__hash(b->key, b->klen))->id;
        shmkv__index_begin(m, seg, b->key, b->klen);
        int rc = shmkv__index_lease_set(m, b->key, b->klen, 0);
        shmkv__index_commit(m);
        if (rc)
            break;
        done++;
    }
    return done;
}

/* With the index: draw among the keys it counts unclaimed, after counting
 * ended claims unclaimed again. The key is copied out, the index let go,
 * and the key's segment locked: another process may have taken it in
 * between (PICK_AGAIN). SHMKV__NOINDEX: use the tables. */
static int pick_index(shmkv_db *db, const void *prefix, size_t plen, act *a)
{
    shmkv__map *m = db->m;
    int rc;
    if ((rc = shmkv__index_enter(m)) != 0)
        return rc;
    /* Every claim that ended is counted unclaimed first, so that the draw
     * is uniform over all claimable keys. Each costs O(log n) once in its
     * life: the draw after a lease ends pays for it, whatever its prefix. */
    uint64_t now = shmkv__lease_now(m), lo = 0;
    reclaim(m, now, UINT64_MAX);
    uint64_t n = shmkv__index_free_range(m, prefix, plen, &lo);
    uint64_t off = n ? shmkv__index_free_select(m, lo + shmkv__rand_below(n)) : 0;
    size_t klen = 0;
    unsigned char *kb = NULL;
    if (off) {
        /* Into the caller's key buffer when it fits (act_on_key leaves it
         * there), else a copy of our own, for the EBUFSIZE answer. */
        const shmkv__kblob *b = SHMKV__P(m, off);
        klen = b->klen;
        kb = klen <= a->kcap ? a->kbuf : malloc(klen);
        if (kb)
            memcpy(kb, b->key, klen);
    }
    shmkv__index_unlock(m);
    if (!off)
        return SHMKV_ENOTFOUND;
    if (!kb)
        return -ENOMEM;
    rc = act_on_key(db, a, kb, klen);
    if (kb != a->kbuf)
        free(kb);
    return rc;
}

/* Without the index. */
typedef struct walk {
    shmkv__map *m;
    const void *prefix;
    size_t plen;
    uint64_t now;
    uint64_t n;      /* claimable matches seen */
    uint64_t target; /* which one to stop at */
    uint64_t found;
} walk;

static bool claimable(shmkv__map *m, uint64_t off, const void *prefix, size_t plen, uint64_t now)
{
    const shmkv__entry *e = shmkv__entry_at(m, off);
    if (!shmkv__has_prefix(e->data, e->klen, prefix, plen))
        return false;
    const shmkv__lease *ls = shmkv__entry_lease(m, off);
    return !ls || ls->expiry <= now;
}

static int walk_one(void *ctx, uint64_t off)
{
    walk *w = ctx;
    if (!claimable(w->m, off, w->prefix, w->plen, w->now))
        return 0;
    if (w->n++ == w->target) {
        w->found = off;
        return 1;
    }
    return 0;
}

/* Act on the entry at off of the locked segment s; s is unlocked on every
 * return. */
static int act_at(shmkv_db *db, shmkv__seg *s, uint64_t off, act *a, uint64_t now)
{
    const shmkv__entry *e = shmkv__entry_at(db->m, off);
    cop c;
    shmkv__op_init(&c, db, e->data, e->klen);
    c.locked = true;
    shmkv__seg_find(c.m, s, c.h, c.key, c.klen, &c.lk);
    /* Acting frees the entry the key lives in: work from a copy. */
    unsigned char *kcopy = malloc(e->klen);
    if (!kcopy) {
        shmkv__seg_unlock(s); /* as the callers expect; a lock kept here would stall
                               * every process on this segment */
        return -ENOMEM;
    }
    memcpy(kcopy, e->data, e->klen);
    c.key = kcopy;
    int rc = act_on(&c, a, now);
    free(kcopy);
    if (c.locked)
        shmkv__seg_unlock(s);
    return rc;
}

/* Count and draw with every segment locked: one instant for every
 * process, so that SHMKV_ENOTFOUND is true of a moment. The drawn key is
 * claimed after the locks are let go (acting may need the index lock,
 * whose rebuild takes every segment lock): if another process took it
 * meanwhile, PICK_AGAIN. */
static int pick_all_locked(shmkv_db *db, const void *prefix, size_t plen, act *a,
                           uint64_t *counts)
{
    shmkv__map *m = db->m;
    uint32_t nseg = SHMKV__HDR(m)->nseg;
    int rc = shmkv__lock_all(m);
    if (rc)
        return rc;
    uint64_t total = 0, now = shmkv__lease_now(m);
    for (uint32_t i = 0; i < nseg; i++) {
        walk w = { .m = m, .prefix = prefix, .plen = plen, .now = now, .target = UINT64_MAX };
        shmkv__seg_visit(m, shmkv__seg_at(m, i), walk_one, &w);
        total += counts[i] = w.n;
    }
    unsigned char *key = NULL;
    size_t klen = 0;
    rc = SHMKV_ENOTFOUND;
    if (total) {
        uint64_t rank;
        uint32_t pick = shmkv__weighted_pick(counts, total, &rank);
        walk w = { .m = m, .prefix = prefix, .plen = plen, .now = now, .target = rank };
        shmkv__seg_visit(m, shmkv__seg_at(m, pick), walk_one, &w);
        if (w.found) {
            const shmkv__entry *e = shmkv__entry_at(m, w.found);
            klen = e->klen;
            key = malloc(klen);
            rc = key ? 0 : -ENOMEM;
            if (key)
                memcpy(key, e->data, klen);
        }
    }
    shmkv__unlock_all(m);
    if (key) {
        rc = act_on_key(db, a, key, klen);
        free(key);
    }
    return rc;
}

/* Draw random live slots (each draw uniform over every key) and keep the
 * first claimable match: uniform over the claimable matches, cheap unless
 * they are rare. Then count the claimable matches of every segment, draw
 * one, and walk to it. */
static int pick_scan(shmkv_db *db, const void *prefix, size_t plen, act *a)
{
    shmkv__map *m = db->m;
    uint32_t nseg = SHMKV__HDR(m)->nseg;
    uint64_t *counts = malloc(nseg * sizeof *counts), total = 0;
    if (!counts)
        return -ENOMEM;
    int rc = SHMKV_ENOTFOUND;
    for (uint32_t i = 0; i < nseg; i++)
        total += counts[i] = atomic_load_explicit(&shmkv__seg_at(m, i)->count,
                                                  memory_order_relaxed);
    for (int t = 0; total && t < 64; t++) {
        uint64_t rank;
        shmkv__seg *s = shmkv__seg_at(m, shmkv__weighted_pick(counts, total, &rank));
        if ((rc = shmkv__seg_lock(m, s)) != 0)
            goto out;
        /* A key of the segment, uniform over its keys: with the segment
         * drawn by its count, the draw is uniform over every key. */
        uint64_t off = shmkv__seg_pick(m, s), now = shmkv__lease_now(m);
        if (off && claimable(m, off, prefix, plen, now)) {
            rc = act_at(db, s, off, a, now); /* unlocks s */
            goto out;
        }
        shmkv__seg_unlock(s);
        rc = SHMKV_ENOTFOUND;
    }
    for (int attempt = 0; attempt < PICK_TRIES; attempt++) {
        total = 0;
        for (uint32_t i = 0; i < nseg; i++) {
            shmkv__seg *s = shmkv__seg_at(m, i);
            if ((rc = shmkv__seg_lock(m, s)) != 0)
                goto out;
            walk w = { .m = m, .prefix = prefix, .plen = plen, .now = shmkv__lease_now(m),
                       .target = UINT64_MAX };
            shmkv__seg_visit(m, s, walk_one, &w);
            shmkv__seg_unlock(s);
            total += counts[i] = w.n;
        }
        if (total == 0) {
            /* Counted one segment at a time, a claimable key that moved
             * between segments meanwhile was missed: nothing is claimable
             * only if so under every lock at once. */
            rc = pick_all_locked(db, prefix, plen, a, counts);
            goto out;
        }
        uint64_t rank;
        shmkv__seg *s = shmkv__seg_at(m, shmkv__weighted_pick(counts, total, &rank));
        if ((rc = shmkv__seg_lock(m, s)) != 0)
            goto out;
        walk w = { .m = m, .prefix = prefix, .plen = plen, .now = shmkv__lease_now(m),
                   .target = rank };
        shmkv__seg_visit(m, s, walk_one, &w);
        if (w.found) {
            rc = act_at(db, s, w.found, a, w.now); /* unlocks s */
            if (rc != SHMKV__RESTART)
                goto out;
        } else {
            shmkv__seg_unlock(s); /* changed between the passes: again */
        }
    }
    rc = SHMKV_ETIMEDOUT;
out:
    free(counts);
    return rc;
}

static int draw(shmkv_db *db, const void *prefix, size_t plen, act *a)
{
    int rc = check_db(db, true);
    if (!rc && ((plen && !prefix) || (a->kcap && !a->kbuf) || (a->cap && !a->vbuf)))
        rc = SHMKV_EINVAL;
    if (!rc)
        rc = check_lease(a->lease);
    if (rc)
        return rc;
    for (int tries = 0; tries < PICK_TRIES; tries++) {
        if (shmkv__tracked(db->m)) {
            rc = pick_index(db, prefix, plen, a);
            if (rc == SHMKV__NOINDEX)
                rc = pick_scan(db, prefix, plen, a);
        } else {
            rc = pick_scan(db, prefix, plen, a);
        }
        if (rc != PICK_AGAIN && rc != SHMKV__RESTART)
            break;
        rc = SHMKV_ETIMEDOUT; /* if every draw keeps losing its key */
    }
    return rc;
}

int shmkv_claim_random(shmkv_db *db, const void *prefix, size_t plen, const shmkv_lease *lease,
                       void *kbuf, size_t kcap, size_t *klen, shmkv_claim *out, void *vbuf,
                       size_t cap, size_t *vlen, shmkv_kind *kind)
{
    act a = { .lease = lease, .out = out, .kbuf = kbuf, .kcap = kcap, .klen = klen,
              .vbuf = vbuf, .cap = cap, .vlen = vlen, .kind = kind };
    return draw(db, prefix, plen, &a);
}

int shmkv_pop_random(shmkv_db *db, const void *prefix, size_t plen, void *kbuf, size_t kcap,
                     size_t *klen, void *vbuf, size_t cap, size_t *vlen, shmkv_kind *kind)
{
    act a = { .pop = true, .kbuf = kbuf, .kcap = kcap, .klen = klen, .vbuf = vbuf, .cap = cap,
              .vlen = vlen, .kind = kind };
    return draw(db, prefix, plen, &a);
}
