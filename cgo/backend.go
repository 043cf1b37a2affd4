//go:build cgo

package kv

// backendStore is the seam between the script API and what holds the data. The
// libshmkv handle (*db) is the one implementation; a store on another engine
// (for tests that outgrow one host) would implement the same methods, with
// values as bytes plus a Kind and errors as *CError codes (or *kvError).
type backendStore interface {
	// Reads land in scratch (the handle's: never kept) and come back in
	// slices of their own, of the value's exact size.
	get(key string, scratch []byte) ([]byte, Kind, error)
	set(key string, val []byte, kind Kind) error
	del(key string) (existed bool, err error)
	exists(key string) (bool, error)
	size() (uint64, error)
	clear() error
	rebuildIndex() error
	// ordered turns the key index on for a store of at least minKeys keys
	// that has none, so that scan pages stop costing a pass over the store.
	ordered(minKeys uint64) error
	incr(key string, delta int64, kind Kind) (int64, error)
	cas(key string, expect []byte, val []byte, kind Kind) (bool, error)
	setIfAbsent(key string, val []byte, kind Kind) (bool, error)
	getOrSet(key string, val []byte, kind Kind, scratch []byte) ([]byte, Kind, bool, error)
	swap(key string, val []byte, kind Kind, scratch []byte) ([]byte, Kind, bool, error)
	compareAndDelete(key string, expect []byte) (bool, error)
	randomKey(prefix string, scratch []byte) (string, bool, error)
	list(prefix string, limit uint64) ([]entry, error)
	scan(prefix, after string, limit uint64, keysOnly bool) ([]entry, error)
	count(prefix string) (uint64, error)
	randomKeys(prefix string, n uint64, unique bool) ([]string, error)
	// getMany also answers the scratch it used, grown when the values
	// did not fit, for the caller to keep.
	getMany(keys []string, scratch []byte) ([]found, []byte, error)
	setMany(keys []string, vals [][]byte, kinds []Kind) error
	deleteMany(keys []string) (uint64, error)
	deletePrefix(prefix string, limit uint64) (uint64, error)
	close() error
}

var _ backendStore = (*db)(nil)
