//go:build cgo && shmkv_werror

package kv

// The test suite builds with -tags shmkv_werror, so that a C warning fails
// CI as it does in the meson build; users' builds only print warnings.

// #cgo CFLAGS: -Werror
import "C"
