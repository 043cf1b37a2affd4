/*
 * mkstore.c - helper of the shmkv-dump CLI tests.
 *
 *   dump-mkstore golden PATH [memory]     the known store of the golden tests
 *   dump-mkstore many PATH N TRACK SEGS   N keys "k:%08d" (TRACK 0/1)
 *   dump-mkstore churn PATH TRACK         every kind of write, clear, rebuild
 *   dump-mkstore writer PATH SECONDS      write, delete and claim keys until killed,
 *                                         SECONDS pass or PATH.stop exists
 *                                         (prints "ready" once open)
 *   dump-mkstore hold PATH                open the store and wait for stdin EOF
 *   dump-mkstore stop PATH                create PATH with one segment and stop
 *                                         itself (SIGSTOP) inside a set, holding
 *                                         the segment's lock; on SIGCONT the set
 *                                         finishes and it exits
 *   dump-mkstore claims PATH TRACK        twelve keys "job:NN" and their claims:
 *                                         2 live, 1 run out, others released,
 *                                         completed or never claimed
 *   dump-mkstore corrupt PATH KIND        damage a (copied) store in place
 *
 * Stores are written with the public API; corrupt maps the file itself and
 * uses the format definitions of internal.h to find what to damage.
 */
#include "harness.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, int rc)
{
    fprintf(stderr, "dump-mkstore: %s: %s\n", what, rc ? shmkv_strerror(rc) : "failed");
    exit(2);
}

static void set(shmkv_db *db, const char *k, size_t kl, const void *v, size_t vl, shmkv_kind kind)
{
    int rc = shmkv_set(db, k, kl, v, vl, kind);
    if (rc)
        die("set", rc);
}

static shmkv_db *open_store(const char *path, int memory, int track, uint32_t segs)
{
    shmkv_options o = {0};
    shmkv_db *db;
    o.backend = memory ? SHMKV_BACKEND_MEMORY : SHMKV_BACKEND_DISK;
    o.track_keys = track < 0 ? SHMKV_TRACK_DEFAULT : track ? SHMKV_TRACK_ON : SHMKV_TRACK_OFF;
    o.segments = segs;
    o.reserve = 64ull << 20;
    int rc = shmkv_open(path, &o, &db);
    if (rc)
        die("open", rc);
    return db;
}

static int golden(const char *path, int memory)
{
    shmkv_db *db = open_store(path, memory, 1, 4);
    static const char json[] =
        "{\"name\":\"demo\",\"tags\":[\"a\",\"b\"],\"n\":1.5e3,\"ok\":true,\"none\":null,"
        "\"nested\":{\"empty\":{},\"list\":[]}}";
    set(db, "config", 6, json, sizeof json - 1, SHMKV_KIND_JSON);
    set(db, "greeting", 8, "hello, world", 12, SHMKV_KIND_STRING);
    set(db, "multi", 5, "line one\nline two", 17, SHMKV_KIND_STRING);
    unsigned char bytes[20];
    for (int i = 0; i < 20; i++)
        bytes[i] = (unsigned char)(i * 13);
    set(db, "blob", 4, bytes, sizeof bytes, SHMKV_KIND_BYTES);
    set(db, "bad-json", 8, "{not json", 9, SHMKV_KIND_JSON);
    set(db, "empty", 5, "", 0, SHMKV_KIND_BYTES);
    set(db, "\x01" "bin\xff", 5, "x", 1, SHMKV_KIND_BYTES);
    char k[32], v[32];
    for (int i = 1; i <= 25; i++) {
        int kl = snprintf(k, sizeof k, "user:%03d", i);
        int vl = snprintf(v, sizeof v, "name-%d", i);
        set(db, k, (size_t)kl, v, (size_t)vl, SHMKV_KIND_STRING);
    }
    int64_t r;
    for (int i = 0; i < 42; i++)
        if (shmkv_incr(db, "counter", 7, 1, SHMKV_KIND_STRING, &r))
            die("incr", 0);
    /* Replacements and deletions leave free blocks and tombstones. */
    set(db, "greeting", 8, "hello, world", 12, SHMKV_KIND_STRING);
    for (int i = 10; i <= 14; i++) {
        int kl = snprintf(k, sizeof k, "user:%03d", i);
        if (shmkv_delete(db, k, (size_t)kl, NULL))
            die("delete", 0);
    }
    if (memory) {
        /* A memory store lives while a process has it open. */
        printf("ready\n");
        fflush(stdout);
        char buf[16];
        while (fread(buf, 1, sizeof buf, stdin) > 0)
            ;
    }
    shmkv_close(db);
    return 0;
}

