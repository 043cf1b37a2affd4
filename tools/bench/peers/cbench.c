/*
 * cbench.c - C-level peers benchmark for libshmkv.
 *
 * Compares single-key get and set throughput of
 *   shmkv-mem   libshmkv, memory backend (/dev/shm), key tracking off
 *   shmkv-disk  libshmkv, disk backend (a regular file), key tracking off
 *   lmdb        LMDB, MDB_WRITEMAP|MDB_NOSYNC, one write transaction per put,
 *               one reused read transaction (reset/renew) per get
 *   redis       Redis through hiredis on 127.0.0.1, one round trip per op
 *   redis-pipe  the same, PIPE commands in flight per round trip
 *   raw         a minimal baseline written here: a shared mapping with 64
 *               stripes, each a robust process-shared mutex plus an
 *               open-addressing table of fixed 64-byte slots (linear probing)
 * with 1 and 2 processes, each process on its own handle/connection.
 *
 *   cbench run  -b BACKEND -n NKEYS -t SECONDS [-d DIR] [-P PORT] [-B PIPE]
 *       fills NKEYS keys once, then measures get and set with 1 and 2
 *       processes (T seconds each) and prints lines
 *       RESULT <backend> <op> <nkeys> <nprocs> <ops_per_sec>
 *   cbench open -n NKEYS -d DIR -r REPS [-k]
 *       creates DIR/open.shmkv (disk backend, trackKeys on) holding NKEYS
 *       keys, closes it, then times REPS reopenings (shmkv_open only) and
 *       prints OPEN_US <microseconds> per reopening. -k keeps the store.
 *
 * Keys are "key:%010u" (14 bytes); values are 32 bytes. Keys are drawn
 * uniformly at random among the NKEYS existing keys; set overwrites.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmkv.h"

#define KLEN 14
#define VLEN 32

static char *g_keys;       /* nkeys * 16 bytes, NUL padded */
static uint32_t g_nkeys;
static const char *g_dir = "/tmp";
static int g_port = 6399;
static int g_pipe = 32;
static double g_secs = 1.0;
static char g_backend[32];

