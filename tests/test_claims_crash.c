/*
 * test_claims_crash.c - a process SIGKILLed inside a claim call (issue 14).
 *
 * For each hook point "claims.<op>.<point>" of libshmkv/src/claims.c, and
 * each call that passes it, a forked child opens the store, arms the hook
 * (t_hook_park_at) and makes the call; the parent SIGKILLs it parked at the
 * point, with its locks held. The next user then finds the whole step or
 * none of it:
 *   - the state of every key (present, value, the token of its live claim)
 *     is the state before the call, or that state with exactly the call's
 *     change (claim: one more live claim with a token larger than any
 *     before; release/complete(0): the claim gone; complete(1)/pop: the key
 *     gone; renew: the same token with the longer lease); which one where
 *     the point's name says ("built": nothing published yet, so before;
 *     "published": the slot store is done, so after);
 *   - the store is consistent: shmkv_check() clean; size, count and
 *     claim_count agree with the keys; claim_random draws exactly the
 *     keys that are present and not under a live claim, each once, then
 *     says SHMKV_ENOTFOUND; tokens keep growing; shmkv-dump --check clean.
 * The next user is either a handle the parent kept open (memory, and disk
 * "attached": repair by the next lock taker) or a fresh open of a disk
 * store nobody has open (repair at open). Every point runs on tracked and
 * untracked stores, except the "indexed" points, which only tracked stores
 * pass. A child that finishes its call without reaching the point fails
 * the test: a hook point that is never called is a failure, not a skip.
 */
#include "harness.h"

#include <poll.h>

TestSuite(claims_crash, .init = t_setup, .fini = t_teardown, .timeout = 600);

#define NK 48       /* keys c:00000 .. c:00047 */
#define NHELD 10    /* c:00000 .. c:00009 under a live claim */
#define NEXPIRED 6  /* c:00010 .. c:00015 under a lease that ran out */
#define TARGET_HELD 5
#define TARGET_FREE 30
#define TARGET_EXPIRED 12
#define LONG_TTL 600000u
#define RENEW_TTL 7200000u
#define MARK 0x434c4d4bu

typedef enum {
    OP_CLAIM_KEY,
    OP_CLAIM_EXPIRED, /* claim_key on a key whose lease ran out */
    OP_CLAIM_RANDOM,
    OP_RELEASE,
    OP_COMPLETE_DEL,
    OP_COMPLETE_KEEP,
    OP_RENEW,
    OP_POP,
} cop;

static const char *op_name[] = {"claim_key",     "claim_key(expired)", "claim_random",
                                "release",       "complete(delete)",  "complete(keep)",
                                "renew",         "pop_random"};

typedef enum { MODE_ATTACHED, MODE_REOPEN } cmode;

typedef struct {
    bool present;
    uint64_t token; /* live claim, 0: none */
    uint64_t ttl_ms;
    char val[32];
    size_t vl;
} kstate;

static void key_of(int i, char *k)
{
    snprintf(k, 16, "c:%05d", i);
}

static void snapshot(shmkv_db *db, kstate *s)
{
    for (int i = 0; i < NK; i++) {
        char k[16];
        key_of(i, k);
        memset(&s[i], 0, sizeof s[i]);
        int rc = shmkv_get(db, k, 7, s[i].val, sizeof s[i].val, &s[i].vl, NULL);
        cr_assert(rc == 0 || rc == SHMKV_ENOTFOUND, "get %s -> %s", k, shmkv_strerror(rc));
        s[i].present = rc == 0;
        shmkv_claim c;
        char owner[SHMKV_OWNER_MAX];
        size_t ol;
        rc = shmkv_claim_get(db, k, 7, &c, owner, sizeof owner, &ol);
        cr_assert(rc == 0 || rc == SHMKV_ESTALE || (rc == SHMKV_ENOTFOUND && !s[i].present),
                  "claim_get %s -> %s", k, shmkv_strerror(rc));
        if (rc == 0) {
            s[i].token = c.token;
            s[i].ttl_ms = c.ttl_ms;
        }
    }
}

static bool same_key(const kstate *a, const kstate *b)
{
    return a->present == b->present && a->token == b->token && a->vl == b->vl &&
           memcmp(a->val, b->val, a->vl) == 0;
}

/* Which keys may the op have changed: the target, or (random ops) any
 * claimable one. */
static bool op_random(cop op)
{
    return op == OP_CLAIM_RANDOM || op == OP_POP;
}

static int op_target(cop op)
{
    switch (op) {
    case OP_CLAIM_KEY:
        return TARGET_FREE;
    case OP_CLAIM_EXPIRED:
        return TARGET_EXPIRED;
    case OP_RELEASE:
    case OP_COMPLETE_DEL:
    case OP_COMPLETE_KEEP:
    case OP_RENEW:
        return TARGET_HELD;
    default:
        return -1;
    }
}