/* What --export writes, compared with the golden files that k6's
 * exportJSONL() and exportCSV() write for the same entries (cgo's
 * TestExportGoldenFiles sets the same ones: keep the two in step). */
static int export_store(const char *path)
{
    shmkv_db *db = open_store(path, 0, 0, 4);
    static const struct { const char *k, *v; shmkv_kind kind; } e[] = {
        {"cfg", "{ \"name\" : \"demo\", \"n\": 1.5e3, \"ok\": true,\n \"none\": null, \"tags\": [\"a\", \"b\"] }", SHMKV_KIND_JSON},
        {"text", "say \"hi\", \\ <tag> & done", SHMKV_KIND_STRING},
        {"lines", "one\ntwo\r\tthree\x01\b\f\x7f", SHMKV_KIND_STRING},
        {"sep", "a\xe2\x80\xa8" "b\xe2\x80\xa9" "c", SHMKV_KIND_STRING},
        {"uni:\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87", "\xd0\xb7\xd0\xbd\xd0\xb0\xd1\x87 \xf0\x9f\x98\x80", SHMKV_KIND_STRING},
        {"empty", "", SHMKV_KIND_BYTES},
        {"bytes-text", "plain bytes", SHMKV_KIND_BYTES},
        {"num", "42", SHMKV_KIND_JSON},
        {"raw2028", "\"x\xe2\x80\xa8y\"", SHMKV_KIND_JSON},
        {"user:1", "{\"name\":\"Ada, L\",\"age\":36,\"admin\":false,\"note\":null}", SHMKV_KIND_JSON},
        {"user:2", "{\"name\":\"first\", \"age\" : 1.5 ,\"name\":\"last \\\"q\\\"\\nline\"}", SHMKV_KIND_JSON},
        {"user:3", "{\"age\":\"\\u00e9\\ud83d\\ude00\\ud800\", \"note\": \" lead\", \"name\": \"\\\\.\"}", SHMKV_KIND_JSON},
        {"user:4", "{}", SHMKV_KIND_JSON},
        {"k<&>", "v<&>", SHMKV_KIND_BYTES},
        {"j<&>", "{\"a\":\"<&>\"}", SHMKV_KIND_JSON},
    };
    for (size_t i = 0; i < sizeof e / sizeof *e; i++)
        set(db, e[i].k, strlen(e[i].k), e[i].v, strlen(e[i].v), e[i].kind);
    shmkv_close(db);
    return 0;
}

static void claim(shmkv_db *db, const char *k, const char *owner, uint64_t ttl_ms,
                  uint64_t *token)
{
    shmkv_lease l = {.owner = owner, .olen = owner ? strlen(owner) : 0, .ttl_ms = ttl_ms};
    shmkv_claim c;
    int rc = shmkv_claim_key(db, k, strlen(k), &l, &c, NULL, 0, NULL, NULL);
    if (rc)
        die("claim", rc);
    if (token)
        *token = c.token;
}

/* Claims of every state: job:01 held by "vu-3" for ten minutes, job:02
 * with no owner for the default 30 s, job:03 for 1 ms (run out by the time
 * anyone looks), job:04 released, job:05 completed and deleted, job:06
 * completed and kept, job:07 renewed to ten minutes; tokens 1001 to 1007
 * issued. */
