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
	"slices"
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
	buf := AppendText(make([]byte, 0, TextLen(version, len(body))), version, body)
	// buf is never touched again, so the string can share its memory.
	// Encoding into a reused buffer and copying it out with string(buf)
	// instead costs about 10% more for a 1 KiB body (BenchmarkFormat1KiB
	// against BenchmarkFormatCopy1KiB): the copy reads 1.4 KB more than
	// the zeroing of a fresh buffer does.
	return unsafe.String(unsafe.SliceData(buf), len(buf))
}

// TextLen returns the length of the envelope of an n-byte body.
func TextLen(version uint32, n int) int {
	d := 1
	for x := version; x >= 10; x /= 10 {
		d++
	}
	return len(Prefix) + d + 1 + std.EncodedLen(n)
}

// AppendText appends "ncpkms:v{version}:" + base64(body) to dst and
// returns the extended slice, growing dst at most once. body must not
// overlap the part of dst's capacity beyond len(dst). It panics if version
// is 0 or above MaxVersion, which is a programming error in the caller.
func AppendText(dst []byte, version uint32, body []byte) []byte {
	if version == 0 || version > MaxVersion {
		panic("envelope: version out of range")
	}
	n := std.EncodedLen(len(body))
	dst = slices.Grow(dst, TextLen(version, len(body)))
	dst = append(dst, Prefix...)
	dst = strconv.AppendUint(dst, uint64(version), 10)
	dst = append(dst, ':')
	start := len(dst)
	dst = dst[:start+n]
	std.Encode(dst[start:], body)
	return dst
}

// Version returns the version of an envelope without decoding its body. It
// fails with ErrMalformed where Parse would fail on the prefix.
func Version[T string | []byte](s T) (uint32, error) {
	v, _, err := split(s)
	return v, err
}

// Parse returns the version and body of a canonical envelope, or an error
// wrapping ErrMalformed. maxBody bounds the decoded body size (0 means no
// bound); the bound is checked before decoding so memory stays bounded.
func Parse(s string, maxBody int) (version uint32, body []byte, err error) {
	return AppendParse(nil, s, maxBody)
}

// AppendParse is Parse appending the body to dst (growing it at most once)
// and returning the extended slice; on error it returns dst unchanged in
// length. A caller that reuses dst decodes without allocating.
func AppendParse(dst []byte, s string, maxBody int) (version uint32, out []byte, err error) {
	v, enc, err := split(s)
	if err != nil {
		return 0, dst, err
	}
	// Decode only reads its source, so it may view the string's bytes
	// rather than copy them: for a 1 KiB body that copy is a 1.4 KB
	// allocation (or memmove) that Decrypt would pay on every call.
	return decodeBody(dst, v, unsafe.Slice(unsafe.StringData(enc), len(enc)), maxBody)
}

// AppendParseBytes is AppendParse for an envelope held in a []byte, which
// it only reads.
func AppendParseBytes(dst []byte, b []byte, maxBody int) (version uint32, out []byte, err error) {
	v, enc, err := split(b)
	if err != nil {
		return 0, dst, err
	}
	return decodeBody(dst, v, enc, maxBody)
}

func decodeBody(dst []byte, v uint32, enc []byte, maxBody int) (uint32, []byte, error) {
	if len(enc) == 0 || len(enc)%4 != 0 {
		return 0, dst, ErrMalformed
	}
	dl := std.DecodedLen(len(enc))
	if maxBody > 0 && dl > maxBody+2 {
		return 0, dst, ErrMalformed
	}
	start := len(dst)
	out := slices.Grow(dst, dl)[:start+dl]
	n, derr := std.Decode(out[start:], enc)
	if derr != nil {
		return 0, dst, ErrMalformed
	}
	// Strict decoding still skips '\r' and '\n'; a canonical envelope has
	// exactly the characters its body needs.
	if std.EncodedLen(n) != len(enc) {
		return 0, dst, ErrMalformed
	}
	if maxBody > 0 && n > maxBody {
		return 0, dst, ErrMalformed
	}
	return v, out[:start+n], nil
}

// split checks the prefix and version digits and returns the version and
// the base64 part.
func split[T string | []byte](s T) (uint32, T, error) {
	var none T
	if len(s) < len(Prefix)+3 || string(s[:len(Prefix)]) != Prefix {
		return 0, none, ErrMalformed
	}
	rest := s[len(Prefix):]
	i := 0
	var v uint64
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		v = v*10 + uint64(rest[i]-'0')
		i++
		if i > 9 {
			return 0, none, ErrMalformed
		}
	}
	if i == 0 || rest[0] == '0' || i >= len(rest) || rest[i] != ':' {
		return 0, none, ErrMalformed
	}
	if v == 0 || v > MaxVersion {
		return 0, none, ErrMalformed
	}
	return uint32(v), rest[i+1:], nil
}
