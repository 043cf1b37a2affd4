/*
 * shmkv-load - load a JSON Lines file into a store, without k6.
 *
 * Each line is one record {"key": "...", "value": ...}, as k6's
 * exportJSONL() and shmkv-dump --export jsonl write them, and as k6's
 * importJSONL() reads them (same rules: the value is stored as compact
 * JSON; with --string a string value is stored as its text). The whole
 * file is read and every line checked before the store is even opened:
 * a bad line is reported with its number and nothing is written. Then the
 * records are written in batches of shmkv_set_many() (each all or nothing,
 * for every process at once).
 */
#include "jsonx.h"

#include "shmkv.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* out.c (shmkv-dump's) */
bool utf8_valid(const unsigned char *p, size_t n);
bool json_valid(const unsigned char *p, size_t n);

static const char usage_text[] =
    "Usage: shmkv-load [OPTIONS] PATH FILE\n"
    "       shmkv-load [OPTIONS] --memory NAME FILE\n"
    "\n"
    "Load the JSON Lines FILE (- for standard input) into the disk store PATH\n"
    "or the memory store NAME, creating it if needed. Each line is a record\n"
    "{\"key\": \"...\", \"value\": ...}. Every line is checked before anything is\n"
    "written: a bad one is reported with its line number and the store is not\n"
    "touched. Existing keys are overwritten; other keys are kept.\n"
    "\n"
    "Options:\n"
    "  -m, --memory NAME  the memory store NAME (it lives while a process has it\n"
    "                     open: load it while another process holds it)\n"
    "  -s, --string       store string values as text, as an openKv with\n"
    "                     serialization \"string\" does (default: as JSON)\n"
    "  -b, --batch N      records per atomic batch, 1 to 100000; default 1000\n"
    "  -t, --track-keys   keep the key index (a new store, or turn it on)\n"
    "  -h, --help         this text\n"
    "\n"
    "Exit status: 0 loaded; 1 a bad line (nothing written) or the store\n"
    "refused a batch (the batches before it are written); 2 usage, or the\n"
    "file or store cannot be opened.\n";

typedef struct rec {
    size_t koff, klen, voff, vlen;
    shmkv_kind kind;
} rec;

typedef struct loader {
    unsigned char *text; /* the file */
    size_t len;
    char *out; /* decoded keys and compacted values */
    size_t olen;
    FILE *of;
    rec *r;
    size_t n, cap;
    bool strings;
} loader;

static int bad(const char *file, uint64_t line, const char *msg)
{
    fprintf(stderr, "shmkv-load: %s:%" PRIu64 ": %s; nothing was written\n", file, line, msg);
    return 1;
}

static int read_all(const char *file, loader *l)
{
    FILE *f = strcmp(file, "-") ? fopen(file, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "shmkv-load: %s: %s\n", file, strerror(errno));
        return 2;
    }
    size_t cap = 1 << 16;
    l->text = malloc(cap);
    for (size_t got; l->text && (got = fread(l->text + l->len, 1, cap - l->len, f)) > 0;) {
        l->len += got;
        if (l->len == cap) {
            unsigned char *p = realloc(l->text, cap *= 2);
            if (!p) {
                free(l->text);
                l->text = NULL;
            }
            l->text = p;
        }
    }
    int err = ferror(f);
    if (f != stdin)
        fclose(f);
    if (!l->text || err) {
        fprintf(stderr, "shmkv-load: %s: %s\n", file, l->text ? "read error" : "out of memory");
        return 2;
    }
    return 0;
}

