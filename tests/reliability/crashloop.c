/*
 * crashloop.c - writers are SIGKILLed at random while they write one store;
 * afterwards nothing they were told had succeeded may be missing.
 *
 *   crashloop [--long SECONDS] [--seconds S] [--backend disk|memory|both]
 *             [--writers N] [--dump PATH-TO-shmkv-dump] [--seed N] [--keep]
 *             [--inject-lost-writes]
 *
 * Quick mode (no --long) runs a few tens of seconds, split between the
 * disk and the memory backend; --long SECONDS runs that long in total, as
 * back-to-back rounds of at most a minute (a fresh store each, backends
 * alternating), so that the logs never pile up.
 *
 * How it works. N writer processes (forked, default 4) run a random mix of
 * set / delete / cas / swap / set_if_absent / compare_and_delete /
 * get_or_set / incr / get / list / random_key (and, rarely, rebuild_index,
 * which holds every lock at once) on a few hundred overlapping keys of one
 * store with key tracking on. Each writer incarnation appends
 * fixed-size records to its own log file with write(2): an INTENT record
 * (with a CLOCK_MONOTONIC timestamp) before calling a modifying operation
 * and an ACK record (timestamp and outcome) after it returned. Every few
 * milliseconds (1-10 ms, random) the parent SIGKILLs a random writer, reaps
 * it, notes the time of death, and starts a new incarnation. Now and then
 * it kills all of them at once, so that the next opener finds nobody
 * attached (which exercises open-time recovery on the disk backend).
 *
 * Every value written is "w<incarnation>:<seq>:<filler>", where the filler
 * is derived from (incarnation, seq): a value identifies the one operation
 * that wrote it and a torn value is detected byte for byte.
 *
 * What is checked at the end, with every writer dead:
 *  - shmkv-dump --check exits 0 (before the verifier opens the store, and
 *    for the disk backend once more after it closed it cleanly);
 *  - list() returns exactly size() keys, in order, the same keys and values
 *    that get() returns one by one; random_key() only draws present keys;
 *  - per data key, linearizability of the final state: every operation took
 *    effect at some instant between its INTENT and ACK timestamps (or its
 *    writer's death, when it has no ACK). So the final value must come from
 *    a write W whose end is not before the start of any acknowledged write
 *    to that key; an absent key needs such a delete (or no acknowledged
 *    write at all). A value that no operation wrote, or that an operation
 *    reported as not written (a failed cas), is a failure;
 *  - per counter key: acknowledged increments <= final value <=
 *    acknowledged + in-flight increments.
 * The last line is "crashloop: survived N kills, M acknowledged ops" or
 * "crashloop: FAILED ...".
 *
 * --inject-lost-writes tests the verifier itself: writers then log some
 * sets and increments without making them, and the run passes only when
 * the verifier reports those as lost writes (and nothing else).
 */
#include "harness.h"

#include "internal.h" /* only to report the header's repair counter */

#include <getopt.h>

#define MAXKEYS 4096
#define NCOUNTERS 4
#define VAL_MAX 512

enum {
    OP_SET = 1,
    OP_DEL,
    OP_CAS,
    OP_SWAP,
    OP_SIA,
    OP_CAD,
    OP_GOS,
    OP_INCR,
    OP__N
};

static const char *op_name(int op)
{
    static const char *n[] = {"?", "set", "delete", "cas", "swap", "set_if_absent",
                              "compare_and_delete", "get_or_set", "incr"};
    return op > 0 && op < OP__N ? n[op] : "?";
}

static bool op_deletes(int op)
{
    return op == OP_DEL || op == OP_CAD;
}

#define R_INTENT 0x49
#define R_ACK 0x41

/* One log record, 16 bytes: records never straddle a page, so a write(2)
 * cut short by SIGKILL cannot leave half of one inside the file (a torn
 * record could only be the last one, and it is ignored). The writer's
 * incarnation is the log file's name. */
typedef struct rec {
    uint8_t type;
    uint8_t op;   /* low 4 bits: OP_*; INTENT of incr: delta << 4;
                   * ACK: bit 7 set when the op wrote */
    uint16_t key;
    uint32_t seq;
    uint64_t ns;  /* CLOCK_MONOTONIC */
} rec;
_Static_assert(sizeof(rec) == 16, "record size");
#define REC_OP(r) ((r)->op & 0x0f)
#define REC_DELTA(r) (((r)->op >> 4) & 0x07)
#define REC_WROTE(r) (((r)->op & 0x80) != 0)

/* ---- configuration -------------------------------------------------------- */

static struct {
    int writers;
    int nkeys;     /* data keys k0000..; counters c0..c3 follow */
    double seconds;
    bool long_mode;
    const char *dump;
    const char *backends; /* "disk", "memory" or "both" */
    uint64_t seed;
    bool keep;
    bool inject; /* self-test: writers sometimes log a write they skipped */
} cfg = {.writers = 4, .nkeys = 300, .backends = "both"};

static t_scratch scratch;
static volatile sig_atomic_t stop_now;

static void on_signal(int sig)
{
    (void)sig;
    stop_now = 1;
}

/* ---- keys and values -------------------------------------------------------- */

static int key_name(int k, char *out)
{
    if (k < cfg.nkeys)
        return sprintf(out, "k%04d", k);
    return sprintf(out, "c%d", k - cfg.nkeys);
}

/* Key index of a name, or -1 if it is not one of ours. */
static int key_index(const unsigned char *p, size_t n)
{
    if (n == 5 && p[0] == 'k') {
        int v = 0;
        for (size_t i = 1; i < 5; i++) {
            if (p[i] < '0' || p[i] > '9')
                return -1;
            v = v * 10 + (p[i] - '0');
        }
        return v < cfg.nkeys ? v : -1;
    }
    if (n == 2 && p[0] == 'c' && p[1] >= '0' && p[1] < '0' + NCOUNTERS)
        return cfg.nkeys + (p[1] - '0');
    return -1;
}

