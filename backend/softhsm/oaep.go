//go:build cgo

package softhsm

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
)

// oaepDecode performs EME-OAEP decoding (RFC 8017 §7.1.2, step 3) with
// SHA-256, MGF1-SHA256 and the empty label on em, the k-byte result of the
// raw RSA decryption done in the token (RSADP and I2OSP, steps 2.b–2.c).
// SoftHSM2 2.6 only decrypts OAEP with SHA-1, hence this function; it is
// the one primitive this package implements itself.
//
// It runs in time independent of em's content, and every failure is the
// same ok == false, as §7.1.2 requires ("the opponent [must not] be able
// to distinguish the error conditions"). em is overwritten. The returned
// message aliases em.
func oaepDecode(em []byte, k int) (msg []byte, ok bool) {
	const hLen = sha256.Size
	// Step 1.c: k < 2hLen + 2 is a decryption error.
	if len(em) != k || k < 2*hLen+2 {
		return nil, false
	}
	// Step 3.a: lHash = Hash(L), L empty.
	lHash := sha256.Sum256(nil)
	// Step 3.b: EM = Y ‖ maskedSeed ‖ maskedDB.
	y := em[0]
	seed := em[1 : 1+hLen]
	db := em[1+hLen:]
	// Steps 3.c–3.f: seed = maskedSeed ⊕ MGF(maskedDB, hLen);
	// DB = maskedDB ⊕ MGF(seed, k − hLen − 1).
	mgf1XOR(seed, db)
	mgf1XOR(db, seed)
	// Step 3.g: DB = lHash' ‖ PS ‖ 0x01 ‖ M. Check lHash' = lHash, Y = 0,
	// and that PS (zero bytes) ends in 0x01, all without branching on
	// secret data.
	good := subtle.ConstantTimeCompare(lHash[:], db[:hLen])
	good &= subtle.ConstantTimeByteEq(y, 0)
	rest := db[hLen:]
	lookingForIndex := 1
	index := 0
	invalid := 0
	for i := range rest {
		equals0 := subtle.ConstantTimeByteEq(rest[i], 0)
		equals1 := subtle.ConstantTimeByteEq(rest[i], 1)
		index = subtle.ConstantTimeSelect(lookingForIndex&equals1, i, index)
		lookingForIndex = subtle.ConstantTimeSelect(equals1, 0, lookingForIndex)
		invalid = subtle.ConstantTimeSelect(lookingForIndex&^equals0, 1, invalid)
	}
	if good&^invalid&^lookingForIndex != 1 {
		return nil, false
	}
	// Step 4: output M.
	return rest[index+1:], true
}

// mgf1XOR XORs out with MGF1-SHA256(seed) (RFC 8017 §B.2.1).
func mgf1XOR(out, seed []byte) {
	var counter [4]byte
	var digest [sha256.Size]byte
	done := 0
	for done < len(out) {
		h := sha256.New()
		h.Write(seed)
		h.Write(counter[:])
		h.Sum(digest[:0])
		for i := 0; i < len(digest) && done < len(out); i++ {
			out[done] ^= digest[i]
			done++
		}
		binary.BigEndian.PutUint32(counter[:], binary.BigEndian.Uint32(counter[:])+1)
	}
	clear(digest[:])
}
