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

func TestSignAlgorithm(t *testing.T) {
	for _, c := range []struct {
		typ  backend.KeyType
		p    backend.Purpose
		want backend.Algorithm
	}{
		{backend.RSA2048, backend.PurposeCipher, backend.AlgRSAPSSSHA256},
		{backend.RSA2048, backend.PurposeTokenSigning, backend.AlgRSAPKCS1v15SHA256},
		{backend.ECDSA, backend.PurposeCipher, backend.AlgECDSAP256SHA256},
		{backend.ECDSA, backend.PurposeTokenSigning, 0},
		{backend.AES256, backend.PurposeCipher, 0},
		{backend.AES256, backend.PurposeTokenSigning, 0},
		{"", backend.PurposeCipher, 0},
		{backend.RSA2048, "", 0},
	} {
		t.Run(string(c.typ)+"/"+string(c.p), func(t *testing.T) {
			if got := backend.SignAlgorithm(c.typ, c.p); got != c.want {
				t.Errorf("SignAlgorithm(%q, %q) = %v, want %v", c.typ, c.p, got, c.want)
			}
		})
	}
}

// signCases serve both TestCheckSignRequest and TestCheckVerifyRequest.
var signCases = []struct {
	name    string
	typ     backend.KeyType
	p       backend.Purpose
	alg     backend.Algorithm
	digest  []byte
	wantMsg string // "" for no error
}{
	{"RSAPSS", backend.RSA2048, backend.PurposeCipher, backend.AlgRSAPSSSHA256, digest, ""},
	{"TokenPKCS1", backend.RSA2048, backend.PurposeTokenSigning, backend.AlgRSAPKCS1v15SHA256, digest, ""},
	{"ECDSA", backend.ECDSA, backend.PurposeCipher, backend.AlgECDSAP256SHA256, digest, ""},
	{"RSACipherPKCS1", backend.RSA2048, backend.PurposeCipher, backend.AlgRSAPKCS1v15SHA256, digest, "algorithm RSA-PKCS1v15-SHA256 does not fit a RSA2048 cipher key"},
	{"TokenPSS", backend.RSA2048, backend.PurposeTokenSigning, backend.AlgRSAPSSSHA256, digest, "algorithm RSA-PSS-SHA256 does not fit a RSA2048 token-signing key"},
	{"RSAWithECDSA", backend.RSA2048, backend.PurposeCipher, backend.AlgECDSAP256SHA256, digest, "does not fit a RSA2048 cipher key"},
	{"ECDSAWithPSS", backend.ECDSA, backend.PurposeCipher, backend.AlgRSAPSSSHA256, digest, "algorithm RSA-PSS-SHA256 does not fit an ECDSA key"},
	{"ZeroAlgorithm", backend.ECDSA, backend.PurposeCipher, 0, digest, "algorithm unknown does not fit an ECDSA key"},
	{"AESDoesNotSign", backend.AES256, backend.PurposeCipher, backend.AlgAESGCM, digest, "does not fit a AES256 cipher key"},
	{"AESZeroAlgorithm", backend.AES256, backend.PurposeCipher, 0, digest, "does not fit a AES256 cipher key"},
	{"NilDigest", backend.RSA2048, backend.PurposeCipher, backend.AlgRSAPSSSHA256, nil, "digest must be 32 bytes"},
	{"ShortDigest", backend.ECDSA, backend.PurposeCipher, backend.AlgECDSAP256SHA256, digest[:31], "digest must be 32 bytes"},
	{"LongDigest", backend.ECDSA, backend.PurposeCipher, backend.AlgECDSAP256SHA256, make([]byte, 33), "digest must be 32 bytes"},
	{"DigestBeforeAlgorithm", backend.ECDSA, backend.PurposeCipher, 0, nil, "digest must be 32 bytes"},
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

func TestCheckSignRequest(t *testing.T) {
	t.Run("Nil", func(t *testing.T) {
		checkErr(t, backend.CheckSignRequest(nil, backend.RSA2048, backend.PurposeCipher), "nil request")
	})
	for _, c := range signCases {
		t.Run(c.name, func(t *testing.T) {
			err := backend.CheckSignRequest(&backend.SignRequest{Algorithm: c.alg, Digest: c.digest}, c.typ, c.p)
			checkErr(t, err, c.wantMsg)
		})
	}
}

func TestCheckVerifyRequest(t *testing.T) {
	t.Run("Nil", func(t *testing.T) {
		checkErr(t, backend.CheckVerifyRequest(nil, backend.ECDSA, backend.PurposeCipher), "nil request")
	})
	for _, c := range signCases {
		t.Run(c.name, func(t *testing.T) {
			req := &backend.VerifyRequest{Algorithm: c.alg, Digest: c.digest, Signature: []byte{1}, PSSSaltLength: 32}
			checkErr(t, backend.CheckVerifyRequest(req, c.typ, c.p), c.wantMsg)
		})
	}
}

func TestCheckEncryptDecryptRequest(t *testing.T) {
	ad := []byte("context")
	for _, c := range []struct {
		name    string
		typ     backend.KeyType
		p       backend.Purpose
		ad      []byte
		wantMsg string // with "{op}" for encrypt/decrypt, "{noun}" for encryption/decryption; "" for no error
	}{
		{"AES", backend.AES256, backend.PurposeCipher, nil, ""},
		{"AESWithAD", backend.AES256, backend.PurposeCipher, ad, ""},
		{"RSA", backend.RSA2048, backend.PurposeCipher, nil, ""},
		{"RSAEmptyAD", backend.RSA2048, backend.PurposeCipher, []byte{}, ""},
		{"RSAWithAD", backend.RSA2048, backend.PurposeCipher, ad, "rsa {noun} takes no additional data"},
		{"TokenSigning", backend.RSA2048, backend.PurposeTokenSigning, nil, "token-signing keys do not {op}"},
		{"TokenSigningWithAD", backend.RSA2048, backend.PurposeTokenSigning, ad, "token-signing keys do not {op}"},
		{"ECDSA", backend.ECDSA, backend.PurposeCipher, nil, "ECDSA cipher keys do not {op}"},
		{"UnknownType", "DES", backend.PurposeCipher, nil, "DES cipher keys do not {op}"},
		{"UnknownPurpose", backend.AES256, "wrap", nil, "AES256 wrap keys do not {op}"},
	} {
		for _, op := range []struct {
			verb, noun string
			check      func() error
		}{
			{"encrypt", "encryption", func() error {
				return backend.CheckEncryptRequest(&backend.EncryptRequest{Plaintext: []byte("x"), AdditionalData: c.ad}, c.typ, c.p)
			}},
			{"decrypt", "decryption", func() error {
				return backend.CheckDecryptRequest(&backend.DecryptRequest{Ciphertext: []byte("x"), AdditionalData: c.ad}, c.typ, c.p)
			}},
		} {
			t.Run(c.name+"/"+op.verb, func(t *testing.T) {
				want := strings.NewReplacer("{op}", op.verb, "{noun}", op.noun).Replace(c.wantMsg)
				checkErr(t, op.check(), want)
			})
		}
	}
	t.Run("Nil", func(t *testing.T) {
		checkErr(t, backend.CheckEncryptRequest(nil, backend.AES256, backend.PurposeCipher), "nil request")
		checkErr(t, backend.CheckDecryptRequest(nil, backend.RSA2048, backend.PurposeCipher), "nil request")
	})
}