static size_t filler_len(uint32_t inc, uint32_t seq)
{
    uint64_t h = t_mix(((uint64_t)inc << 32) | seq);
    /* mostly short, sometimes a few hundred bytes: several size classes */
    return (h & 7) == 0 ? (size_t)(h >> 8) % 400 : (size_t)(h >> 8) % 40;
}

static size_t make_value(char *out, uint32_t inc, uint32_t seq)
{
    int n = sprintf(out, "w%" PRIu32 ":%" PRIu32 ":", inc, seq);
    size_t f = filler_len(inc, seq);
    uint64_t x = ((uint64_t)inc * 2654435761u) ^ seq;
    for (size_t i = 0; i < f; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        out[n + (int)i] = (char)('a' + (x >> 59) % 26);
    }
    return (size_t)n + f;
}

/* Parse and fully verify a data value. 0 when well-formed. */
static int parse_value(const void *v, size_t n, uint32_t *inc, uint32_t *seq)
{
    const char *p = v;
    if (n < 5 || n > VAL_MAX || p[0] != 'w')
        return -1;
    uint64_t a = 0, b = 0;
    size_t i = 1;
    for (; i < n && p[i] >= '0' && p[i] <= '9' && i < 12; i++)
        a = a * 10 + (uint64_t)(p[i] - '0');
    if (i == 1 || i >= n || p[i] != ':')
        return -1;
    size_t j = ++i;
    for (; i < n && p[i] >= '0' && p[i] <= '9' && i - j < 11; i++)
        b = b * 10 + (uint64_t)(p[i] - '0');
    if (i == j || i >= n || p[i] != ':' || a > UINT32_MAX || b > UINT32_MAX)
        return -1;
    char want[VAL_MAX + 32];
    size_t wl = make_value(want, (uint32_t)a, (uint32_t)b);
    if (wl != n || memcmp(want, v, n) != 0)
        return -1;
    *inc = (uint32_t)a;
    *seq = (uint32_t)b;
    return 0;
}

static const char *show(const void *p, size_t n)
{
    static char ring[4][96];
    static int at;
    char *o = ring[at++ & 3];
    size_t j = 0;
    const unsigned char *c = p;
    for (size_t i = 0; i < n && j < 80; i++)
        j += (size_t)snprintf(o + j, 96 - j, (c[i] >= 32 && c[i] < 127) ? "%c" : "\\x%02x", c[i]);
    if (j >= 80)
        snprintf(o + 80, 16, "...");
    return o;
}

/* ---- the writer ---------------------------------------------------------------- */

