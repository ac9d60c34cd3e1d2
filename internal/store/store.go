// Package store is the embedded default store.Store: the Engine's state
// in Badger v4, in a directory or in memory.
//
// Use [Open] with a directory (or InMemory); the Engine then calls
// [Store.Load] once and [Store.Apply] for each change. A change is part of
// one Badger transaction, synced to disk before Apply returns, so it is
// either wholly present after a crash or wholly absent. In a directory,
// changes that arrive while a commit is under way are committed together
// as one transaction (group commit, see group.go), sharing its syncs; each
// is still checked alone against the committed state, so a change's
// expectations (the revisions it read, see package store) are checked and
// written atomically. Revisions are Badger's commit timestamps; changes
// committed together share one. [Store.Update] is the lower-level transaction the tests and
// the schema record use.
//
// # Schema
//
// The records and their keys are package store's (k/, v/, g/, a/, n/),
// framed by store.Encode; this package adds its schema version under
// m/schema (this build: 2, see SchemaVersion). Anything that fails the frame is ErrCorrupt.
//
// # Integrity
//
// Beside Badger's files the store keeps pocketkms.integrity: a digest of
// its whole content, advanced with every commit (pending before, committed
// after). Open recomputes the digest and refuses, with ErrCorrupt, content
// that matches neither — which is what Badger leaves when damage to its
// write-ahead log or manifest silently drops committed transactions.
// The file holds two fixed slots, written in place alternately (each
// write into the slot not holding the newest record, then one
// fdatasync), and kept open while the store is; the newest valid slot
// is the record. A crash tears at most the slot being written, so one bad
// slot does not fail Open while the other matches the content (a
// read-write Open repairs it); both bad is ErrCorrupt. A file of the
// single-record format of earlier builds is read, and converted by a
// read-write Open (integrity.go says why every crash point opens); those
// builds refuse a converted directory (ErrCorrupt).
// Tables are checksummed before Badger opens them, and a failed commit
// leaves the store refusing writes (ErrBroken) until the process restarts.
//
// # Failed commits
//
// Update's error says what happened to the change. Validation errors,
// ErrNoSpace, ErrClosed and a refused integrity record mean nothing was
// written. ErrUncertain (with ErrBroken) means Badger failed part-way: the
// change may be on disk, and the caller must not undo side effects that
// only make sense if it is absent (such as destroying new key material).
// A failure to record the digest after Badger committed is not an error:
// the change stands, the pending digest on disk already matches it, and
// the next commit rewrites the record whole; it is logged.
//
// # Root-key rotation
//
// During a rotation of the backend's root key the directory holds
// pocketkms.rotation, which decides which check value opens it (see
// [Store.BeginRotation], [Store.SwitchRotation], [Store.EndRotation],
// [Store.AbortRotation]).
//
// # Limitations
//
// Commits are serialised (the digest follows them in order), and each
// costs two extra small in-place writes of the integrity record, each
// with its own fdatasync, beside Badger's own syncs; changes that arrive
// together share one commit, so a single writer pays them all while
// several writers share them. Badger memory-maps its
// write-ahead log: on a file system that runs completely full the kernel
// may kill the process with SIGBUS instead of returning an error. On Linux
// the store therefore refuses changes (ErrNoSpace) once less than
// MinFreeBytes are free; another process filling the disk in between can
// still beat that check. Nothing acknowledged is lost either way.
//
// # Security
//
// The store holds key handles as the Engine gives them: with a directory,
// sealed under each key's shred key (package internal/shred, files in
// the pocketkms.shred subdirectory of the same directory); otherwise as
// the backend made them, which must be safe to store. Nothing else secret
// is written. Badger keeps deleted and overwritten values in its tables
// and logs until compaction happens to drop them, which the store does
// not force: destruction relies on the shred key's deletion instead. A
// backup of the directory must include pocketkms.shred.
package store

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	kstore "github.com/pocketkms/kms/store"
)

// MinFreeBytes is the default free-space floor: below it Update refuses
// changes with ErrNoSpace (Linux), keeping room for Badger's memtables and
// log files.
const MinFreeBytes = 32 << 20

