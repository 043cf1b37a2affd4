/*
 * harness_cr.c - the Criterion glue of the test harness (harness.h), and
 * the sanitizer runtime hooks every Criterion test executable needs (this
 * object is always linked: every test calls t_setup()).
 */
#include "harness.h"

#include <stdarg.h>
#include <sys/prctl.h>

/* ---- sanitizer runtime hooks ---------------------------------------------- */

#if T_ASAN
/*
 * Criterion's runner leaks a small allocation per cr_log_*() call, inside
 * libcriterion itself; LeakSanitizer would fail the whole executable for
 * it. Only that library's leaks are suppressed: leaks in libshmkv or in the
 * tests are still reported.
 */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libcriterion.so\n";
}
#endif

#if T_TSAN
/*
 * Criterion 2.4 cannot start under ThreadSanitizer (upstream issue
 * Snaipe/Criterion#274, open): its sandbox library (BoxFort) places its
 * shared "inheritable arena" at a pseudo-random address in
 * [0x200000000000, 0x7f0000000000) chosen with rand_r(), and TSan reserves
 * nearly all of that range for its shadow and meta memory, so all ten tries
 * fail and the runner aborts with "Could not initialize inheritable arena:
 * Resource temporarily unavailable".
 *
 * The executable's own rand_r() takes precedence over libc's for
 * libcriterion's calls, so here it steers BoxFort to 16 MiB-aligned slots in
 * [0x566000000000, 0x566040000000): inside TSan's "mid" application range
 * (0x550000000000-0x568000000000), and above where a PIE executable and its
 * brk heap can land (0x555555554000 plus at most 2^40 of randomisation), so
 * the arena is ordinary application memory for TSan in the runner and in
 * every worker. BoxFort computes base = 0x200000000000 + r * 2^24. Nothing
 * in the tests calls rand_r().
 */
int rand_r(unsigned int *seed);
int rand_r(unsigned int *seed)
{
    unsigned slot = (*seed)++ % 64u;
    return (int)(0x366000u + slot);
}

#endif

/* ---- per-test context ------------------------------------------------------ */

#define T_MAX_KIDS 128
#define T_MAX_STRS 512

static struct {
    t_scratch sc;
    int seq;
    pid_t kids[T_MAX_KIDS];
    char *strs[T_MAX_STRS]; /* strings handed out by t_str() and friends */
    int nstrs;
} ctx;

static int in_child; /* set in children made by t_fork() */

void t_setup(void)
{
    memset(&ctx, 0, sizeof ctx);
    cr_assert(t_scratch_init(&ctx.sc, "test") == 0, "scratch directory: %s", strerror(errno));
    cr_assert(chdir(ctx.sc.dir) == 0);
}

void t_teardown(void)
{
    if (in_child || getpid() != ctx.sc.owner)
        _exit(97); /* a child returned into Criterion: never clean up from there */
    for (int i = 0; i < T_MAX_KIDS; i++) {
        if (ctx.kids[i] > 0) {
            int st;
            kill(ctx.kids[i], SIGKILL);
            t_waitpid_for(ctx.kids[i], &st, 10, false);
            ctx.kids[i] = 0;
        }
    }
    if (chdir("/") != 0) {
        /* nothing to do: removal uses absolute paths */
    }
    t_scratch_done(&ctx.sc);
    for (int i = 0; i < ctx.nstrs; i++)
        free(ctx.strs[i]);
    ctx.nstrs = 0;
}

const t_scratch *t_scratch_of_test(void)
{
    return &ctx.sc;
}

const char *t_dir(void)
{
    return ctx.sc.dir;
}

const char *t_name_prefix(void)
{
    return ctx.sc.name_prefix;
}

static const char *keep(char *s)
{
    cr_assert(s != NULL);
    cr_assert(ctx.nstrs < T_MAX_STRS, "too many harness strings in one test");
    ctx.strs[ctx.nstrs++] = s;
    return s;
}

const char *t_str(const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    cr_assert(n >= 0);
    return keep(s);
}

const char *t_path(const char *tag)
{
    return t_str("%s/%s.%d.kv", ctx.sc.dir, tag, ++ctx.seq);
}

const char *t_fresh(const char *tag)
{
    return t_str("%s/%s.%d", ctx.sc.dir, tag, ++ctx.seq);
}

