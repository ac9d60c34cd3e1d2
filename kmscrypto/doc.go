// Package kmscrypto puts pocketkms keys behind Go's standard crypto
// interfaces, so code written for them — x509, crypto/tls, JWT libraries,
// Tink — uses a key that never leaves the backend:
//
//   - [NewSigner]: a crypto.Signer for an RSA2048 or ECDSA key;
//   - [NewDecrypter]: a crypto.Decrypter for an RSA2048 key (RSA-OAEP,
//     SHA-256);
//   - [NewAEAD]: an AEAD with associated data for an AES256 key, with the
//     method set of Tink's tink.AEAD, for envelope encryption
//     (integration/tink and integration/gocloud build on it).
//
// Each works on both planes: pass a *kms.Engine (the trusted plane) or a
// kms.TokenClient (the token plane, Engine.WithToken) as the [Client].
//
//	signer, err := kmscrypto.NewSigner(ctx, e, ecdsaKeyTag)
//	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
//
//	kek, err := kmscrypto.NewAEAD(ctx, e, aesKeyTag)
//	wrapped, err := kek.Encrypt(dataKey, []byte("orders/2024"))
//
// The standard interfaces take no context, so each constructor takes the
// context its adapter's calls use; once it is done the calls fail with
// its error. Pass one that lives as long as the adapter.
//
// # Versions
//
// A Signer and a Decrypter are pinned to one key version, whose public key
// Public returns: the version current when they are made (a Decrypter can
// be given another with [WithVersion]). The trusted plane reads the
// current version with Engine.GetKey; the token plane has no such call, so
// the constructors find it with GetPublicKey: version 1, then a binary
// search up to kms.MaxVersions, at most 8 calls, and one more to read the
// key, each costing one unit of the key's token-plane rate limit. After a
// rotation a Signer refuses to sign (the key signs with its current
// version only, and that signature would not verify with Public: see
// [ErrVersionNotCurrent]), while a Decrypter keeps decrypting with its
// version as long as it is enabled. An AEAD is not pinned: it encrypts
// with the current version, and its ciphertexts say which version made
// them.
//
// # Errors
//
// Every error is a *kms.Error matching a kms sentinel with errors.Is, the
// Engine's own or one this package makes in the same form: options a key
// cannot honour are kms.ErrInvalidArgument (also matching
// errors.ErrUnsupported), the wrong key type kms.ErrWrongKeyType, an
// associated-data mismatch kms.ErrDecryptionFailed, a Signer outlived by
// a rotation kms.ErrInvalidState (with [ErrVersionNotCurrent]). The one
// exception is a done context, whose own error (context.Canceled,
// context.DeadlineExceeded) is returned as it is.
//
// # Concurrency
//
// Signer, Decrypter and AEAD are immutable after construction and safe
// for concurrent use; each call is one Engine call.
//
// # Security
//
// The adapters hold no key material: every private operation is an Engine
// call, checked like any other (token, permission, allow-list and rate
// limit on the token plane). Options are checked before the call and fail
// closed: an RSA2048 key never signs PKCS #1 v1.5 or decrypts PKCS #1 v1.5
// because a caller asked. The rand arguments of Sign and Decrypt are
// ignored; the backend draws its own randomness. String and fmt show a
// key tag and version, never the Client (a TokenClient holds a token).
// AEAD binds associated data in AES-GCM's own associated data, through
// kms.Engine.AppendSeal, after the key tag, the version and a byte that
// keeps its ciphertexts apart from Engine.Encrypt's (see [AEAD]); a
// mismatch reveals nothing but failure. Ciphertexts of the legacy format
// (SHA-256 of the associated data sealed with the plaintext) still
// decrypt. Plaintext buffers AEAD allocates itself (the legacy format's)
// are cleared after use, best effort.
//
// # Limitations
//
//   - RSA2048 keys sign RSASSA-PSS only, with one of two salt lengths:
//     the maximum, 222 bytes (rsa.PSSSaltLengthAuto, as NAVER's keys and
//     Engine.Sign do), or one as long as the hash, 32 bytes
//     (rsa.PSSSaltLengthEqualsHash, which TLS 1.3 and Go's X.509 use for
//     RSASSA-PSS). So an RSA2048 Signer signs certificates
//     (x509.SHA256WithRSAPSS; x509's default for RSA keys, PKCS #1 v1.5,
//     is refused) and TLS 1.3 handshakes, and golang-jwt's PS256, whose
//     verifiers accept any salt. Other salt lengths are refused with
//     errors.ErrUnsupported. A 32-byte-salt signature is for verifiers
//     holding the public key: Engine.Verify accepts only 222-byte salts
//     unless the Engine was made with kms.WithAnyPSSSaltLength.
//   - JWT RS256 (PKCS #1 v1.5) is refused, and a TLS 1.2 peer that offers
//     only PKCS #1 v1.5 signatures cannot complete a handshake with an
//     RSA2048 Signer; PS256 and ES256 work. golang-jwt signs with concrete private keys only, so it
//     needs a small SigningMethod over a crypto.Signer (see the example).
//   - A Signer signs with the current version only, so it stops working
//     when the key rotates; make a new one with a new certificate.
//   - AEAD ciphertexts are "aead:" and the Engine's text form, about 4/3
//     of the plaintext plus 55 bytes (a legacy one carries 32 more bytes
//     of associated-data digest); AEAD refuses empty plaintexts and ones
//     over [MaxAEADPlaintext], as the Engine refuses empty ones.
//   - Engine.ReEncrypt cannot move an AEAD ciphertext to a newer version
//     (it does not have the associated data); use [AEAD.ReEncrypt]. A
//     [Client] other than the two planes, without AppendSeal and
//     AppendOpen, writes and reads only the legacy format.
package kmscrypto
