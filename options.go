package kms

import (
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/pocketkms/kms/ratelimit"
	"github.com/pocketkms/kms/store"
)

// Clock tells the time. The Engine reads every time through it, so tests
// can drive rotation, deletion and token expiry with a fake clock.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Option configures an Engine in New.
type Option func(*config) error

type config struct {
	store    store.Store
	dir      string
	inMemory bool
	logger   *slog.Logger
	clock    Clock
	random   io.Reader
	maintain time.Duration
	limit    ratelimit.Limit
	cacheMax int
	anySalt  bool
	tokenIDs bool
	orphans  time.Duration
	minFree  int64
	stale    time.Duration

	// Observability (audit.go, observe.go, usage.go); budget and
	// budgetWarn are 0 for their defaults (EncryptionBudget, which tests
	// lower, and DefaultEncryptionBudgetWarning).
	audit      AuditSink
	auditOpts  AuditOptions
	observer   Observer
	budget     uint64
	budgetWarn uint64
}

func defaultConfig() config {
	return config{
		inMemory: true,
		logger:   slog.New(slog.DiscardHandler),
		clock:    systemClock{},
		random:   rand.Reader,
		maintain: time.Minute,
		limit:    ratelimit.DefaultLimit(),
		cacheMax: DefaultTokenCacheSize,
		orphans:  DefaultOrphanGrace,
		stale:    DefaultStaleLimit,
	}
}

// DefaultTokenCacheSize is the default bound on verified tokens cached.
const DefaultTokenCacheSize = 10_000

// WithRateLimit sets the rate limit of every key without its own (see
// SetKeyRateLimit). The default is NAVER's 300 operations per second with
// a burst of 300; ratelimit.Limit{Unlimited: true} switches limiting off.
func WithRateLimit(l ratelimit.Limit) Option {
	return func(c *config) error {
		if err := l.Validate(); err != nil {
			return err
		}
		c.limit = l
		return nil
	}
}

// WithTokenCacheSize bounds the number of verified tokens cached (default
// DefaultTokenCacheSize). A cache hit skips the RS256 signature check but
// is still checked against the generator's id, the expiry and the key.
func WithTokenCacheSize(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return errors.New("WithTokenCacheSize: size must be at least 1")
		}
		c.cacheMax = n
		return nil
	}
}

// WithMaintenanceInterval sets how often the background worker calls
// Engine.Maintain (auto-rotation, destruction of keys whose deletion time
// has passed); 0 turns the worker off, leaving Maintain to the caller.
// The default is one minute. The worker reads time from the Engine's
// clock, so due work is judged by that clock.
func WithMaintenanceInterval(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return errors.New("WithMaintenanceInterval: negative interval")
		}
		c.maintain = d
		return nil
	}
}

// WithDirectory persists the Engine's state in a Badger database in dir
// (created if missing), the embedded default store. Without it (or
// WithStore) the Engine keeps its state in memory and loses it on Close.
// Beside Badger's files the directory holds the Engine's own records
// (pocketkms.check, pocketkms.integrity, pocketkms.rotation during a
// root-key rotation) and the keys' shred keys
// (pocketkms.shred; see the package documentation's Security section):
// back up, copy or move the directory whole.
func WithDirectory(dir string) Option {
	return func(c *config) error {
		if dir == "" {
			return errors.New("WithDirectory: empty directory")
		}
		if c.store != nil {
			return errors.New("WithDirectory: WithStore already chose the store")
		}
		c.dir, c.inMemory = dir, false
		return nil
	}
}

// WithStore keeps the Engine's state in st, any implementation of
// store.Store (see package store), instead of Badger. The Engine owns st
// once New succeeds and closes it on Close. It excludes WithDirectory.
// Handles are then stored as the backend made them, without shred keys:
// a destroyed key's handles stay wherever st keeps old values (etcd: in
// its history until compaction), so compact after destruction.
func WithStore(st store.Store) Option {
	return func(c *config) error {
		switch {
		case st == nil:
			return errors.New("WithStore: nil store")
		case c.dir != "":
			return errors.New("WithStore: WithDirectory already chose the store")
		}
		c.store, c.inMemory = st, false
		return nil
	}
}

// WithLogger sets the logger for management decisions and storage
// messages. The default discards everything. Nothing secret is ever logged.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("WithLogger: nil logger")
		}
		c.logger = l
		return nil
	}
}

// WithClock sets the clock (default: the system clock).
func WithClock(clk Clock) Option {
	return func(c *config) error {
		if clk == nil {
			return errors.New("WithClock: nil clock")
		}
		c.clock = clk
		return nil
	}
}