const char *t_name(const char *tag)
{
    return t_str("%s%d.%s", ctx.sc.name_prefix, ++ctx.seq, tag);
}

const char *t_shm_file(const char *name)
{
    return t_str("/dev/shm/shmkv.%s", name);
}

const char *t_where(shmkv_backend be, const char *tag)
{
    return be == SHMKV_BACKEND_MEMORY ? t_name(tag) : t_path(tag);
}

const char *t_backend_name(shmkv_backend be)
{
    return be == SHMKV_BACKEND_MEMORY ? "memory" : "disk";
}

void t_note(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "[NOTE] %s::%s: %s\n", criterion_current_test->category,
            criterion_current_test->name, msg);
}

t_rng t_rng_new(void)
{
    uint64_t seed = t_pick_seed();
    t_note("random seed: SHMKV_TEST_SEED=0x%" PRIx64, seed);
    return t_rng_seeded(seed);
}

/* ---- children ----------------------------------------------------------- */

/* A free slot in the children's table, or -1. A test that reaps its own
 * children (waitpid) leaves their slots taken: those that are no children
 * any more are freed here (asked without reaping anything). */
static int free_kid_slot(void)
{
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < T_MAX_KIDS; i++)
            if (ctx.kids[i] == 0)
                return i;
        for (int i = 0; i < T_MAX_KIDS; i++) {
            siginfo_t si;
            if (waitid(P_PID, (id_t)ctx.kids[i], &si, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD)
                ctx.kids[i] = 0;
        }
    }
    return -1;
}

void t_adopt(pid_t p)
{
    int i = free_kid_slot();
    if (i >= 0) {
        ctx.kids[i] = p;
        return;
    }
    kill(p, SIGKILL);
    int st;
    t_waitpid_for(p, &st, 10, false);
    cr_assert_fail("too many children");
}

pid_t t_fork(void)
{
    pid_t p = t_fork_raw();
    cr_assert(p >= 0, "fork: %s", strerror(errno));
    if (p == 0) {
        in_child = 1;
        return 0;
    }
    t_adopt(p);
    return p;
}

static void forget(pid_t p)
{
    for (int i = 0; i < T_MAX_KIDS; i++)
        if (ctx.kids[i] == p)
            ctx.kids[i] = 0;
}

int t_wait_for(pid_t p, double seconds)
{
    int st = 0;
    int w = t_waitpid_for(p, &st, seconds, false);
    cr_assert(w >= 0, "waitpid(%d): %s", (int)p, strerror(errno));
    forget(p);
    cr_assert(w == 0, "child %d still running after %.0f s: killed", (int)p, seconds);
    return st;
}

int t_wait(pid_t p)
{
    return t_wait_for(p, t_wait_default());
}

int t_wait_stopped(pid_t p, double seconds)
{
    int st = 0;
    int w = t_waitpid_for(p, &st, seconds, true);
    cr_assert(w >= 0, "waitpid(%d): %s", (int)p, strerror(errno));
    if (w == 1 || !WIFSTOPPED(st))
        forget(p); /* it is gone */
    cr_assert(w == 0, "child %d neither stopped nor ended within %.0f s: killed", (int)p,
              seconds);
    return st;
}

void t_wait_ok(pid_t p, const char *what)
{
    int st = t_wait(p);
    char b[96];
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %s (pid %d) %s", what, (int)p,
              t_status_str(st, b, sizeof b));
}

t_attached t_attach_child(const char *where, shmkv_backend be)
{
    int ready[2], go[2];
    cr_assert(pipe(ready) == 0 && pipe(go) == 0);
    pid_t kid = t_fork();
    if (kid == 0) {
        close(ready[0]);
        close(go[1]);
        shmkv_db *db = NULL;
        shmkv_options o = t_opts(be, SHMKV_TRACK_DEFAULT);
        CHILD_OK(shmkv_open(where, &o, &db));
        char b = 'R';
        CHILD_CHECK(write(ready[1], &b, 1) == 1, "ready");
        while (read(go[0], &b, 1) < 0 && errno == EINTR) {
        }
        CHILD_OK(shmkv_close(db));
        _exit(0);
    }
    close(ready[1]);
    close(go[0]);
    char b;
    cr_assert_eq(read(ready[0], &b, 1), 1, "the attached child did not open the store");
    close(ready[0]);
    return (t_attached){kid, go[1]};
}