// SmallestFloor is the lowest floor Options.MinFree takes. Below
// MinFreeBytes, Open sizes Badger's files down with the floor (see
// sizesFor), so that what Badger may write between two checks always fits.
const SmallestFloor = 4 << 20

// sizes are the Badger file sizes a floor allows.
type sizes struct {
	memTable, baseTable, baseLevel, vlogFile int64
}

// sizesFor returns Badger's file sizes under a free-space floor. At the
// default floor they are the sizes the store has always used. Below it,
// every file Badger writes through a memory map (the write-ahead log of a
// memtable, mapped at twice the memtable's size, and the tables a flush or
// a compaction writes) shrinks with the floor, so that a write-ahead log,
// a flushed memtable and a compaction's output together stay under it.
func sizesFor(floor int64) sizes {
	if floor >= MinFreeBytes {
		return sizes{memTable: 4 << 20, baseTable: 1 << 20, baseLevel: 4 << 20, vlogFile: 16 << 20}
	}
	z := sizes{memTable: max(1<<20, floor/8), baseTable: max(256<<10, floor/32)}
	z.baseLevel = 4 * z.baseTable
	z.vlogFile = max(1<<20, floor/4)
	return z
}

// SchemaVersion is the schema this build writes and reads. Schema 2 is
// schema 1 with key and version records and name entries written in the
// binary codec (store codec 2; records in codec 1 are still read), and
// schema 3 is schema 2 with usage and history records written in it too. Open moves a
// schema-1 or schema-2 directory to 3 before any record is written, so an
// older build refuses it with ErrSchemaTooNew instead of failing on the
// first binary record it cannot read.
const SchemaVersion = 3

const (
	prefixName = kstore.PrefixName
	prefixGen  = kstore.PrefixGenerator
	prefixACL  = kstore.PrefixACL
	keySchema  = "m/schema"
)

// Options configures Open.
type Options struct {
	// Dir is the database directory. Ignored when InMemory is set.
	Dir string
	// InMemory keeps everything in memory (nothing survives Close).
	InMemory bool
	// Logger receives Badger's log lines; nil discards them.
	Logger *slog.Logger
	// ReadOnly opens the directory read-only.
	ReadOnly bool
	// MinFree is the free-space floor in bytes (Linux): below it Update
	// refuses changes with ErrNoSpace. 0 means MinFreeBytes; the lowest
	// is SmallestFloor. A floor below MinFreeBytes also sizes Badger's
	// files down (smaller memtables and tables), so a small volume can
	// hold a store, at the cost of more frequent flushes.
	MinFree int64
	// Check is the backend's check value (backend.CheckValuer), or nil.
	// A directory whose check file holds another value is refused with
	// ErrCheckMismatch before anything in it is touched.
	Check []byte
}

// Store is an open database. It is safe for concurrent use.
type Store struct {
	db  *badger.DB
	dir string // "" in memory: no integrity record
	// mu serialises commits so the integrity digest follows them in order.
	mu     sync.Mutex
	digest digest
	// broken is set when Badger failed to commit (disk full, I/O error).
	// Badger v4 leaves its memtable unusable then, and its next write
	// would end the process (log.Fatal); so every later write and Close
	// stop short of Badger, which keeps its directory lock until the
	// process exits.
	broken atomic.Bool
	log    *slog.Logger
	// held is the key of this store in openDirs ("" in memory).
	held string
	// minFree is the free-space floor (Options.MinFree).
	minFree int64
	// check is Options.Check; checked is true once the directory's check
	// file holds it.
	check   []byte
	checked bool
	// readOnly is Options.ReadOnly: Close writes nothing, not even a probe.
	readOnly bool
	// rotation is the phase of a root-key rotation under way, and next
	// the check value it moves to while in RotationReseal (rotation.go).
	rotation string
	next     []byte
	// pre is what Open's integrity scan read, for the first Load; nil
	// once used, or once a commit changed a record (under mu).
	pre *preload
	// group queues the changes of a directory for group commit (see
	// group.go).
	group grouper
	// rec is the integrity record file, open for writing in place (nil
	// in memory and read-only; see integrity.go).
	rec *recordFile
}

