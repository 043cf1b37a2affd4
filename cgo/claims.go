//go:build cgo

package kv

import (
	"math"

	"github.com/grafana/sobek"
)

// The claim and pop methods (issue 14); registered in the methods table
// (kv.go). A claim is a lease on a key that every process of the host
// honours (see shmkv.h, "Claims"); these bodies read the arguments, make
// one library call per key and build the results. A key's value comes back
// from the same library call that claims or pops it.

const (
	// maxClaims bounds count and the arrays of keys and refs of one call,
	// as xk6-kv bounds count.
	maxClaims = 1_000_000
	// maxToken: tokens are handed to scripts as numbers, exact below 2^53.
	maxToken = 1<<53 - 1
)

// claims returns the store's claim calls, or fails the call (a store that
// has none, or a read-only handle: every claim method writes).
func (c *call) claims() claimStore {
	if c.err != nil || c.h.closed {
		return nil // closed: do rejects with StoreClosedError
	}
	if c.h.cfg.readOnly() {
		c.fail(newErr(ErrStoreReadOnly, "%s: the store was opened read-only (claims and pops write)", c.name))
		return nil
	}
	cs, ok := c.h.db.(claimStore)
	if !ok {
		c.fail(newErr(ErrStore, "%s: this store does not keep claims", c.name))
	}
	return cs
}

// onClaims runs fn on the store's claim calls, as do runs a store call.
func (c *call) onClaims(fn func(cs claimStore) error) {
	cs := c.claims()
	c.do(func(backendStore) error { return fn(cs) })
	// A value of up to 64 MiB grows the scratch space: it is not kept
	// between calls past what getMany's is.
	if cap(c.h.claimBuf.val) > maxManyScratch {
		c.h.claimBuf.val = nil
	}
}

// ttl reads the ttl option: a number of ms in (0, 24 h]; fractions round
// up, so that 0.5 is not taken for 0 (the library's "default").
func (c *call) ttl(o *sobek.Object) uint64 {
	if c.err != nil || o == nil {
		return ttlDefault
	}
	v := o.Get("ttl")
	if absent(v) {
		return ttlDefault
	}
	f := math.NaN()
	if sobek.IsNumber(v) { // ToFloat of a Symbol would throw
		f = v.ToFloat()
	}
	if math.IsNaN(f) || f <= 0 || f > ttlMax {
		c.invalid("ttl must be a number of milliseconds above 0 and at most %d, got %s", ttlMax, describe(v))
		return ttlDefault
	}
	return uint64(math.Ceil(f))
}

// owner reads the owner option: a string of at most 256 UTF-8 bytes.
// given is false when it is absent.
func (c *call) owner(o *sobek.Object) (owner string, given bool) {
	if c.err != nil || o == nil {
		return "", false
	}
	v := o.Get("owner")
	if absent(v) {
		return "", false
	}
	s := c.str("owner", v)
	if len(s) > ownerMax && c.err == nil {
		c.invalid("owner is %d bytes long (UTF-8); the limit is %d", len(s), ownerMax)
	}
	return s, c.err == nil
}

// describe is v for a message: its text for numbers and strings, its type
// otherwise.
func describe(v sobek.Value) string {
	if sobek.IsNumber(v) || sobek.IsString(v) {
		return v.String()
	}
	return typeName(v)
}

// leaseOpts reads owner and ttl.
func (c *call) leaseOpts(o *sobek.Object) (lease, bool) {
	owner, given := c.owner(o)
	return lease{owner: owner, ttl: c.ttl(o)}, given
}

// ref is a ClaimRef as a script handed it back.
type ref struct {
	key   string
	id    string // as the script gave it (String(token) when it gave none)
	token uint64
	// match is false when the ref's id is not String(token): it names no
	// live claim, and the store is not asked.
	match bool
}

