//go:build race

package kv

// slow scales the wall-clock bounds of tests that guard against a cost
// growing with an input (not against a speed): the race detector makes
// the code under test several times slower.
const slow = 10
