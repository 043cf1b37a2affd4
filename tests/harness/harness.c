/*
 * harness.c - the part of the test harness without Criterion (harness.h).
 */
#include "harness.h"

#include "internal.h" /* shmkv__test_hook */

#include <dirent.h>
#include <ftw.h>
#include <poll.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

extern char **environ;

/* ---- sanitizers and work scale ----------------------------------------- */

#if T_TSAN
/*
 * TSan's lock-order (deadlock) detector tracks at most 64 mutexes held at
 * once by one thread and aborts with "CHECK failed:
 * sanitizer_deadlock_detector.h:67 ... n_all_locks_ < 64" beyond that.
 * libshmkv legitimately holds every segment lock (64 by default, up to
 * 4096) plus the index lock in shmkv_rebuild_index() and in recovery, so
 * the detector is off; data-race detection stays on. TSAN_OPTIONS in the
 * environment still overrides this.
 */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "detect_deadlocks=0";
}
#endif

const char *t_flavour(void)
{
    return T_TSAN ? "tsan" : T_ASAN ? "asan" : "plain";
}

double t_scale_env(void)
{
    /* SHMKV_REL_SCALE: the name the reliability tests used to read. */
    const char *names[] = {"SHMKV_TEST_SCALE", "SHMKV_REL_SCALE"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *s = getenv(names[i]);
        if (s && *s) {
            double v = strtod(s, NULL);
            if (v > 0)
                return v;
        }
    }
    return 0;
}

double t_scale(void)
{
    double v = t_scale_env();
    if (v > 0)
        return v;
    return T_TSAN ? 0.25 : T_ASAN ? 0.5 : T_OPTIMIZED ? 1.0 : 0.5;
}

double t_scale_heavy(void)
{
    double v = t_scale_env();
    if (v > 0)
        return v;
    return T_TSAN ? 0.1 : T_ASAN ? 0.25 : 1.0;
}

uint64_t t_scaled(uint64_t n, uint64_t min)
{
    uint64_t r = (uint64_t)((double)n * t_scale());
    return r < min ? min : r;
}

/* ---- time and randomness ----------------------------------------------- */

uint64_t t_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void t_sleep_us(uint64_t us)
{
    struct timespec ts = {(time_t)(us / 1000000u), (long)(us % 1000000u) * 1000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* The stores the reliability tests fill are sized by this hash (e.g. the
 * value lengths of test_space's mixed rounds): changing it changes what
 * they test. */
uint64_t t_mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ull;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dull;
    x ^= x >> 33;
    return x;
}

t_rng t_rng_seeded(uint64_t seed)
{
    return (t_rng){seed};
}

uint64_t t_next(t_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t t_below(t_rng *r, uint64_t n)
{
    return n ? (uint64_t)(((unsigned __int128)t_next(r) * n) >> 64) : 0;
}

uint64_t t_pick_seed(void)
{
    const char *names[] = {"SHMKV_TEST_SEED", "SHMKV_REL_SEED"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *s = getenv(names[i]);
        if (s && *s)
            return strtoull(s, NULL, 0);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return t_mix((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40));
}

int t_keycmp(const void *a, size_t al, const void *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c < 0 ? -1 : 1;
    return al < bl ? -1 : al > bl;
}

/* ---- whole-buffer I/O --------------------------------------------------- */

int fd_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

ssize_t fd_read_all(int fd, void *p, size_t n)
{
    char *c = p;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, c + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

size_t t_slurp(const char *path, char *text, size_t cap)
{
    if (!cap)
        return 0;
    text[0] = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t r = fd_read_all(fd, text, cap - 1);
    close(fd);
    size_t n = r > 0 ? (size_t)r : 0;
    text[n] = 0;
    return n;
}

/* ---- scratch space and the janitor -------------------------------------- */

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)flag;
    (void)f;
    remove(p);
    return 0;
}

void t_rmtree(const char *dir)
{
    if (dir && dir[0])
        nftw(dir, rm_one, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

void t_unlink_shm_prefix(const char *prefix)
{
    char full[96];
    snprintf(full, sizeof full, "shmkv.%s", prefix);
    size_t n = strlen(full);
    DIR *d = opendir("/dev/shm");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, full, n) == 0)
            unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
}

/*
 * The janitor is /bin/sh in its own session (group kills miss it), reading
 * a pipe whose write end only the test process and its forked children hold
 * (O_CLOEXEC: not the programs they exec). At EOF, when all of them are gone
 * however they ended, it removes the scratch, unless it was sent a 'K'
 * (t_scratch_keep()). posix_spawn rather than fork, so that nothing runs in
 * a copy of a possibly multi-threaded (sanitizer) process.
 */
static void start_janitor(t_scratch *s)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return; /* no janitor: direct cleanup still works */
    char script[512];
    snprintf(script, sizeof script,
             "trap '' HUP INT TERM PIPE; k=$(cat); case \"$k\" in *K*) exit 0;; esac; "
             "rm -rf '%s'; rm -f /dev/shm/shmkv.%s*",
             s->dir, s->name_prefix);
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[0], 0);
    /* hold no test output pipe open: the runner waits for its EOF */
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID);
    char *argv[] = {"/bin/sh", "-c", script, NULL};
    pid_t pid;
    if (posix_spawn(&pid, "/bin/sh", &fa, &at, argv, environ) == 0)
        s->janitor = pid;
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(p[0]);
    if (s->janitor)
        s->janitor_fd = p[1];
    else
        close(p[1]);
}

