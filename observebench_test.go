package kms_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/kmsmetrics"
	"github.com/pocketkms/kms/ratelimit"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
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

// BenchmarkTokenEncryptAuditPaired alternates, call by call, between an
// Engine without auditing and one with the 1 ms/event sink, timing each
// call, so that the load of other processes falls on both alike; it
// reports each side's mean and the overhead in percent.
func BenchmarkTokenEncryptAuditPaired(b *testing.B) {
	pairedTokenEncrypt(b, "slow", kms.WithAudit(slowSink{}, kms.AuditOptions{}))
}

// BenchmarkTokenEncryptMetricsPaired is the same pairing with
// kmsmetrics over the OTel SDK (a manual reader) on one side.
func BenchmarkTokenEncryptMetricsPaired(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	obs, err := kmsmetrics.New(mp)
	if err != nil {
		b.Fatal(err)
	}
	pairedTokenEncrypt(b, "metrics", kms.WithObserver(obs))
}

func pairedTokenEncrypt(b *testing.B, name string, opt kms.Option) {
	unlimited := kms.WithRateLimit(ratelimit.Limit{Unlimited: true})
	e0, tag0, set0 := benchTokenKey(b, unlimited)
	e1, tag1, set1 := benchTokenKey(b, unlimited, opt)
	c0, c1 := e0.WithToken(set0.Access, callerIP), e1.WithToken(set1.Access, callerIP)
	ctx := context.Background()
	pt := make([]byte, 1024)
	for _, w := range []struct {
		c   kms.TokenClient
		tag string
	}{{c0, tag0}, {c1, tag1}} {
		if _, err := w.c.Encrypt(ctx, w.tag, pt, nil); err != nil {
			b.Fatal(err)
		}
	}
	var none, slow time.Duration
	i := 0
	for b.Loop() {
		// Alternate which goes first, so neither always follows the other.
		first, second := c0, c1
		t0, t1 := tag0, tag1
		if i%2 == 1 {
			first, second, t0, t1 = c1, c0, tag1, tag0
		}
		s := time.Now()
		if _, err := first.Encrypt(ctx, t0, pt, nil); err != nil {
			b.Fatal(err)
		}
		m := time.Now()
		if _, err := second.Encrypt(ctx, t1, pt, nil); err != nil {
			b.Fatal(err)
		}
		f := time.Now()
		if i%2 == 0 {
			none, slow = none+m.Sub(s), slow+f.Sub(m)
		} else {
			slow, none = slow+m.Sub(s), none+f.Sub(m)
		}
		i++
	}
	b.ReportMetric(float64(none.Nanoseconds())/float64(i), "none-ns/call")
	b.ReportMetric(float64(slow.Nanoseconds())/float64(i), name+"-ns/call")
	b.ReportMetric(100*(float64(slow)/float64(none)-1), "overhead-%")
}
