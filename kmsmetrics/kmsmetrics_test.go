package kmsmetrics_test

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/kmsmetrics"
	"github.com/pocketkms/kms/ratelimit"
	"github.com/pocketkms/kms/token"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

func collect(t *testing.T, r *sdkmetric.ManualReader) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != kmsmetrics.ScopeName {
			t.Fatalf("scope %q", sm.Scope.Name)
		}
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// sum returns the counter's value for the data points whose attributes
// include every one of want.
func sum(t *testing.T, m metricdata.Metrics, want ...attribute.KeyValue) int64 {
	t.Helper()
	s, ok := m.Data.(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("%s is %T", m.Name, m.Data)
	}
	var n int64
	for _, dp := range s.DataPoints {
		match := true
		for _, kv := range want {
			if v, ok := dp.Attributes.Value(kv.Key); !ok || v != kv.Value {
				match = false
			}
		}
		if match {
			n += dp.Value
		}
	}
	return n
}

func histCount(t *testing.T, m metricdata.Metrics, want ...attribute.KeyValue) uint64 {
	t.Helper()
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s is %T", m.Name, m.Data)
	}
	var n uint64
	for _, dp := range h.DataPoints {
		match := true
		for _, kv := range want {
			if v, ok := dp.Attributes.Value(kv.Key); !ok || v != kv.Value {
				match = false
			}
		}
		if match {
			n += dp.Count
		}
	}
	return n
}

// TestMetrics drives an Engine through successes, refusals of each kind,
// the token cache and store commits, and reads every instrument back
// through the SDK's manual reader.
func TestMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	obs, err := kmsmetrics.New(mp)
	if err != nil {
		t.Fatal(err)
	}
	be, err := memory.New(bytes.Repeat([]byte{7}, memory.RootKeySize))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e, err := kms.New(ctx, be, kms.WithObserver(obs), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "metered", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := e.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.Decrypt(ctx, k.Tag, "ncpkms:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", nil); err == nil {
		t.Fatal("bogus ciphertext decrypted")
	}
	if _, err := e.ActivateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	set, err := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Subject: "m", Permissions: []token.Permission{token.PermEncrypt}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SetKeyRateLimit(ctx, k.Tag, ratelimit.Limit{Rate: 0.001, Burst: 2}); err != nil {
		t.Fatal(err)
	}
	tc := e.WithToken(set.Access, netip.MustParseAddr("192.0.2.1"))
	for range 2 {
		if _, err := tc.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tc.Encrypt(ctx, k.Tag, []byte("x"), nil); !errors.Is(err, kms.ErrRateLimited) {
		t.Fatal(err)
	}
	if _, err := tc.Decrypt(ctx, k.Tag, "ncpkms:v1:AAAA", nil); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Fatal(err)
	}

	m := collect(t, reader)
	ops := m["pocketkms.operations"]
	op := func(s string) attribute.KeyValue { return attribute.String("op", s) }
	plane := func(p kms.Plane) attribute.KeyValue { return attribute.String("plane", string(p)) }
	res := func(s string) attribute.KeyValue { return attribute.String("result", s) }
	if n := sum(t, ops, op("encrypt"), plane(kms.PlaneTrusted), res("ok")); n != 3 {
		t.Fatalf("trusted encrypt ok = %d", n)
	}
	if n := sum(t, ops, op("decrypt"), res("failed"), attribute.String("reason", "invalid_argument")) +
		sum(t, ops, op("decrypt"), res("failed"), attribute.String("reason", "decryption_failed")); n != 1 {
		t.Fatalf("failed decrypts = %d", n)
	}
	if n := sum(t, ops, op("encrypt"), plane(kms.PlaneToken), res("ok")); n != 2 {
		t.Fatalf("token encrypt ok = %d", n)
	}
	if n := sum(t, ops, op("create key"), res("ok")); n != 1 {
		t.Fatalf("create key = %d", n)
	}
	ref := m["pocketkms.refusals"]
	if n := sum(t, ref, op("encrypt"), plane(kms.PlaneToken), attribute.String("reason", "rate_limit")); n != 1 {
		t.Fatalf("rate-limit refusals = %d", n)
	}
	if n := sum(t, ref, op("decrypt"), attribute.String("reason", "permission")); n != 1 {
		t.Fatalf("permission refusals = %d", n)
	}
	if n := sum(t, m["pocketkms.ratelimit.rejections"], op("encrypt")); n != 1 {
		t.Fatalf("limiter rejections = %d", n)
	}
	cache := m["pocketkms.token_cache.lookups"]
	// The first token call verifies (miss), the others hit the cache.
	if hits, misses := sum(t, cache, attribute.Bool("hit", true)), sum(t, cache, attribute.Bool("hit", false)); misses != 1 || hits != 3 {
		t.Fatalf("cache hits %d misses %d", hits, misses)
	}
	if n := histCount(t, m["pocketkms.operation.duration"], op("encrypt"), plane(kms.PlaneTrusted)); n != 3 {
		t.Fatalf("encrypt latencies = %d", n)
	}
	// create key, activate, issue tokens, set rate limit.
	if n := histCount(t, m["pocketkms.store.commit.duration"], res("ok")); n != 4 {
		t.Fatalf("store commits = %d", n)
	}
}

// TestNoObserverNoMetrics: an Engine without WithObserver records
// nothing (counters stay at zero), even with an Observer made.
func TestNoObserverNoMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	if _, err := kmsmetrics.New(mp); err != nil {
		t.Fatal(err)
	}
	be, _ := memory.New(bytes.Repeat([]byte{7}, memory.RootKeySize))
	e, err := kms.New(context.Background(), be)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	k, _ := e.CreateKey(context.Background(), kms.CreateKeyRequest{Name: "unmetered", Type: kms.AES256})
	if _, err := e.Encrypt(context.Background(), k.Tag, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if hasPoints(m) {
				t.Fatalf("metric %s recorded without an observer", m.Name)
			}
		}
	}
}

func hasPoints(m metricdata.Metrics) bool {
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, dp := range d.DataPoints {
			if dp.Value != 0 {
				return true
			}
		}
	case metricdata.Histogram[float64]:
		return len(d.DataPoints) > 0
	}
	return false
}
