/*
 * test_limits.c - key counts past the old ceilings (issue 10, item 3).
 *
 * A tracked store used to stop at exactly 2^24 keys, and a store with one
 * segment at 3/4 of 2^24, because the key array's or the table's next
 * doubling did not fit the largest size class; both then refused a 1-byte
 * value with "value is larger than 64 MiB". The design promises 2^32 - 1
 * keys in the index, so these tests go past both ceilings with tens of
 * millions of keys in a memory store (a few GiB of /dev/shm, removed by
 * t_teardown or the janitor).
 *
 * They are slow (tens of seconds plain), so they use the C API directly,
 * 4-byte keys and 1-byte values, and only run in the plain build:
 * tests/meson.build leaves this executable out of sanitizer builds, where
 * the same inserts take many minutes. The large-block path they rely on is
 * also exercised at small sizes, under every build, by test_space.c.
 */
#include "harness.h"

TestSuite(limits, .init = t_setup, .fini = t_teardown, .timeout = 600);

static void key_of(uint32_t i, unsigned char k[4])
{
    k[0] = (unsigned char)(i >> 24);
    k[1] = (unsigned char)(i >> 16);
    k[2] = (unsigned char)(i >> 8);
    k[3] = (unsigned char)i;
}

/* Insert keys 0..n-1; every set must succeed. */
static void fill(shmkv_db *db, uint32_t n)
{
    unsigned char k[4], v = 'v';
    for (uint32_t i = 0; i < n; i++) {
        key_of(i, k);
        int rc = shmkv_set(db, k, 4, &v, 1, SHMKV_KIND_BYTES);
        if (rc)
            cr_assert_fail("set of key %" PRIu32 " of %" PRIu32 " (1-byte value) failed: %s (%d)", i,
                     n, shmkv_strerror(rc), rc);
    }
    cr_assert_eq(shmkv_size(db), n);
}

/* Spot checks that the keys on both sides of the old ceiling read back. */
static void check_some(shmkv_db *db, uint32_t n, uint32_t around)
{
    uint32_t probe[] = {0, 1, around - 2, around - 1, around, around + 1, n / 2, n - 2, n - 1};
    for (size_t j = 0; j < sizeof probe / sizeof probe[0]; j++) {
        unsigned char k[4], v = 0;
        size_t vl = 0;
        key_of(probe[j], k);
        int rc = shmkv_get(db, k, 4, &v, 1, &vl, NULL);
        cr_assert_eq(rc, 0, "get of key %" PRIu32 ": %s", probe[j], shmkv_strerror(rc));
        cr_assert(vl == 1 && v == 'v', "key %" PRIu32 " reads back wrong", probe[j]);
    }
    unsigned char k[4];
    key_of(n, k);
    cr_assert_eq(shmkv_exists(db, k, 4), 0, "a key never written exists");
}

/* 2^24 was the tracked ceiling: the key array's doubling from 2^24 to 2^25
 * slots (256 MiB) did not fit a size class. */
Test(limits, tracked_store_takes_more_than_2p24_keys)
{
    const uint32_t ceiling = 1u << 24, n = ceiling + (1u << 16);
    shmkv_options o = {.backend = SHMKV_BACKEND_MEMORY, .track_keys = SHMKV_TRACK_ON};
    shmkv_db *db = NULL;
    int rc = shmkv_open(t_name("lim-tracked"), &o, &db);
    cr_assert_eq(rc, 0, "open: %s", shmkv_strerror(rc));
    fill(db, n);
    check_some(db, n, ceiling);
    /* The index must know every key: rank/select over all of them. */
    unsigned char k[4], first[4];
    size_t kl = 0;
    cr_assert_eq(shmkv_random_key(db, NULL, 0, k, sizeof k, &kl), 0);
    cr_assert_eq(kl, 4);
    key_of(ceiling, first);
    /* Keys 0x01000000.. are exactly the ones past the old ceiling. */
    cr_assert_eq(shmkv_random_key(db, first, 1, k, sizeof k, &kl), 0,
                 "no key past the old ceiling in the index");
    cr_assert(kl == 4 && k[0] == 1);
    shmkv_close(db);
}

/* With one segment, the table's doubling past 2^24 slots was refused at
 * 3/4 of 2^24 keys. */
Test(limits, one_segment_takes_more_than_12582912_keys)
{
    const uint32_t ceiling = 12582912u, n = ceiling + (1u << 16);
    shmkv_options o = {.backend = SHMKV_BACKEND_MEMORY, .segments = 1,
                       .track_keys = SHMKV_TRACK_OFF};
    shmkv_db *db = NULL;
    int rc = shmkv_open(t_name("lim-seg1"), &o, &db);
    cr_assert_eq(rc, 0, "open: %s", shmkv_strerror(rc));
    fill(db, n);
    check_some(db, n, ceiling);
    shmkv_close(db);
}
