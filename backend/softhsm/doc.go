// Package softhsm is a [backend.Backend] whose key material lives in a
// PKCS#11 token: SoftHSM2 in development and tests, in principle any
// module that offers the same mechanisms. Keys are generated inside the
// token and never leave it; the Engine stores only handles that name the
// token objects.
//
// Start with [New] and a [Config], written in code or parsed from a
// pkcs11 URI with [ParseURI]:
//
//	cfg, err := softhsm.ParseURI("pkcs11:token=pocketkms" +
//		"?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/run/secrets/hsm-pin")
//	if err != nil {
//		return err
//	}
//	b, err := softhsm.New(ctx, cfg)
//	if err != nil {
//		return err
//	}
//	defer b.Close()
//	// hand b to kms.New
//
// Tests get a fresh SoftHSM2 token of their own from
// backend/softhsm/softhsmtest. The package needs cgo: in a build without
// it, New fails with an error wrapping [backend.ErrUnsupported] (the root
// kms package never imports this one, so it builds without cgo).
//
// # Configuration
//
// A Config names the module (the PKCS#11 library), the token by label
// and/or serial number (never by slot number, which SoftHSM2 changes as
// tokens come and go), and the user PIN, given as a [PIN] value or as a
// file readable by the owner only. [ParseURI] accepts the RFC 7512 subset
//
//	pkcs11:token=<label>;serial=<serial>?module-path=<path>&pin-source=<file>&max-sessions=<n>
//
// and refuses pin-value: a PIN does not belong in a URI. Create the token
// beforehand, for SoftHSM2 with
//
//	softhsm2-util --init-token --free --label pocketkms --so-pin <so-pin> --pin <pin>
//
// (before the process starts: see Limitations). The Backend
// implements [backend.Importer] (bring your own key, known-answer tests)
// and [backend.Sweeper] (see Leftover objects).
//
// # Key material and handles
//
// Every object is a token object with CKA_PRIVATE, and every secret or
// private key has CKA_SENSITIVE set and CKA_EXTRACTABLE, CKA_WRAP,
// CKA_UNWRAP and CKA_DERIVE cleared; imported keys get the same
// attributes. The objects of one piece of material share a 16-byte
// CKA_ID — the marker "pkm1", the creation time in Unix milliseconds
// (6 bytes) and 6 random bytes — and carry the CKA_LABEL
// "pocketkms:<purpose>:<keyTag>:<version>" (the convergent nonce key adds
// ":convergent"). The handle is a 25-byte
// header plus the key tag: format version, type, convergent flag,
// purpose, version and CKA_ID (see handle.go). It holds no key material.
// Load checks that the objects under the CKA_ID carry the labels of the
// requested KeyRef.
//
// The package calls PKCS#11 through github.com/miekg/pkcs11 directly.
// github.com/ThalesGroup/crypto11 was considered and not used: its GCM
// Seal panics when the token returns an error, its default GCM nonce is
// 16 bytes where NAVER's envelope has 12, and its OAEP decryption asks
// the token for SHA-256 parameters, which SoftHSM2 2.6 refuses (see
// Limitations). Each mechanism below needs a few calls, and owning them
// lets every token error become a typed backend error.
//
// The mechanisms are:
//
//   - AES256: CKM_AES_KEY_GEN (32 bytes) and CKM_AES_GCM with a 12-byte
//     nonce from crypto/rand and a 128-bit tag; the output is nonce ‖
//     ciphertext ‖ tag. A convergent key has a second, CKK_GENERIC_SECRET
//     key, and its nonce is the first 12 bytes of CKM_SHA256_HMAC over
//     [backend.ConvergentNonceMessage], computed in the token: the same
//     construction as [backend.ConvergentNonce].
//   - RSA2048: CKM_RSA_PKCS_KEY_PAIR_GEN (e = 65537). Cipher keys sign
//     with CKM_RSA_PKCS_PSS (SHA-256, MGF1-SHA256, a 222-byte salt or
//     the [backend.SignRequest.PSSSaltLength] asked for) and
//     decrypt RSA-OAEP-SHA256 (see Limitations); token-signing keys sign
//     with CKM_RSA_PKCS over the SHA-256 DigestInfo. Encryption and
//     verification need no secret: the Engine does them with the public
//     key Generate returned, read from the token when the key is made.
//   - ECDSA: CKM_EC_KEY_PAIR_GEN on prime256v1 and CKM_ECDSA, whose r ‖ s
//     output is encoded in ASN.1 DER.
//
// Public keys are read from the token (CKA_MODULUS and
// CKA_PUBLIC_EXPONENT; CKA_EC_POINT, a DER OCTET STRING around the
// uncompressed point) by Generate and ImportKey; Load does not read them,
// since a loaded key only decrypts and signs.
//
// # Concurrency
//
// A Backend and its keys are safe for concurrent use. PKCS#11 allows one
// C_Initialize per process and keeps login state per process and token,
// so the package shares one initialised module per library file among
// all Backends of the process (the last Close finalises it) and logs each
// token in once: the first Backend on a token opens an extra session that
// holds the login until the last Backend on that token closes. A later
// New on a logged-in token must present the same PIN.
//
// Each Backend has a bounded pool of read-write sessions
// (Config.MaxSessions, default [DefaultMaxSessions]), opened on demand and
// kept; an operation takes one session for its duration, and callers wait
// (or give up with their context) when all are busy. Close waits for the
// operations in flight.
//
// The hot path never searches the token. Load resolves a handle to object
// handles once and the Key keeps them (until a reset: see Sessions and
// recovery). Because SoftHSM2 re-reads a token
// object's file on every use, Load also copies the operational objects
// into session objects (C_CopyObject with CKA_TOKEN false), owned by the
// login session and shared by every Key of the process loaded from the
// same handle; an AES-GCM encryption of 1 KiB then costs about half as
// much. Config.NoSessionCopies turns the copies off. SoftHSM2 also
// compares every object of the token on each search, so the second Load
// after login enumerates the token once and indexes this package's
// objects by CKA_ID; Generate, ImportKey and Destroy keep the index
// current, and an ID it lacks falls back to a search. New reads no
// object, and the first Load is one search, so opening an Engine (which
// loads one key) does not walk the token.
//
// # Sessions and recovery
//
// The token's login can end under a running Backend: other code calls
// C_CloseAllSessions or C_Logout, the token is reset, a network HSM
// restarts. A call notices it from the return value
// (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_USER_NOT_LOGGED_IN,
// CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT,
// CKR_TOKEN_NOT_RECOGNIZED) or, for a session it has just opened, from
// C_GetSessionInfo, and then:
//
//  1. If another call has recovered meanwhile, or the anchor session is
//     still logged in (only this call's session was lost), it goes on.
//  2. Otherwise it resets the token, for every Backend of the process on
//     it: it waits for the calls in flight on the token, closes every
//     session of the process on the token (C_CloseAllSessions), opens a
//     new anchor session and logs in with the Backend's PIN, reading the
//     PIN file again. Object handles found before are never used again:
//     a loaded key finds its objects again by CKA_ID and label at its
//     next use (SoftHSM2 renumbers them at each login), and the index is
//     rebuilt.
//  3. It runs the operation once more, on a new session.
//
// A call that fails again, or whose recovery fails, fails with an error
// wrapping [backend.ErrUnavailable] (kms.ErrUnavailable, 503, in the
// Engine), never with backend.ErrKeyNotFound or ErrInvalidHandle, which
// say that the material is gone or foreign. A PIN the token refuses at
// such a login is reported as well ([ErrIncorrectPIN]) and not tried
// again until the PIN source gives another, so retries cannot lock the
// PIN. New on a token whose login was lost logs it in again. A call that
// finds an object handle invalid (CKR_OBJECT_HANDLE_INVALID,
// CKR_KEY_HANDLE_INVALID) finds the objects again by CKA_ID and label,
// once; if they are gone, it fails with backend.ErrKeyNotFound.
//
// What is retried: Load, Destroy, Sweep and every key operation (encrypt,
// decrypt, sign), which create nothing; a second Destroy or Sweep finds
// what the first left. Generate and ImportKey are not safe to repeat
// blindly: a session lost during C_GenerateKey or C_CreateObject may
// have created some or all of the objects without saying so, and a plain
// second attempt would leave those behind. The CKA_ID is drawn afresh by
// each call and used by nothing else, so after the recovery the retry
// first destroys whatever carries it, then creates again under the same
// ID; if that search or the recovery fails, the call fails with
// backend.ErrUnavailable and leaves anything created to Sweep. Nothing is
// retried more than once.
//
// # Leftover objects
//
// Generate creates token objects before the Engine has stored the
// handle; if the process dies in between, the objects stay in the token
// and no record names them. [Backend.Sweep] ([backend.Sweeper]) finds
// the objects of this package (label prefix "pocketkms:"), groups them
// by CKA_ID and destroys the material no kept handle names, created
// before a cutoff (the time in the CKA_ID: PKCS#11 keeps no creation time
// for keys, and CKA_START_DATE is a day at best), and not loaded in this
// process; kms.Engine.SweepOrphans calls it with every handle the store
// names. Objects of other applications, objects whose labels and types do
// not form one piece of this package's material, and material made before
// CKA_IDs recorded the time are never destroyed.
//
// # Security
//
// Secret and private keys exist in plaintext only inside the token (and,
// for session copies, in the SoftHSM2 library's memory, which holds the
// token objects there too). What passes through this process: plaintexts
// and ciphertexts, the HMAC input of convergent encryption, the decoded
// RSA block during OAEP decoding, public keys, and the material given to
// ImportKey. Buffers this package owns are cleared after use (best
// effort: Go may have copied them, and the PKCS#11 binding frees its C
// copies of attribute values without clearing them).
//
// The Backend keeps no copy of the PIN: a PIN file is read again for
// every login (New, and the login after a reset), into a buffer cleared
// after use; a PIN given as [Config.PIN] stays in that [PIN] value, which
// never prints. The token keeps a salted SHA-256 digest of the PIN it is
// logged in with, to check later logins in the process, and one of a PIN
// it refused. (Best effort again: C_Login takes the PIN as a Go string,
// which cannot be cleared.) [Config] and [PIN] never print, marshal or
// log the PIN. Errors name modules, tokens, key tags and PKCS#11 return
// values, never a PIN, plaintext or key material; every decryption
// failure (tag mismatch, padding, length) is the opaque
// [backend.ErrDecryptionFailed].
//
// # Limitations
//
//   - SoftHSM2 2.6 decrypts RSA-OAEP with SHA-1 only (SHA-256 parameters
//     fail with CKR_ARGUMENTS_BAD). The token therefore performs the raw
//     RSA decryption (CKM_RSA_X_509) and this package decodes EME-OAEP
//     (RFC 8017 §7.1.2) in constant time, with one opaque error for every
//     failure; the Wycheproof OAEP vectors check it. The decoded block is
//     in this process's memory for a moment.
//   - SoftHSM2 reports a GCM tag mismatch as CKR_GENERAL_ERROR; C_Decrypt
//     errors that are not about the key or the session are therefore all
//     mapped to backend.ErrDecryptionFailed.
//   - SoftHSM2 2.6.1 frees a session in C_CloseAllSessions (and
//     C_CloseSession) while another thread may be inside a call on it:
//     the heap is corrupted and the process aborts. This package's resets
//     wait for its calls in flight on the token; other code of the
//     process must not close sessions on the token while calls run.
//   - A reset closes every session of the process on the token, other
//     code's included, and reopens on the same slot: a module that moves
//     the token to another slot (re-initialised) needs a new Backend.
//   - Sweep destroys material of any store on the token that the caller
//     does not name: a token serves one store (one Engine, or Engines
//     sharing one store).
//   - Several processes may share a token: replicas whose Engines share
//     one store (etcd, package store/etcd) must all reach the token that
//     holds the keys, since the store keeps only references to its
//     objects. In production that is a network HSM; with SoftHSM2 it is
//     processes on one machine whose SOFTHSM2_CONF names the same
//     directories.tokendir (store/etcd's TestSoftHSMAcrossProcesses: a
//     key created in one process decrypts in another that was already
//     running, as a lookup missing from the index searches the token).
//     SoftHSM2 does not replicate a token across machines.
//   - Session copies and the index belong to this process. Destroy
//     removes them here, but if another process destroys the token objects
//     of a key this process has loaded, the key keeps working here until
//     the token's last Backend closes or the token is reset (set
//     NoSessionCopies to avoid that).
//   - A token that other code in the process logged in without this
//     package (C_Login answers "already logged in") cannot have its PIN
//     checked by New.
//   - Creating token objects with SoftHSM2's file store takes milliseconds
//     per object, and the second Load after login costs about 70 µs per
//     object in the token (the index).
//   - SoftHSM2 reads SOFTHSM2_CONF once per process, at the first
//     C_Initialize, and does not see tokens another process creates later
//     until the module is finalised (when the last Backend closes).
//   - The package is tested with SoftHSM2 2.6.1 only. It relies on object
//     handles staying valid and unique while the token is logged in, which
//     SoftHSM2 guarantees; Destroy also marks the destroyed material in
//     this process, so stale Keys fail with backend.ErrKeyNotFound rather
//     than reaching a reused handle.
package softhsm
