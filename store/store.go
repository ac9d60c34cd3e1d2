// Package store is the interface between the pocketkms Engine and the
// place its state lives: keys, versions (with the backend's handles),
// token generators, IP allow-lists and the name index.
//
// An implementation is small: [Store.Load] reads everything once when the
// Engine opens, [Store.Apply] commits one [Change] atomically and durably,
// and stores shared by several processes also implement [Watcher] so that
// every Engine learns of changes made by the others. The Engine's hot path
// never calls the store: it serves from snapshots built from Load and
// kept current by its own commits and the change feed.
//
// The embedded default is Badger v4 (internal/store, opened by
// kms.WithDirectory or in memory); kms.WithStore plugs in any other
// implementation.
//
// # Schema
//
// Records live under ASCII keys with a one-letter prefix (see [Record]):
//
//	k/<keyTag>               KeyRecord
//	v/<keyTag>/<%010d ver>   VersionRecord
//	g/<keyTag>               GeneratorRecord (token generator)
//	a/<keyTag>               ACLRecord (IP allow-list)
//	n/<lower-case name>      NameRecord: the tag owning a name
//	h/<keyTag>/<%020d seq>   HistoryRecord: one management change
//	u/<keyTag>               UsageRecord: usage counters as last flushed
//
// History and usage records are auxiliary: Load skips them, the Engine
// reads them on demand through [Ranger], and a store that does not
// implement Ranger keeps them without the Engine ever reading them back.
//
// Values are framed by [Encode]: 'P', codec version, payload, CRC-32C
// over the record key and the frame. The payload of key, version, usage
// and history records and name entries is binary (codec 2, see
// binary.go), of the others JSON (codec 1); [Decode] reads both, so
// records written before codec 2 existed read as they did. A build older
// than codec 2 (or, for usage and history records, older than their move
// to it) cannot read such a record (ErrCorrupt): every process sharing a
// store must run a build that has it. Anything that fails [Decode] is
// ErrCorrupt. An implementation may keep its own bookkeeping records
// beside these (Badger keeps its schema version under m/), never inside
// the prefixes above.
//
// # Revisions and optimistic concurrency
//
// Every committed change has a revision, a positive number that grows
// with every commit of the store (a store may commit concurrent changes
// together, as Badger's group commit does: they then share one). Load
// reports the revision of every key
// record; Apply reports the revision of the change it committed. A Change
// carries expectations: "the record under this key was last written at
// revision R" (0: "the record does not exist"). Apply commits only if every
// expectation holds, and otherwise fails with ErrConflict and writes
// nothing. The Engine rewrites a key's KeyRecord in every change to the key
// and expects the revision it last saw, so two processes changing one key
// at once cannot lose an update: one wins, the other gets ErrConflict.
// Creating a key expects its name entry and its key record to be absent,
// which makes names and tags unique wherever the store is shared.
//
// # Contract
//
//   - Apply is atomic (all of a Change or nothing) and durable before it
//     returns nil. It fails with ErrConflict when an expectation does not
//     hold, ErrClosed after Close, and ErrUncertain (possibly with other
//     errors) when it cannot tell whether the change landed. Any other
//     error means nothing was written.
//   - Load returns every record or an error; a record that fails its
//     frame is ErrCorrupt, never skipped.
//   - A Store is safe for concurrent use. Close is idempotent.
//
// # Security
//
// The store holds key handles as the backend made them: sealed material
// or references to objects in a token. Nothing else secret is written.
package store

import "context"

// Store holds the Engine's persistent state. See the package documentation
// for the contract.
type Store interface {
	// Load reads every record once. Records that fail their frame fail
	// Load with ErrCorrupt.
	Load(ctx context.Context) (*Contents, error)
	// Apply commits c atomically and durably if its expectations hold,
	// and returns the revision of the commit. A change with expectations
	// but nothing to write commits nothing: it only checks them (and
	// returns the store's current revision). Errors: ErrConflict (an
	// expectation failed; nothing written), ErrClosed, ErrUncertain (the
	// change may have landed); any other error means nothing was written.
	Apply(ctx context.Context, c *Change) (int64, error)
	// Close releases the store. It is idempotent.
	Close() error
}

// Watcher is implemented by stores that other processes write to. Badger,
// owned by one process, never reports changes and does not implement it.
type Watcher interface {
	// Watch calls fn with every change committed after revision after,
	// by any writer (the caller included), one commit at a time and in
	// commit order, until ctx ends or the feed fails. It returns ctx's
	// error when ctx ends, an error matching ErrResync when changes after
	// `after` can no longer be delivered (compacted history, a broken
	// stream), and other errors for other failures. fn runs on one
	// goroutine; it must not call Watch.
	Watch(ctx context.Context, after int64, fn func(Commit)) error
}

// Ranger is implemented by stores that read a range of records on demand,
// beside Load: the Engine lists key history (kms.Engine.ListKeyHistory)
// and reads usage counters at open through it. Badger, store/etcd and
// storetest.Memory implement it.
type Ranger interface {
	// Range returns the records whose store keys k satisfy from <= k < to,
	// in descending key order when desc is set (else ascending), at most
	// limit of them (limit <= 0: no bound). A record that fails its frame
	// is ErrCorrupt.
	Range(ctx context.Context, from, to string, limit int, desc bool) ([]Record, error)
}

// Commit is one committed change as a Watcher reports it.
type Commit struct {
	// Rev is the revision of the commit.
	Rev int64
	// Puts are the records written, Deletes the keys of records removed.
	Puts    []Record
	Deletes []string
}

// Change is one atomic change: records to write, record keys to delete,
// and the expectations that must hold for it to commit.
type Change struct {
	Puts    []Record
	Deletes []string
	// Expect maps record keys to the revision they were last written at;
	// 0 means the record must not exist.
	Expect map[string]int64
}

// Put adds records to write.
func (c *Change) Put(rs ...Record) *Change {
	c.Puts = append(c.Puts, rs...)
	return c
}

// Delete adds record keys to remove.
func (c *Change) Delete(keys ...string) *Change {
	c.Deletes = append(c.Deletes, keys...)
	return c
}

// Expecting adds an expectation: the record under key was last written at
// rev (0: it does not exist).
func (c *Change) Expecting(key string, rev int64) *Change {
	if c.Expect == nil {
		c.Expect = make(map[string]int64, 2)
	}
	c.Expect[key] = rev
	return c
}

// Contents is everything Load read.
type Contents struct {
	// Rev is the store's revision when it was read: a Watcher resumes
	// after it.
	Rev int64
	// Keys holds every key with its records, in no particular order.
	Keys []*KeyData
	// Names maps lower-case names to the key tags owning them.
	Names map[string]string
}

// KeyData is one key's records.
type KeyData struct {
	// Rev is the revision its KeyRecord was last written at.
	Rev int64
	Key KeyRecord
	// Versions in ascending version order.
	Versions  []VersionRecord
	Generator *GeneratorRecord
	ACL       *ACLRecord
}
