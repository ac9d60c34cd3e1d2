package kmscrypto_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/internal/cputime"
	"github.com/pocketkms/kms/internal/envelope"
	"github.com/pocketkms/kms/kmscrypto"
)

// Each benchmark runs an adapter beside the Engine call it wraps, in the
// same run (run with -cpu 1): the difference is the adapter's cost.

func BenchmarkSigner(b *testing.B) {
	e := newEngine(b)
	ctx := context.Background()
	digest := sha256.Sum256([]byte("benchmark"))
	for _, tc := range []struct {
		typ  kms.KeyType
		opts crypto.SignerOpts
	}{
		{kms.ECDSA, crypto.SHA256},
		{kms.RSA2048, &rsa.PSSOptions{Hash: crypto.SHA256}},
	} {
		tag := newKey(b, e, tc.typ, false)
		s, err := kmscrypto.NewSigner(ctx, e, tag)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(string(tc.typ)+"/Engine.SignDigest", func(b *testing.B) {
			defer cputime.Report(b)()
			for b.Loop() {
				if _, _, err := e.SignDigest(ctx, tag, digest[:], tc.opts); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(string(tc.typ)+"/Signer.Sign", func(b *testing.B) {
			defer cputime.Report(b)()
			for b.Loop() {
				if _, err := s.Sign(rand.Reader, digest[:], tc.opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecrypter(b *testing.B) {
	e := newEngine(b)
	ctx := context.Background()
	tag := newKey(b, e, kms.RSA2048, false)
	d, err := kmscrypto.NewDecrypter(ctx, e, tag)
	if err != nil {
		b.Fatal(err)
	}
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, d.Public().(*rsa.PublicKey), make([]byte, 32), nil)
	if err != nil {
		b.Fatal(err)
	}
	env := envelope.Format(1, ct)
	opts := &rsa.OAEPOptions{Hash: crypto.SHA256}
	b.Run("Engine.Decrypt", func(b *testing.B) {
		defer cputime.Report(b)()
		for b.Loop() {
			if _, err := e.Decrypt(ctx, tag, env, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Decrypter.Decrypt", func(b *testing.B) {
		defer cputime.Report(b)()
		for b.Loop() {
			if _, err := d.Decrypt(nil, ct, opts); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAEAD compares AEAD with the Engine calls it wraps, in the same
// run: AppendSeal of the plaintext and AppendOpen of its ciphertext (after
// the "aead:" marker). The Engine.Encrypt and Engine.Decrypt rows, on the
// plaintext alone and without associated data, show the string API
// beside them.
func BenchmarkAEAD(b *testing.B) {
	e := newEngine(b)
	ctx := context.Background()
	tag := newKey(b, e, kms.AES256, false)
	a, err := kmscrypto.NewAEAD(ctx, e, tag)
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []struct {
		name string
		n    int
		ad   []byte
	}{
		{"32B-noAD", 32, nil}, // a data key, as Tink's envelope AEAD wraps it
		{"1KiB-AD", 1024, []byte("orders/2024/customer-42")},
	} {
		pt, ad := make([]byte, size.n), size.ad
		env, err := e.Encrypt(ctx, tag, pt, nil)
		if err != nil {
			b.Fatal(err)
		}
		act, err := a.Encrypt(pt, ad)
		if err != nil {
			b.Fatal(err)
		}
		sealed := act[len("aead:"):]
		run := func(name string, f func() error) {
			b.Run(name, func(b *testing.B) {
				b.SetBytes(int64(size.n))
				b.ReportAllocs()
				defer cputime.Report(b)()
				for b.Loop() {
					if err := f(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		run("Encrypt/"+size.name+"/Engine.Encrypt", func() error {
			_, err := e.Encrypt(ctx, tag, pt, nil)
			return err
		})
		run("Encrypt/"+size.name+"/Engine.AppendSeal", func() error {
			_, err := e.AppendSeal(ctx, nil, tag, pt, ad)
			return err
		})
		run("Encrypt/"+size.name+"/AEAD.Encrypt", func() error {
			_, err := a.Encrypt(pt, ad)
			return err
		})
		run("Decrypt/"+size.name+"/Engine.Decrypt", func() error {
			_, err := e.Decrypt(ctx, tag, env, nil)
			return err
		})
		run("Decrypt/"+size.name+"/Engine.AppendOpen", func() error {
			_, err := e.AppendOpen(ctx, nil, tag, sealed, ad)
			return err
		})
		run("Decrypt/"+size.name+"/AEAD.Decrypt", func() error {
			_, err := a.Decrypt(act, ad)
			return err
		})
	}
}

// BenchmarkAdapterVsEngine measures each adapter against the Engine call
// it wraps, in alternating batches by CPU time (cputime.Paired), which a
// shared machine's noise disturbs far less than separate benchmarks:
//
//	go test -run '^$' -bench '^BenchmarkAdapterVsEngine$' -benchtime 200x -cpu 1 ./kmscrypto
//
// The AEAD rows compare AEAD with AppendSeal and AppendOpen (issue 18's
// target); the AppendSeal and AppendOpen rows compare those with
// AppendEncrypt and AppendDecrypt of the same plaintext, which bind no
// associated data: the cost of binding it in AES-GCM. The "itself" row
// pairs a call with itself: the method's own noise.
func BenchmarkAdapterVsEngine(b *testing.B) {
	e := newEngine(b)
	ctx := context.Background()
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	aesTag := newKey(b, e, kms.AES256, false)
	a, err := kmscrypto.NewAEAD(ctx, e, aesTag)
	must(err)
	for _, size := range []struct {
		name string
		n    int
		ad   []byte
	}{
		{"32B-noAD", 32, nil},
		{"1KiB-AD", 1024, []byte("orders/2024/customer-42")},
	} {
		pt, ad := make([]byte, size.n), size.ad
		act, err := a.Encrypt(pt, ad)
		must(err)
		sealed := act[len("aead:"):] // what AEAD hands AppendOpen
		plain, err := e.AppendEncrypt(ctx, nil, aesTag, pt, nil)
		must(err)
		if size.ad == nil {
			// The method's own noise: a call against itself.
			b.Run("Engine.AppendOpen-"+size.name+"/itself", func(b *testing.B) {
				open := func() {
					_, err := e.AppendOpen(ctx, nil, aesTag, sealed, ad)
					must(err)
				}
				cputime.Paired(b, 300, open, open)
			})
		}
		b.Run("AEAD.Encrypt-"+size.name+"/Engine.AppendSeal", func(b *testing.B) {
			cputime.Paired(b, 300, func() {
				_, err := e.AppendSeal(ctx, nil, aesTag, pt, ad)
				must(err)
			}, func() {
				_, err := a.Encrypt(pt, ad)
				must(err)
			})
		})
		b.Run("AEAD.Decrypt-"+size.name+"/Engine.AppendOpen", func(b *testing.B) {
			cputime.Paired(b, 300, func() {
				_, err := e.AppendOpen(ctx, nil, aesTag, sealed, ad)
				must(err)
			}, func() {
				_, err := a.Decrypt(act, ad)
				must(err)
			})
		})
		b.Run("Engine.AppendSeal-"+size.name+"/Engine.AppendEncrypt", func(b *testing.B) {
			cputime.Paired(b, 300, func() {
				_, err := e.AppendEncrypt(ctx, nil, aesTag, pt, nil)
				must(err)
			}, func() {
				_, err := e.AppendSeal(ctx, nil, aesTag, pt, ad)
				must(err)
			})
		})
		b.Run("Engine.AppendOpen-"+size.name+"/Engine.AppendDecrypt", func(b *testing.B) {
			cputime.Paired(b, 300, func() {
				_, err := e.AppendDecrypt(ctx, nil, aesTag, plain, nil)
				must(err)
			}, func() {
				_, err := e.AppendOpen(ctx, nil, aesTag, sealed, ad)
				must(err)
			})
		})
	}
	ecTag := newKey(b, e, kms.ECDSA, false)
	s, err := kmscrypto.NewSigner(ctx, e, ecTag)
	must(err)
	digest := sha256.Sum256([]byte("benchmark"))
	b.Run("Signer.Sign-ECDSA/Engine.SignDigest", func(b *testing.B) {
		cputime.Paired(b, 20, func() {
			_, _, err := e.SignDigest(ctx, ecTag, digest[:], crypto.SHA256)
			must(err)
		}, func() {
			_, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
			must(err)
		})
	})
}
