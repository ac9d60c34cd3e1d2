//go:build cgo

package softhsm

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/pocketkms/kms/backend"
)

var testTag = strings.Repeat("ab", 32)

func TestHandleRoundTrip(t *testing.T) {
	for _, h := range []handle{
		{ref: backend.KeyRef{KeyTag: testTag, Version: 1, Purpose: backend.PurposeCipher}, typ: backend.AES256, convergent: true, id: [16]byte{1, 2, 3}},
		{ref: backend.KeyRef{KeyTag: testTag, Version: 100, Purpose: backend.PurposeCipher}, typ: backend.ECDSA},
		{ref: backend.KeyRef{KeyTag: testTag, Version: 1<<32 - 1, Purpose: backend.PurposeTokenSigning}, typ: backend.RSA2048, id: [16]byte{15: 0xff}},
	} {
		b := h.marshal()
		if len(b) != handleFixed+64 {
			t.Errorf("handle is %d bytes, want %d", len(b), handleFixed+64)
		}
		got, err := parseHandle(b)
		if err != nil || got != h {
			t.Errorf("parseHandle(marshal(%+v)) = %+v, %v", h, got, err)
		}
	}
}

func TestHandleRejects(t *testing.T) {
	good := (&handle{ref: backend.KeyRef{KeyTag: testTag, Version: 1, Purpose: backend.PurposeCipher}, typ: backend.AES256}).marshal()
	mutate := func(i int, v byte) []byte { b := bytes.Clone(good); b[i] = v; return b }
	cases := map[string][]byte{
		"Nil":            nil,
		"Short":          good[:handleFixed-1],
		"Truncated":      good[:len(good)-1],
		"Appended":       append(bytes.Clone(good), 'a'),
		"Format0":        mutate(0, 0),
		"Format2":        mutate(0, 2),
		"Type0":          mutate(1, 0),
		"Type4":          mutate(1, 4),
		"UnknownFlag":    mutate(2, 2),
		"ConvergentRSA":  func() []byte { b := mutate(1, 2); b[2] = 1; return b }(),
		"Purpose0":       mutate(3, 0),
		"Purpose3":       mutate(3, 3),
		"TokenSigningEC": func() []byte { b := mutate(1, 3); b[3] = 2; return b }(),
		"Version0":       mutate(7, 0),
		"UppercaseTag":   mutate(handleFixed, 'A'),
		"TagLength":      mutate(24, 63),
	}
	for name, b := range cases {
		if _, err := parseHandle(b); !errors.Is(err, backend.ErrInvalidHandle) {
			t.Errorf("%s: parseHandle = %v, want ErrInvalidHandle", name, err)
		}
	}
}

// FuzzParseHandle checks the canonical-form property: a handle that
// parses marshals back to the same bytes.
func FuzzParseHandle(f *testing.F) {
	f.Add((&handle{ref: backend.KeyRef{KeyTag: testTag, Version: 1, Purpose: backend.PurposeCipher}, typ: backend.AES256, convergent: true}).marshal())
	f.Add((&handle{ref: backend.KeyRef{KeyTag: testTag, Version: 7, Purpose: backend.PurposeTokenSigning}, typ: backend.RSA2048}).marshal())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHandle(b)
		if err != nil {
			return
		}
		if got := h.marshal(); !bytes.Equal(got, b) {
			t.Fatalf("marshal(parseHandle(%x)) = %x", b, got)
		}
	})
}
