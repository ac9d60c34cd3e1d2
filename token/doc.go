// Package token issues and verifies the access and refresh tokens of a
// key's token generator, in NAVER Cloud KMS API 2.0's format: RS256 JWTs
// whose claims bind them to one key, one kind and a permission snapshot.
//
// Start with [IssueSet], which signs an access and a refresh token for a
// [Request] through any [crypto.Signer] (a hardware key works), and
// [Verify], which checks a presented token against the generator's public
// key and an [Expect] (kind, key tag, time). Put what Verify accepted
// in a [Cache] and [Verified.Recheck] every hit. [NewGeneratorID] makes
// generator ids. The package keeps no state of its own: generators, their
// key pairs and their ids belong to the caller.
//
// A token looks like NAVER's, byte for byte in layout:
//
//	header  {"typ":"JWT","alg":"RS256"}
//	payload {"sub":"<subject>","iat":<seconds>,"exp":<seconds>,"1":"ACCESS",
//	         "2":"keytag__<64 lowercase hex>","3":"EXT","4":[0,1,5]}
//
// exp is absent when the token never expires. "1" is ACCESS or REFRESH,
// "2" binds the token to a key, "3" is always EXT, "4" is the permission
// snapshot taken at issue time.
//
// # Token ids (jti)
//
// Beyond NAVER, and only when [Request].TokenIDs asks for it, a token
// carries a unique id as one more member, last: ,"jti":"<id>" (IDSize
// random bytes in unpadded base64url; a parsed id is 1 .. MaxIDLen
// base64url characters). Then no two tokens are identical, and one token
// can be named, for revocation, by its id ([Claims].ID, [Set].AccessID).
// A token without an id is NAVER's layout byte for byte, and the strict
// parser accepts both: jti is accepted only as the last member, once,
// unescaped.
//
// # Narrowed tokens (cidr)
//
// Also beyond NAVER, and only when [Request].CIDRs is not empty, a token
// is bound to callers in a few address prefixes: ,"cidr":["10.0.0.0/8",…]
// right after "4" (and before jti): 1 .. MaxCIDRs masked prefixes in
// canonical form, ascending, without duplicates. [Claims.AllowsAddr]
// checks an address against them; the caller (the Engine's token plane)
// applies it in addition to its own allow-list.
//
// # Permission ids
//
// NAVER does not publish the meaning of the integers in claim "4" (its
// tokens carry values from 0 to 39). This package defines its own table.
// It is a compatibility contract: the ids are persisted in every issued
// token, so an id is never renumbered and never reused, and new operations
// get new ids at the end.
//
//	id  Permission           operations allowed
//	 0  PermEncrypt          Encrypt, Batch Encrypt
//	 1  PermDecrypt          Decrypt, Batch Decrypt
//	 2  PermReEncrypt        Re-Encrypt, Batch Re-Encrypt
//	 3  PermCreateCustomKey  Create Custom Key
//	 4  PermSign             Sign
//	 5  PermVerify           Verify
//	 6  PermGetPublicKey     Get Public Key
//
// Renewal with a refresh token is governed by the token's kind, not by a
// permission. A parsed token keeps ids this version does not define, but
// [Claims.Has] never grants them; [IssueSet] and [Sign] refuse them.
//
// # Concurrency
//
// All functions are safe for concurrent use. A [Cache] is safe for
// concurrent use; its Get takes no lock and writes no shared memory.
// Claims and Verified values held by a Cache are shared and read-only.
//
// # Security
//
// Verify refuses, in this order, a token longer than [MaxTokenSize]
// (before splitting or decoding it), anything but three segments of
// strict unpadded base64url, a header other than typ JWT and alg RS256
// (so none, HS256 keyed with the public key, PS256, RS384 and the rest are
// refused before the signature is even decoded), a bad signature, and only
// then parses the payload: duplicate claims (which encoding/json would
// silently resolve to the last one), unknown claims, wrong types and any
// encoding other than the canonical one this package writes are refused.
// It then checks kind, key binding (byte for byte: another letter case is
// another key), iat (at most [IssuedAtLeeway] ahead of the verification
// time) and exp (expired when exp <= now; there is no leeway on expiry).
// [ErrTokenExpired] is only reported for a token that passed everything
// else.
//
// An [*Error]'s Reason is meant for logs and metrics. It is no oracle: the
// reasons found before the signature check describe only the bytes the
// caller sent, and the later ones can only be reached with a genuine
// signature. Still, answer every [ErrTokenInvalid] alike to a remote
// caller.
//
// Verify does not use golang-jwt's Parser: that parser decodes the claims
// before it verifies the signature and accepts duplicate members. The
// package uses golang-jwt for its SigningMethod interface; its RS256
// method signs through crypto.Signer and is not registered globally.
//
// Tokens are bearer secrets. No error of this package contains a token or
// any part of one; [Set] and [Cache] redact them in String, GoString,
// Format, LogValue (Set) and MarshalJSON (Set). The Cache keeps token
// strings in memory as map entries; see its documentation.
//
// # Limitations
//
//   - This package keeps no revocation list: as at NAVER, its kill
//     switches are rotating or deactivating the generator (a new key pair
//     and id), which Recheck enforces for cached tokens. The Engine adds
//     per-token revocation on top (kms.Engine.RevokeToken).
//   - Only tokens in exactly this package's encoding verify. A token signed
//     by the right key but encoded differently (other member order,
//     whitespace, escapes, extra claims) is refused; in particular NAVER's
//     own tokens, which have the same encoding, cannot be verified without
//     NAVER's key.
//   - Times are whole seconds between 1970 and 9999; subjects are at most
//     MaxSubjectLen bytes.
//   - Generator keys are RSA keys of 2048 to 4096 bits.
package token
