/*
 * test_claims_mp.c - claims across processes (issue 14).
 *
 * exactly_once_*: the "Done when". N tokens (keys "tok:NNNNN");
 * three consumer processes loop claim_random + complete(delete_key 1) with
 * a short lease, while the parent SIGKILLs a random consumer every few ms
 * and starts a new one in its slot. A consumer killed while holding a
 * claim leaves the key held until the lease runs out; then another one
 * takes it. Each consumer incarnation has its own log, to which it appends
 *     "I <key>"  after claim_random returned 0 (intent to complete),
 *     "D <key>"  after complete returned 0,
 *     "S <key>"  after complete returned SHMKV_ESTALE (lease ran out first),
 *     "R <key>"  after a release (a consumer gives some keys back),
 * each line 16 bytes (padded), with one write(2) on an O_APPEND file. A few times in a
 * thousand a consumer sleeps past its lease before completing, and then
 * complete must say SHMKV_ESTALE. At the end, with every consumer gone:
 *   - no key has two "D" lines (fencing: a stale holder never completes);
 *   - a key with no "D" line was completed by a consumer that was killed
 *     between complete's return and its "D" write: its log ends with
 *     "I <key>" (at most one such key per killed incarnation), and nothing
 *     else explains a missing key;
 *   - the store is empty, claim_count says 0/0, shmkv_check and
 *     shmkv-dump --check find it sound.
 * About half the consumers also SIGKILL themselves at a random claims
 * hook point (claim, complete, release: built, indexed, published), so
 * that kills land inside the critical sections too; one killed at
 * claims.complete.published is the "completed, not logged" case above.
 * Disk and memory, tracked and untracked; the parent stays attached (a
 * memory store needs a process), every wait is bounded.
 *
 * one_winner_*: two processes claim_key the same keys at once: each key is
 * won by exactly one.
 *
 * pop_once_*: three processes pop_random one queue, some SIGKILLed: no key
 * popped twice, none lost but what a killed popper had just taken.
 *
 * stopped_holder_is_fenced: a holder stopped (SIGSTOP) past its lease,
 * taken over or not, comes back to SHMKV_ESTALE for complete, release and
 * renew.
 *
 * killed_holder_*: a process claims keys and is SIGKILLed holding them;
 * nobody can claim them until the leases run out, then all of them are
 * claimable, none lost.
 */
#include "harness.h"

#include <poll.h>

TestSuite(claims_mp, .init = t_setup, .fini = t_teardown, .timeout = 600);

#define NCONS 3
#define TTL_MS 150u
#define PFX "tok:"
#define PLEN 4

static int key_num(const char *k, size_t kl)
{
    if (kl != PLEN + 5 || memcmp(k, PFX, PLEN) != 0)
        return -1;
    int x = 0;
    for (size_t i = PLEN; i < kl; i++) {
        if (k[i] < '0' || k[i] > '9')
            return -1;
        x = x * 10 + (k[i] - '0');
    }
    return x;
}

/* A log line is "<tag> <key>", padded with spaces to 16 bytes with its
 * newline. A write(2) that straddles a page can be cut short by a SIGKILL
 * between its pages; one inside a page cannot, and 16 divides the page
 * size, so a killed process never leaves a torn line. */
#define LOG_LINE 16

static void log_line(int fd, char tag, const char *k, size_t kl)
{
    char line[LOG_LINE];
    CHILD_CHECK(kl + 3 <= LOG_LINE, "key %s too long for a log line", t_show(k, kl));
    memset(line, ' ', sizeof line);
    line[0] = tag;
    line[1] = ' ';
    memcpy(line + 2, k, kl);
    line[LOG_LINE - 1] = '\n';
    CHILD_CHECK(write(fd, line, LOG_LINE) == LOG_LINE, "log write: %s", strerror(errno));
}

/* The token number of a log line (without its newline), -1 if malformed. */
static int line_key(const char *line, size_t ll)
{
    if (ll != LOG_LINE - 1 || line[1] != ' ')
        return -1;
    size_t kl = ll - 2;
    while (kl > 0 && line[2 + kl - 1] == ' ')
        kl--;
    return key_num(line + 2, kl);
}