void t_detach_child(t_attached *a)
{
    close(a->go);
    t_wait_ok(a->pid, "attached to the store");
}

void t_kill(pid_t p)
{
    kill(p, SIGKILL);
    int st = t_wait(p);
    char b[96];
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "child %d: %s", (int)p,
              t_status_str(st, b, sizeof b));
}

/* ---- store helpers ------------------------------------------------------- */

shmkv_options t_opts(shmkv_backend be, int track)
{
    shmkv_options o;
    memset(&o, 0, sizeof o);
    o.backend = be;
    o.track_keys = track;
    return o;
}

shmkv_db *t_open_opts(const char *where, const shmkv_options *o)
{
    shmkv_db *db = NULL;
    int rc = shmkv_open(where, o, &db);
    cr_assert_eq(rc, 0, "shmkv_open(%s) -> %d (%s)", where ? where : "(null)", rc,
                 shmkv_strerror(rc));
    cr_assert(db != NULL);
    return db;
}

shmkv_db *t_open(const char *where, shmkv_backend be, int track)
{
    shmkv_options o = t_opts(be, track);
    return t_open_opts(where, &o);
}

const t_combo t_combos[4] = {
    {SHMKV_BACKEND_DISK, SHMKV_TRACK_OFF},
    {SHMKV_BACKEND_DISK, SHMKV_TRACK_ON},
    {SHMKV_BACKEND_MEMORY, SHMKV_TRACK_OFF},
    {SHMKV_BACKEND_MEMORY, SHMKV_TRACK_ON},
};

const char *t_combo_name(const t_combo *c)
{
    return t_str("%s/%s", t_backend_name(c->be),
                 c->track == SHMKV_TRACK_ON ? "tracked" : "untracked");
}

shmkv_db *t_open_combo(const t_combo *c, const char *tag, const char **where)
{
    const char *w = t_where(c->be, tag);
    if (where)
        *where = w;
    return t_open(w, c->be, c->track);
}

void t_close(shmkv_db *db)
{
    T_OK(shmkv_close(db));
}

void t_set(shmkv_db *db, const char *k, const char *v)
{
    int rc = shmkv_set(db, k, strlen(k), v, strlen(v), SHMKV_KIND_STRING);
    cr_assert_eq(rc, 0, "set(%s) -> %d (%s)", k, rc, shmkv_strerror(rc));
}

void t_setb(shmkv_db *db, const void *k, size_t kl, const void *v, size_t vl)
{
    int rc = shmkv_set(db, k, kl, v, vl, SHMKV_KIND_BYTES);
    cr_assert_eq(rc, 0, "set(%zu-byte key) -> %d (%s)", kl, rc, shmkv_strerror(rc));
}

const char *t_show(const void *p, size_t n)
{
    static char ring[4][200];
    static int at;
    char *o = ring[at++ & 3];
    const unsigned char *c = p;
    size_t j = 0;
    for (size_t i = 0; i < n && j + 5 < sizeof ring[0]; i++) {
        if (c[i] >= 0x20 && c[i] < 0x7f && c[i] != '\\')
            o[j++] = (char)c[i];
        else
            j += (size_t)snprintf(o + j, sizeof ring[0] - j, "\\x%02x", c[i]);
    }
    if (n && j + 5 >= sizeof ring[0])
        memcpy(o + j, "...", 4), j += 3;
    o[j] = 0;
    return o;
}

void t_expect_kind(shmkv_db *db, const void *k, size_t kl, const void *v, size_t vl, int kind)
{
    size_t cap = vl + 16;
    unsigned char *buf = malloc(cap);
    cr_assert(buf);
    size_t got = (size_t)-1;
    shmkv_kind gk = (shmkv_kind)-1;
    int rc = shmkv_get(db, k, kl, buf, cap, &got, &gk);
    if (rc != 0) {
        free(buf);
        cr_assert_fail("get(%s) -> %d (%s), expected a %zu-byte value", t_show(k, kl), rc,
                       shmkv_strerror(rc), vl);
    }
    bool same = got == vl && (vl == 0 || memcmp(buf, v, vl) == 0);
    char shown[200];
    snprintf(shown, sizeof shown, "%s", t_show(buf, got < cap ? got : cap));
    free(buf);
    cr_assert(same, "get(%s) = \"%s\" (%zu bytes), expected \"%s\" (%zu bytes)", t_show(k, kl),
              shown, got, t_show(v, vl), vl);
    if (kind >= 0)
        cr_assert_eq((int)gk, kind, "get(%s) kind %d, expected %d", t_show(k, kl), (int)gk, kind);
}

