/*
 * out.c - output helpers of shmkv-dump: escaping of keys and strings for a
 * terminal and for JSON, hex, and a small strict JSON validator with a
 * reformatter (pretty or compact) for values of kind JSON.
 */
#include "dump.h"

#include <inttypes.h>
#include <stdlib.h>

const char *kind_name(unsigned kind)
{
    switch (kind) {
    case SHMKV_KIND_BYTES: return "bytes";
    case SHMKV_KIND_STRING: return "string";
    case SHMKV_KIND_JSON: return "json";
    default: return "unknown";
    }
}

/* Length of the valid UTF-8 sequence at p (n bytes left), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    uint32_t cp, min;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, cp = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, cp = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

bool utf8_valid(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t l = utf8_seq(p + i, n - i);
        if (!l)
            return false;
        i += l;
    }
    return true;
}

void put_text(FILE *f, const unsigned char *p, size_t n, bool keep_newlines)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        size_t l = utf8_seq(p + i, n - i);
        if (l > 1) {
            fwrite(p + i, 1, l, f);
            i += l;
            continue;
        }
        i++;
        if (c == '\\')
            fputs("\\\\", f);
        else if (c == '\n' && keep_newlines)
            fputc('\n', f);
        else if (c == '\t' && keep_newlines)
            fputc('\t', f);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c == '\r')
            fputs("\\r", f);
        else if (c < 0x20 || c >= 0x7f)
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f);
    }
}

void put_jstr(FILE *f, const unsigned char *p, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        switch (c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        default:
            if (c < 0x20 || c == 0x7f)
                fprintf(f, "\\u%04x", c);
            else
                fputc(c, f);
        }
    }
    fputc('"', f);
}

void put_jcstr(FILE *f, const char *s)
{
    size_t n = strlen(s);
    if (utf8_valid((const unsigned char *)s, n)) {
        put_jstr(f, (const unsigned char *)s, n);
        return;
    }
    /* Paths need not be UTF-8: escape bytes as Latin-1 code points. */
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80 || c < 0x20 || c == '"' || c == '\\' || c == 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

void put_hex(FILE *f, const unsigned char *p, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        fputc(hx[p[i] >> 4], f);
        fputc(hx[p[i] & 15], f);
    }
}

void put_hexdump(FILE *f, const unsigned char *p, size_t n, const char *indent)
{
    if (n == 0) {
        fprintf(f, "%s(empty)\n", indent);
        return;
    }
    for (size_t o = 0; o < n; o += 16) {
        size_t m = n - o < 16 ? n - o : 16;
        fprintf(f, "%s%08zx ", indent, o);
        for (size_t i = 0; i < 16; i++) {
            if (i == 8)
                fputc(' ', f);
            if (i < m)
                fprintf(f, " %02x", p[o + i]);
            else
                fputs("   ", f);
        }
        fputs("  |", f);
        for (size_t i = 0; i < m; i++)
            fputc(p[o + i] >= 0x20 && p[o + i] < 0x7f ? p[o + i] : '.', f);
        fputs("|\n", f);
    }
}

void put_jkey(FILE *f, const unsigned char *k, size_t n)
{
    if (utf8_valid(k, n)) {
        fputs("\"key\":", f);
        put_jstr(f, k, n);
        return;
    }
    /* Not text: give a readable approximation and the exact bytes. */
    fputs("\"key\":\"", f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = k[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            fputc(c, f);
        else
            fprintf(f, "\\ufffd");
    }
    fputs("\",\"key_hex\":\"", f);
    put_hex(f, k, n);
    fputc('"', f);
}

/* ---- JSON ------------------------------------------------------------ */

static size_t skip_ws(const unsigned char *p, size_t n, size_t i)
{
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
        i++;
    return i;
}

static bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* p[i] == '"'; returns the index past the closing quote, or 0. */
static size_t scan_string(const unsigned char *p, size_t n, size_t i)
{
    i++;
    while (i < n) {
        unsigned char c = p[i];
        if (c == '"')
            return i + 1;
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            if (i + 1 >= n)
                return 0;
            c = p[i + 1];
            if (c == 'u') {
                if (i + 6 > n)
                    return 0;
                for (size_t k = 2; k < 6; k++)
                    if (!is_hex(p[i + k]))
                        return 0;
                i += 6;
            } else if (strchr("\"\\/bfnrt", c) && c) {
                i += 2;
            } else {
                return 0;
            }
            continue;
        }
        size_t l = utf8_seq(p + i, n - i);
        if (!l)
            return 0;
        i += l;
    }
    return 0;
}

