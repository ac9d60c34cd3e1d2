// Package envelope formats and parses NAVER KMS ciphertexts and signatures:
// "ncpkms:v{N}:" followed by standard, padded base64.
//
// Use [Format] to build an envelope and [Parse] to read one. Parsing is
// strict and canonical: Parse(s) succeeds only when Format of its result
// gives s back, so no two strings name the same (version, body). It rejects
// v0, leading zeros, versions above 999,999,999, whitespace anywhere, the
// URL-safe alphabet, missing padding, and non-zero padding bits.
package envelope

import (
	"errors"
	"strconv"
	"unsafe"

	"github.com/segmentio/asm/base64"
)

// Prefix starts every envelope.
const Prefix = "ncpkms:v"

// MaxVersion is the largest version an envelope may carry (nine digits).
const MaxVersion = 999_999_999

// ErrMalformed is returned (wrapped) for any string that is not a canonical
// envelope. Its message never contains the input.
var ErrMalformed = errors.New("envelope: malformed ciphertext or signature")

// std is standard, padded, strict base64. segmentio/asm's codec is a
// drop-in for encoding/base64 that runs AVX2 (amd64) or NEON (arm64) code
// over the bulk of the input and hands the tail, padding, and any byte
// outside the alphabet to encoding/base64; with the purego tag or on other
// architectures it is encoding/base64 itself. Base64 of the body was the
// largest cost of Encrypt and Decrypt after AES-GCM: for a 1 KiB body it
// is about ten times faster than encoding/base64 (BENCHMARKS.md).
// FuzzEncode and FuzzDecode check it against encoding/base64.
var std = base64.StdEncoding.Strict()

// Format returns "ncpkms:v{version}:" + base64(body). It panics if version
// is 0 or above MaxVersion, which is a programming error in the caller.
func Format(version uint32, body []byte) string {
	if version == 0 || version > MaxVersion {
		panic("envelope: version out of range")
	}
	n := std.EncodedLen(len(body))
	buf := make([]byte, 0, len(Prefix)+10+n)
	buf = append(buf, Prefix...)
	buf = strconv.AppendUint(buf, uint64(version), 10)
	buf = append(buf, ':')
	start := len(buf)
	buf = buf[:start+n]
	std.Encode(buf[start:], body)
	// buf is never touched again, so the string can share its memory
	// instead of copying 1.4 KB per kilobyte of body.
	return unsafe.String(unsafe.SliceData(buf), len(buf))
}

// Version returns the version of an envelope without decoding its body. It
// fails with ErrMalformed where Parse would fail on the prefix.
func Version(s string) (uint32, error) {
	v, _, err := split(s)
	return v, err
}

// Parse returns the version and body of a canonical envelope, or an error
// wrapping ErrMalformed. maxBody bounds the decoded body size (0 means no
// bound); the bound is checked before decoding so memory stays bounded.
func Parse(s string, maxBody int) (version uint32, body []byte, err error) {
	v, enc, err := split(s)
	if err != nil {
		return 0, nil, err
	}
	if len(enc) == 0 || len(enc)%4 != 0 {
		return 0, nil, ErrMalformed
	}
	if maxBody > 0 && std.DecodedLen(len(enc)) > maxBody+2 {
		return 0, nil, ErrMalformed
	}
	body = make([]byte, std.DecodedLen(len(enc)))
	// Decode only reads its source, so it may view the string's bytes.
	n, derr := std.Decode(body, unsafe.Slice(unsafe.StringData(enc), len(enc)))
	if derr != nil {
		return 0, nil, ErrMalformed
	}
	body = body[:n]
	// Strict decoding still skips '\r' and '\n'; a canonical envelope has
	// exactly the characters its body needs.
	if std.EncodedLen(n) != len(enc) {
		return 0, nil, ErrMalformed
	}
	if maxBody > 0 && len(body) > maxBody {
		return 0, nil, ErrMalformed
	}
	return v, body, nil
}

// split checks the prefix and version digits and returns the version and
// the base64 part.
func split(s string) (uint32, string, error) {
	if len(s) < len(Prefix)+3 || s[:len(Prefix)] != Prefix {
		return 0, "", ErrMalformed
	}
	rest := s[len(Prefix):]
	i := 0
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	if i == 0 || i > 9 || rest[0] == '0' || i >= len(rest) || rest[i] != ':' {
		return 0, "", ErrMalformed
	}
	v, err := strconv.ParseUint(rest[:i], 10, 32)
	if err != nil || v == 0 || v > MaxVersion {
		return 0, "", ErrMalformed
	}
	return uint32(v), rest[i+1:], nil
}
