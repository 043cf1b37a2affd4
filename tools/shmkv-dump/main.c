/*
 * shmkv-dump - inspect and verify a libshmkv store without changing it.
 *
 * The store is opened read-only and never attached to: no lock is taken,
 * no byte is written, and processes using the store do not see the tool.
 */
#include "dump.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>

static const char usage_text[] =
    "Usage: shmkv-dump [MODE] [OPTIONS] PATH\n"
    "       shmkv-dump [MODE] [OPTIONS] --memory NAME\n"
    "\n"
    "Inspect or verify a libshmkv store without modifying it. The store is\n"
    "opened read-only and never attached to; it is safe to run while other\n"
    "processes write to it.\n"
    "\n"
    "Store:\n"
    "  PATH               a disk store (a regular file)\n"
    "  -m, --memory NAME  the memory store NAME (/dev/shm/shmkv.NAME)\n"
    "\n"
    "Modes (one at most; the default is a summary):\n"
    "  (none)             summary: format version, backend, sizes (used, allocated,\n"
    "                     on disk, reserved), keys, segments and load factor, bytes\n"
    "                     in use and free, claims (live, expired, last token), key\n"
    "                     tracking, attached processes (alive or dead), clean or\n"
    "                     unclean shutdown\n"
    "  -k, --keys         the keys, in sorted (unsigned byte) order, one a line; a\n"
    "                     claimed key is followed by a tab and its claim (token,\n"
    "                     owner, time left or how long ago it ran out)\n"
    "  -l, --list         the keys with their values (and claims)\n"
    "  -g, --get KEY      the value of KEY\n"
    "  -c, --check        verify every structure; exit 1 and list the problems\n"
    "                     when the store is not sound\n"
    "  -s, --stats        per-segment load, size classes, free space, fragmentation\n"
    "  -e, --export FMT   the entries as k6's exportJSONL() (FMT jsonl) or\n"
    "                     exportCSV() (FMT csv, with --columns) writes them, on\n"
    "                     standard output; every entry is checked first, and one\n"
    "                     that cannot be written stops it with nothing written;\n"
    "                     claims are not exported\n"
    "\n"
    "Options:\n"
    "  -p, --prefix P     (--keys, --list, --export) only keys that start with P\n"
    "  -n, --limit N      (--keys, --list, --export) at most N keys; 0: no limit\n"
    "  -C, --columns A,B  (--export csv) the top-level fields of the values to\n"
    "                     write, after the key\n"
    "  -x, --hex          KEY and P are hex digits (for keys that are not text)\n"
    "  -j, --json         one JSON document on standard output, for any mode\n"
    "  -r, --retries N    (--check on a store in use) re-check up to N fresh\n"
    "                     snapshots while problems remain; default 3\n"
    "  -h, --help         this text\n"
    "  -V, --version      the version\n"
    "\n"
    "Values are shown by their kind: JSON pretty-printed, strings as text, bytes\n"
    "as a hex dump. --get prints a string value's bytes unchanged.\n"
    "\n"
    "Exit status:\n"
    "  0  success; --check: the store is sound\n"
    "  1  --check found problems; --get: no such key (or it cannot be read);\n"
    "     --keys/--list: damaged entries had to be skipped; --export: an entry\n"
    "     could not be written (nothing was)\n"
    "  2  usage error, or the input cannot be opened, is not a store (empty,\n"
    "     a directory, another format) or is of an incompatible format\n"
    "  3  runtime failure: out of memory, or the store shrank while being read\n"
    "\n"
    "See docs/tools.md for the output formats and what --check verifies.\n";

