// Package libshmkv makes the C library's sources part of what Go's build
// cache keys the k6 extension on.
//
// The extension (../cgo) compiles libshmkv/src/*.c through small files that
// #include them. Go hashes the files of a package's own directory, not the
// files those include, so by itself an edit to the C library would not
// rebuild the extension. Embedding the sources here puts their bytes into
// this package's build inputs; the extension imports this package, and Go
// rebuilds an importer whenever an import changes. Nothing reads the
// embedded copy at run time, and the linker drops it from binaries.
package libshmkv

import "embed"

//go:embed include src
var sources embed.FS
