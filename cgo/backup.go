//go:build cgo

package kv

import (
	"errors"
	"math"
	"os"
	"path/filepath"

	"github.com/grafana/sobek"
)

// backup() and restore(): the xk6-kv fork's options, results and error
// names over shmkv_backup/shmkv_restore. A backup is a store file of the
// library's own format (docs/format.md, "Backups"), not the fork's bbolt
// snapshot. Paths follow the file methods' rule (io.go): taken as given, a
// relative one from the directory k6 runs in.

// Error names of the fork's snapshots that only these methods use.
const (
	ErrBackupOptionsRequired  = "BackupOptionsRequiredError"
	ErrRestoreOptionsRequired = "RestoreOptionsRequiredError"
	ErrSnapshotBudget         = "SnapshotBudgetExceededError"
)

// bestEffortWarning is the warning a best-effort backup carries: what such
// a copy may and may not hold (see shmkv_backup).
const bestEffortWarning = "allowConcurrentWrites is best-effort: writers were not all paused at once, " +
	"so the backup is not one moment of the store: writes made while it was taken may or may not be in it, " +
	"and a batch (setMany, deleteMany) made meanwhile may be in it in part"

// snapshotOptions reads the options object, which the fork requires.
func (c *call) snapshotOptions(required string, known ...string) *sobek.Object {
	if c.err == nil && absent(c.args.Argument(0)) {
		c.fail(newErr(required, "%s: options {fileName, ...} are required", c.name))
		return nil
	}
	return c.options(0, known...)
}

func opBackup(c *call) sobek.Value {
	o := c.snapshotOptions(ErrBackupOptionsRequired, "fileName", "allowConcurrentWrites")
	file := c.fileName(o)
	concurrent := c.flag(o, "allowConcurrentWrites", false)
	if c.err == nil && c.h.closed {
		c.fail(errClosed)
	}
	if c.err != nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o750); err != nil {
		c.fail(fileOpError(c.name, ErrFileExport, file, err))
		return nil
	}
	var info backupInfo
	c.do(func(s backendStore) (err error) {
		d, ok := s.(*db)
		if !ok {
			return newErr(ErrStore, "%s: this store cannot be backed up", c.name)
		}
		info, err = d.backup(file, concurrent)
		if err != nil {
			return snapshotError(c.name, ErrFileExport, file, err)
		}
		return nil
	})
	if c.err != nil {
		return nil
	}
	kv := []any{"totalEntries", info.Entries, "bytesWritten", info.Bytes, "bestEffort", info.BestEffort,
		"pauseMs", float64(info.PauseNs) / 1e6, "fileName", file}
	if info.BestEffort {
		kv = append(kv, "warning", bestEffortWarning)
	}
	return c.object(kv...)
}

func opRestore(c *call) sobek.Value {
	o := c.snapshotOptions(ErrRestoreOptionsRequired, "fileName", "maxEntries", "maxBytes")
	file := c.fileName(o)
	// As on the fork, a guard of 0 or less is no guard.
	maxEntries := max(c.number(o, "maxEntries", math.MinInt64>>1, math.MaxInt64>>1, 0, false), 0)
	maxBytes := max(c.number(o, "maxBytes", math.MinInt64>>1, math.MaxInt64>>1, 0, false), 0)
	if c.err != nil {
		return nil
	}
	var entries, bytes uint64
	c.do(func(s backendStore) (err error) {
		d, ok := s.(*db)
		if !ok {
			return newErr(ErrStore, "%s: this store cannot be restored into", c.name)
		}
		entries, bytes, err = d.restore(file, uint64(maxEntries), uint64(maxBytes))
		switch {
		case err == nil:
			return nil
		case codeOf(err) == codeFull && maxEntries > 0 && entries > uint64(maxEntries):
			return newErr(ErrSnapshotBudget, "%s: %s holds %d entries, more than maxEntries %d; the store was not changed",
				c.name, file, entries, maxEntries)
		case codeOf(err) == codeFull && maxBytes > 0 && bytes > uint64(maxBytes):
			return newErr(ErrSnapshotBudget, "%s: %s holds %d bytes of keys and values, more than maxBytes %d; the store was not changed",
				c.name, file, bytes, maxBytes)
		}
		return snapshotError(c.name, ErrFileRead, file, err)
	})
	if c.err != nil {
		return nil
	}
	return c.object("totalEntries", entries, "totalBytes", bytes, "fileName", file)
}

// fileOpError names an error of the file system about file.
func fileOpError(method, name, file string, err error) *kvError {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return newErr(ErrFileNotFound, "%s: %s: no such file or folder (a relative path is taken from the directory k6 runs in)", method, file)
	case errors.Is(err, os.ErrPermission):
		return newErr(ErrFilePermission, "%s: %s: permission denied", method, file)
	}
	return newErr(name, "%s: %s: %v", method, file, err)
}

// snapshotError names a library error of backup (name: SnapshotExportError)
// or restore (SnapshotReadError): the file's own problems get the fork's
// snapshot names, the store's (a lock timeout, a full store) their usual
// ones.
func snapshotError(method, name, file string, err error) error {
	code := codeOf(err)
	switch code {
	case -int(errNoEnt), -int(errNotDir):
		return newErr(ErrFileNotFound, "%s: %s: no such file or folder (a relative path is taken from the directory k6 runs in)", method, file)
	case -int(errAccess), -int(errROFS):
		return newErr(ErrFilePermission, "%s: %s: %v", method, file, err)
	case codeNotStore, codeVersion, codeABI, codeCorrupt:
		return newErr(ErrFileRead, "%s: %s is not a usable backup: %v; the store was not changed", method, file, err)
	case codeNoSpace:
		if name == ErrFileExport {
			return newErr(ErrFileExport, "%s: writing %s: %v (nothing was left at that path)", method, file, err)
		}
		return storeError(method, "", 0, err)
	case codeTimedOut, codeFull, codeTooMany, codeReadOnly:
		return storeError(method, "", 0, err)
	}
	if code < 0 && code > -4096 {
		return newErr(name, "%s: %s: %v", method, file, err)
	}
	return storeError(method, "", 0, err)
}
