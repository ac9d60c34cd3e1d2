// Package kmsmetrics records a pocketkms Engine's metrics through the
// OpenTelemetry metrics API. It implements kms.Observer over any
// metric.MeterProvider: pass New's result to kms.WithObserver. The
// library imports no exporter and records nothing unless an Observer is
// installed; the embedder chooses the SDK and exporter (Prometheus, OTLP).
//
// # Instruments
//
// All carry the attributes named; op is an Engine operation ("encrypt",
// "rotate key", ...), plane is "trusted", "token" or "system", result is
// "ok", "refused" or "failed", reason is kms.ReasonOf the error ("" on
// success):
//
//	pocketkms.operations             counter    op, plane, result, reason
//	pocketkms.refusals               counter    op, plane, reason
//	pocketkms.operation.duration     histogram  op, plane, result (seconds)
//	pocketkms.ratelimit.rejections   counter    op, plane
//	pocketkms.token_cache.lookups    counter    hit (true/false): hit rate = hits / lookups
//	pocketkms.store.commit.duration  histogram  result ("ok", "error") (seconds)
//
// Management reads (GetKey, ListKeys, ...) are not measured. The
// attribute sets are few (operations × planes × reasons) and cached, so
// recording allocates nothing after the first call of each kind.
package kmsmetrics

import (
	"context"
	"sync"
	"time"

	"github.com/pocketkms/kms"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ScopeName is the instrumentation scope of the meter.
const ScopeName = "github.com/pocketkms/kms"

// Observer records the Engine's measurements; it implements kms.Observer.
type Observer struct {
	ops, refusals, rejections, cache metric.Int64Counter
	dur, commit                      metric.Float64Histogram

	sets     sync.Map // callKey -> *callSets
	hit      []metric.AddOption
	miss     []metric.AddOption
	commitOK []metric.RecordOption
	commitKO []metric.RecordOption
}

var _ kms.Observer = (*Observer)(nil)

type callKey struct {
	op     string
	plane  kms.Plane
	reason string
}

// callSets holds the options of one kind of call, made once: a variadic
// call with a slice allocates nothing.
type callSets struct {
	ops     []metric.AddOption
	short   []metric.RecordOption // without reason
	refusal []metric.AddOption
	opPlane []metric.AddOption
}

// New makes the instruments from mp's meter ScopeName.
func New(mp metric.MeterProvider) (*Observer, error) {
	m := mp.Meter(ScopeName)
	o := &Observer{}
	var err error
	if o.ops, err = m.Int64Counter("pocketkms.operations", metric.WithDescription("Engine operations, by outcome"), metric.WithUnit("{operation}")); err != nil {
		return nil, err
	}
	if o.refusals, err = m.Int64Counter("pocketkms.refusals", metric.WithDescription("Operations refused for the caller, by reason"), metric.WithUnit("{operation}")); err != nil {
		return nil, err
	}
	if o.rejections, err = m.Int64Counter("pocketkms.ratelimit.rejections", metric.WithDescription("Token-plane calls refused by a key's rate limit"), metric.WithUnit("{operation}")); err != nil {
		return nil, err
	}
	if o.cache, err = m.Int64Counter("pocketkms.token_cache.lookups", metric.WithDescription("Verified-token cache lookups on the token plane"), metric.WithUnit("{lookup}")); err != nil {
		return nil, err
	}
	if o.dur, err = m.Float64Histogram("pocketkms.operation.duration", metric.WithDescription("Time of an operation inside the Engine"), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1, 5)); err != nil {
		return nil, err
	}
	if o.commit, err = m.Float64Histogram("pocketkms.store.commit.duration", metric.WithDescription("Time of a store commit"), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1, 5)); err != nil {
		return nil, err
	}
	o.hit = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.Bool("hit", true)))}
	o.miss = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.Bool("hit", false)))}
	o.commitOK = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "ok")))}
	o.commitKO = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "error")))}
	return o, nil
}

func result(c kms.CallStats) string {
	switch {
	case c.Reason == "":
		return string(kms.ResultOK)
	case c.Refused:
		return string(kms.ResultRefused)
	}
	return string(kms.ResultFailed)
}

func (o *Observer) setsOf(c kms.CallStats) *callSets {
	k := callKey{c.Op, c.Plane, c.Reason}
	if v, ok := o.sets.Load(k); ok {
		return v.(*callSets)
	}
	op, plane, res := attribute.String("op", c.Op), attribute.String("plane", string(c.Plane)), attribute.String("result", result(c))
	reason := attribute.String("reason", c.Reason)
	s := &callSets{
		ops:     []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(op, plane, res, reason))},
		short:   []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(op, plane, res))},
		refusal: []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(op, plane, reason))},
		opPlane: []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(op, plane))},
	}
	v, _ := o.sets.LoadOrStore(k, s)
	return v.(*callSets)
}

// ObserveCall implements kms.Observer.
func (o *Observer) ObserveCall(ctx context.Context, c kms.CallStats) {
	s := o.setsOf(c)
	o.ops.Add(ctx, 1, s.ops...)
	o.dur.Record(ctx, c.Duration.Seconds(), s.short...)
	if c.Refused {
		o.refusals.Add(ctx, 1, s.refusal...)
		if c.Reason == "rate_limit" {
			o.rejections.Add(ctx, 1, s.opPlane...)
		}
	}
}

// ObserveTokenCache implements kms.Observer.
func (o *Observer) ObserveTokenCache(ctx context.Context, hit bool) {
	if hit {
		o.cache.Add(ctx, 1, o.hit...)
	} else {
		o.cache.Add(ctx, 1, o.miss...)
	}
}

// ObserveStoreCommit implements kms.Observer.
func (o *Observer) ObserveStoreCommit(ctx context.Context, d time.Duration, err error) {
	if err != nil {
		o.commit.Record(ctx, d.Seconds(), o.commitKO...)
	} else {
		o.commit.Record(ctx, d.Seconds(), o.commitOK...)
	}
}
