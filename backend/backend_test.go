package backend_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/pocketkms/kms/backend"
)

var (
	tag     = strings.Repeat("0123456789abcdef", 4)
	cipher1 = backend.KeyRef{KeyTag: tag, Version: 1, Purpose: backend.PurposeCipher}
	token1  = backend.KeyRef{KeyTag: tag, Version: 1, Purpose: backend.PurposeTokenSigning}
	digest  = make([]byte, 32)
)

func TestValidKeyTag(t *testing.T) {
	for _, c := range []struct {
		name string
		tag  string
		want bool
	}{
		{"Valid", tag, true},
		{"AllF", strings.Repeat("f", 64), true},
		{"Empty", "", false},
		{"Short", tag[:63], false},
		{"Long", tag + "0", false},
		{"Uppercase", strings.ToUpper(tag), false},
		{"NonHex", strings.Repeat("g", 64), false},
		{"Space", tag[:63] + " ", false},
		{"MultiByte", tag[:62] + "é", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := backend.ValidKeyTag(c.tag); got != c.want {
				t.Errorf("ValidKeyTag(%q) = %v, want %v", c.tag, got, c.want)
			}
		})
	}
}

func TestKeyRefValidate(t *testing.T) {
	for _, c := range []struct {
		name       string
		ref        backend.KeyRef
		typ        backend.KeyType
		convergent bool
		wantMsg    string // "" for no error
	}{
		{"AES", cipher1, backend.AES256, false, ""},
		{"AESConvergent", cipher1, backend.AES256, true, ""},
		{"RSA", cipher1, backend.RSA2048, false, ""},
		{"ECDSA", cipher1, backend.ECDSA, false, ""},
		{"TokenSigning", token1, backend.RSA2048, false, ""},
		{"MaxVersion", backend.KeyRef{KeyTag: tag, Version: 1<<32 - 1, Purpose: backend.PurposeCipher}, backend.AES256, false, ""},
		{"BadTag", backend.KeyRef{KeyTag: "x", Version: 1, Purpose: backend.PurposeCipher}, backend.AES256, false, "key tag must be 64 lowercase hex characters"},
		{"VersionZero", backend.KeyRef{KeyTag: tag, Purpose: backend.PurposeCipher}, backend.AES256, false, "version must be at least 1"},
		{"UnknownPurpose", backend.KeyRef{KeyTag: tag, Version: 1, Purpose: "wrap"}, backend.AES256, false, `unknown purpose "wrap"`},
		{"EmptyPurpose", backend.KeyRef{KeyTag: tag, Version: 1}, backend.AES256, false, `unknown purpose ""`},
		{"UnknownType", cipher1, "AES128", false, `unknown key type "AES128"`},
		{"LongType", cipher1, backend.KeyType(strings.Repeat("T", 100)), false, `unknown key type "` + strings.Repeat("T", 64) + `…"`},
		{"ConvergentRSA", cipher1, backend.RSA2048, true, "only AES256 keys can be convergent"},
		{"ConvergentECDSA", cipher1, backend.ECDSA, true, "only AES256 keys can be convergent"},
		{"TokenSigningAES", token1, backend.AES256, false, "token-signing keys must be RSA2048"},
		{"TokenSigningECDSA", token1, backend.ECDSA, false, "token-signing keys must be RSA2048"},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkErr(t, c.ref.Validate(c.typ, c.convergent), c.wantMsg)
		})
	}
}

func TestKeyRefString(t *testing.T) {
	long := strings.Repeat("a", 100)
	for _, c := range []struct {
		name string
		ref  backend.KeyRef
		want string
	}{
		{"Cipher", cipher1, "key " + tag + " v1 (cipher)"},
		{"TokenSigning", backend.KeyRef{KeyTag: tag, Version: 7, Purpose: backend.PurposeTokenSigning}, "key " + tag + " v7 (token-signing)"},
		{"Zero", backend.KeyRef{}, `key "" v0 ("")`},
		{"BadTagQuoted", backend.KeyRef{KeyTag: "a\nb", Version: 2, Purpose: backend.PurposeCipher}, `key "a\nb" v2 (cipher)`},
		{"LongTagTruncated", backend.KeyRef{KeyTag: long, Version: 1, Purpose: backend.PurposeCipher}, `key "` + long[:64] + `…" v1 (cipher)`},
		{"BadPurposeQuoted", backend.KeyRef{KeyTag: tag, Version: 1, Purpose: "x)y"}, "key " + tag + ` v1 ("x)y")`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.ref.String(); got != c.want {
				t.Errorf("String() = %q, want %q", got, c.want)
			}
		})
	}
}

// checkErr checks that err is nil if wantMsg is empty, and otherwise wraps
// ErrInvalidArgument and contains wantMsg.
func checkErr(t *testing.T, err error, wantMsg string) {
	t.Helper()
	if wantMsg == "" {
		if err != nil {
			t.Fatalf("error %v, want nil", err)
		}
		return
	}
	if !errors.Is(err, backend.ErrInvalidArgument) {
		t.Fatalf("error %v, want ErrInvalidArgument", err)
	}
	if !strings.Contains(err.Error(), wantMsg) {
		t.Errorf("error %q does not contain %q", err, wantMsg)
	}
}