/* Whether key i's change from b to a is the op's own step. */
static bool is_step(cop op, const kstate *b, const kstate *a, uint64_t max_token)
{
    switch (op) {
    case OP_CLAIM_KEY:
    case OP_CLAIM_EXPIRED:
    case OP_CLAIM_RANDOM:
        return b->present && b->token == 0 && a->present && a->token > max_token &&
               a->vl == b->vl && memcmp(a->val, b->val, a->vl) == 0;
    case OP_RELEASE:
    case OP_COMPLETE_KEEP:
        return b->token != 0 && a->present && a->token == 0 && a->vl == b->vl &&
               memcmp(a->val, b->val, a->vl) == 0;
    case OP_COMPLETE_DEL:
        return b->token != 0 && !a->present;
    case OP_POP:
        return b->present && b->token == 0 && !a->present;
    case OP_RENEW:
        return false; /* told apart by the lease length, below */
    }
    return false;
}

static int run_op(shmkv_db *db, cop op, uint64_t token)
{
    char k[16];
    int t = op_target(op);
    if (t >= 0)
        key_of(t, k);
    shmkv_lease l = {"crash", 5, LONG_TTL};
    shmkv_lease lr = {NULL, 0, RENEW_TTL};
    shmkv_claim c;
    char kb[32];
    size_t kl;
    switch (op) {
    case OP_CLAIM_KEY:
    case OP_CLAIM_EXPIRED:
        return shmkv_claim_key(db, k, 7, &l, &c, NULL, 0, NULL, NULL);
    case OP_CLAIM_RANDOM:
        return shmkv_claim_random(db, "c:", 2, &l, kb, sizeof kb, &kl, &c, NULL, 0, NULL, NULL);
    case OP_RELEASE:
        return shmkv_claim_release(db, k, 7, token);
    case OP_COMPLETE_DEL:
        return shmkv_claim_complete(db, k, 7, token, 1);
    case OP_COMPLETE_KEEP:
        return shmkv_claim_complete(db, k, 7, token, 0);
    case OP_RENEW:
        return shmkv_claim_renew(db, k, 7, token, &lr, &c);
    case OP_POP:
        return shmkv_pop_random(db, "c:", 2, kb, sizeof kb, &kl, NULL, 0, NULL, NULL);
    }
    return -1;
}

static void crash_child(const char *where, shmkv_backend be, cop op, uint64_t token,
                        const char *point, int fd)
{
    shmkv_db *db = NULL;
    shmkv_options o = t_opts(be, SHMKV_TRACK_DEFAULT);
    CHILD_OK(shmkv_open(where, &o, &db));
    t_hook_park_at(point, fd, MARK);
    int rc = run_op(db, op, token);
    CHILD_CHECK(0, "%s returned %d (%s) without reaching %s", op_name[op], rc, shmkv_strerror(rc),
                point);
}

