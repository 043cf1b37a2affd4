/*
 * dump.h - shared declarations of shmkv-dump, the read-only inspector.
 *
 * The tool never attaches to a store and never writes to it: it opens the
 * file O_RDONLY, validates the header with pread, and reads the region
 * through a "view" - either a PROT_READ mapping or a private copy. Every
 * byte of the view is untrusted: all reads go through the bounds-checked
 * accessors below, and every loop over region data is bounded.
 *
 * The format's structures and validators come from the library's
 * format.h; the tool uses nothing else of the library but its public API.
 */
#ifndef SHMKV_DUMP_H
#define SHMKV_DUMP_H

#include "format.h"
#include "shmkv.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>

/* Exit statuses (documented in docs/tools.md and --help). */
#define EXIT_SOUND    0 /* success; --check: sound */
#define EXIT_PROBLEMS 1 /* --check found problems; --get: no such key;
                           a listing had to skip damaged entries */
#define EXIT_USAGE    2 /* bad usage, cannot open, not a store, incompatible */
#define EXIT_RUNTIME  3 /* out of memory, the store shrank while being read */

/* ---- bounded view of a region --------------------------------------- */

typedef shmkv__view view;

/* Pointer to [off, off+n) or NULL when any of it lies outside the view. */
static inline const void *vptr(const view *v, uint64_t off, uint64_t n)
{
    return shmkv__view_at(v, off, n);
}

static inline bool vu64(const view *v, uint64_t off, uint64_t *out)
{
    return shmkv__view_u64(v, off, out);
}

static inline bool vu32(const view *v, uint64_t off, uint32_t *out)
{
    return shmkv__view_u32(v, off, out);
}

static inline bool vcopy(const view *v, uint64_t off, void *dst, uint64_t n)
{
    return shmkv__view_copy(v, off, dst, n);
}

/* ---- an opened store ------------------------------------------------- */

typedef struct store {
    char label[4096 + 16];  /* what the user named: path, or "memory:NAME" */
    char path[4096 + 16];   /* what was opened */
    int fd;
    int found_backend;      /* SHMKV_BACKEND_* by how it was named */
    struct stat st;
    shmkv__hdr hdr;         /* header as read by pread at open */
    bool hdr_ok;            /* identification fields valid */
    unsigned char *map;     /* PROT_READ mapping, or NULL */
    uint64_t maplen;
    view v;                 /* the view the modes read */
    char *err;              /* why the header was refused (when !hdr_ok) */
    char msg[1024];         /* the last error printed (for --json) */
} store;

/* Open without attaching. Returns 0, or EXIT_USAGE with a message printed
 * (or stored in s->err when the magic matched but the header is damaged:
 * check mode then reports it as a problem). */
int store_open(store *s, const char *where, bool memory);
/* Map [0, min(top, file size)). Returns 0 or EXIT_USAGE/EXIT_RUNTIME. */
int store_map(store *s);
void store_close(store *s);
/* Map again when the region grew since it was mapped; true if it did. */
bool store_remap(store *s);
/* Re-read the header into *h with pread. */
bool store_read_hdr(const store *s, shmkv__hdr *h);
/* Private copy of the region, from a fresh header: *out is malloc'd. */
int store_snapshot(const store *s, view *out, shmkv__hdr *h, uint64_t *file_len);
/* Processes in the attach table that still run. */
uint32_t store_live_procs(const shmkv__hdr *h);
/* True while some process has the store open (its attach lock, or a live
 * pid in the attach table): reads may then see a torn moment. */
bool store_attached(const store *s);
bool pid_alive(int32_t pid);

/* Header checks shared by open and --check: writes a reason into buf and
 * returns false when the region cannot be interpreted at all. */
bool hdr_identify(const shmkv__hdr *h, uint64_t file_len, char *buf, size_t n);

/* ---- region walk (scan.c) ------------------------------------------- */

