//go:build cgo

package kv

import (
	"time"

	"github.com/grafana/sobek"
	"go.k6.io/k6/v2/metrics"
)

// stats(), allocationStats() and reportStats(): the xk6-kv fork's shapes,
// filled with what holds for a libshmkv store, plus what only it can say
// (processes attached, segments, bytes of the region).

// storeStats is what one look at the store gathers.
type storeStats struct {
	info storeInfo
	// with the key index: its count and whether it agrees with the tables
	indexKeys  uint64
	consistent bool
	// claims on keys: live, and those whose lease ran out (not claimed
	// again since); claimsKnown false when the store could not count them
	claimsLive, claimsExpired uint64
	claimsKnown               bool
}

// countClaims counts the claims on keys with the prefix. known is false
// for a read-only handle: the library counts claims under the segment
// locks, which such a handle cannot take.
func countClaims(s backendStore, prefix string) (live, expired uint64, known bool, err error) {
	cs, ok := s.(claimStore)
	if !ok {
		return 0, 0, false, nil
	}
	live, expired, err = cs.claimCount(prefix)
	if codeOf(err) == codeReadOnly {
		return 0, 0, false, nil
	}
	return live, expired, err == nil, err
}

// gather reads the store's counters. With the key index, the index's count
// (two ranks under the index lock) is compared with the tables' (each
// segment's count under its lock): they are read one after the other, so a
// write in between can make them differ for a moment. A difference is read
// again, up to four times, and only a difference that persists while the
// tables' count holds still is reported as inconsistent.
func gather(s backendStore) (st storeStats, err error) {
	if st, err = gatherKeys(s); err != nil {
		return st, err
	}
	st.claimsLive, st.claimsExpired, st.claimsKnown, err = countClaims(s, "")
	return st, err
}

func gatherKeys(s backendStore) (storeStats, error) {
	d, ok := s.(*db)
	if !ok {
		n, err := s.size()
		return storeStats{info: storeInfo{Keys: n}, consistent: true}, err
	}
	var st storeStats
	for try := 0; ; try++ {
		info, err := d.stat()
		if err != nil {
			return st, err
		}
		st = storeStats{info: info, consistent: true}
		if !info.TrackKeys {
			return st, nil
		}
		// The index's count against the tables' (shmkv_stat sums the
		// segments' counts; count("") asks the index). Writers between the
		// two reads can make them differ for a moment: a difference counts
		// only when the tables' count held still across a second try.
		if st.indexKeys, err = d.count(""); err != nil {
			return st, err
		}
		again, err := d.stat()
		if err != nil {
			return st, err
		}
		st.info = again
		st.consistent = st.indexKeys == again.Keys
		if st.consistent || (again.Keys == info.Keys && try >= 1) || try >= 3 {
			return st, nil
		}
	}
}

func (c *call) serialization() string {
	if c.h.codec.stringMode {
		return serString
	}
	return serJSON
}

func opStats(c *call) sobek.Value {
	var st storeStats
	c.do(func(s backendStore) (err error) { st, err = gather(s); return })
	if c.err != nil {
		return nil
	}
	info := st.info
	var index, disk any = sobek.Null(), sobek.Null()
	if info.TrackKeys {
		// The key array and the ordered index are kept together, under one
		// lock, with one count: keysList and ost are that count; keysMap is
		// the hash tables' count of keys.
		index = c.object("enabled", true, "keysList", st.indexKeys, "keysMap", info.Keys,
			"ost", st.indexKeys, "consistent", st.consistent)
	}
	if c.h.cfg.backend == BackendDisk {
		disk = c.object("path", c.h.cfg.path, "sizeBytes", info.FileBytes, "readOnly", c.h.cfg.readOnly())
	}
	var claims any = sobek.Null()
	if st.claimsKnown {
		claims = c.object("live", st.claimsLive, "expired", st.claimsExpired)
	}
	var free uint64
	if info.FileBytes > info.UsedBytes {
		free = info.FileBytes - info.UsedBytes
	}
	store := c.object(
		"processes", info.Attached,
		"segments", info.Segments,
		"usedBytes", info.UsedBytes,
		"freeBytes", free,
		"fileBytes", info.FileBytes,
		"reserveBytes", info.Reserve,
		"formatVersion", info.FormatVersion,
		"libraryVersion", LibraryVersion())
	return c.object(
		"backend", c.h.cfg.backend.String(),
		"serialization", c.serialization(),
		"trackKeys", info.TrackKeys,
		"count", info.Keys,
		"claims", claims,
		"index", index,
		"disk", disk,
		"store", store)
}

