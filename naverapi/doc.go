// Package naverapi is NAVER Cloud KMS's HTTP API as an http.Handler over a
// pocketkms Engine: the API 2.0 token and account APIs (/kms/v1/…, and the
// API 1.0 paths /keys/v2/…) and the v3 API (/kms/v3/…), so that client
// code written for https://ocapi.ncloud.com works against it with only its
// base URL changed. `pocketkms serve` (cmd/pocketkms) is this handler on a
// data directory; a custom server mounts it in its own mux, behind its own
// middleware and authentication (examples/server).
//
// Start with NewHandler, giving it the Engine and an Authenticator for the
// account API: NewSignatureV2 for NAVER's own NCP API Gateway signature
// v2, or one of yours (mTLS, OIDC, a bearer token; see Authenticator):
//
//	auth, err := naverapi.NewSignatureV2(map[string]string{accessKey: secretKey})
//	h, err := naverapi.NewHandler(eng, naverapi.WithAuthenticator(auth),
//		naverapi.WithLogger(logger))
//	mux.Handle("/", h) // NAVER's paths as they are: /kms/… and /keys/v2/…
//
// The caller's address, which the token API checks against each key's IP
// allow-list, is the connection's peer (PeerAddr); behind a reverse proxy
// pass WithClientAddr(TrustedProxies(…)) or a function of your own. Other
// options: WithAccountRateLimit, WithIPv6AllowLists. The request and
// response bodies are exported types (EncryptRequest, V3Key,
// TokenSetResponse, …) for Go clients and custom front ends; an
// Authenticator or a middleware answers in NAVER's envelope with *Error
// and WriteError.
//
// # Endpoints
//
// The routes (Handler.Routes lists them in net/http.ServeMux syntax).
// "either" means the same path accepts a token (x-ncp-ocapi-token: the
// token plane, kms.TokenClient) or account authentication (the
// Authenticator: the trusted plane, *kms.Engine); a request carrying a
// token is a token request. K2 is /kms/v1/keys/{keyTag}, K3
// /kms/v3/keys/{keyTag}, T3 /kms/v3/token/keys/{keyTag}.
//
//	API 2.0 cipher (either)        POST K2/encrypt, /decrypt, /re-encrypt, /reencrypt,
//	                               /create-custom-key, /sign, /verify, /get-pub-key
//	API 2.0 renewal (refresh token) PUT K2/token-set
//	API 1.0 paths (account)        POST /keys/v2/{keyTag}/encrypt, /decrypt, /reencrypt,
//	                               /createCustomKey, /sign, /verify
//	API 2.0 keys (account)         POST, GET /kms/v1/keys; GET K2; POST K2/enable, /disable,
//	                               /rotate, /request-deletion, /cancel-deletion,
//	                               /enable-auto-rotation, /disable-auto-rotation;
//	                               PUT K2/rotation-period, /memo
//	API 2.0 versions (account)     GET K2/versions, K2/versions/{version};
//	                               POST K2/versions/{version}/enable, /disable
//	API 2.0 tokens (account)       POST, GET, PUT, DELETE K2/token-generator; POST K2/token-set
//	API 2.0 IP ACL (account)       POST K2/acl/enable, K2/acl/disable; POST, DELETE, GET K2/acl
//	v3 cipher (token: T3, account: K3)
//	                               POST …/encrypt, /decrypt, /re-encrypt, /issue-custom-key,
//	                               /sign, /verify, /batch-encrypt, /batch-decrypt,
//	                               /batch-re-encrypt; GET …/versions/{version}/public-key
//	v3 renewal (refresh token)     POST T3/reissue-tokens, T3/issue-access-token
//	v3 keys (account)              POST, GET /kms/v3/keys; GET, PATCH K3; PATCH K3/rotation;
//	                               POST K3/request-deletion, K3/cancel-deletion
//	v3 versions (account)          GET, POST K3/versions; GET, PATCH K3/versions/{version}
//	v3 tokens (account)            POST K3/issue-tokens, K3/activate-token-generator,
//	                               K3/rotate-token-generator, K3/deactivate-token-generator;
//	                               GET K3/token-generator (pocketkms addition)
//	v3 IP ACL (account)            PATCH K3/acl; POST K3/acl/add-allowed-ips,
//	                               K3/acl/remove-allowed-ips; GET K3/acl/allowed-ips
//	v3 key history (account)       GET K3/history?pageNo&pageSize (pocketkms extension:
//	                               the key's management changes, newest first; see
//	                               V3KeyHistory and kms.Engine.ListKeyHistory)
//
// Other paths answer 404 NotFound, other methods on a known path 405
// MethodNotAllowed with Allow, both in the envelope of the path's API.
//
// # Bodies and envelopes
//
// API 2.0 (and 1.0) success: {"code":"SUCCESS","data":…} with epoch-millisecond
// dates. v3 success: the flat body, with RFC 3339 UTC dates (milliseconds) in
// fields ending in DateTime. v3 errors: {"error":{"errorCode","message",
// "detail","fieldErrors":[{"field","message"}]}}, or for batch item failures
// {"failures":{"<index>":{…}}} (never both). NAVER does not show its API 2.0
// error body; the handler answers {"code":"<errorCode>","msg":"<message>",
// "data":null,"error":{…as v3…}} (plus "failures" for array inputs), so a
// client testing code != "SUCCESS" sees the failure. Every *kms.Error is
// answered with its Code and Status; 429 carries Retry-After. Every response
// past net/http's own parsing carries a random x-ncp-request-id (a version 4
// UUID), and Cache-Control: no-store.
//
// Inputs follow spec §4.2 exactly: standard padded base64 (no URL alphabet,
// whitespace or missing padding); plaintext ≤ 43,692 characters and 32,768
// bytes; context ≤ 68 characters and 50 bytes; sign data ≤ 10,924 characters
// and 8,192 bytes; ciphertexts and signatures match
// ^ncpkms:v[1-9][0-9]{0,8}:<base64>$ and are ≤ 43,746 characters. A JSON
// value of the wrong type (a number where a string is expected) is 400
// InvalidParameter with fieldErrors naming it, e.g. requests[0].ciphertext.
// Unknown members are ignored; integers must be written as integers (30, not
// 30.0 or "30") except where NAVER documents "Integer or String".
//
// API 2.0 plaintext and ciphertext inputs may be a String or an Array<String>
// of 1..100 items (the v3 batch limit; NAVER does not document one for v2)
// with one context for all; arrays are answered as arrays in request order
// and run as one atomic batch (Engine.Batch…): any failing item fails the
// call, and "failures" names the items that failed. v3 batches take
// {"requests":[{…},…]} (1..100 items, a context per item) and answer
// {"results":{"<index>":{…}}}; missing or malformed items fail by index
// before anything runs (NAVER's phase 1).
//
// # Decisions where NAVER does not show the schema
//
//   - v2 keys: keyTag, keyName, keyType, status (ENABLE, DISABLE, REVOKE),
//     protectionType, isConvergent, memo, isAutoRotation, rotationPeriod,
//     nextRotationDate, currentVersion, registerDate, statusDate, destroyDate.
//     The list is {keyList, currentPageNo, totalPageNo, totalCount}; pageNo
//     counts from 1 (default 1), pageSize 1..200 (default 100). pocketkms has
//     no numeric keyId, so none is sent.
//   - v2 versions: GET …/versions → {keyTag, versionList:[{keyTag, version,
//     status, isCurrent, registerDate}]}; version enable/disable →
//     {keyTag, version, status, statusDate}.
//   - v2 rotation calls → {keyTag, isAutoRotation, rotationPeriod,
//     nextRotationDate}; enable-auto-rotation takes an optional rotationPeriod.
//   - v2 deletion → {keyTag, status, statusDate} plus destroyDate while REVOKE.
//   - v2 token-generator GET: tokenGeneratorId (null when inactive), status
//     ACTIVE|INACTIVE, enabledDate, disabledDate (null when never), and
//     issuedTokenCount (a set counts 2, an access token 1; never reset).
//   - v2 token-set: accessTokenHours / refreshTokenHours as an integer or a
//     string of digits, 1..17,520, or exactly "UL" for unlimited.
//   - get-pub-key → {publicKey} (PEM, SubjectPublicKeyInfo); Create Custom Key
//     → {ciphertext, key_version, plaintext?} on v2 (NAVER's snake_case) and
//     {ciphertext, keyVersion, plaintext?} on v3.
//   - v3 single calls → {ciphertext}, {plaintext}, {signature}, {valid};
//     public key → {keyTag, version, publicKey}.
//   - v3 keys: keyTag, keyName, nrn ("nrn:PUB:KMS::local:Key/<keyTag>"),
//     keyType, protectionType, convergent, status, memo (null when empty),
//     currentVersion, rotation {enabled, periodDays, nextRotationDateTime},
//     createdDateTime, statusUpdatedDateTime, scheduledDestroyDateTime. Lists:
//     {keys|versions|allowedIps, pageNo, pageSize, totalCount}, pageNo from 0
//     (default 0), pageSize 1..200 (default 20). createKey and createKeyVersion
//     answer 201; versions are {version, status, current, createdDateTime}.
//   - v3 token lifetimes: accessTokenMinutes / accessTokenUnlimited (NAVER's)
//     and refreshTokenMinutes / refreshTokenUnlimited (our names, by analogy);
//     token bodies are {accessToken, refreshToken} (no refreshToken from
//     issue-access-token). v3 generator calls answer {status ENABLED|DISABLED,
//     tokenGeneratorId}; PATCH acl answers {enabled}; add/remove answer the
//     whole list {allowedIps}.
//   - Tokens issued with account authentication carry every permission.
//     Their subject ("sub") is a fresh random UUID per token set, as in
//     NAVER's example tokens, unless the Authenticator's Principal names
//     one (TokenSubject); never the caller's access key. Renewal keeps the
//     refresh token's subject.
//   - protectionType: BASIC only (the memory backend seals keys under the root
//     key); COMMON_HSM is refused with 400 rather than silently downgraded.
//     It is required on v2 create (as NAVER documents) and optional on v3.
//   - Content type: API 2.0 accepts any, because NAVER's own curl examples
//     send JSON with curl --data (application/x-www-form-urlencoded); v3
//     answers 415 to a Content-Type that is not JSON (application/json,
//     application/merge-patch+json, …); none at all is accepted.
//   - context: NAVER checks it only on convergent keys. A context string that
//     is not valid base64 of at most 50 bytes is passed to the Engine as an
//     over-long context, which the Engine ignores on other keys and refuses
//     (400 InvalidParameter) on convergent ones. A non-string context is
//     refused on every key.
//   - IP allow-list entries: IPv4 addresses, CIDR prefixes and '*'
//     wildcards, as NAVER documents; IPv6 entries to add are refused (400
//     InvalidParameter naming each) unless WithIPv6AllowLists. Removal takes
//     any entry.
//   - The API 1.0 paths /keys/v2/{keyTag}/… are served (account only) because
//     NAVER's API 2.0 overview shows them on the API 2.0 host.
//
// # Authentication
//
// Routes marked "account" above go to the Authenticator; "token" routes
// take x-ncp-ocapi-token; "either" routes are token routes when the header
// is there. SignatureV2 implements NCP API Gateway signature v2 (see its
// documentation); every access key may do everything (one account, no
// sub-accounts). Tokens follow the Engine (kms.TokenClient).
//
// # Concurrency
//
// A Handler is safe for concurrent use; it holds no lock of its own on the
// hot path. The Engine must stay open while it serves.
//
// # Security
//
// Order of checks. Every request is authenticated before its body is
// read; routing reads only the method, the path and the headers:
//
//  1. token routes: the token plane's checks through
//     kms.TokenClient.Authorize, cheapest and least revealing first — the
//     key's IP allow-list (403 AccessDenied; an unknown key tag answers
//     like a bad token), the token's signature, expiry, kind and key
//     binding (401 Unauthorized), the route's permission (403 Forbidden)
//     and the key's state (409 InvalidState for a DISABLED or
//     pending-deletion key, once the token is known good). A caller who
//     fails learns nothing about its arguments: a junk token answers 401
//     whatever the body.
//  2. account routes: the Authenticator (401, or its own *Error), then the
//     per-caller rate limit (429 TooManyRequests with Retry-After;
//     WithAccountRateLimit, 300/s per access key by default). Refused
//     authentication spends no budget.
//  3. only then the body: at most MaxBodyBytes (6 MiB; a 100-item batch of
//     43,746-character ciphertexts with contexts is about 4.4 MB). A body
//     that declares more is refused unread; one of unknown length is read
//     through http.MaxBytesReader and cut at the limit (413
//     PayloadTooLarge). Then its validation (400 with fieldErrors), the
//     token plane's own rate limit (429, 300/s per key by default) and the
//     operation, which checks the token again (a cache hit).
//
// A refused request's body is never read by the handler, and on HTTP/1
// what happens to it depends on its size. A body of up to 4 KiB (a
// Content-Length, no Expect: 100-continue) usually arrived with the
// headers and already sits in net/http's read buffer: net/http discards
// it and the connection serves the next request, which costs less than a
// new connection. Any other body (larger, chunked, or not sent yet) is not
// read at all: the answer carries Connection: close, and the handler then
// takes the connection from net/http (http.ResponseController.Hijack),
// closes its write side, and closes it 500 ms later (net/http's own delay,
// so that the client reads the answer before the reset that closing a
// socket with unread data sends). Without this net/http, even on a
// connection it is about to close, reads up to 256 KiB of a body looking
// for its end, and waits for a chunked or 100-continue body that may never
// come. HTTP/2 resets the stream by itself. All of this is the handler's:
// it works in any http.Server, and where the ResponseWriter cannot be
// hijacked (a middleware's wrapper without Unwrap) the Connection: close
// answer stays and net/http closes the connection its own way. Nothing is
// needed on the listener: the kernel buffers at most its default receive
// buffer (128 KiB on Linux) of a body nobody reads. A flood of junk
// therefore costs the server a refusal and, for bodies over 4 KiB, a new
// connection each, and its heap does not grow with it; that new
// connection makes such a refusal cost about 3 times one without a body
// (BENCHMARKS.md, which also says why loopback makes it look dearer).
//
// Secrets. With WithLogger, the log has one line per request (method,
// path with the key tag, status, duration, request id, client address)
// and nothing else about it: no body, header value, token, signature,
// access secret, plaintext or key material. Errors carry no secret either;
// token failures and decryption failures are answered alike whatever the
// cause, and an Authenticator's own errors are answered 401 without their
// text. Issued tokens carry a random subject, never the caller's
// credentials. SignatureV2 compares signatures in constant time
// (crypto/hmac.Equal), an unknown access key costs the same HMAC as a
// known one, and its secrets never print. Response types that carry
// plaintext or tokens redact them from String and Format. Plaintext
// buffers the handler owns are cleared after use, best effort: JSON
// strings are Go strings and cannot be wiped.
//
// Serve it over TLS or on loopback only, since tokens and data cross the
// wire, and set the http.Server's header limit and timeouts
// (cmd/pocketkms: 64 KiB, 10 s to read headers, 60 s to read a request,
// 60 s to write, 120 s idle). As on NAVER, a signed request can be
// replayed within the 5-minute window, and a token is a bearer credential
// until it expires or its generator is rotated.
//
// # Limitations
//
//   - One account: every access key may manage every key; NAVER's sub-account
//     permissions, Forbidden answers from listKeys and the permission
//     snapshot of sub-accounts do not exist here.
//   - Global keys only: no region-isolated keys (kr-, jpn- prefixes) or
//     region hosts.
//   - No API Gateway signature v1 (x-ncp-apigw-api-key), no usage-history
//     API, no v2 "access token only" call (v3 issue-access-token exists).
//   - Memos are stored as sent (NAVER v3 strips emoji and sanitises HTML).
//   - Messages are in English; x-ncp-lang is ignored. Authentication failures
//     answer 401 Unauthorized, not the API gateway's own numeric codes.
//   - Rate limits (the Engine's per key, the account API's per caller) are
//     per process; the account limit counts requests, not the items of a
//     batch.
//   - The number of concurrent requests is not limited; put a limit in
//     front (a listener or a middleware) if you need one.
//   - A refused HTTP/1 request with a body of more than 4 KiB closes its
//     connection, so a legitimate client whose token expired reconnects
//     after the 401; a client still sending such a body gets the 401 and
//     then, 500 ms later, a reset.
package naverapi