// readRef checks one ClaimRef: an object with a string key and a positive
// integer token (below 2^53); its id, when present, must be String(token)
// for the ref to name a claim.
func (c *call) readRef(v sobek.Value, what string) ref {
	if c.err != nil {
		return ref{}
	}
	o, ok := v.(*sobek.Object)
	if !ok || typeName(v) != "object" {
		c.invalid("%s must be a claim reference {id, key, token}, got %s", what, typeName(v))
		return ref{}
	}
	kval := o.Get("key")
	if !sobek.IsString(kval) {
		c.invalid("%s.key must be a string, got %s", what, typeName(kval))
		return ref{}
	}
	key := c.str(what+".key", kval)
	tv := o.Get("token")
	f := math.NaN()
	if tv != nil && sobek.IsNumber(tv) {
		f = tv.ToFloat()
	}
	if c.err == nil && (math.IsNaN(f) || f != math.Trunc(f) || f < 1 || f > maxToken) {
		c.invalid("%s.token must be a whole number from 1 to %d, got %s", what, int64(maxToken), describe(tv))
	}
	if c.err != nil {
		return ref{}
	}
	r := ref{key: key, id: itoa(int64(f)), token: uint64(f), match: possible(key)}
	if id := o.Get("id"); id != nil && !sobek.IsUndefined(id) {
		if sobek.IsString(id) {
			r.id = id.String()
		} else {
			r.match = false
		}
		r.match = r.match && r.id == itoa(int64(r.token))
	}
	return r
}

// refs reads argument i as an array of at most maxClaims refs.
func (c *call) refs(i int) []ref {
	v := c.args.Argument(i)
	if c.err != nil {
		return nil
	}
	o, ok := v.(*sobek.Object)
	if !ok || typeName(v) != "array" {
		c.invalid("refs must be an array of claim references, got %s", typeName(v))
		return nil
	}
	n := o.Get("length").ToFloat()
	if n > maxClaims {
		c.invalid("refs holds %.0f entries; one call takes at most %d", n, maxClaims)
		return nil
	}
	out := make([]ref, int(n))
	for j := range out {
		out[j] = c.readRef(o.Get(itoa(int64(j))), "refs["+itoa(int64(j))+"]")
	}
	return out
}

// ---- results ---------------------------------------------------------------

// claimValue builds a Claim: {id, key, token, owner?, expiresAt, entry}.
func (c *call) claimValue(cl claimed, owner string, given bool, value sobek.Value) sobek.Value {
	kv := []any{"id", itoa(int64(cl.Token)), "key", cl.Key, "token", cl.Token}
	if given {
		kv = append(kv, "owner", owner)
	}
	kv = append(kv, "expiresAt", cl.Expires, "entry", c.h.plain(c.h.codec.objProto, "key", cl.Key, "value", value))
	return c.h.plain(c.h.codec.objProto, kv...)
}

// claimValues decodes the values of claims just taken and builds their
// Claims. A value that does not decode fails the call; the claims are then
// released, as the call took none for the script.
func (c *call) claimValues(cls []claimed, owner string, given bool) []sobek.Value {
	out := make([]sobek.Value, 0, len(cls))
	for _, cl := range cls {
		v := c.decode(cl.Value, cl.Kind)
		if c.err != nil {
			c.err.Message = c.name + ": key " + quote(cl.Key) + ": " + c.err.Message
			c.releaseAll(cls)
			return nil
		}
		out = append(out, c.claimValue(cl, owner, given, v))
	}
	return out
}

// entryValues decodes popped entries into {key, value}. A value that does
// not decode fails the call, and every entry popped is put back (unless
// its key was written again meanwhile).
func (c *call) entryValues(es []entry) []sobek.Value {
	out := make([]sobek.Value, 0, len(es))
	for _, e := range es {
		v := c.decode(e.Value, e.Kind)
		if c.err != nil {
			c.err.Message = c.name + ": key " + quote(e.Key) + ": " + c.err.Message
			c.putBack(es)
			return nil
		}
		out = append(out, c.object("key", e.Key, "value", v))
	}
	return out
}

