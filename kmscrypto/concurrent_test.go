package kmscrypto_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"

	"github.com/pocketkms/kms"
)

// TestConcurrentUse shares one Signer and one AEAD per plane between
// goroutines (run with -race).
func TestConcurrentUse(t *testing.T) {
	e := newEngine(t)
	ecTag := newKey(t, e, kms.ECDSA, false)
	aesTag := newKey(t, e, kms.AES256, false)
	ecPlanes, aesPlanes := planes(t, e, ecTag), planes(t, e, aesTag)
	for plane := range ecPlanes {
		s := newSigner(t, ecPlanes[plane], ecTag)
		a := newAEAD(t, aesPlanes[plane], aesTag)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for g := range 8 {
			wg.Go(func() {
				for i := range 10 {
					msg := fmt.Appendf(nil, "%s %d %d", plane, g, i)
					d := sha256.Sum256(msg)
					sig, err := s.Sign(nil, d[:], crypto.SHA256)
					if err != nil || !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), d[:], sig) {
						errs <- fmt.Errorf("%s: Sign: %v", plane, err)
						return
					}
					ct, err := a.Encrypt(msg, d[:])
					if err != nil {
						errs <- err
						return
					}
					if pt, err := a.Decrypt(ct, d[:]); err != nil || !bytes.Equal(pt, msg) {
						errs <- fmt.Errorf("%s: Decrypt: %q, %v", plane, pt, err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
}
