package shred

import (
	"bytes"
	"errors"
	"testing"
)

// TestNextKeyPromote: a next key is durable, survives a reopen, replaces
// the key on Promote (the old key's file bytes are overwritten and the
// old Key cleared), and Delete, DropNext and Prune remove next keys.
func TestNextKeyPromote(t *testing.T) {
	dir := t.TempDir()
	ks := open(t, dir)
	tag := tagN(1)
	k, err := ks.Create(tag)
	if err != nil {
		t.Fatal(err)
	}
	oldW, _ := k.Wrap([]byte("old handle"), "cipher", 1)
	n, err := ks.Next(tag)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := ks.Next(tag); again != n {
		t.Fatal("Next made a second next key")
	}
	newW, _ := n.Wrap([]byte("new handle"), "cipher", 1)
	ks.Close()

	ks = open(t, dir)
	n2, ok, err := ks.GetNext(tag)
	if err != nil || !ok {
		t.Fatalf("next key after reopen: %v %v", ok, err)
	}
	if h, err := n2.Unwrap(newW, "cipher", 1); err != nil || string(h) != "new handle" {
		t.Fatalf("next key after reopen: %q %v", h, err)
	}
	k2, _, _ := ks.Get(tag)
	oldOff := slotAt(t, dir, tag, false)
	nextOff := slotAt(t, dir, tag, true)
	if err := ks.Promote(tag); err != nil {
		t.Fatal(err)
	}
	if _, err := k2.Unwrap(oldW, "cipher", 1); !errors.Is(err, ErrDeleted) {
		t.Fatalf("the old key after Promote: %v", err)
	}
	cur, ok, _ := ks.Get(tag)
	if !ok || cur != n2 {
		t.Fatal("the next key is not the key after Promote")
	}
	if _, ok, _ := ks.GetNext(tag); ok {
		t.Fatal("a next key is left after Promote")
	}
	raw := readSlots(t, dir)
	if !allZero(raw[oldOff:oldOff+slotSize]) || !allZero(raw[nextOff:nextOff+slotSize]) {
		t.Fatal("the old key's or the next key's slot was not zeroed")
	}
	if off := slotAt(t, dir, tag, false); !bytes.Equal(raw[off+offKey:off+offKey+KeySize], n2.b[:]) {
		t.Fatal("the key's slot does not hold the promoted key")
	}
	ks.Close()
	ks = open(t, dir)
	cur, ok, err = ks.Get(tag)
	if err != nil || !ok {
		t.Fatal(err)
	}
	if _, err := cur.Unwrap(newW, "cipher", 1); err != nil {
		t.Fatalf("the promoted key after reopen: %v", err)
	}
	if _, err := cur.Unwrap(oldW, "cipher", 1); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("the old wrapped handle under the promoted key: %v", err)
	}

	// DropNext, Delete and Prune remove next keys.
	if _, err := ks.Next(tag); err != nil {
		t.Fatal(err)
	}
	if err := ks.DropNext(tag); err != nil {
		t.Fatal(err)
	}
	if tags, _ := ks.NextTags(); len(tags) != 0 {
		t.Fatalf("next keys after DropNext: %v", tags)
	}
	ks.Next(tag)
	if err := ks.Delete(tag); err != nil {
		t.Fatal(err)
	}
	if tags, _ := ks.NextTags(); len(tags) != 0 {
		t.Fatalf("next keys after Delete: %v", tags)
	}
	dead := tagN(2)
	ks.Create(dead)
	ks.Next(dead)
	ks.Close()
	ks = open(t, dir)
	if _, err := ks.Prune(func(string) bool { return false }); err != nil {
		t.Fatal(err)
	}
	if !allZero(readSlots(t, dir)) {
		t.Fatal("slots left after Prune")
	}
}