// recordIntegrity writes the integrity record around commits; tests
// replace it to fail a write on cue.
var recordIntegrity = (*Store).writeRecord

// openDirs holds the absolute directory of every store this process has
// opened and not closed (a broken store is never closed), so that a second
// Open says why instead of failing on Badger's lock file.
var openDirs sync.Map // string → *Store

// Open opens (creating if needed) the database and checks its schema.
func Open(o Options) (*Store, error) {
	if !o.InMemory && o.Dir == "" {
		return nil, errors.New("store: no directory given")
	}
	dir := o.Dir
	if o.InMemory {
		dir = ""
	}
	var checked bool
	var rotation string
	if !o.InMemory && o.Check != nil {
		var err error
		if checked, rotation, err = verifyCheck(dir, o.Check); err != nil {
			return nil, err
		}
	}
	var held string
	if !o.InMemory {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, fmt.Errorf("store: directory: %w", err)
		}
		if prev, loaded := openDirs.LoadOrStore(abs, (*Store)(nil)); loaded {
			if st, _ := prev.(*Store); st != nil && st.broken.Load() {
				return nil, fmt.Errorf("%w: it is held by a store that failed earlier (%w)", ErrInUse, ErrBroken)
			}
			return nil, ErrInUse
		}
		held = abs
	}
	s, err := open(o, dir)
	if err != nil {
		if held != "" {
			openDirs.Delete(held)
		}
		return nil, err
	}
	if held != "" {
		s.held = held
		openDirs.Store(held, s)
	}
	if !o.InMemory && !o.ReadOnly {
		s.check, s.checked, s.rotation = o.Check, checked, rotation
		if rotation == RotationReseal {
			m, err := readRotation(dir)
			if err == nil && m != nil {
				s.next, _ = hex.DecodeString(m.To)
			}
		}
	}
	return s, nil
}

