package ratelimit

import (
	"sync/atomic"
	"testing"
	"time"
)

// epoch has no monotonic reading, like any time a fake clock hands out.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// fakeClock is simulated time: it moves only when a test moves it.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) Now() time.Time          { return epoch.Add(time.Duration(c.ns.Load())) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
func (c *fakeClock) Set(d time.Duration)     { c.ns.Store(int64(d)) }

// newTest returns a Limiter on a fresh fake clock.
func newTest(t testing.TB, opts ...Option) (*Limiter, *fakeClock) {
	t.Helper()
	c := new(fakeClock)
	l, err := New(append([]Option{WithClock(c)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return l, c
}