static int claims_store(const char *path, int track)
{
    shmkv_db *db = open_store(path, 0, track, 4);
    char k[16], v[16];
    for (int i = 1; i <= 12; i++) {
        snprintf(k, sizeof k, "job:%02d", i);
        snprintf(v, sizeof v, "todo %d", i);
        set(db, k, strlen(k), v, strlen(v), SHMKV_KIND_STRING);
    }
    /* A store's first token is random; this one's tokens start at 1001, so
     * that the tests can name them. */
    shmkv_close(db);
    int fd = open(path, O_RDWR);
    uint64_t base = 1000;
    if (fd < 0 || pwrite(fd, &base, 8, offsetof(shmkv__hdr, claim_token)) != 8)
        die("token base", -errno);
    close(fd);
    db = open_store(path, 0, track, 4);
    uint64_t t4, t5, t6, t7;
    claim(db, "job:01", "vu-3", 600000, NULL);
    claim(db, "job:02", NULL, 0, NULL);
    claim(db, "job:03", "vu-\xff", 1, NULL);
    claim(db, "job:04", "vu-4", 600000, &t4);
    claim(db, "job:05", "vu-5", 600000, &t5);
    claim(db, "job:06", "vu-6", 600000, &t6);
    int rc;
    if ((rc = shmkv_claim_release(db, "job:04", 6, t4)) ||
        (rc = shmkv_claim_complete(db, "job:05", 6, t5, 1)) ||
        (rc = shmkv_claim_complete(db, "job:06", 6, t6, 0)))
        die("release/complete", rc);
    claim(db, "job:07", "vu-7", 1000, &t7);
    shmkv_lease ten = {.ttl_ms = 600000};
    shmkv_claim c;
    if ((rc = shmkv_claim_renew(db, "job:07", 6, t7, &ten, &c)))
        die("renew", rc);
    usleep(20000); /* job:03's lease runs out */
    shmkv_close(db);
    return 0;
}

/* shmkv_backup() of a disk store into dst. */
static int backup(const char *path, const char *dst, int concurrent)
{
    shmkv_db *db = open_store(path, 0, 0, 0);
    shmkv_backup_info bi;
    int rc = shmkv_backup(db, dst, concurrent ? SHMKV_BACKUP_CONCURRENT : 0, &bi);
    if (rc)
        die("backup", rc);
    printf("%" PRIu64 " entries\n", bi.entries);
    shmkv_close(db);
    return 0;
}

static int many(const char *path, long n, int track, uint32_t segs)
{
    shmkv_db *db = open_store(path, 0, track, segs);
    char k[32], v[64];
    for (long i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof k, "k:%08ld", i);
        int vl = snprintf(v, sizeof v, "{\"i\":%ld,\"pad\":\"%.*s\"}", i, (int)(i % 40),
                          "........................................");
        set(db, k, (size_t)kl, v, (size_t)vl, SHMKV_KIND_JSON);
    }
    for (long i = 0; i < n; i += 7) {
        int kl = snprintf(k, sizeof k, "k:%08ld", i);
        shmkv_delete(db, k, (size_t)kl, NULL);
    }
    shmkv_close(db);
    return 0;
}

/* Every kind of write the API has, including clear, large values (chunks
 * of their own), growing and shrinking values and an index rebuild. */
static int churn(const char *path, int track)
{
    shmkv_db *db = open_store(path, 0, track, 8);
    char k[32];
    static char big[3u << 20];
    memset(big, 'B', sizeof big);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 3000; i++) {
            int kl = snprintf(k, sizeof k, "c:%d:%05d", round, i);
            set(db, k, (size_t)kl, big, (size_t)(i * 37 % 2000), SHMKV_KIND_BYTES);
        }
        for (int i = 0; i < 3000; i += 3) {
            int kl = snprintf(k, sizeof k, "c:%d:%05d", round, i);
            set(db, k, (size_t)kl, big, (size_t)(i * 91 % 5000), SHMKV_KIND_STRING);
        }
        for (int i = 0; i < 3000; i += 2) {
            int kl = snprintf(k, sizeof k, "c:%d:%05d", round, i);
            shmkv_delete(db, k, (size_t)kl, NULL);
        }
        int64_t r;
        for (int i = 0; i < 200; i++)
            shmkv_incr(db, "ctr", 3, i, SHMKV_KIND_STRING, &r);
        set(db, "big", 3, big, sizeof big - (size_t)round * 4096, SHMKV_KIND_BYTES);
        int sw;
        shmkv_cas(db, "ctr", 3, NULL, 0, "1", 1, SHMKV_KIND_STRING, &sw);
        if (round == 1) {
            if (shmkv_clear(db))
                die("clear", 0);
        }
        if (shmkv_rebuild_index(db))
            die("rebuild", 0);
    }
    shmkv_close(db);
    return 0;
}

