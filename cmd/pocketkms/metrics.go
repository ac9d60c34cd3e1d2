package main

// Prometheus metrics for `pocketkms serve -metrics-addr`: the Engine's
// OpenTelemetry instruments (package kmsmetrics) exported through the
// OpenTelemetry Prometheus exporter on a listener of their own, so that the
// KMS's own address never serves an unauthenticated endpoint.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/kmsmetrics"
)

// metricsServer serves GET /metrics in Prometheus's text format.
type metricsServer struct {
	mp  *sdkmetric.MeterProvider
	srv *http.Server
	ln  net.Listener
}

// startMetrics listens on addr and returns the Engine option that records
// into it. The registry is the server's own: it holds pocketkms's metrics
// and the Go runtime's and process's collectors, nothing global.
func startMetrics(addr string, log *slog.Logger) (*metricsServer, kms.Option, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, nil, fmt.Errorf("metrics: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	obs, err := kmsmetrics.New(mp)
	if err != nil {
		mp.Shutdown(context.Background())
		return nil, nil, fmt.Errorf("metrics: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		mp.Shutdown(context.Background())
		return nil, nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	m := &metricsServer{mp: mp, ln: ln, srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}}
	go func() {
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics server stopped", "err", err)
		}
	}()
	return m, kms.WithObserver(obs), nil
}

// Addr is the address the metrics listener is bound to.
func (m *metricsServer) Addr() string { return m.ln.Addr().String() }

// close stops the listener and the meter provider.
func (m *metricsServer) close(ctx context.Context) {
	m.srv.Shutdown(ctx)
	m.mp.Shutdown(ctx)
}