static void die(const char *what, long code)
{
    fprintf(stderr, "cbench: %s failed (%ld)\n", what, code);
    exit(2);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline const char *key_at(uint32_t i) { return g_keys + (size_t)i * 16; }

static inline uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* ------------------------------------------------------------------ */
/* raw baseline: stripes of (robust mutex, open-addressing table)       */

#define RAW_STRIPES 64
typedef struct {
    uint64_t hash;          /* 0 = empty */
    uint8_t klen;
    char key[19];
    uint32_t vlen;
    char val[VLEN];
} raw_slot;                 /* 64 bytes */

typedef struct {
    pthread_mutex_t mu;
    char pad[64 - sizeof(pthread_mutex_t) % 64];
} raw_lock;

typedef struct {
    uint64_t mask; /* slots per stripe - 1 */
    raw_lock locks[RAW_STRIPES];
} raw_hdr;

static raw_hdr *g_raw;
static size_t g_raw_bytes;

static inline uint64_t raw_hash(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h ? h : 1;
}

static inline raw_slot *raw_table(uint32_t stripe)
{
    raw_slot *base = (raw_slot *)((char *)g_raw + ((sizeof(raw_hdr) + 63) & ~(size_t)63));
    return base + (size_t)stripe * (g_raw->mask + 1);
}

static void raw_lock_stripe(uint32_t s)
{
    int rc = pthread_mutex_lock(&g_raw->locks[s].mu);
    if (rc == EOWNERDEAD)
        pthread_mutex_consistent(&g_raw->locks[s].mu);
    else if (rc)
        die("raw lock", rc);
}

static void raw_init(uint32_t nkeys)
{
    uint64_t per = 16;
    while (per < 2ull * nkeys / RAW_STRIPES + 1)
        per <<= 1;
    g_raw_bytes = ((sizeof(raw_hdr) + 63) & ~(size_t)63) + per * RAW_STRIPES * sizeof(raw_slot);
    g_raw = mmap(NULL, g_raw_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_raw == MAP_FAILED)
        die("mmap", errno);
    g_raw->mask = per - 1;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    for (int i = 0; i < RAW_STRIPES; i++)
        pthread_mutex_init(&g_raw->locks[i].mu, &a);
    pthread_mutexattr_destroy(&a);
}

static int raw_op(const char *k, size_t klen, const char *val, char *out)
{
    uint64_t h = raw_hash(k, klen);
    uint32_t s = (uint32_t)(h >> 58);
    raw_slot *t = raw_table(s);
    uint64_t i = h & g_raw->mask;
    int found = 0;
    raw_lock_stripe(s);
    for (;;) {
        raw_slot *sl = &t[i];
        if (sl->hash == 0) {
            if (val) { /* insert */
                sl->klen = (uint8_t)klen;
                memcpy(sl->key, k, klen);
                sl->vlen = VLEN;
                memcpy(sl->val, val, VLEN);
                sl->hash = h;
            }
            break;
        }
        if (sl->hash == h && sl->klen == klen && memcmp(sl->key, k, klen) == 0) {
            if (val)
                memcpy(sl->val, val, VLEN);
            else
                memcpy(out, sl->val, sl->vlen);
            found = 1;
            break;
        }
        i = (i + 1) & g_raw->mask;
    }
    pthread_mutex_unlock(&g_raw->locks[s].mu);
    return found;
}

/* ------------------------------------------------------------------ */
/* per-backend handles                                                  */

typedef struct {
    shmkv_db *db;
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *rtxn;
    redisContext *rc;
} handle;

static char g_where[512];

static void open_handle(handle *h, int create)
{
    memset(h, 0, sizeof *h);
    if (strncmp(g_backend, "shmkv", 5) == 0) {
        shmkv_options o = {0};
        o.backend = strcmp(g_backend, "shmkv-mem") == 0 ? SHMKV_BACKEND_MEMORY : SHMKV_BACKEND_DISK;
        o.track_keys = create ? SHMKV_TRACK_OFF : SHMKV_TRACK_DEFAULT;
        int rc = shmkv_open(g_where, &o, &h->db);
        if (rc)
            die("shmkv_open", rc);
    } else if (strcmp(g_backend, "lmdb") == 0) {
        int rc = mdb_env_create(&h->env);
        if (!rc) rc = mdb_env_set_mapsize(h->env, (size_t)4 << 30);
        if (!rc) rc = mdb_env_open(h->env, g_where, MDB_NOSUBDIR | MDB_WRITEMAP | MDB_NOSYNC, 0600);
        if (rc)
            die("mdb_env_open", rc);
        MDB_txn *t;
        if ((rc = mdb_txn_begin(h->env, NULL, 0, &t)) || (rc = mdb_dbi_open(t, NULL, 0, &h->dbi)) ||
            (rc = mdb_txn_commit(t)))
            die("mdb_dbi_open", rc);
    } else if (strncmp(g_backend, "redis", 5) == 0) {
        h->rc = redisConnect("127.0.0.1", g_port);
        if (!h->rc || h->rc->err)
            die("redisConnect", h->rc ? h->rc->err : -1);
    }
}

static void close_handle(handle *h)
{
    if (h->db)
        shmkv_close(h->db);
    if (h->rtxn)
        mdb_txn_abort(h->rtxn);
    if (h->env)
        mdb_env_close(h->env);
    if (h->rc)
        redisFree(h->rc);
}

static void fill(handle *h)
{
    char val[VLEN];
    memset(val, 'v', VLEN);
    if (h->db) {
        for (uint32_t i = 0; i < g_nkeys; i++) {
            int rc = shmkv_set(h->db, key_at(i), KLEN, val, VLEN, SHMKV_KIND_BYTES);
            if (rc)
                die("shmkv_set (fill)", rc);
        }
    } else if (h->env) {
        MDB_txn *t;
        int rc = mdb_txn_begin(h->env, NULL, 0, &t);
        for (uint32_t i = 0; !rc && i < g_nkeys; i++) {
            MDB_val k = {KLEN, (void *)key_at(i)}, v = {VLEN, val};
            rc = mdb_put(t, h->dbi, &k, &v, 0);
        }
        if (rc || (rc = mdb_txn_commit(t)))
            die("lmdb fill", rc);
    } else if (h->rc) {
        redisReply *r = redisCommand(h->rc, "FLUSHALL");
        if (!r)
            die("FLUSHALL", h->rc->err);
        freeReplyObject(r);
        for (uint32_t i = 0; i < g_nkeys; i += 1000) {
            uint32_t n = g_nkeys - i < 1000 ? g_nkeys - i : 1000;
            for (uint32_t j = 0; j < n; j++)
                redisAppendCommand(h->rc, "SET %b %b", key_at(i + j), (size_t)KLEN, val, (size_t)VLEN);
            for (uint32_t j = 0; j < n; j++) {
                if (redisGetReply(h->rc, (void **)&r) != REDIS_OK)
                    die("redis fill", h->rc->err);
                freeReplyObject(r);
            }
        }
    } else {
        for (uint32_t i = 0; i < g_nkeys; i++)
            raw_op(key_at(i), KLEN, val, NULL);
    }
}

/* One operation batch; returns the number of operations done. */
static uint64_t do_ops(handle *h, int set, uint64_t *rng, uint64_t n)
{
    char val[VLEN], out[256];
    memset(val, 'w', VLEN);
    uint64_t done = 0;
    if (h->rc) {
        int depth = strcmp(g_backend, "redis-pipe") == 0 ? g_pipe : 1;
        while (done < n) {
            for (int j = 0; j < depth; j++) {
                const char *k = key_at((uint32_t)(xorshift(rng) % g_nkeys));
                if (set) {
                    val[0] = (char)('a' + (done + j) % 26);
                    redisAppendCommand(h->rc, "SET %b %b", k, (size_t)KLEN, val, (size_t)VLEN);
                } else {
                    redisAppendCommand(h->rc, "GET %b", k, (size_t)KLEN);
                }
            }
            for (int j = 0; j < depth; j++) {
                redisReply *r;
                if (redisGetReply(h->rc, (void **)&r) != REDIS_OK)
                    die("redis reply", h->rc->err);
                if (!set && (r->type != REDIS_REPLY_STRING || r->len != VLEN))
                    die("redis GET: missing key", r->type);
                freeReplyObject(r);
            }
            done += (uint64_t)depth;
        }
        return done;
    }
    for (; done < n; done++) {
        const char *k = key_at((uint32_t)(xorshift(rng) % g_nkeys));
        if (h->db) {
            if (set) {
                val[0] = (char)('a' + done % 26);
                int rc = shmkv_set(h->db, k, KLEN, val, VLEN, SHMKV_KIND_BYTES);
                if (rc)
                    die("shmkv_set", rc);
            } else {
                size_t vl;
                int rc = shmkv_get(h->db, k, KLEN, out, sizeof out, &vl, NULL);
                if (rc || vl != VLEN)
                    die("shmkv_get", rc);
            }
        } else if (h->env) {
            MDB_val mk = {KLEN, (void *)k}, mv;
            int rc;
            if (set) {
                MDB_txn *t;
                val[0] = (char)('a' + done % 26);
                mv.mv_size = VLEN;
                mv.mv_data = val;
                if ((rc = mdb_txn_begin(h->env, NULL, 0, &t)) || (rc = mdb_put(t, h->dbi, &mk, &mv, 0)) ||
                    (rc = mdb_txn_commit(t)))
                    die("lmdb put", rc);
            } else {
                if (!h->rtxn) {
                    if ((rc = mdb_txn_begin(h->env, NULL, MDB_RDONLY, &h->rtxn)))
                        die("mdb_txn_begin", rc);
                } else if ((rc = mdb_txn_renew(h->rtxn))) {
                    die("mdb_txn_renew", rc);
                }
                if ((rc = mdb_get(h->rtxn, h->dbi, &mk, &mv)) || mv.mv_size != VLEN)
                    die("mdb_get", rc);
                memcpy(out, mv.mv_data, mv.mv_size);
                mdb_txn_reset(h->rtxn);
            }
        } else {
            if (set)
                val[0] = (char)('a' + done % 26);
            if (!raw_op(k, KLEN, set ? val : NULL, out) && !set)
                die("raw get: missing key", 0);
        }
    }
    return done;
}

/* Fork nprocs workers that each open their own handle, wait for the start
 * signal, run for g_secs and report (ops, seconds). Returns total ops/s. */
static double measure(int set, int nprocs)
{
    int ready[2], go[2], res[2];
    if (pipe(ready) || pipe(go) || pipe(res))
        die("pipe", errno);
    pid_t pids[8];
    for (int p = 0; p < nprocs; p++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork", errno);
        if (pid == 0) {
            handle h;
            open_handle(&h, 0);
            uint64_t rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)getpid() << 20) ^ (uint64_t)p;
            do_ops(&h, set, &rng, 1000); /* warm up */
            char c = 'r';
            if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
                _exit(3);
            uint64_t ops = 0;
            double t0 = now_s(), t;
            do {
                ops += do_ops(&h, set, &rng, 256);
            } while ((t = now_s()) - t0 < g_secs);
            double r[2] = {(double)ops, t - t0};
            if (write(res[1], r, sizeof r) != sizeof r)
                _exit(3);
            close_handle(&h);
            _exit(0);
        }
        pids[p] = pid;
    }
    for (int p = 0; p < nprocs; p++) {
        char c;
        if (read(ready[0], &c, 1) != 1)
            die("worker start", 0);
    }
    char gobuf[8] = {0};
    if (write(go[1], gobuf, (size_t)nprocs) != nprocs)
        die("start", errno);
    double total = 0;
    for (int p = 0; p < nprocs; p++) {
        double r[2];
        if (read(res[0], r, sizeof r) != sizeof r)
            die("worker result", 0);
        total += r[0] / r[1];
    }
    int bad = 0;
    for (int p = 0; p < nprocs; p++) {
        int st;
        waitpid(pids[p], &st, 0);
        bad |= !WIFEXITED(st) || WEXITSTATUS(st);
    }
    if (bad)
        die("worker exit", 0);
    close(ready[0]); close(ready[1]); close(go[0]); close(go[1]); close(res[0]); close(res[1]);
    return total;
}

