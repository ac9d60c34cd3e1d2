package kms_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/ratelimit"
	"github.com/pocketkms/kms/token"
)

// rwCT is a ciphertext some worker made, and what it encrypts.
type rwCT struct {
	tag, ct, pt string
	ctx         []byte
}

// rwState is what the workers share: ciphertexts made so far and the
// current token set of each key.
type rwState struct {
	mu   sync.Mutex
	cts  []rwCT
	sets map[string]*token.Set
}

func (s *rwState) add(c rwCT) {
	s.mu.Lock()
	s.cts = append(s.cts, c)
	s.mu.Unlock()
}

func (s *rwState) pick(rng *rand.Rand) (rwCT, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.cts) == 0 {
		return rwCT{}, false
	}
	return s.cts[rng.IntN(len(s.cts))], true
}

func (s *rwState) set(tag string) *token.Set {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sets[tag]
}

func (s *rwState) setSet(tag string, set *token.Set) {
	s.mu.Lock()
	s.sets[tag] = set
	s.mu.Unlock()
}

// rwAllowed fails the test unless err is nil or an *kms.Error of one of
// the kinds the concurrent changes can cause.
func rwAllowed(t *testing.T, what string, err error, kinds ...error) bool {
	t.Helper()
	if err == nil {
		return true
	}
	var ke *kms.Error
	if !errors.As(err, &ke) {
		t.Errorf("%s: untyped error %v", what, err)
		return false
	}
	for _, k := range kinds {
		if errors.Is(err, k) {
			return false
		}
	}
	t.Errorf("%s: unexpected error %v", what, err)
	return false
}