// WithRandom sets the source of randomness for key tags and data keys
// (default crypto/rand.Reader). Key material and nonces are made by the
// backend, not from this source. Use it only in tests.
func WithRandom(r io.Reader) Option {
	return func(c *config) error {
		if r == nil {
			return errors.New("WithRandom: nil reader")
		}
		c.random = r
		return nil
	}
}

// WithAnyPSSSaltLength makes Verify accept an RSA2048 RSASSA-PSS signature
// with any salt length. By default Verify accepts only the salt length
// Sign signs with, the maximum (222 bytes), as a signature made elsewhere
// with another salt was not made by this key's Sign (SignDigest's 32-byte
// salt, for X.509 and TLS, is for verifiers holding the public key). Use
// it when signatures made by other RSASSA-PSS signers with the same key
// must verify (a key imported from a system that signs with a hash-length
// salt, say).
func WithAnyPSSSaltLength() Option {
	return func(c *config) error {
		c.anySalt = true
		return nil
	}
}

// WithTokenIDs gives every token the Engine issues a unique id: claim
// "jti", 16 random bytes in unpadded base64url, so no two tokens are
// identical (without it, two sets issued for the same subject in the same
// second are byte for byte the same), and a token can be revoked by its id
// alone (Engine.RevokeToken). It is off by default because NAVER's claim
// layout has no jti: with it, tokens are no longer NAVER's byte for byte
// (see package token). Tokens issued without ids keep working either way.
func WithTokenIDs() Option {
	return func(c *config) error {
		c.tokenIDs = true
		return nil
	}
}

// DefaultOrphanGrace is how old leftover backend material must be before
// Maintain destroys it (see Engine.SweepOrphans).
const DefaultOrphanGrace = time.Hour

// WithOrphanSweep sets the grace after which Maintain destroys leftover
// backend material that no record names (Engine.SweepOrphans; only
// backends implementing backend.Sweeper, such as backend/softhsm, keep
// any). Maintain sweeps at most once per grace period, since a sweep reads
// the whole store and lists the backend's objects. The default is
// DefaultOrphanGrace; 0 turns the sweep off in Maintain (SweepOrphans can
// still be called).
func WithOrphanSweep(grace time.Duration) Option {
	return func(c *config) error {
		if grace < 0 {
			return errors.New("WithOrphanSweep: negative grace")
		}
		c.orphans = grace
		return nil
	}
}

// WithMinFreeSpace sets the Badger store's free-space floor in bytes (Linux):
// below it, management changes are refused with an ErrInternal naming
// store.ErrNoSpace, while cipher calls keep serving. Badger writes its log
// and tables through memory maps, and a write into a map on a full file
// system kills the process (SIGBUS) instead of failing; the floor keeps
// room for what Badger may write between two checks. The default is 32 MiB;
// the lowest is 4 MiB. A floor below the default also sizes Badger's files
// down with it (memtables of floor/8, at least 1 MiB), so that a small
// volume can hold a store, at the cost of more frequent flushes. It
// applies to WithDirectory only.
func WithMinFreeSpace(bytes int64) Option {
	return func(c *config) error {
		if bytes < 4<<20 {
			return errors.New("WithMinFreeSpace: the floor must be at least 4 MiB")
		}
		c.minFree = bytes
		return nil
	}
}

// DefaultStaleLimit is how long an Engine on a shared store keeps serving
// token-plane calls after losing the store's change feed (see
// WithStaleLimit).
const DefaultStaleLimit = 30 * time.Second

// WithStaleLimit bounds how long an Engine whose store has a change feed
// (a store shared by several processes, such as etcd) keeps serving
// token-plane calls from its last state once the feed is lost (the watch
// broke and reloading fails: the cluster is unreachable, or a record
// fails its frame). Past the limit, every TokenClient call fails with
// ErrStale (503) until a reload succeeds; Engine.FeedLost tells since
// when. The default is DefaultStaleLimit; 0 refuses them as soon as the
// feed is lost.
//
// Token-plane calls are refused because their answer depends on changes
// made elsewhere that a cut-off Engine cannot see: a token revoked, a
// generator rotated or deactivated (which kills every token it issued),
// an allow-list narrowed, a key disabled. Trusted calls (the Engine's own
// methods) keep serving from the last state for as long as the outage
// lasts: their caller is the application itself, already authenticated,
// and an etcd outage should not stop it from decrypting its data; what a
// cut-off Engine may miss for them is a key or version disabled, or a
// rotation, elsewhere. Changes fail while the store is unreachable
// anyway. The limit is read on the Engine's clock, from the moment the
// Engine learns the feed is lost (etcdstore notices a silent cluster
// within two of its watch checks; see etcdstore.WithWatchCheck). Badger,
// owned by one process, has no feed: the option changes nothing there.
func WithStaleLimit(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return errors.New("WithStaleLimit: negative limit")
		}
		c.stale = d
		return nil
	}
}