static void make_keys(void)
{
    g_keys = calloc(g_nkeys, 16);
    if (!g_keys)
        die("calloc", errno);
    for (uint32_t i = 0; i < g_nkeys; i++)
        snprintf(g_keys + (size_t)i * 16, 16, "key:%010" PRIu32, i);
}

static int cmd_run(void)
{
    make_keys();
    if (strcmp(g_backend, "shmkv-mem") == 0) {
        snprintf(g_where, sizeof g_where, "cbench-%d", (int)getpid());
        shmkv_memory_unlink(g_where);
    } else if (strcmp(g_backend, "shmkv-disk") == 0) {
        snprintf(g_where, sizeof g_where, "%s/cbench-%d.shmkv", g_dir, (int)getpid());
        unlink(g_where);
    } else if (strcmp(g_backend, "lmdb") == 0) {
        snprintf(g_where, sizeof g_where, "%s/cbench-%d.lmdb", g_dir, (int)getpid());
        unlink(g_where);
    } else if (strcmp(g_backend, "raw") == 0) {
        raw_init(g_nkeys);
    } else if (strcmp(g_backend, "redis") && strcmp(g_backend, "redis-pipe")) {
        fprintf(stderr, "cbench: unknown backend %s\n", g_backend);
        return 2;
    }
    handle h;
    open_handle(&h, 1); /* the parent keeps the store open throughout */
    fill(&h);
    if (h.env) { /* no handle may cross fork() with LMDB */
        close_handle(&h);
        memset(&h, 0, sizeof h);
    }
    static const char *ops[] = {"get", "set"};
    for (int o = 0; o < 2; o++)
        for (int np = 1; np <= 2; np++) {
            double r = measure(o, np);
            printf("RESULT %s %s %" PRIu32 " %d %.0f\n", g_backend, ops[o], g_nkeys, np, r);
            fflush(stdout);
        }
    close_handle(&h);
    if (strcmp(g_backend, "shmkv-disk") == 0 || strcmp(g_backend, "lmdb") == 0) {
        unlink(g_where);
        char lock[600];
        snprintf(lock, sizeof lock, "%s-lock", g_where);
        unlink(lock);
    }
    if (g_raw)
        munmap(g_raw, g_raw_bytes);
    return 0;
}

