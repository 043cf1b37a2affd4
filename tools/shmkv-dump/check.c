/*
 * check.c - --check: verify every structure of a region against the
 * format's invariants, reading only through the bounded view.
 *
 * Order: header; chunk and block tiling (scan.c); each owner's allocator
 * (chunk accounting, bump chunk, spare list, free lists); each segment's
 * table and entries; the key index (tree, key array, agreement with the
 * tables); finally blocks that nothing references. Every block records who
 * references it, so a block reached twice (a cycle, a shared node, a live
 * entry on a free list) is caught without trusting any count.
 *
 * This file runs the checks (check_region.c, check_table.c, check_index.c;
 * check.h between them), keeps the problems, checks snapshots of a store
 * in use, and prints the result.
 */
#include "check.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define KEEP_MAX 2000   /* problems/warnings kept as text (all are counted) */

/* ---- report --------------------------------------------------------- */

static void add_msg(report *r, char ***arr, size_t *n, size_t *cap, uint64_t *total,
                    const char *fmt, va_list ap)
{
    (*total)++;
    if (*n >= KEEP_MAX)
        return;
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) {
        r->oom = true;
        return;
    }
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        char **p = realloc(*arr, nc * sizeof *p);
        if (!p) {
            free(s);
            r->oom = true;
            return;
        }
        *arr = p;
        *cap = nc;
    }
    (*arr)[(*n)++] = s;
}

void prob(report *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_msg(r, &r->prob, &r->nprob, &r->capprob, &r->prob_total, fmt, ap);
    va_end(ap);
}

void warn(report *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_msg(r, &r->warn, &r->nwarn, &r->capwarn, &r->warn_total, fmt, ap);
    va_end(ap);
}

void pend(report *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_msg(r, &r->pend, &r->npend, &r->cappend, &r->pend_total, fmt, ap);
    va_end(ap);
}

void report_free(report *r)
{
    for (size_t i = 0; i < r->nprob; i++)
        free(r->prob[i]);
    for (size_t i = 0; i < r->nwarn; i++)
        free(r->warn[i]);
    for (size_t i = 0; i < r->npend; i++)
        free(r->pend[i]);
    free(r->prob);
    free(r->warn);
    free(r->pend);
    memset(r, 0, sizeof *r);
}

/* ---- helpers ---------------------------------------------------------- */

typedef struct check_res {
    uint64_t chunks, blocks, keys, index_keys;
    uint64_t claims, claims_live; /* sound leases, and those not run out */
} check_res;

uint32_t owner_slot(const ck *c, uint32_t owner)
{
    if (owner < c->h->nseg)
        return owner;
    if (owner == SHMKV__OWNER_INDEX)
        return c->h->nseg;
    return UINT32_MAX;
}

const char *owner_name(const ck *c, uint32_t slot, char *buf, size_t n)
{
    if (slot == c->h->nseg)
        snprintf(buf, n, "index");
    else
        snprintf(buf, n, "segment %" PRIu32, slot);
    return buf;
}

/* Accounting problems of an owner whose lock holder died are expected:
 * the next process to take the lock repairs them. */
void oprob(ck *c, uint32_t slot, const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int rc = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (rc < 0) {
        c->r->oom = true;
        return;
    }
    if (c->ow[slot].lock == LOCK_DEAD)
        pend(c->r, "%s (the lock's owner died; the next process to lock it repairs this)", s);
    else if (c->reopen_repair)
        pend(c->r, "%s (the store was not closed cleanly; its next opener repairs this)", s);
    else
        prob(c->r, "%s", s);
    free(s);
}

