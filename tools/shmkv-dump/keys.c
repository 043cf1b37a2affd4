/*
 * keys.c - --keys, --list and --get: read entries through the tables
 * without any lock. A store being written can show a torn moment: every
 * length is validated against the entry's block before a byte is copied,
 * the slot is read again after the copy, and a slot that changed is read
 * again (a few times) instead of trusting what was copied.
 */
#include "dump.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

#define READ_TRIES 4

/* Words a block fault of shmkv__view_block; false, for the callers. */
static bool block_why(int f, uint64_t payload, const shmkv__block *b, uint64_t bytes,
                      char *why, size_t n)
{
    switch (f) {
    case SHMKV__F_OUTSIDE:
        snprintf(why, n, "offset 0x%" PRIx64 " is outside the region", payload);
        break;
    case SHMKV__F_BIG:
        snprintf(why, n, "big block at 0x%" PRIx64 " is not alone at the start of a "
                 "full chunk", payload - SHMKV__BLOCK_HDR);
        break;
    case SHMKV__F_CLASS:
        snprintf(why, n, "block at 0x%" PRIx64 " has invalid size %" PRIu32 " / class %u",
                 payload - SHMKV__BLOCK_HDR, b->size, b->cls);
        break;
    default:
        snprintf(why, n, "block at 0x%" PRIx64 " (%" PRIu64 " bytes) runs past the region end",
                 payload - SHMKV__BLOCK_HDR, bytes);
        break;
    }
    return false;
}

bool block_hdr_read(const view *v, uint64_t payload, shmkv__block *b, uint64_t *bytes,
                    char *why, size_t n)
{
    uint64_t sz;
    int f = shmkv__view_block(v, payload, b, &sz);
    if (f)
        return block_why(f, payload, b, sz, why, n);
    if (bytes)
        *bytes = sz;
    return true;
}

bool table_read(const view *v, uint64_t toff, uint64_t *cap, uint64_t *bsize, char *why,
                size_t n)
{
    shmkv__block b;
    uint64_t bytes = 0, c = 0;
    int f = shmkv__view_table(v, toff, &b, &c, &bytes);
    switch (f) {
    case 0:
        break;
    case SHMKV__F_FREE:
        snprintf(why, n, "table block at 0x%" PRIx64 " is not in use (freed)",
                 toff - SHMKV__BLOCK_HDR);
        return false;
    case SHMKV__F_CAP:
        snprintf(why, n, "table at 0x%" PRIx64 ": capacity %" PRIu64 " is not a power of two",
                 toff, c);
        return false;
    case SHMKV__F_FIT:
        snprintf(why, n, "table at 0x%" PRIx64 ": %" PRIu64 " slots do not fit its %" PRIu64
                 "-byte block", toff, c, bytes);
        return false;
    default:
        return block_why(f, toff, &b, bytes, why, n);
    }
    *cap = c;
    if (bsize)
        *bsize = bytes;
    return true;
}

bool entry_read(const view *v, const scan *sc, uint64_t payload, ent *e, char *why, size_t n)
{
    shmkv__block b;
    if (sc) {
        long i = scan_find(sc, payload);
        if (i < 0) {
            snprintf(why, n, "entry offset 0x%" PRIx64 " is not the start of a block", payload);
            return false;
        }
    }
    uint64_t bytes = 0;
    shmkv__entry eh;
    int f = shmkv__view_entry(v, payload, &b, &eh, &bytes);
    switch (f) {
    case 0:
        break;
    case SHMKV__F_FREE:
        snprintf(why, n, "entry block at 0x%" PRIx64 " is not in use (freed)",
                 payload - SHMKV__BLOCK_HDR);
        return false;
    case SHMKV__F_BODY:
        snprintf(why, n, "entry at 0x%" PRIx64 " is outside the region", payload);
        return false;
    case SHMKV__F_LEN:
        snprintf(why, n, "entry at 0x%" PRIx64 ": key length %" PRIu32 " or value length %"
                 PRIu32 " out of range", payload, eh.klen, eh.vlen);
        return false;
    case SHMKV__F_FIT:
        snprintf(why, n, "entry at 0x%" PRIx64 ": key %" PRIu32 " + value %" PRIu32
                 " bytes do not fit its %" PRIu64 "-byte block", payload, eh.klen, eh.vlen,
                 bytes);
        return false;
    default:
        return block_why(f, payload, &b, bytes, why, n);
    }
    e->off = payload;
    e->key = vptr(v, payload + sizeof eh, eh.klen);
    e->klen = eh.klen;
    e->vlen = eh.vlen;
    e->kind = b.kind;
    e->flags = b.flags;
    e->bytes = bytes;
    return e->key != NULL;
}