// opAllocationStats counts the keys with a prefix and the claims on them.
// A key whose lease ran out is claimable. The keys and the claims are
// counted one after the other, so a key claimed in between may count as
// held and claimable both: claimable never goes below 0. Where claims
// cannot be counted (a read-only handle) the three claim counts are null.
func opAllocationStats(c *call) sobek.Value {
	prefix := c.prefix(c.options(0, "prefix"))
	var n, held, expired uint64
	var known bool
	var info storeInfo
	c.do(func(s backendStore) (err error) {
		if n, err = s.count(prefix); err != nil {
			return err
		}
		if held, expired, known, err = countClaims(s, prefix); err != nil {
			return err
		}
		if d, ok := s.(*db); ok {
			info, err = d.stat()
		}
		return err
	})
	var claimable, live, ended any = n - min(held, n), held, expired
	if !known {
		claimable, live, ended = sobek.Null(), sobek.Null(), sobek.Null()
	}
	return c.object("prefix", prefix, "total", n, "claimable", claimable, "claimedLive", live, "claimedExpired", ended,
		"backend", c.h.cfg.backend.String(), "trackKeys", info.TrackKeys)
}

// opReportStats emits the state gauges into k6's metrics, as of now.
func opReportStats(c *call) sobek.Value {
	h := c.h
	var state = h.vuState()
	if h.metrics == nil || state == nil || state.Samples == nil || state.Tags == nil {
		c.fail(newErr(ErrMetricsUnavailable,
			"reportStats: k6 takes metric samples only while a VU runs (setup, default, teardown, a scenario function), not in the init context"))
		return nil
	}
	var st storeStats
	c.do(func(s backendStore) (err error) { st, err = gather(s); return })
	if c.err != nil {
		return nil
	}
	info := st.info
	m := h.metrics
	cur := state.Tags.GetCurrentValues()
	tags := stateTags(cur.Tags, h.cfg.backend.String(), info.TrackKeys, c.serialization())
	now := time.Now()
	sample := func(mt *metrics.Metric, t *metrics.TagSet, v float64) metrics.Sample {
		return metrics.Sample{TimeSeries: metrics.TimeSeries{Metric: mt, Tags: t}, Time: now, Metadata: cur.Metadata, Value: v}
	}
	set := metrics.Samples{
		sample(m.keys, tags, float64(info.Keys)),
		sample(m.usedBytes, tags, float64(info.UsedBytes)),
		sample(m.fileBytes, tags, float64(info.FileBytes)),
		sample(m.processes, tags, float64(info.Attached)),
		sample(m.inFlight, tags, 0),
	}
	if st.claimsKnown {
		set = append(set,
			sample(m.claimsLive, tags, float64(st.claimsLive)),
			sample(m.claimsExpired, tags, float64(st.claimsExpired)))
	}
	if info.TrackKeys {
		set = append(set,
			sample(m.indexKeys, tags.With("index", "keys_list"), float64(st.indexKeys)),
			sample(m.indexKeys, tags.With("index", "keys_map"), float64(info.Keys)),
			sample(m.indexKeys, tags.With("index", "ost"), float64(st.indexKeys)),
			sample(m.indexOK, tags, metrics.B(st.consistent)))
	}
	if h.cfg.backend == BackendDisk {
		set = append(set, sample(m.diskSize, tags, float64(info.FileBytes)))
	}
	metrics.PushIfNotDone(h.vu.Context(), state.Samples, set)
	return sobek.Undefined()
}
