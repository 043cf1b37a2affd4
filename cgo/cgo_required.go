//go:build !cgo

// Package kv (k6/x/kv) compiles libshmkv with cgo. This file is the only
// one built when cgo is off, so that the build stops with an error naming
// the cause instead of a list of undefined names.
package kv

var _ = kv_needs_cgo_build_with_CGO_ENABLED_1_and_a_C_compiler
