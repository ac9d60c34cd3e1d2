//go:build cgo

package softhsm_test

import (
	"crypto/rand"
	"flag"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/softhsm/softhsmtest"
)

var manyKeys = flag.Int("softhsm.keys", 1000, "number of keys BenchmarkEncryptManyKeys creates in the token (the issue's target is 10000)")

// benchKey generates and loads an AES256 key for a benchmark.
func benchKey(b *testing.B, be backend.Backend) backend.Encrypter {
	b.Helper()
	var tag [32]byte
	rand.Read(tag[:])
	ref := backend.KeyRef{KeyTag: fmt.Sprintf("%x", tag), Version: 1, Purpose: backend.PurposeCipher}
	resp, err := be.Generate(b.Context(), &backend.GenerateRequest{Ref: ref, Type: backend.AES256})
	if err != nil {
		b.Fatal(err)
	}
	k, err := be.Load(b.Context(), &backend.LoadRequest{Ref: ref, Type: backend.AES256, Handle: resp.Handle})
	if err != nil {
		b.Fatal(err)
	}
	return k.(backend.Encrypter)
}

// BenchmarkEncrypt measures AES-256-GCM encryption of 1 KiB through the
// SPI; compare with BenchmarkRawPKCS11GCM in the same run.
func BenchmarkEncrypt(b *testing.B) {
	cfg := softhsmtest.NewToken(b)
	for _, c := range []struct {
		name     string
		noCopies bool
		parallel bool
	}{
		{"1KiB", false, false},
		{"1KiB-parallel", false, true},
		{"1KiB-NoSessionCopies", true, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			cf := cfg
			cf.NoSessionCopies = c.noCopies
			be := softhsmtest.Open(b, cf)
			k := benchKey(b, be)
			req := &backend.EncryptRequest{Plaintext: make([]byte, 1024), AdditionalData: []byte("pocketkms")}
			b.SetBytes(1024)
			if c.parallel {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := k.Encrypt(b.Context(), req); err != nil {
							b.Error(err)
							return
						}
					}
				})
				return
			}
			for b.Loop() {
				if _, err := k.Encrypt(b.Context(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRawPKCS11GCM is the raw primitive: C_EncryptInit + C_Encrypt
// (CKM_AES_GCM, a fresh 12-byte nonce, 128-bit tag) with miekg/pkcs11 on
// one session and a key handle held by the caller: a session object (what
// the Backend uses by default) and a token object.
func BenchmarkRawPKCS11GCM(b *testing.B) {
	cfg := softhsmtest.NewToken(b)
	softhsmtest.Open(b, cfg) // logs the token in
	for _, c := range []struct {
		name  string
		token bool
	}{{"1KiB", false}, {"1KiB-TokenObject", true}} {
		b.Run(c.name, func(b *testing.B) {
			withRawSession(b, cfg, func(p *pkcs11.Ctx, s pkcs11.SessionHandle) {
				key, err := p.GenerateKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, []*pkcs11.Attribute{
					pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
					pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
					pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
					pkcs11.NewAttribute(pkcs11.CKA_TOKEN, c.token),
					pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
					pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
					pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
					pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
				})
				if err != nil {
					b.Fatal(err)
				}
				pt, ad, nonce := make([]byte, 1024), []byte("pocketkms"), make([]byte, 12)
				b.SetBytes(1024)
				for b.Loop() {
					rand.Read(nonce)
					params := pkcs11.NewGCMParams(nonce, ad, 128)
					if err := p.EncryptInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, key); err != nil {
						b.Fatal(err)
					}
					if _, err := p.Encrypt(s, pt); err != nil {
						b.Fatal(err)
					}
					params.Free()
				}
			})
		})
	}
}

// BenchmarkEncryptManyKeys measures Encrypt of 1 KiB with 1 key in the
// token, then with -softhsm.keys keys (default 1000; the target
// is 10000, which takes a minute or more to create) loaded: always with
// the same key (one-key) and round robin over all of them (round-robin,
// where SoftHSM2's own memory accesses spread over every key). It reports
// the mean Generate time (8 goroutines) and Load time as well; the first
// Load after login indexes the token, so keys=1 shows that cost.
func BenchmarkEncryptManyKeys(b *testing.B) {
	cfg := softhsmtest.NewToken(b)
	be := softhsmtest.Open(b, cfg)
	var keys []backend.Encrypter
	for _, n := range []int{1, *manyKeys} {
		var genTime, loadTime float64
		grow := func(b *testing.B) {
			// SoftHSM2 writes each token object to its own file; several
			// goroutines overlap the waits.
			var (
				mu   sync.Mutex
				refs []*backend.LoadRequest
				wg   sync.WaitGroup
			)
			todo := n - len(keys)
			if todo <= 0 {
				return
			}
			start := time.Now()
			for w := range 8 {
				wg.Go(func() {
					for i := w; i < todo; i += 8 {
						var tag [32]byte
						rand.Read(tag[:])
						ref := backend.KeyRef{KeyTag: fmt.Sprintf("%x", tag), Version: 1, Purpose: backend.PurposeCipher}
						resp, err := be.Generate(b.Context(), &backend.GenerateRequest{Ref: ref, Type: backend.AES256})
						if err != nil {
							b.Error(err)
							return
						}
						mu.Lock()
						refs = append(refs, &backend.LoadRequest{Ref: ref, Type: backend.AES256, Handle: resp.Handle})
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if b.Failed() {
				b.FailNow()
			}
			genTime = float64(time.Since(start).Microseconds()) / float64(todo)
			start = time.Now()
			for _, r := range refs {
				k, err := be.Load(b.Context(), r)
				if err != nil {
					b.Fatal(err)
				}
				keys = append(keys, k.(backend.Encrypter))
			}
			loadTime = float64(time.Since(start).Microseconds()) / float64(todo)
		}
		run := func(b *testing.B, roundRobin bool) {
			grow(b)
			req := &backend.EncryptRequest{Plaintext: make([]byte, 1024), AdditionalData: []byte("pocketkms")}
			b.SetBytes(1024)
			i := 0
			for b.Loop() {
				k := keys[0]
				if roundRobin {
					k = keys[i%len(keys)]
				}
				if _, err := k.Encrypt(b.Context(), req); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(genTime, "µs/generate")
			b.ReportMetric(loadTime, "µs/load")
		}
		if n == 1 {
			b.Run("keys=1", func(b *testing.B) { run(b, false) })
			continue
		}
		b.Run(fmt.Sprintf("keys=%d/one-key", n), func(b *testing.B) { run(b, false) })
		b.Run(fmt.Sprintf("keys=%d/round-robin", n), func(b *testing.B) { run(b, true) })
	}
}
