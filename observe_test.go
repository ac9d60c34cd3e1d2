package kms_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/ratelimit"
	"github.com/pocketkms/kms/store"
	"github.com/pocketkms/kms/store/storetest"
	"github.com/pocketkms/kms/token"
)

// recordSink keeps every event; fail makes WriteAudit fail; block, when
// not nil, holds every write until it is closed.
type recordSink struct {
	mu     sync.Mutex
	events []kms.AuditEvent
	fail   bool
	block  chan struct{}
}

func (s *recordSink) WriteAudit(_ context.Context, ev kms.AuditEvent) error {
	if s.block != nil {
		<-s.block
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("sink down")
	}
	s.events = append(s.events, ev)
	return nil
}

func (s *recordSink) take() []kms.AuditEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	ev := s.events
	s.events = nil
	return ev
}

// last returns the only event recorded since the previous take.
func (s *recordSink) one(t *testing.T) kms.AuditEvent {
	t.Helper()
	ev := s.take()
	if len(ev) != 1 {
		t.Fatalf("got %d events, want 1: %+v", len(ev), ev)
	}
	return ev[0]
}

// wantEvent checks an event's fields; version < 0 skips the version.
func wantEvent(t *testing.T, ev kms.AuditEvent, op string, plane kms.Plane, tag string, version int, caller string, result kms.AuditResult, reason string) {
	t.Helper()
	if ev.Op != op || ev.Plane != plane || ev.KeyTag != tag || ev.Caller != caller || ev.Result != result || ev.Reason != reason {
		t.Fatalf("event = %+v\nwant op=%q plane=%q tag=%q caller=%q result=%q reason=%q", ev, op, plane, tag, caller, result, reason)
	}
	if version >= 0 && ev.Version != uint32(version) {
		t.Fatalf("event %q version = %d, want %d", op, ev.Version, version)
	}
	if ev.Time.IsZero() {
		t.Fatalf("event %q has no time", op)
	}
	if (result == kms.ResultOK) != (ev.Code == "") {
		t.Fatalf("event %q: result %q with code %q", op, result, ev.Code)
	}
}