int entry_lease(const view *v, const ent *e, uint64_t last_token, uint64_t lease_high,
                shmkv__lease *l, const unsigned char **owner, char *why, size_t n)
{
    if (!(e->flags & SHMKV__BF_LEASE))
        return 0;
    shmkv__entry eh = {.klen = e->klen, .vlen = e->vlen};
    int f = shmkv__view_lease(v, e->off, &eh, e->bytes, last_token, lease_high, l);
    uint64_t at = e->off + shmkv__lease_at(e->klen, e->vlen);
    switch (f) {
    case 0:
        *owner = vptr(v, at + sizeof *l, l->olen);
        return 1;
    case SHMKV__F_OWNER:
        snprintf(why, n, "lease at 0x%" PRIx64 ": owner of %" PRIu32 " bytes (at most %u)", at,
                 l->olen, SHMKV_OWNER_MAX);
        break;
    case SHMKV__F_TOKEN:
        snprintf(why, n, "lease at 0x%" PRIx64 ": token %" PRIu64 " was never issued (the "
                 "last one is %" PRIu64 ")", at, l->token, last_token);
        break;
    case SHMKV__F_EXPIRY:
        snprintf(why, n, "lease at 0x%" PRIx64 ": ends at %" PRIu64 ", after the latest end "
                 "ever granted (%" PRIu64 ")", at, l->expiry, lease_high);
        break;
    default:
        if (l->token || l->expiry || l->olen)
            snprintf(why, n, "lease at 0x%" PRIx64 ": its owner of %" PRIu32 " bytes runs past "
                     "its %" PRIu64 "-byte block", at, l->olen, e->bytes);
        else
            snprintf(why, n, "lease at 0x%" PRIx64 " runs past its %" PRIu64 "-byte block", at,
                     e->bytes);
        break;
    }
    return -1;
}

void store_lclock(const store *s, lclock *c)
{
    shmkv__hdr h;
    if (!store_read_hdr(s, &h) || memcmp(h.magic, SHMKV__MAGIC, 8) != 0)
        memcpy(&h, &s->hdr, sizeof h);
    lclock_init(c, &h);
}

int ent_cmp(const void *a, const void *b)
{
    const ent *x = a, *y = b;
    return shmkv__keycmp(x->key, x->klen, y->key, y->klen);
}

/* ---- collecting entries ------------------------------------------------- */

typedef struct item {
    size_t koff; /* into the copy buffer: key, value, then the claim's owner */
    uint32_t klen, vlen;
    uint16_t kind;
    bool claimed;
    shmkv__lease lease; /* when claimed (its expiry judged at printing) */
} item;

typedef struct coll {
    unsigned char *buf;
    size_t len, cap;
    item *it;
    size_t n, capn;
    uint64_t skipped;
    uint64_t bad_claims; /* keys listed whose lease could not be read */
    report warns;
} coll;

