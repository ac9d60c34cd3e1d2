// Package shred keeps the per-key keys that make destroying a key
// irreversible from the Engine's data directory: crypto-shredding.
//
// Start with [Open] on the Badger directory. The Engine calls
// [Keys.Create] before the commit that first names a key, seals every
// backend handle it stores for that key with [Key.Wrap], opens them with
// [Key.Unwrap] when it loads the key ([Keys.Get]), and calls [Keys.Delete]
// when it destroys the key. Once Delete has overwritten the key's slot
// with zeros and synced it, every copy of its wrapped handles that Badger
// still keeps (old tables, value logs, write-ahead logs), and every backup
// taken from then on, opens under nothing: not even the backend's root
// key reaches the sealed material inside.
//
// # The slot file
//
// All keys live in one file, <dir>/pocketkms.shred/keys, of fixed-size
// slots of 128 bytes. A slot is all zeros (free) or
//
//	"PKSS" ‖ 0x01 ‖ kind ‖ 0x0000 ‖ uint64be(seq) ‖ tag(64) ‖ key(32) ‖ zeros(12) ‖ uint32be(CRC-32C of all before it)
//
// where kind is 1 for a key and 2 for a next key (rotate.go) and seq a
// sequence number, one more than the highest in the file at each write.
// The checksum covers the tag and kind, so a slot is the key of the tag
// and kind it names or nothing: a damaged slot's bytes are never used.
//
// [Open] reads the whole file in one read and keeps an index (tag to
// slot) with every key in memory; it writes nothing. [Keys.Create] takes
// a free slot, writes it in place (pwrite) and syncs it with one
// fdatasync before it returns; creations running at once share their
// syncs. When no slot is free the file grows by a quarter (64 to 8,192
// slots), written as zeros and synced before any of them is used, so a
// key's write is always an overwrite in place: its sync changes no size
// and no metadata. [Keys.Delete] overwrites the key's slots (its key, its
// next key, any leftover copy) with zeros and syncs them before it
// returns; the slots are then reused. The directory is made, and synced
// into its parent, by the first write.
//
// # Crashes
//
// Reasoned slot by slot, with a write torn at any byte:
//
//   - A Create torn by a crash leaves a damaged slot (or a valid one, or
//     zeros) for a tag that no record names: Create returns before the
//     Engine's commit that first names the key. A damaged slot therefore
//     never fails Open. One that reads as a key's slot for a well-formed
//     tag is kept aside: [Keys.Get] of that tag reports [ErrCorrupt]
//     (unless a valid slot of the same tag and kind exists), so a key
//     that Badger names and whose slot is damaged is refused by name, as
//     is one whose slot is missing (Get's ok is false); [Keys.Prune]
//     zeroes it once no record names the tag. Any other damaged slot (a
//     next key's, which only a rotation's Next that never returned can
//     leave, since no record uses a next key before Next returns, or one
//     naming no well-formed tag) is free.
//   - Duplicates: two valid slots of one tag and kind exist only between
//     writing a slot's successor and zeroing the old one (Promote,
//     below). The highest sequence number wins (then the lowest slot):
//     the successor, which was synced before its predecessor was zeroed.
//     The loser is zeroed by Delete, Promote or Prune.
//   - [Keys.Promote] writes the next key into a new slot as the key
//     (synced) and only then zeroes the old key's and the next key's
//     slots (synced): a crash in between leaves the old key and the new
//     one, and the new one wins; it never overwrites the only copy of a
//     key in place, so no torn write can lose the key that the handles
//     under the new root key need.
//   - Growth: a crash while growing leaves zeros (free slots), perhaps a
//     partial slot at the end, which is ignored and overwritten by the
//     next growth.
//
// # The former layout, and migration
//
// Directories written before the slot file hold one file per key,
// <tag> and <tag>.next, each "PKSK" ‖ 0x01 ‖ key(32) ‖
// uint32be(CRC-32C("PKSK" ‖ 0x01 ‖ tag ‖ key)). Open reads them too (in
// parallel, once), a valid slot winning over a file of the same tag and
// kind. [Keys.Migrate], which the Engine calls after Open (never a
// read-only reader), moves them: every file's key is written into a slot
// and synced, then each file is overwritten with zeros and synced (from
// 64 files on, with one sync(2) for all of them instead of an fsync
// each), unlinked, and the directory synced. A crash at any step leaves every
// key readable: from its file until its slot is synced, from its slot
// afterwards (a zeroed file with a slot is a leftover, not damage). A
// damaged file is not moved: Get reports it as before, and Prune removes
// it once no record names it. Until a migration completes (it is retried
// at each open), Delete, Promote and DropNext also shred the files of
// the tag. A build from before the slot file does not read it: once
// migrated, a directory's keys are refused (as missing) by such a build.
//
// # Wrapped handles
//
//	"pkw1" ‖ nonce(12) ‖ AES-256-GCM(key, nonce, handle, ad)
//	ad = "pocketkms/handle/v1" ‖ 0 ‖ tag ‖ 0 ‖ purpose ‖ 0 ‖ uint32be(version)
//
// The nonce is random (crypto/rand). The associated data binds a wrapped
// handle to the material it names: it opens for no other key, purpose or
// version ([ErrUnwrap], one error for every cause).
//
// # Concurrency
//
// [Keys] and [Key] are safe for concurrent use. One Keys writes the slot
// file of a directory at a time (the Engine holds Badger's directory lock
// around it); a second Keys on the same directory sees the first one's
// writes only when it is opened after them.
//
// # Security
//
// A Key (and Keys) prints as a redacted description under every fmt verb,
// as JSON and through log/slog; no error carries key bytes or a handle.
// A key's bytes are cleared when it is deleted or the Keys closed;
// clearing is best effort (the AES key schedule built for each call, and
// any copy the runtime made, are left to the garbage collector). The
// buffer Open reads the file into is cleared once indexed.
//
// # Limitations
//
// Shredding is as good as the file system's forgetting. The zeros written
// over a slot reach the disk before Delete returns, but a copy-on-write
// file system (btrfs, ZFS), a file-system or volume snapshot, a journal
// that logs data, or an SSD's remapped blocks can keep the old bytes; so
// does any backup of the directory taken before the destruction. A backup
// of the directory's files must copy this directory together with
// Badger's files: without it the keys it names do not open.
package shred

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/pocketkms/kms/internal/atomicfile"
	"github.com/pocketkms/kms/internal/keytag"
)

