/*
 * tokens.c - producer/consumer across separate processes on one store.
 *
 *   shmkv-tokens produce NAME N      put N tokens "token:<i>" into memory store NAME
 *   shmkv-tokens consume NAME ID     take tokens at random until "done" is set and none are left
 *   shmkv-tokens report NAME         print what each consumer took
 *
 * Each consumer takes a token with random_key + compare_and_delete, so a
 * token is taken exactly once however many consumers race for it.
 */
#include "shmkv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static shmkv_db *open_store(const char *name)
{
    shmkv_options o = {.backend = SHMKV_BACKEND_MEMORY, .track_keys = SHMKV_TRACK_ON};
    shmkv_db *db;
    int rc = shmkv_open(name, &o, &db);
    if (rc) {
        fprintf(stderr, "open %s: %s\n", name, shmkv_strerror(rc));
        exit(2);
    }
    return db;
}

static void check(int rc, const char *what)
{
    if (rc) {
        fprintf(stderr, "%s: %s\n", what, shmkv_strerror(rc));
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s produce NAME N | consume NAME ID | report NAME\n", argv[0]);
        return 2;
    }
    shmkv_db *db = open_store(argv[2]);
    char key[64], val[64];
    if (strcmp(argv[1], "produce") == 0 && argc == 4) {
        long n = atol(argv[3]);
        for (long i = 0; i < n; i++) {
            int kl = snprintf(key, sizeof key, "token:%06ld", i);
            check(shmkv_set(db, key, (size_t)kl, "fresh", 5, SHMKV_KIND_STRING), "set");
        }
        check(shmkv_set(db, "done", 4, "1", 1, SHMKV_KIND_JSON), "set done");
        printf("producer: put %ld tokens\n", n);
    } else if (strcmp(argv[1], "consume") == 0 && argc == 4) {
        long took = 0;
        for (;;) {
            size_t kl;
            int rc = shmkv_random_key(db, "token:", 6, key, sizeof key - 1, &kl);
            if (rc == SHMKV_ENOTFOUND) {
                if (shmkv_exists(db, "done", 4) == 1 &&
                    shmkv_random_key(db, "token:", 6, key, sizeof key, &kl) == SHMKV_ENOTFOUND)
                    break;
                struct timespec ts = {0, 1000000};
                nanosleep(&ts, NULL);
                continue;
            }
            check(rc, "random_key");
            int deleted;
            check(shmkv_compare_and_delete(db, key, kl, "fresh", 5, &deleted), "take");
            if (!deleted)
                continue; /* another consumer won this one */
            took++;
            int vl = snprintf(val, sizeof val, "taken:%s:%.*s", argv[3], (int)kl, key);
            check(shmkv_set(db, val, (size_t)vl, "", 0, SHMKV_KIND_STRING), "record");
            int64_t total;
            check(shmkv_incr(db, "taken", 5, 1, SHMKV_KIND_JSON, &total), "count");
        }
        printf("consumer %s: took %ld tokens\n", argv[3], took);
    } else if (strcmp(argv[1], "report") == 0) {
        size_t vl;
        int rc = shmkv_get(db, "taken", 5, val, sizeof val - 1, &vl, NULL);
        printf("report: %llu keys in store, tokens taken: %.*s\n",
               (unsigned long long)shmkv_size(db), rc ? 1 : (int)vl, rc ? "0" : val);
    } else {
        fprintf(stderr, "unknown command\n");
        return 2;
    }
    shmkv_close(db);
    return 0;
}
