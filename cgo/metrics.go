//go:build cgo

package kv

import (
	"strconv"
	"strings"
	"time"

	"github.com/grafana/sobek"
	"go.k6.io/k6/v2/lib"
	"go.k6.io/k6/v2/metrics"
)

// k6 metrics of the extension, with the xk6-kv fork's names and tags.
//
// Operation metrics (openKv({metrics: {operations: true}})): one sample set
// per method call, tagged backend, track_keys, serialization, op (the
// method's name in snake_case) and, on the counter and the trend, status
// ("ok" or "error").
//
// State gauges (reportStats()): what stats() reads, tagged backend,
// track_keys and serialization.
const (
	mOpsTotal    = "xk6_kv_operations_total"
	mOpDuration  = "xk6_kv_operation_duration"
	mOpFailed    = "xk6_kv_operation_failed"
	mErrorsTotal = "xk6_kv_errors_total"
	mEmptyResult = "xk6_kv_empty_result"
	mKeys        = "xk6_kv_keys"
	mClaimsLive  = "xk6_kv_claims_live"
	mClaimsExp   = "xk6_kv_claims_expired"
	mIndexKeys   = "xk6_kv_index_keys"
	mIndexOK     = "xk6_kv_index_consistent"
	mDiskSize    = "xk6_kv_disk_size_bytes"
	mUsedBytes   = "xk6_kv_used_bytes"
	mFileBytes   = "xk6_kv_file_bytes"
	mProcesses   = "xk6_kv_processes"
	// xk6-kv's gauge of promises not yet settled. Here a method settles its
	// promise before it returns: registered (thresholds written for xk6-kv
	// name it) and reported by reportStats as 0.
	mInFlight     = "xk6_kv_async_in_flight"
	tagBackend    = "backend"
	tagTrackKeys  = "track_keys"
	tagSerializer = "serialization"
)

// kvMetrics are the registered metrics of one test run (one registry).
type kvMetrics struct {
	opsTotal, opDuration, opFailed, errorsTotal, emptyResult *metrics.Metric

	keys, claimsLive, claimsExpired, indexKeys, indexOK, diskSize *metrics.Metric
	usedBytes, fileBytes, processes, inFlight                     *metrics.Metric
}

// registerMetrics registers every metric of the extension in r (the
// registry hands back the existing metric when the name is known).
func registerMetrics(r *metrics.Registry) (*kvMetrics, error) {
	var firstErr error
	reg := func(name string, typ metrics.MetricType, vt ...metrics.ValueType) *metrics.Metric {
		m, err := r.NewMetric(name, typ, vt...)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		return m
	}
	m := &kvMetrics{
		opsTotal:      reg(mOpsTotal, metrics.Counter),
		opDuration:    reg(mOpDuration, metrics.Trend, metrics.Time),
		opFailed:      reg(mOpFailed, metrics.Rate),
		errorsTotal:   reg(mErrorsTotal, metrics.Counter),
		emptyResult:   reg(mEmptyResult, metrics.Rate),
		keys:          reg(mKeys, metrics.Gauge),
		claimsLive:    reg(mClaimsLive, metrics.Gauge),
		claimsExpired: reg(mClaimsExp, metrics.Gauge),
		indexKeys:     reg(mIndexKeys, metrics.Gauge),
		indexOK:       reg(mIndexOK, metrics.Gauge),
		diskSize:      reg(mDiskSize, metrics.Gauge, metrics.Data),
		usedBytes:     reg(mUsedBytes, metrics.Gauge, metrics.Data),
		fileBytes:     reg(mFileBytes, metrics.Gauge, metrics.Data),
		processes:     reg(mProcesses, metrics.Gauge),
		inFlight:      reg(mInFlight, metrics.Gauge),
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return m, nil
}

// opTag is a method's name as the op tag: "getMany" -> "get_many",
// "importCSV" -> "import_csv".
func opTag(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if ch >= 'A' && ch <= 'Z' {
			if i > 0 && name[i-1] >= 'a' && name[i-1] <= 'z' {
				b.WriteByte('_')
			}
			ch += 'a' - 'A'
		}
		b.WriteByte(ch)
	}
	return b.String()
}

// opMetrics emits the operation metrics of one handle. A handle belongs to
// one VU, so its tag cache needs no lock.
type opMetrics struct {
	m                         *kvMetrics
	backend, track, serialize string
	// Tag sets built on the VU's current tags (base); rebuilt when those
	// change (a group, a scenario, a tag set by the script).
	base  *metrics.TagSet
	cache map[string]*opTags
}

