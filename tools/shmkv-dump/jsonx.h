/* jsonx.h - JSON helpers of shmkv-dump --export and shmkv-load (jsonx.c). */
#ifndef SHMKV_JSONX_H
#define SHMKV_JSONX_H


#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Past the JSON whitespace at p[i]. */
size_t jx_ws(const unsigned char *p, size_t n, size_t i);
/* Just past the string that starts at p[i] == '"'. */
size_t jx_str_end(const unsigned char *p, size_t n, size_t i);
/* End of the valid JSON value that starts at p[i]. */
size_t jx_value_end(const unsigned char *p, size_t n, size_t i);
/* The JSON string [i, end) (quotes included) decoded into a new buffer
 * (*len bytes, NUL-terminated); a lone surrogate becomes U+FFFD, as Go's
 * decoder makes it. NULL when out of memory. */
char *jx_str_decode(const unsigned char *p, size_t i, size_t end, size_t *len);
/* A valid JSON text without the whitespace between its tokens, as Go's
 * json.Compact writes it. */
void jx_put_compact(FILE *f, const unsigned char *p, size_t n);

#endif