static size_t scan_digits(const unsigned char *p, size_t n, size_t i)
{
    while (i < n && p[i] >= '0' && p[i] <= '9')
        i++;
    return i;
}

/* A number, true, false or null at i; index past it or 0. */
static size_t scan_scalar(const unsigned char *p, size_t n, size_t i)
{
    static const char *const words[] = { "true", "false", "null" };
    for (int w = 0; w < 3; w++) {
        size_t l = strlen(words[w]);
        if (n - i >= l && memcmp(p + i, words[w], l) == 0)
            return i + l;
    }
    size_t j = i;
    if (j < n && p[j] == '-')
        j++;
    if (j >= n)
        return 0;
    if (p[j] == '0')
        j++;
    else if (p[j] >= '1' && p[j] <= '9')
        j = scan_digits(p, n, j);
    else
        return 0;
    if (j < n && p[j] == '.') {
        size_t k = scan_digits(p, n, j + 1);
        if (k == j + 1)
            return 0;
        j = k;
    }
    if (j < n && (p[j] == 'e' || p[j] == 'E')) {
        j++;
        if (j < n && (p[j] == '+' || p[j] == '-'))
            j++;
        size_t k = scan_digits(p, n, j);
        if (k == j)
            return 0;
        j = k;
    }
    return j;
}

bool json_valid(const unsigned char *p, size_t n)
{
    char *stack = NULL;
    size_t depth = 0, cap = 0, i = 0;
    bool want_value = true, ok = false;

    for (;;) {
        i = skip_ws(p, n, i);
        if (want_value) {
            if (i >= n)
                goto out;
            unsigned char c = p[i];
            if (c == '{' || c == '[') {
                if (depth == cap) {
                    size_t nc = cap ? cap * 2 : 64;
                    char *ns = realloc(stack, nc);
                    if (!ns)
                        goto out;
                    stack = ns, cap = nc;
                }
                stack[depth++] = (char)c;
                i = skip_ws(p, n, i + 1);
                if (i < n && p[i] == (c == '{' ? '}' : ']')) {
                    depth--, i++;
                    want_value = false;
                    continue;
                }
                if (c == '{') {
                    if (i >= n || p[i] != '"' || !(i = scan_string(p, n, i)))
                        goto out;
                    i = skip_ws(p, n, i);
                    if (i >= n || p[i] != ':')
                        goto out;
                    i++;
                }
                continue;
            }
            if (c == '"')
                i = scan_string(p, n, i);
            else
                i = scan_scalar(p, n, i);
            if (!i)
                goto out;
            want_value = false;
            continue;
        }
        if (depth == 0) {
            ok = (i == n);
            goto out;
        }
        if (i >= n)
            goto out;
        char top = stack[depth - 1];
        if (p[i] == ',') {
            i = skip_ws(p, n, i + 1);
            if (top == '{') {
                if (i >= n || p[i] != '"' || !(i = scan_string(p, n, i)))
                    goto out;
                i = skip_ws(p, n, i);
                if (i >= n || p[i] != ':')
                    goto out;
                i++;
            }
            want_value = true;
        } else if (p[i] == (top == '{' ? '}' : ']')) {
            depth--, i++;
        } else {
            goto out;
        }
    }
out:
    free(stack);
    return ok;
}

static void newline(FILE *f, int indent, size_t depth, const char *lead)
{
    fputc('\n', f);
    fputs(lead, f);
    for (size_t k = 0; k < depth * (size_t)indent; k++)
        fputc(' ', f);
}