static int usage_error(const char *fmt, const char *arg)
{
    fputs("shmkv-dump: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\nTry 'shmkv-dump --help'.\n", stderr);
    return EXIT_USAGE;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode hex in place; returns the length or -1. */
static long unhex(char *s)
{
    size_t n = strlen(s);
    if (n % 2)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        int a = hexval((unsigned char)s[2 * i]), b = hexval((unsigned char)s[2 * i + 1]);
        if (a < 0 || b < 0)
            return -1;
        s[i] = (char)(a * 16 + b);
    }
    return (long)(n / 2);
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (!*s || *s == '-')
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

enum { M_SUMMARY, M_KEYS, M_LIST, M_GET, M_CHECK, M_STATS, M_EXPORT };

static void json_error(const store *s, const char *where, int code)
{
    fputs("{\"store\":", stdout);
    put_jcstr(stdout, s ? s->label : where);
    fputs(",\"error\":", stdout);
    put_jcstr(stdout, s && s->msg[0] ? s->msg : "error");
    fprintf(stdout, ",\"exit\":%d}\n", code);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        { "memory", required_argument, NULL, 'm' },
        { "keys", no_argument, NULL, 'k' },
        { "list", no_argument, NULL, 'l' },
        { "get", required_argument, NULL, 'g' },
        { "check", no_argument, NULL, 'c' },
        { "stats", no_argument, NULL, 's' },
        { "export", required_argument, NULL, 'e' },
        { "columns", required_argument, NULL, 'C' },
        { "prefix", required_argument, NULL, 'p' },
        { "limit", required_argument, NULL, 'n' },
        { "hex", no_argument, NULL, 'x' },
        { "json", no_argument, NULL, 'j' },
        { "retries", required_argument, NULL, 'r' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    opts o = { .retries = 3 };
    int mode = M_SUMMARY, nmodes = 0, ch;
    const char *memory = NULL;
    char *prefix = NULL, *key = NULL;
    const char *format = NULL, *columns = NULL;
    bool hex = false, have_limit = false;

    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":m:klg:cse:C:p:n:xjr:hV", lo, NULL)) != -1) {
        switch (ch) {
        case 'm': memory = optarg; break;
        case 'k': mode = M_KEYS, nmodes++; break;
        case 'l': mode = M_LIST, nmodes++; break;
        case 'g': mode = M_GET, nmodes++, key = optarg; break;
        case 'c': mode = M_CHECK, nmodes++; break;
        case 's': mode = M_STATS, nmodes++; break;
        case 'e': mode = M_EXPORT, nmodes++, format = optarg; break;
        case 'C': columns = optarg; break;
        case 'p': prefix = optarg; break;
        case 'n':
            if (!parse_u64(optarg, &o.limit))
                return usage_error("--limit needs a number, not '%s'", optarg);
            have_limit = true;
            break;
        case 'x': hex = true; break;
        case 'j': o.json = true; break;
        case 'r': {
            uint64_t r;
            if (!parse_u64(optarg, &r) || r > 100)
                return usage_error("--retries needs a number from 0 to 100, not '%s'", optarg);
            o.retries = (int)r;
            break;
        }
        case 'h':
            fputs(usage_text, stdout);
            return fflush(stdout) ? EXIT_RUNTIME : EXIT_SOUND;
        case 'V':
            printf("shmkv-dump %s (store format %u)\n", shmkv_version(), SHMKV__FORMAT_VERSION);
            return EXIT_SOUND;
        case ':':
            return usage_error("option '%s' needs an argument", argv[optind - 1]);
        default:
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (nmodes > 1)
        return usage_error("%s", "choose one of --keys, --list, --get, --check, --stats, --export");
    if ((prefix || have_limit) && mode != M_KEYS && mode != M_LIST && mode != M_EXPORT)
        return usage_error("%s", "--prefix and --limit go with --keys, --list or --export");
    if (mode == M_EXPORT && strcmp(format, "jsonl") != 0 && strcmp(format, "csv") != 0)
        return usage_error("--export takes jsonl or csv, not '%s'", format);
    if (mode == M_EXPORT && o.json)
        return usage_error("%s", "--export writes its own format: --json does not go with it");
    bool csv = mode == M_EXPORT && strcmp(format, "csv") == 0;
    if (csv != (columns != NULL))
        return usage_error("%s", csv ? "--export csv needs --columns NAME,NAME..."
                                     : "--columns goes with --export csv");
    if (csv) {
        /* the rules of exportCSV's columns: non-empty, distinct, not "key" */
        char *dup = strdup(columns);
        if (!dup)
            return EXIT_RUNTIME;
        size_t n = strlen(columns);
        bool ok = n && columns[0] != ',' && columns[n - 1] != ',' && !strstr(columns, ",,");
        char *names[1024];
        size_t nn = 0;
        char *save = NULL;
        for (char *t = strtok_r(dup, ",", &save); t && ok; t = strtok_r(NULL, ",", &save)) {
            ok = strcmp(t, "key") != 0 && nn < sizeof names / sizeof *names;
            for (size_t i = 0; i < nn && ok; i++)
                ok = strcmp(names[i], t) != 0;
            names[nn++] = t;
        }
        free(dup);
        if (!ok)
            return usage_error("--columns '%s' must be distinct non-empty names, none of them \"key\"",
                               columns);
    }
    int rest = argc - optind;
    if (memory ? rest != 0 : rest != 1)
        return usage_error("%s", memory ? "give either PATH or --memory NAME, not both"
                                        : "give one store: PATH or --memory NAME");
    if (hex) {
        long n;
        if (prefix && (n = unhex(prefix)) < 0)
            return usage_error("--prefix '%s' is not hex", prefix);
        if (prefix)
            o.plen = (size_t)n;
        if (key && (n = unhex(key)) < 0)
            return usage_error("--get '%s' is not hex", key);
        if (key)
            o.klen = (size_t)n;
    } else {
        o.plen = prefix ? strlen(prefix) : 0;
        o.klen = key ? strlen(key) : 0;
    }
    o.prefix = (const unsigned char *)prefix;
    o.key = (const unsigned char *)key;
    if (mode == M_GET && (o.klen == 0 || o.klen > SHMKV_KEY_MAX))
        return usage_error("%s", "a key has 1 to 16384 bytes");

    store *s = calloc(1, sizeof *s);
    if (!s) {
        fputs("shmkv-dump: out of memory\n", stderr);
        return EXIT_RUNTIME;
    }
    const char *where = memory ? memory : argv[optind];
    int rc = store_open(s, where, memory != NULL);
    if (rc == 0 && !s->hdr_ok && mode != M_CHECK) {
        snprintf(s->msg, sizeof s->msg, "damaged or incompatible store: %s", s->err);
        fprintf(stderr, "shmkv-dump: %s: %s\n", s->label, s->msg);
        rc = EXIT_USAGE;
    }
    if (rc == 0 && s->hdr_ok)
        rc = store_map(s);
    if (rc) {
        if (o.json)
            json_error(s, where, rc);
        store_close(s);
        free(s);
        return rc;
    }
    switch (mode) {
    case M_KEYS: rc = mode_keys(s, &o, false); break;
    case M_LIST: rc = mode_keys(s, &o, true); break;
    case M_GET: rc = mode_get(s, &o); break;
    case M_CHECK: rc = mode_check(s, &o); break;
    case M_STATS: rc = mode_stats(s, &o); break;
    case M_EXPORT: rc = mode_export(s, &o, csv, columns); break;
    default: rc = mode_summary(s, &o); break;
    }
    store_close(s);
    free(s);
    return rc;
}
