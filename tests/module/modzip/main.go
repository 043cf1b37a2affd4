// Command modzip writes a Go module version the way a module proxy serves
// it, into a folder usable as GOPROXY=file://<folder>:
//
//	<folder>/<module>/@v/list
//	<folder>/<module>/@v/<version>.info, .mod, .zip
//
// The zip is made by golang.org/x/mod/zip, the code the go command and the
// public proxy use, from a directory holding the files of the module.
//
//	modzip -dir DIR -proxy FOLDER -version v0.0.0-test
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/zip"
)

func main() {
	dir := flag.String("dir", ".", "directory with the module's files (its go.mod at the top)")
	proxy := flag.String("proxy", "", "proxy folder to write into")
	version := flag.String("version", "v0.0.0-test", "version to publish")
	flag.Parse()
	if err := run(*dir, *proxy, *version); err != nil {
		fmt.Fprintln(os.Stderr, "modzip:", err)
		os.Exit(1)
	}
}

func run(dir, proxy, version string) error {
	if proxy == "" {
		return fmt.Errorf("-proxy is required")
	}
	gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return err
	}
	path := modfile.ModulePath(gomod)
	if path == "" {
		return fmt.Errorf("%s/go.mod names no module", dir)
	}
	mv := module.Version{Path: path, Version: version}
	if err := module.Check(path, version); err != nil {
		return err
	}
	esc, err := module.EscapePath(path)
	if err != nil {
		return err
	}
	out := filepath.Join(proxy, esc, "@v")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := zip.CreateFromDir(&buf, mv, dir); err != nil {
		return fmt.Errorf("zip: %w", err)
	}
	info := fmt.Sprintf(`{"Version":%q,"Time":%q}`+"\n", version, time.Now().UTC().Format(time.RFC3339))
	files := map[string][]byte{
		version + ".zip":  buf.Bytes(),
		version + ".mod":  gomod,
		version + ".info": []byte(info),
		"list":            []byte(version + "\n"),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("%s@%s: %d bytes of zip in %s\n", path, version, buf.Len(), out)
	return nil
}
