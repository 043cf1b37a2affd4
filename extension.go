// Package libshmkv is the k6 extension k6/x/kv, as xk6 finds it:
//
//	xk6 build --with github.com/libshmkv/libshmkv@<version>
//
// The extension itself is the package ./cgo; this file only imports it, so
// that the module's root path is what users name, as with any extension.
// The C library it compiles travels in the module (./libshmkv).
package libshmkv

import _ "github.com/libshmkv/libshmkv/cgo" // registers k6/x/kv
