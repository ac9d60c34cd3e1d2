package kms_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/ratelimit"
)

// slowSink takes a millisecond per event: far slower than the calls, so
// the audit queue is full for the whole run and almost every event is
// dropped (counted).
type slowSink struct{}

func (slowSink) WriteAudit(context.Context, kms.AuditEvent) error {
	time.Sleep(time.Millisecond)
	return nil
}

// BenchmarkTokenEncryptAudit is BenchmarkTokenEncrypt/1KiB without
// auditing (None), with a sink that keeps up (Slog: slog to a discarding
// handler, every event delivered) and with a sink far too slow (Slow:
// 1 ms per event). The bound: Slow within 5% of None. Compare with
// BenchmarkRawAESGCM in the same run.
func BenchmarkTokenEncryptAudit(b *testing.B) {
	unlimited := kms.WithRateLimit(ratelimit.Limit{Unlimited: true})
	b.Run("None", func(b *testing.B) {
		e, tag, set := benchTokenKey(b, unlimited)
		runTokenEncrypt(b, e.WithToken(set.Access, callerIP), tag)
	})
	b.Run("Slog", func(b *testing.B) {
		e, tag, set := benchTokenKey(b, unlimited, kms.WithAudit(kms.SlogAuditSink{Logger: slog.New(slog.DiscardHandler)}, kms.AuditOptions{}))
		runTokenEncrypt(b, e.WithToken(set.Access, callerIP), tag)
	})
	b.Run("Slow", func(b *testing.B) {
		e, tag, set := benchTokenKey(b, unlimited, kms.WithAudit(slowSink{}, kms.AuditOptions{}))
		runTokenEncrypt(b, e.WithToken(set.Access, callerIP), tag)
		b.ReportMetric(float64(e.AuditStats().Dropped)/float64(b.N), "dropped/op")
	})
}
