package store

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"

	"github.com/dgraph-io/badger/v4"
	"github.com/pocketkms/kms/internal/atomicfile"
	kstore "github.com/pocketkms/kms/store"
)

// The integrity record guards against Badger silently losing committed
// transactions. Badger v4 replays its write-ahead log only up to the first
// damaged entry and treats a damaged manifest record as a torn write; both
// roll the store back without an error, which for a KMS means lost key
// versions or revived tokens. So the store keeps, outside Badger, a digest
// of its whole content: the XOR of SHA-256(len(key) ‖ key ‖ value) over
// every record, updated with each commit. A commit first records the
// digest it will produce as pending, commits, then records it as
// committed; on open the content must match one of the two, or Open fails
// with ErrCorrupt. The file is replaced atomically (write, fsync, rename,
// fsync the directory).
const integrityFile = "pocketkms.integrity"

type digest [sha256.Size]byte

func (d *digest) xor(o digest) {
	for i := range d {
		d[i] ^= o[i]
	}
}

func recordDigest(key, val []byte) digest {
	h := sha256.New()
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(key)))
	h.Write(n[:])
	h.Write(key)
	h.Write(val)
	var d digest
	h.Sum(d[:0])
	return d
}

// integrity is the content of the integrity file.
type integrity struct {
	committed  digest
	pending    digest
	hasPending bool
}

const integrityMagic = "PKMI\x01"

func (in integrity) marshal() []byte {
	b := make([]byte, 0, len(integrityMagic)+2*sha256.Size+1+4)
	b = append(b, integrityMagic...)
	b = append(b, in.committed[:]...)
	if in.hasPending {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = append(b, in.pending[:]...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func parseIntegrity(b []byte) (integrity, error) {
	var in integrity
	want := len(integrityMagic) + 2*sha256.Size + 1 + 4
	if len(b) != want || string(b[:len(integrityMagic)]) != integrityMagic ||
		crc32.Checksum(b[:want-4], castagnoli) != binary.BigEndian.Uint32(b[want-4:]) {
		return in, fmt.Errorf("%w: integrity record damaged", ErrCorrupt)
	}
	b = b[len(integrityMagic):]
	copy(in.committed[:], b)
	b = b[sha256.Size:]
	switch b[0] {
	case 0:
	case 1:
		in.hasPending = true
	default:
		return in, fmt.Errorf("%w: integrity record damaged", ErrCorrupt)
	}
	copy(in.pending[:], b[1:])
	return in, nil
}

// writeIntegrity replaces the integrity file atomically and durably.
func writeIntegrity(dir string, in integrity) error {
	return writeFileSync(dir, integrityFile, in.marshal())
}

func writeFileSync(dir, name string, data []byte) error { return atomicfile.Write(dir, name, data) }

// contentDigest is the digest of every record in the database.
func contentDigest(db *badger.DB) (digest, error) {
	d, _, err := scanContent(db, false)
	return d, err
}

// scanContent is contentDigest, and with assemble also the Contents a
// Load would return (or the error it would fail with, in pre.err): the
// Engine loads everything right after opening, and one pass over the
// records instead of two is a good part of opening a large store.
func scanContent(db *badger.DB, assemble bool) (digest, *preload, error) {
	if lsm, _ := db.EstimateSize(nil); scanWorkers(int64(lsm)) > 1 {
		return scanParallel(db, assemble, scanWorkers(int64(lsm))) // scan.go
	}
	var d digest
	var a kstore.Assembler
	var pre *preload
	if assemble {
		pre = &preload{}
	}
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			if err := item.Value(func(val []byte) error {
				key := item.Key()
				d.xor(recordDigest(key, val))
				if pre != nil && pre.err == nil && isRecordKey(key) {
					r, err := kstore.Decode(string(key), val)
					if err != nil {
						pre.err = err
						return nil
					}
					a.Add(r, int64(item.Version()))
				}
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return d, nil, err
	}
	if pre != nil && pre.err == nil {
		pre.c, pre.err = a.Contents(0)
	}
	return d, pre, nil
}

// preload is what the scan at Open read for the first Load.
type preload struct {
	c   *kstore.Contents
	err error
}

// isRecordKey reports whether key is under one of the schema's record
// prefixes (the ones Load reads).
func isRecordKey(key []byte) bool {
	if len(key) < 2 || key[1] != '/' {
		return false
	}
	switch key[0] {
	case 'k', 'v', 'g', 'a', 'n':
		return true
	}
	return false
}

// checkIntegrity compares the content with the integrity file at open. A
// store without the file (created before it existed, or fresh) gets one.
// The records it read are kept for the first Load (s.pre).
func (s *Store) checkIntegrity(readOnly bool) error {
	got, pre, err := scanContent(s.db, true)
	if err != nil {
		return fmt.Errorf("store: open: %w", err)
	}
	s.pre = pre
	raw, err := os.ReadFile(filepath.Join(s.dir, integrityFile))
	if errors.Is(err, os.ErrNotExist) {
		s.digest = got
		if readOnly {
			return nil
		}
		return writeIntegrity(s.dir, integrity{committed: got})
	}
	if err != nil {
		return fmt.Errorf("store: open: %w", err)
	}
	in, err := parseIntegrity(raw)
	if err != nil {
		return err
	}
	switch {
	case got == in.committed && !in.hasPending:
	case got == in.committed || (in.hasPending && got == in.pending):
		// A crash between the two writes of a commit: settle it.
		if !readOnly {
			if err := writeIntegrity(s.dir, integrity{committed: got}); err != nil {
				return fmt.Errorf("store: open: %w", err)
			}
		}
	default:
		return fmt.Errorf("%w: the store's content does not match its integrity record: committed changes were lost (a damaged write-ahead log or manifest)", ErrCorrupt)
	}
	s.digest = got
	return nil
}

// txnDelta accumulates how a transaction changes the content digest.
type txnDelta struct {
	seen  map[string]bool
	delta digest
}

// change records that key goes from its committed value (if any) to val
// (nil: deleted). Only the first change of a key reads the old value; a
// later change of the same key replaces the new side.
func (t *Txn) change(key string, val []byte) error {
	if t.d == nil {
		return nil
	}
	if t.d.seen == nil {
		t.d.seen = map[string]bool{}
	}
	if !t.d.seen[key] {
		t.d.seen[key] = true
		item, err := t.get(key)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			if err := item.Value(func(old []byte) error {
				t.d.delta.xor(recordDigest([]byte(key), old))
				return nil
			}); err != nil {
				return err
			}
		}
	} else if prev, ok := t.last[key]; ok && prev != nil {
		// Undo the new side recorded by the earlier change.
		t.d.delta.xor(recordDigest([]byte(key), prev))
	}
	if val != nil {
		t.d.delta.xor(recordDigest([]byte(key), val))
	}
	if t.last == nil {
		t.last = map[string][]byte{}
	}
	t.last[key] = val
	return nil
}
