//go:build !race

package kv

// slow scales the wall-clock bounds of tests that guard against a cost
// growing with an input (see slow_race_test.go).
const slow = 1
