package kms_test

// Several Engines on one shared store with a change feed (the in-memory
// storetest.Memory, standing in for etcd): what one Engine changes holds
// on the others, names stay unique, and a lost feed reloads.

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/store/storetest"
)

// sharedEngines opens n Engines on one shared store, each with its own
// memory backend under the same root key, as replicas would.
func sharedEngines(t *testing.T, n int, opts ...kms.Option) (*storetest.Memory, []*kms.Engine) {
	t.Helper()
	m := storetest.NewMemory()
	es := make([]*kms.Engine, n)
	for i := range es {
		o := append([]kms.Option{kms.WithStore(m.Open()), kms.WithMaintenanceInterval(0)}, opts...)
		e, err := kms.New(context.Background(), newBackend(t, rootKey), o...)
		if err != nil {
			t.Fatalf("kms.New #%d: %v", i, err)
		}
		t.Cleanup(func() { e.Close() })
		es[i] = e
	}
	return m, es
}

// eventually polls cond until it holds or 5 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5s: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestSharedStoreChangesReachEveryEngine(t *testing.T) {
	ctx := context.Background()
	_, es := sharedEngines(t, 3)
	a, b, c := es[0], es[1], es[2]

	k, err := a.CreateKey(ctx, kms.CreateKeyRequest{Name: "shared", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the key reaches B", func() bool { _, err := b.GetKey(ctx, k.Tag); return err == nil })
	ct, err := a.Encrypt(ctx, k.Tag, []byte("across replicas"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// B opens A's material with its own backend under the same root key.
	if pt, err := b.Decrypt(ctx, k.Tag, ct, nil); err != nil || string(pt) != "across replicas" {
		t.Fatalf("B decrypts A's ciphertext: %q, %v", pt, err)
	}

	// Rotation on B: A encrypts under the new version once the feed has it.
	if _, err := b.RotateKey(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the rotation reaches A", func() bool {
		got, err := a.GetKey(ctx, k.Tag)
		return err == nil && got.CurrentVersion == 2
	})

	// Tokens: issued on A, accepted on C; the generator rotated on A
	// refuses the old token on C.
	if _, err := a.ActivateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	set, err := a.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	caller := netip.MustParseAddr("10.1.2.3")
	eventually(t, "the generator reaches C", func() bool {
		_, err := c.WithToken(set.Access, caller).Encrypt(ctx, k.Tag, []byte("x"), nil)
		return err == nil
	})
	if _, err := a.RotateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the generator rotation kills the old token on C", func() bool {
		_, err := c.WithToken(set.Access, caller).Encrypt(ctx, k.Tag, []byte("x"), nil)
		return errors.Is(err, kms.ErrTokenInvalid)
	})

	// The allow-list, set on B, denies on C.
	set2, err := a.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.SetKeyACLEnabled(ctx, k.Tag, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the allow-list reaches C", func() bool {
		_, err := c.WithToken(set2.Access, caller).Encrypt(ctx, k.Tag, []byte("x"), nil)
		return errors.Is(err, kms.ErrAccessDenied)
	})

	// Disabled on C: A refuses.
	if _, err := c.DisableKey(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the disable reaches A", func() bool {
		_, err := a.Encrypt(ctx, k.Tag, []byte("x"), nil)
		return errors.Is(err, kms.ErrKeyNotEnabled)
	})
}

// TestSharedStoreNamesUnique: of concurrent creates of one name on
// different Engines, exactly one wins; the others get ErrAlreadyExists.
func TestSharedStoreNamesUnique(t *testing.T) {
	ctx := context.Background()
	_, es := sharedEngines(t, 3)
	for round := range 5 {
		var wg sync.WaitGroup
		errs := make([]error, len(es))
		for i, e := range es {
			wg.Go(func() {
				_, errs[i] = e.CreateKey(ctx, kms.CreateKeyRequest{Name: "race" + string(rune('a'+round)), Type: kms.AES256})
			})
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, kms.ErrAlreadyExists):
				t.Fatalf("round %d: a losing create failed with %v", round, err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d creates won", round, won)
		}
	}
}