static int coll_add(coll *c, const ent *e, const unsigned char *val, bool with_value,
                    const shmkv__lease *l, const unsigned char *owner)
{
    size_t need = e->klen + (with_value ? e->vlen : 0) + (l ? l->olen : 0);
    if (c->len + need > c->cap) {
        size_t nc = c->cap ? c->cap : 1 << 16;
        while (nc < c->len + need)
            nc *= 2;
        unsigned char *p = realloc(c->buf, nc);
        if (!p)
            return -ENOMEM;
        c->buf = p;
        c->cap = nc;
    }
    if (c->n == c->capn) {
        size_t nn = c->capn ? c->capn * 2 : 1024;
        item *p = realloc(c->it, nn * sizeof *p);
        if (!p)
            return -ENOMEM;
        c->it = p;
        c->capn = nn;
    }
    item *it = &c->it[c->n++];
    it->koff = c->len;
    it->klen = e->klen;
    it->vlen = with_value ? e->vlen : 0;
    it->kind = e->kind;
    it->claimed = l != NULL;
    if (l)
        it->lease = *l;
    memcpy(c->buf + c->len, e->key, e->klen);
    if (with_value && e->vlen)
        memcpy(c->buf + c->len + e->klen, val, e->vlen);
    if (l && l->olen)
        memcpy(c->buf + c->len + e->klen + it->vlen, owner, l->olen);
    c->len += need;
    return 0;
}

static int item_cmp(const void *a, const void *b, void *arg)
{
    const item *x = a, *y = b;
    const unsigned char *base = arg;
    return shmkv__keycmp(base + x->koff, x->klen, base + y->koff, y->klen);
}

static uint64_t seg_field(const shmkv__hdr *h, uint32_t i, size_t field)
{
    return shmkv__seg_off(h, i) + field;
}

/* Read the slot, validate its entry, copy it, and read the slot again.
 * Returns 0, 1 when the slot had to be skipped (why says it), -ENOMEM. */
static int collect_slot(const view *v, bool live, uint64_t slot_off, const opts *o,
                        bool with_value, coll *c, char *why, size_t wn)
{
    for (int t = 0; t < READ_TRIES; t++) {
        uint64_t w, w2 = 0;
        if (!vu64(v, slot_off, &w))
            return 0;
        if (!SHMKV__SLOT_LIVE(w))
            return 0;
        ent e;
        if (!entry_read(v, NULL, SHMKV__SLOT_OFF(w), &e, why, wn)) {
            if (live)
                continue;
            return 1;
        }
        if (o->plen && (e.klen < o->plen || memcmp(e.key, o->prefix, o->plen) != 0)) {
            vu64(v, slot_off, &w2);
            if (w2 == w || !live)
                return 0;
            continue;
        }
        shmkv__lease l;
        const unsigned char *owner = NULL;
        char lwhy[256];
        int lr = entry_lease(v, &e, UINT64_MAX, UINT64_MAX, &l, &owner, lwhy, sizeof lwhy);
        size_t mark_len = c->len, mark_n = c->n;
        if (coll_add(c, &e, e.key + e.klen, with_value, lr > 0 ? &l : NULL, owner) < 0)
            return -ENOMEM;
        vu64(v, slot_off, &w2);
        if ((w2 == w || !live) && lr < 0) {
            /* the key is listed; its claim cannot be shown */
            c->bad_claims++;
            warn(&c->warns, "entry at 0x%" PRIx64 ": its claim is not shown: %s", e.off, lwhy);
        }
        if (w2 == w || !live)
            return 0;
        c->len = mark_len, c->n = mark_n; /* changed under us: read again */
        snprintf(why, wn, "slot kept changing while being read");
    }
    return 1;
}

/* One segment. With writers at work the table may be replaced (and its
 * block reused) or the region may grow while we read: then the segment is
 * read again from scratch, and only what stays unreadable is skipped. */
