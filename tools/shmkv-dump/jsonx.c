/*
 * jsonx.c - small JSON helpers shared by shmkv-dump --export and
 * shmkv-load: spans of values, string decoding, compaction. They take
 * text that json_valid() (out.c) accepted.
 */
#include "jsonx.h"

#include <stdlib.h>

/* A valid JSON text without the whitespace between its tokens. */
void jx_put_compact(FILE *f, const unsigned char *p, size_t n)
{
    bool in_str = false, esc = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (in_str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            continue;
        } else if (c == '"') {
            in_str = true;
        }
        fputc(c, f);
    }
}

size_t jx_ws(const unsigned char *p, size_t n, size_t i)
{
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
        i++;
    return i;
}

/* End of the string that starts at p[i] == '"' (just past its quote). */
size_t jx_str_end(const unsigned char *p, size_t n, size_t i)
{
    for (i++; i < n; i++) {
        if (p[i] == '\\')
            i++;
        else if (p[i] == '"')
            return i + 1;
    }
    return n;
}

/* End of the (valid) JSON value that starts at p[i]. */
size_t jx_value_end(const unsigned char *p, size_t n, size_t i)
{
    if (p[i] == '"')
        return jx_str_end(p, n, i);
    size_t depth = 0;
    for (; i < n; i++) {
        unsigned char c = p[i];
        if (c == '"') {
            i = jx_str_end(p, n, i) - 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0)
                return i;
            if (--depth == 0)
                return i + 1;
        } else if (depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r')) {
            return i;
        }
    }
    return n;
}

static unsigned hex4(const unsigned char *p)
{
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char c = p[k];
        v = v * 16 + (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

static void put_utf8(FILE *f, unsigned cp)
{
    if (cp < 0x80) {
        fputc((int)cp, f);
    } else if (cp < 0x800) {
        fputc((int)(0xC0 | cp >> 6), f);
        fputc((int)(0x80 | (cp & 63)), f);
    } else if (cp < 0x10000) {
        fputc((int)(0xE0 | cp >> 12), f);
        fputc((int)(0x80 | ((cp >> 6) & 63)), f);
        fputc((int)(0x80 | (cp & 63)), f);
    } else {
        fputc((int)(0xF0 | cp >> 18), f);
        fputc((int)(0x80 | ((cp >> 12) & 63)), f);
        fputc((int)(0x80 | ((cp >> 6) & 63)), f);
        fputc((int)(0x80 | (cp & 63)), f);
    }
}

/* Decode the JSON string [i, end) (quotes included) into a new C buffer;
 * a lone surrogate becomes U+FFFD, as Go's decoder makes it. */
char *jx_str_decode(const unsigned char *p, size_t i, size_t end, size_t *len)
{
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    if (!f)
        return NULL;
    for (i++; i + 1 < end; i++) {
        unsigned char c = p[i];
        if (c != '\\') {
            fputc(c, f);
            continue;
        }
        c = p[++i];
        switch (c) {
        case 'b': fputc('\b', f); break;
        case 'f': fputc('\f', f); break;
        case 'n': fputc('\n', f); break;
        case 'r': fputc('\r', f); break;
        case 't': fputc('\t', f); break;
        case 'u': {
            unsigned cp = hex4(p + i + 1);
            i += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && i + 6 < end && p[i + 1] == '\\' && p[i + 2] == 'u') {
                unsigned lo = hex4(p + i + 3);
                if (lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
            }
            if (cp >= 0xD800 && cp < 0xE000)
                cp = 0xFFFD;
            put_utf8(f, cp);
            break;
        }
        default: fputc(c, f); break; /* " \ / */
        }
    }
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    *len = blen;
    return buf;
}