// DirName is the subdirectory of the Badger directory that holds the keys.
const DirName = "pocketkms.shred"

// KeySize is the size in bytes of a shred key (AES-256).
const KeySize = 32

const (
	wrapPrefix = "pkw1"
	wrapLabel  = "pocketkms/handle/v1"
	nonceSize  = 12
	tagSize    = 16
	// WrapOverhead is the size a wrapped handle adds to the handle.
	WrapOverhead = len(wrapPrefix) + nonceSize + tagSize
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// IsWrapped reports whether a stored handle is in the wrapped form (starts
// with "pkw1"); anything else is a handle as the backend made it.
func IsWrapped(h []byte) bool {
	return len(h) >= len(wrapPrefix) && string(h[:len(wrapPrefix)]) == wrapPrefix
}

// Keys is the set of shred keys of one directory. Create it with Open.
type Keys struct {
	dir string // <badger dir>/pocketkms.shred

	mu    sync.Mutex
	keys  map[string]*Key // every key, by tag
	nexts map[string]*Key // every next key (rotate.go)
	// extra holds, by tag, slots besides the ones in use: superseded
	// duplicates and damaged slots (see loadSlots).
	extra map[string][]slotRef
	// damaged holds the tags whose key (kindKey) or next key (kindNext)
	// is damaged and has no valid copy: Get and GetNext report them.
	damaged map[string]byte
	// legacy holds the names of the former layout's files present.
	legacy map[string]bool
	free   []int32 // free slots, the next one last
	nslots int32   // slots in the file
	seq    uint64  // highest sequence number written
	f      *os.File
	made   bool // dir exists
	closed bool
	// creating holds the tags whose Create is writing its slot, which it
	// does without holding mu, so that creations of different keys share
	// their syncs instead of queueing for them.
	creating map[string]bool
	syncs    syncer
}

// Open returns the shred keys kept under dir (the Badger directory): it
// reads the slot file in one read, and the files of the former layout
// (see Migrate) if any, and writes nothing; the subdirectory and the slot
// file are made by the first Create. A slot file or former-layout file
// that cannot be read fails Open; damaged content does not (see Get).
func Open(dir string) (*Keys, error) {
	if dir == "" {
		return nil, errors.New("shred: no directory given")
	}
	ks := &Keys{dir: filepath.Join(dir, DirName), keys: map[string]*Key{}, nexts: map[string]*Key{}}
	fi, err := os.Stat(ks.dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return ks, nil
	case err != nil:
		return nil, fmt.Errorf("shred: open: %w", err)
	case !fi.IsDir():
		return nil, fmt.Errorf("shred: open: %s is not a directory", DirName)
	}
	ks.made = true
	raw, err := os.ReadFile(filepath.Join(ks.dir, SlotFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("shred: open: %w", err)
	default:
		ks.loadSlots(raw)
		clear(raw)
	}
	if err := ks.loadLegacy(); err != nil {
		ks.Close()
		return nil, fmt.Errorf("shred: open: %w", err)
	}
	return ks, nil
}

// Dir returns the directory that holds the slot file.
func (ks *Keys) Dir() string { return ks.dir }

// Create makes a new random key for tag and writes it durably before it
// returns. It fails with ErrExists when tag already has one (or a
// damaged one), ErrInvalidTag for a malformed tag, ErrClosed after
// Close, and with the file system's error otherwise (then the slot is
// zeroed, best effort; the Engine also removes orphans when it opens).
func (ks *Keys) Create(tag string) (*Key, error) {
	if err := ks.lock(tag); err != nil {
		return nil, err
	}
	defer ks.mu.Unlock()
	if ks.keys[tag] != nil || ks.creating[tag] || ks.damaged[tag]&kindKey != 0 {
		return nil, ErrExists
	}
	slot, err := ks.allocLocked()
	if err != nil {
		return nil, fmt.Errorf("shred: create: %w", err)
	}
	f := ks.f
	ks.seq++
	seq := ks.seq
	if ks.creating == nil {
		ks.creating = map[string]bool{}
	}
	ks.creating[tag] = true
	var buf [slotSize]byte
	b := newKeyBytes()
	marshalSlot(buf[:], kindKey, seq, tag, b)
	// The write and its sync run without mu (the tag and the slot are
	// reserved): they are most of a creation's time.
	ks.mu.Unlock()
	_, err = f.WriteAt(buf[:], int64(slot)*slotSize)
	clear(buf[:])
	if err == nil {
		err = ks.syncs.sync(f)
	}
	ks.mu.Lock()
	delete(ks.creating, tag)
	if err == nil && ks.closed {
		// Closed meanwhile: the key is not handed out, and its slot goes.
		err = ErrClosed
	}
	if err != nil {
		clear(b)
		ks.unwriteLocked(f, slot)
		if errors.Is(err, ErrClosed) {
			return nil, err
		}
		return nil, fmt.Errorf("shred: create: %w", err)
	}
	k := newKey(tag, b)
	k.slot = slot
	ks.keys[tag] = k
	return k, nil
}

// unwriteLocked zeroes slot (written by a Create that failed) and syncs
// it, best effort, and returns it to the free slots; what a failure
// leaves there names a tag no record names, which Prune removes.
func (ks *Keys) unwriteLocked(f *os.File, slot int32) {
	if _, err := f.WriteAt(make([]byte, slotSize), int64(slot)*slotSize); err == nil {
		atomicfile.Datasync(f)
	}
	if !ks.closed {
		ks.release(slot)
	}
}

// Get returns tag's key. ok is false (and err nil) when tag has none. A
// key whose slot (or former-layout file) is damaged is ErrCorrupt.
func (ks *Keys) Get(tag string) (k *Key, ok bool, err error) {
	if err := ks.lock(tag); err != nil {
		return nil, false, err
	}
	defer ks.mu.Unlock()
	return ks.getLocked(ks.keys, tag, kindKey)
}

func (ks *Keys) getLocked(m map[string]*Key, tag string, kind byte) (*Key, bool, error) {
	if k := m[tag]; k != nil {
		return k, true, nil
	}
	if ks.damaged[tag]&kind != 0 {
		return nil, false, ErrCorrupt
	}
	return nil, false, nil
}

// Delete shreds tag's key: the Key in memory is cleared (every later Wrap
// and Unwrap of it fails with ErrDeleted), and its slots (key, next key,
// leftovers) are overwritten with zeros and synced; files of the former
// layout are overwritten, synced and unlinked, and the directory synced.
// Deleting a key that has none is not an error. Once Delete returns nil,
// the deletion is durable.
func (ks *Keys) Delete(tag string) error {
	if err := ks.lock(tag); err != nil {
		return err
	}
	defer ks.mu.Unlock()
	if err := ks.deleteLocked(tag, true); err != nil {
		return fmt.Errorf("shred: delete: %w", err)
	}
	return nil
}

// deleteLocked zeroes every slot of tag (syncing them when sync is set;
// else the caller syncs) and shreds its former-layout files.
func (ks *Keys) deleteLocked(tag string, sync bool) error {
	var ws []slotWrite
	for _, m := range []map[string]*Key{ks.keys, ks.nexts} {
		if k := m[tag]; k != nil {
			if k.slot != noSlot {
				ws = append(ws, slotWrite{slot: k.slot})
			}
			k.clear()
			delete(m, tag)
		}
	}
	for _, r := range ks.extra[tag] {
		ws = append(ws, slotWrite{slot: r.slot})
	}
	delete(ks.extra, tag)
	if err := ks.zeroLocked(ws, sync); err != nil {
		// Kept for the retry (or Prune) to zero.
		for _, w := range ws {
			ks.addExtra(tag, slotRef{slot: w.slot})
		}
		return err
	}
	delete(ks.damaged, tag)
	return ks.shredLegacyLocked(tag, tag+NextSuffix)
}

// zeroLocked overwrites the slots of ws with zeros and, when sync is set,
// syncs them; the slots are then free. On failure they stay where they
// were, and the caller keeps them to retry.
func (ks *Keys) zeroLocked(ws []slotWrite, sync bool) error {
	if len(ws) == 0 {
		return nil
	}
	f, err := ks.fileLocked()
	if err != nil {
		return err
	}
	if err := writeSlots(f, ws); err != nil {
		return err
	}
	if sync {
		if err := atomicfile.Datasync(f); err != nil {
			return err
		}
	}
	for _, w := range ws {
		ks.release(w.slot)
	}
	return nil
}

// Tags returns the tags that have a key (valid or damaged), sorted.
func (ks *Keys) Tags() ([]string, error) { return ks.tagsOf(ks.keys, kindKey) }

func (ks *Keys) tagsOf(m map[string]*Key, kind byte) ([]string, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.closed {
		return nil, ErrClosed
	}
	var tags []string
	for t := range m {
		tags = append(tags, t)
	}
	for t, d := range ks.damaged {
		if d&kind != 0 && m[t] == nil {
			tags = append(tags, t)
		}
	}
	sort.Strings(tags)
	return tags, nil
}

// Prune deletes (as Delete does) every key and next key whose tag live
// rejects, zeroes the leftover slots of live tags (superseded duplicates,
// torn writes that a valid slot replaces), and removes the temporary
// files of the former layout's interrupted Creates. It returns the tags
// of the keys it deleted, sorted. A damaged key of a live tag is kept
// (Get keeps reporting it); files whose names are not the package's are
// left alone.
func (ks *Keys) Prune(live func(tag string) bool) ([]string, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.closed {
		return nil, ErrClosed
	}
	if !ks.made {
		return nil, nil
	}
	// The dead tags first (live is asked once per tag; no set of every
	// tag is built: an Engine prunes at every open).
	var dead []string
	for t := range ks.keys {
		if !live(t) {
			dead = append(dead, t)
		}
	}
	for t := range ks.nexts {
		if ks.keys[t] == nil && !live(t) {
			dead = append(dead, t)
		}
	}
	for t := range ks.extra {
		if ks.keys[t] == nil && ks.nexts[t] == nil && !live(t) {
			dead = append(dead, t)
		}
	}
	for t := range ks.damaged {
		if ks.keys[t] == nil && ks.nexts[t] == nil && ks.extra[t] == nil && !live(t) {
			dead = append(dead, t)
		}
	}
	var removed []string
	var errs []error
	for _, t := range dead {
		had := ks.keys[t] != nil || ks.damaged[t]&kindKey != 0
		if err := ks.deleteLocked(t, false); err != nil {
			errs = append(errs, err)
			continue
		}
		if had {
			removed = append(removed, t)
		}
	}
	// The leftovers of live tags.
	var ws []slotWrite
	var dirty []string
	for t, refs := range ks.extra {
		keep := refs[:0]
		for _, r := range refs {
			if r.bad && ks.damaged[t]&r.kind != 0 {
				keep = append(keep, r) // the only trace of a damaged key
				continue
			}
			ws = append(ws, slotWrite{slot: r.slot})
		}
		if len(keep) < len(refs) {
			dirty = append(dirty, t)
		}
		ks.extra[t] = keep
	}
	if err := ks.zeroLocked(ws, false); err != nil {
		errs = append(errs, err)
	}
	if ks.f != nil && len(dead)+len(ws) > 0 {
		if err := atomicfile.Datasync(ks.f); err != nil {
			errs = append(errs, err)
		}
	}
	for _, t := range dirty {
		if len(ks.extra[t]) == 0 {
			delete(ks.extra, t)
		}
	}
	if err := ks.pruneTempsLocked(); err != nil {
		errs = append(errs, err)
	}
	sort.Strings(removed)
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("shred: prune: %w", err)
	}
	return removed, nil
}

// Close clears every key held in memory (best effort) and closes the slot
// file: the keys' Wrap and Unwrap fail with ErrDeleted, and later calls
// of the Keys with ErrClosed. It is idempotent.
func (ks *Keys) Close() {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	for _, k := range ks.keys {
		k.clear()
	}
	for _, k := range ks.nexts {
		k.clear()
	}
	if ks.f != nil {
		ks.f.Close()
		ks.f = nil
	}
	ks.keys, ks.nexts, ks.extra, ks.damaged, ks.free, ks.closed = nil, nil, nil, nil, nil, true
}

// String describes the Keys by directory; it never shows a key.
func (ks *Keys) String() string { return "shred.Keys{" + ks.dir + "}" }

// GoString is String, for %#v.
func (ks *Keys) GoString() string { return ks.String() }

// Format prints String for every verb.
func (ks *Keys) Format(f fmt.State, _ rune) { io.WriteString(f, ks.String()) }

// MarshalJSON encodes String.
func (ks *Keys) MarshalJSON() ([]byte, error) { return json.Marshal(ks.String()) }

// LogValue logs String.
func (ks *Keys) LogValue() slog.Value { return slog.StringValue(ks.String()) }

// lock checks tag and takes mu, failing with ErrInvalidTag or (mu
// released again) ErrClosed; the caller unlocks mu after a nil error.
func (ks *Keys) lock(tag string) error {
	if !keytag.Valid(tag) {
		return ErrInvalidTag
	}
	ks.mu.Lock()
	if ks.closed {
		ks.mu.Unlock()
		return ErrClosed
	}
	return nil
}

func (ks *Keys) mkdir() error {
	if ks.made {
		return nil
	}
	if err := os.Mkdir(ks.dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := syncDir(filepath.Dir(ks.dir)); err != nil {
		return err
	}
	ks.made = true
	return nil
}

// newKeyBytes returns a new random key.
func newKeyBytes() []byte {
	b := make([]byte, KeySize)
	// crypto/rand.Read never returns an error (Go 1.24 and later end the
	// program rather than return short).
	rand.Read(b)
	return b
}

func syncDir(dir string) error { return atomicfile.SyncDir(dir) }

// ShareTags adopts the caller's tag strings for the keys of tags (the
// Engine's snapshots hold the same strings, so the index keeps no copies
// of its own). Open has read every key already.
func (ks *Keys) ShareTags(tags []string) error {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.closed {
		return ErrClosed
	}
	for _, tag := range tags {
		for _, m := range []map[string]*Key{ks.keys, ks.nexts} {
			if k := m[tag]; k != nil {
				k.mu.Lock()
				k.tag = tag
				k.mu.Unlock()
				m[tag] = k // the map keeps tag as its key too
			}
		}
	}
	return nil
}

// Key is the shred key of one key tag. It is a secret: it prints as a
// redacted description, and its bytes are cleared once deleted.
type Key struct {
	tag string
	mu  sync.RWMutex
	b   [KeySize]byte // zeros once cleared
	// gone is set when the key is cleared.
	gone bool
	// slot is the key's slot in the slot file (noSlot: read from a
	// former-layout file, not migrated yet). Keys.mu guards it.
	slot int32
}

// newKey returns tag's Key holding b, which it clears: the Key keeps the
// only copy, inside itself (one object per key, not two).
func newKey(tag string, b []byte) *Key {
	k := &Key{tag: tag}
	copy(k.b[:], b)
	clear(b)
	return k
}

// Tag returns the key tag the Key belongs to.
func (k *Key) Tag() string { return k.tag }

// Wrap seals a backend handle of the key's material of purpose and
// version (the key version, or the token generator's generation). It
// fails with ErrDeleted once the Key is deleted.
func (k *Key) Wrap(handle []byte, purpose string, version uint32) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	g, err := k.aead()
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(wrapPrefix)+nonceSize, len(wrapPrefix)+nonceSize+len(handle)+g.Overhead())
	copy(out, wrapPrefix)
	nonce := out[len(wrapPrefix):]
	rand.Read(nonce)
	return g.Seal(out, nonce, handle, wrapAD(k.tag, purpose, version)), nil
}

