/*
 * test_support.c - sanitizer runtime hooks linked into every test
 * executable (see meson.build). Not a test of its own.
 */
#include <stddef.h>

#if defined(__SANITIZE_THREAD__)
#define TS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TS_TSAN 1
#endif
#endif

#if defined(__SANITIZE_ADDRESS__)
#define TS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TS_ASAN 1
#endif
#endif

#ifdef TS_ASAN
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

#ifdef TS_TSAN
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

#ifdef TS_TSAN
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

typedef int test_support_nonempty;
