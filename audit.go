package kms

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Plane says where a call came from, in audit events and metrics.
type Plane string

// The planes.
const (
	// PlaneTrusted: the Engine's own methods, called by the embedding
	// program (NAVER's account-authenticated API).
	PlaneTrusted Plane = "trusted"
	// PlaneToken: TokenClient, NAVER's x-ncp-ocapi-token API.
	PlaneToken Plane = "token"
	// PlaneSystem: the Engine's own background work (Maintain:
	// auto-rotation, destruction) and its warnings.
	PlaneSystem Plane = "system"
)

// AuditResult is the outcome of an audited operation.
type AuditResult string

// The results.
const (
	// ResultOK: the operation succeeded.
	ResultOK AuditResult = "ok"
	// ResultRefused: the caller was refused: a bad or expired token, an
	// address not allowed, a missing permission, the rate limit, the
	// key's or version's state, or an exhausted encryption budget.
	ResultRefused AuditResult = "refused"
	// ResultFailed: any other error (bad arguments, a ciphertext that does
	// not decrypt, a backend or store failure, a cancelled call).
	ResultFailed AuditResult = "failed"
)

// AuditEvent is one audited operation. It never holds key material,
// plaintext, ciphertext, signatures or tokens: only who did what to which
// key, when, and how it ended. A batch call is one event (its items are
// counted one by one in Engine.KeyUsage). A front end's token check that
// refuses a request before the call (TokenClient.Authorize) is one event
// with Op "authorize"; a check that passes makes none, as the call
// follows.
type AuditEvent struct {
	Time time.Time
	// KeyTag is the key concerned ("" when the call named no valid key).
	KeyTag string
	// Version is the key version the operation used or changed, when the
	// Engine knows it without parsing the caller's data: the current
	// version for encryptions, signatures and rotations, the version
	// enabled or disabled; 0 otherwise (decryptions and verifications: the
	// ciphertext or signature names it; their per-version counts are in
	// Engine.KeyUsage).
	Version uint32
	// Op is the operation, as in Error.Op ("encrypt", "rotate key", ...).
	Op    string
	Plane Plane
	// Caller is the token's subject on the token plane (once the token is
	// verified; empty for a refusal before that), the identity the
	// embedder put in the context with WithCaller on the trusted plane,
	// or "maintenance" for PlaneSystem.
	Caller string
	// Addr is the caller's address on the token plane; invalid otherwise.
	Addr   netip.Addr
	Result AuditResult
	// Code is the NAVER error code of a failure ("" on success), Reason a
	// stable short name of its sentinel: "bad_token", "token_expired",
	// "ip_denied", "permission", "rate_limit", "state", "budget",
	// "invalid_argument", "decryption_failed", "not_found", ... (see
	// ReasonOf).
	Code   string
	Reason string
}

// LogAttrs returns the event as slog attributes (what SlogAuditSink logs).
func (ev *AuditEvent) LogAttrs() []slog.Attr {
	a := []slog.Attr{
		slog.Time("time", ev.Time),
		slog.String("op", ev.Op),
		slog.String("plane", string(ev.Plane)),
		slog.String("keyTag", ev.KeyTag),
		slog.String("result", string(ev.Result)),
	}
	if ev.Version != 0 {
		a = append(a, slog.Uint64("version", uint64(ev.Version)))
	}
	if ev.Caller != "" {
		a = append(a, slog.String("caller", ev.Caller))
	}
	if ev.Addr.IsValid() {
		a = append(a, slog.String("addr", ev.Addr.String()))
	}
	if ev.Code != "" {
		a = append(a, slog.String("code", ev.Code), slog.String("reason", ev.Reason))
	}
	return a
}

// AuditSink receives audit events. WriteAudit is called from one
// goroutine at a time by the Engine's audit queue, or from the calling
// goroutine with fail-closed auditing (concurrently then: the sink must be
// safe for concurrent use). A non-nil error counts as a failed delivery
// (AuditStats.Failed) and, with fail-closed auditing, fails the call.
type AuditSink interface {
	WriteAudit(ctx context.Context, ev AuditEvent) error
}

