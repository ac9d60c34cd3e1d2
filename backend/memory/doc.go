// Package memory is a software [backend.Backend]: key material lives in
// process memory while in use and is stored by the Engine only as handles
// sealed under a 32-byte root key.
//
// Start with [New] (root key in hand), [NewFromFile] (root key in a file)
// or [GenerateRootKey] (a fresh root key, for an in-memory default):
//
//	root, err := memory.GenerateRootKey()
//	...
//	b, err := memory.New(root)
//	...
//	defer b.Close()
//	eng, err := kms.New(ctx, b)
//
// Besides [backend.Backend] the [Backend] implements the optional
// [backend.Importer] capability.
//
// # Algorithms
//
// The algorithms are those of the backend package documentation, on the
// secret side (the Engine encrypts RSA-OAEP and verifies signatures with
// the public key):
//
//   - AES256: AES-256-GCM; Encrypt returns nonce(12) ‖ ciphertext ‖ tag(16).
//     Nonces are random, or for convergent keys
//     [backend.ConvergentNonce] under the version's 32-byte HMAC-SHA256 key.
//   - RSA2048: RSA-OAEP-SHA256 decryption (MGF1-SHA256, empty label);
//     RSASSA-PSS SHA-256 signatures with the maximum salt length (222
//     bytes) or the [backend.SignRequest.PSSSaltLength] asked for, for
//     keys of purpose [backend.PurposeCipher];
//     RSASSA-PKCS1-v1_5 SHA-256 for keys of purpose
//     [backend.PurposeTokenSigning] (JWT RS256).
//   - ECDSA: P-256, SHA-256, ASN.1 DER signatures.
//
// Key separation: the purpose fixes the signature algorithm, and
// token-signing keys never decrypt (Decrypt fails with
// [backend.ErrInvalidArgument]).
//
// # Handles
//
// A handle is
//
//	0x01 ‖ nonce(12) ‖ AES-256-GCM(root key, nonce, material, ad)
//
// where 0x01 is the format version and the material is the 32-byte AES key
// (followed by the 32-byte convergent key for convergent keys), or the
// PKCS #8 DER private key for RSA2048 and ECDSA. The associated data binds
// the handle to everything it was made for, in a length-prefixed encoding
// (every variable field is preceded by its length as a big-endian uint32):
//
//	field("pocketkms/memory/handle") ‖ 0x01 ‖ field(KeyTag) ‖
//	uint32be(Version) ‖ field(Purpose) ‖ field(Type) ‖ convergent(0|1)
//
// A handle therefore opens only under the root key that sealed it and only
// for the KeyRef, type and convergent flag it was made for; any other Load
// fails with [backend.ErrInvalidHandle] and no further detail.
//
// Nothing is stored by the backend itself: Destroy only validates its
// request, and the material is gone once no copy of its handle can be
// opened. With a directory the Engine stores each handle sealed under the
// key's shred key and deletes that key on destruction, so the copies its
// database keeps open under nothing (see package kms, Security);
// elsewhere, once every copy of the handle is gone, and for good when the
// root key is destroyed.
//
// # Root-key rotation
//
// The root key can be replaced without losing a key: run
// kms.Engine.RotateRootKey (online, with an Engine on a directory), or,
// for the pocketkms server's data directory with the server stopped,
//
//	pocketkms rotate-root -data /var/lib/kms [-new-root-key-file FILE]
//
// which writes a new random key to <root key file>.new first (unless one
// is given), rotates the store, and only then replaces root.key (with
// [WriteRootKeyFile]: a synced temporary file renamed over it). The Engine
// drives the backend through [Backend.StageRootKey] (hold the new key),
// [Backend.ResealHandle] (open a handle under the current key, seal the
// same material under the staged one), [Backend.CommitRootKey] (switch:
// seal and open under the new key only; keys loaded before keep working)
// and [Backend.DropStagedRootKey] (abandon). The store records the
// rotation in its directory, so a crash at any point leaves one that
// opens with the old root key (before the switch: the rotation is rolled
// back) or with the new one (after it: the rotation is finished), and
// refuses the other with kms.ErrBackendMismatch saying which; see
// kms.Engine.RotateRootKey. Each key also gets a new shred key, and the
// old one is shredded, so copies of the old handles that Badger keeps
// open under nothing, not even with the old root key. Keep the old root
// key until RotateRootKey has returned nil (or the new key is in the root
// key file), then destroy it.
//
// # Concurrency
//
// A [Backend] and every key it loads are safe for concurrent use by
// multiple goroutines. Keys are immutable after Load: the AES-GCM
// [crypto/cipher.AEAD] and the parsed private keys are built once in Load
// and shared by all calls, so callers should cache loaded keys.
//
// # Security
//
// The root key is copied by [New] and used only to build an AES-256-GCM
// instance; the copy is cleared right after. Plaintext material buffers
// (key bytes, PKCS #8 encodings) are cleared after use. Clearing is best
// effort: the Go runtime may have copied the bytes, and the expanded AES
// key schedules, the convergent HMAC keys and the big integers of RSA and
// ECDSA private keys stay in memory as long as the keys are reachable.
// Memory is not locked, so it may be swapped to disk; use an HSM backend
// (backend/softhsm) where that matters.
//
// No error or formatted value carries key material, plaintext or handles:
// the [Backend] and every loaded key print as a redacted summary with the
// fmt verbs (%v, %+v, %#v, %s, %x, ...), as JSON and through log/slog.
//
// Randomness comes from crypto/rand. [WithRandom] replaces the source of
// AES-GCM nonces (random-nonce encryptions and handle sealing) and is meant
// for tests only.
//
// # Limitations
//
//   - Random 96-bit nonces bound the number of encryptions under one AES key
//     (and of handles sealed under one root key) to about 2^32.
//   - AES plaintext and additional data are limited to 64 MiB each
//     ([MaxAESInput]); the Engine enforces far smaller limits.
//   - Closing the backend makes every loaded key fail with
//     [backend.ErrClosed] but cannot wipe material that callers still
//     reference; it is reclaimed by the garbage collector.
//   - Root-key rotation needs the Engine and a directory (see Root-key
//     rotation); handles stored elsewhere by hand are re-sealed only by
//     calling ResealHandle on each.
//   - In FIPS 140-3 only mode (GODEBUG=fips140=only) crypto/rsa refuses
//     PSS salts longer than the hash, so Sign fails for the default
//     maximum salt; a 32-byte PSSSaltLength still signs.
package memory