static int writer(const char *path, int seconds)
{
    shmkv_db *db = open_store(path, 0, -1, 0);
    time_t end = time(NULL) + seconds;
    unsigned x = (unsigned)getpid();
    char k[32], v[600];
    memset(v, 'v', sizeof v);
    printf("ready\n");
    fflush(stdout);
    /* Runs until SECONDS pass or a file named "<PATH>.stop" appears. */
    char stop[4096];
    snprintf(stop, sizeof stop, "%s.stop", path);
    while (time(NULL) < end && access(stop, F_OK) != 0) {
        for (int i = 0; i < 1000; i++) {
            x = x * 1103515245u + 12345u;
            int kl = snprintf(k, sizeof k, "w:%05u", (x >> 8) % 20000);
            unsigned op = (x >> 4) % 16;
            shmkv_lease l = {.owner = "writer", .olen = 6, .ttl_ms = 1 + (x >> 20) % 200};
            shmkv_claim c;
            if (op < 4) {
                shmkv_delete(db, k, (size_t)kl, NULL);
            } else if (op == 4) {
                /* claims too: some released, some left to run out */
                if (shmkv_claim_key(db, k, (size_t)kl, &l, &c, NULL, 0, NULL, NULL) == 0 &&
                    (x >> 28) % 2)
                    shmkv_claim_release(db, k, (size_t)kl, c.token);
            } else if (op == 5) {
                char kb[32];
                size_t klen;
                shmkv_claim_random(db, "w:", 2, &l, kb, sizeof kb, &klen, &c, NULL, 0, NULL,
                                   NULL);
            } else {
                set(db, k, (size_t)kl, v, (x >> 12) % sizeof v, SHMKV_KIND_BYTES);
            }
        }
    }
    shmkv_close(db);
    return 0;
}

static int hold(const char *path)
{
    shmkv_db *db = open_store(path, 0, -1, 0);
    printf("ready\n");
    fflush(stdout);
    char buf[16];
    while (fread(buf, 1, sizeof buf, stdin) > 0)
        ;
    shmkv_close(db);
    return 0;
}

static int stop(const char *path)
{
    shmkv_db *db = open_store(path, 0, 0, 1);
    t_hook_stop_at("set.before_publish", -1);
    set(db, "held", 4, "1", 1, SHMKV_KIND_JSON);
    shmkv_close(db);
    return 0;
}

/* ---- damage ---------------------------------------------------------------- */

static unsigned char *base;
static shmkv__hdr *H;

static void *P(uint64_t off)
{
    return base + off;
}

static shmkv__seg *seg(uint32_t i)
{
    return (shmkv__seg *)P(H->seg_off + (uint64_t)i * sizeof(shmkv__seg));
}

/* The first live slot of the store: segment, table and slot index. */
static bool first_live(uint32_t *si, shmkv__table **tb, uint64_t *slot)
{
    for (uint32_t i = 0; i < H->nseg; i++) {
        uint64_t t = atomic_load(&seg(i)->table);
        if (!t)
            continue;
        shmkv__table *T = P(t);
        for (uint64_t j = 0; j < T->cap; j++)
            if (SHMKV__SLOT_LIVE(atomic_load(&T->slot[j]))) {
                *si = i, *tb = T, *slot = j;
                return true;
            }
    }
    return false;
}

/* The entry of key k (found through its table), or NULL. */
static shmkv__entry *entry_of(const char *k, uint64_t *payload)
{
    size_t kl = strlen(k);
    for (uint32_t i = 0; i < H->nseg; i++) {
        uint64_t t = atomic_load(&seg(i)->table);
        if (!t)
            continue;
        shmkv__table *T = P(t);
        for (uint64_t j = 0; j < T->cap; j++) {
            uint64_t w = atomic_load(&T->slot[j]);
            if (!SHMKV__SLOT_LIVE(w))
                continue;
            shmkv__entry *e = P(SHMKV__SLOT_OFF(w));
            if (e->klen == kl && !memcmp(e->data, k, kl)) {
                *payload = SHMKV__SLOT_OFF(w);
                return e;
            }
        }
    }
    return NULL;
}

/* job:01's lease (claims_store), and its block. */
static shmkv__lease *lease_of_job1(shmkv__block **b)
{
    uint64_t off;
    shmkv__entry *e = entry_of("job:01", &off);
    if (!e)
        die("no job:01", 0);
    *b = shmkv__block_of(&(shmkv__map){ .base = base }, off);
    if (!((*b)->flags & SHMKV__BF_LEASE))
        die("job:01 is not claimed", 0);
    return P(off + shmkv__lease_at(e->klen, e->vlen));
}

