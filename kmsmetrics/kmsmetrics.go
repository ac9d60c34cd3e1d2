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
// Management reads (GetKey, ListKeys, ...) are not measured. The counters
// are observable instruments: a call adds to an atomic counter of its
// own kind (operations × planes × reasons, made once), which the SDK
// reads when it collects, so a call pays for one SDK measurement, its
// latency. Nothing allocates after the first call of each kind.
package kmsmetrics

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pocketkms/kms"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ScopeName is the instrumentation scope of the meter.
const ScopeName = "github.com/pocketkms/kms"

// Observer records the Engine's measurements; it implements kms.Observer.
type Observer struct {
	ops, refusals, rejections, cache metric.Int64ObservableCounter
	dur, commit                      metric.Float64Histogram

	sets      sync.Map // callKey -> *callSets
	hit, miss cell
	commitOK  []metric.RecordOption
	commitKO  []metric.RecordOption
}

var _ kms.Observer = (*Observer)(nil)

type callKey struct {
	op     string
	plane  kms.Plane
	reason string
}

// cell is one counter of one attribute set.
type cell struct {
	n     atomic.Int64
	attrs []metric.ObserveOption
}

func newCell(kv ...attribute.KeyValue) cell {
	return cell{attrs: []metric.ObserveOption{metric.WithAttributeSet(attribute.NewSet(kv...))}}
}

// callSets holds the counters and options of one kind of call, made once.
type callSets struct {
	ops, refusals, rejections cell
	refused, limited          bool
	short                     []metric.RecordOption // the histogram's, without reason
}

// New makes the instruments from mp's meter ScopeName.
func New(mp metric.MeterProvider) (*Observer, error) {
	m := mp.Meter(ScopeName)
	o := &Observer{}
	var err error
	if o.ops, err = m.Int64ObservableCounter("pocketkms.operations", metric.WithDescription("Engine operations, by outcome"), metric.WithUnit("{operation}")); err != nil {
		return nil, err
	}
	if o.refusals, err = m.Int64ObservableCounter("pocketkms.refusals", metric.WithDescription("Operations refused for the caller, by reason"), metric.WithUnit("{operation}")); err != nil {
		return nil, err
	}
	if o.rejections, err = m.Int64ObservableCounter("pocketkms.ratelimit.rejections", metric.WithDescription("Token-plane calls refused by a key's rate limit"), metric.WithUnit("{operation}")); err != nil {
		return nil, err
	}
	if o.cache, err = m.Int64ObservableCounter("pocketkms.token_cache.lookups", metric.WithDescription("Verified-token cache lookups on the token plane"), metric.WithUnit("{lookup}")); err != nil {
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
	o.hit, o.miss = newCell(attribute.Bool("hit", true)), newCell(attribute.Bool("hit", false))
	o.commitOK = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "ok")))}
	o.commitKO = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "error")))}
	if _, err := m.RegisterCallback(o.observe, o.ops, o.refusals, o.rejections, o.cache); err != nil {
		return nil, err
	}
	return o, nil
}

// observe reports the counters when the SDK collects.
func (o *Observer) observe(_ context.Context, ob metric.Observer) error {
	o.sets.Range(func(_, v any) bool {
		s := v.(*callSets)
		ob.ObserveInt64(o.ops, s.ops.n.Load(), s.ops.attrs...)
		if s.refused {
			ob.ObserveInt64(o.refusals, s.refusals.n.Load(), s.refusals.attrs...)
		}
		if s.limited {
			ob.ObserveInt64(o.rejections, s.rejections.n.Load(), s.rejections.attrs...)
		}
		return true
	})
	ob.ObserveInt64(o.cache, o.hit.n.Load(), o.hit.attrs...)
	ob.ObserveInt64(o.cache, o.miss.n.Load(), o.miss.attrs...)
	return nil
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
		ops:        newCell(op, plane, res, reason),
		refusals:   newCell(op, plane, reason),
		rejections: newCell(op, plane),
		refused:    c.Refused,
		limited:    c.Refused && c.Reason == "rate_limit",
		short:      []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(op, plane, res))},
	}
	v, _ := o.sets.LoadOrStore(k, s)
	return v.(*callSets)
}

// ObserveCall implements kms.Observer.
func (o *Observer) ObserveCall(ctx context.Context, c kms.CallStats) {
	s := o.setsOf(c)
	s.ops.n.Add(1)
	if s.refused {
		s.refusals.n.Add(1)
		if s.limited {
			s.rejections.n.Add(1)
		}
	}
	o.dur.Record(ctx, c.Duration.Seconds(), s.short...)
}

// ObserveTokenCache implements kms.Observer.
func (o *Observer) ObserveTokenCache(_ context.Context, hit bool) {
	if hit {
		o.hit.n.Add(1)
	} else {
		o.miss.n.Add(1)
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
