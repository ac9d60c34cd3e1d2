package memory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/pocketkms/kms/backend"
)

// handleFormatV1 is the first byte of every handle this version writes.
const handleFormatV1 byte = 1

// handleLabel separates the handle's associated data from any other use
// of the root key.
const handleLabel = "pocketkms/memory/handle"

// handleOverhead is the size of a handle around its material.
const handleOverhead = 1 + backend.NonceSize + backend.TagSize

// errOpen is returned by open; callers turn it into ErrInvalidHandle.
var errOpen = errors.New("memory: handle does not open")

// handleAD returns the associated data that binds a handle to what it was
// made for. Variable fields carry a length prefix so that no two distinct
// inputs encode alike.
func handleAD(ref backend.KeyRef, typ backend.KeyType, convergent bool) []byte {
	ad := make([]byte, 0, 4+len(handleLabel)+1+4+len(ref.KeyTag)+4+4+len(ref.Purpose)+4+len(typ)+1)
	ad = appendField(ad, handleLabel)
	ad = append(ad, handleFormatV1)
	ad = appendField(ad, ref.KeyTag)
	ad = binary.BigEndian.AppendUint32(ad, ref.Version)
	ad = appendField(ad, string(ref.Purpose))
	ad = appendField(ad, string(typ))
	if convergent {
		ad = append(ad, 1)
	} else {
		ad = append(ad, 0)
	}
	return ad
}

func appendField(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// seal returns the handle of material.
func (b *Backend) seal(ref backend.KeyRef, typ backend.KeyType, convergent bool, material []byte) ([]byte, error) {
	return b.sealUnder(b.root.Load(), ref, typ, convergent, material)
}

// sealUnder returns the handle of material under the root key rk.
func (b *Backend) sealUnder(rk *rootState, ref backend.KeyRef, typ backend.KeyType, convergent bool, material []byte) ([]byte, error) {
	h := make([]byte, 1+backend.NonceSize, handleOverhead+len(material))
	h[0] = handleFormatV1
	if _, err := io.ReadFull(b.random, h[1:]); err != nil {
		return nil, fmt.Errorf("read nonce: %w", err)
	}
	return rk.aead.Seal(h, h[1:], material, handleAD(ref, typ, convergent)), nil
}

// open returns the material sealed in h, or errOpen and nothing else.
func (b *Backend) open(ref backend.KeyRef, typ backend.KeyType, convergent bool, h []byte) ([]byte, error) {
	if len(h) < handleOverhead || h[0] != handleFormatV1 {
		return nil, errOpen
	}
	nonce := h[1 : 1+backend.NonceSize]
	m, err := b.root.Load().aead.Open(nil, nonce, h[1+backend.NonceSize:], handleAD(ref, typ, convergent))
	if err != nil {
		return nil, errOpen
	}
	return m, nil
}