// releaseAll ends claims this call took and will not hand out (the call is
// failing). Best effort: a claim that cannot be released runs out.
func (c *call) releaseAll(cls []claimed) {
	cs, ok := c.h.db.(claimStore)
	if !ok || len(cls) == 0 || c.h.enter() != nil {
		return
	}
	defer c.h.leave()
	release(cs, cls)
}

func release(cs claimStore, cls []claimed) {
	for _, cl := range cls {
		_, _ = cs.endClaim(cl.Key, cl.Token, false, false)
	}
}

// putBack stores popped entries again (the call is failing), each only if
// its key is absent. Best effort.
func (c *call) putBack(es []entry) {
	if len(es) == 0 || c.h.enter() != nil {
		return
	}
	defer c.h.leave()
	restore(c.h.db, es)
}

func restore(s backendStore, es []entry) {
	for _, e := range es {
		_, _ = s.setIfAbsent(e.Key, e.Value, e.Kind)
	}
}

func quote(s string) string {
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return `"` + s + `"`
}

func (c *call) array(items []sobek.Value) sobek.Value {
	if c.err != nil {
		return nil
	}
	all := make([]any, len(items))
	for i, v := range items {
		all[i] = v
	}
	return c.h.rt.NewArray(all...)
}

// ---- pops ------------------------------------------------------------------

func opPopRandom(c *call) sobek.Value {
	prefix := c.prefix(c.options(0, "prefix"))
	var e entry
	var ok bool
	c.onClaims(func(cs claimStore) (err error) { e, ok, err = cs.popRandom(prefix, &c.h.claimBuf); return })
	if c.err != nil {
		return nil
	}
	if !ok {
		return sobek.Null()
	}
	vs := c.entryValues([]entry{e})
	if c.err != nil {
		return nil
	}
	return vs[0]
}

func opPopRandomMany(c *call) sobek.Value {
	o := c.options(0, "prefix", "count")
	if o == nil && c.err == nil {
		c.invalid("options {count} are required")
	}
	prefix := c.prefix(o)
	n := c.number(o, "count", 1, maxClaims, 0, true)
	var es []entry
	c.onClaims(func(cs claimStore) error {
		for int64(len(es)) < n {
			e, ok, err := cs.popRandom(prefix, &c.h.claimBuf)
			if err != nil {
				restore(c.h.db, es)
				es = nil
				return err
			}
			if !ok {
				break
			}
			es = append(es, e)
		}
		return nil
	})
	if c.err != nil {
		return nil
	}
	return c.array(c.entryValues(es))
}

// ---- claims ----------------------------------------------------------------

func opClaimRandom(c *call) sobek.Value {
	o := c.options(0, "prefix", "owner", "ttl")
	prefix := c.prefix(o)
	l, given := c.leaseOpts(o)
	return c.oneClaim(l, given, func(cs claimStore) (claimed, bool, error) {
		return cs.claimRandom(prefix, l, &c.h.claimBuf)
	})
}

// oneClaim runs a claim of at most one key and hands out its Claim, or
// null when there was none to take.
func (c *call) oneClaim(l lease, given bool, take func(claimStore) (claimed, bool, error)) sobek.Value {
	var cl claimed
	var ok bool
	c.onClaims(func(cs claimStore) (err error) { cl, ok, err = take(cs); return })
	if c.err != nil {
		return nil
	}
	if !ok {
		return sobek.Null()
	}
	vs := c.claimValues([]claimed{cl}, l.owner, given)
	if c.err != nil {
		return nil
	}
	return vs[0]
}