static int collect_segment(store *s, bool live, uint32_t i, const opts *o, bool with_value,
                           coll *c)
{
    char why[256] = "", first[256] = "";
    uint64_t skipped = 0, first_slot = 0;
    bool table_bad = false;
    for (int attempt = 0; attempt < (live ? 2 * READ_TRIES : 1); attempt++) {
        const view *v = &s->v;
        size_t mark_len = c->len, mark_n = c->n;
        uint64_t toff = 0, toff2 = 0, cap;
        skipped = 0;
        table_bad = false;
        if (!vu64(v, seg_field(&s->hdr, i, offsetof(shmkv__seg, table)), &toff) || !toff)
            return 0;
        if (!table_read(v, toff, &cap, NULL, first, sizeof first)) {
            table_bad = true;
            skipped = 1;
        } else {
            for (uint64_t j = 0; j < cap; j++) {
                int rc = collect_slot(v, live, toff + sizeof(shmkv__table) + j * 8, o,
                                      with_value, c, why, sizeof why);
                if (rc < 0)
                    return rc;
                if (rc > 0 && !skipped++) {
                    first_slot = j;
                    memcpy(first, why, sizeof first);
                }
            }
        }
        if (!skipped || !live)
            break;
        vu64(v, seg_field(&s->hdr, i, offsetof(shmkv__seg, table)), &toff2);
        bool grew = store_remap(s);
        if (toff2 == toff && !grew && attempt >= READ_TRIES)
            break;
        c->len = mark_len, c->n = mark_n;
        usleep(1000);
    }
    if (!skipped)
        return 0;
    c->skipped += skipped;
    if (table_bad)
        warn(&c->warns, "segment %" PRIu32 ": table skipped: %s", i, first);
    else
        warn(&c->warns, "segment %" PRIu32 ": %" PRIu64 " slot%s skipped (first: slot %" PRIu64
             ": %s)", i, skipped, skipped == 1 ? "" : "s", first_slot, first);
    return 0;
}

static int collect(store *s, const opts *o, bool with_value, coll *c)
{
    bool live = store_attached(s);
    if (live)
        store_remap(s);
    for (uint32_t i = 0; i < s->hdr.nseg; i++)
        if (collect_segment(s, live, i, o, with_value, c) < 0)
            return -ENOMEM;
    if (c->n)
        qsort_r(c->it, c->n, sizeof *c->it, item_cmp, c->buf);
    if (live && c->n > 1) {
        /* A key moved while we read may have been seen twice. */
        size_t k = 1;
        for (size_t i = 1; i < c->n; i++)
            if (item_cmp(&c->it[k - 1], &c->it[i], c->buf) != 0)
                c->it[k++] = c->it[i];
        c->n = k;
    }
    return 0;
}

static void coll_free(coll *c)
{
    free(c->buf);
    free(c->it);
    report_free(&c->warns);
}

static void print_warnings_text(const report *w)
{
    for (size_t i = 0; i < w->nwarn; i++)
        fprintf(stderr, "shmkv-dump: warning: %s\n", w->warn[i]);
    if (w->warn_total > w->nwarn)
        fprintf(stderr, "shmkv-dump: warning: ... and %" PRIu64 " more\n",
                w->warn_total - w->nwarn);
}

static void print_warnings_json(FILE *f, const report *w)
{
    fputs("\"warnings\":[", f);
    for (size_t i = 0; i < w->nwarn; i++) {
        if (i)
            fputc(',', f);
        put_jcstr(f, w->warn[i]);
    }
    fputc(']', f);
}

