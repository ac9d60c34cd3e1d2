package kms

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pocketkms/kms/internal/envelope"
)

// MaxBatchItems is the largest number of items in one batch call.
const MaxBatchItems = 100

// EncryptItem is one item of BatchEncrypt.
type EncryptItem struct {
	Plaintext []byte
	// Context is this item's encryption context (convergent keys).
	Context []byte
}

// DecryptItem is one item of BatchDecrypt and BatchReEncrypt.
type DecryptItem struct {
	Ciphertext string
	// Context is this item's encryption context (convergent keys).
	Context []byte
}

// BatchError reports the items of a batch that failed, by 0-based index.
// It is the cause inside the *Error a batch call returns; get it with
// errors.As. Items that did not fail are not listed.
type BatchError struct {
	Failures map[int]*Error
}

// Error lists the failed indexes and their classes.
func (b *BatchError) Error() string {
	idx := make([]int, 0, len(b.Failures))
	for i := range b.Failures {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	parts := make([]string, len(idx))
	for n, i := range idx {
		parts[n] = fmt.Sprintf("item %d: %v", i, b.Failures[i].Kind)
	}
	return strings.Join(parts, "; ")
}

// batchFailed wraps item failures as NAVER does: the HTTP status is the
// failures' common one when they share a class, else 400.
func batchFailed(op, tag string, failures map[int]*Error) *Error {
	var kind error
	for _, f := range failures {
		if kind == nil {
			kind = f.Kind
		} else if f.Kind != kind {
			kind = ErrInvalidArgument
			break
		}
	}
	e := newErr(op, tag, kind, fmt.Sprintf("%d of the items failed", len(failures)))
	e.Err = &BatchError{Failures: failures}
	return e
}

func checkBatchSize(op string, n int) error {
	if n < 1 || n > MaxBatchItems {
		return newErr(op, "", ErrInvalidArgument, fmt.Sprintf("a batch has 1..%d items", MaxBatchItems))
	}
	return nil
}

// cipherKeyType refuses keys that do not encrypt and decrypt (ECDSA).
// Batches call it before looking at any item: a key that cannot do the
// operation at all is one error, not a failure of every item.
func cipherKeyType(op string, s *keySnap, verb string) error {
	if s.typ != AES256 && s.typ != RSA2048 {
		return newErr(op, s.tag, ErrWrongKeyType, string(s.typ)+" keys do not "+verb)
	}
	return nil
}

// runBatch validates the shape of every item (phase 1) and, only when all
// pass, runs every item (phase 2); any failure means no results at all.
// drop, when not nil, is given each result made before a failure (to
// clear plaintexts).
//
// A context that ends during phase 2 fails the whole batch with one
// ErrCanceled error, never a failure per item.
func runBatch[T, R any](ctx context.Context, op, tag string, items []T, shape func(T) *Error, run func(T) (R, error), drop func(R)) ([]R, error) {
	failures := map[int]*Error{}
	for i, it := range items {
		if err := shape(it); err != nil {
			failures[i] = err
		}
	}
	if len(failures) > 0 {
		return nil, batchFailed(op, tag, failures)
	}
	out := make([]R, len(items))
	var stop error
	for i, it := range items {
		if stop = ctx.Err(); stop != nil {
			break
		}
		r, err := run(it)
		if err != nil {
			if e := asError(op, tag, err); errors.Is(e, ErrCanceled) {
				stop = e
				break
			}
			failures[i] = asError(op, tag, err)
			continue
		}
		out[i] = r
	}
	if len(failures) > 0 || stop != nil {
		if drop != nil {
			for i, r := range out {
				if _, failed := failures[i]; !failed {
					drop(r)
				}
			}
		}
		if stop != nil {
			if e, ok := stop.(*Error); ok {
				return nil, e
			}
			return nil, canceled(op, tag, stop)
		}
		return nil, batchFailed(op, tag, failures)
	}
	return out, nil
}

func asError(op, tag string, err error) *Error {
	if e, ok := err.(*Error); ok {
		return e
	}
	return wrapErr(op, tag, ErrInternal, err)
}

// BatchEncrypt encrypts 1..100 items atomically under the current version:
// either every item succeeds, or the call fails and returns no
// ciphertexts. Failures come in an order that decides what the error
// names:
//
//  1. the call: the key is unknown or not ENABLED, the batch is empty or
//     has more than MaxBatchItems items, or the key cannot do the
//     operation (ErrWrongKeyType) — one *Error, no BatchError;
//  2. the shape of every item (phase 1: an empty plaintext; for decrypt
//     and re-encrypt, a ciphertext that is not of the ncpkms:v{N}: form):
//     if any item is malformed, the *Error holds a *BatchError naming
//     every malformed item, and no item is run;
//  3. the operation on every item (phase 2): if any fails (a version
//     disabled or unknown, a tag mismatch, a plaintext over the limit),
//     the *BatchError names every item that failed, and the results of
//     the others are dropped (decrypted plaintexts are cleared).
//
// The *Error's class is the failures' common class, or
// ErrInvalidArgument when they differ; get the BatchError with errors.As.
func (e *Engine) BatchEncrypt(ctx context.Context, keyTag string, items []EncryptItem) ([]string, error) {
	return onKey(e, ctx, "batch encrypt", keyTag, func(op string, s *keySnap) ([]string, error) {
		return e.batchEncrypt(ctx, op, s, items)
	})
}

func (e *Engine) batchEncrypt(ctx context.Context, op string, s *keySnap, items []EncryptItem) ([]string, error) {
	if err := checkBatchSize(op, len(items)); err != nil {
		return nil, err
	}
	if err := cipherKeyType(op, s, "encrypt"); err != nil {
		return nil, err
	}
	tag := s.tag
	return runBatch(ctx, op, tag, items,
		func(it EncryptItem) *Error {
			if len(it.Plaintext) == 0 {
				return newErr(op, tag, ErrInvalidArgument, "empty plaintext")
			}
			return nil
		},
		func(it EncryptItem) (string, error) { return e.encrypt(ctx, op, s, it.Plaintext, it.Context) }, nil)
}

func decryptShape(op, tag string) func(DecryptItem) *Error {
	return func(it DecryptItem) *Error {
		if len(it.Ciphertext) > MaxCiphertextLength {
			return newErr(op, tag, ErrInvalidArgument, "ciphertext too long")
		}
		if _, _, err := envelope.Parse(it.Ciphertext, 0); err != nil {
			return newErr(op, tag, ErrInvalidArgument, "not of the form ncpkms:v{N}:<base64>")
		}
		return nil
	}
}

// BatchDecrypt decrypts 1..100 items atomically, each with the version
// its prefix names. Failures follow BatchEncrypt's order: the call, then
// the shape of every item (phase 1), then the decryption of every item
// (phase 2); a *BatchError names the failed items of the phase that
// failed, and plaintexts already made are cleared and not returned.
func (e *Engine) BatchDecrypt(ctx context.Context, keyTag string, items []DecryptItem) ([][]byte, error) {
	return onKey(e, ctx, "batch decrypt", keyTag, func(op string, s *keySnap) ([][]byte, error) {
		return e.batchDecrypt(ctx, op, s, items)
	})
}

func (e *Engine) batchDecrypt(ctx context.Context, op string, s *keySnap, items []DecryptItem) ([][]byte, error) {
	if err := checkBatchSize(op, len(items)); err != nil {
		return nil, err
	}
	if err := cipherKeyType(op, s, "decrypt"); err != nil {
		return nil, err
	}
	out, err := runBatch(ctx, op, s.tag, items, decryptShape(op, s.tag),
		func(it DecryptItem) ([]byte, error) { return e.decrypt(ctx, op, s, it.Ciphertext, it.Context) },
		func(pt []byte) { clear(pt) })
	return out, err
}

// BatchReEncrypt re-encrypts 1..100 items atomically under the current
// version; failures follow BatchDecrypt's rule.
func (e *Engine) BatchReEncrypt(ctx context.Context, keyTag string, items []DecryptItem) ([]string, error) {
	return onKey(e, ctx, "batch re-encrypt", keyTag, func(op string, s *keySnap) ([]string, error) {
		return e.batchReEncrypt(ctx, op, s, items)
	})
}

func (e *Engine) batchReEncrypt(ctx context.Context, op string, s *keySnap, items []DecryptItem) ([]string, error) {
	if err := checkBatchSize(op, len(items)); err != nil {
		return nil, err
	}
	if err := cipherKeyType(op, s, "re-encrypt"); err != nil {
		return nil, err
	}
	return runBatch(ctx, op, s.tag, items, decryptShape(op, s.tag),
		func(it DecryptItem) (string, error) { return e.reEncrypt(ctx, op, s, it.Ciphertext, it.Context) }, nil)
}