static void consumer(const char *where, shmkv_backend be, const char *logpath, int slot,
                     uint64_t seed, const char *kill_point, int kill_skip)
{
    int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    CHILD_CHECK(fd >= 0, "open %s: %s", logpath, strerror(errno));
    shmkv_db *db = NULL;
    shmkv_options o = t_opts(be, SHMKV_TRACK_DEFAULT);
    CHILD_OK(shmkv_open(where, &o, &db));
    t_rng r = t_rng_seeded(seed);
    if (kill_point)
        t_hook_kill_at(kill_point, kill_skip); /* die inside the library */
    char owner[32];
    int ol = snprintf(owner, sizeof owner, "consumer-%d-%d", slot, (int)getpid());
    shmkv_lease l = {owner, (size_t)ol, TTL_MS};
    uint64_t idle_since = 0, last_token = 0;
    for (;;) {
        char k[64];
        size_t kl = 0;
        shmkv_claim c;
        int rc = shmkv_claim_random(db, PFX, PLEN, &l, k, sizeof k, &kl, &c, NULL, 0, NULL, NULL);
        if (rc == SHMKV_ENOTFOUND) {
            uint64_t n = 0;
            CHILD_OK(shmkv_count(db, PFX, PLEN, &n));
            if (n == 0)
                break;
            /* the rest is held, by live consumers or by killed ones whose
             * leases have not run out yet */
            uint64_t now = t_now_ns();
            if (!idle_since)
                idle_since = now;
            CHILD_CHECK(now - idle_since < 30ull * 1000000000ull,
                        "%" PRIu64 " keys left, none claimable for 30 s (leases of %u ms)", n,
                        TTL_MS);
            t_sleep_us(1000 + t_below(&r, 2000));
            continue;
        }
        CHILD_OK(rc);
        idle_since = 0;
        CHILD_CHECK(key_num(k, kl) >= 0, "claimed %s", t_show(k, kl));
        /* tokens only grow, also as one process sees them */
        CHILD_CHECK(c.token > last_token, "token %" PRIu64 " after %" PRIu64, c.token, last_token);
        last_token = c.token;
        log_line(fd, 'I', k, kl);
        uint64_t roll = t_below(&r, 1000);
        if (roll < 30) {
            rc = shmkv_claim_release(db, k, kl, c.token);
            CHILD_CHECK(rc == 0 || rc == SHMKV_ESTALE, "release -> %s", shmkv_strerror(rc));
            log_line(fd, 'R', k, kl);
            continue;
        }
        bool late = roll < 34;
        if (late) {
            t_sleep_us((TTL_MS + 40) * 1000ull); /* past the lease */
        } else if (roll < 700) {
            /* work on the item; also lets the parent's kills land between
             * claim and complete */
            t_sleep_us(t_below(&r, 2000));
        }
        rc = shmkv_claim_complete(db, k, kl, c.token, 1);
        if (late)
            CHILD_CHECK(rc == SHMKV_ESTALE, "complete after the lease ran out -> %d (%s)", rc,
                        shmkv_strerror(rc));
        if (rc == 0) {
            log_line(fd, 'D', k, kl);
        } else {
            /* only a holder whose lease ran out gets here: this process
             * was stalled past TTL_MS (a loaded machine) or meant to be */
            CHILD_CHECK(rc == SHMKV_ESTALE, "complete -> %d (%s)", rc, shmkv_strerror(rc));
            log_line(fd, 'S', k, kl);
        }
    }
    CHILD_OK(shmkv_close(db));
    close(fd);
    _exit(0);
}

typedef struct {
    pid_t pid; /* 0: finished */
    int gen;
    int log; /* its incarnation's log */
} cslot;

typedef struct {
    char path[200];
    bool killed;
    const char *kill_point; /* armed at this hook point, or NULL */
} inc_log;

/* The points a consumer passes; the indexed ones only on tracked stores. */
static const char *const kill_points[] = {
    "claims.claim.built",    "claims.claim.indexed",    "claims.claim.published",
    "claims.complete.built", "claims.complete.indexed", "claims.complete.published",
    "claims.release.built",  "claims.release.indexed",  "claims.release.published",
};
#define NKILLP (sizeof kill_points / sizeof kill_points[0])

typedef struct {
    const char *where;
    shmkv_backend be;
    t_rng r;
    inc_log *logs;
    size_t nlogs, caplogs;
    cslot slots[NCONS];
    int hook_kills_left;
} crew;

/* Start a consumer in slot s, with a new log; about half of them (while
 * hook_kills_left lasts) SIGKILL themselves at a random claims hook point,
 * inside a critical section, which the parent's kills rarely hit. */