int mode_keys(store *s, const opts *o, bool values)
{
    coll c = {0};
    if (collect(s, o, values, &c) < 0) {
        coll_free(&c);
        fprintf(stderr, "shmkv-dump: out of memory\n");
        return EXIT_RUNTIME;
    }
    size_t n = c.n;
    bool more = false;
    if (o->limit && n > o->limit) {
        n = (size_t)o->limit;
        more = true;
    }
    FILE *f = stdout;
    lclock clk;
    store_lclock(s, &clk);
    if (o->json) {
        fputs("{\"store\":", f);
        put_jcstr(f, s->label);
        fputs(",\"prefix\":", f);
        if (o->plen && utf8_valid(o->prefix, o->plen))
            put_jstr(f, o->prefix, o->plen);
        else if (o->plen) {
            fputc('"', f);
            put_hex(f, o->prefix, o->plen);
            fputc('"', f);
        } else
            fputs("null", f);
        fprintf(f, ",\"limit\":%" PRIu64 ",\"count\":%zu,\"more\":%s,\"skipped\":%" PRIu64 ",",
                o->limit, n, more ? "true" : "false", c.skipped);
        print_warnings_json(f, &c.warns);
        fputs(values ? ",\"entries\":[" : ",\"keys\":[", f);
        for (size_t i = 0; i < n; i++) {
            const item *it = &c.it[i];
            const unsigned char *k = c.buf + it->koff;
            const unsigned char *owner = k + it->klen + it->vlen;
            fputs(i ? ",\n" : "\n", f);
            if (values) {
                fputc('{', f);
                put_jkey(f, k, it->klen);
                fputc(',', f);
                put_value_json(f, k + it->klen, it->vlen, it->kind);
                if (it->claimed) {
                    fputc(',', f);
                    put_claim_json(f, &it->lease, owner, &clk);
                }
                fputc('}', f);
            } else if (utf8_valid(k, it->klen) && !it->claimed) {
                put_jstr(f, k, it->klen);
            } else {
                /* a claimed key (or one that is not text) is an object */
                fputc('{', f);
                put_jkey(f, k, it->klen);
                if (it->claimed) {
                    fputc(',', f);
                    put_claim_json(f, &it->lease, owner, &clk);
                }
                fputc('}', f);
            }
        }
        fputs("\n]}\n", f);
    } else {
        for (size_t i = 0; i < n; i++) {
            const item *it = &c.it[i];
            const unsigned char *k = c.buf + it->koff;
            const unsigned char *owner = k + it->klen + it->vlen;
            put_text(f, k, it->klen, false);
            if (values) {
                fprintf(f, " (%s, %" PRIu32 " byte%s", kind_name(it->kind), it->vlen,
                        it->vlen == 1 ? "" : "s");
                if (it->claimed) {
                    fputs("; ", f);
                    put_claim_text(f, &it->lease, owner, &clk);
                }
                fputs(")\n", f);
                put_value_text(f, k + it->klen, it->vlen, it->kind, "  ", false);
            } else if (it->claimed) {
                /* a key never prints a tab (it shows one as \\t) */
                fputs("\t(", f);
                put_claim_text(f, &it->lease, owner, &clk);
                fputs(")\n", f);
            } else {
                fputc('\n', f);
            }
        }
        print_warnings_text(&c.warns);
        if (c.skipped)
            fprintf(stderr, "shmkv-dump: %" PRIu64 " damaged entries or tables were skipped; "
                    "run --check\n", c.skipped);
    }
    int rc = c.skipped || c.bad_claims ? EXIT_PROBLEMS : EXIT_SOUND;
    coll_free(&c);
    if (fflush(f) != 0)
        return EXIT_RUNTIME;
    return rc;
}

/* Every entry with the prefix, in key order (what --list shows), handed
 * to fn with its value; skipped counts the damaged ones left out. 0, fn's
 * non-zero return, or -ENOMEM. */
int keys_each(store *s, const opts *o, keys_fn fn, void *ctx, uint64_t *skipped)
{
    coll c = {0};
    if (collect(s, o, true, &c) < 0) {
        coll_free(&c);
        return -ENOMEM;
    }
    print_warnings_text(&c.warns);
    *skipped = c.skipped;
    int rc = 0;
    size_t n = o->limit && c.n > o->limit ? (size_t)o->limit : c.n;
    for (size_t i = 0; i < n && !rc; i++) {
        const item *it = &c.it[i];
        const unsigned char *k = c.buf + it->koff;
        rc = fn(ctx, k, it->klen, k + it->klen, it->vlen, it->kind);
    }
    coll_free(&c);
    return rc;
}

/* ---- --get -------------------------------------------------------------- */

typedef enum { LK_FOUND, LK_ABSENT, LK_DAMAGED } lk_res;

