// Package backendtest is the conformance suite every [backend.Backend]
// must pass. Call it from the backend's own tests:
//
//	func TestConformance(t *testing.T) {
//		backendtest.Run(t, func(t *testing.T) backend.Backend {
//			b, err := mybackend.New(...)
//			if err != nil {
//				t.Fatal(err)
//			}
//			return b
//		})
//	}
//
// There are three entry points:
//
//   - [Run] checks the SPI contract with a fresh backend per subtest:
//     round trips for every key type, outputs that must differ or be equal,
//     tables of malformed input and the sentinel errors they must produce
//     (never a panic), handles bound to their KeyRef, Verify answering
//     false, the PSS salt length, concurrent use, Close, and, for backends
//     that implement the optional capabilities, [backend.Importer]
//     known-answer tests (convergent encryption included) and
//     [backend.PublicVerifier].
//   - [RunReopen] checks that handles stay usable when a backend is closed
//     and opened again on the same state directory, and that a backend on
//     another state directory refuses them. Backends without persistent
//     state (the memory backend) keep their root key in that directory.
//   - [RunWycheproof] runs Project Wycheproof vectors through the SPI. The
//     vectors come from the pinned module
//     github.com/C2SP/wycheproof@v0.0.0-20250901140545-b51abcfb8daf,
//     fetched with "go mod download"; without network access the test is
//     skipped, unless the environment variable CI is "true", which makes it
//     fail.
//
// The factories receive the subtest's *testing.T so they can use
// t.TempDir, t.Cleanup and t.Fatal. The suite closes every backend it is
// given when the subtest ends (Close must be idempotent), so factories need
// not. Nothing in this package is specific to one backend.
//
// # Contract beyond the SPI comments
//
// Where the backend package leaves room, the suite pins these choices, so
// that the Engine behaves alike on every backend:
//
//   - Generate and ImportKey check the KeyRef: a KeyTag of 64 lowercase hex
//     characters, a Version of at least 1, a known Purpose. A violation is
//     backend.ErrInvalidArgument.
//   - A nil request is backend.ErrInvalidArgument for every method (Load
//     may also answer backend.ErrInvalidHandle).
//   - RSA2048 Encrypt and Decrypt with additional data are
//     backend.ErrInvalidArgument.
//   - A tampered handle is backend.ErrInvalidHandle or
//     backend.ErrKeyNotFound; an empty handle, or a handle presented with
//     another KeyRef, type or convergent flag, is backend.ErrInvalidHandle.
//   - After Close every method of the backend and of the keys it loaded
//     fails with backend.ErrClosed (Ref and Type still answer).
//   - After Destroy, Load either still works (backends that store
//     nothing) or fails with backend.ErrKeyNotFound.
//
// The suite needs a few seconds: RSA-2048 key generation dominates it.
package backendtest