// TestAuditEvents runs every kind of audited operation, on both planes,
// refusals included, and checks each event's fields; then that no event,
// in any form a sink might write it, holds a secret.
func TestAuditEvents(t *testing.T) {
	sink := &recordSink{}
	var logBuf bytes.Buffer
	slogSink := kms.SlogAuditSink{Logger: slog.New(slog.NewJSONHandler(&logBuf, nil))}
	var all []kms.AuditEvent
	e, _ := newClockEngine(t, kms.WithAudit(sink, kms.AuditOptions{FailClosed: true}))
	ctx := kms.WithCaller(context.Background(), "svc-a")
	next := func() kms.AuditEvent {
		t.Helper()
		ev := sink.one(t)
		all = append(all, ev)
		return ev
	}
	none := func() {
		t.Helper()
		if ev := sink.take(); len(ev) != 0 {
			t.Fatalf("unexpected events %+v", ev)
		}
	}

	k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "audited", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	tag := k.Tag
	wantEvent(t, next(), "create key", kms.PlaneTrusted, tag, 1, "svc-a", kms.ResultOK, "")

	plaintext := []byte("the audited plaintext, never logged")
	ct, err := e.Encrypt(ctx, tag, plaintext, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantEvent(t, next(), "encrypt", kms.PlaneTrusted, tag, 1, "svc-a", kms.ResultOK, "")
	if _, err := e.Decrypt(context.Background(), tag, ct, nil); err != nil {
		t.Fatal(err)
	}
	wantEvent(t, next(), "decrypt", kms.PlaneTrusted, tag, 0, "", kms.ResultOK, "")
	_, err = e.Decrypt(ctx, tag, ct[:len(ct)-4]+"AAAA", nil)
	wantErr(t, err, kms.ErrDecryptionFailed)
	ev := next()
	wantEvent(t, ev, "decrypt", kms.PlaneTrusted, tag, 0, "svc-a", kms.ResultFailed, "decryption_failed")
	if ev.Code != "InvalidParameter" {
		t.Fatalf("code = %q", ev.Code)
	}
	_, err = e.Encrypt(ctx, strings.Repeat("0", 64), plaintext, nil)
	wantErr(t, err, kms.ErrKeyNotFound)
	wantEvent(t, next(), "encrypt", kms.PlaneTrusted, strings.Repeat("0", 64), 0, "svc-a", kms.ResultFailed, "not_found")
	_, _ = e.Encrypt(ctx, "not a tag\n", plaintext, nil)
	wantEvent(t, next(), "encrypt", kms.PlaneTrusted, "", 0, "svc-a", kms.ResultFailed, "invalid_argument")

	v, err := e.RotateKey(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	wantEvent(t, next(), "rotate key", kms.PlaneTrusted, tag, int(v.Version), "svc-a", kms.ResultOK, "")
	if _, err := e.DisableKeyVersion(ctx, tag, 1); err != nil {
		t.Fatal(err)
	}
	wantEvent(t, next(), "disable key version", kms.PlaneTrusted, tag, -1, "svc-a", kms.ResultOK, "")
	_, err = e.Decrypt(ctx, tag, ct, nil)
	wantErr(t, err, kms.ErrVersionDisabled)
	wantEvent(t, next(), "decrypt", kms.PlaneTrusted, tag, 0, "svc-a", kms.ResultRefused, "state")
	if _, err := e.EnableKeyVersion(ctx, tag, 1); err != nil {
		t.Fatal(err)
	}
	next()

	// Reads are not audited.
	if _, err := e.GetKey(ctx, tag); err != nil {
		t.Fatal(err)
	}
	none()

	// Token plane.
	if _, err := e.ActivateTokenGenerator(ctx, tag); err != nil {
		t.Fatal(err)
	}
	wantEvent(t, next(), "activate token generator", kms.PlaneTrusted, tag, 0, "svc-a", kms.ResultOK, "")
	set, err := e.IssueTokens(ctx, tag, kms.IssueTokensRequest{Subject: "alice", Permissions: []token.Permission{token.PermEncrypt}})
	if err != nil {
		t.Fatal(err)
	}
	wantEvent(t, next(), "issue tokens", kms.PlaneTrusted, tag, 0, "svc-a", kms.ResultOK, "")
	addr := netip.MustParseAddr("192.0.2.7")
	tc := e.WithToken(set.Access, addr)
	if _, err := tc.Encrypt(context.Background(), tag, plaintext, nil); err != nil {
		t.Fatal(err)
	}
	ev = next()
	wantEvent(t, ev, "encrypt", kms.PlaneToken, tag, 2, "alice", kms.ResultOK, "")
	if ev.Addr != addr {
		t.Fatalf("addr = %v", ev.Addr)
	}
	_, err = tc.Decrypt(context.Background(), tag, ct, nil)
	wantErr(t, err, kms.ErrPermissionDenied)
	wantEvent(t, next(), "decrypt", kms.PlaneToken, tag, 0, "", kms.ResultRefused, "permission")
	_, err = e.WithToken(set.Access+"x", addr).Encrypt(context.Background(), tag, plaintext, nil)
	wantErr(t, err, kms.ErrTokenInvalid)
	wantEvent(t, next(), "encrypt", kms.PlaneToken, tag, 0, "", kms.ResultRefused, "bad_token")
	err = e.WithToken("junk", addr).Authorize(context.Background(), tag, token.Access, token.PermEncrypt)
	wantErr(t, err, kms.ErrTokenInvalid)
	wantEvent(t, next(), "authorize", kms.PlaneToken, tag, 0, "", kms.ResultRefused, "bad_token")

	// Renewal: a change written by the token plane.
	if _, err := e.WithToken(set.Refresh, addr).IssueAccessToken(context.Background(), tag, token.TTL{}); err != nil {
		t.Fatal(err)
	}
	wantEvent(t, next(), "issue access token", kms.PlaneToken, tag, 0, "alice", kms.ResultOK, "")

	// Rate limit.
	if err := e.SetKeyRateLimit(ctx, tag, ratelimit.Limit{Rate: 0.001, Burst: 1}); err != nil {
		t.Fatal(err)
	}
	next()
	_, _ = tc.Encrypt(context.Background(), tag, plaintext, nil)
	next()
	_, err = tc.Encrypt(context.Background(), tag, plaintext, nil)
	wantErr(t, err, kms.ErrRateLimited)
	wantEvent(t, next(), "encrypt", kms.PlaneToken, tag, 0, "", kms.ResultRefused, "rate_limit")
	if err := e.ClearKeyRateLimit(ctx, tag); err != nil {
		t.Fatal(err)
	}
	next()

	// IP allow-list.
	if _, err := e.AddAllowedIPs(ctx, tag, []string{"10.0.0.0/8"}); err != nil {
		t.Fatal(err)
	}
	next()
	if _, err := e.SetKeyACLEnabled(ctx, tag, true); err != nil {
		t.Fatal(err)
	}
	next()
	_, err = tc.Encrypt(context.Background(), tag, plaintext, nil)
	wantErr(t, err, kms.ErrAccessDenied)
	wantEvent(t, next(), "encrypt", kms.PlaneToken, tag, 0, "", kms.ResultRefused, "ip_denied")

	// State: a disabled key.
	if _, err := e.DisableKey(ctx, tag); err != nil {
		t.Fatal(err)
	}
	wantEvent(t, next(), "update key", kms.PlaneTrusted, tag, 0, "svc-a", kms.ResultOK, "")
	_, err = e.Encrypt(ctx, tag, plaintext, nil)
	wantErr(t, err, kms.ErrKeyNotEnabled)
	wantEvent(t, next(), "encrypt", kms.PlaneTrusted, tag, 2, "svc-a", kms.ResultRefused, "state")
	_, err = e.DisableKey(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	next() // a change that changes nothing is still an operation

	// Management refusal.
	_, err = e.CancelKeyDeletion(ctx, tag)
	wantErr(t, err, kms.ErrInvalidState)
	wantEvent(t, next(), "cancel key deletion", kms.PlaneTrusted, tag, 0, "svc-a", kms.ResultRefused, "state")

	// Signatures.
	rk, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "signer", Type: kms.ECDSA})
	if err != nil {
		t.Fatal(err)
	}
	next()
	sig, err := e.Sign(ctx, rk.Tag, plaintext)
	if err != nil {
		t.Fatal(err)
	}
	wantEvent(t, next(), "sign", kms.PlaneTrusted, rk.Tag, 1, "svc-a", kms.ResultOK, "")
	if ok, err := e.Verify(ctx, rk.Tag, plaintext, sig); err != nil || !ok {
		t.Fatal(ok, err)
	}
	wantEvent(t, next(), "verify", kms.PlaneTrusted, rk.Tag, 0, "svc-a", kms.ResultOK, "")

	// Hygiene: no event, however written, holds the plaintext, the
	// ciphertext, the signature, a token or the root key.
	secrets := []string{string(plaintext), ct, sig, set.Access, set.Refresh, string(rootKey), fmt.Sprintf("%x", rootKey)}
	for _, ev := range all {
		if err := slogSink.WriteAudit(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		j, _ := json.Marshal(ev)
		text := fmt.Sprintf("%v %+v %#v %s", ev, ev, ev, j)
		for _, s := range secrets {
			if strings.Contains(text, s) || strings.Contains(logBuf.String(), s) {
				t.Fatalf("event %q holds a secret", ev.Op)
			}
		}
	}
	if !strings.Contains(logBuf.String(), `"caller":"alice"`) || !strings.Contains(logBuf.String(), `"reason":"ip_denied"`) {
		t.Fatalf("slog sink output lacks fields: %s", logBuf.String())
	}
}

// TestAuditMaintenanceEvents: auto-rotation and destruction are audited
// as PlaneSystem, and a destroyed key's history goes with it.
func TestAuditMaintenanceEvents(t *testing.T) {
	sink := &recordSink{}
	mem := storetest.NewMemory()
	clk := newFakeClock()
	e := newEngine(t, kms.WithStore(mem.Open()), kms.WithClock(clk), kms.WithMaintenanceInterval(0),
		kms.WithAudit(sink, kms.AuditOptions{FailClosed: true}))
	ctx := context.Background()
	k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "rot", Type: kms.AES256, AutoRotation: true, RotationPeriodDays: 1})
	if err != nil {
		t.Fatal(err)
	}
	sink.take()
	clk.Advance(25 * time.Hour)
	if err := e.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	wantEvent(t, sink.one(t), "auto-rotate key", kms.PlaneSystem, k.Tag, 2, "maintenance", kms.ResultOK, "")
	h, err := e.ListKeyHistory(ctx, k.Tag, 0, 0)
	if err != nil || len(h.Entries) != 2 || h.Entries[0].Op != "auto-rotate key" || h.Entries[0].Plane != kms.PlaneSystem || h.Entries[0].Version != 2 {
		t.Fatalf("history = %+v, %v", h, err)
	}
	if _, err := e.RequestKeyDeletion(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	sink.take()
	if n := countRecords(t, mem, store.HistoryPrefix(k.Tag)); n != 3 {
		t.Fatalf("%d history records, want 3", n)
	}
	clk.Advance(kms.DeletionDelay + time.Hour)
	if err := e.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	wantEvent(t, sink.one(t), "destroy key", kms.PlaneSystem, k.Tag, 0, "maintenance", kms.ResultOK, "")
	if n := countRecords(t, mem, store.HistoryPrefix(k.Tag)); n != 0 {
		t.Fatalf("%d history records left after destruction", n)
	}
	if n := countRecords(t, mem, store.PrefixUsage); n != 0 {
		t.Fatalf("%d usage records left after destruction", n)
	}
}

func countRecords(t *testing.T, mem *storetest.Memory, prefix string) int {
	t.Helper()
	b := []byte(prefix)
	b[len(b)-1]++
	recs, err := mem.Open().Range(context.Background(), prefix, string(b), 0, false)
	if err != nil {
		t.Fatal(err)
	}
	return len(recs)
}

// TestAuditSlowSinkDropsNotBlocks: a sink that never returns does not
// hold a call up; the queue fills, further events are dropped and
// counted, and Close delivers what was queued once the sink frees up.
func TestAuditSlowSinkDropsNotBlocks(t *testing.T) {
	sink := &recordSink{block: make(chan struct{})}
	e, err := kms.New(context.Background(), newBackend(t, rootKey), kms.WithMaintenanceInterval(0),
		kms.WithAudit(sink, kms.AuditOptions{QueueSize: 2}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "slow", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	const calls = 20
	for range calls {
		if _, err := e.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
			t.Fatal(err) // would hang here if the sink blocked calls
		}
	}
	st := e.AuditStats()
	// One event in the sink's hands, two queued at most: the rest dropped.
	if st.Dropped < calls+1-3 || st.Delivered != 0 {
		t.Fatalf("stats = %+v", st)
	}
	close(sink.block)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	st = e.AuditStats()
	if st.Delivered+st.Dropped != calls+1 || st.Failed != 0 || uint64(len(sink.take())) != st.Delivered {
		t.Fatalf("after close: stats = %+v", st)
	}
}

// TestAuditFailClosed: with fail-closed auditing a sink failure fails the
// call with ErrAuditFailed and withholds its result; without it the call
// succeeds and the failure is counted.
func TestAuditFailClosed(t *testing.T) {
	sink := &recordSink{}
	e := newEngine(t, kms.WithAudit(sink, kms.AuditOptions{FailClosed: true}))
	ctx := context.Background()
	k := createKey(t, e, "failclosed", kms.AES256, false)
	ct, err := e.Encrypt(ctx, k.Tag, []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	sink.mu.Lock()
	sink.fail = true
	sink.mu.Unlock()
	pt, err := e.Decrypt(ctx, k.Tag, ct, nil)
	wantErr(t, err, kms.ErrAuditFailed)
	if pt != nil {
		t.Fatal("result returned with a failed audit")
	}
	var ke *kms.Error
	if !errors.As(err, &ke) || ke.Status != 503 {
		t.Fatalf("err = %#v", err)
	}
	// A refusal stays the refusal.
	_, err = e.Encrypt(ctx, k.Tag, nil, nil)
	wantErr(t, err, kms.ErrInvalidArgument)
	if st := e.AuditStats(); st.Failed != 2 {
		t.Fatalf("stats = %+v", st)
	}

	open := &recordSink{fail: true}
	e2 := newEngine(t, kms.WithAudit(open, kms.AuditOptions{}))
	k2 := createKey(t, e2, "openaudit", kms.AES256, false)
	if _, err := e2.Encrypt(ctx, k2.Tag, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	e2.Close()
	if st := e2.AuditStats(); st.Failed != 2 {
		t.Fatalf("stats = %+v", st)
	}
}
