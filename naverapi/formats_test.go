package naverapi

import (
	"regexp"
	"testing"
)

var (
	reBase64   = regexp.MustCompile(`^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2}==)$`)
	reEnvelope = regexp.MustCompile(`^ncpkms:v[1-9][0-9]{0,8}:([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2}==)$`)
)

// FuzzFormats checks the hand-written format checks against NAVER's
// documented patterns (spec §4.1, §4.2).
func FuzzFormats(f *testing.F) {
	for _, s := range []string{"", "SGVsbG8gS01T", "dGVzdA==", "dGVzdA=", "dGVzdA", "-_-_", "ab=c", "a===", "ncpkms:v1:AAAA", "ncpkms:v0:AAAA",
		"ncpkms:v01:AAAA", "ncpkms:v123456789:QQ==", "ncpkms:v1234567890:QQ==", "ncpkms:v1:", "ncpkms:v1:AA\nA=", "ncpkms:1:AAAA"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := isStdBase64(s), reBase64.MatchString(s); got != want {
			t.Fatalf("isStdBase64(%q) = %v, pattern says %v", s, got, want)
		}
		if got, want := checkEnvelope(s) == "", reEnvelope.MatchString(s) && len(s) <= maxCiphertextChars; got != want {
			t.Fatalf("checkEnvelope(%q) accepts: %v, pattern says %v", s, got, want)
		}
	})
}
