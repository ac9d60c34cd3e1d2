// Package shred keeps the per-key keys that make destroying a key
// irreversible from the Engine's data directory: crypto-shredding.
//
// Start with [Open] on the Badger directory. The Engine calls
// [Keys.Create] before the commit that first names a key, seals every
// backend handle it stores for that key with [Key.Wrap], opens them with
// [Key.Unwrap] when it loads the key ([Keys.Get]), and calls [Keys.Delete]
// when it destroys the key. Once the key's file is unlinked and the
// directory synced, every copy of its wrapped handles that Badger still
// keeps (old tables, value logs, write-ahead logs), and every backup taken
// from then on, opens under nothing: not even the backend's root key
// reaches the sealed material inside.
//
// # Files
//
// Each key is one file, <dir>/pocketkms.shred/<tag>, of 41 bytes:
//
//	"PKSK" ‖ 0x01 ‖ key(32) ‖ uint32be(CRC-32C("PKSK" ‖ 0x01 ‖ tag ‖ key))
//
// The checksum also covers the tag the file is named after, so a damaged
// file, or one moved to another key's name, is refused with [ErrCorrupt]
// and its bytes are never used. [Keys.Create] writes a temporary file
// (<tag>.tmp), syncs it, renames it into place and syncs the directory
// (the directory itself, made on first use, is synced into its parent);
// [Keys.Delete] overwrites the file with zeros and syncs it (best effort),
// unlinks it and syncs the directory. Nothing is written by [Open].
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
// [Keys] and [Key] are safe for concurrent use. Keys serialises its file
// operations.
//
// # Security
//
// A Key (and Keys) prints as a redacted description under every fmt verb,
// as JSON and through log/slog; no error carries key bytes or a handle.
// A key's bytes are cleared when it is deleted or the Keys closed;
// clearing is best effort (the AES key schedule built for each call, and
// any copy the runtime made, are left to the garbage collector).
//
// # Limitations
//
// Shredding is as good as the file system's forgetting. The zeros written
// before the unlink, and the unlink itself, reach the disk, but a
// copy-on-write file system (btrfs, ZFS), a file-system or volume
// snapshot, a journal that logs data, or an SSD's remapped blocks can keep
// the old bytes; so does any backup of the directory taken before the
// destruction. A backup must copy this directory together with Badger's
// files: without it the keys it names do not open.
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
	"strings"
	"sync"

	"github.com/pocketkms/kms/internal/atomicfile"
	"github.com/pocketkms/kms/internal/keytag"
)

// DirName is the subdirectory of the Badger directory that holds the keys.
const DirName = "pocketkms.shred"

// KeySize is the size in bytes of a shred key (AES-256).
const KeySize = 32