func open(o Options, dir string) (*Store, error) {
	floor := o.MinFree
	if floor == 0 {
		floor = MinFreeBytes
	}
	if floor < SmallestFloor {
		return nil, fmt.Errorf("store: free-space floor %d bytes is below %d", floor, SmallestFloor)
	}
	z := sizesFor(floor)
	if !o.InMemory && o.ReadOnly {
		unlock, err := lockShared(dir)
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	if !o.InMemory {
		if err := precheck(dir, o.ReadOnly); err != nil {
			return nil, err
		}
	}
	bo := badger.DefaultOptions(dir).
		WithInMemory(o.InMemory).
		WithReadOnly(o.ReadOnly).
		WithLogger(slogAdapter{l: o.Logger}).
		WithSyncWrites(true).
		WithMetricsEnabled(false).
		WithNumGoroutines(2).
		WithMemTableSize(z.memTable).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBaseTableSize(z.baseTable).
		WithBaseLevelSize(z.baseLevel).
		WithValueLogFileSize(z.vlogFile).
		WithValueThreshold(64 << 10).
		WithNumCompactors(2).
		WithCompression(options.None).
		WithBlockCacheSize(0).
		WithIndexCacheSize(0).
		WithChecksumVerificationMode(options.OnTableAndBlockRead).
		WithVerifyValueChecksum(true)
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{db: db, log: log, minFree: floor, readOnly: o.ReadOnly}
	if !o.InMemory {
		s.dir = dir
		if err := s.checkIntegrity(o.ReadOnly); err != nil {
			db.Close()
			return nil, err
		}
	}
	if err := s.checkSchema(o.ReadOnly); err != nil {
		db.Close()
		s.closeRecord()
		return nil, err
	}
	return s, nil
}

func (s *Store) checkSchema(readOnly bool) error {
	var v int
	err := s.db.View(func(txn *badger.Txn) error { return getRecord(txn, keySchema, &v) })
	switch {
	case errors.Is(err, ErrNotFound):
		if readOnly {
			return nil
		}
		return s.Update(func(tx *Txn) error { return tx.put(keySchema, SchemaVersion) })
	case err != nil:
		return err
	case v > SchemaVersion:
		return fmt.Errorf("%w: directory has schema %d, this build reads up to %d", ErrSchemaTooNew, v, SchemaVersion)
	case v < 1:
		return fmt.Errorf("%w: schema version %d", ErrCorrupt, v)
	case v < SchemaVersion && !readOnly:
		// Schemas 1 and 2 to 3 change no record: what is stored reads as
		// it is, and records are rewritten in the newer codec as they
		// change.
		return s.Update(func(tx *Txn) error { return tx.put(keySchema, SchemaVersion) })
	}
	// Future migrations run here, each in its own transaction that also
	// bumps m/schema.
	return nil
}

// Close closes the database. It is idempotent. A broken store is left to
// the operating system, since closing it would make Badger write again:
// Close then returns ErrBroken, and the directory stays locked until the
// process exits.
func (s *Store) Close() error {
	if s.db.IsClosed() {
		return nil
	}
	if s.broken.Load() {
		return fmt.Errorf("%w: closed without releasing the directory", ErrBroken)
	}
	// Badger's Close flushes the memtable into a new table file and retries
	// for ever if the directory no longer takes new files (made read-only
	// under a running store). Every commit is already in its write-ahead
	// log, so leave the flush to the next open rather than hang.
	if s.dir != "" && !s.readOnly && !writable(s.dir) {
		s.broken.Store(true)
		return fmt.Errorf("%w: directory not writable; closed without flushing (the log holds every commit)", ErrBroken)
	}
	err := s.db.Close()
	// Under mu: a commit that got past its closed check finishes its
	// record writes first; later ones see the database closed.
	s.mu.Lock()
	s.closeRecord()
	s.mu.Unlock()
	if s.held != "" {
		openDirs.Delete(s.held)
	}
	if err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Load reads every record, grouped by key (see kstore.Assembler). A record
// that fails its frame fails Load with ErrCorrupt. Revisions are Badger's
// commit timestamps.
func (s *Store) Load(ctx context.Context) (*kstore.Contents, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.db.IsClosed() {
		return nil, ErrClosed
	}
	if s.broken.Load() {
		// Badger's memtable is gone after a failed commit: reading it
		// would panic. The next open reads the truth.
		return nil, fmt.Errorf("store: load: %w", ErrBroken)
	}
	s.mu.Lock()
	pre := s.pre
	s.pre = nil
	s.mu.Unlock()
	if pre != nil {
		// Read by Open's integrity scan, and no record changed since.
		if pre.err != nil {
			return nil, fmt.Errorf("store: load: %w", pre.err)
		}
		pre.c.Rev = int64(s.db.MaxVersion())
		return pre.c, nil
	}
	var a kstore.Assembler
	var rev int64
	err := s.db.View(func(txn *badger.Txn) error {
		for _, p := range []string{kstore.PrefixKey, kstore.PrefixVersion, kstore.PrefixGenerator, kstore.PrefixACL, kstore.PrefixName} {
			if err := scan(txn, p, func(key []byte, version uint64, val []byte) error {
				r, err := kstore.Decode(string(key), val)
				if err != nil {
					return err
				}
				a.Add(r, int64(version))
				return nil
			}); err != nil {
				return err
			}
		}
		rev = int64(s.db.MaxVersion())
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: load: %w", err)
	}
	c, err := a.Contents(rev)
	if err != nil {
		return nil, fmt.Errorf("store: load: %w", err)
	}
	return c, nil
}

// Get reads one record by its store key and the revision it was written
// at; a record that does not exist is ErrNotFound.
func (s *Store) Get(key string) (kstore.Record, int64, error) {
	if s.db.IsClosed() {
		return nil, 0, ErrClosed
	}
	if s.broken.Load() {
		return nil, 0, fmt.Errorf("store: get: %w", ErrBroken)
	}
	var r kstore.Record
	var rev int64
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		rev = int64(item.Version())
		return item.Value(func(val []byte) error {
			r, err = kstore.Decode(key, val)
			return err
		})
	})
	if err != nil {
		return nil, 0, err
	}
	return r, rev, nil
}

func scan(txn *badger.Txn, prefix string, fn func(key []byte, version uint64, val []byte) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix), PrefetchValues: false})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		key := item.KeyCopy(nil)
		if err := item.Value(func(val []byte) error { return fn(key, item.Version(), val) }); err != nil {
			return err
		}
	}
	return nil
}