/* What references a block (set while checking). */
enum {
    REF_NONE = 0,
    REF_ENTRY,
    REF_TABLE,
    REF_NODE,
    REF_BLOB,
    REF_KARR,
    REF_FREE,
    REF_ULOG,
};
const char *ref_name(int ref);

typedef struct blk {
    uint64_t off;   /* block header offset */
    uint64_t size;  /* bytes, header included (a big block: the chunk's rest) */
    uint32_t owner;
    uint8_t cls;
    uint8_t flags;
    uint16_t kind;
    uint8_t ref;    /* REF_* */
    uint8_t aux;    /* check: seen in the key array */
    uint32_t chunk; /* index into scan.c */
} blk;

typedef struct chk {
    uint64_t off, size, used, next;
    uint32_t owner;
    uint64_t first, nblk; /* blocks [first, first+nblk) of scan.b */
    bool blocks_ok;       /* the block walk reached used exactly */
    uint8_t spare_seen;   /* times met on the owner's spare list */
    uint64_t live_bytes, free_bytes;
} chk;

typedef struct scan {
    chk *c;
    size_t nc, capc;
    blk *b;
    size_t nb, capb;
    bool tiled;     /* chunks tile [data_off, top) exactly */
    uint64_t end;   /* where the chunk walk stopped */
} scan;

struct report;
/* Walk chunks and blocks; problems go to rep (may be NULL). Returns 0 or
 * -ENOMEM. */
int scan_region(const view *v, const shmkv__hdr *h, scan *sc, struct report *rep);
void scan_free(scan *sc);
/* Index of the block whose payload starts at payload, or -1. */
long scan_find(const scan *sc, uint64_t payload);
/* Index of the chunk that contains off, or -1. */
long scan_chunk_of(const scan *sc, uint64_t off);
uint32_t max_class(void);

/* ---- problems ------------------------------------------------------- */

typedef struct report {
    char **prob;
    size_t nprob, capprob;
    uint64_t prob_total; /* including ones not kept */
    char **warn;
    size_t nwarn, capwarn;
    uint64_t warn_total;
    /* Crash leftovers that the library's own repair fixes (a dead lock
     * owner's half-done work, an unclean store's open-time repair): not
     * problems, but listed so that the user knows what will happen. */
    char **pend;
    size_t npend, cappend;
    uint64_t pend_total;
    bool oom;
} report;

