/* Compiles libshmkv/src/claims.c into the Go package (cgo builds every .c file in
 * the package directory), so that go build and xk6 need no prebuilt library. */
#include "../libshmkv/src/claims.c"
