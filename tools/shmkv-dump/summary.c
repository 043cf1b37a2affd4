/*
 * summary.c - the default summary and --stats. The summary reads the
 * header and the per-segment counters, and each live slot's block header
 * to count claims (O(keys)); --stats walks every chunk and block. Neither
 * takes a lock: numbers of a store in use are a moment's approximation.
 */
#include "dump.h"

#include <inttypes.h>
#include <stdlib.h>
#include <time.h>

static void fmt_time(char *buf, size_t n, uint64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (t == 0 || !gmtime_r(&tt, &tm) || !strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, n, "%" PRIu64, t);
}

typedef struct totals {
    uint64_t keys, tombs, slots, used, chunk_bytes, nchunks;
    uint64_t index_keys, index_used;
    uint32_t index_dirty;
    uint64_t claims_live, claims_expired, claims_bad;
} totals;

/* Claims of one segment's table: each live slot's entry, and its lease
 * when its block has one. */
static void count_claims(const view *v, uint64_t toff, uint64_t cap, const lclock *clk,
                         totals *t)
{
    char why[256];
    for (uint64_t j = 0; j < cap; j++) {
        uint64_t w;
        ent e;
        shmkv__lease l;
        const unsigned char *owner;
        if (!vu64(v, toff + sizeof(shmkv__table) + j * 8, &w) || !SHMKV__SLOT_LIVE(w) ||
            !entry_read(v, NULL, SHMKV__SLOT_OFF(w), &e, why, sizeof why))
            continue;
        int r = entry_lease(v, &e, UINT64_MAX, UINT64_MAX, &l, &owner, why, sizeof why);
        if (r < 0)
            t->claims_bad++;
        else if (r > 0 && lclock_live(clk, l.expiry))
            t->claims_live++;
        else if (r > 0)
            t->claims_expired++;
    }
}

static void gather(const store *s, totals *t)
{
    const shmkv__hdr *h = &s->hdr;
    const view *v = &s->v;
    lclock clk;
    store_lclock(s, &clk);
    memset(t, 0, sizeof *t);
    for (uint32_t i = 0; i <= h->nseg; i++) {
        shmkv__alloc a;
        uint64_t aoff = i < h->nseg ? shmkv__seg_off(h, i) + offsetof(shmkv__seg, alloc)
                                    : h->index_off + offsetof(shmkv__index, alloc);
        if (!vcopy(v, aoff, &a, sizeof a))
            continue;
        t->used += a.used_bytes;
        t->chunk_bytes += a.chunk_bytes;
        t->nchunks += a.nchunks;
        if (i == h->nseg) {
            t->index_used = a.used_bytes;
            break;
        }
        uint64_t base = shmkv__seg_off(h, i), toff, cnt, tombs, cap;
        char why[256];
        if (vu64(v, base + offsetof(shmkv__seg, count), &cnt))
            t->keys += cnt;
        if (vu64(v, base + offsetof(shmkv__seg, tombs), &tombs))
            t->tombs += tombs;
        if (vu64(v, base + offsetof(shmkv__seg, table), &toff) && toff &&
            table_read(v, toff, &cap, NULL, why, sizeof why)) {
            t->slots += cap;
            count_claims(v, toff, cap, &clk, t);
        }
    }
    vu64(v, h->index_off + offsetof(shmkv__index, n), &t->index_keys);
    vu32(v, h->index_off + offsetof(shmkv__index, dirty), &t->index_dirty);
}

static const char *state_of(const store *s, bool attached, char *buf, size_t n)
{
    const shmkv__hdr *h = &s->hdr;
    uint32_t clean = atomic_load_explicit(&h->clean, memory_order_relaxed);
    if (attached)
        snprintf(buf, n, "open");
    else if (h->backend == SHMKV_BACKEND_MEMORY)
        snprintf(buf, n, "abandoned");
    else if (clean == 1)
        snprintf(buf, n, "clean");
    else
        snprintf(buf, n, "unclean");
    return buf;
}

static const char *state_text(const char *st)
{
    if (!strcmp(st, "open"))
        return "open: in use by attached processes";
    if (!strcmp(st, "abandoned"))
        return "abandoned: every process left without closing; the next opener starts it empty";
    if (!strcmp(st, "clean"))
        return "clean: the last process closed it normally";
    return "unclean: the last process did not close it; the next opener repairs it";
}

