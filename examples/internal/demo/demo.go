// Package demo is the job the quickstart examples run: one key of each
// type, every cipher operation, a rotation. It returns an error on any
// failure.
package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/pocketkms/kms"
)

// Run does the quickstart's job on any Engine and prints what it did.
func Run(ctx context.Context, e *kms.Engine, out io.Writer) error {
	aes, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "orders", Type: kms.AES256, Memo: "order records"})
	if err != nil {
		return err
	}
	rsaKey, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "partners", Type: kms.RSA2048})
	if err != nil {
		return err
	}
	ecKey, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "releases", Type: kms.ECDSA})
	if err != nil {
		return err
	}
	for _, k := range []*kms.Key{aes, rsaKey, ecKey} {
		fmt.Fprintf(out, "created %-7s key %q tag %s…\n", k.Type, k.Name, k.Tag[:12])
	}

	msg := []byte("Hello KMS")
	ct, err := e.Encrypt(ctx, aes.Tag, msg, nil)
	if err != nil {
		return err
	}
	pt, err := e.Decrypt(ctx, aes.Tag, ct, nil)
	if err != nil {
		return err
	}
	if !bytes.Equal(pt, msg) {
		return errors.New("AES256 round trip gave a different plaintext")
	}
	fmt.Fprintf(out, "AES256 encrypt -> %s… decrypt -> %q\n", ct[:20], pt)

	rct, err := e.Encrypt(ctx, rsaKey.Tag, msg, nil)
	if err != nil {
		return err
	}
	if pt, err = e.Decrypt(ctx, rsaKey.Tag, rct, nil); err != nil || !bytes.Equal(pt, msg) {
		return fmt.Errorf("RSA2048 round trip failed: %v", err)
	}
	fmt.Fprintln(out, "RSA2048 encrypt/decrypt (OAEP-SHA256) ok")

	dk, err := e.CreateCustomKey(ctx, aes.Tag, kms.CustomKeyRequest{Bits: 256, RequestPlainKey: true})
	if err != nil {
		return err
	}
	unwrapped, err := e.Decrypt(ctx, aes.Tag, dk.Ciphertext, nil)
	if err != nil || !bytes.Equal(unwrapped, dk.Plaintext) {
		return fmt.Errorf("data key does not unwrap to its plaintext: %v", err)
	}
	clear(unwrapped)
	clear(dk.Plaintext)
	fmt.Fprintf(out, "data key: %d-bit, wrapped under v%d, unwraps correctly\n", 256, dk.KeyVersion)

	for _, k := range []*kms.Key{rsaKey, ecKey} {
		sig, err := e.Sign(ctx, k.Tag, msg)
		if err != nil {
			return err
		}
		ok, err := e.Verify(ctx, k.Tag, msg, sig)
		if err != nil || !ok {
			return fmt.Errorf("%s signature does not verify: %v", k.Type, err)
		}
		bad, err := e.Verify(ctx, k.Tag, []byte("tampered"), sig)
		if err != nil || bad {
			return fmt.Errorf("%s signature verified over other data: %v", k.Type, err)
		}
		fmt.Fprintf(out, "%s sign/verify ok, other data rejected\n", k.Type)
	}

	v2, err := e.RotateKey(ctx, aes.Tag)
	if err != nil {
		return err
	}
	if pt, err = e.Decrypt(ctx, aes.Tag, ct, nil); err != nil || !bytes.Equal(pt, msg) {
		return fmt.Errorf("old ciphertext no longer decrypts after rotation: %v", err)
	}
	re, err := e.ReEncrypt(ctx, aes.Tag, ct, nil)
	if err != nil {
		return err
	}
	if pt, err = e.Decrypt(ctx, aes.Tag, re, nil); err != nil || !bytes.Equal(pt, msg) {
		return fmt.Errorf("re-encrypted ciphertext does not decrypt: %v", err)
	}
	fmt.Fprintf(out, "rotated to v%d; v1 ciphertext still decrypts; re-encrypted -> %s…\n", v2.Version, re[:10])
	fmt.Fprintln(out, "quickstart: all checks passed")
	return nil
}