int t_scratch_init(t_scratch *s, const char *tag)
{
    memset(s, 0, sizeof *s);
    s->janitor_fd = -1;
    s->owner = getpid();
    snprintf(s->name_prefix, sizeof s->name_prefix, "t%dx", (int)s->owner);
    t_unlink_shm_prefix(s->name_prefix); /* leftovers of an old process with our pid */
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp || strlen(tmp) > 80)
        tmp = "/tmp";
    snprintf(s->dir, sizeof s->dir, "%s/shmkv-%s.%d.XXXXXX", tmp, tag, (int)s->owner);
    if (!mkdtemp(s->dir))
        return -1;
    start_janitor(s);
    return 0;
}

static void end_janitor(t_scratch *s)
{
    if (s->janitor_fd >= 0) {
        close(s->janitor_fd);
        s->janitor_fd = -1;
    }
    if (s->janitor > 0) {
        /* It exits at EOF, unless a child still holds the pipe: then it
         * stays, to clean up after that child, and is not waited for (nor
         * killed) beyond 2 s. */
        for (int i = 0; i < 200 && waitpid(s->janitor, NULL, WNOHANG) == 0; i++)
            t_sleep_us(10000);
        s->janitor = 0;
    }
}

void t_scratch_done(t_scratch *s)
{
    if (getpid() != s->owner)
        return;
    t_rmtree(s->dir);
    t_unlink_shm_prefix(s->name_prefix);
    end_janitor(s);
}

void t_scratch_keep(t_scratch *s)
{
    if (getpid() != s->owner)
        return;
    if (s->janitor_fd >= 0 && write(s->janitor_fd, "K", 1) != 1) {
        /* the janitor is gone; nothing would clean up anyway */
    }
    end_janitor(s);
}

/* ---- children ------------------------------------------------------------ */

pid_t t_fork_raw(void)
{
    pid_t parent = getpid();
    fflush(NULL);
    pid_t p = fork();
    if (p == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(98); /* the parent died before the death signal was set */
    }
    return p;
}

double t_wait_default(void)
{
    const char *s = getenv("SHMKV_TEST_WAIT");
    if (s && *s) {
        double v = strtod(s, NULL);
        if (v > 0)
            return v;
    }
    /* as scripts/test.sh stretches the meson timeouts of these builds */
    return 600.0 * (T_TSAN ? 6 : T_ASAN ? 4 : 1);
}

/* A pidfd to poll for the child's end, or -1 (older kernels: then the wait
 * polls waitpid with a growing sleep). */
static int pidfd_of(pid_t p)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, p, 0);
#else
    (void)p;
    return -1;
#endif
}

int t_waitpid_for(pid_t p, int *st, double seconds, bool stopped)
{
    int flags = WNOHANG | (stopped ? WUNTRACED : 0);
    uint64_t end = t_now_ns() + (uint64_t)(seconds * 1e9);
    int pfd = stopped ? -1 : pidfd_of(p); /* a stop does not wake a pidfd */
    uint64_t nap = 50;
    int rc = -1;
    for (;;) {
        pid_t r = waitpid(p, st, flags);
        if (r == p) {
            rc = 0;
            break;
        }
        if (r < 0 && errno != EINTR)
            break;
        uint64_t now = t_now_ns();
        if (now >= end) {
            kill(p, SIGKILL);
            pid_t k;
            do {
                k = waitpid(p, st, 0); /* SIGKILL ends any process: bounded */
            } while (k < 0 && errno == EINTR);
            rc = k == p ? 1 : -1;
            break;
        }
        if (pfd >= 0) {
            uint64_t left_ms = (end - now) / 1000000u + 1;
            struct pollfd pf = {pfd, POLLIN, 0};
            poll(&pf, 1, left_ms > 1000 ? 1000 : (int)left_ms);
        } else {
            t_sleep_us(nap);
            if (nap < 10000)
                nap *= 2;
        }
    }
    if (pfd >= 0)
        close(pfd);
    return rc;
}