void t_expect(shmkv_db *db, const void *k, size_t kl, const void *v, size_t vl)
{
    t_expect_kind(db, k, kl, v, vl, -1);
}

void t_expect_str(shmkv_db *db, const char *k, const char *v)
{
    t_expect_kind(db, k, strlen(k), v, strlen(v), -1);
}

void t_expect_absent(shmkv_db *db, const void *k, size_t kl)
{
    unsigned char b[8];
    size_t got = 0;
    int rc = shmkv_get(db, k, kl, b, sizeof b, &got, NULL);
    cr_assert_eq(rc, SHMKV_ENOTFOUND, "get(%s) -> %d (%s), expected SHMKV_ENOTFOUND",
                 t_show(k, kl), rc, shmkv_strerror(rc));
    rc = shmkv_exists(db, k, kl);
    cr_assert_eq(rc, 0, "exists(%s) -> %d, expected 0", t_show(k, kl), rc);
}

/* ---- listing into memory ---------------------------------------------------- */

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

int t_collect(void *c, const void *key, size_t klen, const void *val, size_t vlen,
              shmkv_kind kind)
{
    t_kvlist *l = c;
    l->calls++;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        t_kv *na = realloc(l->a, nc * sizeof *na);
        if (!na)
            abort();
        l->a = na;
        l->cap = nc;
    }
    t_kv *e = &l->a[l->n++];
    e->kl = klen;
    e->k = xmalloc(klen);
    memcpy(e->k, key, klen);
    e->vl = vlen;
    e->kind = (int)kind;
    e->v = NULL;
    if (val) {
        e->v = xmalloc(vlen);
        if (vlen)
            memcpy(e->v, val, vlen);
    }
    if (l->stop_after && l->calls >= l->stop_after)
        return l->stop_value;
    return 0;
}

void t_kvlist_free(t_kvlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->a[i].k);
        free(l->a[i].v);
    }
    free(l->a);
    memset(l, 0, sizeof *l);
}

int t_list_all(shmkv_db *db, const void *prefix, size_t plen, uint64_t limit, unsigned flags,
               t_kvlist *out)
{
    memset(out, 0, sizeof *out);
    return shmkv_list(db, prefix, plen, limit, flags, t_collect, out);
}

void t_assert_sorted(const t_kvlist *l)
{
    for (size_t i = 1; i < l->n; i++) {
        int c = t_keycmp(l->a[i - 1].k, l->a[i - 1].kl, l->a[i].k, l->a[i].kl);
        cr_assert(c < 0, "list not strictly sorted at %zu: %s then %s", i,
                  t_show(l->a[i - 1].k, l->a[i - 1].kl), t_show(l->a[i].k, l->a[i].kl));
    }
}

/* ---- files ----------------------------------------------------------------- */

unsigned char *t_read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    cr_assert(fd >= 0, "open(%s): %s", path, strerror(errno));
    struct stat st;
    cr_assert(fstat(fd, &st) == 0);
    size_t n = (size_t)st.st_size;
    unsigned char *b = malloc(n ? n : 1);
    cr_assert(b);
    cr_assert_eq(fd_read_all(fd, b, n), (ssize_t)n, "read(%s)", path);
    close(fd);
    *len = n;
    return b;
}

void t_write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert(fd >= 0, "open(%s): %s", path, strerror(errno));
    cr_assert_eq(fd_write_all(fd, p, n), 0, "write(%s): %s", path, strerror(errno));
    close(fd);
}

bool t_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* ---- shmkv-dump --check ------------------------------------------------------- */

int t_dump_capture(const char *where, shmkv_backend be, char *text, size_t cap)
{
    const char *dump = t_dump_tool();
    cr_assert(dump, "SHMKV_DUMP must name shmkv-dump (meson test sets it)");
    const char *out = t_str("%s/dump.%d.out", ctx.sc.dir, ++ctx.seq);
    int st = t_dump_run(dump, where, be == SHMKV_BACKEND_MEMORY, out, text, cap);
    unlink(out);
    char b[96];
    cr_assert(st >= 0, "shmkv-dump: %s", strerror(errno));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) < 126, "shmkv-dump --check %s: %s\n%s", where,
              t_status_str(st, b, sizeof b), text ? text : "");
    return WEXITSTATUS(st);
}

