//go:build cgo

package kv

import (
	"errors"
	"fmt"
)

// Error names a script sees in err.name. docs/api.md lists them; keep the
// two in step.
const (
	ErrKeyNotFound         = "KeyNotFoundError"
	ErrInvalidOptions      = "InvalidOptionsError"
	ErrOptionsConflict     = "KVOptionsConflictError"
	ErrInitContext         = "InitContextError"
	ErrSerializer          = "SerializerError"
	ErrValueParse          = "ValueParseError"
	ErrValueNumberRequired = "ValueNumberRequiredError"
	ErrStoreClosed         = "StoreClosedError"
	ErrStoreReadOnly       = "StoreReadOnlyError"
	ErrKeyTooLong          = "KeyTooLongError"
	ErrValueTooLarge       = "ValueTooLargeError"
	ErrStoreFull           = "StoreFullError"
	ErrLockTimeout         = "LockTimeoutError"
	ErrStore               = "StoreError"
	ErrInvalidCursor       = "InvalidCursorError"
	ErrClaimHeld           = "ClaimHeldError"
	ErrClaimStale          = "ClaimStaleError"
	ErrInvalidBackend      = "InvalidBackendError"
	ErrInvalidSerializer   = "InvalidSerializationError"
	ErrDiskPath            = "DiskPathError"
	ErrDiskStoreOpen       = "DiskStoreOpenError"

	// Files of importCSV/importJSONL/exportCSV/exportJSONL/validate*: the
	// xk6-kv fork's names (it shares them with its snapshots).
	ErrFileNotFound       = "SnapshotNotFoundError"
	ErrFilePermission     = "SnapshotPermissionError"
	ErrFileIO             = "SnapshotIOError"
	ErrFileRead           = "SnapshotReadError"
	ErrFileExport         = "SnapshotExportError"
	ErrMetricsUnavailable = "MetricsUnavailableError"
)

// kvError is what a method rejects with (or openKv throws): the JS object
// gets name and message, and errors when a batch names its bad entries.
type kvError struct {
	Name    string
	Message string
	Errors  []entryError
}

// entryError is one bad entry of a batch (xk6-kv's ManyEntryError).
type entryError struct {
	Key     string
	Name    string
	Message string
}

func (e *kvError) Error() string { return e.Name + ": " + e.Message }

func newErr(name, format string, args ...any) *kvError {
	return &kvError{Name: name, Message: fmt.Sprintf(format, args...)}
}

// codeNames names the rejection for each library code; a code not listed
// is a StoreError.
var codeNames = map[int]string{
	codeNotFound: ErrKeyNotFound,
	codeKeySize:  ErrKeyTooLong,
	codeValSize:  ErrValueTooLarge,
	codeNotInt:   ErrValueParse,
	codeOverflow: ErrValueParse,
	codeFull:     ErrStoreFull,
	codeNoSpace:  ErrStoreFull,
	codeReadOnly: ErrStoreReadOnly,
	codeIncompat: ErrOptionsConflict,
	codeName:     ErrInvalidOptions,
	codeSegments: ErrInvalidOptions,
	codeReserve:  ErrInvalidOptions,
	codeInval:    ErrInvalidOptions,
	codeTimedOut: ErrLockTimeout,
	codeTooMany:  ErrStoreFull,
	// The claim methods answer these with null or false; a method that
	// ever passes one on rejects with these names.
	codeHeld:  ErrClaimHeld,
	codeStale: ErrClaimStale,
}

// noRoom reports whether err is the store or its disk being full.
func noRoom(err error) bool {
	code := codeOf(err)
	return code == codeFull || code == codeNoSpace || code == codeTooMany
}

// storeError turns an error from a store call into the rejection: the name
// from the library's code, a message naming the method and, where it
// helps, the key and the value's size.
func storeError(method, key string, vlen int, err error) *kvError {
	var ke *kvError
	if errors.As(err, &ke) {
		return ke
	}
	code := codeOf(err)
	name, ok := codeNames[code]
	if !ok {
		name = ErrStore
	}
	switch code {
	case codeNotFound:
		return newErr(name, "%s: key %q not found", method, key)
	case codeKeySize:
		if key == "" {
			return newErr(ErrInvalidOptions, "%s: key must not be empty", method)
		}
		return newErr(name, "%s: key is %d bytes long; the limit is %d", method, len(key), keyMax)
	case codeValSize:
		return newErr(name, "%s: value is %d bytes once encoded; the limit is %d", method, vlen, valueMax)
	case codeNotInt:
		return newErr(name, "%s: the value of key %q is not an integer", method, key)
	case codeOverflow:
		return newErr(name, "%s: the new value of key %q overflows a 64-bit integer", method, key)
	case codeHeld:
		return newErr(name, "%s: key %q is held by another live claim", method, key)
	case codeStale:
		return newErr(name, "%s: no live claim on key %q with that token", method, key)
	}
	return newErr(name, "%s: %s", method, err.Error())
}