/* Earliest claim end below a node, from its entries (and the children's
 * pads, already right). */
static uint64_t node_earliest(shmkv__bt_node *nd)
{
    uint64_t m = 0;
    for (uint32_t i = 0; i < nd->n; i++)
        m = shmkv__expiry_min(m, nd->leaf ? nd->e[i].child
                                          : ((shmkv__bt_node *)P(nd->e[i].child))->pad);
    return m;
}

/* Make the index count key k's claim as ending at expiry (0: count none),
 * consistently: its leaf entry, the claimed counts above it, and every pad
 * on the way. */
static void count_claim(shmkv__index *ix, const char *k, uint64_t expiry)
{
    size_t kl = strlen(k);
    shmkv__bt_node *path[40];
    uint32_t at[40];
    int d = 0;
    path[0] = P(ix->root);
    for (;;) {
        shmkv__bt_node *nd = path[d];
        uint32_t i = 0;
        if (nd->leaf) {
            while (i < nd->n) {
                shmkv__kblob *kb = P(nd->e[i].key);
                if (kb->klen == kl && !memcmp(kb->key, k, kl))
                    break;
                i++;
            }
            if (i == nd->n)
                die("key not in its leaf", 0);
            at[d] = i;
            break;
        }
        /* the last child whose smallest key is not above k */
        while (i + 1 < nd->n) {
            shmkv__kblob *kb = P(nd->e[i + 1].key);
            if (shmkv__keycmp(kb->key, kb->klen, k, kl) > 0)
                break;
            i++;
        }
        at[d] = i;
        path[d + 1] = P(nd->e[i].child);
        d++;
    }
    int64_t delta = (int64_t)(expiry != 0) - (int64_t)(path[d]->e[at[d]].child != 0);
    path[d]->e[at[d]].child = expiry;
    path[d]->e[at[d]].count = shmkv__bt_leaf_count(expiry);
    for (int l = d; l >= 0; l--) {
        if (l < d)
            path[l]->e[at[l]].count += (uint64_t)delta * SHMKV__BT_ONE_HELD;
        path[l]->pad = node_earliest(path[l]);
    }
}

