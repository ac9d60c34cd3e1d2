package backend

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
)

// ConvergentKeySize is the size in bytes of a convergent key's
// nonce-derivation (HMAC-SHA256) key.
const ConvergentKeySize = 32

// NonceSize is the AES-GCM nonce size every backend uses.
const NonceSize = 12

// TagSize is the AES-GCM tag size every backend uses.
const TagSize = 16

const convergentLabel = "pocketkms/convergent-nonce/v1"

// ConvergentNonceMessage returns the message whose HMAC-SHA256, under the
// version's convergent key and truncated to NonceSize bytes, is the nonce of
// a convergent AES256 encryption:
//
//	nonce = HMAC-SHA256(k, label ‖ uint64be(len(ad)) ‖ ad ‖ plaintext)[:12]
//
// where label is "pocketkms/convergent-nonce/v1". Every backend uses this
// exact construction, so the same (version, additional data, plaintext)
// gives the same ciphertext on any backend given the same keys. The
// additional data the Engine passes binds key tag, version and the caller's
// context, so the nonce depends on (context, plaintext) as NAVER documents.
func ConvergentNonceMessage(additionalData, plaintext []byte) []byte {
	msg := make([]byte, 0, len(convergentLabel)+8+len(additionalData)+len(plaintext))
	msg = append(msg, convergentLabel...)
	msg = binary.BigEndian.AppendUint64(msg, uint64(len(additionalData)))
	msg = append(msg, additionalData...)
	msg = append(msg, plaintext...)
	return msg
}

// ConvergentNonce computes the convergent nonce in software, for backends
// that hold the convergent key in memory. Hardware backends compute the HMAC
// of ConvergentNonceMessage inside the token and truncate it to NonceSize.
func ConvergentNonce(convergentKey, additionalData, plaintext []byte) []byte {
	m := hmac.New(sha256.New, convergentKey)
	m.Write([]byte(convergentLabel))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(additionalData)))
	m.Write(n[:])
	m.Write(additionalData)
	m.Write(plaintext)
	return m.Sum(nil)[:NonceSize]
}
