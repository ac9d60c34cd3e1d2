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
	"github.com/pocketkms/kms/internal/store"
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
	changed := v.rec.StateChangedAt
	if changed == 0 {
		changed = v.rec.CreatedAt
	}
	return KeyVersion{
		Version: v.rec.Version, State: VersionState(v.rec.State), Current: v == s.current(),
		CreatedAt: msTime(v.rec.CreatedAt), StateChangedAt: msTime(changed),
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

func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func (s *keySnap) info() *Key {
	return &Key{
		Tag: s.rec.Tag, Name: s.rec.Name, Type: s.typ, Memo: s.rec.Memo,
		Convergent: s.rec.Convergent, State: KeyState(s.rec.State),
		CurrentVersion: s.rec.CurrentVersion,
		CreatedAt:      msTime(s.rec.CreatedAt), StateChangedAt: msTime(s.rec.StateChangedAt),
		DestroyAt:    msTime(s.rec.DestroyAt),
		AutoRotation: s.rotation(),
	}
}

func (s *keySnap) rotation() Rotation {
	r := s.rec.Rotation
	if r == nil {
		return Rotation{}
	}
	out := Rotation{Enabled: r.Enabled, PeriodDays: r.PeriodDays}
	if r.Enabled {
		out.NextRotationAt = msTime(r.NextAt)
	}
	return out
}

// CreateKey creates a key with its first version, ENABLED.
func (e *Engine) CreateKey(ctx context.Context, req CreateKeyRequest) (*Key, error) {
	const op = "create key"
	if !e.enter() {
		return nil, newErr(op, "", ErrClosed, "")
	}
	defer e.leave()
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
	e.createMu.Lock()
	defer e.createMu.Unlock()
	if _, taken := e.names[lower(req.Name)]; taken {
		return nil, newErr(op, "", ErrAlreadyExists, "a key with this name exists")
	}
	tag, err := e.freshTag()
	if err != nil {
		return nil, wrapErr(op, "", ErrInternal, err)
	}
	gen, err := e.be.Generate(ctx, &backend.GenerateRequest{
		Ref:  backend.KeyRef{KeyTag: tag, Version: 1, Purpose: backend.PurposeCipher},
		Type: req.Type, Convergent: req.Convergent,
	})
	if err != nil {
		return nil, e.backendErr(op, tag, err)
	}
	nowT := e.now()
	now := nowT.UnixMilli()
	rec := store.KeyRecord{
		Tag: tag, Name: req.Name, Type: string(req.Type), Memo: req.Memo,
		Convergent: req.Convergent, State: string(StateEnabled), Seq: e.seq + 1,
		CreatedAt: now, StateChangedAt: now, CurrentVersion: 1,
	}
	if req.AutoRotation {
		period := cmp.Or(req.RotationPeriodDays, DefaultRotationPeriodDays)
		rec.Rotation = &store.RotationRecord{Enabled: true, PeriodDays: period, NextAt: nowT.Add(days(period)).UnixMilli()}
	}
	vrec, err := versionRecord(tag, 1, now, gen)
	if err != nil {
		e.discard(ctx, cipherMaterial(tag, 1, req.Type, gen.Handle))
		return nil, wrapErr(op, tag, ErrInternal, err)
	}
	err = e.st.Update(func(tx *store.Txn) error {
		if err := tx.ClaimName(req.Name, tag); err != nil {
			return err
		}
		if err := tx.PutKey(&rec); err != nil {
			return err
		}
		return tx.PutVersion(&vrec)
	})
	if err != nil {
		e.discardAfter(ctx, err, cipherMaterial(tag, 1, req.Type, gen.Handle))
		if errors.Is(err, store.ErrNameTaken) {
			return nil, newErr(op, "", ErrAlreadyExists, "a key with this name exists")
		}
		return nil, wrapErr(op, tag, ErrInternal, err)
	}
	snap, err := buildSnap(rec, []store.VersionRecord{vrec})
	if err != nil { // cannot happen: the records were just built
		return nil, wrapErr(op, tag, ErrInternal, err)
	}
	e.seq++
	e.names[lower(req.Name)] = tag
	ent := &keyEntry{tag: tag}
	ent.snap.Store(snap)
	e.keys.Store(tag, ent)
	e.log.LogAttrs(ctx, slog.LevelInfo, "kms: key created", slog.String("keyTag", tag), slog.String("type", string(req.Type)))
	return snap.info(), nil
}

func versionRecord(tag string, v uint32, now int64, gen *backend.GenerateResponse) (store.VersionRecord, error) {
	vr := store.VersionRecord{Tag: tag, Version: v, State: string(VersionEnabled), CreatedAt: now, Handle: gen.Handle}
	if gen.Public != nil {
		der, err := x509.MarshalPKIXPublicKey(gen.Public)
		if err != nil {
			return vr, fmt.Errorf("marshal public key: %w", err)
		}
		vr.PublicKey = der
	}
	return vr, nil
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
// overwriting a key. The caller holds createMu.
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
	return readKey(e, "get key", keyTag, func(op string, s *keySnap) (*Key, error) {
		return s.info(), nil
	})
}

// ListKeyVersions returns a key's versions in ascending order.
func (e *Engine) ListKeyVersions(ctx context.Context, keyTag string) ([]KeyVersion, error) {
	return readKey(e, "list key versions", keyTag, func(op string, s *keySnap) ([]KeyVersion, error) {
		out := make([]KeyVersion, len(s.versions))
		for i, v := range s.versions {
			out[i] = s.versionInfo(v)
		}
		return out, nil
	})
}

// GetKeyVersion describes one version of a key.
func (e *Engine) GetKeyVersion(ctx context.Context, keyTag string, version uint32) (*KeyVersion, error) {
	return readKey(e, "get key version", keyTag, func(op string, s *keySnap) (*KeyVersion, error) {
		v := s.version(version)
		if v == nil {
			return nil, newErr(op, s.rec.Tag, ErrVersionNotFound, fmt.Sprintf("version %d", version))
		}
		info := s.versionInfo(v)
		return &info, nil
	})
}

// ListKeys returns a page of keys, newest first.
func (e *Engine) ListKeys(ctx context.Context, req ListKeysRequest) (*KeyPage, error) {
	const op = "list keys"
	if !e.enter() {
		return nil, newErr(op, "", ErrClosed, "")
	}
	defer e.leave()
	if req.PageSize == 0 {
		req.PageSize = 20
	}
	if req.PageNo < 0 || req.PageSize < 1 || req.PageSize > 200 {
		return nil, newErr(op, "", ErrInvalidArgument, "pageNo must be >= 0 and pageSize 1..200")
	}
	var snaps []*keySnap
	e.keys.Range(func(_, v any) bool {
		if s := v.(*keyEntry).snap.Load(); s.rec.State != stateDestroyed {
			snaps = append(snaps, s)
		}
		return true
	})
	slices.SortFunc(snaps, func(a, b *keySnap) int { return cmp.Compare(b.rec.Seq, a.rec.Seq) })
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
	if !e.enter() {
		return nil, newErr(op, "", ErrClosed, "")
	}
	defer e.leave()
	ent, _, err := e.lookup(op, keyTag)
	if err != nil {
		return nil, err
	}
	ent.mu.Lock()
	defer ent.mu.Unlock()
	return e.rotateLocked(ctx, op, ent)
}

// rotateLocked adds a version; the caller holds ent.mu.
func (e *Engine) rotateLocked(ctx context.Context, op string, ent *keyEntry) (*KeyVersion, error) {
	s := ent.snap.Load()
	tag := s.rec.Tag
	if KeyState(s.rec.State) != StateEnabled {
		return nil, newErr(op, tag, ErrKeyNotEnabled, "")
	}
	if len(s.versions) >= MaxVersions {
		return nil, newErr(op, tag, ErrVersionLimit, fmt.Sprintf("a key has at most %d versions", MaxVersions))
	}
	next := uint32(len(s.versions) + 1)
	gen, err := e.be.Generate(ctx, &backend.GenerateRequest{
		Ref:  backend.KeyRef{KeyTag: tag, Version: next, Purpose: backend.PurposeCipher},
		Type: s.typ, Convergent: s.rec.Convergent,
	})
	if err != nil {
		return nil, e.backendErr(op, tag, err)
	}
	now := e.now()
	vrec, err := versionRecord(tag, next, now.UnixMilli(), gen)
	if err != nil {
		e.discard(ctx, cipherMaterial(tag, next, s.typ, gen.Handle))
		return nil, wrapErr(op, tag, ErrInternal, err)
	}
	rec := s.rec
	rec.CurrentVersion = next
	if r := rec.Rotation; r != nil && r.Enabled {
		rot := *r
		rot.NextAt = now.Add(days(rot.PeriodDays)).UnixMilli()
		rec.Rotation = &rot
	}
	if err := e.st.Update(func(tx *store.Txn) error {
		if err := tx.PutVersion(&vrec); err != nil {
			return err
		}
		return tx.PutKey(&rec)
	}); err != nil {
		e.discardAfter(ctx, err, cipherMaterial(tag, next, s.typ, gen.Handle))
		return nil, wrapErr(op, tag, ErrInternal, err)
	}
	ns := s.clone()
	ns.rec = rec
	ns.versions = append(slices.Clip(s.versions), newVersionSnap(tag, vrec))
	ent.snap.Store(ns)
	e.log.LogAttrs(ctx, slog.LevelInfo, "kms: key rotated", slog.String("keyTag", tag), slog.Int("version", int(next)))
	info := ns.versionInfo(ns.current())
	return &info, nil
}

// backendErr maps a backend error to the Engine's error classes.
func (e *Engine) backendErr(op, tag string, err error) *Error {
	switch {
	case errors.Is(err, backend.ErrDecryptionFailed):
		return wrapErr(op, tag, ErrDecryptionFailed, err)
	case errors.Is(err, backend.ErrInvalidArgument):
		return wrapErr(op, tag, ErrInvalidArgument, err)
	case errors.Is(err, backend.ErrClosed):
		return wrapErr(op, tag, ErrClosed, err)
	case errors.Is(err, backend.ErrInvalidHandle), errors.Is(err, backend.ErrKeyNotFound):
		return wrapErr(op, tag, ErrBackendMismatch, err)
	}
	return wrapErr(op, tag, ErrInternal, err)
}