// TestCheckSignRequest pins the key-separation rule: RSA2048 keys of
// either purpose and ECDSA cipher keys sign (the type and purpose fix the
// algorithm), nothing else does, and the digest is 32 bytes.
func TestCheckSignRequest(t *testing.T) {
	t.Run("Nil", func(t *testing.T) {
		checkErr(t, backend.CheckSignRequest(nil, backend.RSA2048, backend.PurposeCipher), "nil request")
	})
	for _, c := range []struct {
		name    string
		typ     backend.KeyType
		p       backend.Purpose
		digest  []byte
		wantMsg string // "" for no error
	}{
		{"RSAPSS", backend.RSA2048, backend.PurposeCipher, digest, ""},
		{"TokenPKCS1", backend.RSA2048, backend.PurposeTokenSigning, digest, ""},
		{"ECDSA", backend.ECDSA, backend.PurposeCipher, digest, ""},
		{"ECDSATokenSigning", backend.ECDSA, backend.PurposeTokenSigning, digest, "ECDSA token-signing keys do not sign"},
		{"AESDoesNotSign", backend.AES256, backend.PurposeCipher, digest, "AES256 cipher keys do not sign"},
		{"AESTokenSigning", backend.AES256, backend.PurposeTokenSigning, digest, "AES256 token-signing keys do not sign"},
		{"UnknownType", "", backend.PurposeCipher, digest, " cipher keys do not sign"},
		{"UnknownPurpose", backend.RSA2048, "", digest, "RSA2048  keys do not sign"},
		{"LongTypeTruncated", backend.KeyType(strings.Repeat("T", 100)), backend.PurposeCipher, digest, strings.Repeat("T", 64) + "… cipher keys do not sign"},
		{"NilDigest", backend.RSA2048, backend.PurposeCipher, nil, "digest must be 32 bytes"},
		{"ShortDigest", backend.ECDSA, backend.PurposeCipher, digest[:31], "digest must be 32 bytes"},
		{"LongDigest", backend.ECDSA, backend.PurposeCipher, make([]byte, 33), "digest must be 32 bytes"},
		{"DigestBeforeKeyType", backend.AES256, backend.PurposeCipher, nil, "digest must be 32 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := backend.CheckSignRequest(&backend.SignRequest{Digest: c.digest}, c.typ, c.p)
			checkErr(t, err, c.wantMsg)
		})
	}
}

func TestCheckEncryptDecryptRequest(t *testing.T) {
	ad := []byte("context")
	for _, c := range []struct {
		name       string
		typ        backend.KeyType
		p          backend.Purpose
		ad         []byte
		encryptMsg string // "" for no error
		decryptMsg string // "" for no error
	}{
		{"AES", backend.AES256, backend.PurposeCipher, nil, "", ""},
		{"AESWithAD", backend.AES256, backend.PurposeCipher, ad, "", ""},
		{"RSA", backend.RSA2048, backend.PurposeCipher, nil, "RSA2048 cipher keys do not encrypt", ""},
		{"RSAEmptyAD", backend.RSA2048, backend.PurposeCipher, []byte{}, "RSA2048 cipher keys do not encrypt", ""},
		{"RSAWithAD", backend.RSA2048, backend.PurposeCipher, ad, "RSA2048 cipher keys do not encrypt", "rsa decryption takes no additional data"},
		{"TokenSigning", backend.RSA2048, backend.PurposeTokenSigning, nil, "token-signing keys do not encrypt", "token-signing keys do not decrypt"},
		{"TokenSigningWithAD", backend.RSA2048, backend.PurposeTokenSigning, ad, "token-signing keys do not encrypt", "token-signing keys do not decrypt"},
		{"ECDSA", backend.ECDSA, backend.PurposeCipher, nil, "ECDSA cipher keys do not encrypt", "ECDSA cipher keys do not decrypt"},
		{"UnknownType", "DES", backend.PurposeCipher, nil, "DES cipher keys do not encrypt", "DES cipher keys do not decrypt"},
		{"UnknownPurpose", backend.AES256, "wrap", nil, "AES256 wrap keys do not encrypt", "AES256 wrap keys do not decrypt"},
	} {
		t.Run(c.name+"/encrypt", func(t *testing.T) {
			checkErr(t, backend.CheckEncryptRequest(&backend.EncryptRequest{Plaintext: []byte("x"), AdditionalData: c.ad}, c.typ, c.p), c.encryptMsg)
		})
		t.Run(c.name+"/decrypt", func(t *testing.T) {
			checkErr(t, backend.CheckDecryptRequest(&backend.DecryptRequest{Ciphertext: []byte("x"), AdditionalData: c.ad}, c.typ, c.p), c.decryptMsg)
		})
	}
	t.Run("Nil", func(t *testing.T) {
		checkErr(t, backend.CheckEncryptRequest(nil, backend.AES256, backend.PurposeCipher), "nil request")
		checkErr(t, backend.CheckDecryptRequest(nil, backend.RSA2048, backend.PurposeCipher), "nil request")
	})
}
