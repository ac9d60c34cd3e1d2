package kmsmetrics_test

import (
	"context"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/kmsmetrics"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// BenchmarkObserveCall is the cost the Observer adds to one call with the
// OTel SDK behind it (a counter and a histogram; cached attribute sets).
func BenchmarkObserveCall(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	o, err := kmsmetrics.New(mp)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	c := kms.CallStats{Op: "encrypt", Plane: kms.PlaneToken, Duration: 20 * time.Microsecond}
	b.ReportAllocs()
	for b.Loop() {
		o.ObserveCall(ctx, c)
		o.ObserveTokenCache(ctx, true)
	}
}
