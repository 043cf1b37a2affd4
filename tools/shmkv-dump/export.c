/*
 * export.c - --export jsonl|csv: the entries in the files k6's
 * exportJSONL() and exportCSV() write (cgo/io_export.go), byte for byte,
 * so that data leaves a store without k6 and goes back with importJSONL(),
 * importCSV() or shmkv-load.
 *
 * Every entry is checked before anything is written: a key that is not
 * UTF-8, a JSON value that does not parse, bytes that are not text, or
 * (CSV) a value that is not a flat JSON object stops the export with a
 * message naming the key, and nothing reaches standard output.
 */
#include "dump.h"
#include "jsonx.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

typedef struct exp {
    bool csv;
    char **cols;
    size_t ncols;
    FILE *out; /* a memory stream: written out once every entry passed */
    uint64_t n;
    char why[512];
} exp;

/* ---- JSON as Go's encoding/json writes it --------------------------------- */

/* A JSON string as Go's json.Encoder writes it with SetEscapeHTML(false),
 * as exportJSONL writes keys and text values: control characters, U+2028
 * and U+2029 as \u escapes, < > & as they are. */
static void put_gostr(FILE *f, const unsigned char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        switch (c) {
        case '"': fputs("\\\"", f); continue;
        case '\\': fputs("\\\\", f); continue;
        case '\n': fputs("\\n", f); continue;
        case '\r': fputs("\\r", f); continue;
        case '\t': fputs("\\t", f); continue;
        case '\b': fputs("\\b", f); continue;
        case '\f': fputs("\\f", f); continue;
        }
        if (c < 0x20) {
            fprintf(f, "\\u00%c%c", hex[c >> 4], hex[c & 15]);
        } else if (c == 0xE2 && i + 2 < n && p[i + 1] == 0x80 && (p[i + 2] & ~1u) == 0xA8) {
            /* U+2028 and U+2029, which JavaScript takes for line breaks */
            fprintf(f, "\\u202%c", p[i + 2] == 0xA8 ? '8' : '9');
            i += 2;
        } else {
            fputc(c, f);
        }
    }
    fputc('"', f);
}

/* Whether encoding/csv quotes a field: empty never; `\.`; a comma, quote
 * or line break; or a first character that Unicode calls white space. */
static bool csv_quote(const unsigned char *p, size_t n)
{
    if (n == 0)
        return false;
    if (n == 2 && p[0] == '\\' && p[1] == '.')
        return true;
    for (size_t i = 0; i < n; i++)
        if (p[i] == ',' || p[i] == '"' || p[i] == '\r' || p[i] == '\n')
            return true;
    unsigned char c = p[0];
    if (c == ' ' || (c >= '\t' && c <= '\r'))
        return true;
    if (n >= 2 && c == 0xC2 && (p[1] == 0x85 || p[1] == 0xA0))
        return true;
    if (n >= 3 && c == 0xE1 && p[1] == 0x9A && p[2] == 0x80) /* U+1680 */
        return true;
    if (n >= 3 && c == 0xE2 && p[1] == 0x80 && (p[2] <= 0x8A || p[2] == 0xA8 || p[2] == 0xA9 || p[2] == 0xAF))
        return true;
    if (n >= 3 && c == 0xE2 && p[1] == 0x81 && p[2] == 0x9F) /* U+205F */
        return true;
    if (n >= 3 && c == 0xE3 && p[1] == 0x80 && p[2] == 0x80) /* U+3000 */
        return true;
    return false;
}

static void put_csv_field(FILE *f, const unsigned char *p, size_t n)
{
    if (!csv_quote(p, n)) {
        fwrite(p, 1, n, f);
        return;
    }
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"')
            fputc('"', f);
        fputc(p[i], f);
    }
    fputc('"', f);
}

/* One CSV row: the key, then each column's cell. */
static int put_csv_row(exp *x, const unsigned char *k, uint32_t klen, const unsigned char *v,
                       uint32_t vlen, const char *label)
{
    /* the span of each column's value, the last member of a name winning */
    size_t *from = calloc(x->ncols * 2, sizeof *from);
    if (!from)
        return -ENOMEM;
    size_t *to = from + x->ncols;
    size_t i = jx_ws(v, vlen, 0);
    int rc = 0;
    if (i >= vlen || v[i] != '{') {
        snprintf(x->why, sizeof x->why, "the value of key %s is not a JSON object: CSV writes objects as rows", label);
        rc = 1;
        goto out;
    }
    for (i = jx_ws(v, vlen, i + 1); i < vlen && v[i] != '}';) {
        size_t ne = jx_str_end(v, vlen, i), nlen;
        char *name = jx_str_decode(v, i, ne, &nlen);
        if (!name) {
            rc = -ENOMEM;
            goto out;
        }
        i = jx_ws(v, vlen, jx_ws(v, vlen, ne) + 1); /* past the colon */
        size_t ve = jx_value_end(v, vlen, i);
        for (size_t c = 0; c < x->ncols; c++)
            if (strlen(x->cols[c]) == nlen && memcmp(x->cols[c], name, nlen) == 0) {
                from[c] = i;
                to[c] = ve;
            }
        free(name);
        i = jx_ws(v, vlen, ve);
        if (i < vlen && v[i] == ',')
            i = jx_ws(v, vlen, i + 1);
    }
    put_csv_field(x->out, k, klen);
    for (size_t c = 0; c < x->ncols; c++) {
        fputc(',', x->out);
        if (to[c] == 0 || v[from[c]] == 'n')
            continue; /* absent or null: an empty cell */
        unsigned char c0 = v[from[c]];
        if (c0 == '{' || c0 == '[') {
            snprintf(x->why, sizeof x->why,
                     "key %s: field \"%s\" is a JSON %s; CSV cells hold strings, numbers, booleans and null",
                     label, x->cols[c], c0 == '{' ? "object" : "array");
            rc = 1;
            goto out;
        }
        if (c0 == '"') {
            size_t len;
            char *s = jx_str_decode(v, from[c], to[c], &len);
            if (!s) {
                rc = -ENOMEM;
                goto out;
            }
            put_csv_field(x->out, (const unsigned char *)s, len);
            free(s);
        } else {
            put_csv_field(x->out, v + from[c], to[c] - from[c]);
        }
    }
    fputc('\n', x->out);
out:
    free(from);
    return rc;
}