static lk_res lookup(const view *v, const shmkv__hdr *h, const opts *o, unsigned char **val,
                     uint32_t *vlen, uint16_t *kind, char *why, size_t n)
{
    uint64_t hash = shmkv__hash(o->key, o->klen), toff, cap;
    uint32_t seg = (uint32_t)(hash >> 32) & (h->nseg - 1);
    uint16_t tag = (uint16_t)(hash >> 48);
    if (!vu64(v, seg_field(h, seg, offsetof(shmkv__seg, table)), &toff)) {
        snprintf(why, n, "segment %" PRIu32 " is outside the region", seg);
        return LK_DAMAGED;
    }
    if (!toff)
        return LK_ABSENT;
    if (!table_read(v, toff, &cap, NULL, why, n))
        return LK_DAMAGED;
    for (uint64_t k = 0, j = hash & (cap - 1); k < cap; k++, j = (j + 1) & (cap - 1)) {
        uint64_t slot_off = toff + sizeof(shmkv__table) + j * 8, w, w2 = 0;
        if (!vu64(v, slot_off, &w)) {
            snprintf(why, n, "slot outside the region");
            return LK_DAMAGED;
        }
        if (w == SHMKV__SLOT_EMPTY)
            return LK_ABSENT;
        if (!SHMKV__SLOT_LIVE(w) || SHMKV__SLOT_TAG(w) != tag)
            continue;
        ent e;
        if (!entry_read(v, NULL, SHMKV__SLOT_OFF(w), &e, why, n))
            return LK_DAMAGED;
        if (e.klen != o->klen || memcmp(e.key, o->key, o->klen) != 0)
            continue;
        unsigned char *p = malloc(e.vlen ? e.vlen : 1);
        if (!p) {
            snprintf(why, n, "out of memory");
            return LK_DAMAGED;
        }
        memcpy(p, e.key + e.klen, e.vlen);
        vu64(v, slot_off, &w2);
        if (w2 != w) {
            free(p);
            snprintf(why, n, "the key's slot changed while it was read");
            return LK_DAMAGED;
        }
        *val = p;
        *vlen = e.vlen;
        *kind = e.kind;
        return LK_FOUND;
    }
    return LK_ABSENT;
}

int mode_get(store *s, const opts *o)
{
    unsigned char *val = NULL;
    uint32_t vlen = 0;
    uint16_t kind = 0;
    char why[256] = "";
    lk_res r = LK_DAMAGED;
    bool live = store_attached(s);
    if (live)
        store_remap(s);
    for (int t = 0; t < (live ? READ_TRIES : 1) && r == LK_DAMAGED; t++) {
        if (t) {
            store_remap(s);
            usleep(1000);
        }
        r = lookup(&s->v, &s->hdr, o, &val, &vlen, &kind, why, sizeof why);
    }
    FILE *f = stdout;
    if (o->json) {
        fputs("{\"store\":", f);
        put_jcstr(f, s->label);
        fputc(',', f);
        put_jkey(f, o->key, o->klen);
        fprintf(f, ",\"found\":%s", r == LK_FOUND ? "true" : "false");
        if (r == LK_FOUND) {
            fputc(',', f);
            put_value_json(f, val, vlen, kind);
        } else if (r == LK_DAMAGED) {
            fputs(",\"error\":", f);
            put_jcstr(f, why);
        }
        fputs("}\n", f);
    } else if (r == LK_FOUND) {
        put_value_text(f, val, vlen, kind, "", true);
    } else if (r == LK_ABSENT) {
        fputs("shmkv-dump: key not found: ", stderr);
        put_text(stderr, o->key, o->klen, false);
        fputc('\n', stderr);
    } else {
        fprintf(stderr, "shmkv-dump: cannot read the key: %s (run --check)\n", why);
    }
    free(val);
    if (fflush(f) != 0)
        return EXIT_RUNTIME;
    return r == LK_FOUND ? EXIT_SOUND : EXIT_PROBLEMS;
}
