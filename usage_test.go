package kms_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/store"
	"github.com/pocketkms/kms/store/storetest"
)

// TestKeyHistory: management changes are listed newest first with the
// caller, paged, kept to KeyHistoryRetention entries (older records
// deleted from the store in the same commit), and survive a reopen.
func TestKeyHistory(t *testing.T) {
	mem := storetest.NewMemory()
	clk := newFakeClock()
	open := func() *kms.Engine {
		e, err := kms.New(context.Background(), newBackend(t, rootKey), kms.WithStore(mem.Open()), kms.WithClock(clk), kms.WithMaintenanceInterval(0))
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := open()
	ctx := kms.WithCaller(context.Background(), "ops-team")
	k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "hist", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	if _, err := e.RotateKey(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	if _, err := e.DisableKey(context.Background(), k.Tag); err != nil {
		t.Fatal(err)
	}
	// A refusal writes no history.
	if _, err := e.CancelKeyDeletion(ctx, k.Tag); !errors.Is(err, kms.ErrInvalidState) {
		t.Fatal(err)
	}
	p, err := e.ListKeyHistory(ctx, k.Tag, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.TotalCount != 3 || len(p.Entries) != 3 {
		t.Fatalf("page = %+v", p)
	}
	want := []struct {
		seq     uint64
		op      string
		version uint32
		caller  string
		state   kms.KeyState
	}{{3, "update key", 0, "", kms.StateDisabled}, {2, "rotate key", 2, "ops-team", kms.StateEnabled}, {1, "create key", 1, "ops-team", kms.StateEnabled}}
	for i, w := range want {
		g := p.Entries[i]
		if g.Seq != w.seq || g.Op != w.op || g.Version != w.version || g.Caller != w.caller || g.State != w.state || g.Plane != kms.PlaneTrusted {
			t.Fatalf("entry %d = %+v, want %+v", i, g, w)
		}
	}
	if !p.Entries[0].Time.After(p.Entries[1].Time) {
		t.Fatalf("times not newest first: %+v", p.Entries)
	}
	if _, err := e.EnableKey(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	// Past retention.
	for i := range kms.KeyHistoryRetention + 5 {
		memo := strings.Repeat("m", i%7+1) + string(rune('a'+i%26))
		if _, err := e.UpdateKey(ctx, k.Tag, kms.UpdateKeyRequest{Memo: &memo}); err != nil {
			t.Fatal(err)
		}
	}
	newest := uint64(4 + kms.KeyHistoryRetention + 5)
	if n := countRecords(t, mem, store.HistoryPrefix(k.Tag)); n != kms.KeyHistoryRetention {
		t.Fatalf("%d history records stored, want %d", n, kms.KeyHistoryRetention)
	}
	e.Close()
	e = open()
	defer e.Close()
	var seqs []uint64
	for pageNo := 0; ; pageNo++ {
		p, err := e.ListKeyHistory(ctx, k.Tag, pageNo, 30)
		if err != nil {
			t.Fatal(err)
		}
		if p.TotalCount != kms.KeyHistoryRetention {
			t.Fatalf("total = %d", p.TotalCount)
		}
		if len(p.Entries) == 0 {
			break
		}
		for _, en := range p.Entries {
			seqs = append(seqs, en.Seq)
		}
	}
	if len(seqs) != kms.KeyHistoryRetention || seqs[0] != newest || seqs[len(seqs)-1] != newest-kms.KeyHistoryRetention+1 {
		t.Fatalf("listed %d entries, %d..%d", len(seqs), seqs[0], seqs[len(seqs)-1])
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]-1 {
			t.Fatalf("gap or disorder at %d: %v", i, seqs[i-1:i+1])
		}
	}
	if _, err := e.ListKeyHistory(ctx, k.Tag, 0, 101); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("pageSize 101: %v", err)
	}
	if _, err := e.ListKeyHistory(ctx, strings.Repeat("f", 64), 0, 0); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("unknown key: %v", err)
	}
}

// TestKeyHistoryBadger: the history works on the default store and is
// read back after a reopen.
func TestKeyHistoryBadger(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	k := createKey(t, e, "badgerhist", kms.RSA2048, false)
	if _, err := e.RotateKey(kms.WithCaller(ctx, "svc-b"), k.Tag); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e, err = kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	p, err := e.ListKeyHistory(ctx, k.Tag, 0, 1)
	if err != nil || len(p.Entries) != 1 || p.TotalCount != 2 || p.Entries[0].Op != "rotate key" || p.Entries[0].Caller != "svc-b" {
		t.Fatalf("page = %+v, %v", p, err)
	}
	p, err = e.ListKeyHistory(ctx, k.Tag, 1, 1)
	if err != nil || len(p.Entries) != 1 || p.Entries[0].Op != "create key" {
		t.Fatalf("page 1 = %+v, %v", p, err)
	}
	// The usage counters were written at Close and read back.
	u, err := e.KeyUsage(ctx, k.Tag)
	if err != nil || u.Versions[1].Encryptions != 1 {
		t.Fatalf("usage = %+v, %v", u, err)
	}
}

// TestKeyUsageCounters counts every kind of use per version, refusals
// included, and writes them at each Maintain.
func TestKeyUsageCounters(t *testing.T) {
	mem := storetest.NewMemory()
	e, clk := newClockEngine(t, kms.WithStore(mem.Open()))
	ctx := context.Background()
	aes := createKey(t, e, "counted", kms.AES256, false)
	ec := createKey(t, e, "countsig", kms.ECDSA, false)
	var cts []string
	for range 3 {
		ct, err := e.Encrypt(ctx, aes.Tag, []byte("data"), nil)
		if err != nil {
			t.Fatal(err)
		}
		cts = append(cts, ct)
	}
	clk.Advance(time.Minute)
	if _, err := e.RotateKey(ctx, aes.Tag); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Decrypt(ctx, aes.Tag, cts[0], nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ReEncrypt(ctx, aes.Tag, cts[1], nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.BatchEncrypt(ctx, aes.Tag, []kms.EncryptItem{{Plaintext: []byte("a")}, {Plaintext: []byte("b")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateCustomKey(ctx, aes.Tag, kms.CustomKeyRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.DisableKey(ctx, aes.Tag); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Encrypt(ctx, aes.Tag, []byte("x"), nil); !errors.Is(err, kms.ErrKeyNotEnabled) {
		t.Fatal(err)
	}
	sig, err := e.Sign(ctx, ec.Tag, []byte("m"))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := e.Verify(ctx, ec.Tag, []byte("m"), sig); err != nil {
			t.Fatal(err)
		}
	}
	u, err := e.KeyUsage(ctx, aes.Tag)
	if err != nil {
		t.Fatal(err)
	}
	v1, v2 := u.Versions[0], u.Versions[1]
	if v1.Encryptions != 3 || v1.Decryptions != 2 || v1.Refusals != 0 || v1.BudgetLeft != kms.EncryptionBudget-3 {
		t.Fatalf("v1 = %+v", v1)
	}
	if v2.Encryptions != 4 || v2.Decryptions != 0 || v2.Refusals != 1 {
		t.Fatalf("v2 = %+v", v2)
	}
	if !v2.LastUse.Equal(clk.Now().Truncate(time.Millisecond)) || v1.LastUse.IsZero() {
		t.Fatalf("last use v1 %v v2 %v, now %v", v1.LastUse, v2.LastUse, clk.Now())
	}
	s, err := e.KeyUsage(ctx, ec.Tag)
	if err != nil || s.Versions[0].Signatures != 1 || s.Versions[0].Verifications != 2 || s.Versions[0].BudgetLeft != 0 {
		t.Fatalf("ecdsa usage = %+v, %v", s, err)
	}
	// No store write per call: nothing until Maintain.
	if n := countRecords(t, mem, store.PrefixUsage); n != 0 {
		t.Fatalf("%d usage records before any flush", n)
	}
	if err := e.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countRecords(t, mem, store.PrefixUsage); n != 2 {
		t.Fatalf("%d usage records after Maintain, want 2", n)
	}
	// A reopened Engine continues from the flushed counts.
	e2, err := kms.New(ctx, newBackend(t, rootKey), kms.WithStore(mem.Open()), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	u2, err := e2.KeyUsage(ctx, aes.Tag)
	if err != nil || u2.Versions[1].Encryptions != 4 || u2.Versions[0].Decryptions != 2 || u2.Versions[1].Refusals != 1 {
		t.Fatalf("reopened usage = %+v, %v", u2, err)
	}
}

// TestEncryptionBudget: with a small test budget and a fake clock,
// reaching the warning threshold logs, audits and (auto-rotation on)
// rotates at the next Maintain; a key without auto-rotation refuses
// encryption once its version's budget is spent, and still decrypts.
func TestEncryptionBudget(t *testing.T) {
	const budget, warn = 10, 6
	var logs bytes.Buffer
	sink := &recordSink{}
	e, clk := newClockEngine(t, kms.WithEncryptionBudgetForTest(budget), kms.WithEncryptionBudgetWarning(warn),
		kms.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))), kms.WithAudit(sink, kms.AuditOptions{FailClosed: true}))
	ctx := context.Background()
	rot, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "autorot", Type: kms.AES256, AutoRotation: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < warn; i++ {
		if _, err := e.Encrypt(ctx, rot.Tag, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if strings.Contains(logs.String(), "budget") {
		t.Fatal("warned before the threshold")
	}
	sink.take()
	if _, err := e.Encrypt(ctx, rot.Tag, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "near its AES-GCM encryption budget") {
		t.Fatalf("no warning logged: %s", logs.String())
	}
	evs := sink.take()
	if len(evs) != 2 || evs[0].Op != "encryption budget warning" || evs[0].Plane != kms.PlaneSystem || evs[0].Version != 1 || evs[0].KeyTag != rot.Tag {
		t.Fatalf("events = %+v", evs)
	}
	clk.Advance(time.Minute) // the rotation period is far off: only the budget rotates
	if err := e.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	k, err := e.GetKey(ctx, rot.Tag)
	if err != nil || k.CurrentVersion != 2 {
		t.Fatalf("after Maintain: %+v, %v", k, err)
	}
	ct, err := e.Encrypt(ctx, rot.Tag, []byte("x"), nil)
	if err != nil || !strings.HasPrefix(ct, "ncpkms:v2:") {
		t.Fatalf("encrypt after rotation = %q, %v", ct, err)
	}
	if err := e.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if k, _ := e.GetKey(ctx, rot.Tag); k.CurrentVersion != 2 {
		t.Fatalf("rotated again: version %d", k.CurrentVersion)
	}

	// No auto-rotation: the budget is a hard stop.
	fixed := createKey(t, e, "fixed", kms.AES256, false)
	var first string
	for i := range budget {
		ct, err := e.Encrypt(ctx, fixed.Tag, []byte("x"), nil)
		if err != nil {
			t.Fatalf("encryption %d: %v", i+1, err)
		}
		if i == 0 {
			first = ct
		}
	}
	_, err = e.Encrypt(ctx, fixed.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrEncryptionBudget)
	var ke *kms.Error
	if errors.As(err, &ke); ke.Code != "LimitExceeded" || ke.Status != 409 {
		t.Fatalf("err = %#v", ke)
	}
	_, err = e.BatchEncrypt(ctx, fixed.Tag, []kms.EncryptItem{{Plaintext: []byte("x")}})
	wantErr(t, err, kms.ErrEncryptionBudget)
	_, err = e.CreateCustomKey(ctx, fixed.Tag, kms.CustomKeyRequest{})
	wantErr(t, err, kms.ErrEncryptionBudget)
	if _, err := e.Decrypt(ctx, fixed.Tag, first, nil); err != nil {
		t.Fatalf("decrypt under an exhausted version: %v", err)
	}
	u, _ := e.KeyUsage(ctx, fixed.Tag)
	if u.Versions[0].Encryptions != budget || u.Versions[0].BudgetLeft != 0 || u.Versions[0].Refusals != 3 {
		t.Fatalf("usage = %+v", u.Versions[0])
	}
	if err := e.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if k, _ := e.GetKey(ctx, fixed.Tag); k.CurrentVersion != 1 {
		t.Fatal("a key without auto-rotation was rotated")
	}
	// A manual rotation gives a fresh budget.
	if _, err := e.RotateKey(ctx, fixed.Tag); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Encrypt(ctx, fixed.Tag, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	// Convergent and RSA keys have no GCM budget.
	conv := createKey(t, e, "conv", kms.AES256, true)
	for range budget + 1 {
		if _, err := e.Encrypt(ctx, conv.Tag, []byte("x"), []byte("ctx")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kms.New(ctx, newBackend(t, rootKey), kms.WithEncryptionBudgetWarning(0)); err == nil {
		t.Fatal("threshold 0 accepted")
	}
}

// TestKeyUsageConcurrent: counts stay exact with calls on several
// goroutines while Maintain writes the counters and KeyUsage reads them
// (run it with -race).
func TestKeyUsageConcurrent(t *testing.T) {
	mem := storetest.NewMemory()
	e, _ := newClockEngine(t, kms.WithStore(mem.Open()), kms.WithAudit(&recordSink{}, kms.AuditOptions{QueueSize: 8}))
	ctx := context.Background()
	k := createKey(t, e, "concurrent", kms.AES256, false)
	const workers, calls = 4, 200
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range calls {
				if _, err := e.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	bg := make(chan struct{})
	go func() {
		defer close(bg)
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := e.Maintain(ctx); err != nil {
				t.Error(err)
				return
			}
			if _, err := e.KeyUsage(ctx, k.Tag); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	wg.Wait()
	close(done)
	<-bg
	u, err := e.KeyUsage(ctx, k.Tag)
	if err != nil || u.Versions[0].Encryptions != workers*calls {
		t.Fatalf("usage = %+v, %v", u, err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e2, err := kms.New(ctx, newBackend(t, rootKey), kms.WithStore(mem.Open()), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if u, err := e2.KeyUsage(ctx, k.Tag); err != nil || u.Versions[0].Encryptions != workers*calls {
		t.Fatalf("after Close and reopen: %+v, %v", u, err)
	}
}

// TestUsageAcrossReopensBadger: on a Badger directory (a store without a
// change feed, whose loaded usage records keep no flush state until the
// key's first flush), counts made across several opens add up exactly:
// a key used before and after a reopen, one rotated after it, one only
// read, and a flush with nothing new.
func TestUsageAcrossReopensBadger(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	open := func() *kms.Engine {
		t.Helper()
		e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir), kms.WithMaintenanceInterval(0))
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	encrypt := func(e *kms.Engine, tag string, n int) {
		t.Helper()
		for range n {
			if _, err := e.Encrypt(ctx, tag, []byte("x"), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	usage := func(e *kms.Engine, tag string) []kms.VersionUsage {
		t.Helper()
		u, err := e.KeyUsage(ctx, tag)
		if err != nil {
			t.Fatal(err)
		}
		return u.Versions
	}
	e := open()
	a := createKey(t, e, "used-twice", kms.AES256, false)
	b := createKey(t, e, "rotated", kms.AES256, false)
	c := createKey(t, e, "read-only", kms.AES256, false)
	encrypt(e, a.Tag, 3)
	encrypt(e, b.Tag, 2)
	ct, err := e.Encrypt(ctx, c.Tag, []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil { // flushes
		t.Fatal(err)
	}

	for round := 1; round <= 3; round++ {
		e = open()
		encrypt(e, a.Tag, 5)
		if round == 1 {
			if _, err := e.RotateKey(ctx, b.Tag); err != nil {
				t.Fatal(err)
			}
			encrypt(e, b.Tag, 4)
		}
		if _, err := e.Decrypt(ctx, c.Tag, ct, nil); err != nil {
			t.Fatal(err)
		}
		if err := e.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if err := e.Maintain(ctx); err != nil { // nothing new
			t.Fatal(err)
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
	}

	e = open()
	defer e.Close()
	if v := usage(e, a.Tag); v[0].Encryptions != 3+3*5 {
		t.Fatalf("used-twice: %d encryptions, want %d", v[0].Encryptions, 3+3*5)
	}
	if v := usage(e, b.Tag); len(v) != 2 || v[0].Encryptions != 2 || v[1].Encryptions != 4 {
		t.Fatalf("rotated: %+v", v)
	}
	if v := usage(e, c.Tag); v[0].Encryptions != 1 || v[0].Decryptions != 3 {
		t.Fatalf("read-only: %+v", v)
	}
}
