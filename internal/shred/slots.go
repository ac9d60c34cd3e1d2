package shred

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/pocketkms/kms/internal/atomicfile"
	"github.com/pocketkms/kms/internal/keytag"
)

// SlotFile is the name of the slot file inside DirName.
const SlotFile = "keys"

// The slot format (see the package documentation).
const (
	slotSize    = 128
	slotMagic   = "PKSS"
	slotVersion = 1
	offKind     = 5
	offSeq      = 8
	offTag      = 16
	offKey      = offTag + keytag.Len
	offCRC      = slotSize - 4

	kindKey  = 1
	kindNext = 2

	// noSlot is the slot of a key read from a legacy file (one file per
	// key) that Migrate has not moved yet.
	noSlot = -1
)

// growMin and growMax bound the slots one growth of the slot file adds:
// a quarter of the file, within them.
const (
	growMin = 64
	growMax = 8192
)

// SlotSize is the size in bytes of one slot of the slot file.
const SlotSize = slotSize

// slotState is what a slot of the file holds.
type slotState int

const (
	slotFree    slotState = iota // all zeros
	slotValid                    // a key, its frame and checksum intact
	slotDamaged                  // anything else
)

// marshalSlot frames key for tag and kind at sequence number seq into
// dst (slotSize bytes).
func marshalSlot(dst []byte, kind byte, seq uint64, tag string, key []byte) {
	clear(dst[:slotSize])
	copy(dst, slotMagic)
	dst[len(slotMagic)] = slotVersion
	dst[offKind] = kind
	binary.BigEndian.PutUint64(dst[offSeq:], seq)
	copy(dst[offTag:], tag)
	copy(dst[offKey:], key)
	binary.BigEndian.PutUint32(dst[offCRC:], crc32c(dst[:offCRC]))
}

// parseSlot reads the slot b (slotSize bytes). For a valid slot it
// returns its kind, sequence number, tag bytes and key bytes (both
// sub-slices of b). A damaged slot returns its kind and tag bytes as they
// read, which are a guess: the caller attributes the damage to a key only
// when they name one.
func parseSlot(b []byte) (st slotState, kind byte, seq uint64, tag, key []byte) {
	b = b[:slotSize]
	tag, key = b[offTag:offKey], b[offKey:offKey+KeySize]
	kind = b[offKind]
	if allZero(b) {
		return slotFree, 0, 0, nil, nil
	}
	if string(b[:len(slotMagic)]) != slotMagic || b[len(slotMagic)] != slotVersion ||
		(kind != kindKey && kind != kindNext) || b[6] != 0 || b[7] != 0 ||
		!allZero(b[offKey+KeySize:offCRC]) || !keytag.Valid(string(tag)) ||
		binary.BigEndian.Uint32(b[offCRC:]) != crc32c(b[:offCRC]) {
		return slotDamaged, kind, 0, tag, nil
	}
	return slotValid, kind, binary.BigEndian.Uint64(b[offSeq:]), tag, key
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// slotRef is a slot holding tag's key or next key besides the one in use:
// a valid one superseded by a later write (a crash between writing its
// successor and zeroing it), or a damaged one.
type slotRef struct {
	slot int32
	kind byte
	bad  bool
}

// loadSlots builds the index from the slot file's bytes: every valid
// slot's key, the winner of duplicates, the free slots, the others.
// Duplicates of one tag and kind (a crash between writing a slot's
// successor and zeroing it) resolve to the highest sequence number, then
// the lowest slot: the successor, written after its predecessor.
func (ks *Keys) loadSlots(raw []byte) {
	n := len(raw) / slotSize
	ks.nslots = int32(n)
	// The valid slots' tags share one string (one allocation for all of
	// them); ShareTags swaps in the caller's.
	var sb strings.Builder
	sb.Grow(n * keytag.Len)
	type found struct {
		slot int32
		kind byte
		seq  uint64
	}
	var valid []found
	var free []int32
	var bad []slotRef
	var badTags []string
	for i := range n {
		st, kind, seq, tag, _ := parseSlot(raw[i*slotSize:])
		switch st {
		case slotFree:
			free = append(free, int32(i))
		case slotValid:
			sb.Write(tag)
			valid = append(valid, found{int32(i), kind, seq})
			ks.seq = max(ks.seq, seq)
		default:
			if kind == kindKey && keytag.Valid(string(tag)) {
				// Kept (not reused) while it is the only trace of tag's
				// key: Get reports it damaged.
				bad = append(bad, slotRef{int32(i), kind, true})
				badTags = append(badTags, string(tag))
			} else {
				// A torn next key (a rotation's Next that never
				// returned, so no record uses it) or a slot naming no
				// key: free to reuse.
				free = append(free, int32(i))
			}
		}
	}
	all := sb.String()
	for j, f := range valid {
		tag := all[j*keytag.Len : (j+1)*keytag.Len]
		m := ks.keys
		if f.kind == kindNext {
			m = ks.nexts
		}
		if old := m[tag]; old != nil {
			oldSeq := binary.BigEndian.Uint64(raw[int(old.slot)*slotSize+offSeq:])
			if oldSeq > f.seq || (oldSeq == f.seq && old.slot < f.slot) {
				ks.addExtra(tag, slotRef{f.slot, f.kind, false})
				continue
			}
			ks.addExtra(tag, slotRef{old.slot, f.kind, false})
			old.clear()
		}
		k := newKey(tag, raw[int(f.slot)*slotSize+offKey:int(f.slot)*slotSize+offKey+KeySize])
		k.slot = f.slot
		m[tag] = k
	}
	for i, r := range bad {
		tag := badTags[i]
		ks.addExtra(tag, r)
		if ks.keys[tag] == nil {
			ks.setDamaged(tag, kindKey)
		}
	}
	slices.Reverse(free)
	ks.free = free
}

// addExtra records r as one of tag's slots besides the ones in use.
func (ks *Keys) addExtra(tag string, r slotRef) {
	if ks.extra == nil {
		ks.extra = map[string][]slotRef{}
	}
	tag = strings.Clone(tag) // not the shared string of all tags
	ks.extra[tag] = append(ks.extra[tag], r)
}

func (ks *Keys) setDamaged(tag string, kind byte) {
	if ks.damaged == nil {
		ks.damaged = map[string]byte{}
	}
	ks.damaged[strings.Clone(tag)] |= kind
}

// fileLocked returns the slot file open for writing, creating the
// directory and the file (both synced into their parents) on first use.
func (ks *Keys) fileLocked() (*os.File, error) {
	if ks.f != nil {
		return ks.f, nil
	}
	if err := ks.mkdir(); err != nil {
		return nil, err
	}
	path := filepath.Join(ks.dir, SlotFile)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
			if err = syncDir(ks.dir); err != nil {
				f.Close()
				return nil, err
			}
		}
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", SlotFile)
	}
	if err == nil && fi.Size() < int64(ks.nslots)*slotSize {
		// Shorter than what Open read: changed behind this Keys' back.
		err = fmt.Errorf("%s shrank since it was read", SlotFile)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	ks.f = f
	return f, nil
}