// opClaimRandomMany draws count times. A key comes out once: drawn again
// (its earlier lease ran out in the meantime, with a very short ttl), it
// keeps its latest claim, the one that is live.
func opClaimRandomMany(c *call) sobek.Value {
	o := c.options(0, "prefix", "owner", "ttl", "count")
	if o == nil && c.err == nil {
		c.invalid("options {count} are required")
	}
	prefix := c.prefix(o)
	l, given := c.leaseOpts(o)
	n := c.number(o, "count", 1, maxClaims, 0, true)
	var cls []claimed
	c.onClaims(func(cs claimStore) error {
		at := map[string]int{}
		for draws := int64(0); draws < n; draws++ {
			cl, ok, err := cs.claimRandom(prefix, l, &c.h.claimBuf)
			if err != nil {
				release(cs, cls)
				cls = nil
				return err
			}
			if !ok {
				break
			}
			if i, seen := at[cl.Key]; seen {
				cls[i] = cl
				continue
			}
			at[cl.Key] = len(cls)
			cls = append(cls, cl)
		}
		return nil
	})
	if c.err != nil {
		return nil
	}
	return c.array(c.claimValues(cls, l.owner, given))
}

func opClaimKey(c *call) sobek.Value {
	key := c.key(0)
	// prefix is taken and not used: xk6-kv's claimKey options are its
	// ClaimOptions type, which has one.
	o := c.options(1, "owner", "ttl", "prefix")
	_ = c.prefix(o)
	l, given := c.leaseOpts(o)
	return c.oneClaim(l, given, func(cs claimStore) (claimed, bool, error) {
		return cs.claimKey(key, l, &c.h.claimBuf)
	})
}

// opClaimKeys claims each key in turn, in the order given, and sorts the
// keys into {claimed, busy, missing}: a key that could not be claimed is
// busy when it exists (another live claim holds it) and missing otherwise.
// With allOrNothing the first key that cannot be claimed stops the call:
// the claims taken before it are released, and the result names that key
// alone (claimed empty). Keys must be non-empty and given once.
func opClaimKeys(c *call) sobek.Value {
	keys := c.strings(0, "keys")
	o := c.options(1, "owner", "ttl", "allOrNothing")
	l, given := c.leaseOpts(o)
	all := c.flag(o, "allOrNothing", false)
	if len(keys) > maxClaims && c.err == nil {
		c.invalid("keys holds %d entries; one call takes at most %d", len(keys), maxClaims)
	}
	if c.err == nil {
		var bad []entryError
		seen := make(map[string]bool, len(keys))
		for _, k := range keys {
			switch {
			case k == "":
				bad = append(bad, entryError{Key: k, Name: "EmptyKey", Message: "key must be a non-empty string"})
			case seen[k]:
				bad = append(bad, entryError{Key: k, Name: "DuplicateKey", Message: "key " + quote(k) + " is given more than once"})
			}
			seen[k] = true
		}
		if len(bad) > 0 {
			c.fail(&kvError{Name: ErrInvalidOptions, Errors: bad,
				Message: "claimKeys: keys must be non-empty strings, each given once"})
		}
	}
	var cls []claimed
	var busy, missing []string
	c.onClaims(func(cs claimStore) error {
		undo := func() {
			release(cs, cls)
			cls = nil
		}
		for _, k := range keys {
			var cl claimed
			ok := false
			if possible(k) {
				var err error
				if cl, ok, err = cs.claimKey(k, l, &c.h.claimBuf); err != nil {
					c.keyArg = k
					undo()
					return err
				}
			}
			if ok {
				cls = append(cls, cl)
				continue
			}
			// Not claimed: held by a live claim, or not there. The two
			// looks are not one step; a key written or deleted between
			// them is sorted by the second.
			there := false
			if possible(k) {
				var err error
				if there, err = c.h.db.exists(k); err != nil {
					c.keyArg = k
					undo()
					return err
				}
			}
			if there {
				busy = append(busy, k)
			} else {
				missing = append(missing, k)
			}
			if all {
				undo()
				return nil
			}
		}
		return nil
	})
	if c.err != nil {
		return nil
	}
	claimedArr := c.array(c.claimValues(cls, l.owner, given))
	if c.err != nil {
		return nil
	}
	return c.object("claimed", claimedArr, "busy", c.stringArray(busy), "missing", c.stringArray(missing))
}

