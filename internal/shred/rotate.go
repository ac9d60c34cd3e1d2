package shred

import "fmt"

// Next keys. A root-key rotation (kms.Engine.RotateRootKey) gives every
// key a second shred key, its next key (a slot of kind 2 in the slot
// file, same checksum), and seals the key's handles under the new root
// key with it. Once the rotation has switched to the new root key,
// Promote makes the next key the key: the old key's slot, the only copy
// of the key that sealed the handles under the old root key, is zeroed,
// so the copies Badger keeps of those handles open under nothing, not
// even with the old root key. A rotation rolled back drops the next keys
// (DropNext).

// NextSuffix ends the file name of a next key in the former layout (one
// file per key).
const NextSuffix = ".next"

// Next returns tag's next key, making it (durably, as Create does) when it
// has none.
func (ks *Keys) Next(tag string) (*Key, error) {
	if err := ks.lock(tag); err != nil {
		return nil, err
	}
	defer ks.mu.Unlock()
	if k := ks.nexts[tag]; k != nil {
		return k, nil
	}
	b := newKeyBytes()
	slot, err := ks.writeSlotLocked(kindNext, tag, b)
	if err != nil {
		clear(b)
		return nil, fmt.Errorf("shred: next: %w", err)
	}
	k := newKey(tag, b)
	k.slot = slot
	ks.nexts[tag] = k
	if ks.damaged[tag]&kindNext != 0 {
		// A damaged former-layout file is superseded; it goes with
		// the tag's other files.
		ks.damaged[tag] &^= kindNext
	}
	return k, nil
}

// writeSlotLocked writes b as tag's key of kind into a free slot and
// syncs it; on failure the slot is zeroed (best effort) and freed.
func (ks *Keys) writeSlotLocked(kind byte, tag string, b []byte) (int32, error) {
	slot, err := ks.allocLocked()
	if err != nil {
		return 0, err
	}
	ks.seq++
	var buf [slotSize]byte
	marshalSlot(buf[:], kind, ks.seq, tag, b)
	_, err = ks.f.WriteAt(buf[:], int64(slot)*slotSize)
	clear(buf[:])
	if err == nil {
		err = ks.syncs.sync(ks.f)
	}
	if err != nil {
		ks.unwriteLocked(ks.f, slot)
		return 0, err
	}
	return slot, nil
}

// GetNext returns tag's next key; ok is false (err nil) when it has none.
// A damaged next key of the former layout is ErrCorrupt.
func (ks *Keys) GetNext(tag string) (k *Key, ok bool, err error) {
	if err := ks.lock(tag); err != nil {
		return nil, false, err
	}
	defer ks.mu.Unlock()
	return ks.getLocked(ks.nexts, tag, kindNext)
}

// Promote makes tag's next key its key: the next key is written into a
// new slot as the key and synced, then the old key's slot and the next
// key's (and any leftover of the tag) are overwritten with zeros and
// synced (a crash in between leaves both keys; the new one, written
// last, wins). The old Key is cleared (ErrDeleted from then on); the next
// Key object becomes the key. A tag with no next key is left as it is.
func (ks *Keys) Promote(tag string) error {
	if err := ks.lock(tag); err != nil {
		return err
	}
	defer ks.mu.Unlock()
	n := ks.nexts[tag]
	if n == nil {
		return nil
	}
	slot, err := ks.writeSlotLocked(kindKey, tag, n.b[:])
	if err != nil {
		return fmt.Errorf("shred: promote: %w", err)
	}
	var ws []slotWrite
	if n.slot != noSlot {
		ws = append(ws, slotWrite{slot: n.slot})
	}
	old := ks.keys[tag]
	if old != nil && old.slot != noSlot {
		ws = append(ws, slotWrite{slot: old.slot})
	}
	for _, r := range ks.extra[tag] {
		ws = append(ws, slotWrite{slot: r.slot})
	}
	// From here the new slot is the key, whatever fails.
	n.slot = slot
	ks.keys[tag] = n
	delete(ks.nexts, tag)
	if old != nil {
		old.clear()
	}
	delete(ks.extra, tag)
	if ks.damaged[tag] != 0 {
		delete(ks.damaged, tag)
	}
	if err := ks.zeroLocked(ws, true); err != nil {
		// The old slots stay: the new one wins over them, and Prune
		// zeroes them at the next open.
		for _, w := range ws {
			ks.addExtra(tag, slotRef{slot: w.slot})
		}
		return fmt.Errorf("shred: promote: %w", err)
	}
	if err := ks.shredLegacyLocked(tag, tag+NextSuffix); err != nil {
		return fmt.Errorf("shred: promote: %w", err)
	}
	return nil
}

// DropNext shreds tag's next key (as Delete does a key), if it has one.
func (ks *Keys) DropNext(tag string) error {
	if err := ks.lock(tag); err != nil {
		return err
	}
	defer ks.mu.Unlock()
	var ws []slotWrite
	if k := ks.nexts[tag]; k != nil {
		if k.slot != noSlot {
			ws = append(ws, slotWrite{slot: k.slot})
		}
		k.clear()
		delete(ks.nexts, tag)
	}
	keep := ks.extra[tag][:0]
	for _, r := range ks.extra[tag] {
		if r.kind == kindNext {
			ws = append(ws, slotWrite{slot: r.slot})
		} else {
			keep = append(keep, r)
		}
	}
	if len(keep) == 0 {
		delete(ks.extra, tag)
	} else {
		ks.extra[tag] = keep
	}
	if ks.damaged[tag]&kindNext != 0 {
		ks.damaged[tag] &^= kindNext
		if ks.damaged[tag] == 0 {
			delete(ks.damaged, tag)
		}
	}
	if err := ks.zeroLocked(ws, true); err != nil {
		return fmt.Errorf("shred: drop next key: %w", err)
	}
	if err := ks.shredLegacyLocked(tag + NextSuffix); err != nil {
		return fmt.Errorf("shred: drop next key: %w", err)
	}
	return nil
}

// NextTags returns the tags that have a next key, sorted.
func (ks *Keys) NextTags() ([]string, error) { return ks.tagsOf(ks.nexts, kindNext) }