// SlogAuditSink logs every event at level Info with message "kms: audit"
// and the attributes of AuditEvent.LogAttrs. It never fails.
type SlogAuditSink struct{ Logger *slog.Logger }

// WriteAudit implements AuditSink.
func (s SlogAuditSink) WriteAudit(ctx context.Context, ev AuditEvent) error {
	s.Logger.LogAttrs(ctx, slog.LevelInfo, "kms: audit", ev.LogAttrs()...)
	return nil
}

// AuditOptions configures WithAudit.
type AuditOptions struct {
	// QueueSize bounds the events waiting for the sink (default
	// DefaultAuditQueueSize). When the queue is full, new events are
	// dropped and counted (AuditStats.Dropped): a slow sink never slows a
	// call. Ignored with FailClosed.
	QueueSize int
	// FailClosed delivers every event from the call itself, before the
	// call returns: a sink error fails the call with ErrAuditFailed (and
	// drops its result). A management change has then been committed
	// already (its history record with it, see Engine.ListKeyHistory):
	// the error says the audit trail outside the store missed it.
	FailClosed bool
}

// DefaultAuditQueueSize is the default bound of the audit queue.
const DefaultAuditQueueSize = 4096

// WithAudit sends an event for every operation to sink (see AuditEvent
// and the package documentation's Auditing section). By default events go
// through a bounded queue drained by one goroutine: a slow or failing
// sink loses events (counted in AuditStats) but never blocks a call;
// AuditOptions.FailClosed makes delivery part of every call instead.
// Close drains the queue before it returns.
func WithAudit(sink AuditSink, o AuditOptions) Option {
	return func(c *config) error {
		if sink == nil {
			return errors.New("WithAudit: nil sink")
		}
		if o.QueueSize < 0 {
			return errors.New("WithAudit: negative queue size")
		}
		if o.QueueSize == 0 {
			o.QueueSize = DefaultAuditQueueSize
		}
		c.audit, c.auditOpts = sink, o
		return nil
	}
}

// AuditStats counts the events of WithAudit's sink since New.
type AuditStats struct {
	// Delivered: events the sink accepted.
	Delivered uint64
	// Dropped: events lost because the queue was full.
	Dropped uint64
	// Failed: events the sink returned an error for.
	Failed uint64
}

// AuditStats returns the audit counters; zero without WithAudit.
func (e *Engine) AuditStats() AuditStats {
	a := e.aud
	if a == nil {
		return AuditStats{}
	}
	return AuditStats{Delivered: a.delivered.Load(), Dropped: a.dropped.Load(), Failed: a.failed.Load()}
}

// auditor delivers events to the sink.
type auditor struct {
	sink       AuditSink
	failClosed bool
	q          chan AuditEvent
	done       chan struct{}
	stop       sync.Once

	delivered, dropped, failed atomic.Uint64
}

func newAuditor(sink AuditSink, o AuditOptions) *auditor {
	a := &auditor{sink: sink, failClosed: o.FailClosed}
	if !o.FailClosed {
		a.q = make(chan AuditEvent, o.QueueSize)
		a.done = make(chan struct{})
		go a.run()
	}
	return a
}

func (a *auditor) run() {
	defer close(a.done)
	for ev := range a.q {
		a.deliver(context.Background(), ev)
	}
}

func (a *auditor) deliver(ctx context.Context, ev AuditEvent) error {
	if err := a.sink.WriteAudit(ctx, ev); err != nil {
		a.failed.Add(1)
		return err
	}
	a.delivered.Add(1)
	return nil
}

// send delivers or queues ev; with fail-closed auditing it returns the
// sink's error.
func (a *auditor) send(ctx context.Context, ev AuditEvent) error {
	if a.failClosed {
		return a.deliver(context.WithoutCancel(ctx), ev)
	}
	select {
	case a.q <- ev:
	default:
		a.dropped.Add(1)
	}
	return nil
}