func (c *call) stringArray(ss []string) sobek.Value {
	return c.h.rt.NewArray(anyStrings(ss)...)
}

// ---- release, complete, renew ----------------------------------------------

// batchResult builds the result of releaseClaims, completeClaims and
// renewClaims: {attempted, <done>: n, failed: [{index, id, key, name,
// message}]}, a failure for each ref that named no live claim.
func (c *call) batchResult(done string, refs []ref, ok []bool) sobek.Value {
	if c.err != nil {
		return nil
	}
	n := 0
	var failed []sobek.Value
	for i, r := range refs {
		if ok[i] {
			n++
			continue
		}
		failed = append(failed, c.object("index", i, "id", r.id, "key", r.key, "name", "ClaimNotUpdated",
			"message", c.name+": refs["+itoa(int64(i))+"] (key "+quote(r.key)+
				") names no live claim: it was released, completed, taken over, or its lease ran out"))
	}
	return c.object("attempted", len(refs), done, n, "failed", c.array(failed))
}

// each runs act on every ref that can name a live claim, in order; ok[i]
// is whether ref i named one (and act was done). A failure part way
// rejects, and says how many refs were done (verb) before it: those stay.
func (c *call) each(refs []ref, verb string, act func(cs claimStore, r ref) (bool, error)) []bool {
	out := make([]bool, len(refs))
	applied := 0
	c.onClaims(func(cs claimStore) error {
		for i, r := range refs {
			if !r.match {
				continue
			}
			ok, err := act(cs, r)
			if err != nil {
				c.keyArg = r.key
				return err
			}
			out[i] = ok
			if ok {
				applied++
			}
		}
		return nil
	})
	if c.err != nil && len(refs) > 1 {
		c.err.Message += "; " + itoa(int64(applied)) + " of " + itoa(int64(len(refs))) +
			" refs were " + verb + " before it and stay so"
	}
	return out
}

// end runs release (complete false) or complete on each ref.
func (c *call) end(refs []ref, complete, deleteKey bool) []bool {
	verb := "released"
	if complete {
		verb = "completed"
	}
	return c.each(refs, verb, func(cs claimStore, r ref) (bool, error) {
		return cs.endClaim(r.key, r.token, complete, deleteKey)
	})
}

func opReleaseClaim(c *call) sobek.Value {
	r := c.readRef(c.args.Argument(0), "ref")
	return c.result(c.end([]ref{r}, false, false)[0])
}

func opReleaseClaims(c *call) sobek.Value {
	refs := c.refs(0)
	return c.batchResult("released", refs, c.end(refs, false, false))
}

func opCompleteClaim(c *call) sobek.Value {
	r := c.readRef(c.args.Argument(0), "ref")
	del := c.flag(c.options(1, "deleteKey"), "deleteKey", true)
	return c.result(c.end([]ref{r}, true, del)[0])
}

func opCompleteClaims(c *call) sobek.Value {
	refs := c.refs(0)
	del := c.flag(c.options(1, "deleteKey"), "deleteKey", true)
	return c.batchResult("completed", refs, c.end(refs, true, del))
}

// renew extends each ref's claim to ttl from now.
func (c *call) renew(refs []ref, ttl uint64) []bool {
	return c.each(refs, "renewed", func(cs claimStore, r ref) (bool, error) {
		_, ok, err := cs.renewClaim(r.key, r.token, ttl)
		return ok, err
	})
}

func opRenewClaim(c *call) sobek.Value {
	r := c.readRef(c.args.Argument(0), "ref")
	ttl := c.ttl(c.options(1, "ttl"))
	return c.result(c.renew([]ref{r}, ttl)[0])
}

func opRenewClaims(c *call) sobek.Value {
	refs := c.refs(0)
	ttl := c.ttl(c.options(1, "ttl"))
	return c.batchResult("renewed", refs, c.renew(refs, ttl))
}
