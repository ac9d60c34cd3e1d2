// Package kms is pocketkms: NAVER Cloud's Key Management Service (API 2.0)
// as an embeddable, in-process Go library.
//
// Start with [New], giving it a key backend — backend/memory for software
// keys sealed under a root key, or backend/softhsm for a PKCS#11 token —
// and [WithDirectory] to persist state in Badger:
//
//	be, _ := memory.New(rootKey)
//	e, err := kms.New(ctx, be, kms.WithDirectory("/var/lib/myapp/kms"))
//	defer e.Close()
//	k, _ := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "orders", Type: kms.AES256})
//	ct, _ := e.Encrypt(ctx, k.Tag, []byte("card 4111"), nil) // "ncpkms:v1:..."
//	pt, _ := e.Decrypt(ctx, k.Tag, ct, nil)
//
// The Engine's methods are the trusted plane: the embedding application
// itself, as NAVER's account-authenticated API. [Engine.WithToken] gives
// the token plane: a caller presenting a per-key access or refresh token
// and its IP address, as NAVER's x-ncp-ocapi-token API (see [TokenClient]
// for the order of checks).
//
// # Tokens, IP allow-lists and rate limits
//
// Each key has a token generator ([Engine.ActivateTokenGenerator]) whose
// RSA-2048 signing key is made and held by the backend. [Engine.IssueTokens]
// issues an access and a refresh token (RS256 JWTs in NAVER's claim
// layout, see package token) carrying a snapshot of permissions; rotating
// or deactivating the generator kills every token it issued, at once.
// Verified tokens are cached (bounded; [WithTokenCacheSize]) and every hit
// is rechecked against the generator id, the expiry and the key state, so
// rotation, deactivation and key disable apply to the very next call.
//
// Each key has an IP allow-list for token callers ([Engine.AddAllowedIPs],
// [Engine.SetKeyACLEnabled]; package acl): enabled with no entries it
// denies everyone, it applies immediately to tokens issued before, and the
// trusted plane ignores it. Each key has its own token-plane rate limit,
// 300 operations per second with a burst of 300 by default
// ([WithRateLimit], [Engine.SetKeyRateLimit]; package ratelimit); keys never
// share a budget, and going over it fails with [ErrRateLimited] carrying a
// [RateLimitError] with RetryAfter.
//
// # Lifecycle
//
// Keys are ENABLED, DISABLED or REVOKED (deletion requested). Disabling a
// key stops every operation and keeps each version's own state for when it
// is enabled again. [Engine.RequestKeyDeletion] schedules destruction
// [DeletionDelay] (72 h) later; [Engine.CancelKeyDeletion] leaves the key
// DISABLED, and is refused once that time has come, even if the key has
// not been destroyed yet (NAVER's periodic job may leave a short window;
// here the time is the promise). Destruction destroys the material in the
// backend first (every version and the token-signing key), then the key's
// shred key (see Security), and deletes the records last, so a backend
// failure or a crash in between leaves the key pending deletion and the
// next run finishes it: material is never left behind without a record
// naming it. A version can be disabled unless it is current; a disabled
// version refuses decrypt, re-encrypt, verify and its public key.
// Auto-rotation runs every 1..730 days (default 90). Destruction and
// auto-rotation are done by [Engine.Maintain], which a background worker
// runs every minute on the Engine's clock ([WithMaintenanceInterval]); a
// rotation missed while the process was down happens once, not once per
// missed period, and a disabled key is not auto-rotated (it rotates when
// enabled again if overdue). Batch operations take 1..100 items and are
// atomic: any failure of an item returns no results and a [BatchError] by
// index; a failure that is not about the items (a key that cannot do the
// operation, a key not ENABLED) is one error without a BatchError.
//
// # Keys and formats
//
// Keys are AES256 (AES-256-GCM, optionally convergent), RSA2048 (RSA-OAEP
// SHA-256 encryption, RSASSA-PSS SHA-256 signatures with the maximum salt
// of 222 bytes, or 32 bytes through [Engine.SignDigest] for X.509 and TLS)
// and ECDSA (P-256, SHA-256, DER signatures). A key tag is 64
// lowercase hex characters from 32 random bytes; trusted-plane calls also
// accept it in upper case. Versions count from 1 up to [MaxVersions];
// [Engine.RotateKey] adds one and makes it current, and older versions keep
// decrypting and verifying.
//
// Ciphertexts and signatures are "ncpkms:v{N}:" followed by standard,
// padded base64, where N is the version that made them; they are parsed
// strictly (no v0, no leading zeros, no whitespace, no URL alphabet, no
// missing padding). An AES256 body is nonce(12) ‖ ciphertext ‖ tag(16),
// authenticated together with the key tag and version, so a body cannot be
// moved to another key or version. Size limits are NAVER's: see
// [MaxAESPlaintext], [MaxRSAPlaintext], [MaxContext], [MaxSignData].
//
// Decisions where NAVER's documentation is silent:
//
//   - Convergent AES256 keys derive the nonce as HMAC-SHA256 under a second
//     per-version key of (key tag, version, context, plaintext), truncated
//     to 12 bytes (see backend.ConvergentNonceMessage), and bind the context
//     as associated data, so decrypt and re-encrypt need the same context.
//     For non-convergent keys the context is ignored, as on NAVER.
//   - Public keys are PEM "PUBLIC KEY" (SubjectPublicKeyInfo).
//   - Re-encrypting a ciphertext already at the current version gives a
//     fresh ciphertext.
//   - Error codes and HTTP statuses are listed on [Error]'s sentinels; a
//     missing key or version is 404 ResourceNotFound; a key that is not
//     ENABLED is 409 InvalidState.
//
// # Errors
//
// Every error is an [*Error] carrying NAVER's error code and the HTTP
// status a server would answer; match classes with errors.Is against the
// sentinels ([ErrInvalidArgument], [ErrKeyNotFound], [ErrDecryptionFailed],
// …). Decryption failures of every kind collapse into
// [ErrDecryptionFailed], so callers get no oracle.
//
// # Concurrency
//
// An Engine is safe for concurrent use. Cipher operations read an
// immutable snapshot of the key (an atomic pointer), never touch the store
// and take no engine-wide lock; a backend key is loaded on first use and
// then kept. A change to a key takes that key's lock, commits one atomic,
// durable change to the store, then publishes a new snapshot, so it is
// visible to the next call once its method returns. Every method enters
// through one guard (a read lock held for the call); Close takes it for
// writing, so it waits for the calls in flight, and later calls fail with
// [ErrClosed]. Background maintenance runs on a context that Close
// cancels.
//
// # Where the state lives
//
// The store (package store) holds keys, versions with the backend's
// handles, token generators, allow-lists and the name index; the Engine
// depends only on its small interface: load everything once, apply one
// atomic change, and, for stores shared by several processes, a change
// feed. The embedded default is Badger ([WithDirectory], or in memory);
// [WithStore] plugs in another. Names are unique because the store says
// so (a create expects the name to be absent), and every change expects
// the key's last revision, so processes sharing a store never lose an
// update: the loser waits for the winner's change to reach it through the
// feed and decides again, or fails with [ErrConflict]. Badger's own
// failure modes (integrity record, full disks, broken commits) are
// documented in its package, internal/store; what reaches callers is
// [ErrInternal] naming the cause.
//
// On a shared store, an Engine that loses the change feed keeps serving
// from its last state; after [WithStaleLimit] it refuses token-plane
// calls with [ErrStale] until the feed is back ([Engine.FeedLost]). A
// store that counts the Engines sharing it (store.Membership, as
// store/etcd does) makes each of N Engines enforce 1/N of every key's
// token-plane rate limit, so that together they admit the key's limit
// under even load (details, and uneven load, in package store/etcd).
//
// # Security
//
// Key material never passes through the Engine: the backend returns an
// opaque handle (sealed material, or a reference into an HSM) that the
// Engine stores. Only the operations that need the secret (AES-GCM,
// decryption, signing) go to the backend; signature verification and
// RSA-OAEP encryption run in the Engine on the stored public key. No
// error, log line or fmt output carries key bytes, plaintext, data keys or
// tokens; [CustomKey] redacts its plaintext under every fmt verb.
// Plaintext buffers the Engine owns are cleared after use, best effort (Go
// may have copied them). A directory records its backend's check value
// (backend.CheckValuer: for backend/memory, an HMAC of a fixed label under
// the root key) when it is created, and New refuses another root key with
// [ErrBackendMismatch] before touching the directory, even when the store
// holds no key to try.
//
// The memory backend's root key can be changed online with
// [Engine.RotateRootKey] (or `pocketkms rotate-root` for a server's data
// directory): every handle is re-sealed under the new root key and a new
// shred key per key, the old shred keys are shredded, and a marker file
// (pocketkms.rotation) lets a crash at any point leave a directory that
// opens with exactly one of the two keys, which rolls the rotation back
// (old key) or finishes it (new key).
//
// Destroyed means unrecoverable from the directory. Badger keeps old
// values in its tables and logs long after their records are deleted,
// and a sealed handle opens under the root key wherever it is found. So
// with [WithDirectory] every key has its own 32-byte shred key, one
// 128-byte slot of the file pocketkms.shred/keys, written in place and
// synced before the key is first committed; every handle stored for the
// key is sealed under it (AES-256-GCM, bound to the key tag, purpose and
// version). Destruction destroys the material in the backend, then
// deletes the shred key (its slot is overwritten with zeros and synced),
// then the records: every copy of the handles Badger
// still holds is then noise, even to someone holding the root key and a
// copy of the directory (or a backup) made after the destruction. A key
// whose shred key is missing or damaged, and that is not due for
// destruction, fails New with [ErrInternal] naming it. A copy of the
// directory must take pocketkms.shred with Badger's files (and the
// pocketkms.* records beside them): without its shred keys a restored key
// does not open. [Engine.Backup] needs none of that (see below).
// Directories written before the slot file (one file per key in
// pocketkms.shred) open as they are; the first New moves their keys into
// the slot file and shreds the files, crash-safely ([VerifyDirectory]
// only reads them).
//
// # Backup and restore
//
// [Engine.Backup] writes every key (versions, token generator with its
// revoked tokens, allow-list, rate limit, rotation and deletion settings)
// and the name index, read in one read of the store, while the Engine
// keeps serving; [Engine.BackupFile] writes it to a file atomically.
// [Restore] writes a backup into an empty directory or an empty store,
// after checking the whole backup and that the backend opens every handle
// in it; [New] on the target then serves everything the source did.
// [VerifyBackup] checks a backup without a backend.
//
// A backup holds no raw key. Each handle is the backend's own: material
// sealed under backend/memory's root key, or a reference to an object in
// a PKCS#11 token. Shred keys are not copied: Backup opens each handle's
// shred-key seal and Restore seals it again under a new shred key in the
// target directory. So a backup opens with the root key (or the token)
// alone, and is as sensitive as the root key's ciphertexts; destroying a
// key later does not reach into backups already taken, which the
// operator keeps or deletes by policy. A key destroyed before the backup,
// or while it runs, is not in it. A backup of a PKCS#11 Engine names the
// token's objects without holding them: it restores only on the same
// token, and only while the objects exist; run one Engine per token (the
// orphan sweep of either would destroy the other's newer material, see
// [Engine.SweepOrphans]). Not in a backup: usage counters and audit
// history (when they exist), the token cache and rate-limiter buckets,
// and Badger's own history.
//
// The format (version 1; integers big-endian):
//
//	"PKMSBKUP" ‖ uint16 version
//	frames:  kind(1) ‖ uint32 length ‖ payload (at most 16 MiB)
//	  'I'  first, once: JSON header {createdAt, revision, keys, records, checkValue}
//	  'R'  one per store record: uint16 len(key) ‖ key ‖ value framed as package
//	       store frames it ('P', codec version, JSON, CRC-32C over key and frame)
//	  'E'  last: uint64 number of 'R' frames ‖ SHA-256 of every byte before the digest
//
// Nothing may follow the trailer. A backup that is truncated anywhere,
// has a byte changed, trails data, or whose records disagree (the name
// index, version sequences, a handle still sealed under a shred key) is
// refused with [ErrBackupInvalid] before anything is written. The
// header's checkValue is the backend's check value (backend.CheckValuer),
// which Restore compares before it loads any handle: another root key is
// [ErrBackendMismatch] even for a backup without keys.
//
// # Auditing, usage and metrics
//
// [WithAudit] sends an [AuditEvent] for every operation on a key, on both
// planes: cipher calls, management changes, token issuance and renewal,
// the Engine's own maintenance ([PlaneSystem]), and every refusal with
// its reason (bad or expired token, address not allowed, permission, rate
// limit, state, encryption budget). An event names the time, key,
// version, operation, plane, caller (the token's subject and address, or
// the identity the embedder put in the context with [WithCaller]),
// result and error code; never key material, plaintext, ciphertext,
// signatures or tokens. Reads (GetKey, ListKeys, ...) and calls refused
// by a closed Engine or an ended context before they start are not
// audited. Events go through a bounded queue: a slow or failing sink
// loses events, counted in [Engine.AuditStats], and never slows a call;
// [AuditOptions].FailClosed delivers them within the call instead, which
// fails with [ErrAuditFailed] when the sink does. [SlogAuditSink] logs
// them with log/slog.
//
// Every management change also writes a history entry in the same store
// commit as the change ([Engine.ListKeyHistory], newest first, paged; the
// newest [KeyHistoryRetention] per key; deleted after the key's
// destruction). [Engine.KeyUsage] counts encryptions, decryptions,
// signatures, verifications and refusals per key version with atomics,
// and writes them to the store at every Maintain and at Close (a crash
// loses at most one maintenance interval of counts). AES-GCM with random
// nonces allows [EncryptionBudget] (2^32) encryptions per version: the
// Engine warns at [WithEncryptionBudgetWarning]'s threshold, rotates keys
// that have auto-rotation on at the next Maintain, and refuses encryption
// under an exhausted version with [ErrEncryptionBudget].
//
// [WithObserver] reports calls, token-cache lookups and store commits to
// an [Observer]; package kmsmetrics implements it with OpenTelemetry
// metrics. Without a sink or an observer, a successful call pays one
// branch for them, plus the usage counters' few atomic operations.
//
// # Limitations
//
// ListKeys sorts every key on each call (fine for tens of thousands of
// keys). When the store cannot tell whether a failed commit landed, the
// Engine keeps the key material it made for the change rather than risk
// destroying material a committed record names; when the process dies
// between creating material and committing it, the material is orphaned
// in the backend (harmless for backend/memory; an unused object in an
// HSM).
//
// Shredding covers keys created with [WithDirectory] since shred keys
// exist: keys created before keep their handles as the backend made
// them, and their sealed material may remain in Badger's files after
// their destruction. It is only as good as the file system's forgetting:
// a copy-on-write file system, a snapshot, a journal that logs data, or
// an SSD's remapped blocks may keep a deleted shred key's bytes, as does
// a backup taken before the destruction. An in-memory Engine keeps
// nothing to shred. A store given with [WithStore] keeps its own copies
// of every value: etcd's history keeps a destroyed key's handles until
// the revision is compacted (and the space defragmented), so compact
// after destruction; backends that hold their material themselves (an
// HSM) destroy it for good either way.
//
// Auditing: a token-plane refusal made before the token is known good
// names no caller subject (only the address), and decryptions and
// verifications name no version (the ciphertext does; KeyUsage counts
// them per version). With several Engines on one store, each flush adds an
// Engine's counts to the shared usage record (optimistic
// read-modify-write), so counts and the encryption budget are global; the
// budget may be overshot by at most (Engines) × one Engine's
// encryptions between two of its flushes (see [Engine.KeyUsage]). History and usage records use the store prefixes h/
// and u/: an older pocketkms opening a store/etcd prefix written by this
// one refuses them as records outside its schema.
package kms