// close drains the queue; the caller guarantees no send follows (Close
// holds the Engine's write lock and has marked it closed).
func (a *auditor) close() {
	a.stop.Do(func() {
		if a.q != nil {
			close(a.q)
			<-a.done
		}
	})
}

// callerKey is the context key of the caller's identity.
type callerKey struct{}

// callerInfo is who a call is made for.
type callerInfo struct {
	plane Plane
	id    string
	addr  netip.Addr
}

// WithCaller returns a context naming the trusted-plane caller, for audit
// events and the key history: pass it to Engine methods. The identity is
// the embedder's (a service name, a user); it is recorded as given, so it
// must not be a secret.
func WithCaller(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, callerKey{}, &callerInfo{plane: PlaneTrusted, id: id})
}

// CallerFrom returns the identity WithCaller put in ctx ("" if none).
func CallerFrom(ctx context.Context) string {
	if ci, ok := ctx.Value(callerKey{}).(*callerInfo); ok {
		return ci.id
	}
	return ""
}

// withPlane marks ctx as a call of the token plane (for subject at addr)
// or of the system, for the history records its changes write.
func withPlane(ctx context.Context, p Plane, id string, addr netip.Addr) context.Context {
	return context.WithValue(ctx, callerKey{}, &callerInfo{plane: p, id: id, addr: addr})
}

// callerOf returns who ctx's call is for; the trusted plane by default.
func callerOf(ctx context.Context) callerInfo {
	if ci, ok := ctx.Value(callerKey{}).(*callerInfo); ok {
		return *ci
	}
	return callerInfo{plane: PlaneTrusted}
}

// reasons names each sentinel in events and metrics; refusals are the
// sentinels that say the caller may not, rather than cannot.
var reasons = map[error]struct {
	name    string
	refusal bool
}{
	ErrTokenInvalid:        {"bad_token", true},
	ErrTokenExpired:        {"token_expired", true},
	ErrAccessDenied:        {"ip_denied", true},
	ErrPermissionDenied:    {"permission", true},
	ErrRateLimited:         {"rate_limit", true},
	ErrKeyNotEnabled:       {"state", true},
	ErrInvalidState:        {"state", true},
	ErrVersionDisabled:     {"state", true},
	ErrVersionBelowMinimum: {"state", true},
	ErrEncryptionBudget:    {"budget", true},
	ErrInvalidArgument:     {"invalid_argument", false},
	ErrWrongKeyType:        {"wrong_key_type", false},
	ErrDecryptionFailed:    {"decryption_failed", false},
	ErrKeyNotFound:         {"not_found", false},
	ErrVersionNotFound:     {"not_found", false},
	ErrAlreadyExists:       {"already_exists", false},
	ErrVersionLimit:        {"version_limit", false},
	ErrClosed:              {"closed", false},
	ErrUnavailable:         {"unavailable", false},
	ErrBackendMismatch:     {"backend_mismatch", false},
	ErrConflict:            {"conflict", false},
	ErrCanceled:            {"canceled", false},
	ErrInternal:            {"internal", false},
	ErrAuditFailed:         {"audit_failed", false},
}

// ReasonOf returns the reason an error gives in audit events and metrics
// ("" for nil, "internal" for an error that is not an *Error) and
// whether it is a refusal (ResultRefused).
func ReasonOf(err error) (reason string, refusal bool) {
	if err == nil {
		return "", false
	}
	var ke *Error
	if !errors.As(err, &ke) {
		return "internal", false
	}
	r, ok := reasons[ke.Kind]
	if !ok {
		return "internal", false
	}
	return r.name, r.refusal
}

// resultOf fills the outcome fields of ev from err.
func (ev *AuditEvent) resultOf(err error) {
	if err == nil {
		ev.Result = ResultOK
		return
	}
	reason, refusal := ReasonOf(err)
	ev.Reason, ev.Result = reason, ResultFailed
	if refusal {
		ev.Result = ResultRefused
	}
	var ke *Error
	if errors.As(err, &ke) {
		ev.Code = ke.Code
	} else {
		ev.Code = classes[ErrInternal].code
	}
}