static void wfail(uint32_t inc, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void wfail(uint32_t inc, const char *fmt, ...)
{
    char b[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    fprintf(stderr, "crashloop: writer %" PRIu32 " (pid %d): %s\n", inc, (int)getpid(), b);
    _exit(3);
}

typedef struct wstate {
    shmkv_db *db;
    int log;
    uint32_t inc;
    uint32_t seq;
    t_rng rng;
    /* what this writer last saw in each key: 0 unknown, 1 absent, 2 value */
    uint8_t seen[MAXKEYS];
    uint32_t seen_inc[MAXKEYS], seen_seq[MAXKEYS];
    int64_t last_count[NCOUNTERS];
} wstate;

static void wlog(wstate *w, int type, int op, int key, int64_t arg)
{
    uint8_t o = (uint8_t)op;
    if (type == R_INTENT && op == OP_INCR)
        o |= (uint8_t)(arg << 4);
    if (type == R_ACK && arg)
        o |= 0x80;
    rec r = {(uint8_t)type, o, (uint16_t)key, w->seq, t_now_ns()};
    if (fd_write_all(w->log, &r, sizeof r) != 0)
        wfail(w->inc, "log write: %s", strerror(errno));
}

static void note_value(wstate *w, int k, const void *v, size_t n, const char *what)
{
    uint32_t a, b;
    if (parse_value(v, n, &a, &b) != 0)
        wfail(w->inc, "%s(%d) returned a malformed value \"%s\" (%zu bytes)", what, k, show(v, n), n);
    w->seen[k] = 2;
    w->seen_inc[k] = a;
    w->seen_seq[k] = b;
}

static size_t expect_of(wstate *w, int k, char *buf, bool *absent)
{
    *absent = w->seen[k] != 2;
    if (*absent)
        return 0;
    return make_value(buf, w->seen_inc[k], w->seen_seq[k]);
}

#define WCHECK(w, rc, what)                                                                 \
    do {                                                                                    \
        if ((rc) != 0)                                                                      \
            wfail((w)->inc, "%s -> %d (%s)", (what), (rc), shmkv_strerror(rc));              \
    } while (0)

typedef struct listck {
    wstate *w;
    const char *prefix;
    size_t plen;
    unsigned char last[16];
    size_t lastlen;
    uint64_t n;
    bool keys_only;
} listck;

static int list_cb(void *ctx, const void *key, size_t klen, const void *val, size_t vlen,
                   shmkv_kind kind)
{
    listck *l = ctx;
    (void)kind;
    int k = key_index(key, klen);
    if (k < 0 || klen < l->plen || memcmp(key, l->prefix, l->plen) != 0)
        wfail(l->w->inc, "list(%s) returned the unexpected key \"%s\"", l->prefix, show(key, klen));
    if (l->n && t_keycmp(l->last, l->lastlen, key, klen) >= 0)
        wfail(l->w->inc, "list(%s) out of order: \"%s\" after \"%s\"", l->prefix, show(key, klen),
              show(l->last, l->lastlen));
    memcpy(l->last, key, klen);
    l->lastlen = klen;
    l->n++;
    if (!l->keys_only && k < cfg.nkeys)
        note_value(l->w, k, val, vlen, "list");
    return 0;
}

static int pick_key(wstate *w)
{
    /* Half of the traffic on a hot tenth of the keys: real contention. */
    int hot = cfg.nkeys / 10 ? cfg.nkeys / 10 : 1;
    return t_below(&w->rng, 2) ? (int)t_below(&w->rng, (uint64_t)hot)
                                 : (int)t_below(&w->rng, (uint64_t)cfg.nkeys);
}

static void __attribute__((noreturn))
writer_main(const char *where, shmkv_backend be, uint32_t inc, uint64_t seed)
{
    static wstate w; /* big; never on the stack */
    memset(&w, 0, sizeof w);
    w.inc = inc;
    w.rng = t_rng_seeded(seed);
    char path[256];
    snprintf(path, sizeof path, "%s/log.%" PRIu32, scratch.dir, inc);
    w.log = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (w.log < 0)
        wfail(inc, "open(%s): %s", path, strerror(errno));
    shmkv_options o;
    memset(&o, 0, sizeof o);
    o.backend = be;
    o.track_keys = SHMKV_TRACK_ON;
    int rc = shmkv_open(where, &o, &w.db);
    WCHECK(&w, rc, "shmkv_open");

    char kname[16], val[VAL_MAX + 32], exp[VAL_MAX + 32], out[VAL_MAX + 64];
    for (;;) {
        if (t_below(&w.rng, 1000) == 0) {
            /* rarely: hold every segment lock and the index lock at once,
             * so that some kills leave all of them to be repaired */
            rc = shmkv_rebuild_index(w.db);
            WCHECK(&w, rc, "rebuild_index");
            continue;
        }
        unsigned p = (unsigned)t_below(&w.rng, 100);
        int k = pick_key(&w);
        int kl = key_name(k, kname);
        size_t vl, el, ol = 0;
        bool absent;
        int flag = 0;
        shmkv_kind kind;
        if (p < 22) { /* set */
            w.seq++;
            vl = make_value(val, inc, w.seq);
            wlog(&w, R_INTENT, OP_SET, k, 0);
            if (cfg.inject && t_below(&w.rng, 10) == 0)
                rc = 0; /* self-test: claim a write that never happened */
            else
                rc = shmkv_set(w.db, kname, (size_t)kl, val, vl, SHMKV_KIND_STRING);
            WCHECK(&w, rc, "set");
            wlog(&w, R_ACK, OP_SET, k, 1);
        } else if (p < 31) { /* delete */
            w.seq++;
            wlog(&w, R_INTENT, OP_DEL, k, 0);
            rc = shmkv_delete(w.db, kname, (size_t)kl, &flag);
            WCHECK(&w, rc, "delete");
            wlog(&w, R_ACK, OP_DEL, k, 1); /* absent afterwards either way */
            w.seen[k] = 1;
        } else if (p < 42) { /* cas, usually with what we saw last */
            w.seq++;
            vl = make_value(val, inc, w.seq);
            el = expect_of(&w, k, exp, &absent);
            if (t_below(&w.rng, 8) == 0 && !absent)
                exp[el - 1] ^= 1; /* a wrong expectation now and then */
            wlog(&w, R_INTENT, OP_CAS, k, 0);
            rc = shmkv_cas(w.db, kname, (size_t)kl, absent ? NULL : exp, el, val, vl,
                           SHMKV_KIND_STRING, &flag);
            WCHECK(&w, rc, "cas");
            wlog(&w, R_ACK, OP_CAS, k, flag);
            if (flag)
                note_value(&w, k, val, vl, "cas");
        } else if (p < 49) { /* swap */
            w.seq++;
            vl = make_value(val, inc, w.seq);
            wlog(&w, R_INTENT, OP_SWAP, k, 0);
            rc = shmkv_swap(w.db, kname, (size_t)kl, val, vl, SHMKV_KIND_STRING, out, sizeof out,
                            &ol, &kind, &flag);
            WCHECK(&w, rc, "swap");
            wlog(&w, R_ACK, OP_SWAP, k, 1);
            if (flag)
                note_value(&w, k, out, ol, "swap");
            note_value(&w, k, val, vl, "swap");
        } else if (p < 54) { /* set_if_absent */
            w.seq++;
            vl = make_value(val, inc, w.seq);
            wlog(&w, R_INTENT, OP_SIA, k, 0);
            rc = shmkv_set_if_absent(w.db, kname, (size_t)kl, val, vl, SHMKV_KIND_STRING, &flag);
            WCHECK(&w, rc, "set_if_absent");
            wlog(&w, R_ACK, OP_SIA, k, flag);
        } else if (p < 60) { /* compare_and_delete */
            w.seq++;
            el = expect_of(&w, k, exp, &absent);
            if (absent) {
                el = make_value(exp, inc, w.seq); /* never stored: cannot match */
            }
            wlog(&w, R_INTENT, OP_CAD, k, 0);
            rc = shmkv_compare_and_delete(w.db, kname, (size_t)kl, exp, el, &flag);
            WCHECK(&w, rc, "compare_and_delete");
            wlog(&w, R_ACK, OP_CAD, k, flag);
            if (flag)
                w.seen[k] = 1;
        } else if (p < 66) { /* get_or_set */
            w.seq++;
            vl = make_value(val, inc, w.seq);
            wlog(&w, R_INTENT, OP_GOS, k, 0);
            rc = shmkv_get_or_set(w.db, kname, (size_t)kl, val, vl, SHMKV_KIND_STRING, out,
                                  sizeof out, &ol, &kind, &flag);
            WCHECK(&w, rc, "get_or_set");
            wlog(&w, R_ACK, OP_GOS, k, !flag);
            note_value(&w, k, out, ol, "get_or_set");
        } else if (p < 76) { /* incr on a counter */
            int c = (int)t_below(&w.rng, NCOUNTERS);
            int ck = cfg.nkeys + c;
            int cl = key_name(ck, kname);
            int64_t delta = 1 + (int64_t)t_below(&w.rng, 3), res = 0;
            w.seq++;
            wlog(&w, R_INTENT, OP_INCR, ck, delta);
            if (cfg.inject && t_below(&w.rng, 10) == 0) {
                wlog(&w, R_ACK, OP_INCR, ck, 1); /* self-test: a lost increment */
                continue;
            }
            rc = shmkv_incr(w.db, kname, (size_t)cl, delta, SHMKV_KIND_STRING, &res);
            WCHECK(&w, rc, "incr");
            wlog(&w, R_ACK, OP_INCR, ck, 1);
            /* Counters only grow: our result passes our previous one by at
             * least our own delta. */
            if (res < w.last_count[c] + delta)
                wfail(inc, "incr(c%d, %" PRId64 ") = %" PRId64 " after an earlier %" PRId64, c,
                      delta, res, w.last_count[c]);
            w.last_count[c] = res;
        } else if (p < 90) { /* get */
            rc = shmkv_get(w.db, kname, (size_t)kl, out, sizeof out, &ol, &kind);
            if (rc == SHMKV_ENOTFOUND) {
                w.seen[k] = 1;
            } else {
                WCHECK(&w, rc, "get");
                note_value(&w, k, out, ol, "get");
            }
        } else if (p < 95) { /* list a prefix */
            static const char *pf[] = {"k00", "k01", "k02", "k", "c", ""};
            listck l = {.w = &w, .prefix = pf[t_below(&w.rng, 6)]};
            l.plen = strlen(l.prefix);
            l.keys_only = t_below(&w.rng, 2);
            uint64_t lim = t_below(&w.rng, 2) ? 0 : 1 + t_below(&w.rng, 20);
            rc = shmkv_list(w.db, l.prefix, l.plen, lim,
                            l.keys_only ? SHMKV_LIST_KEYS_ONLY : 0, list_cb, &l);
            WCHECK(&w, rc, "list");
            if (lim && l.n > lim)
                wfail(inc, "list(limit %" PRIu64 ") returned %" PRIu64 " keys", lim, l.n);
        } else { /* random_key */
            static const char *pf[] = {"", "k00", "k1", "c"};
            const char *pre = pf[t_below(&w.rng, 4)];
            size_t pl = strlen(pre);
            unsigned char kb[64];
            size_t got = 0;
            rc = shmkv_random_key(w.db, pre, pl, kb, sizeof kb, &got);
            if (rc != SHMKV_ENOTFOUND) {
                WCHECK(&w, rc, "random_key");
                if (key_index(kb, got) < 0 || got < pl || memcmp(kb, pre, pl) != 0)
                    wfail(inc, "random_key(\"%s\") drew \"%s\"", pre, show(kb, got));
            }
        }
    }
}

/* ---- the parent: spawning, killing ----------------------------------------------- */

typedef struct wslot {
    pid_t pid;
    uint32_t inc;
} wslot;

static uint64_t *death_ns; /* by incarnation: time it was reaped */
static uint64_t *birth_ns;
static uint32_t ninc, capinc;
static t_rng prng;
static char failmsg[1024];
static int nfail, nlost; /* failures reported; how many were lost writes */

static void failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void failf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char b[1024];
    vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    nfail++;
    fprintf(stderr, "crashloop: FAIL: %s\n", b);
    if (!failmsg[0])
        snprintf(failmsg, sizeof failmsg, "%s", b);
}

static int spawn(wslot *s, const char *where, shmkv_backend be)
{
    if (ninc + 2 >= capinc) {
        uint32_t nc = capinc ? capinc * 2 : 1024;
        death_ns = realloc(death_ns, nc * sizeof *death_ns);
        birth_ns = realloc(birth_ns, nc * sizeof *birth_ns);
        if (!death_ns || !birth_ns) {
            failf("out of memory");
            return -1;
        }
        memset(death_ns + capinc, 0, (nc - capinc) * sizeof *death_ns);
        memset(birth_ns + capinc, 0, (nc - capinc) * sizeof *birth_ns);
        capinc = nc;
    }
    uint32_t inc = ++ninc;
    uint64_t seed = t_next(&prng);
    birth_ns[inc] = t_now_ns();
    pid_t p = t_fork_raw();
    if (p < 0) {
        failf("fork: %s", strerror(errno));
        return -1;
    }
    if (p == 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        writer_main(where, be, inc, seed);
    }
    s->pid = p;
    s->inc = inc;
    return 0;
}

/* Kill (unless already dead) and reap one writer; a writer that died any
 * other way than by our SIGKILL is a failure. */
static int reap(wslot *s, bool kill_it)
{
    int st = 0;
    if (kill_it)
        kill(s->pid, SIGKILL);
    if (t_reap(s->pid, &st) != 0) {
        failf("waitpid(%d): %s", (int)s->pid, strerror(errno));
        return -1;
    }
    death_ns[s->inc] = t_now_ns();
    s->pid = 0;
    if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) {
        char b[64];
        failf("writer %" PRIu32 " ended by itself: %s (see its message above)", s->inc,
              t_status_str(st, b, sizeof b));
        return -1;
    }
    return 0;
}