static int export_one(void *ctx, const unsigned char *k, uint32_t klen, const unsigned char *v,
                      uint32_t vlen, uint16_t kind)
{
    exp *x = ctx;
    char label[160];
    {
        FILE *lf = fmemopen(label, sizeof label, "w");
        if (lf) {
            put_jstr(lf, k, klen < 120 ? klen : 120);
            fputc(0, lf);
            fclose(lf);
        }
        label[sizeof label - 1] = 0;
    }
    if (!utf8_valid(k, klen)) {
        snprintf(x->why, sizeof x->why, "key %s is not valid UTF-8, which JSON and CSV text cannot hold", label);
        return 1;
    }
    if (kind == SHMKV_KIND_JSON) {
        if (!json_valid(v, vlen)) {
            snprintf(x->why, sizeof x->why, "the value of key %s is not valid JSON", label);
            return 1;
        }
    } else if (x->csv) {
        snprintf(x->why, sizeof x->why, "the value of key %s is text, not a JSON object: CSV writes objects as rows", label);
        return 1;
    } else if (!utf8_valid(v, vlen)) {
        snprintf(x->why, sizeof x->why, "the value of key %s is bytes that are not UTF-8 text", label);
        return 1;
    }
    x->n++;
    if (x->csv)
        return put_csv_row(x, k, klen, v, vlen, label);
    fputs("{\"key\":", x->out);
    put_gostr(x->out, k, klen);
    fputs(",\"value\":", x->out);
    if (kind == SHMKV_KIND_JSON)
        jx_put_compact(x->out, v, vlen);
    else
        put_gostr(x->out, v, vlen);
    fputs("}\n", x->out);
    return 0;
}

int mode_export(store *s, const opts *o, bool csv, const char *cols)
{
    exp x = {.csv = csv};
    char *buf = NULL, *colbuf = NULL;
    size_t blen = 0;
    int rc = EXIT_RUNTIME;
    if (csv) {
        colbuf = strdup(cols);
        if (!colbuf)
            goto oom;
        for (char *save = NULL, *t = strtok_r(colbuf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            char **nc = realloc(x.cols, (x.ncols + 1) * sizeof *nc);
            if (!nc)
                goto oom;
            x.cols = nc;
            x.cols[x.ncols++] = t;
        }
    }
    x.out = open_memstream(&buf, &blen);
    if (!x.out)
        goto oom;
    if (csv) {
        put_csv_field(x.out, (const unsigned char *)"key", 3);
        for (size_t c = 0; c < x.ncols; c++) {
            fputc(',', x.out);
            put_csv_field(x.out, (const unsigned char *)x.cols[c], strlen(x.cols[c]));
        }
        fputc('\n', x.out);
    }
    uint64_t skipped = 0;
    int r = keys_each(s, o, export_one, &x, &skipped);
    if (fclose(x.out) != 0 || r < 0) {
        x.out = NULL;
        goto oom;
    }
    x.out = NULL;
    if (r > 0) {
        fprintf(stderr, "shmkv-dump: --export: %s; nothing was written\n", x.why);
        rc = EXIT_PROBLEMS;
    } else if (skipped) {
        fprintf(stderr, "shmkv-dump: --export: %" PRIu64 " damaged entries or tables; run --check; "
                "nothing was written\n", skipped);
        rc = EXIT_PROBLEMS;
    } else {
        rc = fwrite(buf, 1, blen, stdout) == blen && fflush(stdout) == 0 ? EXIT_SOUND : EXIT_RUNTIME;
        if (rc == EXIT_SOUND)
            fprintf(stderr, "shmkv-dump: exported %" PRIu64 " entries\n", x.n);
    }
    goto done;
oom:
    fputs("shmkv-dump: out of memory\n", stderr);
done:
    if (x.out)
        fclose(x.out);
    free(buf);
    free(x.cols);
    free(colbuf);
    return rc;
}
