package kms

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/envelope"
)

// TestSealLayout checks AppendSeal's associated data against its
// documentation, byte by byte: the body opens in the backend under
// "pocketkms/v1" 0x00 tag 0x00 version(4, big-endian) 0xFF ad, built here
// by hand, and under nothing else tried; and no associated data Encrypt
// uses — a non-convergent key's prefix, a convergent key's prefix, length
// and context for every length 1..MaxContext — has 0xFF where AppendSeal
// puts it, so no context can forge a sealed ciphertext's associated data.
func TestSealLayout(t *testing.T) {
	ctx := context.Background()
	b, err := memory.New(bytes.Repeat([]byte{0x42}, memory.RootKeySize))
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(ctx, b, WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	k, err := e.CreateKey(ctx, CreateKeyRequest{Name: "layout", Type: AES256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.RotateKey(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	ad := []byte("orders/2024")
	ct, err := e.AppendSeal(ctx, nil, k.Tag, []byte("plaintext"), ad)
	if err != nil {
		t.Fatal(err)
	}
	v, body, err := envelope.Parse(string(ct), 0)
	if err != nil || v != 2 {
		t.Fatalf("envelope: version %d, %v", v, err)
	}
	_, s, err := e.lookup("test", k.Tag)
	if err != nil {
		t.Fatal(err)
	}
	bk, err := e.loadKey(ctx, s, s.current()) // version 2
	if err != nil {
		t.Fatal(err)
	}
	documented := []byte("pocketkms/v1\x00" + k.Tag + "\x00")
	documented = binary.BigEndian.AppendUint32(documented, 2)
	prefix := bytes.Clone(documented)
	documented = append(append(documented, 0xFF), ad...)
	open := func(aad []byte) ([]byte, error) {
		return bk.(backend.Decrypter).Decrypt(ctx, &backend.DecryptRequest{Ciphertext: body, AdditionalData: aad})
	}
	if pt, err := open(documented); err != nil || string(pt) != "plaintext" {
		t.Fatalf("the documented associated data does not open the body: %v", err)
	}
	for _, wrong := range [][]byte{prefix, append(bytes.Clone(prefix), ad...), append(append(bytes.Clone(prefix), byte(len(ad))), ad...)} {
		if _, err := open(wrong); !errors.Is(err, backend.ErrDecryptionFailed) {
			t.Fatalf("associated data %q opened the body (%v)", wrong, err)
		}
	}

	// Encrypt's associated data never has 0xFF after the prefix.
	conv, err := e.CreateKey(ctx, CreateKeyRequest{Name: "conv", Type: AES256, Convergent: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		tag string
		v   uint32
	}{{k.Tag, 2}, {conv.Tag, 1}} {
		_, s, err := e.lookup("test", c.tag)
		if err != nil {
			t.Fatal(err)
		}
		cur := s.current()
		prefix := binary.BigEndian.AppendUint32([]byte("pocketkms/v1\x00"+c.tag+"\x00"), c.v)
		sc := new(scratch)
		sealed := gcmAD(sc, s, cur, nil, aeadData{on: true})
		if !bytes.Equal(sealed, append(bytes.Clone(prefix), sealTag)) {
			t.Fatalf("sealed associated data with no ad: %q", sealed)
		}
		for n := 0; n <= MaxContext; n++ {
			if s.convergent && n == 0 {
				continue
			}
			encAD := aesAD(new(scratch), s, cur, bytes.Repeat([]byte{0xFF}, n))
			if !bytes.HasPrefix(encAD, prefix) {
				t.Fatal("Encrypt's associated data does not start with the prefix")
			}
			if len(encAD) > len(prefix) && encAD[len(prefix)] == sealTag {
				t.Fatalf("Encrypt's associated data for a %d-byte context has the seal byte after the prefix", n)
			}
			if !s.convergent && len(encAD) != len(prefix) {
				t.Fatal("a non-convergent key's Encrypt binds more than the prefix")
			}
		}
	}
}