void prob(report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void warn(report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pend(report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void report_free(report *r);

/* ---- modes ------------------------------------------------------------ */

typedef struct opts {
    bool json;
    const unsigned char *prefix;
    size_t plen;
    uint64_t limit;
    const unsigned char *key;
    size_t klen;
    int retries;
} opts;

int mode_summary(store *s, const opts *o);
int mode_keys(store *s, const opts *o, bool values);
int mode_get(store *s, const opts *o);
int mode_check(store *s, const opts *o);
int mode_stats(store *s, const opts *o);
/* --export jsonl|csv (export.c); cols: CSV columns, comma-separated. */
int mode_export(store *s, const opts *o, bool csv, const char *cols);

typedef int (*keys_fn)(void *ctx, const unsigned char *k, uint32_t klen,
                       const unsigned char *v, uint32_t vlen, uint16_t kind);
int keys_each(store *s, const opts *o, keys_fn fn, void *ctx, uint64_t *skipped);

/* ---- entries (keys.c) ------------------------------------------------- */

typedef struct lclock lclock;

typedef struct ent {
    uint64_t off;   /* entry payload offset */
    uint64_t hash;
    const unsigned char *key;
    uint32_t klen, vlen;
    uint16_t kind;
    uint8_t flags;  /* the block's: SHMKV__BF_LEASE when it carries a lease */
    uint64_t bytes; /* the block's size, header included */
    uint32_t seg;
    uint64_t slot;
    bool leased;    /* check: a sound lease, ending at expiry */
    uint64_t expiry, token;
} ent;

int ent_cmp(const void *a, const void *b);
/* Validate a block header at payload - 8 (size, class, inside the view). */
/* *bytes receives the block's size, header included: the class size, or
 * for a big block (alone in its chunk) the rest of the chunk. */
bool block_hdr_read(const view *v, uint64_t payload, shmkv__block *b, uint64_t *bytes,
                    char *why, size_t n);
/* Validate a table block and return its capacity. */
bool table_read(const view *v, uint64_t toff, uint64_t *cap, uint64_t *bsize, char *why,
                size_t n);
/* Read and validate the entry a slot points at. On failure writes a reason
 * into why and returns false. */
bool entry_read(const view *v, const scan *sc, uint64_t payload, ent *e,
                char *why, size_t n);
/* The lease of an entry entry_read accepted, when its block carries one:
 * 0 (none), 1 with *l and *owner (l->olen bytes in the view), or -1 with
 * the reason in why (bounds: the last token the header issued and the
 * latest lease end it granted; UINT64_MAX: none). */
int entry_lease(const view *v, const ent *e, uint64_t last_token, uint64_t lease_high,
                shmkv__lease *l, const unsigned char **owner, char *why, size_t n);
/* The lease clock from a fresh read of the store's header. */
void store_lclock(const store *s, lclock *c);

/* ---- claims (claims.c) ---------------------------------------------------- */

/* The store's lease clock as of one moment. */
struct lclock {
    bool same_boot; /* the header's boot_id is this boot's: its leases can be live */
    uint64_t now;   /* lease clock, ns: CLOCK_BOOTTIME + hdr->lease_base */
};

void lclock_init(lclock *c, const shmkv__hdr *h);
/* A lease ending at expiry is a claim still (on this boot, not run out). */
bool lclock_live(const lclock *c, uint64_t expiry);
/* "claim token T, owner "O", 12.345 s left" (or "expired N s ago", or
 * "ended (a lease of an earlier boot)"); owner holds l->olen bytes. */
void put_claim_text(FILE *f, const shmkv__lease *l, const unsigned char *owner,
                    const lclock *c);
/* "claim":{"token":T,"owner":"O"|null[,"owner_hex"],"live":B,"ms_left":N|null
 * [,"earlier_boot":true]}; ms_left is negative for a lease that ran out. */
void put_claim_json(FILE *f, const shmkv__lease *l, const unsigned char *owner,
                    const lclock *c);

/* ---- output helpers (out.c) -------------------------------------------- */

bool utf8_valid(const unsigned char *p, size_t n);
/* Text output: valid UTF-8 passes, controls and bad bytes as \xNN, "\\". */
void put_text(FILE *f, const unsigned char *p, size_t n, bool keep_newlines);
/* JSON string literal (quotes included); p must be valid UTF-8. */
void put_jstr(FILE *f, const unsigned char *p, size_t n);
void put_jcstr(FILE *f, const char *s);
void put_hex(FILE *f, const unsigned char *p, size_t n);
void put_hexdump(FILE *f, const unsigned char *p, size_t n, const char *indent);
/* Key as JSON members: "key":"..." plus "key_hex" when not UTF-8. */
void put_jkey(FILE *f, const unsigned char *k, size_t n);
const char *kind_name(unsigned kind);
/* Strict RFC 8259 check (UTF-8 included); iterative, no depth limit. */
bool json_valid(const unsigned char *p, size_t n);
/* Reformat valid JSON: indent < 0 for compact, else pretty with that many
 * spaces a level; every line after the first is prefixed with lead. */
void json_print(FILE *f, const unsigned char *p, size_t n, int indent, const char *lead);
/* A value for humans (text mode) or as JSON members "kind","size","value". */
void put_value_text(FILE *f, const unsigned char *p, size_t n, unsigned kind,
                    const char *indent, bool raw);
void put_value_json(FILE *f, const unsigned char *p, size_t n, unsigned kind);
void fmt_bytes(char *buf, size_t n, uint64_t v);

#endif /* SHMKV_DUMP_H */
