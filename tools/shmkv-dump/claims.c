/*
 * claims.c - leases as shmkv-dump shows them: the store's lease clock, and
 * a claim in words or as JSON members.
 *
 * The lease clock is CLOCK_BOOTTIME plus the header's lease_base. It runs
 * only on the boot the header names (boot_id): a store written on an
 * earlier boot has no live lease left, whatever its expiries say, and its
 * next opener moves the clock on. The tool never writes, so it tells that
 * case apart by comparing boot ids instead.
 */
#include "dump.h"

#include <fcntl.h>
#include <inttypes.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_MS UINT64_C(1000000)

/* This boot's id, without the newline; "" when it cannot be read. */
static void this_boot(char *buf, size_t n)
{
    buf[0] = 0;
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t r = read(fd, buf, n - 1);
    close(fd);
    if (r <= 0)
        return;
    buf[r] = 0;
    while (r > 0 && (buf[r - 1] == '\n' || buf[r - 1] == ' '))
        buf[--r] = 0;
}

void lclock_init(lclock *c, const shmkv__hdr *h)
{
    char boot[64];
    this_boot(boot, sizeof boot);
    size_t hl = strnlen(h->boot_id, sizeof h->boot_id);
    /* An unreadable boot id cannot tell: take the store's clock as ours. */
    c->same_boot = !boot[0] || (hl == strlen(boot) && memcmp(h->boot_id, boot, hl) == 0);
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    c->now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + h->lease_base;
}

bool lclock_live(const lclock *c, uint64_t expiry)
{
    return c->same_boot && expiry > c->now;
}

/* Signed milliseconds from now to expiry (negative: ended that long ago). */
static int64_t ms_left(const lclock *c, uint64_t expiry)
{
    if (expiry >= c->now)
        return (int64_t)((expiry - c->now) / NS_PER_MS);
    uint64_t ago = (c->now - expiry) / NS_PER_MS;
    return ago > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)ago;
}

void put_claim_text(FILE *f, const shmkv__lease *l, const unsigned char *owner,
                    const lclock *c)
{
    fprintf(f, "claim token %" PRIu64, l->token);
    if (l->olen) {
        fputs(", owner \"", f);
        put_text(f, owner, l->olen, false);
        fputc('"', f);
    }
    if (!c->same_boot) {
        fputs(", ended (a lease of an earlier boot)", f);
    } else if (lclock_live(c, l->expiry)) {
        uint64_t ms = (l->expiry - c->now) / NS_PER_MS;
        fprintf(f, ", %" PRIu64 ".%03" PRIu64 " s left", ms / 1000, ms % 1000);
    } else {
        fprintf(f, ", expired %" PRIu64 " s ago", (uint64_t)((c->now - l->expiry) / 1000000000ull));
    }
}

void put_claim_json(FILE *f, const shmkv__lease *l, const unsigned char *owner,
                    const lclock *c)
{
    fprintf(f, "\"claim\":{\"token\":%" PRIu64 ",\"owner\":", l->token);
    if (!l->olen)
        fputs("null", f);
    else if (utf8_valid(owner, l->olen))
        put_jstr(f, owner, l->olen);
    else {
        fputs("null,\"owner_hex\":\"", f);
        put_hex(f, owner, l->olen);
        fputc('"', f);
    }
    fprintf(f, ",\"live\":%s,\"ms_left\":", lclock_live(c, l->expiry) ? "true" : "false");
    if (c->same_boot)
        fprintf(f, "%" PRId64, ms_left(c, l->expiry));
    else
        fputs("null,\"earlier_boot\":true", f);
    fputc('}', f);
}