/* want: 0 the state before the call, 1 after it, -1 either. */
static void crash_run(shmkv_backend be, int track, cmode mode, cop op, const char *point, int want)
{
    const char *cn = t_str("%s %s %s/%s%s", point, op_name[op], t_backend_name(be),
                           track == SHMKV_TRACK_ON ? "tracked" : "untracked",
                           mode == MODE_REOPEN ? " reopened" : "");
    shmkv_options o = t_opts(be, track);
    o.segments = 8;
    const char *where = t_where(be, "crash");
    shmkv_db *db = t_open_opts(where, &o);
    for (int i = 0; i < NK; i++) {
        char k[16], v[32];
        key_of(i, k);
        int vl = snprintf(v, sizeof v, "value-%d", i);
        T_OK(shmkv_set(db, k, 7, v, (size_t)vl, SHMKV_KIND_STRING));
    }
    t_set(db, "other", "x");
    uint64_t max_token = 0, target_token = 0;
    shmkv_claim c;
    for (int i = 0; i < NHELD + NEXPIRED; i++) {
        char k[16];
        key_of(i, k);
        shmkv_lease l = {"pre", 3, i < NHELD ? LONG_TTL : 30};
        T_OK(shmkv_claim_key(db, k, 7, &l, &c, NULL, 0, NULL, NULL));
        max_token = c.token > max_token ? c.token : max_token;
        if (i == TARGET_HELD)
            target_token = c.token;
    }
    t_sleep_us(60000); /* the NEXPIRED leases run out */
    kstate before[NK], after[NK];
    snapshot(db, before);
    for (int i = NHELD; i < NHELD + NEXPIRED; i++)
        cr_assert_eq(before[i].token, 0, "%s: the short leases did not run out", cn);
    if (mode == MODE_REOPEN) {
        t_close(db);
        db = NULL;
    }

    int fds[2];
    cr_assert(pipe(fds) == 0);
    pid_t p = t_fork();
    if (p == 0) {
        close(fds[0]);
        crash_child(where, be, op, target_token, point, fds[1]);
    }
    close(fds[1]);
    struct pollfd pf = {fds[0], POLLIN, 0};
    cr_assert_eq(poll(&pf, 1, 60000), 1, "%s: the child never reached the point", cn);
    uint32_t mark = 0;
    if (fd_read_all(fds[0], &mark, sizeof mark) != (ssize_t)sizeof mark) {
        int st = t_wait(p);
        char b[96];
        cr_assert_fail("%s: the child finished without reaching the point: %s", cn,
                       t_status_str(st, b, sizeof b));
    }
    cr_assert_eq(mark, MARK);
    t_kill(p);
    close(fds[0]);
    if (mode == MODE_REOPEN)
        db = t_open_opts(where, &o);

    /* size first, before anything has locked the dead child's segment */
    uint64_t size0 = shmkv_size(db);
    snapshot(db, after);
    int changed = -1, nchanged = 0;
    for (int i = 0; i < NK; i++) {
        if (same_key(&before[i], &after[i]))
            continue;
        nchanged++;
        changed = i;
    }
    bool is_new;
    if (op == OP_RENEW) {
        const kstate *a = &after[TARGET_HELD];
        cr_assert(nchanged == 0, "%s: keys changed by a renew (the last c:%05d)", cn, changed);
        cr_assert(a->present && a->token == target_token, "%s: renew lost the claim", cn);
        is_new = a->ttl_ms > LONG_TTL;
    } else {
        cr_assert(nchanged <= 1, "%s: %d keys changed (the last c:%05d)", cn, nchanged, changed);
        if (nchanged == 1) {
            cr_assert(op_random(op) || changed == op_target(op), "%s: c:%05d changed, not c:%05d",
                      cn, changed, op_target(op));
            cr_assert(is_step(op, &before[changed], &after[changed], max_token),
                      "%s: c:%05d is neither as before nor as after the call (present %d->%d, "
                      "token %" PRIu64 "->%" PRIu64 ")",
                      cn, changed, before[changed].present, after[changed].present,
                      before[changed].token, after[changed].token);
        }
        is_new = nchanged == 1;
    }
    if (want >= 0)
        cr_assert_eq(is_new, want == 1, "%s: found the state %s the call, expected %s", cn,
                     is_new ? "after" : "before", want ? "after" : "before");

    /* consistency of what is there */
    uint64_t present = 0, live_n = 0;
    for (int i = 0; i < NK; i++) {
        present += after[i].present;
        live_n += after[i].token != 0;
        if (after[i].token > max_token)
            max_token = after[i].token;
    }
    cr_assert_eq(size0, present + 1, "%s: size right after the kill", cn);
    cr_assert_eq(shmkv_size(db), present + 1, "%s: size", cn);
    uint64_t cnt = 0, live = 0, expired = 0;
    T_OK(shmkv_count(db, "c:", 2, &cnt));
    cr_assert_eq(cnt, present, "%s: count", cn);
    T_OK(shmkv_claim_count(db, "c:", 2, &live, &expired));
    cr_assert_eq(live, live_n, "%s: claim_count live %" PRIu64 ", %" PRIu64 " keys hold one", cn,
                 live, live_n);
    t_kvlist lst;
    T_OK(t_list_all(db, "c:", 2, 0, SHMKV_LIST_KEYS_ONLY, &lst));
    cr_assert_eq(lst.n, present, "%s: list", cn);
    t_kvlist_free(&lst);
    t_check_sound(db, cn);
    t_expect_str(db, "other", "x");

    /* claim_random hands out exactly the claimable keys, with growing
     * tokens, then nothing */
    bool drawn[NK] = {false};
    uint64_t want_draws = 0;
    for (int i = 0; i < NK; i++)
        want_draws += after[i].present && after[i].token == 0;
    uint64_t draws = 0, last = max_token;
    shmkv_lease l = {"drain", 5, LONG_TTL};
    for (;;) {
        char kb[32];
        size_t kl = 0;
        int rc = shmkv_claim_random(db, "c:", 2, &l, kb, sizeof kb - 1, &kl, &c, NULL, 0, NULL, NULL);
        if (rc == SHMKV_ENOTFOUND)
            break;
        cr_assert_eq(rc, 0, "%s: claim_random -> %s", cn, shmkv_strerror(rc));
        kb[kl] = 0;
        int x = -1;
        cr_assert(sscanf(kb, "c:%d", &x) == 1 && x >= 0 && x < NK, "%s: drew %s", cn, kb);
        cr_assert(after[x].present && after[x].token == 0 && !drawn[x],
                  "%s: drew %s, which is held, absent or drawn before", cn, kb);
        cr_assert_gt(c.token, last, "%s: token %" PRIu64 " after %" PRIu64, cn, c.token, last);
        last = c.token;
        drawn[x] = true;
        draws++;
        cr_assert_leq(draws, want_draws, "%s", cn);
    }
    cr_assert_eq(draws, want_draws, "%s: claim_random drew %" PRIu64 " keys, %" PRIu64
                 " are claimable", cn, draws, want_draws);
    char kb[32];
    size_t kl;
    T_RC(shmkv_pop_random(db, "c:", 2, kb, sizeof kb, &kl, NULL, 0, NULL, NULL), SHMKV_ENOTFOUND);
    T_OK(shmkv_claim_count(db, "c:", 2, &live, &expired));
    cr_assert_eq(live, present, "%s: claim_count after the drain", cn);
    t_check_sound(db, t_str("%s: after the drain", cn));
    if (be == SHMKV_BACKEND_DISK) {
        t_close(db);
        t_dump_check(where, be);
        db = t_open_opts(where, &o);
        T_OK(shmkv_claim_count(db, "c:", 2, &live, &expired));
        cr_assert_eq(live, present, "%s: claim_count after a reopen", cn);
    } else {
        t_dump_check(where, be);
    }
    t_close(db);
}