/* A writer gone without being killed: it found a problem. */
static int check_alive(wslot *ws, int n)
{
    for (int i = 0; i < n; i++) {
        if (!ws[i].pid)
            continue;
        int st;
        pid_t r = waitpid(ws[i].pid, &st, WNOHANG);
        if (r == ws[i].pid) {
            char b[64];
            death_ns[ws[i].inc] = t_now_ns();
            ws[i].pid = 0;
            failf("writer %" PRIu32 " ended by itself: %s", ws[i].inc, t_status_str(st, b, sizeof b));
            return -1;
        }
    }
    return 0;
}

/* ---- shmkv-dump ----------------------------------------------------------------------- */

static int dump_runs, dump_skipped;

static int run_dump(const char *where, shmkv_backend be, const char *when)
{
    if (!cfg.dump || access(cfg.dump, X_OK) != 0) {
        if (!dump_skipped++)
            printf("crashloop: shmkv-dump not available (%s): structure check skipped\n",
                   cfg.dump ? cfg.dump : "no --dump given");
        return 0;
    }
    char out[256];
    snprintf(out, sizeof out, "%s/dump.out", scratch.dir);
    int st = t_dump_run(cfg.dump, where, be == SHMKV_BACKEND_MEMORY, out, NULL, 0);
    if (st < 0) {
        failf("shmkv-dump: %s", strerror(errno));
        return -1;
    }
    dump_runs++;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    char b[64];
    failf("shmkv-dump --check (%s) %s; its output:", when, t_status_str(st, b, sizeof b));
    FILE *f = fopen(out, "r");
    if (f) {
        char line[512];
        int n = 0;
        while (fgets(line, sizeof line, f) && n++ < 60)
            fprintf(stderr, "    %s", line);
        fclose(f);
    }
    return -1;
}

