//go:build cgo

package kv

import (
	"sort"
	"strings"
	"testing"

	"go.k6.io/k6/v2/js/modulestest"
	"go.k6.io/k6/v2/lib"
	"go.k6.io/k6/v2/metrics"
)

func TestJSStats(t *testing.T) {
	eachStore(t, func(t *testing.T, opts string) {
		rt := newJS(t)
		runAsync(t, rt, `const kv = openKv(`+opts+`); const o = `+opts+`;
			await kv.setMany({"u:1": 1, "u:2": 2, "x": 3});
			const s = await kv.stats();
			eq([s.backend, s.serialization, s.trackKeys, s.count, s.claims], [o.backend, "json", o.trackKeys, 3, {live: 0, expired: 0}], "stats");
			if (o.trackKeys) eq(s.index, {enabled: true, keysList: 3, keysMap: 3, ost: 3, consistent: true}, "index");
			else eq(s.index, null, "no index");
			if (o.backend === "disk") {
				eq([s.disk.path, s.disk.readOnly], [o.path, false], "disk");
				if (!(s.disk.sizeBytes > 0)) throw new Error("disk size " + s.disk.sizeBytes);
			} else eq(s.disk, null, "memory: no disk");
			const st = s.store;
			eq([st.processes, st.segments, st.reserveBytes, st.formatVersion > 0, typeof st.libraryVersion], [1, 64, 64 << 20, true, "string"], "store");
			if (!(st.usedBytes > 0 && st.fileBytes >= st.usedBytes && st.freeBytes === st.fileBytes - st.usedBytes)) throw new Error(JSON.stringify(st));

			eq(await kv.allocationStats({prefix: "u:"}), {prefix: "u:", total: 2, claimable: 2, claimedLive: 0, claimedExpired: 0,
				backend: o.backend, trackKeys: o.trackKeys}, "allocationStats");
			eq((await kv.allocationStats()).total, 3, "allocationStats without prefix");
			await rejects(kv.allocationStats({prefx: "u"}), "InvalidOptionsError", "unknown option");
			// reportStats needs a running VU.
			await rejects(kv.reportStats(), "MetricsUnavailableError", "reportStats in the init context");
		`)
	})
}

// vuContext moves rt into a VU's context with a sample channel, returning
// it and the registry the metrics were registered in.
func vuContext(t *testing.T, rt *modulestest.Runtime) (chan metrics.SampleContainer, *metrics.Registry) {
	reg := rt.VU.InitEnvField.Registry
	ch := make(chan metrics.SampleContainer, 10000)
	rt.MoveToVUContext(&lib.State{
		Samples: ch,
		Tags:    lib.NewVUStateTags(reg.RootTagSet().With("scenario", "test")),
	})
	return ch, reg
}

// drain collects what was pushed so far, as "metric{tag=v,...} value".
func drain(ch chan metrics.SampleContainer) []string {
	var out []string
	for {
		select {
		case sc := <-ch:
			for _, s := range sc.GetSamples() {
				tags := s.Tags.Map()
				names := make([]string, 0, len(tags))
				for k, v := range tags {
					names = append(names, k+"="+v)
				}
				sort.Strings(names)
				out = append(out, s.Metric.Name+"{"+strings.Join(names, ",")+"} "+formatFloat(s.Value))
			}
		default:
			return out
		}
	}
}

func formatFloat(f float64) string {
	if f == float64(int64(f)) {
		return itoa(int64(f))
	}
	return "~"
}

