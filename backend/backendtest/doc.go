// Package backendtest is the conformance suite every [backend.Backend]
// must pass. A backend's test file makes one call:
//
//	func TestConformance(t *testing.T) {
//		backendtest.Run(t, func(t *testing.T, dir string) backend.Backend {
//			b, err := mybackend.Open(dir) // state (keys, root key, token) in dir
//			if err != nil {
//				t.Fatal(err)
//			}
//			return b
//		})
//	}
//
// [Run] checks the contract written on [backend.Backend] and the
// interfaces around it, with a fresh backend on a fresh state directory
// per subtest:
//
//   - Generate, for every key type and purpose, and its invalid requests;
//   - round trips: AES-GCM both ways, RSA-OAEP decryption of what the
//     Engine encrypts with the public key (and of crypto/rsa ciphertexts),
//     signatures that verify under the public key with the algorithm the
//     key's type and purpose fix (checked with what the Engine's Verify
//     runs, and with crypto/rsa and crypto/ecdsa), and that RSA keys do not
//     implement backend.Encrypter;
//   - RSASSA-PSS salt lengths: the maximum (222 bytes) when a SignRequest
//     asks for none, and exactly the length it asks for otherwise (32, as
//     TLS 1.3 and X.509 use, 1 and 222), checked with crypto/rsa;
//   - outputs that must differ (random nonces, PSS salts, keys, versions)
//     or be equal (convergent encryption, PKCS #1 v1.5);
//   - tables of malformed input (salt lengths out of range, or on keys that
//     take none, included) and the sentinel errors they must produce,
//     never a panic and never a plaintext in an error;
//   - handles bound to their KeyRef, type and convergent flag, tampered
//     handles, Destroy, concurrent use, Close (every method then fails with
//     backend.ErrClosed);
//   - for backends that implement [backend.Importer], known-answer tests
//     (convergent encryption included);
//   - Reopen: handles made by one backend load in a later one opened on the
//     same directory and keep working; a backend on another directory
//     refuses them;
//   - Wycheproof: the Project Wycheproof vectors that need a secret (AES-GCM
//     and RSA-OAEP decryption), through backend.Importer. The vectors come
//     from the pinned module
//     github.com/C2SP/wycheproof@v0.0.0-20250901140545-b51abcfb8daf,
//     fetched with "go mod download"; without network access that subtest
//     is skipped, unless the environment variable CI is "true", which
//     makes it fail. The public-key vectors run once, on the Engine (see
//     the root package's wycheproof_test.go), since no backend does
//     public-key operations.
//
// The suite closes every backend it opens when the subtest ends (Close
// must be idempotent), so open need not. Nothing in this package is
// specific to one backend; backend/backendtest/filebackend is a small
// backend whose only test is that one call.
//
// # Choices the suite pins
//
// Where the contract leaves room, the suite pins these choices, so that
// the Engine behaves alike on every backend:
//
//   - A nil request is backend.ErrInvalidArgument for every method (Load
//     may also answer backend.ErrInvalidHandle).
//   - A tampered handle is backend.ErrInvalidHandle or
//     backend.ErrKeyNotFound; an empty handle, or a handle presented with
//     another KeyRef, type or convergent flag, is backend.ErrInvalidHandle.
//   - After Destroy, Load either still works (backends that store
//     nothing) or fails with backend.ErrKeyNotFound.
//
// The suite needs a few seconds: RSA-2048 key generation dominates it.
package backendtest