/* One line [p, p + n): checked, its key and value appended to l. */
static int parse_line(loader *l, const unsigned char *p, size_t n, const char *file, uint64_t line)
{
    char msg[160];
    if (!utf8_valid(p, n))
        return bad(file, line, "the line is not valid UTF-8");
    size_t i = jx_ws(p, n, 0), end = n;
    while (end > i && (p[end - 1] == ' ' || p[end - 1] == '\t' || p[end - 1] == '\r' || p[end - 1] == '\n'))
        end--;
    if (i == end)
        return bad(file, line, "blank line: every line must be one record {\"key\": \"...\", \"value\": ...}");
    if (p[i] != '{')
        return bad(file, line, "the record must be a JSON object {\"key\": \"...\", \"value\": ...}");
    if (!json_valid(p + i, end - i))
        return bad(file, line, "not valid JSON");
    size_t kf = 0, kt = 0, vf = 0, vt = 0;
    for (i = jx_ws(p, end, i + 1); i < end && p[i] != '}';) {
        size_t ne = jx_str_end(p, end, i), nlen;
        char *name = jx_str_decode(p, i, ne, &nlen);
        if (!name)
            return bad(file, line, "out of memory");
        i = jx_ws(p, end, jx_ws(p, end, ne) + 1);
        size_t ve = jx_value_end(p, end, i);
        /* encoding/json matches field names without regard to case, and
         * the last of two wins */
        if (nlen == 3 && !strncasecmp(name, "key", 3))
            kf = i, kt = ve;
        else if (nlen == 5 && !strncasecmp(name, "value", 5))
            vf = i, vt = ve;
        free(name);
        i = jx_ws(p, end, ve);
        if (i < end && p[i] == ',')
            i = jx_ws(p, end, i + 1);
    }
    if (!kt)
        return bad(file, line, "the record has no \"key\"");
    if (p[kf] != '"')
        return bad(file, line, "\"key\" must be a string");
    if (!vt)
        return bad(file, line, "the record has no \"value\"");
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 1024;
        rec *r = realloc(l->r, nc * sizeof *r);
        if (!r)
            return bad(file, line, "out of memory");
        l->r = r;
        l->cap = nc;
    }
    rec *r = &l->r[l->n];
    size_t klen;
    char *key = jx_str_decode(p, kf, kt, &klen);
    if (!key)
        return bad(file, line, "out of memory");
    if (klen == 0 || klen > SHMKV_KEY_MAX) {
        free(key);
        snprintf(msg, sizeof msg, klen ? "the key is %zu bytes long; the limit is %d" : "\"key\" must not be empty",
                 klen, SHMKV_KEY_MAX);
        return bad(file, line, msg);
    }
    fflush(l->of);
    r->koff = l->olen;
    r->klen = klen;
    fwrite(key, 1, klen, l->of);
    free(key);
    fflush(l->of);
    r->voff = l->olen;
    r->kind = SHMKV_KIND_JSON;
    if (l->strings && p[vf] == '"') {
        size_t vlen;
        char *s = jx_str_decode(p, vf, vt, &vlen);
        if (!s)
            return bad(file, line, "out of memory");
        fwrite(s, 1, vlen, l->of);
        free(s);
        r->kind = SHMKV_KIND_STRING;
    } else {
        jx_put_compact(l->of, p + vf, vt - vf);
    }
    if (fflush(l->of) != 0)
        return bad(file, line, "out of memory");
    r->vlen = l->olen - r->voff;
    if (r->vlen > SHMKV_VALUE_MAX) {
        snprintf(msg, sizeof msg, "the value is %zu bytes; the limit is %d", r->vlen, SHMKV_VALUE_MAX);
        return bad(file, line, msg);
    }
    l->n++;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        { "memory", required_argument, NULL, 'm' },
        { "string", no_argument, NULL, 's' },
        { "batch", required_argument, NULL, 'b' },
        { "track-keys", no_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *memory = NULL;
    long batch = 1000;
    bool track = false;
    loader l = {0};
    int ch;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":m:sb:th", lo, NULL)) != -1) {
        switch (ch) {
        case 'm': memory = optarg; break;
        case 's': l.strings = true; break;
        case 't': track = true; break;
        case 'b': {
            char *e;
            batch = strtol(optarg, &e, 10);
            if (*e || batch < 1 || batch > 100000) {
                fprintf(stderr, "shmkv-load: --batch needs a number from 1 to 100000, not '%s'\n", optarg);
                return 2;
            }
            break;
        }
        case 'h': fputs(usage_text, stdout); return 0;
        default:
            fprintf(stderr, "shmkv-load: bad option '%s'\nTry 'shmkv-load --help'.\n", argv[optind - 1]);
            return 2;
        }
    }
    if (argc - optind != (memory ? 1 : 2)) {
        fputs("shmkv-load: give a store (PATH or --memory NAME) and a FILE\nTry 'shmkv-load --help'.\n", stderr);
        return 2;
    }
    const char *where = memory ? memory : argv[optind];
    const char *file = argv[argc - 1];
    int rc = read_all(file, &l);
    if (rc)
        return rc;
    l.of = open_memstream(&l.out, &l.olen);
    if (!l.of) {
        fputs("shmkv-load: out of memory\n", stderr);
        return 2;
    }
    /* Check every line before the store is opened. */
    uint64_t line = 0;
    size_t at = 0;
    if (l.len >= 3 && !memcmp(l.text, "\xef\xbb\xbf", 3))
        at = 3; /* a byte order mark */
    while (at < l.len) {
        const unsigned char *nl = memchr(l.text + at, '\n', l.len - at);
        size_t e = nl ? (size_t)(nl - l.text) : l.len;
        line++;
        if ((rc = parse_line(&l, l.text + at, e - at, file, line)) != 0)
            return rc;
        at = e + 1;
    }
    if (fclose(l.of) != 0) {
        fputs("shmkv-load: out of memory\n", stderr);
        return 2;
    }
    free(l.text);

    shmkv_options o = {.backend = memory ? SHMKV_BACKEND_MEMORY : SHMKV_BACKEND_DISK,
                       .track_keys = track ? SHMKV_TRACK_ON : SHMKV_TRACK_DEFAULT};
    shmkv_db *db = NULL;
    if ((rc = shmkv_open(where, &o, &db)) != 0) {
        fprintf(stderr, "shmkv-load: %s: %s\n", where, shmkv_strerror(rc));
        return 2;
    }
    shmkv_item *items = calloc((size_t)batch, sizeof *items);
    if (!items) {
        fputs("shmkv-load: out of memory\n", stderr);
        shmkv_close(db);
        return 2;
    }
    size_t done = 0;
    for (size_t i = 0; i < l.n && !rc; i += (size_t)batch) {
        size_t k = l.n - i < (size_t)batch ? l.n - i : (size_t)batch;
        for (size_t j = 0; j < k; j++) {
            const rec *r = &l.r[i + j];
            items[j] = (shmkv_item){.key = l.out + r->koff, .klen = r->klen,
                                    .val = l.out + r->voff, .vlen = r->vlen, .kind = r->kind};
        }
        if ((rc = shmkv_set_many(db, items, k, NULL)) == 0)
            done += k;
    }
    if (rc)
        fprintf(stderr, "shmkv-load: %s: %s: the first %zu of %zu records were written\n", where,
                shmkv_strerror(rc), done, l.n);
    else
        fprintf(stderr, "shmkv-load: loaded %zu records\n", done);
    free(items);
    free(l.r);
    free(l.out);
    int crc = shmkv_close(db);
    if (!rc && crc) {
        fprintf(stderr, "shmkv-load: closing %s: %s\n", where, shmkv_strerror(crc));
        return 1;
    }
    return rc ? 1 : 0;
}
