package kms

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/store"
)

// CreateKeyRequest describes a new key.
type CreateKeyRequest struct {
	// Name: 3..15 characters of letters, digits, '-' and '_', starting with
	// a letter; unique case-insensitively.
	Name string
	// Type: AES256, RSA2048 or ECDSA.
	Type KeyType
	// Memo: at most 100 characters (optional).
	Memo string
	// Convergent: AES256 only. The same (version, context, plaintext)
	// always encrypts to the same ciphertext; a context is then required.
	Convergent bool
	// AutoRotation turns automatic rotation on.
	AutoRotation bool
	// RotationPeriodDays is the auto-rotation period, 1..730 days; 0 means
	// 90 when AutoRotation is on. Like NAVER, the range is checked even
	// when AutoRotation is off.
	RotationPeriodDays int
}

// Key describes a key. It is a copy: changing it changes nothing.
type Key struct {
	Tag            string
	Name           string
	Type           KeyType
	Memo           string
	Convergent     bool
	State          KeyState
	CurrentVersion uint32
	CreatedAt      time.Time
	StateChangedAt time.Time
	// DestroyAt is when a REVOKED key will be destroyed; zero otherwise.
	DestroyAt time.Time
	// AutoRotation is the automatic rotation setting.
	AutoRotation Rotation
	// MinDecryptionVersion is the lowest version that decrypts and
	// re-encrypts; 0 means every version (SetKeyMinDecryptionVersion).
	MinDecryptionVersion uint32
}

// Rotation is a key's automatic rotation setting.
type Rotation struct {
	Enabled bool
	// PeriodDays is the period, 1..730 days; 0 when rotation was never on.
	PeriodDays int
	// NextRotationAt is when the next automatic rotation is due; zero when
	// rotation is off.
	NextRotationAt time.Time
}

// KeyVersion describes one version of a key.
type KeyVersion struct {
	Version   uint32
	State     VersionState
	Current   bool
	CreatedAt time.Time
	// StateChangedAt is when the version was last enabled or disabled;
	// CreatedAt if never.
	StateChangedAt time.Time
}

func (s *keySnap) versionInfo(v *versionSnap) KeyVersion {
	changed := v.stateChangedAt
	if changed == 0 {
		changed = v.createdAt
	}
	return KeyVersion{
		Version: v.num, State: v.state, Current: int(v.num) == len(s.versions),
		CreatedAt: v.createdAt.time(), StateChangedAt: changed.time(),
	}
}

// KeyPage is one page of ListKeys.
type KeyPage struct {
	Keys       []Key
	PageNo     int
	PageSize   int
	TotalCount int
}

// ListKeysRequest selects a page: PageNo from 0, PageSize 1..200 (0 means
// 20), as in NAVER's v3 API.
type ListKeysRequest struct {
	PageNo   int
	PageSize int
}

var keyNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{2,14}$`)

const maxMemoChars = 100

func validateName(name string) error {
	if !keyNameRE.MatchString(name) {
		return errors.New("key name must be 3..15 letters, digits, '-' or '_', starting with a letter")
	}
	return nil
}

func validateMemo(memo string) error {
	if !utf8.ValidString(memo) || utf8.RuneCountInString(memo) > maxMemoChars {
		return fmt.Errorf("memo must be valid UTF-8 of at most %d characters", maxMemoChars)
	}
	return nil
}

func (s *keySnap) info() *Key {
	return &Key{
		Tag: s.tag, Name: s.name, Type: s.typ, Memo: s.rare().memo,
		Convergent: s.convergent, State: s.state, CurrentVersion: uint32(len(s.versions)),
		CreatedAt: s.createdAt.time(), StateChangedAt: s.stateChangedAt.time(), DestroyAt: s.rare().destroyAt.time(),
		AutoRotation:         Rotation{Enabled: s.rare().rotation.enabled, PeriodDays: s.rare().rotation.periodDays, NextRotationAt: s.rare().rotation.nextAt.time()},
		MinDecryptionVersion: s.minDecrypt,
	}
}

// CreateKey creates a key with its first version, ENABLED. Names are
// unique case-insensitively; the store decides, so of two creates of one
// name (in this process or, with a shared store, in another) exactly one
// succeeds and the other fails with ErrAlreadyExists.
func (e *Engine) CreateKey(ctx context.Context, req CreateKeyRequest) (*Key, error) {
	const op = "create key"
	if err := e.enter(ctx, op); err != nil {
		return nil, err
	}
	defer e.leave()
	start := e.startTime()
	k, err := e.createKey(ctx, op, req)
	if e.watching() {
		var tag string
		var version uint32
		if k != nil {
			tag, version = k.Tag, 1
		}
		return endTrusted(e, ctx, op, tag, nil, version, start, k, err)
	}
	return k, err
}

func (e *Engine) createKey(ctx context.Context, op string, req CreateKeyRequest) (*Key, error) {
	switch {
	case !req.Type.Valid():
		return nil, newErr(op, "", ErrInvalidArgument, "key type must be AES256, RSA2048 or ECDSA")
	case req.Convergent && req.Type != AES256:
		return nil, newErr(op, "", ErrInvalidArgument, "only AES256 keys can be convergent")
	}
	if err := validateName(req.Name); err != nil {
		return nil, newErr(op, "", ErrInvalidArgument, err.Error())
	}
	if err := validateMemo(req.Memo); err != nil {
		return nil, newErr(op, "", ErrInvalidArgument, err.Error())
	}
	if req.RotationPeriodDays != 0 {
		if err := validatePeriod(req.RotationPeriodDays); err != nil {
			return nil, newErr(op, "", ErrInvalidArgument, err.Error())
		}
	}
	tag, err := e.freshTag()
	if err != nil {
		return nil, wrapErr(op, "", ErrInternal, err)
	}
	now := msTime(e.now().UnixMilli())
	s := &keySnap{
		tag: tag, name: req.Name, typ: req.Type, convergent: req.Convergent,
		state: StateEnabled, createdAt: stampOf(now), stateChangedAt: stampOf(now), aclM: allowAll,
	}
	if req.Memo != "" {
		s.own().memo = req.Memo
	}
	if e.shred != nil {
		// The key's shred key is durable before any record names it (see
		// shredkeys.go); every handle of the key is sealed under it.
		if s.kek, err = e.shred.Create(tag); err != nil {
			return nil, wrapErr(op, tag, ErrInternal, err)
		}
		s.wrapped = true
	}
	gen, err := e.be.Generate(ctx, &backend.GenerateRequest{
		Ref:  backend.KeyRef{KeyTag: tag, Version: 1, Purpose: backend.PurposeCipher},
		Type: req.Type, Convergent: req.Convergent,
	})
	if err != nil {
		e.dropShredAfter(ctx, err, tag)
		return nil, backendErr(op, tag, err)
	}
	made := cipherMaterial(tag, 1, req.Type, gen.Handle)
	v, err := newVersion(s, 1, now, gen)
	if err != nil {
		e.discard(ctx, made)
		e.dropShredAfter(ctx, err, tag)
		return nil, wrapErr(op, tag, ErrInternal, err)
	}
	s.versions, s.seq = []versionSnap{*v}, e.seq.Add(1)
	if req.AutoRotation {
		period := cmp.Or(req.RotationPeriodDays, DefaultRotationPeriodDays)
		s.own().rotation = rotation{set: true, enabled: true, periodDays: period, nextAt: stampOf(now.Add(days(period)))}
	}
	c := &store.Change{}
	addHistory(ctx, c, op, nil, s, now)
	c.Put(s.keyRecord(), v.record(tag), &store.NameRecord{Name: lower(req.Name), Tag: tag}).
		Expecting(store.NameKey(req.Name), 0).
		Expecting(store.KeyKey(tag), 0)
	rev, err := e.st.Apply(ctx, c)
	if err != nil {
		e.discardAfter(ctx, err, made)
		e.dropShredAfter(ctx, err, tag)
		var ce *store.ConflictError
		if errors.As(err, &ce) && ce.Key == store.NameKey(req.Name) {
			return nil, newErr(op, "", ErrAlreadyExists, "a key with this name exists")
		}
		return nil, e.storeErr(op, tag, err)
	}
	s.rev = rev
	ent := newEntry(s)
	e.keys.Store(tag, ent)
	e.log.LogAttrs(ctx, slog.LevelInfo, "kms: key created", slog.String("keyTag", tag), slog.String("type", string(req.Type)))
	return s.info(), nil
}

// newVersion is the snapshot of a new, ENABLED version n of the key s,
// its handle sealed as s's are.
func newVersion(s *keySnap, n uint32, now time.Time, gen *backend.GenerateResponse) (*versionSnap, error) {
	stored, err := s.seal(gen.Handle, backend.PurposeCipher, n)
	if err != nil {
		return nil, fmt.Errorf("seal the handle: %w", err)
	}
	v := &versionSnap{num: n, state: VersionEnabled, createdAt: stampOf(now), handle: gen.Handle, stored: stored, lk: &lazyKey{}}
	if gen.Public != nil {
		der, err := x509.MarshalPKIXPublicKey(gen.Public)
		if err != nil {
			return nil, fmt.Errorf("marshal public key: %w", err)
		}
		v.setPublic(der, gen.Public)
	}
	return v, nil
}

// cipherMaterial names the cipher material of one key version.
func cipherMaterial(tag string, v uint32, typ KeyType, handle []byte) *backend.DestroyRequest {
	return &backend.DestroyRequest{Ref: backend.KeyRef{KeyTag: tag, Version: v, Purpose: backend.PurposeCipher}, Type: typ, Handle: handle}
}

// discard destroys material generated for a change that was not
// committed (a cipher version or a token-signing key pair).
func (e *Engine) discard(ctx context.Context, req *backend.DestroyRequest) {
	if err := e.be.Destroy(ctx, req); err != nil {
		e.log.LogAttrs(ctx, slog.LevelWarn, "kms: could not destroy uncommitted key material",
			slog.String("key", req.Ref.String()), slog.String("error", err.Error()))
	}
}

// discardAfter is discard after a failed commit, unless the store cannot
// tell whether the commit landed: destroying material that a committed
// record names would lose the key, so then the material is kept (at worst
// orphaned) and the next open reads the truth.
func (e *Engine) discardAfter(ctx context.Context, commitErr error, req *backend.DestroyRequest) {
	if errors.Is(commitErr, store.ErrUncertain) {
		e.log.LogAttrs(ctx, slog.LevelWarn, "kms: keeping key material whose commit may have landed",
			slog.String("key", req.Ref.String()))
		return
	}
	e.discard(ctx, req)
}

// freshTag returns a random key tag no key of this Engine has. Two equal
// 256-bit tags mean a broken random source; the check keeps that from
// reaching the store, whose commit would refuse it anyway.
func (e *Engine) freshTag() (string, error) {
	var b [32]byte
	for range 3 {
		if _, err := io.ReadFull(e.random, b[:]); err != nil {
			return "", fmt.Errorf("read random key tag: %w", err)
		}
		tag := hex.EncodeToString(b[:])
		if _, taken := e.keys.Load(tag); !taken {
			return tag, nil
		}
	}
	return "", errors.New("the random source repeats itself: three key tags in a row were taken")
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

// GetKey returns a key's description.
func (e *Engine) GetKey(ctx context.Context, keyTag string) (*Key, error) {
	return readKey(e, ctx, "get key", keyTag, func(op string, s *keySnap) (*Key, error) {
		return s.info(), nil
	})
}

// ListKeyVersions returns a key's versions in ascending order.
func (e *Engine) ListKeyVersions(ctx context.Context, keyTag string) ([]KeyVersion, error) {
	return readKey(e, ctx, "list key versions", keyTag, func(op string, s *keySnap) ([]KeyVersion, error) {
		out := make([]KeyVersion, len(s.versions))
		for i := range s.versions {
			out[i] = s.versionInfo(&s.versions[i])
		}
		return out, nil
	})
}

// GetKeyVersion describes one version of a key.
func (e *Engine) GetKeyVersion(ctx context.Context, keyTag string, version uint32) (*KeyVersion, error) {
	return readKey(e, ctx, "get key version", keyTag, func(op string, s *keySnap) (*KeyVersion, error) {
		v := s.version(version)
		if v == nil {
			return nil, newErr(op, s.tag, ErrVersionNotFound, fmt.Sprintf("version %d", version))
		}
		info := s.versionInfo(v)
		return &info, nil
	})
}

// ListKeys returns a page of keys, newest first.
func (e *Engine) ListKeys(ctx context.Context, req ListKeysRequest) (*KeyPage, error) {
	const op = "list keys"
	if err := e.enter(ctx, op); err != nil {
		return nil, err
	}
	defer e.leave()
	if req.PageSize == 0 {
		req.PageSize = 20
	}
	if req.PageNo < 0 || req.PageSize < 1 || req.PageSize > 200 {
		return nil, newErr(op, "", ErrInvalidArgument, "pageNo must be >= 0 and pageSize 1..200")
	}
	var snaps []*keySnap
	e.keys.Range(func(_ string, v *keyEntry) bool {
		if s := v.snap.Load(); s.state != stateDestroyed {
			snaps = append(snaps, s)
		}
		return true
	})
	// Newest first. Replicas sharing a store can hand out one sequence
	// number twice; the creation time and then the tag break ties, so
	// every replica lists the same order.
	slices.SortFunc(snaps, func(a, b *keySnap) int {
		return cmp.Or(cmp.Compare(b.seq, a.seq), cmp.Compare(b.createdAt, a.createdAt), cmp.Compare(a.tag, b.tag))
	})
	page := &KeyPage{PageNo: req.PageNo, PageSize: req.PageSize, TotalCount: len(snaps), Keys: []Key{}}
	start := req.PageNo * req.PageSize
	if req.PageNo > len(snaps) || start >= len(snaps) {
		return page, nil
	}
	for _, s := range snaps[start:min(start+req.PageSize, len(snaps))] {
		page.Keys = append(page.Keys, *s.info())
	}
	return page, nil
}

// RotateKey adds a new version to an ENABLED key and makes it current.
// Older versions keep decrypting and verifying. A key already at
// MaxVersions versions fails with ErrVersionLimit. A manual rotation also
// restarts the auto-rotation period.
func (e *Engine) RotateKey(ctx context.Context, keyTag string) (*KeyVersion, error) {
	const op = "rotate key"
	return mutate(e, ctx, op, keyTag, e.rotation(ctx, op))
}

// rotation is the update function that adds a version.
func (e *Engine) rotation(ctx context.Context, op string) func(s *keySnap, now time.Time) (edit, *KeyVersion, error) {
	return func(s *keySnap, now time.Time) (edit, *KeyVersion, error) {
		tag := s.tag
		if !s.enabled() {
			return edit{}, nil, newErr(op, tag, ErrKeyNotEnabled, "")
		}
		if len(s.versions) >= MaxVersions {
			return edit{}, nil, newErr(op, tag, ErrVersionLimit, fmt.Sprintf("a key has at most %d versions", MaxVersions))
		}
		next := uint32(len(s.versions) + 1)
		gen, err := e.be.Generate(ctx, &backend.GenerateRequest{
			Ref:  backend.KeyRef{KeyTag: tag, Version: next, Purpose: backend.PurposeCipher},
			Type: s.typ, Convergent: s.convergent,
		})
		if err != nil {
			return edit{}, nil, backendErr(op, tag, err)
		}
		made := cipherMaterial(tag, next, s.typ, gen.Handle)
		v, err := newVersion(s, next, now, gen)
		if err != nil {
			e.discard(ctx, made)
			return edit{}, nil, wrapErr(op, tag, ErrInternal, err)
		}
		ns := s.clone()
		ns.versions = append(slices.Clip(s.versions), *v)
		if ns.rare().rotation.enabled {
			ns.own().rotation.nextAt = stampOf(now.Add(days(ns.rare().rotation.periodDays)))
		}
		ed := edit{next: ns, made: made}
		ed.change.Put(v.record(tag))
		info := ns.versionInfo(v)
		return ed, &info, nil
	}
}

// backendErr maps a backend error to the Engine's error classes.
func backendErr(op, tag string, err error) *Error {
	switch {
	case isContextErr(err):
		return canceled(op, tag, err)
	case errors.Is(err, backend.ErrDecryptionFailed):
		return wrapErr(op, tag, ErrDecryptionFailed, err)
	case errors.Is(err, backend.ErrInvalidArgument):
		return wrapErr(op, tag, ErrInvalidArgument, err)
	case errors.Is(err, backend.ErrClosed):
		return wrapErr(op, tag, ErrClosed, err)
	case errors.Is(err, backend.ErrUnavailable):
		return wrapErr(op, tag, ErrUnavailable, err)
	case errors.Is(err, backend.ErrInvalidHandle), errors.Is(err, backend.ErrKeyNotFound):
		return wrapErr(op, tag, ErrBackendMismatch, err)
	}
	return wrapErr(op, tag, ErrInternal, err)
}