static int corrupt(const char *path, const char *kind)
{
    int fd = open(path, O_RDWR);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        die(path, -errno);
    base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED)
        die("mmap", -errno);
    H = (shmkv__hdr *)base;
    uint32_t si;
    shmkv__table *T;
    uint64_t j;
    if (!first_live(&si, &T, &j))
        die("no live entry", 0);
    uint64_t w = atomic_load(&T->slot[j]);
    shmkv__entry *e = P(SHMKV__SLOT_OFF(w));
    shmkv__index *ix = P(H->index_off);
    shmkv__chunk *c0 = P(H->data_off);

    if (!strcmp(kind, "magic")) {
        H->magic[2] ^= 0x20;
    } else if (!strcmp(kind, "version")) {
        H->version = 7;
    } else if (!strcmp(kind, "nseg")) {
        H->nseg = 3;
    } else if (!strcmp(kind, "top")) {
        atomic_store(&H->top, (uint64_t)st.st_size + (1u << 20));
    } else if (!strcmp(kind, "entry-key")) {
        e->data[0] ^= 0x5a;
    } else if (!strcmp(kind, "entry-len")) {
        e->vlen = 0x7ffffff0u;
    } else if (!strcmp(kind, "slot-off")) {
        atomic_store(&T->slot[j], w + 8);
    } else if (!strcmp(kind, "slot-tag")) {
        atomic_store(&T->slot[j], w ^ (0x0101ull << 48));
    } else if (!strcmp(kind, "slot-doom")) {
        atomic_store(&T->slot[j], w | SHMKV__SLOT_DOOM);
    } else if (!strcmp(kind, "slot-wild")) {
        atomic_store(&T->slot[j], (w & ~0x0000ffffffffffffull) | 0x0000123456789ab0ull);
    } else if (!strcmp(kind, "slot-dup")) {
        /* Another slot of the table points at the same entry. */
        for (uint64_t k = 0; k < T->cap; k++)
            if (k != j && SHMKV__SLOT_LIVE(atomic_load(&T->slot[k]))) {
                atomic_store(&T->slot[k], w);
                break;
            }
    } else if (!strcmp(kind, "slot-empty")) {
        /* Empty a slot: the entry leaks and the count disagrees. */
        atomic_store(&T->slot[j], SHMKV__SLOT_EMPTY);
    } else if (!strcmp(kind, "slot-move")) {
        /* A live slot moved back into the empty slot before it: its home
         * (the slot it was in) is now empty, so no lookup reaches it. */
        bool moved = false;
        for (uint64_t k = 0; k < T->cap && !moved; k++) {
            uint64_t p = (k - 1) & (T->cap - 1), x = atomic_load(&T->slot[k]);
            if (SHMKV__SLOT_LIVE(x) && atomic_load(&T->slot[p]) == SHMKV__SLOT_EMPTY) {
                atomic_store(&T->slot[p], x);
                atomic_store(&T->slot[k], SHMKV__SLOT_EMPTY);
                moved = true;
            }
        }
        if (!moved)
            die("no live slot after an empty one", 0);
    } else if (!strcmp(kind, "count")) {
        atomic_fetch_add(&seg(si)->count, 3);
    } else if (!strcmp(kind, "table")) {
        atomic_store(&seg(si)->table, atomic_load(&seg(si)->table) + 24);
    } else if (!strcmp(kind, "chunk-magic")) {
        c0->magic ^= 0xffu;
    } else if (!strcmp(kind, "chunk-used")) {
        c0->used = c0->size + 4096;
    } else if (!strcmp(kind, "chunk-owner")) {
        c0->owner = 77777;
    } else if (!strcmp(kind, "block-size")) {
        shmkv__block *b = shmkv__block_of(&(shmkv__map){ .base = base }, SHMKV__SLOT_OFF(w));
        b->size = 0xfff0u;
    } else if (!strcmp(kind, "used-bytes")) {
        seg(si)->alloc.used_bytes += 16;
    } else if (!strcmp(kind, "freelist-loop") || !strcmp(kind, "freelist-live")) {
        shmkv__alloc *a = NULL;
        uint32_t cls = 0;
        for (uint32_t i = 0; i < H->nseg && !a; i++)
            for (uint32_t k = 0; k < SHMKV__NCLASS && !a; k++)
                if (seg(i)->alloc.free_head[k])
                    a = &seg(i)->alloc, cls = k;
        if (!a)
            die("no free block", 0);
        uint64_t p = a->free_head[cls];
        if (!strcmp(kind, "freelist-loop"))
            *(uint64_t *)P(p) = p; /* the block links to itself */
        else
            ((shmkv__block *)P(p - 8))->flags = SHMKV__BF_USED;
    } else if (!strcmp(kind, "index-count")) {
        shmkv__bt_node *r = P(ix->root);
        if (r->leaf)
            r->n--;
        else
            r->e[0].count += 1;
    } else if (!strcmp(kind, "index-node")) {
        /* Garbage over the middle of the root node. */
        shmkv__bt_node *r = P(ix->root);
        memset((unsigned char *)r + 24, 0xa5, 64);
    } else if (!strcmp(kind, "index-cycle")) {
        shmkv__bt_node *r = P(ix->root);
        if (r->leaf)
            die("root is a leaf", 0);
        r->e[r->n - 1].child = ix->root;
    } else if (!strcmp(kind, "index-blob")) {
        shmkv__bt_node *r = P(ix->root);
        while (!r->leaf)
            r = P(r->e[0].child);
        shmkv__kblob *kb = P(r->e[0].key);
        kb->key[kb->klen - 1] ^= 0x01;
    } else if (!strcmp(kind, "karr")) {
        shmkv__karr *ka = P(ix->karr);
        uint64_t t = ka->off[0];
        ka->off[0] = ka->off[1];
        ka->off[1] = t;
    } else if (!strcmp(kind, "index-n")) {
        ix->n += 1;
    } else if (!strcmp(kind, "index-pad")) {
        /* an earliest claim end in a tree that counts no claim */
        ((shmkv__bt_node *)P(ix->root))->pad = 12345;
    } else if (!strcmp(kind, "index-held")) {
        shmkv__bt_node *r = P(ix->root);
        if (r->leaf)
            die("root is a leaf", 0);
        r->e[0].count += SHMKV__BT_ONE_HELD;
    } else if (!strcmp(kind, "leaf-held")) {
        /* a leaf entry counted claimed without a claim end */
        shmkv__bt_node *r = P(ix->root);
        while (!r->leaf)
            r = P(r->e[0].child);
        r->e[0].count |= SHMKV__BT_ONE_HELD;
    } else if (!strcmp(kind, "leaf-child")) {
        /* the index counts a claim on a key whose entry has no lease: the
         * leaf, its ancestors' claimed counts and their pads agree */
        shmkv__bt_node *path[40];
        int d = 0;
        path[d] = P(ix->root);
        while (!path[d]->leaf) {
            path[d + 1] = P(path[d]->e[0].child);
            d++;
        }
        path[d]->e[0].child = 999;
        path[d]->e[0].count = shmkv__bt_leaf_count(999);
        for (int k = 0; k <= d; k++) {
            path[k]->pad = shmkv__expiry_min(path[k]->pad, 999);
            if (k < d)
                path[k]->e[0].count += SHMKV__BT_ONE_HELD;
        }
    } else if (!strcmp(kind, "lease-owner")) {
        shmkv__block *b;
        lease_of_job1(&b)->olen = SHMKV_OWNER_MAX + 44;
    } else if (!strcmp(kind, "lease-past")) {
        shmkv__block *b;
        lease_of_job1(&b)->olen = SHMKV_OWNER_MAX; /* far past a small block */
    } else if (!strcmp(kind, "lease-token")) {
        shmkv__block *b;
        lease_of_job1(&b)->token = atomic_load(&H->claim_token) + 1;
    } else if (!strcmp(kind, "lease-token0")) {
        shmkv__block *b;
        lease_of_job1(&b)->token = 0;
    } else if (!strcmp(kind, "lease-drop")) {
        /* the flag gone: the index counts a claim the entry does not have */
        shmkv__block *b;
        lease_of_job1(&b);
        b->flags &= (uint8_t)~SHMKV__BF_LEASE;
    } else if (!strcmp(kind, "lease-expiry")) {
        shmkv__block *b;
        lease_of_job1(&b)->expiry -= 1000;
    } else if (!strcmp(kind, "lease-high")) {
        shmkv__block *b;
        lease_of_job1(&b)->expiry = atomic_load(&H->lease_high) + 1;
    } else if (!strcmp(kind, "lease-uncounted")) {
        count_claim(ix, "job:01", 0);
    } else if (!strcmp(kind, "boot")) {
        /* as if written on another boot: every lease has ended */
        memcpy(H->boot_id, "00000000-0000-4000-8000-000000000000", 36);
    } else if (!strcmp(kind, "lease-flag")) {
        /* a lease flag on an entry that has none: past its block, or 0s */
        shmkv__block *b = shmkv__block_of(&(shmkv__map){ .base = base }, SHMKV__SLOT_OFF(w));
        b->flags |= SHMKV__BF_LEASE;
    } else {
        fprintf(stderr, "dump-mkstore: unknown damage '%s'\n", kind);
        return 2;
    }
    munmap(base, (size_t)st.st_size);
    close(fd);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "golden"))
        return golden(argv[2], argc > 3 && !strcmp(argv[3], "memory"));
    if (argc == 5 && !strcmp(argv[1], "backup"))
        return backup(argv[2], argv[3], atoi(argv[4]));
    if (argc == 3 && !strcmp(argv[1], "export"))
        return export_store(argv[2]);
    if (argc == 6 && !strcmp(argv[1], "many"))
        return many(argv[2], atol(argv[3]), atoi(argv[4]), (uint32_t)atoi(argv[5]));
    if (argc == 4 && !strcmp(argv[1], "churn"))
        return churn(argv[2], atoi(argv[3]));
    if (argc == 4 && !strcmp(argv[1], "writer"))
        return writer(argv[2], atoi(argv[3]));
    if (argc == 3 && !strcmp(argv[1], "hold"))
        return hold(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "stop"))
        return stop(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "claims"))
        return claims_store(argv[2], atoi(argv[3]));
    if (argc == 4 && !strcmp(argv[1], "corrupt"))
        return corrupt(argv[2], argv[3]);
    fprintf(stderr, "usage: dump-mkstore golden|many|churn|writer|hold|stop|corrupt ...\n");
    return 2;
}
