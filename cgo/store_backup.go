//go:build cgo

package kv

/*
#include <stdlib.h>
#include "shmkv.h"
*/
import "C"

import "unsafe"

// codeCorrupt: a damaged store, or a backup cut short.
const codeCorrupt = int(C.SHMKV_ECORRUPT)

// backupInfo mirrors shmkv_backup_info.
type backupInfo struct {
	Entries    uint64
	Bytes      uint64
	PauseNs    uint64
	BestEffort bool
}

// backup writes a backup of the store to path (see shmkv_backup).
func (d *db) backup(path string, concurrent bool) (backupInfo, error) {
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	var flags C.unsigned
	if concurrent {
		flags = C.SHMKV_BACKUP_CONCURRENT
	}
	var out C.shmkv_backup_info
	if rc := C.shmkv_backup(d.p, cp, flags, &out); rc != 0 {
		return backupInfo{}, cerr(rc)
	}
	return backupInfo{Entries: uint64(out.entries), Bytes: uint64(out.bytes),
		PauseNs: uint64(out.pause_ns), BestEffort: out.best_effort != 0}, nil
}

// restore replaces the store's contents with a backup's (see
// shmkv_restore). The counts are the backup's, also when a guard refused.
func (d *db) restore(path string, maxEntries, maxBytes uint64) (entries, bytes uint64, err error) {
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	var out C.shmkv_restore_info
	rc := C.shmkv_restore(d.p, cp, C.uint64_t(maxEntries), C.uint64_t(maxBytes), &out)
	return uint64(out.entries), uint64(out.bytes), cerr(rc)
}
