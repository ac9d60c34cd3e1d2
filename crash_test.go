package kms_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/shred"
	"github.com/pocketkms/kms/internal/testclock"
	"github.com/pocketkms/kms/internal/testproc"
	"github.com/pocketkms/kms/ratelimit"
)

var (
	mxCycles = flag.Int("crashmix.cycles", 0, "kill-and-restart cycles of TestCrashMixedWorkload (0: 50, or 20 with -short)")
	mxSeed   = flag.Uint64("crashmix.seed", 0, "seed of TestCrashMixedWorkload's choices (0: from the clock; the test logs it)")
)

// mxOp is one change the child makes, printed as BEGIN before the call
// and ACK after it returned (FAIL if it returned an error, which the
// child never expects: it only picks changes the key's state allows).
type mxOp struct {
	Phase      string `json:"phase"`
	Op         string `json:"op"`
	Tag        string `json:"tag,omitempty"`
	Name       string `json:"name,omitempty"`
	Convergent bool   `json:"convergent,omitempty"`
	Version    uint32 `json:"version,omitempty"`
	Entry      string `json:"entry,omitempty"`
	Limit      string `json:"limit,omitempty"`
	GenID      string `json:"genID,omitempty"`
	CT         string `json:"ct,omitempty"`
	PT         string `json:"pt,omitempty"`
	Ctx        string `json:"ctx,omitempty"`
	Access     string `json:"access,omitempty"`
	Refresh    string `json:"refresh,omitempty"`
	Err        string `json:"err,omitempty"`
	// DestroyAt (delete: when the key is due), Clock (advance: the
	// child's clock after it) and Root (rootrotate: the root key index
	// after it) are Unix milliseconds and an index into mxRoots.
	DestroyAt int64 `json:"destroyAt,omitempty"`
	Clock     int64 `json:"clock,omitempty"`
	Root      int   `json:"root,omitempty"`
	// MADE lines: a handle the backend made (Generate, or a rotation's
	// reseal), before the commit that stores it.
	Purpose string `json:"purpose,omitempty"`
	Type    string `json:"type,omitempty"`
	Handle  []byte `json:"handle,omitempty"`
}

// mxRoots are the root keys the store alternates between: a rootrotate
// moves it from one to the other.
var mxRoots = [][]byte{rootKey, newRootKey}

// mxClockStart is the fake clock's time in the first cycle; the parent
// passes the clock on from cycle to cycle, and the child's "advance"
// moves it by mxAdvance, so that requested deletions fall due and
// "maintain" destroys them within the run.
var mxClockStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()

const mxAdvance = 30 * time.Hour

// mxACLPool is every allow-list entry the child uses, with an address
// each one admits.
var mxACLPool = map[string]string{
	"10.1.2.3":    "10.1.2.3",
	"10.7.0.0/16": "10.7.9.9",
	"192.0.2.*":   "192.0.2.77",
	"2001:db8::1": "2001:db8::1",
}

// mxLimits are the rate limits the child gives keys; all leave room for
// the parent's few token calls per key and restart.
var mxLimits = []ratelimit.Limit{{Rate: 1000, Burst: 500}, {Rate: 100, Burst: 50}, {Unlimited: true}}

// mxKey is the model of a key: what every acknowledged change says it is.
type mxKey struct {
	Convergent bool
	State      kms.KeyState
	Versions   []kms.VersionState
	ACLOn      bool
	ACL        []string
	GenActive  bool
	GenID      string
	Issued     uint64
	Limit      string // "" when the key has no limit of its own
	DestroyAt  int64  // REVOKED: when it is due (Unix ms); not compared
}

func (m mxKey) clone() mxKey {
	m.Versions = slices.Clone(m.Versions)
	m.ACL = slices.Clone(m.ACL)
	return m
}

func (m mxKey) String() string {
	return fmt.Sprintf("{state %s versions %v acl %v %v generator %v %.8s issued %d limit %q}",
		m.State, m.Versions, m.ACLOn, m.ACL, m.GenActive, m.GenID, m.Issued, m.Limit)
}

func mxNewKey(convergent bool) mxKey {
	return mxKey{Convergent: convergent, State: kms.StateEnabled, Versions: []kms.VersionState{kms.VersionEnabled}}
}

