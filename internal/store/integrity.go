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
// with ErrCorrupt.
//
// # The record file: two slots
//
// pocketkms.integrity is a fixed-size file of two 4 KiB slots. Each slot
// holds one record: slotMagic, a sequence number, the record (committed
// digest, pending flag, pending digest) and a CRC-32C of all of it. The
// newest record is the valid slot with the highest sequence number. A
// write goes, in place, into the slot that does NOT hold the newest
// durable record, with the next sequence number, followed by one
// fdatasync (the file's size and blocks never change, so no metadata needs
// syncing); the file stays open for the Store's life. This replaces the
// atomic file replacement of earlier builds (temporary file, fsync,
// rename, directory fsync: four file-system operations that each wait for
// the journal), which cost most of a single writer's commit.
//
// Invariant: the record the store knows to be durable in slot newest (the
// one writes go around) accepts the content Badger holds durably (content
// = its committed digest, or = its pending one), and any record on disk
// with a higher sequence number accepts it too. It holds after Open
// (checked, or written), and each step keeps it:
//
//  1. The pending write {committed: old, pending: new} goes to the other
//     slot. A crash before its fdatasync completes leaves that slot torn
//     (CRC fails), unchanged (an older sequence), or complete; the slot
//     holding the newest record is untouched either way, and Badger has
//     not committed, so the content is still "old", which both the
//     previous newest record and the new one accept. If the write fails
//     with an error, nothing is committed (the store is broken, as before).
//  2. Badger's commit. Before it, the newest durable record is the pending
//     one (its fdatasync returned), which accepts both "old" (a crash
//     before the commit is durable) and "new".
//  3. The committed write {committed: new} goes to the other slot again
//     (the one step 1 did not write). A crash during it leaves that slot
//     torn or complete: the newest valid record is then the pending one
//     (accepts "new") or the committed one (accepts "new"). If it fails
//     with an error, the newest durable record stays the pending one, the
//     store remembers that, and the next write targets the same failed
//     slot again, so the pending record is never overwritten while it is
//     the only one known durable.
//
// Sequence numbers only grow (one per write attempted, failed or not), so
// a slot whose write failed but reached the disk never outranks a later
// write. A crash thus always opens to a record accepting the content, and
// leaves at most one slot bad; Open then repairs (rewrites) it, as it
// settles a record left pending.
//
// A silently lost last commit is detected exactly as with the single
// record: once step 3's fdatasync returned (before any caller of the
// commit is answered), the newest valid record is {committed: new}, which
// does not accept "old"; the other slot's older record (pending, which
// would accept "old") only counts if the newest slot is damaged. Damage to
// the newest slot together with Badger losing the last commit is two
// independent faults; that is the one case the slots accept that the
// single record refused (with ErrCorrupt for the damaged record). Both
// slots bad is ErrCorrupt, as a damaged record was.
//
// A directory written before the slots (one 74-byte record, replaced
// atomically) opens as before and is converted, on a read-write open, with
// one atomic replacement by a slot file; a read-only open reads either
// format and writes nothing. There is no way back: a build from before
// the slots reads a slot file as a damaged record and refuses the
// directory with ErrCorrupt.
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