/* A key for a message: escaped, cut at 48 bytes. */
const char *kdesc(const unsigned char *k, size_t n, char *buf, size_t cap)
{
    size_t o = 0;
    buf[o++] = '"';
    for (size_t i = 0; i < n && i < 48 && o + 8 < cap; i++) {
        unsigned char ch = k[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\')
            buf[o++] = (char)ch;
        else
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", ch);
    }
    if (n > 48 && o + 5 < cap) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '"';
    buf[o] = 0;
    return buf;
}

/* True when off lies where the walk could not go (past a broken chunk, or
 * in a chunk whose blocks could not be walked): a reference there can be
 * neither confirmed nor refuted, so it is not reported on its own. */
bool unknown_at(const ck *c, uint64_t off)
{
    long ci = scan_chunk_of(&c->sc, off);
    if (ci >= 0)
        return !c->sc.c[ci].blocks_ok;
    return !c->sc.tiled && off >= c->sc.end && off < c->v->len;
}

const char *plural(uint64_t n)
{
    return n == 1 ? "" : "s";
}

uint64_t seg_base(const ck *c, uint32_t i)
{
    return shmkv__seg_off(c->h, i);
}

/* ---- one run --------------------------------------------------------------------- */

static int run_check(const store *s, const view *v, uint64_t file_len, const shmkv__hdr *h,
                     bool live, report *r, check_res *res)
{
    ck c = {0};
    int rc = 0;
    c.s = s;
    c.file_len = file_len;
    c.v = v;
    c.h = h;
    c.r = r;
    c.live = live;
    c.reopen_repair = !live && atomic_load_explicit(&h->clean, memory_order_relaxed) == 0;
    c.tables_complete = true;
    /* After the snapshot: a lease it holds ended by now or is live now. */
    lclock_init(&c.clk, h);
    c.last_token = atomic_load_explicit(&h->claim_token, memory_order_relaxed);
    c.lease_high = atomic_load_explicit(&h->lease_high, memory_order_relaxed);
    shmkv__hdr cur;
    if (live && store_read_hdr(s, &cur) && memcmp(cur.magic, SHMKV__MAGIC, 8) == 0) {
        /* claims made while the copy was taken */
        uint64_t t = atomic_load_explicit(&cur.claim_token, memory_order_relaxed);
        uint64_t x = atomic_load_explicit(&cur.lease_high, memory_order_relaxed);
        c.last_token = t > c.last_token ? t : c.last_token;
        c.lease_high = x > c.lease_high ? x : c.lease_high;
    }
    memset(res, 0, sizeof *res);
    c.ow = calloc(h->nseg + 1, sizeof *c.ow);
    if (!c.ow)
        return -ENOMEM;
    for (uint32_t i = 0; i <= h->nseg; i++)
        c.ow[i].walk_ok = c.ow[i].blocks_known = true;

    check_header(&c);
    check_locks(&c);
    if ((rc = scan_region(v, h, &c.sc, r)) < 0)
        goto out;
    for (size_t i = 0; i < c.sc.nc; i++) {
        uint32_t sl = owner_slot(&c, c.sc.c[i].owner);
        if (sl == UINT32_MAX)
            continue;
        c.ow[sl].nchunks++;
        c.ow[sl].chunk_bytes += c.sc.c[i].size;
        if (!c.sc.c[i].blocks_ok)
            c.ow[sl].walk_ok = c.ow[sl].blocks_known = false;
    }
    /* The free pool's byte count is exact unless the growth lock's holder
     * died, in which case its next holder recounts it. */
    uint64_t pool = 0;
    for (size_t i = 0; i < c.sc.nc; i++)
        if (c.sc.c[i].owner == SHMKV__OWNER_FREE)
            pool += c.sc.c[i].size;
    if (c.sc.tiled && pool != h->pool_bytes) {
        int gtid;
        bool grepairing;
        if (lock_state(v, offsetof(shmkv__hdr, grow_lock), &gtid, &grepairing) == LOCK_DEAD ||
            c.live)
            warn(r, "header: free pool holds %" PRIu64 " bytes, pool_bytes says %" PRIu64
                 " (the next growth-lock holder recounts it)", pool, h->pool_bytes);
        else
            prob(r, "header: free pool holds %" PRIu64 " bytes, pool_bytes says %" PRIu64,
                 pool, h->pool_bytes);
    }
    for (size_t i = 0; i < c.sc.nb; i++) {
        uint32_t sl = owner_slot(&c, c.sc.b[i].owner);
        if (sl != UINT32_MAX && (c.sc.b[i].flags & SHMKV__BF_USED))
            c.ow[sl].used_bytes += c.sc.b[i].size;
    }
    if (!c.sc.tiled) {
        for (uint32_t i = 0; i <= h->nseg; i++)
            c.ow[i].walk_ok = false; /* blocks past the break are unknown */
        warn(r, "the region past 0x%" PRIx64 " could not be walked: references into it were "
             "not checked", c.sc.end);
    }
    for (uint32_t i = 0; i <= h->nseg; i++)
        check_alloc(&c, i);
    for (uint32_t i = 0; i < h->nseg; i++)
        if ((rc = check_segment(&c, i)) < 0)
            goto out;
    check_duplicates(&c);
    if ((rc = check_index(&c)) < 0)
        goto out;
    check_blocks(&c);
    res->chunks = c.sc.nc;
    res->blocks = c.sc.nb;
    res->keys = c.live_slots;
    res->index_keys = h->track_keys ? c.ntk : 0;
    res->claims = c.leases;
    res->claims_live = c.leases_live;
out:
    scan_free(&c.sc);
    free(c.ow);
    free(c.e);
    free(c.tk);
    if (r->oom)
        rc = -ENOMEM;
    return rc;
}

/* Keep in a only the problems that b also has. */
static void intersect(report *a, const report *b)
{
    size_t k = 0;
    for (size_t i = 0; i < a->nprob; i++) {
        bool found = false;
        for (size_t j = 0; j < b->nprob && !found; j++)
            found = strcmp(a->prob[i], b->prob[j]) == 0;
        if (found)
            a->prob[k++] = a->prob[i];
        else
            free(a->prob[i]);
    }
    a->nprob = k;
    a->prob_total = k;
}

static void print_text(const store *s, const shmkv__hdr *h, const report *r,
                       const check_res *res, bool live, int attempts, uint64_t transient)
{
    FILE *f = stdout;
    fprintf(f, "store: %s (%s, %" PRIu32 " segments, key tracking %s)\n", s->label,
            h->backend == SHMKV_BACKEND_MEMORY ? "memory" : "disk", h->nseg,
            h->track_keys ? "on" : "off");
    fprintf(f, "checked: %" PRIu64 " chunks, %" PRIu64 " blocks, %" PRIu64 " keys",
            res->chunks, res->blocks, res->keys);
    if (h->track_keys)
        fprintf(f, ", index of %" PRIu64 " keys", res->index_keys);
    if (res->claims)
        fprintf(f, ", %" PRIu64 " claim%s (%" PRIu64 " live)", res->claims,
                res->claims == 1 ? "" : "s", res->claims_live);
    fputc('\n', f);
    if (live)
        fprintf(f, "note: the store is in use; %d snapshot%s checked, only problems seen in "
                "every one are reported (%" PRIu64 " transient ones ignored)\n", attempts,
                attempts == 1 ? "" : "s", transient);
    for (size_t i = 0; i < r->nwarn; i++)
        fprintf(f, "warning: %s\n", r->warn[i]);
    if (r->warn_total > r->nwarn)
        fprintf(f, "warning: ... and %" PRIu64 " more warnings\n", r->warn_total - r->nwarn);
    for (size_t i = 0; i < r->npend; i++)
        fprintf(f, "repair: %s\n", r->pend[i]);
    if (r->pend_total > r->npend)
        fprintf(f, "repair: ... and %" PRIu64 " more\n", r->pend_total - r->npend);
    for (size_t i = 0; i < r->nprob; i++)
        fprintf(f, "problem: %s\n", r->prob[i]);
    if (r->prob_total > r->nprob)
        fprintf(f, "problem: ... and %" PRIu64 " more problems\n", r->prob_total - r->nprob);
    if (r->prob_total)
        fprintf(f, "result: %" PRIu64 " problem%s found\n", r->prob_total,
                r->prob_total == 1 ? "" : "s");
    else if (r->pend_total)
        fprintf(f, "result: sound; a process died in it, and the next one to open the store or "
                "take the lock concerned makes the %" PRIu64 " repair%s listed\n",
                r->pend_total, r->pend_total == 1 ? "" : "s");
    else
        fprintf(f, "result: sound\n");
}

static void print_json(const store *s, const shmkv__hdr *h, const report *r,
                       const check_res *res, bool live, int attempts, uint64_t transient)
{
    FILE *f = stdout;
    fputs("{\"store\":", f);
    put_jcstr(f, s->label);
    fputs(",\"path\":", f);
    put_jcstr(f, s->path);
    fprintf(f, ",\"sound\":%s,\"live\":%s,\"attempts\":%d,\"transient_problems\":%" PRIu64,
            r->prob_total ? "false" : "true", live ? "true" : "false", attempts, transient);
    if (h)
        fprintf(f, ",\"segments\":%" PRIu32 ",\"track_keys\":%s", h->nseg,
                h->track_keys ? "true" : "false");
    fprintf(f, ",\"checked\":{\"chunks\":%" PRIu64 ",\"blocks\":%" PRIu64 ",\"keys\":%" PRIu64
            ",\"index_keys\":%" PRIu64 ",\"claims\":%" PRIu64 ",\"claims_live\":%" PRIu64 "}",
            res->chunks, res->blocks, res->keys, res->index_keys, res->claims,
            res->claims_live);
    fprintf(f, ",\"problem_count\":%" PRIu64 ",\"problems\":[", r->prob_total);
    for (size_t i = 0; i < r->nprob; i++) {
        fputs(i ? ",\n" : "\n", f);
        put_jcstr(f, r->prob[i]);
    }
    fprintf(f, "],\"warning_count\":%" PRIu64 ",\"warnings\":[", r->warn_total);
    for (size_t i = 0; i < r->nwarn; i++) {
        fputs(i ? ",\n" : "\n", f);
        put_jcstr(f, r->warn[i]);
    }
    fprintf(f, "],\"repair_count\":%" PRIu64 ",\"repairs\":[", r->pend_total);
    for (size_t i = 0; i < r->npend; i++) {
        fputs(i ? ",\n" : "\n", f);
        put_jcstr(f, r->pend[i]);
    }
    fputs("]}\n", f);
}

int mode_check(store *s, const opts *o)
{
    report r = {0};
    check_res res = {0};
    shmkv__hdr h;
    int attempts = 0, rc = 0;
    uint64_t transient = 0;
    bool live;

    if (!s->hdr_ok) {
        /* The signature is there but the header cannot be interpreted. */
        prob(&r, "header: %s", s->err ? s->err : "invalid");
        memcpy(&h, &s->hdr, sizeof h);
        if (o->json)
            print_json(s, NULL, &r, &res, false, 1, 0);
        else
            printf("store: %s\nproblem: header: %s\nresult: 1 problem found\n", s->label,
                   s->err ? s->err : "invalid");
        report_free(&r);
        return EXIT_PROBLEMS;
    }
    live = store_attached(s);
    if (!live) {
        /* Quiet store: check the mapping in place (the header as mapped). */
        char why[512];
        bool changed = false;
        memcpy(&h, s->v.base, sizeof h);
        attempts = 1;
        if (memcmp(h.magic, SHMKV__MAGIC, 8) != 0 || !hdr_identify(&h, s->v.len, why, sizeof why)) {
            /* Changed since it was validated at open: re-created under us? */
            if (!store_attached(s)) {
                fprintf(stderr, "shmkv-dump: %s: the header changed while being read\n",
                        s->label);
                return EXIT_RUNTIME;
            }
            changed = true;
        } else {
            rc = run_check(s, &s->v, (uint64_t)s->st.st_size, &h, false, &r, &res);
        }
        if (rc == 0 && (r.prob_total || changed) && store_attached(s)) {
            live = true; /* a writer came in while we read: check snapshots */
            report_free(&r);
        }
    }
    if (live) {
        report keep = {0};
        int tries = 1 + (o->retries > 0 ? o->retries : 0);
        for (attempts = 0; attempts < tries; attempts++) {
            view snap;
            report cur = {0};
            uint64_t flen = 0;
            int e = store_snapshot(s, &snap, &h, &flen);
            if (e) {
                fprintf(stderr, "shmkv-dump: %s: the store changed beyond recognition while "
                        "being read\n", s->label);
                report_free(&keep);
                return e;
            }
            rc = run_check(s, &snap, flen, &h, true, &cur, &res);
            free((void *)snap.base);
            if (rc < 0) {
                report_free(&cur);
                break;
            }
            if (cur.prob_total == 0) {
                transient += keep.prob_total;
                report_free(&keep);
                keep = cur;
                attempts++;
                break;
            }
            if (attempts == 0) {
                keep = cur;
            } else {
                uint64_t before = keep.prob_total;
                intersect(&keep, &cur);
                transient += before - keep.prob_total;
                /* Warnings: the latest run's. */
                for (size_t i = 0; i < keep.nwarn; i++)
                    free(keep.warn[i]);
                free(keep.warn);
                keep.warn = cur.warn;
                keep.nwarn = cur.nwarn;
                keep.capwarn = cur.capwarn;
                keep.warn_total = cur.warn_total;
                cur.warn = NULL;
                cur.nwarn = 0;
                for (size_t i = 0; i < keep.npend; i++)
                    free(keep.pend[i]);
                free(keep.pend);
                keep.pend = cur.pend;
                keep.npend = cur.npend;
                keep.cappend = cur.cappend;
                keep.pend_total = cur.pend_total;
                cur.pend = NULL;
                cur.npend = 0;
                report_free(&cur);
                if (keep.prob_total == 0) {
                    attempts++;
                    break;
                }
            }
            usleep(50000);
        }
        report_free(&r);
        r = keep;
    }
    if (rc < 0) {
        fprintf(stderr, "shmkv-dump: out of memory while checking\n");
        report_free(&r);
        return EXIT_RUNTIME;
    }
    if (o->json)
        print_json(s, &h, &r, &res, live, attempts, transient);
    else
        print_text(s, &h, &r, &res, live, attempts, transient);
    int ex = r.prob_total ? EXIT_PROBLEMS : EXIT_SOUND;
    report_free(&r);
    if (fflush(stdout) != 0)
        return EXIT_RUNTIME;
    return ex;
}