void t_check_sound(shmkv_db *db, const char *what)
{
    uint64_t probs = 99;
    char msg[256] = "x";
    int rc = shmkv_check(db, &probs, msg, sizeof msg);
    cr_assert(rc == 0 && probs == 0 && msg[0] == 0,
              "%s: shmkv_check -> %d (%s), %" PRIu64 " problems, first: %s", what, rc,
              shmkv_strerror(rc), probs, msg);
}

void t_dump_check(const char *where, shmkv_backend be)
{
    static char text[16384];
    int rc = t_dump_capture(where, be, text, sizeof text);
    cr_assert(rc == 0, "shmkv-dump --check %s: exited with %d\n%.3000s", where, rc, text);
}

static bool says_sound(const char *text)
{
    return strstr(text, "result: sound\n") && !strstr(text, "repair: ");
}

void t_dump_sound(const char *where, shmkv_backend be)
{
    static char text[32768];
    int rc = t_dump_capture(where, be, text, sizeof text);
    cr_assert(rc == 0 && says_sound(text),
              "shmkv-dump --check %s: exited with %d, not sound or a repair pending:\n%s", where,
              rc, text);
}

void t_child_dump_check(const char *where, shmkv_backend be, bool strict)
{
    static char text[32768];
    const char *dump = t_dump_tool();
    CHILD_CHECK(dump, "SHMKV_DUMP must name shmkv-dump (meson test sets it)");
    char out[256];
    snprintf(out, sizeof out, "%s/dump.%d.out", ctx.sc.dir, (int)getpid());
    int st = t_dump_run(dump, where, be == SHMKV_BACKEND_MEMORY, out, text, sizeof text);
    unlink(out);
    char b[96];
    CHILD_CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "shmkv-dump --check %s: %s\n%s",
                where, st >= 0 ? t_status_str(st, b, sizeof b) : strerror(errno), text);
    if (strict)
        CHILD_CHECK(says_sound(text), "shmkv-dump --check %s: not sound or a repair pending:\n%s",
                    where, text);
}

int t_child_small_fs(const char *mnt, const char *opts)
{
    const char *why = NULL;
    int r = t_small_fs(mnt, opts ? opts : "size=2m,mode=0700", 2u << 20, &why);
    CHILD_CHECK(r != 0, "%s", why);
    return r;
}

const char *t_small_fs_store(shmkv_backend be, const char *tag, const char **mnt)
{
    if (be == SHMKV_BACKEND_MEMORY) {
        *mnt = "/dev/shm";
        return t_name(tag);
    }
    *mnt = t_fresh("mnt");
    cr_assert(mkdir(*mnt, 0700) == 0, "mkdir %s: %s", *mnt, strerror(errno));
    return t_str("%s/%s.kv", *mnt, tag);
}

pid_t t_fork_reporting(int *fd)
{
    int p[2];
    cr_assert(pipe(p) == 0, "pipe: %s", strerror(errno));
    pid_t kid = t_fork();
    close(p[kid == 0 ? 0 : 1]);
    *fd = p[kid == 0 ? 1 : 0];
    return kid;
}

void t_collect_report(pid_t kid, int fd, void *res, size_t size, const char *what)
{
    memset(res, 0, size);
    ssize_t got = fd_read_all(fd, res, size);
    close(fd);
    int st = t_wait(kid);
    char b[96];
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s ended with %s (see above)", what,
              t_status_str(st, b, sizeof b));
    cr_assert_eq(got, (ssize_t)size, "%s reported %zd of %zu bytes", what, got, size);
}

void t_small_fs_run(shmkv_backend be, int track, const char *tag, t_small_fs_body body,
                    void *res, size_t size)
{
    const char *mnt;
    const char *where = t_small_fs_store(be, tag, &mnt);
    int fd;
    pid_t kid = t_fork_reporting(&fd);
    if (kid == 0) {
        body(be, track, mnt, where, fd);
        _exit(0);
    }
    t_collect_report(kid, fd, res, size, "the writer");
}