/* ---- verification ---------------------------------------------------------------------- */

typedef struct kfinal {
    bool present;
    uint32_t inc, seq;    /* data keys: who wrote the final value */
    int64_t count;        /* counters: final value */
    uint64_t smax;        /* latest start of an acknowledged write */
    uint64_t wend;        /* end of the op that wrote the final value */
    bool wfound;          /* that op is in the logs as a write */
    bool wbad;            /* that op said it did not write */
    uint64_t dend;        /* latest end of an op that may have deleted */
    bool dany;
    int64_t acked, inflight;
    uint32_t smax_inc, smax_seq;
    int smax_op;
} kfinal;

static kfinal *kf;

typedef struct vlist {
    int n;
    int sorted_bad;
    unsigned char last[16];
    size_t lastlen;
    bool listed[MAXKEYS + NCOUNTERS];
    char badkey[64];
    uint32_t vinc[MAXKEYS], vseq[MAXKEYS];
    bool vbad[MAXKEYS];
} vlist;

static int vlist_cb(void *ctx, const void *key, size_t klen, const void *val, size_t vlen,
                    shmkv_kind kind)
{
    vlist *l = ctx;
    (void)kind;
    int k = key_index(key, klen);
    if (k < 0) {
        snprintf(l->badkey, sizeof l->badkey, "%s", show(key, klen));
        return 0;
    }
    if (l->n && t_keycmp(l->last, l->lastlen, key, klen) >= 0)
        l->sorted_bad++;
    memcpy(l->last, key, klen);
    l->lastlen = klen;
    l->n++;
    l->listed[k] = true;
    if (k < cfg.nkeys)
        l->vbad[k] = parse_value(val, vlen, &l->vinc[k], &l->vseq[k]) != 0;
    return 0;
}

