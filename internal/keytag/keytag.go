// Package keytag is the module's one key-tag validator: a key tag is 64
// lowercase hexadecimal characters (32 random bytes), as NAVER KMS writes
// it.
package keytag

// Len is the length of a key tag.
const Len = 64

// Valid reports whether s is exactly 64 lowercase hex characters.
func Valid(s string) bool {
	if len(s) != Len {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Normalize lower-cases a tag of 64 hex characters in either case; ok is
// false for anything else. NAVER's account-authenticated API takes tags
// case-insensitively; the token plane does not (it uses Valid).
func Normalize(s string) (tag string, ok bool) {
	if Valid(s) {
		return s, true
	}
	if len(s) != Len {
		return "", false
	}
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			b[i] = c + ('a' - 'A')
		default:
			return "", false
		}
	}
	return string(b), true
}