int t_reap(pid_t p, int *st)
{
    return t_waitpid_for(p, st, t_wait_default(), false) == 0 ? 0 : -1;
}

const char *t_status_str(int st, char *buf, size_t n)
{
    if (WIFEXITED(st))
        snprintf(buf, n, "exited with %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, n, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else if (WIFSTOPPED(st))
        snprintf(buf, n, "stopped by signal %d (%s)", WSTOPSIG(st), strsignal(WSTOPSIG(st)));
    else
        snprintf(buf, n, "status 0x%x", st);
    return buf;
}

/* ---- hook points ------------------------------------------------------------ */

static struct {
    const char *point;
    int skip;
    int fd;
    uint32_t mark;
    volatile bool fired;
} hook;

bool t_hook_fired(void)
{
    return hook.fired;
}

/* Whether this call of the hook is the armed point (counting down skip). */
static bool at_point(const char *point)
{
    if (!hook.point || strcmp(point, hook.point) != 0 || hook.skip-- > 0)
        return false;
    hook.fired = true;
    return true;
}

static void kill_hook(const char *point)
{
    if (at_point(point))
        raise(SIGKILL);
}

static void stop_hook(const char *point)
{
    if (!at_point(point))
        return;
    hook.point = NULL; /* once */
    if (hook.fd >= 0 && write(hook.fd, "S", 1) != 1)
        _exit(4);
    raise(SIGSTOP);
}

static void park_hook(const char *point)
{
    if (!at_point(point))
        return;
    if (fd_write_all(hook.fd, &hook.mark, sizeof hook.mark) != 0)
        _exit(4);
    for (;;)
        pause();
}

static void arm(const char *point, void (*fn)(const char *), int skip, int fd, uint32_t mark)
{
    hook.point = point;
    hook.skip = skip;
    hook.fd = fd;
    hook.mark = mark;
    hook.fired = false;
    shmkv__test_hook = point ? fn : NULL;
}

void t_hook_kill_at(const char *point, int skip)
{
    arm(point, kill_hook, skip, -1, 0);
}

void t_hook_stop_at(const char *point, int fd)
{
    arm(point, stop_hook, 0, fd, 0);
}

void t_hook_park_at(const char *point, int fd, uint32_t mark)
{
    arm(point, park_hook, 0, fd, mark);
}

/* ---- a small file system ------------------------------------------------- */

int t_small_fs(const char *mnt, const char *opts, uint64_t fsize, const char **why)
{
    static char msg[256];
    *why = NULL;
    if (unshare(CLONE_NEWNS) == 0 && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 &&
        mount("tmpfs", mnt, "tmpfs", MS_NOSUID | MS_NODEV, opts) == 0)
        return 1;
    int e = errno;
    if (e != EPERM) {
        snprintf(msg, sizeof msg, "private tmpfs at %s: %s", mnt, strerror(e));
        *why = msg;
        return 0;
    }
    if (!getenv("SHMKV_REL_ALLOW_FSIZE")) {
        *why = "mounting a tmpfs was refused (EPERM); set SHMKV_REL_ALLOW_FSIZE=1 to accept "
               "the RLIMIT_FSIZE fallback";
        return 0;
    }
    fprintf(stderr, "mount not permitted (EPERM): using RLIMIT_FSIZE = %" PRIu64 " bytes\n",
            fsize);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {(rlim_t)fsize, (rlim_t)fsize};
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0) {
        snprintf(msg, sizeof msg, "setrlimit: %s", strerror(errno));
        *why = msg;
        return 0;
    }
    return 2;
}

/* ---- shmkv-dump ---------------------------------------------------------- */

const char *t_dump_tool(void)
{
    const char *dump = getenv("SHMKV_DUMP");
    return dump && access(dump, X_OK) == 0 ? dump : NULL;
}

int t_dump_run(const char *dump, const char *where, bool memory, const char *out, char *text,
               size_t cap)
{
    pid_t p = t_fork_raw();
    if (p < 0)
        return -1;
    if (p == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(126);
        if (memory)
            execl(dump, "shmkv-dump", "--check", "--memory", where, (char *)NULL);
        else
            execl(dump, "shmkv-dump", "--check", where, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    int w = t_waitpid_for(p, &st, t_wait_default(), false);
    if (text)
        t_slurp(out, text, cap);
    if (w < 0)
        return -1;
    if (w == 1 && text)
        snprintf(text, cap, "shmkv-dump --check %s: still running after %.0f s, killed", where,
                 t_wait_default());
    return st;
}

/* ---- segments ------------------------------------------------------------ */

uint32_t t_seg_of(shmkv_db *db, const void *key, size_t klen)
{
    return shmkv__seg_for(db->m, shmkv__hash(key, klen))->id;
}
