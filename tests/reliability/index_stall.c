/*
 * index_stall.c - how long everybody waits after a process is killed inside
 * a key-index update.
 *
 *   index-stall [KEYS [ROUNDS]]     defaults: 1000000 keys, 5 rounds
 *
 * Fills a tracked memory store with KEYS keys, then, each round, forks a
 * child that inserts one more key and SIGKILLs itself at the named point
 * index.insert.mid (with the index lock and its segment lock held). The
 * parent then times the next operation that needs the index lock (a set of
 * a new key): that call carries the repair, and every other process would
 * wait for it. Prints the time of each repair and of an ordinary set.
 * A measuring tool, not a test: it asserts only that the store works.
 */
#include "harness.h"

#include "internal.h"

static void ok(int rc, const char *what)
{
    if (rc) {
        fprintf(stderr, "index-stall: %s: %s\n", what, shmkv_strerror(rc));
        exit(1);
    }
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    char name[64], k[48];
    snprintf(name, sizeof name, "indexstall.%d", (int)getpid());
    shmkv_options o;
    memset(&o, 0, sizeof o);
    o.backend = SHMKV_BACKEND_MEMORY;
    o.track_keys = SHMKV_TRACK_ON;
    shmkv_db *db = NULL;
    ok(shmkv_open(name, &o, &db), "open");
    uint64_t t0 = t_now_ns();
    for (uint64_t i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof k, "key:%016" PRIx64, t_mix(i));
        ok(shmkv_set(db, k, (size_t)kl, "v", 1, SHMKV_KIND_STRING), "fill");
    }
    printf("filled %" PRIu64 " keys in %.2f s\n", n, (double)(t_now_ns() - t0) / 1e9);
    double worst = 0, sum = 0;
    for (int r = 0; r < rounds; r++) {
        pid_t p = t_fork_raw();
        if (p == 0) {
            t_hook_kill_at("index.insert.mid", 0);
            int kl = snprintf(k, sizeof k, "dead:%d", r);
            shmkv_set(db, k, (size_t)kl, "v", 1, SHMKV_KIND_STRING);
            _exit(42);
        }
        int st = 0;
        if (p < 0 || t_reap(p, &st) != 0 || !WIFSIGNALED(st)) {
            fprintf(stderr, "index-stall: the child did not die at index.insert.mid\n");
            return 1;
        }
        int kl = snprintf(k, sizeof k, "next:%d", r);
        uint64_t a = t_now_ns();
        ok(shmkv_set(db, k, (size_t)kl, "v", 1, SHMKV_KIND_STRING), "set after the kill");
        double ms = (double)(t_now_ns() - a) / 1e6;
        a = t_now_ns();
        kl = snprintf(k, sizeof k, "plain:%d", r);
        ok(shmkv_set(db, k, (size_t)kl, "v", 1, SHMKV_KIND_STRING), "set");
        double plain = (double)(t_now_ns() - a) / 1e6;
        printf("round %d: the set after the kill took %.3f ms (repair included); the next set %.3f ms\n",
               r, ms, plain);
        sum += ms;
        if (ms > worst)
            worst = ms;
    }
    printf("%" PRIu64 " keys: repair stall mean %.3f ms, worst %.3f ms over %d kills; size %" PRIu64
           "\n", n, sum / rounds, worst, rounds, shmkv_size(db));
    shmkv_close(db);
    shmkv_memory_unlink(name);
    return 0;
}