// TestSharedStoreNoLostUpdate: two Engines changing one key at once never
// lose a change: each call either lands or fails with ErrConflict, and
// every Engine ends with the same, stored view.
func TestSharedStoreNoLostUpdate(t *testing.T) {
	ctx := context.Background()
	_, es := sharedEngines(t, 2)
	k, err := es[0].CreateKey(ctx, kms.CreateKeyRequest{Name: "contend", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the key reaches B", func() bool { _, err := es[1].GetKey(ctx, k.Tag); return err == nil })
	var mu sync.Mutex
	landed := 0
	var wg sync.WaitGroup
	for _, e := range es {
		wg.Go(func() {
			for range 10 {
				_, err := e.RotateKey(ctx, k.Tag)
				switch {
				case err == nil:
					mu.Lock()
					landed++
					mu.Unlock()
				case !errors.Is(err, kms.ErrConflict):
					t.Errorf("rotate: %v", err)
				}
			}
		})
	}
	wg.Wait()
	want := uint32(1 + landed)
	for i, e := range es {
		eventually(t, "every Engine sees every landed rotation", func() bool {
			got, err := e.GetKey(ctx, k.Tag)
			return err == nil && got.CurrentVersion == want
		})
		vs, err := e.ListKeyVersions(ctx, k.Tag)
		if err != nil || len(vs) != int(want) {
			t.Fatalf("engine %d: %d versions, want %d (%v)", i, len(vs), want, err)
		}
	}
}

// TestSharedStoreResyncAfterCompaction: an Engine whose feed was compacted
// away reloads everything instead of serving stale state.
func TestSharedStoreResyncAfterCompaction(t *testing.T) {
	ctx := context.Background()
	m, es := sharedEngines(t, 2)
	a, b := es[0], es[1]
	k, err := a.CreateKey(ctx, kms.CreateKeyRequest{Name: "compact", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the key reaches B", func() bool { _, err := b.GetKey(ctx, k.Tag); return err == nil })
	m.Compact()
	if _, err := a.DisableKey(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	k2, err := a.CreateKey(ctx, kms.CreateKeyRequest{Name: "after", Type: kms.ECDSA})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "B reloads after compaction", func() bool {
		got, err := b.GetKey(ctx, k.Tag)
		_, err2 := b.GetKey(ctx, k2.Tag)
		return err == nil && got.State == kms.StateDisabled && err2 == nil
	})
}

// TestSharedStoreDestructionReachesEveryEngine: a key destroyed by one
// Engine's maintenance is gone on the others.
func TestSharedStoreDestructionReachesEveryEngine(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock()
	_, es := sharedEngines(t, 2, kms.WithClock(clk))
	a, b := es[0], es[1]
	k, err := a.CreateKey(ctx, kms.CreateKeyRequest{Name: "doomed", Type: kms.RSA2048})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RequestKeyDeletion(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deletion request reaches B", func() bool {
		got, err := b.GetKey(ctx, k.Tag)
		return err == nil && got.State == kms.StateRevoked
	})
	clk.Advance(kms.DeletionDelay)
	if err := a.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the destruction reaches B", func() bool {
		_, err := b.GetKey(ctx, k.Tag)
		return errors.Is(err, kms.ErrKeyNotFound)
	})
	// B's own maintenance finds nothing left to do.
	if err := b.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSharedStoreNoOpOnStaleViewIsChecked: a request that looks like a
// no-op on a replica that has not yet seen another replica's change must
// not answer success while the other change stays in force. A call made
// after another returned wins, as it would on one Engine.
func TestSharedStoreNoOpOnStaleViewIsChecked(t *testing.T) {
	ctx := context.Background()
	_, es := sharedEngines(t, 2)
	a, b := es[0], es[1]
	k, err := a.CreateKey(ctx, kms.CreateKeyRequest{Name: "flip", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the key reaches B", func() bool { _, err := b.GetKey(ctx, k.Tag); return err == nil })
	for round := range 50 {
		if _, err := a.SetKeyACLEnabled(ctx, k.Tag, true); err != nil {
			t.Fatal(err)
		}
		// B may not have seen A's change yet; to B it may look like a no-op.
		if _, err := b.SetKeyACLEnabled(ctx, k.Tag, false); err != nil {
			t.Fatal(err)
		}
		eventually(t, "both replicas agree", func() bool {
			x, err1 := a.GetKeyACL(ctx, k.Tag)
			y, err2 := b.GetKeyACL(ctx, k.Tag)
			return err1 == nil && err2 == nil && x.Enabled == y.Enabled
		})
		if acl, _ := a.GetKeyACL(ctx, k.Tag); acl.Enabled {
			t.Fatalf("round %d: B's later request to turn the allow-list off answered success, but A's earlier 'on' stays in force", round)
		}
	}
}
