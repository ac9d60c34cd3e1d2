//go:build cgo

package softhsm

import (
	"encoding/binary"
	"fmt"

	"github.com/pocketkms/kms/backend"
)

// A handle names the token objects of one piece of key material. It holds
// no key material, only references, so the Engine may store it as it is:
//
//	offset  size  field
//	0       1     format version, 1
//	1       1     key type: 1 AES256, 2 RSA2048, 3 ECDSA
//	2       1     flags: bit 0 convergent; other bits zero
//	3       1     purpose: 1 cipher, 2 token-signing
//	4       4     KeyRef.Version, big endian
//	8       16    CKA_ID shared by every object of the material
//	24      1     length n of KeyRef.KeyTag
//	25      n     KeyRef.KeyTag
//
// The objects carry the CKA_ID and a CKA_LABEL derived from the KeyRef
// (see label), which Load checks, so a handle only loads for the KeyRef,
// type and convergent flag it was made for.
type handle struct {
	ref        backend.KeyRef
	typ        backend.KeyType
	convergent bool
	id         [idSize]byte
}

const (
	handleFormatV1 = 1
	idSize         = 16
	handleFixed    = 25
	flagConvergent = 1
)

var (
	typeCodes    = map[backend.KeyType]byte{backend.AES256: 1, backend.RSA2048: 2, backend.ECDSA: 3}
	purposeCodes = map[backend.Purpose]byte{backend.PurposeCipher: 1, backend.PurposeTokenSigning: 2}
)

func (h *handle) marshal() []byte {
	b := make([]byte, handleFixed, handleFixed+len(h.ref.KeyTag))
	b[0] = handleFormatV1
	b[1] = typeCodes[h.typ]
	if h.convergent {
		b[2] = flagConvergent
	}
	b[3] = purposeCodes[h.ref.Purpose]
	binary.BigEndian.PutUint32(b[4:8], h.ref.Version)
	copy(b[8:24], h.id[:])
	b[24] = byte(len(h.ref.KeyTag))
	return append(b, h.ref.KeyTag...)
}

// parseHandle decodes b strictly; any deviation is ErrInvalidHandle.
func parseHandle(b []byte) (handle, error) {
	var h handle
	if len(b) < handleFixed || b[0] != handleFormatV1 || len(b) != handleFixed+int(b[24]) {
		return h, backend.ErrInvalidHandle
	}
	for t, c := range typeCodes {
		if c == b[1] {
			h.typ = t
		}
	}
	for p, c := range purposeCodes {
		if c == b[3] {
			h.ref.Purpose = p
		}
	}
	if h.typ == "" || h.ref.Purpose == "" || b[2]&^flagConvergent != 0 {
		return h, backend.ErrInvalidHandle
	}
	h.convergent = b[2]&flagConvergent != 0
	h.ref.Version = binary.BigEndian.Uint32(b[4:8])
	copy(h.id[:], b[8:24])
	h.ref.KeyTag = string(b[handleFixed:])
	if h.ref.Validate(h.typ, h.convergent) != nil {
		return h, backend.ErrInvalidHandle
	}
	return h, nil
}

// label is the CKA_LABEL of the material's main object(s); the convergent
// nonce key's label adds ":convergent".
func (h *handle) label() string {
	return fmt.Sprintf("%s%s:%s:%d", labelPrefix, h.ref.Purpose, h.ref.KeyTag, h.ref.Version)
}

// labelPrefix starts the CKA_LABEL of every object this package creates.
const labelPrefix = "pocketkms:"

func (h *handle) convergentLabel() string { return h.label() + ":convergent" }