int mode_summary(store *s, const opts *o)
{
    const shmkv__hdr *h = &s->hdr;
    totals t;
    gather(s, &t);
    bool attached = store_attached(s);
    char st[32], tb[64];
    state_of(s, attached, st, sizeof st);
    uint64_t top = atomic_load_explicit(&h->top, memory_order_relaxed);
    uint64_t fsz = atomic_load_explicit(&h->file_size, memory_order_relaxed);
    uint64_t disk = (uint64_t)s->st.st_blocks * 512u;
    double load = t.slots ? (double)t.keys / (double)t.slots : 0.0;
    uint64_t free_in = t.chunk_bytes > t.used ? t.chunk_bytes - t.used : 0;
    uint64_t room = h->reserve > top ? h->reserve - top : 0;
    uint64_t opens = atomic_load_explicit(&h->opens, memory_order_relaxed);
    uint64_t recov = atomic_load_explicit(&h->recoveries, memory_order_relaxed);
    uint64_t last_token = atomic_load_explicit(&h->claim_token, memory_order_relaxed);
    FILE *f = stdout;

    if (o->json) {
        fputs("{\"store\":", f);
        put_jcstr(f, s->label);
        fputs(",\"path\":", f);
        put_jcstr(f, s->path);
        fprintf(f, ",\"format_version\":%" PRIu32 ",\"backend\":\"%s\",\"created\":%" PRIu64
                ",\"size\":{\"used\":%" PRIu64 ",\"allocated\":%" PRIu64 ",\"on_disk\":%" PRIu64
                ",\"file\":%" PRIu64 ",\"reserved\":%" PRIu64 "}", h->version,
                h->backend == SHMKV_BACKEND_MEMORY ? "memory" : "disk", h->created, top, fsz,
                disk, (uint64_t)s->st.st_size, h->reserve);
        fprintf(f, ",\"keys\":%" PRIu64 ",\"segments\":%" PRIu32 ",\"slots\":%" PRIu64
                ",\"tombstones\":%" PRIu64 ",\"load_factor\":%.4f", t.keys, h->nseg, t.slots,
                t.tombs, load);
        fprintf(f, ",\"bytes_in_use\":%" PRIu64 ",\"bytes_free\":%" PRIu64 ",\"chunks\":%" PRIu64
                ",\"chunk_bytes\":%" PRIu64 ",\"reserve_left\":%" PRIu64, t.used, free_in,
                t.nchunks, t.chunk_bytes, room);
        fprintf(f, ",\"claims\":{\"live\":%" PRIu64 ",\"expired\":%" PRIu64 ",\"unreadable\":%"
                PRIu64 ",\"last_token\":%" PRIu64 "}", t.claims_live, t.claims_expired,
                t.claims_bad, last_token);
        fprintf(f, ",\"track_keys\":%s", h->track_keys ? "true" : "false");
        if (h->track_keys)
            fprintf(f, ",\"index\":{\"keys\":%" PRIu64 ",\"bytes_in_use\":%" PRIu64
                    ",\"dirty\":%s}", t.index_keys, t.index_used, t.index_dirty ? "true" : "false");
        fprintf(f, ",\"opens\":%" PRIu64 ",\"recoveries\":%" PRIu64, opens, recov);
        fputs(",\"attached\":[", f);
        bool first = true;
        for (uint32_t i = 0; i < SHMKV__ATTACH_SLOTS; i++) {
            int32_t pid = atomic_load_explicit(&h->attach[i].pid, memory_order_relaxed);
            if (!pid)
                continue;
            fprintf(f, "%s{\"pid\":%" PRId32 ",\"alive\":%s,\"since\":%" PRIu64 "}",
                    first ? "" : ",", pid, pid_alive(pid) ? "true" : "false",
                    h->attach[i].since);
            first = false;
        }
        fprintf(f, "],\"in_use\":%s,\"clean\":%s,\"state\":\"%s\"}\n",
                attached ? "true" : "false",
                atomic_load_explicit(&h->clean, memory_order_relaxed) == 1 ? "true" : "false",
                st);
        return fflush(f) ? EXIT_RUNTIME : EXIT_SOUND;
    }

    char a[64], b[64], c[64], d[64];
    fprintf(f, "store:          %s\n", s->label);
    if (s->found_backend == SHMKV_BACKEND_MEMORY)
        fprintf(f, "object:         %s\n", s->path);
    fmt_time(tb, sizeof tb, h->created);
    fprintf(f, "format:         version %" PRIu32 ", %s backend, created %s\n", h->version,
            h->backend == SHMKV_BACKEND_MEMORY ? "memory" : "disk", tb);
    fmt_bytes(a, sizeof a, top);
    fmt_bytes(b, sizeof b, disk);
    fmt_bytes(c, sizeof c, h->reserve);
    fmt_bytes(d, sizeof d, fsz);
    fprintf(f, "size:           used %s\n", a);
    fprintf(f, "                allocated %s, on disk %s\n", d, b);
    fprintf(f, "                reserved %s\n", c);
    fprintf(f, "keys:           %" PRIu64 "\n", t.keys);
    fprintf(f, "segments:       %" PRIu32 ", %" PRIu64 " slots, %" PRIu64
            " tombstones, load factor %.2f\n", h->nseg, t.slots, t.tombs, load);
    fmt_bytes(a, sizeof a, t.used);
    fmt_bytes(b, sizeof b, free_in);
    fmt_bytes(c, sizeof c, room);
    fprintf(f, "bytes in use:   %s\n", a);
    fprintf(f, "bytes free:     %s in %" PRIu64 " chunks, %s of reserve left\n", b,
            t.nchunks, c);
    fprintf(f, "claims:         %" PRIu64 " live, %" PRIu64 " expired, last token %" PRIu64,
            t.claims_live, t.claims_expired, last_token);
    if (t.claims_bad)
        fprintf(f, ", %" PRIu64 " unreadable (run --check)", t.claims_bad);
    fputc('\n', f);
    if (h->track_keys)
        fprintf(f, "key tracking:   on (index of %" PRIu64 " keys%s)\n", t.index_keys,
                t.index_dirty ? ", marked for rebuilding" : "");
    else
        fprintf(f, "key tracking:   off\n");
    fprintf(f, "opens:          %" PRIu64 ", lock recoveries %" PRIu64 "\n", opens, recov);
    uint32_t listed = 0;
    for (uint32_t i = 0; i < SHMKV__ATTACH_SLOTS; i++)
        listed += atomic_load_explicit(&h->attach[i].pid, memory_order_relaxed) != 0;
    fprintf(f, "attached:       %" PRIu32 " process%s listed%s\n", listed,
            listed == 1 ? "" : "es", attached ? "" : ", none attached now");
    for (uint32_t i = 0; i < SHMKV__ATTACH_SLOTS; i++) {
        int32_t pid = atomic_load_explicit(&h->attach[i].pid, memory_order_relaxed);
        if (!pid)
            continue;
        fmt_time(tb, sizeof tb, h->attach[i].since);
        fprintf(f, "                pid %" PRId32 " %s, since %s\n", pid,
                pid_alive(pid) ? "alive" : "dead", tb);
    }
    fprintf(f, "shutdown:       %s\n", state_text(st));
    return fflush(f) ? EXIT_RUNTIME : EXIT_SOUND;
}

