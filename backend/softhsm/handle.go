//go:build cgo

package softhsm

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"

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

// The CKA_ID of new material records when it was made, for Sweep:
//
//	offset  size  field
//	0       4     "pkm1"
//	4       6     creation time, Unix milliseconds, big endian
//	10      6     random
//
// PKCS#11 gives most objects no creation time (CKA_START_DATE is a day,
// and optional), and the ID is the one attribute every object of the
// material shares and every handle holds, so the handle format does not
// change. Material made before this format has a random ID: its creation
// time is unknown (1 in 2³² such IDs starts with the marker by chance and
// gets a meaningless time).
var idMarker = [4]byte{'p', 'k', 'm', '1'}

// newID returns a fresh CKA_ID for material created at now.
func newID(now time.Time) ([idSize]byte, error) {
	var id [idSize]byte
	copy(id[:4], idMarker[:])
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(now.UnixMilli()))
	copy(id[4:10], ms[2:])
	if _, err := rand.Read(id[10:]); err != nil {
		return id, err
	}
	return id, nil
}

// idCreated returns the creation time an ID records, if it has one.
func idCreated(id [idSize]byte) (time.Time, bool) {
	if [4]byte(id[:4]) != idMarker {
		return time.Time{}, false
	}
	var ms [8]byte
	copy(ms[2:], id[4:10])
	return time.UnixMilli(int64(binary.BigEndian.Uint64(ms[:]))), true
}

// parseLabel is the inverse of label and convergentLabel: it returns the
// KeyRef a label names and whether it is a convergent nonce key's label.
// ok is false for labels this package does not make.
func parseLabel(label string) (ref backend.KeyRef, convergent, ok bool) {
	rest, found := strings.CutPrefix(label, labelPrefix)
	if !found {
		return ref, false, false
	}
	rest, convergent = strings.CutSuffix(rest, ":convergent")
	parts := strings.Split(rest, ":")
	if len(parts) != 3 {
		return ref, false, false
	}
	v, err := strconv.ParseUint(parts[2], 10, 32)
	if err != nil || strconv.FormatUint(v, 10) != parts[2] {
		return ref, false, false
	}
	ref = backend.KeyRef{KeyTag: parts[1], Version: uint32(v), Purpose: backend.Purpose(parts[0])}
	return ref, convergent, true
}
