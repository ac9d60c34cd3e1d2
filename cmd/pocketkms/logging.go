package main

import (
	"context"
	"log/slog"
)

// storageLogHandler passes the Engine's own records on unchanged and keeps
// only the warnings and errors of its storage engine (records with
// component=badger), whose informational lines are about table levels and
// compactions.
type storageLogHandler struct{ slog.Handler }

// Handle drops the storage engine's records below warning level.
func (h storageLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		storage := false
		r.Attrs(func(a slog.Attr) bool {
			storage = a.Key == "component" && a.Value.String() == "badger"
			return !storage
		})
		if storage {
			return nil
		}
	}
	return h.Handler.Handle(ctx, r)
}

// WithAttrs keeps the filter on the derived handler.
func (h storageLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return storageLogHandler{h.Handler.WithAttrs(attrs)}
}

// WithGroup keeps the filter on the derived handler.
func (h storageLogHandler) WithGroup(name string) slog.Handler {
	return storageLogHandler{h.Handler.WithGroup(name)}
}