static void spawn(crew *cw, int s)
{
    if (cw->nlogs == cw->caplogs) {
        cw->caplogs *= 2;
        cw->logs = realloc(cw->logs, cw->caplogs * sizeof *cw->logs);
        cr_assert(cw->logs);
    }
    inc_log *lg = &cw->logs[cw->nlogs];
    memset(lg, 0, sizeof *lg);
    snprintf(lg->path, sizeof lg->path, "%s/c%d.%d.log", t_dir(), s, cw->slots[s].gen);
    int skip = 0;
    if (cw->hook_kills_left > 0 && t_below(&cw->r, 2) == 0) {
        lg->kill_point = kill_points[t_below(&cw->r, NKILLP)];
        skip = (int)t_below(&cw->r, 30);
    }
    cw->slots[s].log = (int)cw->nlogs++;
    uint64_t seed = t_next(&cw->r);
    pid_t p = t_fork();
    if (p == 0)
        consumer(cw->where, cw->be, lg->path, s, seed, lg->kill_point, skip);
    cw->slots[s].pid = p;
}

static void exactly_once(shmkv_backend be, int track)
{
    const char *cn = t_str("%s/%s", t_backend_name(be),
                           track == SHMKV_TRACK_ON ? "tracked" : "untracked");
    const int ntok = (int)t_scaled(5000, 1000);
    const int kills_wanted = (int)(40 * t_scale_heavy()) < 8 ? 8 : (int)(40 * t_scale_heavy());
    shmkv_options o = t_opts(be, track);
    o.segments = 16;
    const char *where = t_where(be, "once");
    shmkv_db *db = t_open_opts(where, &o);
    for (int i = 0; i < ntok; i++) {
        char k[32], v[32];
        int kl = snprintf(k, sizeof k, PFX "%05d", i);
        int vl = snprintf(v, sizeof v, "job-%d", i);
        T_OK(shmkv_set(db, k, (size_t)kl, v, (size_t)vl, SHMKV_KIND_STRING));
    }
    /* a neighbour no consumer may touch */
    t_set(db, "other", "x");

    static crew cw;
    memset(&cw, 0, sizeof cw);
    cw.where = where;
    cw.be = be;
    cw.r = t_rng_new();
    cw.caplogs = 64;
    cw.logs = calloc(cw.caplogs, sizeof *cw.logs);
    cr_assert(cw.logs);
    cw.hook_kills_left = kills_wanted;
    t_rng *r = &cw.r;
    for (int s = 0; s < NCONS; s++)
        spawn(&cw, s);
    int kills = 0, hook_kills = 0, running = NCONS;
    uint64_t t0 = t_now_ns();
    double limit = t_wait_default();
    while (running > 0) {
        t_sleep_us(2000 + t_below(r, 14000));
        cr_assert((double)(t_now_ns() - t0) / 1e9 < limit,
                  "%s: consumers still running after %.0f s", cn, limit);
        for (int s = 0; s < NCONS; s++) {
            if (!cw.slots[s].pid)
                continue;
            int st = 0;
            pid_t w = waitpid(cw.slots[s].pid, &st, WNOHANG);
            cr_assert(w >= 0, "waitpid: %s", strerror(errno));
            if (w == 0)
                continue;
            char b[96];
            inc_log *lg = &cw.logs[cw.slots[s].log];
            if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL && lg->kill_point) {
                /* died at its hook point: start another */
                lg->killed = true;
                hook_kills++;
                cw.hook_kills_left--;
                cw.slots[s].gen++;
                spawn(&cw, s);
                continue;
            }
            cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: consumer %d (gen %d): %s", cn, s,
                      cw.slots[s].gen, t_status_str(st, b, sizeof b));
            cw.slots[s].pid = 0;
            running--;
        }
        if (kills >= kills_wanted || running == 0)
            continue;
        int s = (int)t_below(r, NCONS);
        if (!cw.slots[s].pid)
            continue;
        /* reaped here rather than by t_kill(), so that a consumer that
         * failed a check just before the kill still fails the test */
        int st = 0;
        kill(cw.slots[s].pid, SIGKILL);
        cr_assert_eq(t_waitpid_for(cw.slots[s].pid, &st, 60, false), 0, "%s: reaping consumer %d",
                     cn, s);
        char b[96];
        cr_assert((WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) ||
                      (WIFEXITED(st) && WEXITSTATUS(st) == 0),
                  "%s: consumer %d (gen %d): %s", cn, s, cw.slots[s].gen,
                  t_status_str(st, b, sizeof b));
        cw.logs[cw.slots[s].log].killed = true;
        kills++;
        cw.slots[s].gen++;
        spawn(&cw, s);
    }
    double secs = (double)(t_now_ns() - t0) / 1e9;

    /* the logs */
    int *done = calloc((size_t)ntok, sizeof *done);
    unsigned char *explained = calloc((size_t)ntok, 1);
    cr_assert(done && explained);
    uint64_t nI = 0, nD = 0, nS = 0, nR = 0;
    inc_log *logs = cw.logs;
    size_t nlogs = cw.nlogs;
    for (size_t i = 0; i < nlogs; i++) {
        size_t len = 0;
        /* a consumer killed before it opened its log has none */
        unsigned char *text = t_exists(logs[i].path) ? t_read_file(logs[i].path, &len) : NULL;
        cr_assert(text || logs[i].killed, "%s: %s missing", cn, logs[i].path);
        int last_intent = -1; /* a trailing "I" with nothing after it */
        size_t pos = 0;
        while (text && pos < len) {
            unsigned char *nl = memchr(text + pos, '\n', len - pos);
            cr_assert(nl, "%s: %s: a torn last line", cn, logs[i].path);
            size_t ll = (size_t)(nl - (text + pos));
            const char *line = (const char *)text + pos;
            int x = line_key(line, ll);
            cr_assert(x >= 0 && x < ntok, "%s: bad log line in %s", cn, logs[i].path);
            switch (line[0]) {
            case 'I':
                nI++;
                last_intent = x;
                break;
            case 'D':
                nD++;
                cr_assert_eq(last_intent, x, "%s: %s: D without its I", cn, logs[i].path);
                done[x]++;
                cr_assert_eq(done[x], 1, "%s: " PFX "%05d completed twice (second in %s)", cn, x,
                             logs[i].path);
                last_intent = -1;
                break;
            case 'S':
                nS++;
                last_intent = -1;
                break;
            case 'R':
                nR++;
                last_intent = -1;
                break;
            default:
                cr_assert_fail("%s: bad tag in %s", cn, logs[i].path);
            }
            pos += ll + 1;
        }
        if (last_intent >= 0) {
            /* only a killed consumer can stop between I and its outcome */
            cr_assert(logs[i].killed, "%s: %s ends with an intent, but it was not killed", cn,
                      logs[i].path);
            explained[last_intent] = 1;
        }
        free(text);
    }
    int missing = 0, by_kill = 0;
    for (int x = 0; x < ntok; x++) {
        if (done[x])
            continue;
        cr_assert(explained[x],
                  "%s: " PFX "%05d was never completed, and no consumer was killed holding it", cn,
                  x);
        by_kill++;
        missing++;
    }
    cr_log_info("%s: %d tokens in %.2f s, %d kills, %d at hook points, %zu consumers; %" PRIu64
                " claims, %" PRIu64
                " completes logged, %d completed by a consumer killed before its log line, %" PRIu64
                " stale completes, %" PRIu64 " releases",
                cn, ntok, secs, kills, hook_kills, nlogs, nI, nD, by_kill, nS, nR);
    cr_assert_eq(kills, kills_wanted, "%s: the consumers finished before the kills did", cn);
    (void)missing;

    /* the store */
    uint64_t n = 0, live = 1, expired = 1;
    T_OK(shmkv_count(db, PFX, PLEN, &n));
    cr_assert_eq(n, 0, "%s: %" PRIu64 " tokens left in the store", cn, n);
    cr_assert_eq(shmkv_size(db), 1, "%s: size", cn);
    t_expect_str(db, "other", "x");
    T_OK(shmkv_claim_count(db, NULL, 0, &live, &expired));
    cr_assert(live == 0 && expired == 0, "%s: claims left: %" PRIu64 " live, %" PRIu64 " expired",
              cn, live, expired);
    t_check_sound(db, cn);
    t_dump_check(where, be);
    t_close(db);
    if (be == SHMKV_BACKEND_DISK)
        t_dump_check(where, be);
    free(done);
    free(explained);
    free(logs);
}