// get reads key's committed item. In a group commit, reading a key that
// an earlier change of the group writes ends the change (errClash): it is
// run again in the next group. A buffered transaction does not see its
// own writes; no caller reads a key after writing it.
func (t *Txn) get(key string) (*badger.Item, error) {
	if t.batch != nil && t.batch[key] {
		t.clash = true
		return nil, errClash
	}
	return t.txn.Get([]byte(key))
}

// getRecord is getRecord through t.get.
func (t *Txn) getRecord(key string, v any) error {
	item, err := t.get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	return item.Value(func(val []byte) error { return decode([]byte(key), val, v) })
}

func getRecord(txn *badger.Txn, key string, v any) error {
	item, err := txn.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	return item.Value(func(val []byte) error { return decode([]byte(key), val, v) })
}

// Update runs fn in one read-write transaction and commits it synced. If
// fn fails nothing is written. If Badger fails to commit, the store is
// broken: this and every later Update fail with ErrBroken.
func (s *Store) Update(fn func(tx *Txn) error) error {
	_, err := s.update(fn)
	return err
}

// update is Update, returning the revision of the commit when the store
// has a directory (0 in memory, where the caller finds it).
func (s *Store) update(fn func(tx *Txn) error) (int64, error) {
	if s.db.IsClosed() {
		return 0, ErrClosed
	}
	if s.broken.Load() {
		return 0, ErrBroken
	}
	if s.dir != "" {
		// Badger writes its log through a memory map: on a file system that
		// is full, that write can kill the process (SIGBUS) instead of
		// failing. Refuse the change while there is still room to refuse.
		if free, ok := freeBytes(s.dir); ok && free < uint64(s.minFree) {
			return 0, fmt.Errorf("%w: %d bytes free, need %d", ErrNoSpace, free, s.minFree)
		}
		return s.updateGrouped(fn)
	}
	return 0, s.updateSerial(fn)
}

// updateSerial is Update in memory: one Badger transaction per change,
// nothing to sync.
func (s *Store) updateSerial(fn func(tx *Txn) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var fnErr error
	err := s.db.Update(func(txn *badger.Txn) error {
		fnErr = fn(&Txn{txn: txn})
		return fnErr
	})
	switch {
	case err == nil:
	case fnErr != nil && errors.Is(err, fnErr):
		return err
	case errors.Is(err, badger.ErrDBClosed):
		return ErrClosed
	case errors.Is(err, badger.ErrConflict), errors.Is(err, badger.ErrTxnTooBig):
		return err
	default:
		s.broken.Store(true)
		return fmt.Errorf("%w: %w: %w", ErrBroken, ErrUncertain, err)
	}
	return nil
}