/* The hook points of claims.c, the calls that pass each, and what a kill
 * there leaves (0 before, 1 after, -1 either). */
typedef struct {
    const char *point;
    cop op;
    int want;
    bool tracked_only;
} cpoint;

static const cpoint points[] = {
    {"claims.claim.built", OP_CLAIM_KEY, 0, false},
    {"claims.claim.indexed", OP_CLAIM_KEY, 0, true},
    {"claims.claim.published", OP_CLAIM_KEY, 1, false},
    {"claims.claim.built", OP_CLAIM_EXPIRED, 0, false},
    {"claims.claim.indexed", OP_CLAIM_EXPIRED, 0, true},
    {"claims.claim.published", OP_CLAIM_EXPIRED, 1, false},
    {"claims.claim.built", OP_CLAIM_RANDOM, 0, false},
    {"claims.claim.indexed", OP_CLAIM_RANDOM, 0, true},
    {"claims.claim.published", OP_CLAIM_RANDOM, 1, false},
    {"claims.release.built", OP_RELEASE, 0, false},
    {"claims.release.indexed", OP_RELEASE, 0, true},
    {"claims.release.published", OP_RELEASE, 1, false},
    {"claims.complete.built", OP_COMPLETE_KEEP, 0, false},
    {"claims.complete.indexed", OP_COMPLETE_KEEP, 0, true},
    {"claims.complete.published", OP_COMPLETE_KEEP, 1, false},
    {"claims.complete.built", OP_COMPLETE_DEL, 0, false},
    {"claims.complete.indexed", OP_COMPLETE_DEL, 0, true},
    {"claims.complete.published", OP_COMPLETE_DEL, 1, false},
    {"claims.renew.built", OP_RENEW, 0, false},
    {"claims.renew.indexed", OP_RENEW, 0, true},
    {"claims.renew.published", OP_RENEW, 1, false},
    {"claims.pop.built", OP_POP, 0, false},
    {"claims.pop.indexed", OP_POP, 0, true},
    {"claims.pop.published", OP_POP, 1, false},
};
#define NPOINTS (sizeof points / sizeof points[0])

static void run_points(shmkv_backend be, cmode mode, int track)
{
    for (size_t i = 0; i < NPOINTS; i++) {
        if (points[i].tracked_only && track != SHMKV_TRACK_ON)
            continue;
        crash_run(be, track, mode, points[i].op, points[i].point, points[i].want);
    }
}

Test(claims_crash, memory_tracked)
{
    run_points(SHMKV_BACKEND_MEMORY, MODE_ATTACHED, SHMKV_TRACK_ON);
}
Test(claims_crash, memory_untracked)
{
    run_points(SHMKV_BACKEND_MEMORY, MODE_ATTACHED, SHMKV_TRACK_OFF);
}
Test(claims_crash, disk_attached_tracked)
{
    run_points(SHMKV_BACKEND_DISK, MODE_ATTACHED, SHMKV_TRACK_ON);
}
Test(claims_crash, disk_attached_untracked)
{
    run_points(SHMKV_BACKEND_DISK, MODE_ATTACHED, SHMKV_TRACK_OFF);
}
Test(claims_crash, disk_reopened_tracked)
{
    run_points(SHMKV_BACKEND_DISK, MODE_REOPEN, SHMKV_TRACK_ON);
}
Test(claims_crash, disk_reopened_untracked)
{
    run_points(SHMKV_BACKEND_DISK, MODE_REOPEN, SHMKV_TRACK_OFF);
}
