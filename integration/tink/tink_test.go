package tink_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/core/registry"
	"github.com/tink-crypto/tink-go/v2/keyset"
	tinkapi "github.com/tink-crypto/tink-go/v2/tink"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/integration/tink"
	"github.com/pocketkms/kms/kmscrypto"
	"github.com/pocketkms/kms/token"
)

var _ registry.KMSClient = (*tink.Client)(nil)

func newEngine(t testing.TB) *kms.Engine {
	t.Helper()
	root, err := memory.GenerateRootKey()
	if err != nil {
		t.Fatal(err)
	}
	be, err := memory.New(root)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kms.New(context.Background(), be, kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

var keySeq atomic.Int64

func newKey(t testing.TB, e *kms.Engine, typ kms.KeyType) string {
	t.Helper()
	k, err := e.CreateKey(context.Background(), kms.CreateKeyRequest{Name: fmt.Sprintf("key%d", keySeq.Add(1)), Type: typ})
	if err != nil {
		t.Fatal(err)
	}
	return k.Tag
}

// planes returns the Engine and a token client for tag with Encrypt and
// Decrypt.
func planes(t testing.TB, e *kms.Engine, tag string) map[string]kmscrypto.Client {
	t.Helper()
	ctx := context.Background()
	if _, err := e.ActivateTokenGenerator(ctx, tag); err != nil {
		t.Fatal(err)
	}
	set, err := e.IssueTokens(ctx, tag, kms.IssueTokensRequest{Subject: "tink-test", Permissions: []token.Permission{token.PermEncrypt, token.PermDecrypt}})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]kmscrypto.Client{"trusted": e, "token": e.WithToken(set.Access, netip.MustParseAddr("10.0.0.9"))}
}

func newClient(t testing.TB, c kmscrypto.Client, prefix string) *tink.Client {
	t.Helper()
	client, err := tink.NewClient(context.Background(), c, prefix)
	if err != nil {
		t.Fatalf("NewClient(%q): %v", prefix, err)
	}
	return client
}

func getAEAD(t testing.TB, client *tink.Client, uri string) tinkapi.AEAD {
	t.Helper()
	a, err := client.GetAEAD(uri)
	if err != nil {
		t.Fatalf("GetAEAD: %v", err)
	}
	return a
}

func wantInvalid(t testing.TB, err error) {
	t.Helper()
	var ke *kms.Error
	if !errors.Is(err, kms.ErrInvalidArgument) || !errors.As(err, &ke) || ke.Code != "InvalidParameter" {
		t.Fatalf("err = %v, want a *kms.Error matching kms.ErrInvalidArgument", err)
	}
}

const tag = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// TestKeyURIGrammar: exactly "pocketkms://" and 64 lowercase hex, and
// KeyURI gives back what ParseKeyURI accepts.
func TestKeyURIGrammar(t *testing.T) {
	if got, err := tink.ParseKeyURI("pocketkms://" + tag); err != nil || got != tag || tink.KeyURI(got) != "pocketkms://"+tag {
		t.Fatalf("ParseKeyURI = %q, %v", got, err)
	}
	client := newClient(t, newEngine(t), tink.URIPrefix)
	for _, bad := range []string{
		"",
		"pocketkms://",
		"pocketkms://" + tag[1:],
		"pocketkms://" + tag + "0",
		"pocketkms://" + strings.ToUpper(tag),
		"pocketkms://" + tag[:63] + "g",
		"POCKETKMS://" + tag,
		"Pocketkms://" + tag,
		"pocketkms:" + tag,
		"pocketkms:/" + tag,
		"pocketkms:///" + tag,
		"pocketkms://" + tag + "/",
		"pocketkms://" + tag + "/v1",
		"pocketkms://" + tag + "?version=1",
		"pocketkms://" + tag + "#x",
		"pocketkms://" + tag + ":443",
		"pocketkms://user@" + tag,
		" pocketkms://" + tag,
		"pocketkms://" + tag + "\n",
		"gcp-kms://" + tag,
		"aws-kms://arn:aws:kms:us-east-1:1:key/" + tag,
		"fake-kms://" + tag,
	} {
		if got, err := tink.ParseKeyURI(bad); err == nil {
			t.Errorf("ParseKeyURI(%q) = %q, want an error", bad, got)
		} else {
			wantInvalid(t, err)
		}
		if client.Supported(bad) {
			t.Errorf("Supported(%q) = true", bad)
		}
		if _, err := client.GetAEAD(bad); err == nil {
			t.Errorf("GetAEAD(%q) succeeded", bad)
		} else {
			wantInvalid(t, err)
		}
	}
}

// FuzzParseKeyURI: parse then format gives the input back, or parse fails.
func FuzzParseKeyURI(f *testing.F) {
	f.Add("pocketkms://" + tag)
	f.Add("pocketkms://" + strings.ToUpper(tag))
	f.Add("pocketkms://" + tag + "/")
	f.Fuzz(func(t *testing.T, uri string) {
		got, err := tink.ParseKeyURI(uri)
		if err != nil {
			return
		}
		if tink.KeyURI(got) != uri {
			t.Fatalf("ParseKeyURI(%q) = %q, which formats as %q", uri, got, tink.KeyURI(got))
		}
	})
}

// TestURIPrefix: a client is confined to the URIs under its prefix, as
// Tink's own clients are.
func TestURIPrefix(t *testing.T) {
	e := newEngine(t)
	a, b := newKey(t, e, kms.AES256), newKey(t, e, kms.AES256)
	for _, prefix := range []string{tink.URIPrefix, tink.KeyURI(a), tink.KeyURI(a[:10])} {
		client := newClient(t, e, prefix)
		if !client.Supported(tink.KeyURI(a)) {
			t.Fatalf("prefix %q: key a not supported", prefix)
		}
		getAEAD(t, client, tink.KeyURI(a))
		if prefix == tink.URIPrefix || strings.HasPrefix(tink.KeyURI(b), prefix) {
			continue
		}
		if client.Supported(tink.KeyURI(b)) {
			t.Fatalf("prefix %q supports key b", prefix)
		}
		_, err := client.GetAEAD(tink.KeyURI(b))
		wantInvalid(t, err)
	}
	for _, bad := range []string{"", "pocketkms:/", "gcp-kms://", "pocketkms://AB", "pocketkms://" + tag + "0", "pocketkms://" + tag + "/"} {
		_, err := tink.NewClient(context.Background(), e, bad)
		wantInvalid(t, err)
	}
}

// TestAEAD is Tink's KMS-client test: encrypt and decrypt with associated
// data, and other associated data fails; on both planes, with and
// without a context per call.
func TestAEAD(t *testing.T) {
	e := newEngine(t)
	keyTag := newKey(t, e, kms.AES256)
	uri := tink.KeyURI(keyTag)
	for plane, c := range planes(t, e, keyTag) {
		t.Run(plane, func(t *testing.T) {
			client := newClient(t, c, uri)
			primitive := getAEAD(t, client, uri)
			plaintext := []byte("some data to encrypt")
			aad := []byte("extra data to authenticate")
			ciphertext, err := primitive.Encrypt(plaintext, aad)
			if err != nil {
				t.Fatal(err)
			}
			decrypted, err := primitive.Decrypt(ciphertext, aad)
			if err != nil || !bytes.Equal(decrypted, plaintext) {
				t.Fatalf("Decrypt = %q, %v", decrypted, err)
			}
			if _, err := primitive.Decrypt(ciphertext, []byte("invalid")); !errors.Is(err, kms.ErrDecryptionFailed) {
				t.Fatalf("Decrypt with other associated data: %v", err)
			}
			withCtx, err := client.GetAEADWithContext(uri)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			decrypted, err = withCtx.DecryptWithContext(ctx, ciphertext, aad)
			if err != nil || !bytes.Equal(decrypted, plaintext) {
				t.Fatalf("DecryptWithContext = %q, %v", decrypted, err)
			}
			canceled, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := withCtx.EncryptWithContext(canceled, plaintext, aad); !errors.Is(err, context.Canceled) {
				t.Fatalf("EncryptWithContext(canceled) = %v", err)
			}
		})
	}
}

// TestKeysetEncryption writes a keyset encrypted with the pocketkms key as
// the keyset encryption key and reads it back.
func TestKeysetEncryption(t *testing.T) {
	e := newEngine(t)
	keyTag := newKey(t, e, kms.AES256)
	uri := tink.KeyURI(keyTag)
	for plane, c := range planes(t, e, keyTag) {
		t.Run(plane, func(t *testing.T) {
			kek := getAEAD(t, newClient(t, c, tink.URIPrefix), uri)
			handle, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
			if err != nil {
				t.Fatal(err)
			}
			buf := new(bytes.Buffer)
			if err := handle.Write(keyset.NewBinaryWriter(buf), kek); err != nil {
				t.Fatal(err)
			}
			encrypted := bytes.Clone(buf.Bytes())
			read, err := keyset.Read(keyset.NewBinaryReader(bytes.NewReader(encrypted)), kek)
			if err != nil {
				t.Fatal(err)
			}
			if read.KeysetInfo().GetPrimaryKeyId() != handle.KeysetInfo().GetPrimaryKeyId() {
				t.Fatal("the keyset read back has another primary key")
			}
			// The keyset read back decrypts what the original encrypted.
			a1, _ := aead.New(handle)
			a2, err := aead.New(read)
			if err != nil {
				t.Fatal(err)
			}
			ct, _ := a1.Encrypt([]byte("payload"), []byte("ad"))
			if pt, err := a2.Decrypt(ct, []byte("ad")); err != nil || string(pt) != "payload" {
				t.Fatalf("keyset read back: %q, %v", pt, err)
			}
			// Another key, or other associated data, cannot read it.
			other := getAEAD(t, newClient(t, e, tink.URIPrefix), tink.KeyURI(newKey(t, e, kms.AES256)))
			if _, err := keyset.Read(keyset.NewBinaryReader(bytes.NewReader(encrypted)), other); err == nil {
				t.Fatal("another key read the keyset")
			}
			buf.Reset()
			if err := handle.WriteWithAssociatedData(keyset.NewBinaryWriter(buf), kek, []byte("tenant-1")); err != nil {
				t.Fatal(err)
			}
			if _, err := keyset.ReadWithAssociatedData(keyset.NewBinaryReader(bytes.NewReader(buf.Bytes())), kek, []byte("tenant-2")); err == nil {
				t.Fatal("the keyset read with other associated data")
			}
			if _, err := keyset.ReadWithAssociatedData(keyset.NewBinaryReader(bytes.NewReader(buf.Bytes())), kek, []byte("tenant-1")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestEnvelopeAEAD: Tink envelope encryption with the pocketkms key as the
// key encryption key.
func TestEnvelopeAEAD(t *testing.T) {
	e := newEngine(t)
	keyTag := newKey(t, e, kms.AES256)
	uri := tink.KeyURI(keyTag)
	for plane, c := range planes(t, e, keyTag) {
		t.Run(plane, func(t *testing.T) {
			client := newClient(t, c, tink.URIPrefix)
			envelope := aead.NewKMSEnvelopeAEAD2(aead.AES256GCMKeyTemplate(), getAEAD(t, client, uri))
			kekCtx, err := client.GetAEADWithContext(uri)
			if err != nil {
				t.Fatal(err)
			}
			envelopeCtx, err := aead.NewKMSEnvelopeAEADWithContext(aead.AES256GCMKeyTemplate(), kekCtx)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			pt, ad := bytes.Repeat([]byte("large payload "), 1000), []byte("row 42")
			ct, err := envelope.Encrypt(pt, ad)
			if err != nil {
				t.Fatal(err)
			}
			ct2, err := envelopeCtx.EncryptWithContext(ctx, pt, ad)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(ct, ct2) {
				t.Fatal("two encryptions are equal")
			}
			// Each decrypts the other's: the format is Tink's.
			if got, err := envelopeCtx.DecryptWithContext(ctx, ct, ad); err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("DecryptWithContext: %v", err)
			}
			if got, err := envelope.Decrypt(ct2, ad); err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("Decrypt: %v", err)
			}
			if _, err := envelope.Decrypt(ct, []byte("row 43")); err == nil {
				t.Fatal("decrypted with other associated data")
			}
			tampered := bytes.Clone(ct)
			tampered[10] ^= 1 // inside the encrypted data key
			if _, err := envelope.Decrypt(tampered, ad); err == nil {
				t.Fatal("decrypted a tampered encrypted data key")
			}
		})
	}
}

// TestRegistry registers the client with Tink and uses a KMS envelope key
// template that names the key by URI.
func TestRegistry(t *testing.T) {
	e := newEngine(t)
	keyTag := newKey(t, e, kms.AES256)
	uri := tink.KeyURI(keyTag)
	client := newClient(t, e, uri)
	registry.RegisterKMSClient(client)
	t.Cleanup(registry.ClearKMSClients)

	got, err := registry.GetKMSClient(uri)
	if err != nil || got != registry.KMSClient(client) {
		t.Fatalf("GetKMSClient = %v, %v", got, err)
	}
	if _, err := registry.GetKMSClient(tink.KeyURI(newKey(t, e, kms.AES256))); err == nil {
		t.Fatal("the registry found a client for a key outside the prefix")
	}
	tmpl, err := aead.CreateKMSEnvelopeAEADKeyTemplate(uri, aead.AES256GCMKeyTemplate())
	if err != nil {
		t.Fatal(err)
	}
	handle, err := keyset.NewHandle(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	a, err := aead.New(handle)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := a.Encrypt([]byte("via the registry"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := a.Decrypt(ct, nil); err != nil || string(pt) != "via the registry" {
		t.Fatalf("Decrypt = %q, %v", pt, err)
	}
	// The same ciphertext decrypts with the key directly, as an envelope.
	direct := aead.NewKMSEnvelopeAEAD2(aead.AES256GCMKeyTemplate(), getAEAD(t, client, uri))
	if pt, err := direct.Decrypt(ct, nil); err != nil || string(pt) != "via the registry" {
		t.Fatalf("direct Decrypt = %q, %v", pt, err)
	}
}

// TestGetAEADRefusesKeys: on the trusted plane GetAEAD checks the key.
func TestGetAEADRefusesKeys(t *testing.T) {
	e := newEngine(t)
	client := newClient(t, e, tink.URIPrefix)
	for _, typ := range []kms.KeyType{kms.RSA2048, kms.ECDSA} {
		if _, err := client.GetAEAD(tink.KeyURI(newKey(t, e, typ))); !errors.Is(err, kms.ErrWrongKeyType) {
			t.Fatalf("%s key: %v", typ, err)
		}
	}
	if _, err := client.GetAEAD(tink.KeyURI(tag)); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("unknown key: %v", err)
	}
	if s := fmt.Sprint(client); s != "tink.Client{prefix:pocketkms://}" {
		t.Fatalf("String() = %q", s)
	}
}