/* ---- --stats ---------------------------------------------------------------- */

typedef struct ostat {
    uint64_t chunks, chunk_bytes, live, live_bytes, freeb, free_bytes, tail;
} ostat;

typedef struct cstat {
    uint64_t live, live_bytes, freeb, free_bytes;
} cstat;

static void put_ostat(FILE *f, const ostat *x)
{
    fprintf(f, "\"chunks\":%" PRIu64 ",\"chunk_bytes\":%" PRIu64 ",\"used_blocks\":%" PRIu64
            ",\"used_bytes\":%" PRIu64 ",\"free_blocks\":%" PRIu64 ",\"free_block_bytes\":%"
            PRIu64 ",\"tail_bytes\":%" PRIu64, x->chunks, x->chunk_bytes, x->live,
            x->live_bytes, x->freeb, x->free_bytes, x->tail);
}

int mode_stats(store *s, const opts *o)
{
    const shmkv__hdr *h = &s->hdr;
    const view *v = &s->v;
    scan sc;
    if (scan_region(v, h, &sc, NULL) < 0) {
        fprintf(stderr, "shmkv-dump: out of memory\n");
        return EXIT_RUNTIME;
    }
    ostat *os = calloc(h->nseg + 1, sizeof *os);
    cstat *cs = calloc(256, sizeof *cs); /* every cls byte, big blocks included */
    if (!os || !cs) {
        free(os);
        free(cs);
        scan_free(&sc);
        fprintf(stderr, "shmkv-dump: out of memory\n");
        return EXIT_RUNTIME;
    }
    ostat all = {0};
    uint64_t pool_n = 0, pool_b = 0; /* chunks of the free pool: any owner, any size */
    for (size_t i = 0; i < sc.nc; i++) {
        const chk *c = &sc.c[i];
        if (c->owner == SHMKV__OWNER_FREE)
            pool_n++, pool_b += c->size;
        uint32_t sl = c->owner < h->nseg ? c->owner
                      : c->owner == SHMKV__OWNER_INDEX ? h->nseg : UINT32_MAX;
        uint64_t tail = c->used <= c->size && c->used >= SHMKV__CHUNK_HDR ? c->size - c->used : 0;
        all.chunks++, all.chunk_bytes += c->size, all.tail += tail;
        if (sl == UINT32_MAX)
            continue;
        os[sl].chunks++, os[sl].chunk_bytes += c->size, os[sl].tail += tail;
    }
    for (size_t i = 0; i < sc.nb; i++) {
        const blk *b = &sc.b[i];
        uint32_t sl = b->owner < h->nseg ? b->owner
                      : b->owner == SHMKV__OWNER_INDEX ? h->nseg : UINT32_MAX;
        bool used = b->flags & SHMKV__BF_USED;
        ostat *x = sl == UINT32_MAX ? NULL : &os[sl];
        if (used) {
            all.live++, all.live_bytes += b->size;
            cs[b->cls].live++, cs[b->cls].live_bytes += b->size;
            if (x)
                x->live++, x->live_bytes += b->size;
        } else {
            all.freeb++, all.free_bytes += b->size;
            cs[b->cls].freeb++, cs[b->cls].free_bytes += b->size;
            if (x)
                x->freeb++, x->free_bytes += b->size;
        }
    }
    uint64_t top = atomic_load_explicit(&h->top, memory_order_relaxed);
    uint64_t fsz = atomic_load_explicit(&h->file_size, memory_order_relaxed);
    uint64_t slack = fsz > top ? fsz - top : 0, room = h->reserve > top ? h->reserve - top : 0;
    uint64_t fr = all.free_bytes + all.tail;
    double frag = fr ? (double)all.free_bytes / (double)fr : 0.0;
    double overhead = all.chunk_bytes ? 1.0 - (double)all.live_bytes / (double)all.chunk_bytes : 0.0;
    bool live = store_attached(s);
    FILE *f = stdout;

    if (o->json) {
        fputs("{\"store\":", f);
        put_jcstr(f, s->label);
        fprintf(f, ",\"in_use\":%s,\"complete\":%s,\"segments\":[", live ? "true" : "false",
                sc.tiled ? "true" : "false");
    } else {
        fprintf(f, "store: %s%s\n", s->label,
                live ? " (in use: figures are a moment's approximation)" : "");
        if (!sc.tiled)
            fprintf(f, "note: the chunk chain is damaged; figures cover the part before "
                    "0x%" PRIx64 " (run --check)\n", sc.end);
        fprintf(f, "\nsegments:\n%6s %10s %8s %10s %6s %7s %12s %12s %12s %12s\n", "seg",
                "keys", "tombs", "slots", "load", "chunks", "chunk-bytes", "used-bytes",
                "free-blocks", "tail-bytes");
    }
    for (uint32_t i = 0; i < h->nseg; i++) {
        uint64_t base = shmkv__seg_off(h, i);
        uint64_t cnt = 0, tombs = 0, toff = 0, cap = 0;
        char why[256];
        vu64(v, base + offsetof(shmkv__seg, count), &cnt);
        vu64(v, base + offsetof(shmkv__seg, tombs), &tombs);
        if (vu64(v, base + offsetof(shmkv__seg, table), &toff) && toff &&
            !table_read(v, toff, &cap, NULL, why, sizeof why))
            cap = 0;
        double load = cap ? (double)cnt / (double)cap : 0.0;
        if (o->json) {
            fprintf(f, "%s\n{\"id\":%" PRIu32 ",\"keys\":%" PRIu64 ",\"tombstones\":%" PRIu64
                    ",\"slots\":%" PRIu64 ",\"load\":%.4f,", i ? "," : "", i, cnt, tombs, cap,
                    load);
            put_ostat(f, &os[i]);
            fputc('}', f);
        } else {
            fprintf(f, "%6" PRIu32 " %10" PRIu64 " %8" PRIu64 " %10" PRIu64 " %6.2f %7" PRIu64
                    " %12" PRIu64 " %12" PRIu64 " %12" PRIu64 " %12" PRIu64 "\n", i, cnt, tombs,
                    cap, load, os[i].chunks, os[i].chunk_bytes, os[i].live_bytes,
                    os[i].free_bytes, os[i].tail);
        }
    }
    const ostat *ix = &os[h->nseg];
    if (o->json) {
        fputs("\n],\"index\":{", f);
        put_ostat(f, ix);
        fputs("},\"classes\":[", f);
    } else {
        fprintf(f, "%6s %10s %8s %10s %6s %7" PRIu64 " %12" PRIu64 " %12" PRIu64 " %12" PRIu64
                " %12" PRIu64 "\n", "index", "-", "-", "-", "-", ix->chunks, ix->chunk_bytes,
                ix->live_bytes, ix->free_bytes, ix->tail);
        fprintf(f, "\nsize classes (blocks in use / free, all owners):\n%5s %10s %10s %14s"
                " %10s %14s\n", "class", "size", "used", "used-bytes", "free", "free-bytes");
    }
    bool first = true;
    for (uint32_t k = 0; k < SHMKV__NCLASS; k++) {
        const cstat *c = &cs[k];
        if (!c->live && !c->freeb)
            continue;
        if (o->json)
            fprintf(f, "%s\n{\"class\":%" PRIu32 ",\"size\":%" PRIu64 ",\"used\":%" PRIu64
                    ",\"used_bytes\":%" PRIu64 ",\"free\":%" PRIu64 ",\"free_bytes\":%" PRIu64
                    "}", first ? "" : ",", k, shmkv__class_size(k), c->live, c->live_bytes,
                    c->freeb, c->free_bytes);
        else
            fprintf(f, "%5" PRIu32 " %10" PRIu64 " %10" PRIu64 " %14" PRIu64 " %10" PRIu64
                    " %14" PRIu64 "\n", k, shmkv__class_size(k), c->live, c->live_bytes,
                    c->freeb, c->free_bytes);
        first = false;
    }
    if (o->json) {
        fprintf(f, "\n],\"totals\":{");
        put_ostat(f, &all);
        fprintf(f, "},\"free\":{\"free_blocks\":%" PRIu64 ",\"chunk_tails\":%" PRIu64
                ",\"allocated_past_top\":%" PRIu64 ",\"reserve_left\":%" PRIu64
                ",\"free_pool_chunks\":%" PRIu64 ",\"free_pool_bytes\":%" PRIu64 "}"
                ",\"fragmentation\":%.4f,\"overhead\":%.4f}\n", all.free_bytes, all.tail,
                slack, room, pool_n, pool_b, frag, overhead);
    } else {
        char a[64], b[64], c[64], d[64], e[64];
        fmt_bytes(a, sizeof a, all.live_bytes);
        fmt_bytes(b, sizeof b, all.free_bytes);
        fmt_bytes(c, sizeof c, all.tail);
        fmt_bytes(d, sizeof d, slack);
        fmt_bytes(e, sizeof e, room);
        fprintf(f, "\nspace:\n");
        fprintf(f, "  chunks:             %" PRIu64 " (%" PRIu64 " bytes)\n", all.chunks,
                all.chunk_bytes);
        fprintf(f, "  blocks in use:      %" PRIu64 ", %s\n", all.live, a);
        fprintf(f, "  free blocks:        %" PRIu64 ", %s (reusable by their class only)\n",
                all.freeb, b);
        fprintf(f, "  chunk tails:        %s (never handed out; any size)\n", c);
        if (pool_n) {
            char p[64];
            fmt_bytes(p, sizeof p, pool_b);
            fprintf(f, "  free pool:          %" PRIu64 " chunk%s, %s (any owner, any size;"
                    " counted in the chunk tails)\n", pool_n, pool_n == 1 ? "" : "s", p);
        }
        fprintf(f, "  allocated past top: %s\n", d);
        fprintf(f, "  reserve left:       %s\n", e);
        fprintf(f, "  fragmentation:      %.1f%% of the free space in chunks is in free "
                "blocks\n", frag * 100);
        fprintf(f, "  overhead:           %.1f%% of chunk bytes are not in used blocks\n",
                overhead * 100);
    }
    free(os);
    free(cs);
    scan_free(&sc);
    return fflush(f) ? EXIT_RUNTIME : EXIT_SOUND;
}