// Unwrap opens a wrapped handle made by Wrap for the same purpose and
// version. Anything else (another key, binding or altered bytes) fails
// with ErrUnwrap; a deleted Key fails with ErrDeleted.
func (k *Key) Unwrap(wrapped []byte, purpose string, version uint32) ([]byte, error) {
	if !IsWrapped(wrapped) || len(wrapped) < WrapOverhead {
		return nil, ErrUnwrap
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	g, err := k.aead()
	if err != nil {
		return nil, err
	}
	nonce := wrapped[len(wrapPrefix) : len(wrapPrefix)+nonceSize]
	h, err := g.Open(nil, nonce, wrapped[len(wrapPrefix)+nonceSize:], wrapAD(k.tag, purpose, version))
	if err != nil {
		return nil, ErrUnwrap
	}
	return h, nil
}

// aead builds AES-256-GCM under the key; the caller holds k.mu.
func (k *Key) aead() (cipher.AEAD, error) {
	if k.gone {
		return nil, ErrDeleted
	}
	block, err := aes.NewCipher(k.b[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func (k *Key) clear() {
	k.mu.Lock()
	defer k.mu.Unlock()
	clear(k.b[:])
	k.gone = true
}

// String describes the Key by tag; it never shows the key.
func (k *Key) String() string { return "shred.Key{" + k.tag + ", redacted}" }

// GoString is String, for %#v.
func (k *Key) GoString() string { return k.String() }

// Format prints String for every verb (%x and %d included).
func (k *Key) Format(f fmt.State, _ rune) { io.WriteString(f, k.String()) }

// MarshalJSON encodes String.
func (k *Key) MarshalJSON() ([]byte, error) { return json.Marshal(k.String()) }

// LogValue logs String.
func (k *Key) LogValue() slog.Value { return slog.StringValue(k.String()) }

func wrapAD(tag, purpose string, version uint32) []byte {
	ad := make([]byte, 0, len(wrapLabel)+1+len(tag)+1+len(purpose)+1+4)
	ad = append(ad, wrapLabel...)
	ad = append(ad, 0)
	ad = append(ad, tag...)
	ad = append(ad, 0)
	ad = append(ad, purpose...)
	ad = append(ad, 0)
	return binary.BigEndian.AppendUint32(ad, version)
}

// The former layout: one file per key (see the package documentation).
const (
	fileMagic   = "PKSK"
	fileVersion = 1
	fileSize    = len(fileMagic) + 1 + KeySize + 4
	tmpSuffix   = atomicfile.TmpSuffix
)

// marshal frames a key for the former layout's file of tag.
func marshal(tag string, key []byte) []byte {
	b := make([]byte, 0, fileSize)
	b = append(b, fileMagic...)
	b = append(b, fileVersion)
	b = append(b, key...)
	return binary.BigEndian.AppendUint32(b, fileCRC(tag, key))
}

// unmarshal returns the key in the file of tag, or ErrCorrupt.
func unmarshal(tag string, raw []byte) ([]byte, error) {
	if len(raw) != fileSize || string(raw[:len(fileMagic)]) != fileMagic || raw[len(fileMagic)] != fileVersion {
		return nil, ErrCorrupt
	}
	key := raw[len(fileMagic)+1 : len(fileMagic)+1+KeySize]
	if binary.BigEndian.Uint32(raw[fileSize-4:]) != fileCRC(tag, key) {
		return nil, ErrCorrupt
	}
	return bytes.Clone(key), nil
}

func fileCRC(tag string, key []byte) uint32 {
	h := crc32.New(castagnoli)
	h.Write([]byte(fileMagic))
	h.Write([]byte{fileVersion})
	h.Write([]byte(tag))
	h.Write(key)
	return h.Sum32()
}