Test(claims_mp, exactly_once_disk_tracked, .timeout = 900)
{
    exactly_once(SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
}
Test(claims_mp, exactly_once_disk_untracked, .timeout = 900)
{
    exactly_once(SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF);
}
Test(claims_mp, exactly_once_memory_tracked, .timeout = 900)
{
    exactly_once(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_ON);
}
Test(claims_mp, exactly_once_memory_untracked, .timeout = 900)
{
    exactly_once(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_OFF);
}

/* ---- one winner per key ------------------------------------------------------------ */

#define NWIN 20000

static void racer(const char *where, shmkv_backend be, int start_fd, int resfd)
{
    shmkv_db *db = NULL;
    shmkv_options o = t_opts(be, SHMKV_TRACK_DEFAULT);
    CHILD_OK(shmkv_open(where, &o, &db));
    /* opened: say so, and start when both have */
    char b = 'r';
    CHILD_CHECK(write(resfd, &b, 1) == 1, "ready");
    CHILD_CHECK(read(start_fd, &b, 1) == 0, "start pipe");
    static unsigned char won[NWIN];
    shmkv_lease l = {"racer", 5, 60000};
    for (int i = 0; i < NWIN; i++) {
        char k[32];
        int kl = snprintf(k, sizeof k, "w:%05d", i);
        shmkv_claim c;
        int rc = shmkv_claim_key(db, k, (size_t)kl, &l, &c, NULL, 0, NULL, NULL);
        CHILD_CHECK(rc == 0 || rc == SHMKV_EHELD, "claim %s -> %s", k, shmkv_strerror(rc));
        won[i] = rc == 0;
    }
    CHILD_CHECK(fd_write_all(resfd, won, sizeof won) == 0, "report");
    CHILD_OK(shmkv_close(db));
    _exit(0);
}

static void one_winner(shmkv_backend be, int track)
{
    shmkv_options o = t_opts(be, track);
    o.segments = 4;
    const char *where = t_where(be, "win");
    shmkv_db *db = t_open_opts(where, &o);
    for (int i = 0; i < NWIN; i++) {
        char k[32];
        int kl = snprintf(k, sizeof k, "w:%05d", i);
        T_OK(shmkv_set(db, k, (size_t)kl, "v", 1, SHMKV_KIND_STRING));
    }
    int go[2];
    cr_assert(pipe(go) == 0);
    int fds[2][2];
    pid_t kids[2];
    for (int c = 0; c < 2; c++) {
        cr_assert(pipe(fds[c]) == 0);
        kids[c] = t_fork();
        if (kids[c] == 0) {
            close(go[1]);
            close(fds[c][0]);
            racer(where, be, go[0], fds[c][1]);
        }
        close(fds[c][1]);
    }
    close(go[0]);
    for (int c = 0; c < 2; c++) {
        char b;
        cr_assert_eq(fd_read_all(fds[c][0], &b, 1), 1, "racer %d did not open the store", c);
    }
    close(go[1]); /* go */
    static unsigned char won[2][NWIN];
    for (int c = 0; c < 2; c++) {
        cr_assert_eq(fd_read_all(fds[c][0], won[c], NWIN), NWIN, "racer %d did not report", c);
        close(fds[c][0]);
        t_wait_ok(kids[c], "racer");
    }
    int both = 0, none = 0, w0 = 0;
    for (int i = 0; i < NWIN; i++) {
        both += won[0][i] && won[1][i];
        none += !won[0][i] && !won[1][i];
        w0 += won[0][i];
    }
    cr_assert(both == 0 && none == 0, "%d keys won twice, %d by nobody", both, none);
    cr_log_info("%s: racer 0 won %d of %d", t_backend_name(be), w0, NWIN);
    uint64_t live = 0, exp = 0;
    T_OK(shmkv_claim_count(db, "w:", 2, &live, &exp));
    cr_assert_eq(live, NWIN);
    t_check_sound(db, "one winner");
    t_close(db);
}

Test(claims_mp, one_winner_disk)
{
    one_winner(SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
}
Test(claims_mp, one_winner_memory_untracked)
{
    one_winner(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_OFF);
}

/* ---- a holder killed with its leases ------------------------------------------------ */

#define NHELD 100
#define HELD_TTL 400u

static void killed_holder(shmkv_backend be, int track)
{
    shmkv_options o = t_opts(be, track);
    const char *where = t_where(be, "holder");
    shmkv_db *db = t_open_opts(where, &o);
    for (int i = 0; i < NHELD; i++) {
        char k[32];
        int kl = snprintf(k, sizeof k, "h:%05d", i);
        T_OK(shmkv_set(db, k, (size_t)kl, "v", 1, SHMKV_KIND_STRING));
    }
    int fds[2];
    cr_assert(pipe(fds) == 0);
    /* every lease starts after this; the last one before t0 below */
    uint64_t t_first = t_now_ns();
    pid_t p = t_fork();
    if (p == 0) {
        close(fds[0]);
        shmkv_db *cdb = NULL;
        shmkv_options co = t_opts(be, SHMKV_TRACK_DEFAULT);
        CHILD_OK(shmkv_open(where, &co, &cdb));
        shmkv_lease l = {"doomed", 6, HELD_TTL};
        for (int i = 0; i < NHELD; i++) {
            char k[32];
            size_t kl;
            shmkv_claim c;
            CHILD_OK(shmkv_claim_random(cdb, "h:", 2, &l, k, sizeof k, &kl, &c, NULL, 0, NULL,
                                        NULL));
        }
        CHILD_CHECK(write(fds[1], "x", 1) == 1, "report");
        for (;;)
            pause();
    }
    close(fds[1]);
    struct pollfd pf = {fds[0], POLLIN, 0};
    cr_assert_eq(poll(&pf, 1, 60000), 1, "the holder never got its claims");
    uint64_t t0 = t_now_ns();
    char b;
    cr_assert_eq(read(fds[0], &b, 1), 1, "the holder died before claiming");
    close(fds[0]);
    t_kill(p);
    shmkv_lease l = {"heir", 4, 60000};
    char k[32];
    size_t kl;
    shmkv_claim c;
    int rc = shmkv_claim_random(db, "h:", 2, &l, k, sizeof k, &kl, &c, NULL, 0, NULL, NULL);
    /* Only while no lease can have run out: measured from before the
     * fork, since a loaded machine can stall the holder between its first
     * claim and its last. */
    if ((double)(t_now_ns() - t_first) / 1e6 < HELD_TTL / 2)
        cr_assert_eq(rc, SHMKV_ENOTFOUND, "claimed a dead holder's live lease: %s",
                     shmkv_strerror(rc));
    while ((double)(t_now_ns() - t0) / 1e6 < HELD_TTL + 50)
        t_sleep_us(5000);
    uint64_t live = 9, exp = 0;
    T_OK(shmkv_claim_count(db, "h:", 2, &live, &exp));
    cr_assert(live + exp == NHELD && (rc != SHMKV_ENOTFOUND || live == 0),
              "after the leases: %" PRIu64 " live, %" PRIu64 " expired", live, exp);
    int got = rc == 0;
    for (;;) {
        rc = shmkv_claim_random(db, "h:", 2, &l, k, sizeof k, &kl, &c, NULL, 0, NULL, NULL);
        if (rc != 0)
            break;
        got++;
    }
    T_RC(rc, SHMKV_ENOTFOUND);
    cr_assert_eq(got, NHELD, "%d of %d keys came back", got, NHELD);
    t_check_sound(db, "held keys back");
    t_close(db);
}

Test(claims_mp, killed_holder_disk_tracked)
{
    killed_holder(SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
}
Test(claims_mp, killed_holder_disk_untracked)
{
    killed_holder(SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF);
}
Test(claims_mp, killed_holder_memory_tracked)
{
    killed_holder(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_ON);
}
Test(claims_mp, killed_holder_memory_untracked)
{
    killed_holder(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_OFF);
}

/* ---- pop_random across processes ------------------------------------------------------ */

/* Three processes pop_random the same N keys (a consume-once queue) while
 * the parent SIGKILLs some of them and starts new ones: no key is popped
 * twice, and a key missing from every log can only be the one a killed
 * popper had just taken (at most one per kill). */
static void popper(const char *where, shmkv_backend be, const char *logpath)
{
    int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    CHILD_CHECK(fd >= 0, "open %s: %s", logpath, strerror(errno));
    shmkv_db *db = NULL;
    shmkv_options o = t_opts(be, SHMKV_TRACK_DEFAULT);
    CHILD_OK(shmkv_open(where, &o, &db));
    for (;;) {
        char k[64], v[32];
        size_t kl = 0, vl = 0;
        int rc = shmkv_pop_random(db, PFX, PLEN, k, sizeof k, &kl, v, sizeof v, &vl, NULL);
        if (rc == SHMKV_ENOTFOUND)
            break;
        CHILD_OK(rc);
        int x = key_num(k, kl);
        CHILD_CHECK(x >= 0, "popped %s", t_show(k, kl));
        char want[32];
        int wl = snprintf(want, sizeof want, "job-%d", x);
        CHILD_CHECK(vl == (size_t)wl && memcmp(v, want, vl) == 0, "value %s", t_show(v, vl));
        log_line(fd, 'P', k, kl);
    }
    CHILD_OK(shmkv_close(db));
    close(fd);
    _exit(0);
}

static void pop_once(shmkv_backend be, int track)
{
    const char *cn = t_str("%s/%s", t_backend_name(be),
                           track == SHMKV_TRACK_ON ? "tracked" : "untracked");
    const int ntok = (int)t_scaled(20000, 4000), kills_wanted = 10;
    shmkv_options o = t_opts(be, track);
    o.segments = 16;
    const char *where = t_where(be, "pop");
    shmkv_db *db = t_open_opts(where, &o);
    for (int i = 0; i < ntok; i++) {
        char k[32], v[32];
        int kl = snprintf(k, sizeof k, PFX "%05d", i);
        int vl = snprintf(v, sizeof v, "job-%d", i);
        T_OK(shmkv_set(db, k, (size_t)kl, v, (size_t)vl, SHMKV_KIND_STRING));
    }
    t_rng r = t_rng_new();
    pid_t pids[NCONS];
    int nlogs = 0, kills = 0, running = NCONS;
    char (*paths)[200] = calloc(NCONS + kills_wanted, sizeof *paths);
    cr_assert(paths);
    for (int s = 0; s < NCONS; s++) {
        snprintf(paths[nlogs], sizeof paths[nlogs], "%s/p%d.log", t_dir(), nlogs);
        pids[s] = t_fork();
        if (pids[s] == 0)
            popper(where, be, paths[nlogs]);
        nlogs++;
    }
    uint64_t t0 = t_now_ns();
    while (running > 0) {
        t_sleep_us(500 + t_below(&r, 3000));
        cr_assert((double)(t_now_ns() - t0) / 1e9 < t_wait_default(), "%s: poppers still running",
                  cn);
        for (int s = 0; s < NCONS; s++) {
            if (!pids[s])
                continue;
            int st = 0;
            pid_t w = waitpid(pids[s], &st, WNOHANG);
            cr_assert(w >= 0);
            if (w == 0)
                continue;
            char b[96];
            cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: popper: %s", cn,
                      t_status_str(st, b, sizeof b));
            pids[s] = 0;
            running--;
        }
        if (kills >= kills_wanted || running == 0)
            continue;
        int s = (int)t_below(&r, NCONS);
        if (!pids[s])
            continue;
        int st = 0;
        kill(pids[s], SIGKILL);
        cr_assert_eq(t_waitpid_for(pids[s], &st, 60, false), 0);
        char b[96];
        cr_assert((WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) ||
                      (WIFEXITED(st) && WEXITSTATUS(st) == 0),
                  "%s: popper: %s", cn, t_status_str(st, b, sizeof b));
        kills++;
        snprintf(paths[nlogs], sizeof paths[nlogs], "%s/p%d.log", t_dir(), nlogs);
        pids[s] = t_fork();
        if (pids[s] == 0)
            popper(where, be, paths[nlogs]);
        nlogs++;
    }
    unsigned char *seen = calloc((size_t)ntok, 1);
    cr_assert(seen);
    int popped = 0;
    for (int i = 0; i < nlogs; i++) {
        size_t len = 0;
        unsigned char *text = t_exists(paths[i]) ? t_read_file(paths[i], &len) : NULL;
        for (size_t pos = 0; text && pos < len;) {
            unsigned char *nl = memchr(text + pos, '\n', len - pos);
            cr_assert(nl, "%s: torn log line", cn);
            size_t ll = (size_t)(nl - (text + pos));
            int x = line_key((const char *)text + pos, ll);
            cr_assert(x >= 0 && x < ntok, "%s: bad log line", cn);
            cr_assert(!seen[x], "%s: " PFX "%05d popped twice", cn, x);
            seen[x] = 1;
            popped++;
            pos += ll + 1;
        }
        free(text);
    }
    cr_log_info("%s: %d keys, %d popped and logged, %d kills", cn, ntok, popped, kills);
    cr_assert(popped <= ntok && ntok - popped <= kills,
              "%s: %d keys popped by nobody, with %d kills", cn, ntok - popped, kills);
    cr_assert_eq(shmkv_size(db), 0, "%s: keys left", cn);
    t_check_sound(db, cn);
    t_dump_check(where, be);
    t_close(db);
    free(seen);
    free(paths);
}

Test(claims_mp, pop_once_disk_tracked)
{
    pop_once(SHMKV_BACKEND_DISK, SHMKV_TRACK_ON);
}
Test(claims_mp, pop_once_memory_untracked)
{
    pop_once(SHMKV_BACKEND_MEMORY, SHMKV_TRACK_OFF);
}

/* ---- a stopped holder comes back to a refusal ---------------------------------------- */

/* A process claims a key with a short lease and is stopped (SIGSTOP)
 * before it completes; meanwhile the lease runs out and another process
 * takes the key over. Resumed, the first holder's complete, release and
 * renew are refused (SHMKV_ESTALE) and change nothing; the new holder's
 * complete works. With no take-over the same refusal, and the key stays. */
#define STOP_TTL 100u

static void stopped_holder(shmkv_backend be, int track, bool take_over)
{
    const char *cn = t_str("%s/%s%s", t_backend_name(be),
                           track == SHMKV_TRACK_ON ? "tracked" : "untracked",
                           take_over ? ", taken over" : "");
    shmkv_options o = t_opts(be, track);
    const char *where = t_where(be, "stopped");
    shmkv_db *db = t_open_opts(where, &o);
    t_set(db, "job", "payload");
    int fds[2];
    cr_assert(pipe(fds) == 0);
    pid_t p = t_fork();
    if (p == 0) {
        close(fds[0]);
        shmkv_db *cdb = NULL;
        shmkv_options co = t_opts(be, SHMKV_TRACK_DEFAULT);
        CHILD_OK(shmkv_open(where, &co, &cdb));
        shmkv_lease l = {"sleeper", 7, STOP_TTL};
        shmkv_claim c;
        CHILD_OK(shmkv_claim_key(cdb, "job", 3, &l, &c, NULL, 0, NULL, NULL));
        CHILD_CHECK(fd_write_all(fds[1], &c.token, sizeof c.token) == 0, "report");
        raise(SIGSTOP);
        /* resumed, long after the lease */
        int rc[3];
        shmkv_claim r;
        rc[0] = shmkv_claim_complete(cdb, "job", 3, c.token, 1);
        rc[1] = shmkv_claim_release(cdb, "job", 3, c.token);
        rc[2] = shmkv_claim_renew(cdb, "job", 3, c.token, &l, &r);
        CHILD_CHECK(fd_write_all(fds[1], rc, sizeof rc) == 0, "report");
        CHILD_OK(shmkv_close(cdb));
        _exit(0);
    }
    close(fds[1]);
    uint64_t tok = 0;
    cr_assert_eq(fd_read_all(fds[0], &tok, sizeof tok), (ssize_t)sizeof tok, "%s: no token", cn);
    int st = t_wait_stopped(p, 60);
    cr_assert(WIFSTOPPED(st), "%s: the holder did not stop", cn);
    t_sleep_us((STOP_TTL + 50) * 1000ull);
    shmkv_claim mine;
    memset(&mine, 0, sizeof mine);
    if (take_over) {
        shmkv_lease l = {"heir", 4, 60000};
        T_OK(shmkv_claim_key(db, "job", 3, &l, &mine, NULL, 0, NULL, NULL));
        cr_assert_gt(mine.token, tok, "%s", cn);
    }
    kill(p, SIGCONT);
    int rc[3] = {0, 0, 0};
    cr_assert_eq(fd_read_all(fds[0], rc, sizeof rc), (ssize_t)sizeof rc, "%s: no result", cn);
    close(fds[0]);
    t_wait_ok(p, "stopped holder");
    const char *what[] = {"complete", "release", "renew"};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(rc[i], SHMKV_ESTALE, "%s: the stale holder's %s -> %d (%s)", cn, what[i],
                     rc[i], shmkv_strerror(rc[i]));
    t_expect_str(db, "job", "payload");
    shmkv_claim g;
    char ob[16];
    size_t ol;
    if (take_over) {
        T_OK(shmkv_claim_get(db, "job", 3, &g, ob, sizeof ob, &ol));
        cr_assert_eq(g.token, mine.token, "%s: the new holder lost its claim", cn);
        T_OK(shmkv_claim_complete(db, "job", 3, mine.token, 1));
        t_expect_absent(db, "job", 3);
    } else {
        T_RC(shmkv_claim_get(db, "job", 3, &g, ob, sizeof ob, &ol), SHMKV_ESTALE);
    }
    t_check_sound(db, cn);
    t_close(db);
}

Test(claims_mp, stopped_holder_is_fenced)
{
    for (int be = 0; be < 2; be++)
        for (int tr = SHMKV_TRACK_OFF; tr <= SHMKV_TRACK_ON; tr++)
            for (int to = 0; to < 2; to++)
                stopped_holder((shmkv_backend)be, tr, to == 1);
}
