/*
 * baseline.h - the reference shmkv-bench measures libshmkv against.
 *
 * One open-addressing hash table (linear probing, inline keys and values,
 * one 64-byte slot per key) in a MAP_SHARED anonymous mapping, guarded by a
 * single PTHREAD_PROCESS_SHARED | PTHREAD_MUTEX_ROBUST mutex. Processes
 * forked after bl_create() share it. It does the least a shared-memory
 * store must do per operation: hash, lock, probe, copy, unlock.
 */
#ifndef SHMKV_BENCH_BASELINE_H
#define SHMKV_BENCH_BASELINE_H

#include <stddef.h>
#include <stdint.h>

#define BL_KEY_MAX 24u
#define BL_VAL_MAX 32u

#define BL_OK        0
#define BL_NOTFOUND  (-1)
#define BL_TOOBIG    (-2) /* key or value larger than a slot holds */
#define BL_FULL      (-3)
#define BL_LOCK      (-4)

typedef struct bl_table bl_table;

/* A table with room for nkeys keys (load factor at most 1/2). NULL on error. */
bl_table *bl_create(uint64_t nkeys);
void bl_destroy(bl_table *t);

/* Insert or overwrite. */
int bl_set(bl_table *t, const void *key, size_t klen, const void *val, size_t vlen);

/* Copy a value out; *vlen receives its size. */
int bl_get(bl_table *t, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen);

uint64_t bl_count(const bl_table *t);

#endif /* SHMKV_BENCH_BASELINE_H */