// mxApply is the model of each change. A generator id made by a change
// still in flight is unknown: newID is used for it.
func mxApply(m mxKey, op mxOp, newID string) mxKey {
	m = m.clone()
	switch op.Op {
	case "rotate":
		m.Versions = append(m.Versions, kms.VersionEnabled)
	case "vdisable":
		m.Versions[op.Version-1] = kms.VersionDisabled
	case "venable":
		m.Versions[op.Version-1] = kms.VersionEnabled
	case "disable", "cancel":
		m.State, m.DestroyAt = kms.StateDisabled, 0
	case "enable":
		m.State = kms.StateEnabled
	case "delete":
		m.State, m.DestroyAt = kms.StateRevoked, op.DestroyAt
	case "acladd":
		m.ACL = append(m.ACL, op.Entry)
		slices.Sort(m.ACL)
	case "aclremove":
		m.ACL = slices.DeleteFunc(m.ACL, func(s string) bool { return s == op.Entry })
	case "aclon":
		m.ACLOn = true
	case "acloff":
		m.ACLOn = false
	case "limit":
		m.Limit = op.Limit
	case "unlimit":
		m.Limit = ""
	case "genactivate", "genrotate":
		m.GenActive, m.GenID = true, op.GenID
		if m.GenID == "" {
			m.GenID = newID
		}
	case "gendeactivate":
		m.GenActive, m.GenID = false, ""
	case "issue":
		m.Issued += 2
	}
	return m
}

func mxEqual(a, b mxKey) bool {
	return a.Convergent == b.Convergent && a.State == b.State && slices.Equal(a.Versions, b.Versions) &&
		a.ACLOn == b.ACLOn && slices.Equal(a.ACL, b.ACL) && a.GenActive == b.GenActive && a.GenID == b.GenID &&
		a.Issued == b.Issued && a.Limit == b.Limit
}