const (
	fileMagic   = "PKSK"
	fileVersion = 1
	fileSize    = len(fileMagic) + 1 + KeySize + 4
	tmpSuffix   = atomicfile.TmpSuffix

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
func IsWrapped(h []byte) bool { return bytes.HasPrefix(h, []byte(wrapPrefix)) }

// Keys is the set of shred keys of one directory. Create it with Open.
type Keys struct {
	dir string // <badger dir>/pocketkms.shred

	mu    sync.Mutex
	keys  map[string]*Key // read or made so far
	nexts map[string]*Key // next keys read or made so far (rotate.go)
	// noNext holds the tags Preload found without a next key file, until
	// EndPreload; Next removes the tag it makes one for.
	noNext map[string]bool
	made   bool // dir exists
	closed bool
	// creating holds the tags whose Create is writing its file, which
	// it does without holding mu, so that creations of different keys
	// share the disk's time instead of queueing for it.
	creating map[string]bool
}

// Open returns the shred keys kept under dir (the Badger directory). It
// reads and writes nothing but a stat of the subdirectory, which is made
// by the first Create.
func Open(dir string) (*Keys, error) {
	if dir == "" {
		return nil, errors.New("shred: no directory given")
	}
	ks := &Keys{dir: filepath.Join(dir, DirName), keys: map[string]*Key{}, nexts: map[string]*Key{}}
	fi, err := os.Stat(ks.dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("shred: open: %w", err)
	case !fi.IsDir():
		return nil, fmt.Errorf("shred: open: %s is not a directory", DirName)
	default:
		ks.made = true
	}
	return ks, nil
}

// Dir returns the directory that holds the key files.
func (ks *Keys) Dir() string { return ks.dir }

// Create makes a new random key for tag and writes it durably before it
// returns. It fails with ErrExists when tag already has one (in memory
// or on disk), ErrInvalidTag for a malformed tag, ErrClosed after Close,
// and with the file system's error otherwise (then no file is left, best
// effort; the Engine also removes orphans when it opens).
func (ks *Keys) Create(tag string) (*Key, error) {
	if err := ks.lock(tag); err != nil {
		return nil, err
	}
	defer ks.mu.Unlock()
	if _, ok := ks.keys[tag]; ok || ks.creating[tag] {
		return nil, ErrExists
	}
	path := filepath.Join(ks.dir, tag)
	if _, err := os.Lstat(path); err == nil {
		return nil, ErrExists
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("shred: create: %w", err)
	}
	if err := ks.mkdir(); err != nil {
		return nil, fmt.Errorf("shred: create: %w", err)
	}
	b, err := newKeyBytes()
	if err != nil {
		return nil, err
	}
	if ks.creating == nil {
		ks.creating = map[string]bool{}
	}
	ks.creating[tag] = true
	// The synced write runs without mu (the tag is reserved in creating):
	// it is most of a creation's time.
	ks.mu.Unlock()
	err = ks.writeKey(tag, tag, b)
	ks.mu.Lock()
	delete(ks.creating, tag)
	if err == nil && ks.closed {
		// Closed meanwhile: the key is not handed out, and its file goes.
		err = ErrClosed
	}
	if err != nil {
		clear(b)
		ks.unwrite(tag)
		if errors.Is(err, ErrClosed) {
			return nil, err
		}
		return nil, fmt.Errorf("shred: create: %w", err)
	}
	k := newKey(tag, b)
	ks.keys[tag] = k
	return k, nil
}

// Get returns tag's key, reading its file on the first call. ok is false
// (and err nil) when tag has no key file. A file that fails its frame is
// ErrCorrupt; other errors are the file system's.
func (ks *Keys) Get(tag string) (k *Key, ok bool, err error) {
	if err := ks.lock(tag); err != nil {
		return nil, false, err
	}
	defer ks.mu.Unlock()
	return ks.loadLocked(ks.keys, tag, tag, "key file")
}

// loadLocked returns tag's key from cache, or reads it from the file name
// and caches it; ok is false (err nil) when there is no such file. what
// names the file in errors.
func (ks *Keys) loadLocked(cache map[string]*Key, tag, name, what string) (k *Key, ok bool, err error) {
	if k := cache[tag]; k != nil {
		return k, true, nil
	}
	raw, err := readSmall(filepath.Join(ks.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("shred: read %s: %w", what, err)
	}
	b, err := unmarshal(tag, raw)
	clear(raw)
	if err != nil {
		return nil, false, err
	}
	k = newKey(tag, b)
	cache[tag] = k
	return k, true, nil
}

// Delete shreds tag's key: the Key in memory is cleared (every later Wrap
// and Unwrap of it fails with ErrDeleted), the file is overwritten with
// zeros and synced (best effort), unlinked, and the directory synced.
// Deleting a key that has no file is not an error. Once Delete returns
// nil, the deletion is durable.
func (ks *Keys) Delete(tag string) error {
	if err := ks.lock(tag); err != nil {
		return err
	}
	defer ks.mu.Unlock()
	return ks.deleteLocked(tag)
}

func (ks *Keys) deleteLocked(tag string) error {
	if k := ks.keys[tag]; k != nil {
		k.clear()
		delete(ks.keys, tag)
	}
	if k := ks.nexts[tag]; k != nil {
		k.clear()
		delete(ks.nexts, tag)
	}
	if !ks.made {
		return nil
	}
	// The next key first: a crash in between leaves the current one,
	// which the retried Delete removes, and no next key without it.
	for _, name := range []string{tag + NextSuffix, tag} {
		if err := shredFile(filepath.Join(ks.dir, name)); err != nil {
			return fmt.Errorf("shred: delete: %w", err)
		}
	}
	// Synced even when the file was already gone: an earlier Delete may
	// have unlinked it and failed before its sync.
	if err := syncDir(ks.dir); err != nil {
		return fmt.Errorf("shred: delete: %w", err)
	}
	return nil
}

// Tags returns the tags that have a key file, sorted.
func (ks *Keys) Tags() ([]string, error) { return ks.tagsOf("") }

// tagsOf returns the tags that have a regular file named tag+suffix,
// sorted.
func (ks *Keys) tagsOf(suffix string) ([]string, error) {
	ents, err := os.ReadDir(ks.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("shred: list: %w", err)
	}
	var tags []string
	for _, e := range ents {
		if t, ok := strings.CutSuffix(e.Name(), suffix); ok && keytag.Valid(t) && e.Type().IsRegular() {
			tags = append(tags, t)
		}
	}
	sort.Strings(tags)
	return tags, nil
}

// Prune deletes (as Delete does) every key whose tag live rejects, and
// the temporary files of interrupted Creates, which no record can name.
// It returns the tags of the keys it deleted. Files whose names are not
// tags are left alone.
func (ks *Keys) Prune(live func(tag string) bool) ([]string, error) {
	ents, err := os.ReadDir(ks.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("shred: prune: %w", err)
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.closed {
		return nil, ErrClosed
	}
	ks.made = true
	var removed []string
	var errs []error
	temps := false
	for _, e := range ents {
		name := e.Name()
		switch {
		case keytag.Valid(name) && !live(name):
			if err := ks.deleteLocked(name); err != nil {
				errs = append(errs, err)
				continue
			}
			removed = append(removed, name)
		case strings.HasSuffix(name, NextSuffix) && keytag.Valid(strings.TrimSuffix(name, NextSuffix)) && !live(strings.TrimSuffix(name, NextSuffix)):
			// A next key whose key is gone (Delete removes it first, so
			// only a key that was never committed leaves one).
			if err := ks.deleteLocked(strings.TrimSuffix(name, NextSuffix)); err != nil {
				errs = append(errs, err)
			}
		case strings.HasSuffix(name, tmpSuffix) && tmpOfKey(strings.TrimSuffix(name, tmpSuffix)):
			if err := shredFile(filepath.Join(ks.dir, name)); err != nil {
				errs = append(errs, fmt.Errorf("shred: prune: %w", err))
				continue
			}
			temps = true
		}
	}
	if temps {
		if err := syncDir(ks.dir); err != nil {
			errs = append(errs, fmt.Errorf("shred: prune: %w", err))
		}
	}
	return removed, errors.Join(errs...)
}

// Close clears every key held in memory (best effort): their Wrap and
// Unwrap fail with ErrDeleted, and later calls of the Keys with
// ErrClosed. It is idempotent.
func (ks *Keys) Close() {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	for _, k := range ks.keys {
		k.clear()
	}
	for _, k := range ks.nexts {
		k.clear()
	}
	ks.keys, ks.nexts, ks.closed = nil, nil, true
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

// writeKey writes tag's key b durably to the file name; unwrite removes
// what a failed one may have left.
func (ks *Keys) writeKey(name, tag string, b []byte) error {
	data := marshal(tag, b)
	defer clear(data)
	return writeFileSync(ks.dir, name, data)
}

// unwrite removes the file name and its temporary file (best effort).
func (ks *Keys) unwrite(name string) {
	os.Remove(filepath.Join(ks.dir, name+tmpSuffix))
	os.Remove(filepath.Join(ks.dir, name))
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
func newKeyBytes() ([]byte, error) {
	b := make([]byte, KeySize)
	// crypto/rand.Read never returns an error (Go 1.24 and later end the
	// program rather than return short).
	rand.Read(b)
	return b, nil
}

// Key is the shred key of one key tag. It is a secret: it prints as a
// redacted description, and its bytes are cleared once deleted.
type Key struct {
	tag string
	mu  sync.RWMutex
	b   [KeySize]byte // zeros once cleared
	// gone is set when the key is cleared.
	gone bool
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

// marshal frames a key for the file of tag.
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

// readSmall reads a key file, refusing to read more than one byte past
// the size a key file has (what is longer is corrupt anyway).

// overwrite replaces a file's bytes with zeros and syncs them, best
// effort: the unlink that follows is what Delete promises.
func overwrite(path string) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return
	}
	defer f.Close()
	zero(f)
}

// zero overwrites the open file f (a regular file) with zeros and syncs
// it, best effort.
func zero(f *os.File) {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return
	}
	if _, err := f.WriteAt(make([]byte, min(fi.Size(), 1<<16)), 0); err == nil {
		f.Sync()
	}
}

// shredFile overwrites path (best effort) and unlinks it; a file that is
// not there is not an error. The caller syncs the directory.
func shredFile(path string) error {
	overwrite(path)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func writeFileSync(dir, name string, data []byte) error { return atomicfile.Write(dir, name, data) }

func syncDir(dir string) error { return atomicfile.SyncDir(dir) }

// Preload reads the key and next key files of tags into the cache with up
// to workers reads at once, holding the lock throughout so that no Create
// or Delete interleaves: what an Engine opening a directory of many keys
// does before it asks for each key (Get, GetNext), which then costs no
// file operation. It lists the directory once; a tag with no next key
// file is remembered as having none until EndPreload, so GetNext costs no
// failed open either. A file that cannot be read or is damaged is left
// out: Get reads it again and reports what is wrong, as without Preload.
func (ks *Keys) Preload(tags []string, workers int) error {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.closed {
		return ErrClosed
	}
	ents, err := os.ReadDir(ks.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("shred: list: %w", err)
	}
	present := make(map[string]bool, len(ents))
	for _, e := range ents {
		if e.Type().IsRegular() {
			present[e.Name()] = true
		}
	}
	type job struct {
		tag, name string
		next      bool
	}
	var jobs []job
	ks.noNext = make(map[string]bool)
	for _, tag := range tags {
		if !keytag.Valid(tag) {
			continue
		}
		if ks.keys[tag] == nil && present[tag] {
			jobs = append(jobs, job{tag, tag, false})
		}
		switch {
		case ks.nexts[tag] != nil:
		case present[tag+NextSuffix]:
			jobs = append(jobs, job{tag, tag + NextSuffix, true})
		default:
			ks.noNext[tag] = true
		}
	}
	keys := make([]*Key, len(jobs))
	workers = max(1, min(workers, len(jobs)/64))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(jobs); i += workers {
				raw, err := readSmall(filepath.Join(ks.dir, jobs[i].name))
				if err != nil {
					continue
				}
				b, err := unmarshal(jobs[i].tag, raw)
				clear(raw)
				if err == nil {
					keys[i] = newKey(jobs[i].tag, b)
				}
			}
		})
	}
	wg.Wait()
	for i, j := range jobs {
		switch {
		case keys[i] == nil:
		case j.next:
			ks.nexts[j.tag] = keys[i]
		default:
			ks.keys[j.tag] = keys[i]
		}
	}
	return nil
}

// EndPreload forgets which tags Preload found without a next key file.
func (ks *Keys) EndPreload() {
	ks.mu.Lock()
	ks.noNext = nil
	ks.mu.Unlock()
}
