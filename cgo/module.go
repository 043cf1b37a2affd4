//go:build cgo

// Package kv is the k6 extension k6/x/kv: a drop-in for the xk6-kv script
// API whose store is libshmkv, a key-value store in one shared mapping. Every
// VU of a k6 process, and every k6 process on the host, that opens the same
// path (disk backend) or name (memory backend) shares one store.
//
// Build a k6 with it through xk6 (cgo must be enabled):
//
//	CGO_ENABLED=1 xk6 build --with github.com/libshmkv/libshmkv/cgo=./cgo
//
// The C library is compiled from ../libshmkv/src by cgo; no prebuilt
// library or environment variable is needed.
package kv

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"

	"github.com/grafana/sobek"
	"go.k6.io/k6/v2/js/modules"
)

func init() {
	modules.Register("k6/x/kv", new(RootModule))
}

// RootModule is the process-wide part of the extension.
type RootModule struct {
	exitMu         sync.Mutex
	exitSubscribed bool
}

// ModuleInstance is the per-VU part of the extension.
type ModuleInstance struct {
	vu modules.VU
}

var (
	_ modules.Module   = &RootModule{}
	_ modules.Instance = &ModuleInstance{}
)

// NewModuleInstance is called once per VU that imports k6/x/kv.
func (r *RootModule) NewModuleInstance(vu modules.VU) modules.Instance {
	r.subscribeExit(vu)
	return &ModuleInstance{vu: vu}
}

// Exports lists what scripts import.
func (mi *ModuleInstance) Exports() modules.Exports {
	return modules.Exports{
		Named: map[string]any{
			"openKv": mi.openKv,
		},
	}
}

// subscribeExit arranges, once per process, for every store to be closed
// when k6 is about to exit: a memory store's shared-memory object is then
// removed by its last process, and a disk store is marked cleanly closed.
//
// k6 keeps its event types in an internal package, so they are matched by
// name rather than by constant.
func (r *RootModule) subscribeExit(vu modules.VU) {
	r.exitMu.Lock()
	defer r.exitMu.Unlock()
	if r.exitSubscribed {
		return
	}
	g := vu.Events().Global
	if g == nil || (reflect.ValueOf(g).Kind() == reflect.Pointer && reflect.ValueOf(g).IsNil()) {
		return
	}
	r.exitSubscribed = true
	// Every global event type k6 has now (Init, TestStart, TestEnd, Exit)
	// and a few more, so that a renumbering cannot hide Exit.
	_, ch := g.Subscribe(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	go func() {
		for evt := range ch {
			if fmt.Sprint(evt.Type) == "Exit" {
				live.closeAll()
			}
			if evt.Done != nil {
				evt.Done()
			}
		}
	}()
}

// openKv(options) opens or joins a store; see docs/api.md.
func (mi *ModuleInstance) openKv(call sobek.FunctionCall) sobek.Value {
	rt := mi.vu.Runtime()
	if mi.vu.State() != nil {
		panic(throwable(rt, newErr(ErrInitContext,
			"openKv must be called in the init context (at the top level of the script), not in setup, default or teardown")))
	}
	cfg, kerr := parseOptions(call.Argument(0))
	if kerr != nil {
		panic(throwable(rt, kerr))
	}
	if len(cfg.ignored) > 0 {
		if names := live.newlyIgnored(cfg.ignored); names != "" {
			if env := mi.vu.InitEnv(); env != nil && env.Logger != nil {
				env.Logger.Warnf("k6/x/kv: options accepted for xk6-kv compatibility but without effect here: %s", names)
			}
		}
	}
	h, kerr := newHandle(rt, cfg)
	if kerr != nil {
		panic(throwable(rt, kerr))
	}
	// Every openKv opens a library handle; the library finds the store
	// already mapped in this process (by device and inode) and shares the
	// mapping, or judges this opener's options against the store's.
	made, kerr := makeParents(cfg)
	if kerr != nil {
		panic(throwable(rt, kerr))
	}
	d, err := openDB(paramsOf(cfg))
	if err != nil {
		for _, dir := range made { // a failed open leaves nothing behind
			_ = os.Remove(dir)
		}
		panic(throwable(rt, openError(cfg, err)))
	}
	h.db = d
	h.vu = mi.vu
	// The metrics are registered here, in the init context: reportStats and
	// the operation metrics run later, when only the VU's state is there.
	if env := mi.vu.InitEnv(); env != nil && env.Registry != nil {
		m, err := registerMetrics(env.Registry)
		if err != nil {
			_ = d.close()
			panic(throwable(rt, newErr(ErrMetricsUnavailable, "openKv: %v", err)))
		}
		h.metrics = m
		if cfg.opMetrics {
			h.ops = newOpMetrics(m, cfg, d)
		}
	}
	live.add(h)
	return h.object()
}

func paramsOf(c *config) openParams {
	return openParams{
		backend:  c.backend,
		where:    c.where(),
		track:    c.track,
		segments: c.segments,
		reserve:  c.reserve,
		timeout:  c.lockTimeoutMs,
		flags:    c.flags,
	}
}

// makeParents creates the missing folders of a disk store's path, for the
// owner only, as xk6-kv does (a read-only open creates nothing), and
// returns those it created, deepest first.
func makeParents(c *config) ([]string, *kvError) {
	if c.backend != BackendDisk || c.flags&flagReadOnly != 0 {
		return nil, nil
	}
	dir := filepath.Dir(c.path)
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || d == filepath.Dir(d) {
			break
		}
		missing = append(missing, d)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, newErr(ErrDiskPath, "openKv: cannot create the folder %q of disk store %q: %v", dir, c.path, err)
	}
	return missing, nil
}

// openError words a failed open, naming the option the library refused.
func openError(c *config, err error) *kvError {
	code := codeOf(err)
	if c.backend == BackendDisk {
		// xk6-kv's names for a disk store that cannot be opened.
		switch code {
		case -int(errIsDir), -int(errNotDir):
			return newErr(ErrDiskPath, "openKv: cannot open %s: %s", c.describe(), err.Error())
		case codeNotStore, codeVersion, codeABI, -int(errAccess), -int(errNoEnt), -int(errLoop), -int(errROFS):
			return newErr(ErrDiskStoreOpen, "openKv: cannot open %s: %s", c.describe(), err.Error())
		}
	}
	switch code {
	case codeName:
		return optErr(`option "name" (%q): %s`, c.name, err.Error())
	case codeSegments:
		return optErr(`option "segments" (%d): %s`, c.segments, err.Error())
	case codeReserve:
		return optErr(`option "reserve" (%d bytes): %s`, c.reserve, err.Error())
	}
	return storeError("openKv: cannot open "+c.describe(), "", 0, err)
}

// throwable makes an Error object (with a stack) to throw.
func throwable(rt *sobek.Runtime, e *kvError) *sobek.Object {
	// An error the engine makes (it has a stack), made an Error rather than
	// a TypeError; name defined on it, not set, which an Error.prototype
	// frozen by the script would refuse. No global is looked up.
	o := rt.NewTypeError("%s", e.Message)
	_ = o.SetPrototype(errorPrototype(rt))
	_ = o.DefineDataProperty("name", rt.ToValue(e.Name), sobek.FLAG_TRUE, sobek.FLAG_TRUE, sobek.FLAG_FALSE)
	return o
}