// TestRaceWorkload runs 64 goroutines against one Engine: encryption and
// decryption on both planes, re-encryption, rotations, version disabling
// and enabling, token generator rotations with re-issued tokens, ACL edits
// and rate limit changes, and readers checking invariants. Under -race no
// race may be reported; in any build every decryption returns what was
// encrypted, or an error of a class the concurrent changes explain
// (a version disabled meanwhile, a token from a rotated generator, a rate
// limit). At the end every version is enabled again and every ciphertext
// made must decrypt.
func TestRaceWorkload(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, kms.WithDirectory(t.TempDir()), kms.WithMaintenanceInterval(0))
	iters := 600
	if testing.Short() {
		iters = 60
	}
	caller := netip.MustParseAddr("10.1.2.3")
	st := &rwState{sets: map[string]*token.Set{}}
	var keys []*kms.Key
	for i, conv := range []bool{false, false, false, true} {
		k := createKey(t, e, fmt.Sprintf("race%d", i), kms.AES256, conv)
		keys = append(keys, k)
	}
	tokenKeys := keys[:2]
	for _, k := range tokenKeys {
		if _, err := e.ActivateTokenGenerator(ctx, k.Tag); err != nil {
			t.Fatal(err)
		}
		set, err := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "race"})
		if err != nil {
			t.Fatal(err)
		}
		st.setSet(k.Tag, set)
		if _, err := e.AddAllowedIPs(ctx, k.Tag, []string{"10.1.2.3"}); err != nil {
			t.Fatal(err)
		}
	}
	ctxFor := func(k *kms.Key, rng *rand.Rand) []byte {
		if k.Convergent || rng.IntN(2) == 0 {
			return fmt.Appendf(nil, "ctx-%d", rng.IntN(4))
		}
		return nil
	}

	var ops atomic.Int64
	var wg sync.WaitGroup
	worker := func(n int, f func(rng *rand.Rand, i int)) {
		for w := range n {
			seed := uint64(ops.Add(1)) * 7919
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(seed, uint64(w)))
				for i := range iters {
					f(rng, i)
					ops.Add(1)
				}
			})
		}
	}
	// 24 encrypt-then-decrypt workers on the trusted plane.
	worker(24, func(rng *rand.Rand, i int) {
		k := keys[rng.IntN(len(keys))]
		c := ctxFor(k, rng)
		pt := fmt.Sprintf("pt-%d-%d", rng.Uint64(), i)
		ct, err := e.Encrypt(ctx, k.Tag, []byte(pt), c)
		if !rwAllowed(t, "encrypt", err) {
			return
		}
		st.add(rwCT{k.Tag, ct, pt, c})
		got, err := e.Decrypt(ctx, k.Tag, ct, c)
		if rwAllowed(t, "decrypt", err, kms.ErrVersionDisabled) && string(got) != pt {
			t.Errorf("decrypt: %q, want %q", got, pt)
		}
	})
	// 8 workers decrypting anyone's ciphertexts, 2 in batches, 2
	// re-encrypting them.
	worker(2, func(rng *rand.Rand, _ int) {
		first, ok := st.pick(rng)
		if !ok {
			return
		}
		items := []kms.DecryptItem{{Ciphertext: first.ct, Context: first.ctx}}
		want := []string{first.pt}
		for range 20 {
			if c, _ := st.pick(rng); c.tag == first.tag {
				items = append(items, kms.DecryptItem{Ciphertext: c.ct, Context: c.ctx})
				want = append(want, c.pt)
			}
		}
		got, err := e.BatchDecrypt(ctx, first.tag, items)
		if !rwAllowed(t, "batch decrypt", err, kms.ErrVersionDisabled) {
			return
		}
		for i := range got {
			if string(got[i]) != want[i] {
				t.Errorf("batch item %d: %q, want %q", i, got[i], want[i])
			}
		}
	})
	worker(8, func(rng *rand.Rand, _ int) {
		c, ok := st.pick(rng)
		if !ok {
			return
		}
		got, err := e.Decrypt(ctx, c.tag, c.ct, c.ctx)
		if rwAllowed(t, "decrypt", err, kms.ErrVersionDisabled) && string(got) != c.pt {
			t.Errorf("decrypt of another worker's ciphertext: %q, want %q", got, c.pt)
		}
	})
	worker(2, func(rng *rand.Rand, _ int) {
		c, ok := st.pick(rng)
		if !ok {
			return
		}
		re, err := e.ReEncrypt(ctx, c.tag, c.ct, c.ctx)
		if !rwAllowed(t, "re-encrypt", err, kms.ErrVersionDisabled) {
			return
		}
		st.add(rwCT{c.tag, re, c.pt, c.ctx})
	})
	// 8 token-plane workers; a token from a rotated generator is
	// replaced by the key's current set.
	worker(8, func(rng *rand.Rand, i int) {
		k := tokenKeys[rng.IntN(len(tokenKeys))]
		set := st.set(k.Tag)
		tc := e.WithToken(set.Access, caller)
		c := ctxFor(k, rng)
		pt := fmt.Sprintf("tok-%d-%d", rng.Uint64(), i)
		ct, err := tc.Encrypt(ctx, k.Tag, []byte(pt), c)
		if !rwAllowed(t, "token encrypt", err, kms.ErrTokenInvalid, kms.ErrRateLimited) {
			return
		}
		st.add(rwCT{k.Tag, ct, pt, c})
		got, err := tc.Decrypt(ctx, k.Tag, ct, c)
		if rwAllowed(t, "token decrypt", err, kms.ErrTokenInvalid, kms.ErrRateLimited, kms.ErrVersionDisabled) && string(got) != pt {
			t.Errorf("token decrypt: %q, want %q", got, pt)
		}
	})
	// 4 rotators, staying well below the version limit.
	worker(4, func(rng *rand.Rand, _ int) {
		k := keys[rng.IntN(len(keys))]
		if got, err := e.GetKey(ctx, k.Tag); err != nil || got.CurrentVersion >= 60 {
			rwAllowed(t, "get key", err)
			return
		}
		_, err := e.RotateKey(ctx, k.Tag)
		rwAllowed(t, "rotate", err)
	})
	// 4 workers disabling and enabling old versions.
	worker(4, func(rng *rand.Rand, _ int) {
		k := keys[rng.IntN(len(keys))]
		got, err := e.GetKey(ctx, k.Tag)
		if !rwAllowed(t, "get key", err) || got.CurrentVersion < 2 {
			return
		}
		v := 1 + uint32(rng.IntN(int(got.CurrentVersion-1)))
		if rng.IntN(2) == 0 {
			_, err = e.DisableKeyVersion(ctx, k.Tag, v)
		} else {
			_, err = e.EnableKeyVersion(ctx, k.Tag, v)
		}
		rwAllowed(t, "version state", err)
	})
	// 2 generator rotators: an RSA key pair each time, so only a few.
	for _, k := range tokenKeys {
		wg.Go(func() {
			for range 2 {
				if _, err := e.RotateTokenGenerator(ctx, k.Tag); !rwAllowed(t, "rotate generator", err) {
					return
				}
				set, err := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "race"})
				if !rwAllowed(t, "issue tokens", err) {
					return
				}
				st.setSet(k.Tag, set)
			}
		})
	}
	// 4 ACL editors: the callers' address stays listed.
	worker(4, func(rng *rand.Rand, i int) {
		k := tokenKeys[rng.IntN(len(tokenKeys))]
		entry := fmt.Sprintf("192.0.2.%d", rng.IntN(50))
		var err error
		switch rng.IntN(3) {
		case 0:
			_, err = e.AddAllowedIPs(ctx, k.Tag, []string{entry})
		case 1:
			_, err = e.RemoveAllowedIPs(ctx, k.Tag, []string{entry})
			if errors.Is(err, kms.ErrInvalidArgument) {
				err = nil // not listed
			}
		default:
			_, err = e.SetKeyACLEnabled(ctx, k.Tag, i%2 == 0)
		}
		rwAllowed(t, "acl edit", err)
	})
	// 4 rate limit changers, 2 invariant readers.
	limits := []ratelimit.Limit{{Rate: 5, Burst: 5}, {Rate: 10000, Burst: 1000}, {Unlimited: true}}
	worker(4, func(rng *rand.Rand, _ int) {
		k := tokenKeys[rng.IntN(len(tokenKeys))]
		var err error
		if rng.IntN(4) == 0 {
			err = e.ClearKeyRateLimit(ctx, k.Tag)
		} else {
			err = e.SetKeyRateLimit(ctx, k.Tag, limits[rng.IntN(len(limits))])
		}
		rwAllowed(t, "rate limit", err)
	})
	worker(2, func(rng *rand.Rand, _ int) {
		k := keys[rng.IntN(len(keys))]
		got, err := e.GetKey(ctx, k.Tag)
		if !rwAllowed(t, "get key", err) {
			return
		}
		vs, err := e.ListKeyVersions(ctx, k.Tag)
		if !rwAllowed(t, "list versions", err) {
			return
		}
		if len(vs) < int(got.CurrentVersion) {
			t.Errorf("key has %d versions, current version %d read before", len(vs), got.CurrentVersion)
		}
		if cur := vs[len(vs)-1]; !cur.Current || cur.State != kms.VersionEnabled {
			t.Errorf("current version %+v is not current and enabled", cur)
		}
		a, err := e.GetKeyACL(ctx, k.Tag)
		if rwAllowed(t, "get acl", err) && a.Enabled && len(a.Entries) == 0 {
			t.Errorf("acl enabled with no entries")
		}
	})
	wg.Wait()
	if t.Failed() {
		return
	}

	// Every ciphertext made, by anyone, decrypts once every version is
	// enabled again.
	for _, k := range keys {
		vs, err := e.ListKeyVersions(ctx, k.Tag)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vs {
			if v.State == kms.VersionDisabled {
				if _, err := e.EnableKeyVersion(ctx, k.Tag, v.Version); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for _, c := range st.cts {
		got, err := e.Decrypt(ctx, c.tag, c.ct, c.ctx)
		if err != nil || string(got) != c.pt {
			t.Fatalf("after the workload: decrypt %q: %q %v", c.pt, got, err)
		}
	}
	t.Logf("%d operations, %d ciphertexts checked", ops.Load(), len(st.cts))
}
