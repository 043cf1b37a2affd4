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
	ErrStore               = "StoreError"
)

// kvError is what a method rejects with (or openKv throws): the JS object
// gets exactly these two fields.
type kvError struct {
	Name    string
	Message string
}

func (e *kvError) Error() string { return e.Name + ": " + e.Message }

func newErr(name, format string, args ...any) *kvError {
	return &kvError{Name: name, Message: fmt.Sprintf(format, args...)}
}

// mapError turns an error from the store layer into a kvError. op names the
// method, for the message.
func mapError(op string, err error) *kvError {
	if err == nil {
		return nil
	}
	var ke *kvError
	if errors.As(err, &ke) {
		return ke
	}
	code := codeOf(err)
	msg := fmt.Sprintf("%s: %s", op, err.Error())
	switch code {
	case 0:
		return &kvError{Name: ErrStore, Message: msg}
	case codeNotFound:
		return &kvError{Name: ErrKeyNotFound, Message: msg}
	case codeKeySize:
		return &kvError{Name: ErrKeyTooLong, Message: msg}
	case codeValSize:
		return &kvError{Name: ErrValueTooLarge, Message: msg}
	case codeNotInt, codeOverflow:
		return &kvError{Name: ErrValueParse, Message: msg}
	case codeFull, codeNoSpace:
		return &kvError{Name: ErrStoreFull, Message: msg}
	case codeReadOnly:
		return &kvError{Name: ErrStoreReadOnly, Message: msg}
	case codeIncompat:
		return &kvError{Name: ErrOptionsConflict, Message: msg}
	case codeName, codeInval:
		return &kvError{Name: ErrInvalidOptions, Message: msg}
	default:
		return &kvError{Name: ErrStore, Message: msg}
	}
}