func TestJSReportStats(t *testing.T) {
	for _, backend := range []string{"memory", "disk"} {
		t.Run(backend, func(t *testing.T) {
			rt := newJS(t)
			runAsync(t, rt, `globalThis.kv = openKv(`+storeOptions(t, backend, true, "")+`);`)
			ch, _ := vuContext(t, rt)
			runAsync(t, rt, `await kv.setMany({a: 1, b: 2}); eq(await kv.reportStats(), undefined, "reportStats");`)
			got := strings.Join(drain(ch), "\n")
			base := "backend=" + backend + ",scenario=test,serialization=json,track_keys=true}"
			for _, want := range []string{
				"xk6_kv_keys{" + base + " 2",
				"xk6_kv_claims_live{" + base + " 0",
				"xk6_kv_claims_expired{" + base + " 0",
				"xk6_kv_index_keys{backend=" + backend + ",index=keys_list,scenario=test,serialization=json,track_keys=true} 2",
				"xk6_kv_index_keys{backend=" + backend + ",index=ost,scenario=test,serialization=json,track_keys=true} 2",
				"xk6_kv_index_consistent{" + base + " 1",
				"xk6_kv_processes{" + base + " 1",
				"xk6_kv_async_in_flight{" + base + " 0",
				"xk6_kv_used_bytes{" + base,
			} {
				if !strings.Contains(got, want) {
					t.Errorf("no %q in\n%s", want, got)
				}
			}
			if disk := strings.Contains(got, "xk6_kv_disk_size_bytes"); disk != (backend == "disk") {
				t.Errorf("xk6_kv_disk_size_bytes present %v on %s", disk, backend)
			}
		})
	}
}

func TestJSOperationMetrics(t *testing.T) {
	rt := newJS(t)
	runAsync(t, rt, `globalThis.kv = openKv(`+storeOptions(t, "memory", false, "metrics: {operations: true}")+`);
		globalThis.plain = openKv(`+storeOptions(t, "memory", false, "")+`);`)
	ch, _ := vuContext(t, rt)
	runAsync(t, rt, `
		await kv.set("k", 1);
		eq(await kv.get("k"), 1, "get");
		await rejects(kv.get("missing"), "KeyNotFoundError", "get missing");
		eq(await kv.randomKey({prefix: "none"}), "", "empty randomKey");
		eq(await kv.randomKey(), "k", "randomKey");
		await kv.getMany(["k"]);
		// A getter that throws: the promise rejects with what it threw.
		await kv.setMany({get a() { throw new TypeError("boom"); }}).then(() => { throw new Error("resolved"); }, () => {});
		await plain.set("p", 1);`)
	got := drain(ch)
	all := strings.Join(got, "\n")
	// m names a sample as drain does: tags sorted.
	m := func(metric, op string, extra ...string) string {
		tags := append([]string{"backend=memory", "op=" + op, "scenario=test", "serialization=json", "track_keys=false"}, extra...)
		sort.Strings(tags)
		return metric + "{" + strings.Join(tags, ",") + "}"
	}
	for _, want := range []string{
		m("xk6_kv_operations_total", "set", "status=ok") + " 1",
		m("xk6_kv_operations_total", "get", "status=ok") + " 1",
		m("xk6_kv_operations_total", "get", "status=error") + " 1",
		m("xk6_kv_operation_failed", "get") + " 1",
		m("xk6_kv_operation_failed", "get") + " 0",
		m("xk6_kv_errors_total", "get", "error_type=KeyNotFoundError") + " 1",
		m("xk6_kv_empty_result", "random_key") + " 1",
		m("xk6_kv_empty_result", "random_key") + " 0",
		m("xk6_kv_operations_total", "get_many", "status=ok") + " 1",
		m("xk6_kv_operation_duration", "set", "status=ok"),
		m("xk6_kv_errors_total", "set_many", "error_type=TypeError") + " 1",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no %q in\n%s", want, all)
		}
	}
	n := 0
	for _, s := range got {
		if strings.HasPrefix(s, "xk6_kv_operations_total") {
			n++
		}
	}
	if n != 7 {
		t.Errorf("%d operations counted, want 7 (the handle without metrics counts none):\n%s", n, all)
	}
}

func TestOpTag(t *testing.T) {
	for in, want := range map[string]string{
		"get": "get", "getMany": "get_many", "importCSV": "import_csv", "exportJSONL": "export_jsonl",
		"compareAndSwapDetailed": "compare_and_swap_detailed", "rebuildKeyList": "rebuild_key_list",
	} {
		if got := opTag(in); got != want {
			t.Errorf("opTag(%q) = %q, want %q", in, got, want)
		}
	}
}
