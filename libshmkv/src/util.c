/*
 * util.c - the bottom layer: key hashing, the thread-local random
 * generator, the monotonic clock, a growable buffer and the test hook.
 * Nothing here knows the region's structures.
 */
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t fmix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* Keys are short (tens of bytes), so a word-at-a-time multiply-xor loop
 * with a strong final mix is both fast and good enough: the table only
 * needs its low bits, segments and tags spread. The hash is part of the
 * format (slot tags, segment choice), so changing it needs a new version. */
/* The last 1..7 bytes as a little-endian word, zero-extended - the value a
 * memcpy into a zeroed word gives, but with fixed-size loads: a memcpy of
 * run-time length compiles to a byte loop and a store-forwarding stall,
 * which cost a fifth of a whole get. total is the key's full length, so a
 * key of 8 bytes or more can load the 8 bytes ending at its end. */
static inline uint64_t tail_word(const unsigned char *p, size_t len, size_t total)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t w;
    if (total >= 8) {
        memcpy(&w, p + len - 8, 8);
        return w >> (8 * (8 - len));
    }
    if (len >= 4) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + len - 4, 4);
        return lo | ((uint64_t)hi << (8 * (len - 4)));
    }
    return (uint64_t)p[0] | ((uint64_t)p[len / 2] << (8 * (len / 2))) |
           ((uint64_t)p[len - 1] << (8 * (len - 1)));
#else
    (void)total;
    uint64_t w = 0;
    memcpy(&w, p, len);
    return w;
#endif
}

uint64_t shmkv__hash(const void *key, size_t len)
{
    const unsigned char *p = key;
    const size_t total = len;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ ((uint64_t)len * 0xc2b2ae3d27d4eb4full);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x9fb21c651e98df25ull;
        h ^= h >> 29;
        p += 8;
        len -= 8;
    }
    if (len) {
        h = (h ^ tail_word(p, len, total)) * 0x9fb21c651e98df25ull;
        h ^= h >> 29;
    }
    return fmix64(h);
}

/* splitmix64 per thread. A forked child would otherwise replay its
 * parent's sequence, so the atfork handler reseeds it. */
static _Thread_local uint64_t rng_state;
static _Thread_local bool rng_seeded;
static pthread_once_t rng_once = PTHREAD_ONCE_INIT;

static void rng_forget(void) { rng_seeded = false; }
static void rng_install(void) { pthread_atfork(NULL, NULL, rng_forget); }

static void rng_seed(void)
{
    uint64_t s = 0;
    pthread_once(&rng_once, rng_install);
    if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)getpid()
            ^ (uint64_t)(uintptr_t)&s;
    }
    rng_state = s;
    rng_seeded = true;
}

static inline uint64_t rng_next(void)
{
    if (!rng_seeded)
        rng_seed();
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Multiply-shift with rejection of the biased low range: exactly uniform. */
uint64_t shmkv__rand_below(uint64_t n)
{
    __extension__ typedef unsigned __int128 u128;
    u128 m = (u128)rng_next() * n;
    uint64_t lo = (uint64_t)m;
    if (lo < n) {
        uint64_t t = (0 - n) % n;
        while (lo < t) {
            m = (u128)rng_next() * n;
            lo = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

void (*shmkv__test_hook)(const char *point);

uint64_t shmkv__mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t shmkv__boot_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static char boot_id[40];
static pthread_once_t boot_id_once = PTHREAD_ONCE_INIT;

static void boot_id_read(void)
{
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (f) {
        if (!fgets(boot_id, sizeof boot_id, f))
            boot_id[0] = 0;
        fclose(f);
    }
    boot_id[strcspn(boot_id, "\n")] = 0;
}

const char *shmkv__boot_id(void)
{
    pthread_once(&boot_id_once, boot_id_read);
    return boot_id;
}

int shmkv__buf_reserve(shmkv__buf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}