// mxActual reads a key's state through the API; ok is false if the key
// does not exist.
func mxActual(t *testing.T, e *kms.Engine, tag string) (mxKey, bool) {
	t.Helper()
	ctx := context.Background()
	k, err := e.GetKey(ctx, tag)
	if errors.Is(err, kms.ErrKeyNotFound) {
		return mxKey{}, false
	}
	if err != nil {
		t.Fatalf("GetKey(%s): %v", tag, err)
	}
	vs, err := e.ListKeyVersions(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	if int(k.CurrentVersion) != len(vs) {
		t.Fatalf("key %s: current version %d of %d versions", tag, k.CurrentVersion, len(vs))
	}
	a, err := e.GetKeyACL(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	g, err := e.GetTokenGenerator(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	l, err := e.GetKeyRateLimit(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	m := mxKey{Convergent: k.Convergent, State: k.State, ACLOn: a.Enabled, ACL: slices.Clone(a.Entries),
		GenActive: g.Status == kms.GeneratorActive, GenID: g.ID, Issued: g.IssuedTokenCount}
	if len(m.ACL) == 0 {
		m.ACL = nil
	}
	for _, v := range vs {
		m.Versions = append(m.Versions, v.State)
	}
	if l.Own {
		m.Limit = l.Limit.String()
	}
	if k.State == kms.StateRevoked {
		m.DestroyAt = k.DestroyAt.UnixMilli()
	}
	return m, true
}

type mxCT struct {
	tag, ct, pt string
	ctx         []byte
}

type mxToken struct {
	tag, access, refresh, genID string
	issued                      int64 // the fake clock at issuance (Unix ms)
}

// mxAddr is a caller address the key's allow-list admits, and whether
// one exists.
func mxAddr(m mxKey) (netip.Addr, bool) {
	if !m.ACLOn {
		return netip.MustParseAddr("203.0.113.9"), true
	}
	if len(m.ACL) == 0 {
		return netip.MustParseAddr("10.1.2.3"), false
	}
	return netip.MustParseAddr(mxACLPool[m.ACL[0]]), true
}

// mxCheckToken checks that a token works exactly when the model says it
// must: its generator is the key's current one and the key is ENABLED.
func mxCheckToken(t *testing.T, e *kms.Engine, m mxKey, tk mxToken, clock int64) {
	t.Helper()
	ctx := context.Background()
	addr, admitted := mxAddr(m)
	if clock >= tk.issued+(72*time.Hour).Milliseconds() {
		// The fake clock has passed the access token's 72 h.
		_, err := e.WithToken(tk.access, addr).Encrypt(ctx, tk.tag, []byte("token check"), []byte("ctx"))
		if err == nil || !(errors.Is(err, kms.ErrTokenExpired) || errors.Is(err, kms.ErrTokenInvalid) || errors.Is(err, kms.ErrAccessDenied)) {
			t.Fatalf("key %.8s: expired token: %v", tk.tag, err)
		}
		return
	}
	genLive := m.GenActive && m.GenID == tk.genID
	live := m.State == kms.StateEnabled && genLive
	ct, err := e.WithToken(tk.access, addr).Encrypt(ctx, tk.tag, []byte("token check"), []byte("ctx"))
	switch {
	case !admitted:
		if !errors.Is(err, kms.ErrAccessDenied) {
			t.Fatalf("key %.8s: token from outside an empty allow-list: %v, want access denied", tk.tag, err)
		}
		return
	case live && err != nil:
		t.Fatalf("key %.8s: acknowledged token (generator %.8s) no longer works: %v (model %v)", tk.tag, tk.genID, err, m)
	case !live && err == nil:
		t.Fatalf("key %.8s: token of a replaced generator (%.8s) works (model %v)", tk.tag, tk.genID, m)
	case !live && genLive && !errors.Is(err, kms.ErrKeyNotEnabled):
		t.Fatalf("key %.8s: good token on a %s key: %v, want key not enabled", tk.tag, m.State, err)
	case !genLive && !errors.Is(err, kms.ErrTokenInvalid):
		t.Fatalf("key %.8s: dead token: %v, want invalid token", tk.tag, err)
	}
	if live {
		pt, err := e.Decrypt(ctx, tk.tag, ct, []byte("ctx"))
		if err != nil || string(pt) != "token check" {
			t.Fatalf("key %.8s: token-plane ciphertext: %q %v", tk.tag, pt, err)
		}
		// A refresh token is never an access token.
		if _, err := e.WithToken(tk.refresh, addr).Encrypt(ctx, tk.tag, []byte("x"), []byte("ctx")); !errors.Is(err, kms.ErrTokenInvalid) {
			t.Fatalf("key %.8s: refresh token as access token: %v", tk.tag, err)
		}
	}
}

// mxCheckCT checks an acknowledged ciphertext decrypts to its plaintext,
// when the model says the key and version can decrypt.
func mxCheckCT(t *testing.T, e *kms.Engine, m mxKey, c mxCT) bool {
	t.Helper()
	var v uint32
	fmt.Sscanf(c.ct, "ncpkms:v%d:", &v)
	if v == 0 || int(v) > len(m.Versions) {
		t.Fatalf("key %.8s: ciphertext of version %d, key has %d", c.tag, v, len(m.Versions))
	}
	if m.State != kms.StateEnabled || m.Versions[v-1] != kms.VersionEnabled {
		return false
	}
	pt, err := e.Decrypt(context.Background(), c.tag, c.ct, c.ctx)
	if err != nil || string(pt) != c.pt {
		t.Fatalf("key %.8s: acknowledged ciphertext of v%d: %q, %v; want %q", c.tag, v, pt, err, c.pt)
	}
	return true
}

// TestCrashMixedWorkload kills a child process with SIGKILL at random
// moments while it creates keys, rotates them, changes key and version
// states, requests and cancels deletions, edits allow-lists and rate
// limits, activates, rotates and deactivates token generators, issues
// tokens and encrypts, rotates the root key (RotateRootKey, between
// mxRoots) and, on a fake clock the parent carries from cycle to cycle
// and the child advances, lets deletions fall due and destroys them
// (Maintain). After every kill the store is reopened: with the root key
// of the last acknowledged root rotation, or, with one in flight, with
// exactly one of the two; every acknowledged change is there (at most the
// one change in flight may or may not be), no half-made key exists, no
// destroyed key is back and its shred keys are gone, every acknowledged
// ciphertext of a usable version decrypts, and every acknowledged token
// works exactly when its generator is still the key's current one. A last
// pass destroys what is due, enables everything else and decrypts every
// ciphertext ever acknowledged; then every file of the directory is
// scanned for the destroyed keys' sealed handles (every one the backend
// made for them, under either root key): nothing opens.
func TestCrashMixedWorkload(t *testing.T) {
	if args, ok := testproc.Child(t); ok {
		mxChild(args)
		return
	}
	cycles := *mxCycles
	if cycles <= 0 {
		cycles = 50
		if testing.Short() {
			cycles = 20
		}
	}
	dir := t.TempDir()
	seed := *mxSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (-crashmix.seed repeats the choices; the kill times differ)", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	ctx := context.Background()
	model := map[string]mxKey{}
	var cts []mxCT
	var toks []mxToken
	checked := 0
	acked := map[string]int{}
	inflightSeen := 0
	clock, root := mxClockStart, 0
	destroyed := map[string]bool{}
	made := map[string][]shMade{}
	rootsInFlight, rotationKills := 0, 0
	start := time.Now()
	for cycle := range cycles {
		// The child runs for 20 s at most; 30 s without its end is a hang.
		p := testproc.Start(t, testproc.Options{Timeout: 30 * time.Second}, dir, fmt.Sprint(rng.Uint64()), fmt.Sprint(root), fmt.Sprint(clock))
		killAfter := time.Duration(5+rng.IntN(56)) * time.Millisecond
		if rng.IntN(4) == 0 {
			// Longer, so that kills also land late in a root rotation
			// (its switch and clean-up), which takes a commit per key
			// and pass.
			killAfter = time.Duration(5+rng.IntN(400)) * time.Millisecond
		}
		var timer <-chan time.Time
		var inflight *mxOp
		newCTs := len(cts)
	read:
		for {
			select {
			case line, ok := <-p.Lines():
				if !ok {
					break read
				}
				var op mxOp
				if json.Unmarshal([]byte(line), &op) != nil || op.Phase == "" {
					continue
				}
				switch op.Phase {
				case "MADE":
					made[op.Tag] = append(made[op.Tag], shMade{
						ref: backend.KeyRef{KeyTag: op.Tag, Version: op.Version, Purpose: backend.Purpose(op.Purpose)},
						typ: backend.KeyType(op.Type), convergent: op.Convergent, handle: op.Handle,
					})
				case "BEGIN":
					inflight = &op
				case "FAIL":
					p.Kill()
					t.Fatalf("cycle %d: the child's %s failed: %s", cycle, op.Op, op.Err)
				case "ACK":
					inflight = nil
					acked[op.Op]++
					if timer == nil {
						timer = time.After(killAfter)
					}
					switch op.Op {
					case "advance":
						clock = op.Clock
					case "rootrotate":
						root = op.Root
					case "maintain":
						for tag, m := range model {
							if m.State == kms.StateRevoked && m.DestroyAt <= clock {
								delete(model, tag)
								destroyed[tag] = true
							}
						}
					case "create":
						model[op.Tag] = mxNewKey(op.Convergent)
					case "encrypt":
						cts = append(cts, mxCT{op.Tag, op.CT, op.PT, []byte(op.Ctx)})
						model[op.Tag] = mxApply(model[op.Tag], op, "")
					case "issue":
						toks = append(toks, mxToken{op.Tag, op.Access, op.Refresh, op.GenID, clock})
						model[op.Tag] = mxApply(model[op.Tag], op, "")
					default:
						model[op.Tag] = mxApply(model[op.Tag], op, "")
					}
				}
			case <-timer:
				p.Kill()
				timer = nil
			}
		}
		r := p.Wait()
		switch {
		case r.TimedOut:
			t.Fatalf("cycle %d: child silent for 30 s", cycle)
		case r.Err != nil && !(r.Killed && r.Code == -1):
			t.Fatalf("cycle %d: the child ended on its own (%v):\n%s", cycle, r, testproc.Tail(r.Stderr, 20))
		}
		if inflight != nil {
			inflightSeen++
			if inflight.Op == "rootrotate" {
				rotationKills++
			}
		}

		// Restart on the same directory and compare with the model.
		clk := testclock.New(time.UnixMilli(clock).UTC())
		e, err := kms.New(ctx, newBackend(t, mxRoots[root]), kms.WithDirectory(dir), kms.WithMaintenanceInterval(0), kms.WithClock(clk))
		if inflight != nil && inflight.Op == "rootrotate" && errors.Is(err, kms.ErrBackendMismatch) {
			// The rotation had switched: the store is under the new key
			// and says so. If it had also ended (the marker removed, the
			// kill landing before the child recorded the rotation as
			// done), the store no longer knows the old key at all and
			// says only that it belongs to another one.
			if !strings.Contains(err.Error(), "rotated from this root key") && !strings.Contains(err.Error(), "belongs to another root key") {
				t.Fatalf("cycle %d: the old root key after a switched rotation is refused without saying why: %v", cycle, err)
			}
			root = 1 - root
			rootsInFlight++
			e, err = kms.New(ctx, newBackend(t, mxRoots[root]), kms.WithDirectory(dir), kms.WithMaintenanceInterval(0), kms.WithClock(clk))
		}
		if err != nil {
			t.Fatalf("cycle %d: reopen after kill with root key %d (in flight: %+v): %v", cycle, root, inflight, err)
		}
		page, err := e.ListKeys(ctx, kms.ListKeysRequest{PageSize: 200})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range page.Keys {
			if _, known := model[k.Tag]; known {
				continue
			}
			if destroyed[k.Tag] {
				t.Fatalf("cycle %d: destroyed key %s is back", cycle, k.Tag)
			}
			if inflight == nil || inflight.Op != "create" || k.Name != inflight.Name {
				t.Fatalf("cycle %d: key %s (%s) was never acknowledged (in flight: %+v)", cycle, k.Name, k.Tag, inflight)
			}
			model[k.Tag] = mxNewKey(inflight.Convergent)
		}
		for tag, want := range model {
			if _, err := e.GetKey(ctx, tag); errors.Is(err, kms.ErrKeyNotFound) &&
				inflight != nil && inflight.Op == "maintain" && want.State == kms.StateRevoked && want.DestroyAt <= clock {
				// Destroyed by the Maintain in flight.
				delete(model, tag)
				destroyed[tag] = true
			}
		}
		if page.TotalCount != len(model) {
			t.Fatalf("cycle %d: %d keys stored, %d acknowledged", cycle, page.TotalCount, len(model))
		}
		mxCheckDestroyed(t, e, dir, destroyed, cycle)
		for tag, want := range model {
			got, ok := mxActual(t, e, tag)
			if !ok {
				t.Fatalf("cycle %d: acknowledged key %s is missing", cycle, tag)
			}
			if mxEqual(got, want) {
				continue
			}
			if inflight != nil && inflight.Tag == tag {
				newID := ""
				if got.GenID != want.GenID {
					newID = got.GenID
				}
				if alt := mxApply(want, *inflight, newID); mxEqual(got, alt) {
					model[tag] = got // the change in flight was committed before the kill
					continue
				}
			}
			t.Fatalf("cycle %d: key %s is %v, acknowledged %v (in flight: %+v)", cycle, tag, got, want, inflight)
		}
		// Ciphertexts: all new ones, and a sample of the older ones.
		for i := newCTs; i < len(cts); i++ {
			if !destroyed[cts[i].tag] && mxCheckCT(t, e, model[cts[i].tag], cts[i]) {
				checked++
			}
		}
		for range min(newCTs, 30) {
			c := cts[rng.IntN(newCTs)]
			if destroyed[c.tag] {
				if _, err := e.Decrypt(ctx, c.tag, c.ct, c.ctx); !errors.Is(err, kms.ErrKeyNotFound) {
					t.Fatalf("cycle %d: ciphertext of destroyed key %.8s: %v", cycle, c.tag, err)
				}
				continue
			}
			if mxCheckCT(t, e, model[c.tag], c) {
				checked++
			}
		}
		// Tokens: the latest few of each key.
		perKey := map[string]int{}
		for i := len(toks) - 1; i >= 0; i-- {
			tk := toks[i]
			if destroyed[tk.tag] {
				continue
			}
			if perKey[tk.tag]++; perKey[tk.tag] <= 4 {
				mxCheckToken(t, e, model[tk.tag], tk, clock)
			}
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
	}

	// Last pass: make every key and version usable and lift the rate
	// limits, then every ciphertext ever acknowledged must decrypt and
	// every token behave.
	e, err := kms.New(ctx, newBackend(t, mxRoots[root]), kms.WithDirectory(dir), kms.WithMaintenanceInterval(0),
		kms.WithRateLimit(ratelimit.Limit{Unlimited: true}), kms.WithClock(testclock.New(time.UnixMilli(clock).UTC())))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	for tag, m := range model {
		if m.State == kms.StateRevoked && m.DestroyAt <= clock {
			delete(model, tag)
			destroyed[tag] = true
		}
	}
	mxCheckDestroyed(t, e, dir, destroyed, cycles)
	for tag, m := range model {
		if m.Limit != "" {
			if err := e.ClearKeyRateLimit(ctx, tag); err != nil {
				t.Fatal(err)
			}
			m.Limit = ""
		}
		if m.State == kms.StateRevoked {
			if _, err := e.CancelKeyDeletion(ctx, tag); err != nil {
				t.Fatal(err)
			}
			m.State = kms.StateDisabled
		}
		if m.State == kms.StateDisabled {
			if _, err := e.EnableKey(ctx, tag); err != nil {
				t.Fatal(err)
			}
			m.State = kms.StateEnabled
		}
		for i, v := range m.Versions {
			if v == kms.VersionDisabled {
				if _, err := e.EnableKeyVersion(ctx, tag, uint32(i+1)); err != nil {
					t.Fatal(err)
				}
				m.Versions[i] = kms.VersionEnabled
			}
		}
		model[tag] = m
	}
	for _, c := range cts {
		if destroyed[c.tag] {
			if _, err := e.Decrypt(ctx, c.tag, c.ct, c.ctx); !errors.Is(err, kms.ErrKeyNotFound) {
				t.Fatalf("ciphertext of destroyed key %.8s: %v", c.tag, err)
			}
			continue
		}
		if !mxCheckCT(t, e, model[c.tag], c) {
			t.Fatalf("ciphertext of key %s not checked in the last pass", c.tag)
		}
	}
	for _, tk := range toks {
		if !destroyed[tk.tag] {
			mxCheckToken(t, e, model[tk.tag], tk, clock)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	scanStart := time.Now()
	mxScanDestroyed(t, dir, made, destroyed, model)
	t.Logf("%d cycles in %v (scan %v): %d keys, %d destroyed, %d ciphertexts (%d decryptions checked), %d token sets, %d kills with a change in flight (%d during a root rotation, %d of them after its switch); acknowledged: %v",
		cycles, time.Since(start).Round(time.Millisecond), time.Since(scanStart).Round(time.Millisecond), len(model), len(destroyed), len(cts), checked+len(cts), len(toks), inflightSeen, rotationKills, rootsInFlight, acked)
	for _, op := range []string{"create", "rotate", "encrypt", "issue", "acladd", "genactivate", "rootrotate", "advance", "maintain"} {
		if acked[op] == 0 && cycles >= 100 {
			t.Errorf("no %s was acknowledged in %d cycles: the workload does not exercise it", op, cycles)
		}
	}
}

// mxBackend is the memory backend of the child: it prints every handle
// it makes (MADE) before returning it, so that the parent knows every
// sealed handle of every key, under either root key.
type mxBackend struct {
	*memory.Backend
	say func(mxOp)
}

func (b *mxBackend) made(ref backend.KeyRef, typ backend.KeyType, convergent bool, h []byte) {
	b.say(mxOp{Phase: "MADE", Tag: ref.KeyTag, Version: ref.Version, Purpose: string(ref.Purpose), Type: string(typ), Convergent: convergent, Handle: h})
}

func (b *mxBackend) Generate(ctx context.Context, req *backend.GenerateRequest) (*backend.GenerateResponse, error) {
	resp, err := b.Backend.Generate(ctx, req)
	if err == nil {
		b.made(req.Ref, req.Type, req.Convergent, resp.Handle)
	}
	return resp, err
}

func (b *mxBackend) ResealHandle(ctx context.Context, req *backend.LoadRequest) ([]byte, error) {
	h, err := b.Backend.ResealHandle(ctx, req)
	if err == nil {
		b.made(req.Ref, req.Type, req.Convergent, h)
	}
	return h, err
}

// mxChild makes random changes until killed (or for 20 s).
func mxChild(args []string) {
	ctx := context.Background()
	dir := args[0]
	var seed uint64
	var root int
	var clock int64
	fmt.Sscan(args[1], &seed)
	fmt.Sscan(args[2], &root)
	fmt.Sscan(args[3], &clock)
	rng := rand.New(rand.NewPCG(seed, 3))
	var mu sync.Mutex
	out := json.NewEncoder(os.Stdout)
	emit := func(op mxOp) {
		mu.Lock()
		out.Encode(op)
		mu.Unlock()
	}
	say := func(op mxOp, phase string) {
		op.Phase = phase
		emit(op)
	}
	mb, err := memory.New(mxRoots[root])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	clk := testclock.New(time.UnixMilli(clock).UTC())
	e, err := kms.New(ctx, &mxBackend{Backend: mb, say: emit}, kms.WithDirectory(dir), kms.WithMaintenanceInterval(0), kms.WithClock(clk))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(2)
	}
	w := &mxWorld{clk: clk, root: root}
	// Generator changes make an RSA key pair (tens of milliseconds): one
	// cycle in six starts with one, so that some are acknowledged before
	// the kill, which comes soon after the first acknowledgement.
	genFirst := rng.IntN(6) == 0
	// One cycle in six starts with a root-key rotation, acknowledged
	// before the kill timer starts.
	rootFirst := !genFirst && rng.IntN(5) == 0
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		op, run := mxPick(ctx, e, rng, seed, i, genFirst && i == 0, w)
		if rootFirst && i == 0 {
			op, run = mxRootRotate(ctx, e, w)
		}
		say(op, "BEGIN")
		if err := run(&op); err != nil {
			op.Err = err.Error()
			say(op, "FAIL")
			os.Exit(1)
		}
		say(op, "ACK")
	}
	e.Close()
}

// mxWorld is the child's clock and root key.
type mxWorld struct {
	clk  *fakeClock
	root int
}

// mxPick chooses a change the current state allows and returns it with
// the call that makes it; the call fills in the results.
func mxPick(ctx context.Context, e *kms.Engine, rng *rand.Rand, seed uint64, i int, genFirst bool, w *mxWorld) (mxOp, func(*mxOp) error) {
	page, err := e.ListKeys(ctx, kms.ListKeysRequest{PageSize: 200})
	if err != nil {
		return mxOp{Op: "list"}, func(*mxOp) error { return err }
	}
	if len(page.Keys) < 2 || (len(page.Keys) < 6 && rng.IntN(25) == 0) {
		op := mxOp{Op: "create", Name: fmt.Sprintf("m%d_%d", seed%1000000, i), Convergent: rng.IntN(4) == 0}
		return op, func(op *mxOp) error {
			k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: op.Name, Type: kms.AES256, Convergent: op.Convergent})
			if err == nil {
				op.Tag = k.Tag
			}
			return err
		}
	}
	switch r := rng.IntN(100); {
	case r < 4:
		// Time passes: requested deletions fall due after three.
		return mxOp{Op: "advance"}, func(op *mxOp) error {
			w.clk.Advance(mxAdvance)
			op.Clock = w.clk.Now().UnixMilli()
			return nil
		}
	case r < 7:
		return mxRootRotate(ctx, e, w)
	}
	k := page.Keys[rng.IntN(len(page.Keys))]
	op := mxOp{Tag: k.Tag}
	switch k.State {
	case kms.StateRevoked:
		if !k.DestroyAt.After(w.clk.Now()) {
			// Due: cancelling is refused; destroy it.
			return mxOp{Op: "maintain"}, func(*mxOp) error { return e.Maintain(ctx) }
		}
		if rng.IntN(3) != 0 {
			return mxOp{Op: "advance"}, func(op *mxOp) error {
				w.clk.Advance(mxAdvance)
				op.Clock = w.clk.Now().UnixMilli()
				return nil
			}
		}
		op.Op = "cancel"
		return op, func(op *mxOp) error { _, err := e.CancelKeyDeletion(ctx, op.Tag); return err }
	case kms.StateDisabled:
		if rng.IntN(4) == 0 {
			op.Op = "delete"
			return op, mxDelete(ctx, e)
		}
		op.Op = "enable"
		return op, func(op *mxOp) error { _, err := e.EnableKey(ctx, op.Tag); return err }
	}
	g, gerr := e.GetTokenGenerator(ctx, k.Tag)
	a, aerr := e.GetKeyACL(ctx, k.Tag)
	if err := errors.Join(gerr, aerr); err != nil {
		return mxOp{Op: "read"}, func(*mxOp) error { return err }
	}
	r := rng.IntN(100)
	if genFirst {
		r = 45
	}
	switch {
	case r < 12 && k.CurrentVersion < 12:
		op.Op = "rotate"
		return op, func(op *mxOp) error { _, err := e.RotateKey(ctx, op.Tag); return err }
	case r < 22 && k.CurrentVersion > 1:
		op.Version = 1 + uint32(rng.IntN(int(k.CurrentVersion-1)))
		vs, err := e.ListKeyVersions(ctx, k.Tag)
		if err != nil {
			return op, func(*mxOp) error { return err }
		}
		if vs[op.Version-1].State == kms.VersionEnabled {
			op.Op = "vdisable"
			return op, func(op *mxOp) error { _, err := e.DisableKeyVersion(ctx, op.Tag, op.Version); return err }
		}
		op.Op = "venable"
		return op, func(op *mxOp) error { _, err := e.EnableKeyVersion(ctx, op.Tag, op.Version); return err }
	case r < 26:
		op.Op = "disable"
		return op, func(op *mxOp) error { _, err := e.DisableKey(ctx, op.Tag); return err }
	case r < 29:
		op.Op = "delete"
		return op, mxDelete(ctx, e)
	case r < 38:
		entries := slices.Sorted(func(yield func(string) bool) {
			for e := range mxACLPool {
				if !yield(e) {
					return
				}
			}
		})
		op.Entry = entries[rng.IntN(len(entries))]
		if slices.Contains(a.Entries, op.Entry) {
			op.Op = "aclremove"
			return op, func(op *mxOp) error { _, err := e.RemoveAllowedIPs(ctx, op.Tag, []string{op.Entry}); return err }
		}
		op.Op = "acladd"
		return op, func(op *mxOp) error { _, err := e.AddAllowedIPs(ctx, op.Tag, []string{op.Entry}); return err }
	case r < 43:
		op.Op = "aclon"
		if a.Enabled {
			op.Op = "acloff"
		}
		return op, func(op *mxOp) error { _, err := e.SetKeyACLEnabled(ctx, op.Tag, op.Op == "aclon"); return err }
	case r < 45:
		l := mxLimits[rng.IntN(len(mxLimits))]
		if rng.IntN(3) == 0 {
			op.Op = "unlimit"
			return op, func(op *mxOp) error { return e.ClearKeyRateLimit(ctx, op.Tag) }
		}
		op.Op, op.Limit = "limit", l.String()
		return op, func(op *mxOp) error { return e.SetKeyRateLimit(ctx, op.Tag, l) }
	case r < 46 || (r < 48 && g.Status != kms.GeneratorActive):
		switch {
		case g.Status != kms.GeneratorActive:
			op.Op = "genactivate"
			return op, func(op *mxOp) error {
				g, err := e.ActivateTokenGenerator(ctx, op.Tag)
				if err == nil {
					op.GenID = g.ID
				}
				return err
			}
		case rng.IntN(5) == 0:
			op.Op = "gendeactivate"
			return op, func(op *mxOp) error { _, err := e.DeactivateTokenGenerator(ctx, op.Tag); return err }
		default:
			op.Op = "genrotate"
			return op, func(op *mxOp) error {
				g, err := e.RotateTokenGenerator(ctx, op.Tag)
				if err == nil {
					op.GenID = g.ID
				}
				return err
			}
		}
	case r < 60 && g.Status == kms.GeneratorActive:
		op.Op, op.GenID = "issue", g.ID
		return op, func(op *mxOp) error {
			set, err := e.IssueTokens(ctx, op.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "crash-test"})
			if err == nil {
				op.Access, op.Refresh = set.Access, set.Refresh
			}
			return err
		}
	default:
		op.Op, op.PT = "encrypt", fmt.Sprintf("pt-%d-%d", seed%1000, i)
		if k.Convergent || rng.IntN(2) == 0 {
			op.Ctx = fmt.Sprintf("ctx-%d", rng.IntN(3))
		}
		return op, func(op *mxOp) error {
			ct, err := e.Encrypt(ctx, op.Tag, []byte(op.PT), []byte(op.Ctx))
			op.CT = ct
			return err
		}
	}
}

// mxDelete requests a key's deletion and reports when it is due.
func mxDelete(ctx context.Context, e *kms.Engine) func(op *mxOp) error {
	return func(op *mxOp) error {
		k, err := e.RequestKeyDeletion(ctx, op.Tag)
		if err == nil {
			op.DestroyAt = k.DestroyAt.UnixMilli()
		}
		return err
	}
}

// mxCheckDestroyed checks that no destroyed key is found and that its
// shred keys (the only keys to its stored handles) are gone.
func mxCheckDestroyed(t *testing.T, e *kms.Engine, dir string, destroyed map[string]bool, cycle int) {
	t.Helper()
	for tag := range destroyed {
		if _, err := e.GetKey(context.Background(), tag); !errors.Is(err, kms.ErrKeyNotFound) {
			t.Fatalf("cycle %d: destroyed key %.8s: %v", cycle, tag, err)
		}
		for _, next := range []bool{false, true} {
			if shHasShredKey(t, dir, tag, next) {
				t.Fatalf("cycle %d: destroyed key %.8s still has its shred key (next %v)", cycle, tag, next)
			}
		}
	}
}

// mxScanDestroyed scans every file of dir for anything that could be a
// stored handle (shCandidates, and the parts of rotation's dual handles)
// and tries each as the material of every handle the backend made for
// the destroyed keys: under both root keys, and, for a wrapped one, first
// unwrapped under every shred key left (next keys included). Nothing may
// open. The same scan for the live keys must open something, or it would
// be blind.
func mxScanDestroyed(t *testing.T, dir string, made map[string][]shMade, destroyed map[string]bool, live map[string]mxKey) {
	t.Helper()
	files := shFiles(t, dir)
	ks, err := shred.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	tags, _ := ks.Tags()
	nexts, _ := ks.NextTags()
	keys := map[string][]*shred.Key{}
	for _, tag := range tags {
		if k, ok, err := ks.Get(tag); err == nil && ok {
			keys[tag] = append(keys[tag], k)
		}
	}
	for _, tag := range nexts {
		if k, ok, err := ks.GetNext(tag); err == nil && ok {
			keys[tag] = append(keys[tag], k)
		}
	}
	var bes []*memory.Backend
	for _, r := range mxRoots {
		bes = append(bes, newBackend(t, r))
	}
	scan := func(which func(tag string) bool) int {
		var ms []shMade
		for tag, m := range made {
			if which(tag) {
				ms = append(ms, m...)
			}
		}
		byLen := map[int][]shMade{}
		for _, m := range ms {
			byLen[len(m.handle)] = append(byLen[len(m.handle)], m)
		}
		opened := 0
		load := func(m shMade, h []byte) {
			for _, be := range bes {
				if _, err := be.Load(context.Background(), &backend.LoadRequest{Ref: m.ref, Type: m.typ, Convergent: m.convergent, Handle: h}); err == nil {
					opened++
				}
			}
		}
		seen := map[string]bool{}
		for _, data := range files {
			cands := shCandidates(data, ms)
			cands = append(cands, rkDualParts(cands)...)
			for _, c := range cands {
				// Badger keeps a value in several files (logs, tables):
				// each distinct candidate is tried once.
				if seen[string(c)] {
					continue
				}
				seen[string(c)] = true
				if !shred.IsWrapped(c) {
					for _, m := range byLen[len(c)] {
						load(m, c)
					}
					continue
				}
				for _, m := range ms {
					for _, k := range keys[m.ref.KeyTag] {
						if h, err := k.Unwrap(c, string(m.ref.Purpose), m.ref.Version); err == nil {
							load(m, h)
						}
					}
				}
			}
		}
		return opened
	}
	if n := scan(func(tag string) bool { return destroyed[tag] }); n > 0 {
		t.Fatalf("%d sealed handles of destroyed keys open", n)
	}
	// One live key is enough to show the scan finds what is there.
	var one string
	for tag := range live {
		if len(made[tag]) > 0 && (one == "" || tag < one) {
			one = tag
		}
	}
	if one != "" {
		if n := scan(func(tag string) bool { return tag == one }); n == 0 {
			t.Fatal("the scan opens no live key's handle: it would not see a destroyed one")
		}
	}
}

// mxRootRotate rotates the store to the other root key of mxRoots.
func mxRootRotate(ctx context.Context, e *kms.Engine, w *mxWorld) (mxOp, func(*mxOp) error) {
	return mxOp{Op: "rootrotate"}, func(op *mxOp) error {
		next := 1 - w.root
		if err := e.RotateRootKey(ctx, mxRoots[next]); err != nil {
			return err
		}
		w.root, op.Root = next, next
		return nil
	}
}