// allocLocked returns a free slot, growing the file when there is none:
// the new slots are written as zeros and synced before any is used, so
// that writing a key into a slot is an overwrite in place, whose sync
// does not change the file's size.
func (ks *Keys) allocLocked() (int32, error) {
	f, err := ks.fileLocked()
	if err != nil {
		return 0, err
	}
	if n := len(ks.free); n > 0 {
		s := ks.free[n-1]
		ks.free = ks.free[:n-1]
		return s, nil
	}
	add := min(max(growMin, ks.nslots/4), growMax)
	if _, err := f.WriteAt(make([]byte, int(add)*slotSize), int64(ks.nslots)*slotSize); err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	for s := ks.nslots + add - 1; s >= ks.nslots; s-- {
		ks.free = append(ks.free, s)
	}
	ks.nslots += add
	return ks.allocLocked()
}

// release returns slot s to the free list: its zeros are written (not
// necessarily synced yet).
func (ks *Keys) release(s int32) { ks.free = append(ks.free, s) }

// slotWrite is the content for one slot: a framed key, or nil for zeros.
type slotWrite struct {
	slot int32
	data []byte
}

// writeSlots writes ws to f, one system call per run of consecutive
// slots, without syncing.
func writeSlots(f *os.File, ws []slotWrite) error {
	slices.SortFunc(ws, func(a, b slotWrite) int { return int(a.slot - b.slot) })
	var buf []byte
	for i := 0; i < len(ws); {
		j := i + 1
		for j < len(ws) && ws[j].slot == ws[j-1].slot+1 {
			j++
		}
		buf = slices.Grow(buf[:0], (j-i)*slotSize)[:(j-i)*slotSize]
		for k := i; k < j; k++ {
			dst := buf[(k-i)*slotSize : (k-i+1)*slotSize]
			if ws[k].data == nil {
				clear(dst)
			} else {
				copy(dst, ws[k].data)
			}
		}
		_, err := f.WriteAt(buf, int64(ws[i].slot)*slotSize)
		if err != nil {
			clear(buf)
			return err
		}
		i = j
	}
	clear(buf)
	return nil
}

// syncer lets writers of different slots share one fdatasync: a writer
// calls sync after its write; if a sync is under way it waits for the
// next one, which covers every write made before it began.
type syncer struct {
	mu      sync.Mutex
	cond    sync.Cond
	issued  uint64 // writes announced
	done    uint64 // writes covered by a finished sync
	running bool
	// failed holds the ranges (from, to] of writes whose sync failed.
	failed []failedSync
}

type failedSync struct {
	from, to uint64
	err      error
}

func (s *syncer) sync(f *os.File) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cond.L == nil {
		s.cond.L = &s.mu
	}
	s.issued++
	me := s.issued
	for s.done < me {
		if !s.running {
			s.running = true
			from, to := s.done, s.issued
			s.mu.Unlock()
			err := atomicfile.Datasync(f)
			s.mu.Lock()
			s.running = false
			s.done = to
			if err != nil {
				s.failed = append(s.failed, failedSync{from, to, err})
			}
			s.cond.Broadcast()
			continue
		}
		s.cond.Wait()
	}
	var err error
	for _, fs := range s.failed {
		if fs.from < me && me <= fs.to {
			err = fs.err
		}
	}
	if len(s.failed) > 64 {
		// Failures are rare (and each one fails every write it covered);
		// a waiter finds its own among the latest.
		s.failed = slices.Clone(s.failed[len(s.failed)-64:])
	}
	return err
}

// SlotOffset returns the byte offset, in the slot file of dir (the Badger
// directory, as given to Open), of the slot that holds tag's key (with
// next: its next key); ok is false when no valid slot does. It reads the
// file as Open does and writes nothing: for tests and tools that examine
// or damage a key's slot.
func SlotOffset(dir, tag string, next bool) (off int64, ok bool, err error) {
	ks, err := Open(dir)
	if err != nil {
		return 0, false, err
	}
	defer ks.Close()
	m := ks.keys
	if next {
		m = ks.nexts
	}
	k := m[tag]
	if k == nil || k.slot == noSlot {
		return 0, false, nil
	}
	return int64(k.slot) * slotSize, true, nil
}
