package kms

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/pocketkms/kms/internal/keytag"
	"github.com/pocketkms/kms/store"
)

// Observer receives the Engine's measurements, for metrics. Package
// kmsmetrics implements it over an OpenTelemetry MeterProvider; the root
// package imports no metrics library. Its methods run on the calling
// goroutine, on the hot path: they must be cheap and safe for concurrent
// use, and must not call the Engine.
type Observer interface {
	// ObserveCall reports one operation that ended, refused or not.
	ObserveCall(ctx context.Context, c CallStats)
	// ObserveTokenCache reports one token-plane token lookup: a hit
	// skipped the RS256 signature check.
	ObserveTokenCache(ctx context.Context, hit bool)
	// ObserveStoreCommit reports one store commit (Store.Apply) and how
	// long it took; err is its error, nil on success.
	ObserveStoreCommit(ctx context.Context, d time.Duration, err error)
}

// CallStats describes one operation for an Observer.
type CallStats struct {
	Op    string
	Plane Plane
	// Reason is "" on success, else ReasonOf the error; Refused tells a
	// refusal (rate limit: Reason "rate_limit") from a failure.
	Reason  string
	Refused bool
	// Duration is the wall-clock time of the call inside the Engine.
	Duration time.Duration
}

// WithObserver sends the Engine's measurements to o (see Observer and
// package kmsmetrics). Without it nothing is measured.
func WithObserver(o Observer) Option {
	return func(c *config) error {
		if o == nil {
			return errors.New("WithObserver: nil observer")
		}
		c.observer = o
		return nil
	}
}

// observedStore times every commit for the Observer.
type observedStore struct {
	store.Store
	obs Observer
}

func (s observedStore) Apply(ctx context.Context, c *store.Change) (int64, error) {
	start := time.Now()
	rev, err := s.Store.Apply(ctx, c)
	s.obs.ObserveStoreCommit(ctx, time.Since(start), err)
	return rev, err
}

// Range forwards to the store's Ranger.
func (s observedStore) Range(ctx context.Context, from, to string, limit int, desc bool) ([]store.Record, error) {
	r, ok := s.Store.(store.Ranger)
	if !ok {
		return nil, errNoRanger
	}
	return r.Range(ctx, from, to, limit, desc)
}

var errNoRanger = errors.New("the store cannot read records on demand (store.Ranger)")

// ranger returns the Engine's store as a Ranger, if it is one.
func (e *Engine) ranger() (store.Ranger, bool) {
	if o, ok := e.st.(observedStore); ok {
		_, is := o.Store.(store.Ranger)
		return o, is
	}
	r, ok := e.st.(store.Ranger)
	return r, ok
}

var noAddr netip.Addr

// watching reports whether calls are audited or measured.
func (e *Engine) watching() bool { return e.aud != nil || e.obs != nil }

// startTime is the start of a measured call (zero when not measured).
func (e *Engine) startTime() time.Time {
	if e.obs != nil {
		return time.Now()
	}
	return time.Time{}
}

// callEnd is what the epilogue of a call knows.
type callEnd struct {
	op      string
	plane   Plane
	tag     string
	version uint32
	caller  string
	addr    netip.Addr
	start   time.Time
}

// endCall is the epilogue of every audited call: it counts a refusal
// against the key's usage (s, when known), reports the call to the
// Observer and the audit sink, and returns the call's error, or
// ErrAuditFailed when fail-closed auditing could not record a call that
// succeeded.
func (e *Engine) endCall(ctx context.Context, c *callEnd, s *keySnap, err error) error {
	if err != nil && s != nil {
		if _, refusal := ReasonOf(err); refusal {
			e.refusedUse(s)
		}
	}
	if e.obs != nil {
		reason, refused := ReasonOf(err)
		e.obs.ObserveCall(ctx, CallStats{Op: c.op, Plane: c.plane, Reason: reason, Refused: refused, Duration: time.Since(c.start)})
	}
	if e.aud != nil {
		ev := AuditEvent{Time: e.now(), KeyTag: c.tag, Version: c.version, Op: c.op, Plane: c.plane, Caller: c.caller, Addr: c.addr}
		ev.resultOf(err)
		if aerr := e.aud.send(ctx, ev); aerr != nil && err == nil {
			return wrapErr(c.op, c.tag, ErrAuditFailed, aerr)
		}
	}
	return err
}

// auditTag is the tag an event names for a call on keyTag: the key's, or
// the argument when it is a well-formed tag, else none (an event never
// repeats arbitrary caller input).
func auditTag(s *keySnap, keyTag string) string {
	if s != nil {
		return s.tag
	}
	if keytag.Valid(keyTag) {
		return keyTag
	}
	return ""
}

// auditVersion is the version a cipher operation on s uses, when it is
// the current one (encryptions and signatures); 0 otherwise.
func auditVersion(op string, s *keySnap) uint32 {
	if s == nil {
		return 0
	}
	switch op {
	case "encrypt", "batch encrypt", "re-encrypt", "batch re-encrypt", "create custom key", "sign", "sign digest":
		return s.current().num
	}
	return 0
}

// resultVersion is the version a management result names, if any.
func resultVersion(r any) uint32 {
	switch v := r.(type) {
	case *KeyVersion:
		if v != nil {
			return v.Version
		}
	}
	return 0
}

// dropResult clears a withheld result's plaintext.
func dropResult(r any) {
	switch v := r.(type) {
	case []byte:
		clear(v)
	case [][]byte:
		for _, b := range v {
			clear(b)
		}
	case *CustomKey:
		if v != nil {
			clear(v.Plaintext)
		}
	}
}

// endTrusted ends a trusted-plane call on keyTag (snapshot s, when the
// key was found) with result r; it returns the result and error the
// caller gets.
func endTrusted[R any](e *Engine, ctx context.Context, op, keyTag string, s *keySnap, version uint32, start time.Time, r R, err error) (R, error) {
	ci := callerOf(ctx)
	ferr := e.endCall(ctx, &callEnd{op: op, plane: ci.plane, tag: auditTag(s, keyTag), version: version, caller: ci.id, addr: ci.addr, start: start}, s, err)
	if ferr != err {
		dropResult(r)
		var zero R
		return zero, ferr
	}
	return r, err
}