type opTags struct {
	op, ok, fail *metrics.TagSet
}

func (o *opMetrics) tags(base *metrics.TagSet, op string) *opTags {
	if base != o.base || o.cache == nil {
		o.base = base
		o.cache = make(map[string]*opTags)
	}
	t := o.cache[op]
	if t == nil {
		opSet := base.With(tagBackend, o.backend).With(tagTrackKeys, o.track).
			With(tagSerializer, o.serialize).With("op", op)
		t = &opTags{op: opSet, ok: opSet.With("status", "ok"), fail: opSet.With("status", "error")}
		o.cache[op] = t
	}
	return t
}

// emptyOps are the sampling methods whose empty answers xk6_kv_empty_result
// counts.
var emptyOps = map[string]bool{"random_key": true, "random_keys": true,
	"pop_random": true, "pop_random_many": true, "claim_random": true, "claim_random_many": true}

// observe emits the samples of one call: failed with errName (when
// failed), its result v otherwise.
func (h *handle) observe(op string, start time.Time, failed bool, errName string, v sobek.Value) {
	d := time.Since(start)
	state := h.vuState()
	if state == nil || state.Samples == nil || state.Tags == nil {
		return // the init context: k6 takes no samples there
	}
	o := h.ops
	cur := state.Tags.GetCurrentValues()
	t := o.tags(cur.Tags, op)
	now := time.Now()
	status := t.ok
	if failed {
		status = t.fail
	}
	sample := func(m *metrics.Metric, tags *metrics.TagSet, v float64) metrics.Sample {
		return metrics.Sample{TimeSeries: metrics.TimeSeries{Metric: m, Tags: tags}, Time: now, Metadata: cur.Metadata, Value: v}
	}
	set := make(metrics.Samples, 0, 5)
	set = append(set,
		sample(o.m.opsTotal, status, 1),
		sample(o.m.opDuration, status, metrics.D(d)),
		sample(o.m.opFailed, t.op, metrics.B(failed)))
	if failed {
		set = append(set, sample(o.m.errorsTotal, t.op.With("error_type", errName), 1))
	} else if emptyOps[op] {
		set = append(set, sample(o.m.emptyResult, t.op, metrics.B(isEmptyResult(v))))
	}
	metrics.PushIfNotDone(h.vu.Context(), state.Samples, set)
}

// isEmptyResult: "" from randomKey, [] from randomKeys and the Many pops
// and claims, null from popRandom and claimRandom.
func isEmptyResult(v sobek.Value) bool {
	if v == nil || sobek.IsNull(v) {
		return true
	}
	if sobek.IsString(v) {
		return v.String() == ""
	}
	if o, ok := v.(*sobek.Object); ok {
		// An array; an entry or a claim (no length) is a result.
		n := o.Get("length")
		return n != nil && n.ToInteger() == 0
	}
	return false
}

// thrownName names a value a getter or Proxy trap threw, for error_type.
// Reading its name may throw again (another trap): then it is "Error".
func thrownName(v sobek.Value) (name string) {
	defer func() {
		if recover() != nil {
			name = "Error"
		}
	}()
	if o, ok := v.(*sobek.Object); ok {
		if n := o.Get("name"); n != nil && sobek.IsString(n) && n.String() != "" {
			return n.String()
		}
	}
	return "Error"
}

// stateTags are the tags of the reportStats gauges.
func stateTags(base *metrics.TagSet, backend string, track bool, serialization string) *metrics.TagSet {
	return base.With(tagBackend, backend).With(tagTrackKeys, strconv.FormatBool(track)).
		With(tagSerializer, serialization)
}

// newOpMetrics sets up the operation metrics of a handle. track_keys is the
// store's at open (a paged scan may turn the index on later).
func newOpMetrics(m *kvMetrics, cfg *config, d backendStore) *opMetrics {
	track := cfg.track == trackOn
	if s, ok := d.(*db); ok {
		if info, err := s.stat(); err == nil {
			track = info.TrackKeys
		}
	}
	return &opMetrics{m: m, backend: cfg.backend.String(), track: strconv.FormatBool(track), serialize: cfg.serialization}
}

// vuState is the VU's state: nil in the init context (and for a handle
// built without a VU).
func (h *handle) vuState() *lib.State {
	if h.vu == nil {
		return nil
	}
	return h.vu.State()
}