void json_print(FILE *f, const unsigned char *p, size_t n, int indent, const char *lead)
{
    size_t depth = 0, i = 0;
    bool pretty = indent >= 0;
    if (!lead)
        lead = "";
    while (i < n) {
        unsigned char c = p[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            i++;
        } else if (c == '{' || c == '[') {
            size_t j = skip_ws(p, n, i + 1);
            if (j < n && (p[j] == '}' || p[j] == ']')) {
                fputc(c, f);
                fputc(p[j], f);
                i = j + 1;
                continue;
            }
            fputc(c, f);
            depth++;
            if (pretty)
                newline(f, indent, depth, lead);
            i++;
        } else if (c == '}' || c == ']') {
            if (depth)
                depth--;
            if (pretty)
                newline(f, indent, depth, lead);
            fputc(c, f);
            i++;
        } else if (c == ',') {
            fputc(',', f);
            if (pretty)
                newline(f, indent, depth, lead);
            i++;
        } else if (c == ':') {
            fputs(pretty ? ": " : ":", f);
            i++;
        } else if (c == '"') {
            size_t j = scan_string(p, n, i);
            if (!j)
                j = n;
            fwrite(p + i, 1, j - i, f);
            i = j;
        } else {
            size_t j = i;
            while (j < n && !strchr(" \t\r\n,:]}", p[j]))
                j++;
            if (j == i)
                j++;
            fwrite(p + i, 1, j - i, f);
            i = j;
        }
    }
}

void put_value_text(FILE *f, const unsigned char *p, size_t n, unsigned kind,
                    const char *indent, bool raw)
{
    switch (kind) {
    case SHMKV_KIND_JSON:
        if (json_valid(p, n)) {
            fputs(indent, f);
            json_print(f, p, n, 2, indent);
            fputc('\n', f);
            return;
        }
        /* --get keeps standard output for the value itself. */
        fprintf(raw ? stderr : f, "%s(not valid JSON, shown as text)\n", raw ? "shmkv-dump: " : indent);
        /* fall through */
    case SHMKV_KIND_STRING:
        if (raw) {
            fwrite(p, 1, n, f);
            if (!n || p[n - 1] != '\n')
                fputc('\n', f);
            return;
        }
        fputs(indent, f);
        for (size_t i = 0; i < n; i++) {
            size_t j = i;
            while (j < n && p[j] != '\n')
                j++;
            put_text(f, p + i, j - i, true);
            if (j < n && j + 1 < n) {
                fputc('\n', f);
                fputs(indent, f);
            }
            i = j;
        }
        fputc('\n', f);
        return;
    case SHMKV_KIND_BYTES:
        put_hexdump(f, p, n, indent);
        return;
    default:
        fprintf(f, "%s(unknown kind %u, shown as bytes)\n", indent, kind);
        put_hexdump(f, p, n, indent);
        return;
    }
}

void put_value_json(FILE *f, const unsigned char *p, size_t n, unsigned kind)
{
    fprintf(f, "\"kind\":\"%s\",", kind_name(kind));
    if (kind > SHMKV_KIND_JSON)
        fprintf(f, "\"kind_code\":%u,", kind);
    fprintf(f, "\"size\":%zu,", n);
    if (kind == SHMKV_KIND_JSON && json_valid(p, n)) {
        fputs("\"value\":", f);
        json_print(f, p, n, -1, "");
        return;
    }
    if (kind == SHMKV_KIND_JSON)
        fputs("\"json_invalid\":true,", f);
    if ((kind == SHMKV_KIND_JSON || kind == SHMKV_KIND_STRING) && utf8_valid(p, n)) {
        fputs("\"value\":", f);
        put_jstr(f, p, n);
        return;
    }
    if (kind == SHMKV_KIND_JSON || kind == SHMKV_KIND_STRING)
        fputs("\"utf8_invalid\":true,", f);
    fputs("\"value_hex\":\"", f);
    put_hex(f, p, n);
    fputc('"', f);
}

void fmt_bytes(char *buf, size_t n, uint64_t v)
{
    static const char *const unit[] = { "KiB", "MiB", "GiB", "TiB", "PiB" };
    if (v < 1024) {
        snprintf(buf, n, "%" PRIu64 " B", v);
        return;
    }
    double d = (double)v / 1024;
    int u = 0;
    while (d >= 1024 && u < 4)
        d /= 1024, u++;
    snprintf(buf, n, "%.1f %s (%" PRIu64 " B)", d, unit[u], v);
}