// appendBody appends committed ‖ pending flag ‖ pending.
func (in integrity) appendBody(b []byte) []byte {
	b = append(b, in.committed[:]...)
	if in.hasPending {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	return append(b, in.pending[:]...)
}

// parseBody reads what appendBody wrote (bodyLen bytes).
func parseBody(b []byte) (integrity, bool) {
	var in integrity
	copy(in.committed[:], b)
	b = b[sha256.Size:]
	switch b[0] {
	case 0:
	case 1:
		in.hasPending = true
	default:
		return in, false
	}
	copy(in.pending[:], b[1:1+sha256.Size])
	return in, true
}

const bodyLen = 2*sha256.Size + 1

// oldRecordLen is the length of a record file of the old format.
const oldRecordLen = len(integrityMagic) + bodyLen + 4

// marshal is the record in the old format (one record, the whole file),
// which this build reads and converts but no longer writes.
func (in integrity) marshal() []byte {
	b := make([]byte, 0, oldRecordLen)
	b = append(b, integrityMagic...)
	b = in.appendBody(b)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// parseIntegrity reads a record file of the old format.
func parseIntegrity(b []byte) (integrity, error) {
	want := oldRecordLen
	if len(b) != want || string(b[:len(integrityMagic)]) != integrityMagic ||
		crc32.Checksum(b[:want-4], castagnoli) != binary.BigEndian.Uint32(b[want-4:]) {
		return integrity{}, errRecordDamaged
	}
	in, ok := parseBody(b[len(integrityMagic):])
	if !ok {
		return in, errRecordDamaged
	}
	return in, nil
}

// writeFileSync replaces dir/name atomically and durably (the check and
// rotation files).
func writeFileSync(dir, name string, data []byte) error { return atomicfile.Write(dir, name, data) }

var errRecordDamaged = fmt.Errorf("%w: integrity record damaged", ErrCorrupt)

const (
	// slotMagic starts a slot's record.
	slotMagic = "PKMS\x02"
	// slotSize is the size of a slot: each in its own 4 KiB block, so a
	// torn write of one never touches the other's block.
	slotSize = 4096
	// slotFileLen is the size of the record file.
	slotFileLen = 2 * slotSize
	// slotRecLen is the size of a slot's record: magic, sequence number,
	// body, CRC-32C.
	slotRecLen = len(slotMagic) + 8 + bodyLen + 4
)

// marshalSlot is a slot's record.
func marshalSlot(seq uint64, in integrity) []byte {
	b := make([]byte, 0, slotRecLen)
	b = append(b, slotMagic...)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = in.appendBody(b)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// parseSlot reads a slot (at least slotRecLen bytes); ok is false for a
// slot that is torn, damaged or never written.
func parseSlot(b []byte) (seq uint64, in integrity, ok bool) {
	b = b[:slotRecLen]
	if string(b[:len(slotMagic)]) != slotMagic ||
		crc32.Checksum(b[:slotRecLen-4], castagnoli) != binary.BigEndian.Uint32(b[slotRecLen-4:]) {
		return 0, in, false
	}
	seq = binary.BigEndian.Uint64(b[len(slotMagic):])
	in, ok = parseBody(b[len(slotMagic)+8:])
	return seq, in, ok
}

// slots is what a record file of two slots holds.
type slots struct {
	in     integrity // the newest valid record
	newest int       // its slot
	seq    uint64    // its sequence number
	valid  [2]bool
}

// parseSlots reads a record file of two slots. One valid slot is enough;
// none is ErrCorrupt.
func parseSlots(b []byte) (slots, error) {
	var st slots
	if len(b) != slotFileLen {
		return st, errRecordDamaged
	}
	var seqs [2]uint64
	var ins [2]integrity
	for i := range 2 {
		seqs[i], ins[i], st.valid[i] = parseSlot(b[i*slotSize:])
	}
	switch {
	case st.valid[0] && st.valid[1]:
		if seqs[1] > seqs[0] {
			st.newest = 1
		}
	case st.valid[0]:
	case st.valid[1]:
		st.newest = 1
	default:
		return st, errRecordDamaged
	}
	st.in, st.seq = ins[st.newest], seqs[st.newest]
	return st, nil
}

// newSlotFile is a record file whose two slots both hold in (sequence
// numbers 1 and 2).
func newSlotFile(in integrity) []byte {
	b := make([]byte, slotFileLen)
	copy(b, marshalSlot(1, in))
	copy(b[slotSize:], marshalSlot(2, in))
	return b
}

// recordFile is the open record file of a writable store (see the top of
// this file). Its fields are guarded by Store.mu (or used by Open alone).
type recordFile struct {
	f *os.File
	// seq is the sequence number of the last write attempted (or read).
	seq uint64
	// newest is the slot holding the newest record known durable; writes
	// go to the other.
	newest int
}

// createRecord writes a new record file holding {committed: d} in both
// slots, replacing whatever is there atomically (a fresh store, or a
// conversion of the old format), and opens it.
func (s *Store) createRecord(d digest) error {
	if err := atomicfile.Write(s.dir, integrityFile, newSlotFile(integrity{committed: d})); err != nil {
		return fmt.Errorf("store: open: %w", err)
	}
	return s.openRecord(slots{newest: 1, seq: 2})
}

// openRecord opens the record file for writing in place.
func (s *Store) openRecord(st slots) error {
	f, err := os.OpenFile(filepath.Join(s.dir, integrityFile), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("store: open: %w", err)
	}
	s.rec = &recordFile{f: f, seq: st.seq, newest: st.newest}
	return nil
}

// writeRecord writes in into the slot not holding the newest durable
// record and syncs it (the caller holds mu, or is Open). Only once the
// sync returned does that slot become the newest.
func (s *Store) writeRecord(in integrity) error {
	r := s.rec
	if r == nil {
		return errors.New("store: no integrity record open for writing")
	}
	// The write itself cannot notice a directory that no longer takes
	// new files (made read-only, a read-only remount): Badger would then
	// fail to start a new log, or hang flushing on Close. Refuse a commit
	// early, as the file replacement of earlier builds did. (Only the
	// pending write decides whether a commit happens.)
	if in.hasPending {
		if err := dirWritable(s.dir); err != nil {
			return fmt.Errorf("write %s: %w", integrityFile, err)
		}
	}
	r.seq++
	slot := 1 - r.newest
	if _, err := r.f.WriteAt(marshalSlot(r.seq, in), int64(slot)*slotSize); err != nil {
		return err
	}
	if err := atomicfile.Datasync(r.f); err != nil {
		return fmt.Errorf("sync %s: %w", integrityFile, err)
	}
	r.newest = slot
	return nil
}

// closeRecord closes the record file, if open.
func (s *Store) closeRecord() {
	if s.rec != nil {
		s.rec.f.Close()
		s.rec = nil
	}
}

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
	lsm, _ := db.EstimateSize(nil)
	return scanParallel(db, assemble, scanWorkers(int64(lsm))) // scan.go
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
// store without the file (created before it existed, or fresh) gets one;
// a file of the old format is converted, a record left pending by a crash
// settled and a bad slot repaired (none of which a read-only open does).
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
		return s.createRecord(got)
	}
	if err != nil {
		return fmt.Errorf("store: open: %w", err)
	}
	var in integrity
	var st slots
	old := len(raw) == oldRecordLen
	if old {
		in, err = parseIntegrity(raw)
	} else {
		st, err = parseSlots(raw)
		in = st.in
	}
	if err != nil {
		return err
	}
	if got != in.committed && (!in.hasPending || got != in.pending) {
		return fmt.Errorf("%w: the store's content does not match its integrity record: committed changes were lost (a damaged write-ahead log or manifest)", ErrCorrupt)
	}
	s.digest = got
	switch {
	case readOnly:
		return nil
	case old:
		// Converted once, atomically: a crash leaves the old file or the
		// new, and either opens.
		return s.createRecord(got)
	}
	if err := s.openRecord(st); err != nil {
		return err
	}
	if in.hasPending || !st.valid[0] || !st.valid[1] {
		// A crash between the two writes of a commit, or during one of
		// them (the other slot torn): settle it, into the other slot.
		if err := recordIntegrity(s, integrity{committed: got}); err != nil {
			s.closeRecord()
			return fmt.Errorf("store: open: %w", err)
		}
	}
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
