//go:build cgo

package kv

import (
	"fmt"
	"testing"
	"time"

	"go.k6.io/k6/v2/lib"
	"go.k6.io/k6/v2/metrics"
)

// BenchmarkJS measures one awaited call from a script, against an awaited
// Promise.resolve() as the floor set by the JS engine.
func BenchmarkJS(b *testing.B) {
	for _, c := range []struct{ name, call string }{
		{"await-baseline", `await Promise.resolve(1)`},
		{"get", `await kv.get("k" + (i & 1023))`},
		{"set", `await kv.set("k" + (i & 1023), "value-value-value")`},
		{"set-object", `await kv.set("k" + (i & 1023), {a: i, b: "x"})`},
		{"randomKey", `await kv.randomKey()`},
		{"exists", `await kv.exists("k1")`},
		{"incrementBy", `await kv.incrementBy("n", 1)`},
		// A ~150-byte user record, and its codec floor: parsing the same
		// text and awaiting a resolved promise, no store.
		{"get-record", `await kv.get("user")`},
		{"set-record", `await kv.set("user", user)`},
		{"floor-parse-record", `await Promise.resolve(JSON.parse(userText))`},
		{"floor-stringify-record", `await Promise.resolve(JSON.stringify(user))`},
		// Twenty numbers, the report's numeric shape, and its floor.
		{"set-nums", `await kv.set("nums", nums)`},
		{"floor-stringify-nums", `await Promise.resolve(JSON.stringify(nums))`},
		// The construction floor: the same record built from a literal.
		{"floor-literal-record", `await Promise.resolve({id: 12345, name: "name-12345", email: "user12345@example.com",
			tags: ["a", "b", "c"], active: true, score: 17.5,
			address: {street: "1 Main St", city: "Springfield", zip: "12345"}})`},
		// 100 keys per call: divide ns/op by 100 for a key's share.
		{"getMany100", `await kv.getMany(keys100)`},
		{"setMany100", `await kv.setMany(rec100)`},
	} {
		b.Run(c.name, func(b *testing.B) {
			rt := newJS(b)
			runAsync(b, rt, `globalThis.kv = openKv(`+storeOptions(b, "memory", true, "")+`);
				for (let i = 0; i < 1024; i++) await kv.set("k" + i, "value-value-value");
				globalThis.user = {id: 12345, name: "name-12345", email: "user12345@example.com",
					tags: ["a", "b", "c"], active: true, score: 17.5,
					address: {street: "1 Main St", city: "Springfield", zip: "12345"}};
				globalThis.userText = JSON.stringify(user);
				globalThis.nums = []; for (let i = 0; i < 20; i++) nums.push(i * 3.25);
				await kv.set("user", user);
				globalThis.keys100 = []; globalThis.rec100 = {};
				for (let i = 0; i < 100; i++) { keys100.push("k" + i * 7); rec100["k" + i * 7] = "value-value-value"; }`)
			b.ResetTimer()
			runAsync(b, rt, fmt.Sprintf(`for (let i = 0; i < %d; i++) { %s; }`, b.N, c.call))
		})
	}
}

// BenchmarkJSOpMetrics measures get and set in a VU with the operation
// metrics off and on (samples consumed by a goroutine, as k6's engine
// would).
func BenchmarkJSOpMetrics(b *testing.B) {
	for _, on := range []bool{false, true} {
		for _, c := range []struct{ name, call string }{
			{"get", `await kv.get("k" + (i & 1023))`},
			{"set", `await kv.set("k" + (i & 1023), "value-value-value")`},
		} {
			b.Run(fmt.Sprintf("metrics=%v/%s", on, c.name), func(b *testing.B) {
				rt := newJS(b)
				extra := ""
				if on {
					extra = "metrics: {operations: true}"
				}
				runAsync(b, rt, `globalThis.kv = openKv(`+storeOptions(b, "memory", true, extra)+`);
					for (let i = 0; i < 1024; i++) await kv.set("k" + i, "value-value-value");`)
				reg := rt.VU.InitEnvField.Registry
				ch := make(chan metrics.SampleContainer, 1024)
				done := make(chan struct{})
				go func() {
					defer close(done)
					for range ch {
					}
				}()
				rt.MoveToVUContext(&lib.State{Samples: ch, Tags: lib.NewVUStateTags(reg.RootTagSet())})
				b.ResetTimer()
				runAsync(b, rt, fmt.Sprintf(`for (let i = 0; i < %d; i++) { %s; }`, b.N, c.call))
				b.StopTimer()
				close(ch)
				<-done
			})
		}
	}
}

// BenchmarkObserve is the operation metrics' own cost per call: tags from
// the cache, one set of samples pushed (consumed by a goroutine).
func BenchmarkObserve(b *testing.B) {
	rt := newJS(b)
	m, err := registerMetrics(rt.VU.InitEnvField.Registry)
	if err != nil {
		b.Fatal(err)
	}
	reg := rt.VU.InitEnvField.Registry
	h := &handle{vu: rt.VU, metrics: m,
		ops: &opMetrics{m: m, backend: "memory", track: "true", serialize: "json"}}
	ch := make(chan metrics.SampleContainer, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range ch {
		}
	}()
	rt.MoveToVUContext(&lib.State{Samples: ch, Tags: lib.NewVUStateTags(reg.RootTagSet().With("scenario", "default"))})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.observe("get", time.Now(), false, "", nil)
	}
	b.StopTimer()
	close(ch)
	<-done
}