static int parse_count(const char *p, size_t n, int64_t *out)
{
    if (n == 0 || n > 20)
        return -1;
    char b[24];
    memcpy(b, p, n);
    b[n] = 0;
    char *end;
    errno = 0;
    long long v = strtoll(b, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int verify_state(shmkv_db *db, uint64_t *present_out)
{
    int total = cfg.nkeys + NCOUNTERS;
    int bad = 0;
    uint64_t size0 = shmkv_size(db);
    static vlist vl;
    memset(&vl, 0, sizeof vl);
    int rc = shmkv_list(db, "", 0, 0, 0, vlist_cb, &vl);
    if (rc) {
        failf("list -> %d (%s)", rc, shmkv_strerror(rc));
        return -1;
    }
    uint64_t size1 = shmkv_size(db);
    if (vl.badkey[0])
        failf("list returned a key nobody wrote: \"%s\"", vl.badkey), bad++;
    if (vl.sorted_bad)
        failf("list returned keys out of order (%d times)", vl.sorted_bad), bad++;

    uint64_t present = 0;
    char kname[16], out[VAL_MAX + 64];
    for (int k = 0; k < total; k++) {
        int kl = key_name(k, kname);
        size_t ol = 0;
        rc = shmkv_get(db, kname, (size_t)kl, out, sizeof out, &ol, NULL);
        if (rc == SHMKV_ENOTFOUND) {
            kf[k].present = false;
        } else if (rc) {
            failf("get(%s) -> %d (%s)", kname, rc, shmkv_strerror(rc));
            bad++;
            continue;
        } else {
            kf[k].present = true;
            present++;
        }
        if (kf[k].present != vl.listed[k]) {
            failf("key %s: get says %s, list says %s", kname, kf[k].present ? "present" : "absent",
                  vl.listed[k] ? "present" : "absent");
            bad++;
        }
        if (!kf[k].present)
            continue;
        if (k < cfg.nkeys) {
            if (parse_value(out, ol, &kf[k].inc, &kf[k].seq) != 0) {
                failf("key %s holds a value no writer wrote: \"%s\" (%zu bytes)", kname,
                      show(out, ol), ol);
                bad++;
                kf[k].present = false;
                continue;
            }
            if (vl.listed[k] && (vl.vbad[k] || vl.vinc[k] != kf[k].inc || vl.vseq[k] != kf[k].seq)) {
                failf("key %s: list and get disagree on the value", kname);
                bad++;
            }
        } else if (parse_count(out, ol, &kf[k].count) != 0) {
            failf("counter %s holds \"%s\", not an integer", kname, show(out, ol));
            bad++;
        }
    }
    if ((uint64_t)vl.n != present || size1 != present) {
        failf("list returned %d keys, get finds %" PRIu64 ", size() says %" PRIu64, vl.n, present,
              size1);
        bad++;
    }
    if (size0 != size1) {
        failf("size() said %" PRIu64 " before the first locking call and %" PRIu64
              " after it (count not repaired after a crash)",
              size0, size1);
        bad++;
    }

    /* random_key draws only present keys; ENOTFOUND only when none match */
    static const char *pf[] = {"", "k00", "k1", "c", "zz"};
    for (int i = 0; i < 5; i++) {
        size_t pl = strlen(pf[i]);
        int matching = 0;
        for (int k = 0; k < total; k++) {
            int kl = key_name(k, kname);
            if (kf[k].present && (size_t)kl >= pl && memcmp(kname, pf[i], pl) == 0)
                matching++;
        }
        for (int d = 0; d < 100; d++) {
            unsigned char kb[64];
            size_t got = 0;
            rc = shmkv_random_key(db, pf[i], pl, kb, sizeof kb, &got);
            if (matching == 0) {
                if (rc != SHMKV_ENOTFOUND) {
                    failf("random_key(\"%s\") -> %d, expected ENOTFOUND", pf[i], rc);
                    bad++;
                }
                break;
            }
            int k = rc == 0 ? key_index(kb, got) : -1;
            if (rc != 0 || k < 0 || !kf[k].present || got < pl || memcmp(kb, pf[i], pl) != 0) {
                failf("random_key(\"%s\") -> %d \"%s\": not a present matching key", pf[i], rc,
                      rc == 0 ? show(kb, got) : "");
                bad++;
                break;
            }
        }
    }
    *present_out = present;
    return bad ? -1 : 0;
}

typedef struct logstats {
    uint64_t acked, inflight, records;
} logstats;

static int scan_logs(uint32_t inc_lo, uint32_t inc_hi, logstats *ls)
{
    int total = cfg.nkeys + NCOUNTERS;
    int bad = 0;
    rec *buf = malloc(sizeof(rec) * 4096);
    if (!buf)
        return -1;
    for (uint32_t inc = inc_lo; inc <= inc_hi; inc++) {
        char path[256];
        snprintf(path, sizeof path, "%s/log.%" PRIu32, scratch.dir, inc);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue; /* killed before it opened its log */
        rec pend = {0};
        bool have = false;
        uint32_t lastseq = 0;
        for (;;) {
            ssize_t r = read(fd, buf, sizeof(rec) * 4096);
            if (r <= 0)
                break;
            size_t n = (size_t)r / sizeof(rec); /* a torn tail record is dropped */
            for (size_t i = 0; i < n; i++) {
                rec *x = &buf[i];
                ls->records++;
                if ((x->type != R_INTENT && x->type != R_ACK) || x->key >= total ||
                    REC_OP(x) == 0 || REC_OP(x) >= OP__N) {
                    failf("log %" PRIu32 ": damaged record", inc);
                    bad++;
                    goto next_file;
                }
                if (x->type == R_INTENT) {
                    if (have || x->seq <= lastseq) {
                        failf("log %" PRIu32 ": intent %" PRIu32 " out of sequence", inc, x->seq);
                        bad++;
                        goto next_file;
                    }
                    pend = *x;
                    have = true;
                    lastseq = x->seq;
                    continue;
                }
                if (!have || x->seq != pend.seq || REC_OP(x) != REC_OP(&pend) ||
                    x->key != pend.key) {
                    failf("log %" PRIu32 ": ack without its intent", inc);
                    bad++;
                    goto next_file;
                }
                have = false;
                ls->acked++;
                kfinal *f = &kf[x->key];
                if (REC_OP(x) == OP_INCR) {
                    f->acked += REC_DELTA(&pend);
                    continue;
                }
                bool mine = f->present && f->inc == inc && f->seq == x->seq;
                if (REC_WROTE(x)) {
                    if (pend.ns > f->smax) {
                        f->smax = pend.ns;
                        f->smax_inc = inc;
                        f->smax_seq = x->seq;
                        f->smax_op = REC_OP(x);
                    }
                    if (op_deletes(REC_OP(x))) {
                        f->dany = true;
                        if (x->ns > f->dend)
                            f->dend = x->ns;
                    } else if (mine) {
                        f->wfound = true;
                        f->wend = x->ns;
                    }
                } else if (mine) {
                    f->wbad = true;
                    f->wend = x->ns;
                }
            }
        }
        if (have) { /* in flight when its writer was killed */
            ls->inflight++;
            uint64_t end = death_ns[inc];
            if (!end) {
                failf("incarnation %" PRIu32 " has no time of death", inc);
                bad++;
            }
            kfinal *f = &kf[pend.key];
            if (REC_OP(&pend) == OP_INCR) {
                f->inflight += REC_DELTA(&pend);
            } else if (op_deletes(REC_OP(&pend))) {
                f->dany = true;
                if (end > f->dend)
                    f->dend = end;
            } else if (f->present && f->inc == inc && f->seq == pend.seq) {
                f->wfound = true;
                f->wend = end;
            }
        }
    next_file:
        close(fd);
    }
    free(buf);
    return bad ? -1 : 0;
}

static int judge(uint64_t t0)
{
    int bad = 0;
    char kname[16];
    for (int k = 0; k < cfg.nkeys + NCOUNTERS; k++) {
        kfinal *f = &kf[k];
        key_name(k, kname);
        if (k >= cfg.nkeys) {
            int64_t v = f->present ? f->count : 0;
            if (v < f->acked || v > f->acked + f->inflight) {
                failf("counter %s = %" PRId64 ", but %" PRId64 " was acknowledged and %" PRId64
                      " more in flight",
                      kname, v, f->acked, f->inflight);
                bad++;
                nlost += v < f->acked;
            }
            continue;
        }
        double smax_ms = f->smax ? (double)(f->smax - t0) / 1e6 : 0;
        if (f->present) {
            if (f->wbad) {
                failf("key %s holds w%" PRIu32 ":%" PRIu32 ", written by an op that reported "
                      "it did not write",
                      kname, f->inc, f->seq);
                bad++;
            } else if (!f->wfound) {
                failf("key %s holds w%" PRIu32 ":%" PRIu32 ", which no logged write to this key "
                      "produced",
                      kname, f->inc, f->seq);
                bad++;
            } else if (f->wend < f->smax) {
                failf("key %s holds w%" PRIu32 ":%" PRIu32 " (its op ended at %.3f ms), but the "
                      "acknowledged %s w%" PRIu32 ":%" PRIu32 " started later (%.3f ms): "
                      "an acknowledged write was lost",
                      kname, f->inc, f->seq, (double)(f->wend - t0) / 1e6, op_name(f->smax_op),
                      f->smax_inc, f->smax_seq, smax_ms);
                bad++;
                nlost++;
            }
        } else if (f->smax && !(f->dany && f->dend >= f->smax)) {
            failf("key %s is absent, but the acknowledged %s w%" PRIu32 ":%" PRIu32
                  " (started %.3f ms) was not followed by any delete: an acknowledged write "
                  "was lost",
                  kname, op_name(f->smax_op), f->smax_inc, f->smax_seq, smax_ms);
            bad++;
            nlost++;
        }
    }
    return bad ? -1 : 0;
}

/* ---- one round on one backend ------------------------------------------------------------- */

typedef struct totals {
    uint64_t kills, acked, inflight, massacres, records, present, repairs;
} totals;

static int round_run(shmkv_backend be, double seconds, totals *tot)
{
    /* a fresh store per round: a later round must not find an earlier
     * round's keys and counters */
    static int round_no;
    round_no++;
    char where[256];
    if (be == SHMKV_BACKEND_DISK)
        snprintf(where, sizeof where, "%s/store%d.kv", scratch.dir, round_no);
    else
        snprintf(where, sizeof where, "%sm%d", scratch.name_prefix, round_no);
    const char *bname = be == SHMKV_BACKEND_DISK ? "disk" : "memory";

    shmkv_options o;
    memset(&o, 0, sizeof o);
    o.backend = be;
    o.track_keys = SHMKV_TRACK_ON;
    shmkv_db *db = NULL;
    int rc = shmkv_open(where, &o, &db);
    if (rc) {
        failf("%s: create %s: %s", bname, where, shmkv_strerror(rc));
        return -1;
    }
    /* The disk store is left to the writers alone, so that a massacre makes
     * the next opener recover it; a memory store needs one process attached
     * or it starts over empty. */
    if (be == SHMKV_BACKEND_DISK) {
        shmkv_close(db);
        db = NULL;
    }

    wslot ws[64];
    int nw = cfg.writers;
    uint32_t inc_lo = ninc + 1;
    uint64_t kills = 0, massacres = 0;
    uint64_t t0 = t_now_ns();
    uint64_t deadline = t0 + (uint64_t)(seconds * 1e9);
    int bad = 0;
    for (int i = 0; i < nw && !bad; i++)
        bad = spawn(&ws[i], where, be) != 0;
    while (!bad && !stop_now && t_now_ns() < deadline) {
        t_sleep_us(1000 + t_below(&prng, 9001));
        if (check_alive(ws, nw) != 0) {
            bad = 1;
            break;
        }
        if (t_below(&prng, 150) == 0) {
            /* everybody at once */
            for (int i = 0; i < nw; i++)
                kill(ws[i].pid, SIGKILL);
            for (int i = 0; i < nw && !bad; i++) {
                bad = reap(&ws[i], false) != 0;
                kills++;
            }
            massacres++;
            for (int i = 0; i < nw && !bad; i++)
                bad = spawn(&ws[i], where, be) != 0;
            continue;
        }
        int v = (int)t_below(&prng, (uint64_t)nw);
        if (reap(&ws[v], true) != 0) {
            bad = 1;
            break;
        }
        kills++;
        bad = spawn(&ws[v], where, be) != 0;
    }
    /* stop: the final kill leaves every writer's last op in flight */
    for (int i = 0; i < nw; i++)
        if (ws[i].pid)
            kill(ws[i].pid, SIGKILL);
    for (int i = 0; i < nw; i++)
        if (ws[i].pid && reap(&ws[i], false) != 0)
            bad = 1;
    uint32_t inc_hi = ninc;
    if (stop_now) {
        failf("interrupted");
        bad = 1;
    }
    printf("crashloop: %s: %.1f s, %" PRIu64 " kills (%" PRIu64 " of all writers at once), "
           "%" PRIu32 " writer incarnations\n",
           bname, (double)(t_now_ns() - t0) / 1e9, kills, massacres, inc_hi - inc_lo + 1);
    fflush(stdout);

    /* The store as the crashes left it. */
    if (!bad && run_dump(where, be, "after the crashes") != 0)
        bad = 1;

    if (!db) {
        o.flags = SHMKV_NOCREATE;
        rc = shmkv_open(where, &o, &db);
        if (rc) {
            failf("%s: reopen after the crashes: %s", bname, shmkv_strerror(rc));
            return -1;
        }
    }
    /* segment and index repairs after a dead lock owner, as the store
     * counted them (a kill outside any critical section needs none) */
    uint64_t repairs = atomic_load(&SHMKV__HDR(db->m)->recoveries);
    kf = calloc((size_t)(cfg.nkeys + NCOUNTERS), sizeof *kf);
    logstats ls = {0};
    uint64_t present = 0;
    if (!kf) {
        failf("out of memory");
        bad = 1;
    }
    if (kf && !bad) {
        if (verify_state(db, &present) != 0)
            bad = 1;
        if (scan_logs(inc_lo, inc_hi, &ls) != 0)
            bad = 1;
        if (!bad && judge(t0) != 0)
            bad = 1;
    }
    free(kf);
    kf = NULL;
    rc = shmkv_close(db);
    if (rc && !bad) {
        failf("close: %s", shmkv_strerror(rc));
        bad = 1;
    }
    if (!bad && be == SHMKV_BACKEND_DISK && run_dump(where, be, "after a clean close") != 0)
        bad = 1;
    if (be == SHMKV_BACKEND_MEMORY)
        shmkv_memory_unlink(where); /* gone already when we were the last */
    else if (!(cfg.keep && bad))
        unlink(where);
    printf("crashloop: %s: %s; %" PRIu64 " acknowledged ops, %" PRIu64 " in flight at a kill, "
           "%" PRIu64 " lock repairs, %" PRIu64 " keys present at the end\n",
           bname, bad ? "FAILED" : "verified", ls.acked, ls.inflight, repairs, present);
    tot->repairs += repairs;
    fflush(stdout);
    tot->kills += kills;
    tot->massacres += massacres;
    tot->acked += ls.acked;
    tot->inflight += ls.inflight;
    tot->records += ls.records;
    tot->present += present;
    /* The logs of this round are no longer needed. */
    for (uint32_t inc = inc_lo; inc <= inc_hi && !cfg.keep; inc++) {
        char path[256];
        snprintf(path, sizeof path, "%s/log.%" PRIu32, scratch.dir, inc);
        unlink(path);
    }
    return bad ? -1 : 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: crashloop [--long SECONDS] [--seconds S] [--backend disk|memory|both]\n"
            "                 [--writers N] [--keys N] [--dump PATH] [--seed N] [--keep]\n"
            "                 [--inject-lost-writes]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"long", required_argument, 0, 'L'},   {"seconds", required_argument, 0, 's'},
        {"backend", required_argument, 0, 'b'}, {"writers", required_argument, 0, 'w'},
        {"keys", required_argument, 0, 'k'},   {"dump", required_argument, 0, 'd'},
        {"seed", required_argument, 0, 'S'},   {"keep", no_argument, 0, 'K'},
        {"inject-lost-writes", no_argument, 0, 'I'}, {0, 0, 0, 0}};
    int c;
    cfg.seed = t_pick_seed();
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'L': cfg.seconds = strtod(optarg, NULL); cfg.long_mode = true; break;
        case 's': cfg.seconds = strtod(optarg, NULL); break;
        case 'b': cfg.backends = optarg; break;
        case 'w': cfg.writers = atoi(optarg); break;
        case 'k': cfg.nkeys = atoi(optarg); break;
        case 'd': cfg.dump = optarg; break;
        case 'S': cfg.seed = strtoull(optarg, NULL, 0); break;
        case 'K': cfg.keep = true; break;
        case 'I': cfg.inject = true; break;
        default: usage();
        }
    }
    if (cfg.writers < 1 || cfg.writers > 64 || cfg.nkeys < 10 || cfg.nkeys > MAXKEYS ||
        (strcmp(cfg.backends, "disk") && strcmp(cfg.backends, "memory") && strcmp(cfg.backends, "both")))
        usage();
    if (cfg.seconds <= 0) {
        /* quick mode: 40 s in the plain build, 16 s under ASan, 8 s under
         * TSan (whose forks and kills are slow); SHMKV_TEST_SCALE scales it */
        double f = t_scale_env() > 0 ? t_scale_env() : 1.0;
        cfg.seconds = (T_TSAN ? 8.0 : T_ASAN ? 16.0 : 40.0) * f;
        if (cfg.seconds < 2)
            cfg.seconds = 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    prng = t_rng_seeded(cfg.seed);
    printf("crashloop: %s build, %s mode, %.0f s, %d writers, %d keys + %d counters, "
           "seed SHMKV_TEST_SEED=%#" PRIx64 "\n",
           t_flavour(), cfg.long_mode ? "long" : "quick", cfg.seconds, cfg.writers, cfg.nkeys,
           NCOUNTERS, cfg.seed);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    if (t_scratch_init(&scratch, "crash") != 0) {
        fprintf(stderr, "crashloop: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    totals tot = {0};
    int bad = 0;
    bool both = strcmp(cfg.backends, "both") == 0;
    /* Rounds of at most a minute, each on a fresh store whose logs are
     * verified and deleted before the next: a long run needs no more disk
     * than a short one (the logs grow by up to ~20 MB/s). Backends alternate. */
    double left = cfg.seconds;
    int nrounds = 0;
    while (left > 0.5 && !stop_now && !bad) {
        double len = left;
        if (both && len > cfg.seconds / 2)
            len = cfg.seconds / 2; /* quick mode: half on each backend */
        if (len > 60)
            len = 60;
        shmkv_backend be = both ? (nrounds % 2 ? SHMKV_BACKEND_MEMORY : SHMKV_BACKEND_DISK)
                           : strcmp(cfg.backends, "disk") == 0 ? SHMKV_BACKEND_DISK
                                                               : SHMKV_BACKEND_MEMORY;
        bad |= round_run(be, len, &tot) != 0;
        left -= len;
        nrounds++;
    }
    if (nrounds > 2)
        printf("crashloop: %d rounds\n", nrounds);

    if (cfg.keep && bad) {
        printf("crashloop: kept %s\n", scratch.dir);
        t_scratch_keep(&scratch);
    } else {
        t_scratch_done(&scratch);
    }
    free(death_ns);
    free(birth_ns);
    if (cfg.inject) {
        /* Self-test of the verifier: the writes the writers only pretended
         * to make must be reported as lost, and nothing else may fail. */
        bool ok = nlost > 0 && nfail == nlost;
        printf("crashloop: self-test %s: %d lost writes detected, %d other failures\n",
               ok ? "passed" : "FAILED", nlost, nfail - nlost);
        return ok ? 0 : 1;
    }
    if (bad) {
        printf("crashloop: FAILED after %" PRIu64 " kills, %" PRIu64 " acknowledged ops: %s\n",
               tot.kills, tot.acked, failmsg[0] ? failmsg : "see above");
        return 1;
    }
    printf("crashloop: %" PRIu64 " lock repairs after dead owners, %" PRIu64
           " ops in flight at a kill\n",
           tot.repairs, tot.inflight);
    printf("crashloop: survived %" PRIu64 " kills, %" PRIu64 " acknowledged ops\n", tot.kills,
           tot.acked);
    return 0;
}
