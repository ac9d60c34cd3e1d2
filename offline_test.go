package kms_test

// The bounded offline window (WithStaleLimit): an Engine whose shared
// store's change feed is lost keeps serving from its last state for the
// limit, then refuses token-plane calls with ErrStale until the feed is
// back; trusted calls keep serving throughout.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/store"
	"github.com/pocketkms/kms/store/storetest"
)

// flakyStore is a handle on a shared Memory store that can be cut off:
// while down, its watch fails and Load and Apply fail, as a store whose
// cluster cannot be reached.
type flakyStore struct {
	*storetest.MemoryHandle
	mu   sync.Mutex
	down bool
	cut  chan struct{} // closed when the store goes down
}

var errDown = errors.New("flaky: store unreachable")

func newFlaky(m *storetest.Memory) *flakyStore {
	return &flakyStore{MemoryHandle: m.Open(), cut: make(chan struct{})}
}

func (f *flakyStore) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if down && !f.down {
		close(f.cut)
	}
	if !down && f.down {
		f.cut = make(chan struct{})
	}
	f.down = down
}

func (f *flakyStore) state() (bool, chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.down, f.cut
}

func (f *flakyStore) Load(ctx context.Context) (*store.Contents, error) {
	if down, _ := f.state(); down {
		return nil, errDown
	}
	return f.MemoryHandle.Load(ctx)
}

func (f *flakyStore) Apply(ctx context.Context, c *store.Change) (int64, error) {
	if down, _ := f.state(); down {
		return 0, fmt.Errorf("%w: %w", errDown, store.ErrUncertain)
	}
	return f.MemoryHandle.Apply(ctx, c)
}

func (f *flakyStore) Watch(ctx context.Context, after int64, fn func(store.Commit)) error {
	down, cut := f.state()
	if down {
		return fmt.Errorf("%w: %w", errDown, store.ErrResync)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-cut:
			cancel()
		case <-wctx.Done():
		}
	}()
	err := f.MemoryHandle.Watch(wctx, after, fn)
	if ctx.Err() == nil && wctx.Err() != nil {
		return fmt.Errorf("%w: %w", errDown, store.ErrResync)
	}
	return err
}

func TestOfflineWindowRefusesTokenPlane(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock()
	m := storetest.NewMemory()
	f := newFlaky(m)
	const limit = 10 * time.Second
	open := func(st store.Store) *kms.Engine {
		e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithStore(st), kms.WithMaintenanceInterval(0),
			kms.WithClock(clk), kms.WithStaleLimit(limit))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return e
	}
	a, b := open(f), open(m.Open())

	k, set := tokenKey(t, a, "offline", kms.AES256, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "svc"})
	caller := netip.MustParseAddr("10.0.0.7")
	tokenCall := func() error {
		_, err := a.WithToken(set.Access, caller).Encrypt(ctx, k.Tag, []byte("x"), nil)
		return err
	}
	if err := tokenCall(); err != nil {
		t.Fatal(err)
	}
	if _, lost := a.FeedLost(); lost {
		t.Fatal("FeedLost before the store went down")
	}

	f.setDown(true)
	eventually(t, "A notices the lost feed", func() bool { _, lost := a.FeedLost(); return lost })
	// Within the limit: served from the last state.
	clk.Advance(limit)
	if err := tokenCall(); err != nil {
		t.Fatalf("token-plane call within the limit: %v", err)
	}
	// Meanwhile B, which still reaches the store, rotates the generator:
	// the token A keeps accepting is dead everywhere else.
	eventually(t, "the key reaches B", func() bool { _, err := b.GetKey(ctx, k.Tag); return err == nil })
	if _, err := b.RotateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Millisecond)
	err := tokenCall()
	var ke *kms.Error
	if !errors.Is(err, kms.ErrStale) || !errors.As(err, &ke) || ke.Status != http.StatusServiceUnavailable || ke.Code != "ServiceUnavailable" {
		t.Fatalf("token-plane call past the limit: %v, want ErrStale with 503 ServiceUnavailable", err)
	}
	// Every token-plane call, junk tokens included, is refused alike.
	if _, err := a.WithToken("junk", caller).Decrypt(ctx, k.Tag, "x", nil); !errors.Is(err, kms.ErrStale) {
		t.Fatalf("junk token past the limit: %v", err)
	}
	// Trusted calls keep serving from the last state; changes fail.
	ct, err := a.Encrypt(ctx, k.Tag, []byte("still here"), nil)
	if err != nil {
		t.Fatalf("trusted encrypt while offline: %v", err)
	}
	if pt, err := a.Decrypt(ctx, k.Tag, ct, nil); err != nil || string(pt) != "still here" {
		t.Fatalf("trusted decrypt while offline: %q, %v", pt, err)
	}
	if _, err := a.RotateKey(ctx, k.Tag); err == nil {
		t.Fatal("a change committed while the store is down")
	}

	// The feed comes back: A reloads, sees B's rotation, and serves the
	// token plane again, refusing the dead token.
	f.setDown(false)
	eventually(t, "A follows again", func() bool { _, lost := a.FeedLost(); return !lost })
	if err := tokenCall(); !errors.Is(err, kms.ErrTokenInvalid) {
		t.Fatalf("old token after the reload: %v, want ErrTokenInvalid", err)
	}
	set2, err := a.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.WithToken(set2.Access, caller).Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
		t.Fatalf("new token after the reload: %v", err)
	}
}

// TestOfflineWindowZero: WithStaleLimit(0) refuses the token plane as
// soon as the feed is lost; a negative limit is refused by New.
func TestOfflineWindowZero(t *testing.T) {
	ctx := context.Background()
	if _, err := kms.New(ctx, newBackend(t, rootKey), kms.WithStaleLimit(-time.Second)); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("negative limit: %v", err)
	}
	clk := newFakeClock()
	f := newFlaky(storetest.NewMemory())
	e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithStore(f), kms.WithMaintenanceInterval(0), kms.WithClock(clk), kms.WithStaleLimit(0))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	k, set := tokenKey(t, e, "zero", kms.AES256, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "svc"})
	f.setDown(true)
	eventually(t, "the lost feed is noticed", func() bool { _, lost := e.FeedLost(); return lost })
	clk.Advance(time.Nanosecond)
	if _, err := e.WithToken(set.Access, netip.MustParseAddr("10.0.0.1")).Encrypt(ctx, k.Tag, []byte("x"), nil); !errors.Is(err, kms.ErrStale) {
		t.Fatalf("token-plane call with a zero limit: %v", err)
	}
}