static int cmd_open(int reps, int keep)
{
    make_keys();
    snprintf(g_where, sizeof g_where, "%s/open.shmkv", g_dir);
    unlink(g_where);
    shmkv_options o = {0};
    o.backend = SHMKV_BACKEND_DISK;
    o.track_keys = SHMKV_TRACK_ON;
    shmkv_db *db;
    int rc = shmkv_open(g_where, &o, &db);
    if (rc)
        die("shmkv_open (create)", rc);
    char val[VLEN];
    memset(val, 'v', VLEN);
    for (uint32_t i = 0; i < g_nkeys; i++)
        if ((rc = shmkv_set(db, key_at(i), KLEN, val, VLEN, SHMKV_KIND_STRING)))
            die("shmkv_set (fill)", rc);
    shmkv_close(db);
    for (int r = 0; r < reps; r++) {
        shmkv_options j = {0};
        j.backend = SHMKV_BACKEND_DISK;
        j.track_keys = SHMKV_TRACK_ON;
        double t0 = now_s();
        rc = shmkv_open(g_where, &j, &db);
        double t1 = now_s();
        if (rc)
            die("shmkv_open (reopen)", rc);
        char kb[64];
        size_t kl;
        uint64_t n = shmkv_size(db);
        if (n != g_nkeys || shmkv_random_key(db, NULL, 0, kb, sizeof kb, &kl))
            die("reopened store", (long)n);
        printf("OPEN_US %.1f\n", (t1 - t0) * 1e6);
        fflush(stdout);
        shmkv_close(db);
    }
    if (!keep)
        unlink(g_where);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: cbench run|open [options]\n");
        return 2;
    }
    const char *mode = argv[1];
    int reps = 5, keep = 0, c;
    g_nkeys = 10000;
    optind = 2;
    while ((c = getopt(argc, argv, "b:n:t:d:P:B:r:k")) != -1) {
        switch (c) {
        case 'b': snprintf(g_backend, sizeof g_backend, "%s", optarg); break;
        case 'n': g_nkeys = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 't': g_secs = atof(optarg); break;
        case 'd': g_dir = optarg; break;
        case 'P': g_port = atoi(optarg); break;
        case 'B': g_pipe = atoi(optarg); break;
        case 'r': reps = atoi(optarg); break;
        case 'k': keep = 1; break;
        default: return 2;
        }
    }
    if (g_nkeys == 0 || g_pipe < 1)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    if (strcmp(mode, "run") == 0)
        return cmd_run();
    if (strcmp(mode, "open") == 0)
        return cmd_open(reps, keep);
    fprintf(stderr, "cbench: unknown mode %s\n", mode);
    return 2;
}