// Apply commits c in one synced transaction if its expectations hold (see
// kstore.Store): it fails with kstore.ErrConflict, writing nothing, when a
// record's revision is not the one expected. Commits are serialised, so
// the check and the write are atomic. Errors are Update's otherwise.
func (s *Store) Apply(ctx context.Context, c *kstore.Change) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var probe string
	grouped, err := s.update(func(tx *Txn) error {
		for key, want := range c.Expect {
			var got int64
			item, err := tx.get(key)
			switch {
			case errors.Is(err, badger.ErrKeyNotFound):
			case err != nil:
				return err
			default:
				got = int64(item.Version())
			}
			if got != want {
				return &kstore.ConflictError{Key: key}
			}
		}
		for _, key := range c.Deletes {
			if err := tx.delete(key); err != nil {
				return err
			}
		}
		for _, r := range c.Puts {
			key, val, err := kstore.Encode(r)
			if err != nil {
				return err
			}
			if err := tx.set(key, val); err != nil {
				return err
			}
			probe = key
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if grouped != 0 {
		return grouped, nil
	}
	// Commits are serialised and this one is done: the record it wrote
	// carries its commit timestamp, which is the change's revision.
	var rev int64
	err = s.db.View(func(txn *badger.Txn) error {
		if probe == "" {
			rev = int64(s.db.MaxVersion())
			return nil
		}
		item, err := txn.Get([]byte(probe))
		if err != nil {
			return err
		}
		rev = int64(item.Version())
		return nil
	})
	if err != nil {
		// Committed: report it with the best revision known.
		return int64(s.db.MaxVersion()), nil
	}
	return rev, nil
}

// Txn is a read-write transaction passed to Update's function.
type Txn struct {
	txn *badger.Txn
	// In a group commit (see group.go) writes are buffered until the
	// function succeeds; batch holds the keys written by the group's
	// earlier changes, and clash is set when this one reads one of them.
	buffered bool
	writes   []bufWrite
	batch    map[string]bool
	clash    bool
	// records is true once the transaction wrote or deleted a record
	// (anything but the store's own m/ keys).
	records bool
	d       *txnDelta         // nil in memory
	last    map[string][]byte // latest value written per key in this txn
}

func (t *Txn) put(key string, v any) error {
	b, err := encode([]byte(key), v)
	if err != nil {
		return err
	}
	return t.set(key, b)
}

func (t *Txn) set(key string, b []byte) error {
	t.records = t.records || isRecordKey([]byte(key))
	if err := t.change(key, b); err != nil {
		return err
	}
	if t.buffered {
		t.writes = append(t.writes, bufWrite{key: key, val: b})
		return nil
	}
	return t.txn.Set([]byte(key), b)
}

func (t *Txn) delete(key string) error {
	t.records = t.records || isRecordKey([]byte(key))
	if err := t.change(key, nil); err != nil {
		return err
	}
	if t.buffered {
		t.writes = append(t.writes, bufWrite{key: key, del: true})
		return nil
	}
	return t.txn.Delete([]byte(key))
}

// PutKey writes a key record.
func (t *Txn) PutKey(r *KeyRecord) error { return t.put(keyKey(r.Tag), r) }

// PutVersion writes a version record.
func (t *Txn) PutVersion(r *VersionRecord) error { return t.put(versionKey(r.Tag, r.Version), r) }

// PutGenerator writes a token generator record.
func (t *Txn) PutGenerator(r *GeneratorRecord) error { return t.put(prefixGen+r.Tag, r) }

// PutACL writes an IP allow-list record.
func (t *Txn) PutACL(r *ACLRecord) error { return t.put(prefixACL+r.Tag, r) }

// ClaimName records that tag owns the lower-cased name. It fails with
// ErrNameTaken when another tag owns it.
func (t *Txn) ClaimName(name, tag string) error {
	key := prefixName + strings.ToLower(name)
	var owner string
	switch err := t.getRecord(key, &owner); {
	case err == nil && owner != tag:
		return ErrNameTaken
	case err == nil:
		return nil
	case !errors.Is(err, ErrNotFound):
		return err
	}
	return t.put(key, tag)
}

// ReleaseName drops the name index entry of name.
func (t *Txn) ReleaseName(name string) error {
	return t.delete(prefixName + strings.ToLower(name))
}

// DeleteKey removes a key record, the given versions' records, and the
// key's generator and ACL records.
func (t *Txn) DeleteKey(tag string, versions []uint32) error {
	for _, v := range versions {
		if err := t.delete(versionKey(tag, v)); err != nil {
			return err
		}
	}
	for _, k := range []string{prefixGen + tag, prefixACL + tag, keyKey(tag)} {
		if err := t.delete(k); err != nil {
			return err
		}
	}
	return nil
}

// writable reports whether a file can be created in dir.
func writable(dir string) bool {
	f, err := os.CreateTemp(dir, ".pocketkms-probe-*")
	if err != nil {
		return false
	}
	f.Close()
	os.Remove(f.Name())
	return true
}
