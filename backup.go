package kms

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/internal/shred"
	"github.com/pocketkms/kms/store"
)

// Backups. See the package documentation's "Backup and restore" section
// for what a backup holds and the format; this file writes and reads it.

const (
	backupMagic   = "PKMSBKUP"
	backupVersion = 1
	// maxBackupFrame bounds a frame's payload: a reader never allocates
	// more for one frame, whatever length a damaged backup claims.
	maxBackupFrame = 16 << 20

	frameHeader  = 'I' // JSON backupHeader, first and once
	frameRecord  = 'R' // one store record
	frameTrailer = 'E' // record count and digest, last
	trailerSize  = 8 + sha256.Size
)

// backupHeader is the JSON of the header frame.
type backupHeader struct {
	// CreatedAt is when the backup was made (Unix milliseconds, on the
	// Engine's clock).
	CreatedAt int64 `json:"createdAt"`
	// Revision is the store revision the records were read at.
	Revision int64 `json:"revision"`
	// Keys and Records count what follows.
	Keys    int `json:"keys"`
	Records int `json:"records"`
	// CheckValue is the backend's check value (backend.CheckValuer: a MAC
	// over a fixed label under the root key), absent for a backend
	// without one (PKCS#11).
	CheckValue []byte `json:"checkValue,omitempty"`
}

// BackupInfo describes a backup written by Engine.Backup, or read by
// VerifyBackup.
type BackupInfo struct {
	// CreatedAt is when the backup was made, on the source Engine's clock.
	CreatedAt time.Time
	// Revision is the store revision the backup is a snapshot of.
	Revision int64
	// Keys is the number of keys, Records the number of store records
	// (keys, versions, token generators, allow-lists, names).
	Keys, Records int
	// Size is the backup's length in bytes.
	Size int64
	// SHA256 is the hex SHA-256 digest the trailer carries (over every
	// byte before it): a name for the backup, not a secret.
	SHA256 string
}

// RestoreInfo describes what Restore wrote.
type RestoreInfo struct {
	// Backup describes the backup restored.
	Backup BackupInfo
	// Keys and Records count what was written to the target.
	Keys, Records int
}

// Backup writes a snapshot of the Engine's keys to w: every key with its
// versions, token generator (revoked tokens included), IP allow-list and
// rate limit, the name index, and the backend's check value, framed and
// closed by a SHA-256 digest (format in the package documentation). The
// records are read in one read of the store (one Badger transaction, one
// etcd revision), so the backup is consistent while the Engine keeps
// serving: no call waits for it. A key destroyed while the backup runs is
// left out whole (its shred key is gone, so its material could not be
// opened anyway).
//
// A backup holds no raw key: each handle is the backend's own, as a store
// without a directory keeps it (material sealed under the memory
// backend's root key, a reference to a PKCS#11 token object), taken out
// of the key's shred-key seal; Restore seals it again under a new shred
// key. Usage counters, the token cache and rate-limiter buckets are not
// in it. The records are held in memory as the store's Load returns
// them; they are written to w after the Engine's guard is released, so a
// slow writer does not hold up Close. A failed write fails with
// ErrInternal naming the cause, and what was written is not a valid
// backup (it has no trailer). See BackupFile for a file on disk.
func (e *Engine) Backup(ctx context.Context, w io.Writer) (*BackupInfo, error) {
	const op = "backup"
	if w == nil {
		return nil, newErr(op, "", ErrInvalidArgument, "nil writer")
	}
	hdr, recs, err := e.backupRecords(ctx, op)
	if err != nil {
		return nil, err
	}
	info, err := writeBackup(ctx, w, hdr, recs)
	if err != nil {
		if isContextErr(err) {
			return nil, canceled(op, "", err)
		}
		return nil, wrapErr(op, "", ErrInternal, err)
	}
	return info, nil
}

// backupRecords reads the store once, inside the Engine's guard, and
// returns the header and the records of a backup.
func (e *Engine) backupRecords(ctx context.Context, op string) (*backupHeader, []store.Record, error) {
	if err := e.enter(ctx, op); err != nil {
		return nil, nil, err
	}
	defer e.leave()
	c, err := e.st.Load(ctx)
	if err != nil {
		if isContextErr(err) {
			return nil, nil, canceled(op, "", err)
		}
		return nil, nil, wrapErr(op, "", ErrInternal, err)
	}
	var check []byte
	if cv, ok := e.be.(backend.CheckValuer); ok {
		if check, err = cv.CheckValue(ctx); err != nil {
			return nil, nil, backendErr(op, "", err)
		}
	}
	now := e.now()
	slices.SortFunc(c.Keys, func(a, b *store.KeyData) int { return strings.Compare(a.Key.Tag, b.Key.Tag) })
	var recs []store.Record
	kept := map[string]bool{}
	for _, kd := range c.Keys {
		rs, skip, err := e.backupKey(kd, now)
		if err != nil {
			return nil, nil, wrapErr(op, kd.Key.Tag, ErrInternal, err)
		}
		if skip {
			continue
		}
		kept[kd.Key.Tag] = true
		recs = append(recs, rs...)
	}
	names := make([]string, 0, len(c.Names))
	for name, tag := range c.Names {
		if kept[tag] {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		recs = append(recs, &store.NameRecord{Name: name, Tag: c.Names[name]})
	}
	return &backupHeader{CreatedAt: timeMs(now), Revision: c.Rev, Keys: len(kept), Records: len(recs), CheckValue: check}, recs, nil
}

// backupKey returns the records of one key as a backup holds them, its
// handles out of their shred-key seal; skip is true for a key destroyed
// (or being destroyed) since the store was read.
func (e *Engine) backupKey(kd *store.KeyData, now time.Time) (recs []store.Record, skip bool, err error) {
	tag := kd.Key.Tag
	// gone: the key's shred key is missing or was deleted: acceptable only
	// for a key whose destruction was due or is done.
	gone := func() bool {
		if kd.Key.State == string(StateRevoked) && kd.Key.DestroyAt <= timeMs(now) {
			return true
		}
		_, live := e.keys.Load(tag)
		return !live
	}
	var kek *shred.Key
	need := kd.Generator != nil && shred.IsWrapped(kd.Generator.Handle)
	for _, v := range kd.Versions {
		need = need || shred.IsWrapped(v.Handle)
	}
	if need {
		if e.shred == nil {
			return nil, false, errors.New("its handles are sealed under a shred key, which only a Badger directory keeps")
		}
		k, ok, err := e.shred.Get(tag)
		switch {
		case err != nil:
			return nil, false, fmt.Errorf("read its shred key: %w", err)
		case !ok && gone():
			return nil, true, nil
		case !ok:
			return nil, false, errors.New("its shred key is missing")
		}
		kek = k
	}
	open := func(h []byte, purpose backend.Purpose, n uint32) ([]byte, error) {
		if !shred.IsWrapped(h) {
			return h, nil
		}
		return kek.Unwrap(h, string(purpose), n)
	}
	kr := kd.Key
	recs = append(recs, &kr)
	for _, v := range kd.Versions {
		h, err := open(v.Handle, backend.PurposeCipher, v.Version)
		if errors.Is(err, shred.ErrDeleted) && gone() {
			return nil, true, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("version %d: %w", v.Version, err)
		}
		v.Handle = h
		recs = append(recs, &v)
	}
	if g := kd.Generator; g != nil {
		gr := *g
		if len(gr.Handle) > 0 {
			h, err := open(gr.Handle, backend.PurposeTokenSigning, gr.Generation)
			if errors.Is(err, shred.ErrDeleted) && gone() {
				return nil, true, nil
			}
			if err != nil {
				return nil, false, fmt.Errorf("token-signing key: %w", err)
			}
			gr.Handle = h
		}
		recs = append(recs, &gr)
	}
	if a := kd.ACL; a != nil {
		ar := *a
		recs = append(recs, &ar)
	}
	return recs, false, nil
}

// backupWriter writes frames, hashing every byte it writes.
type backupWriter struct {
	w   io.Writer
	h   hash.Hash
	n   int64
	err error
}

func (bw *backupWriter) write(b []byte) {
	if bw.err != nil {
		return
	}
	bw.h.Write(b)
	var n int
	n, bw.err = bw.w.Write(b)
	bw.n += int64(n)
	if bw.err == nil && n != len(b) {
		bw.err = io.ErrShortWrite
	}
}

func (bw *backupWriter) frame(kind byte, parts ...[]byte) {
	size := 0
	for _, p := range parts {
		size += len(p)
	}
	if size > maxBackupFrame && bw.err == nil {
		bw.err = fmt.Errorf("a record of %d bytes is larger than a backup frame holds", size)
		return
	}
	var hd [5]byte
	hd[0] = kind
	binary.BigEndian.PutUint32(hd[1:], uint32(size))
	bw.write(hd[:])
	for _, p := range parts {
		bw.write(p)
	}
}

// writeBackup writes the header, the records and the trailer to w.
func writeBackup(ctx context.Context, w io.Writer, hdr *backupHeader, recs []store.Record) (*BackupInfo, error) {
	buf := bufio.NewWriterSize(w, 64<<10)
	bw := &backupWriter{w: buf, h: sha256.New()}
	var ver [2]byte
	binary.BigEndian.PutUint16(ver[:], backupVersion)
	bw.write([]byte(backupMagic))
	bw.write(ver[:])
	hj, err := json.Marshal(hdr)
	if err != nil {
		return nil, fmt.Errorf("encode the backup header: %w", err)
	}
	bw.frame(frameHeader, hj)
	for i, r := range recs {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		key, val, err := store.Encode(r)
		if err != nil {
			return nil, err
		}
		var kl [2]byte
		binary.BigEndian.PutUint16(kl[:], uint16(len(key)))
		bw.frame(frameRecord, kl[:], []byte(key), val)
		if bw.err != nil {
			break
		}
	}
	var count [8]byte
	binary.BigEndian.PutUint64(count[:], uint64(len(recs)))
	var hd [5]byte
	hd[0] = frameTrailer
	binary.BigEndian.PutUint32(hd[1:], trailerSize)
	bw.write(hd[:])
	bw.write(count[:])
	sum := bw.h.Sum(nil)
	bw.write(sum)
	if bw.err == nil {
		bw.err = buf.Flush()
	}
	if bw.err != nil {
		return nil, fmt.Errorf("write the backup: %w", bw.err)
	}
	return &BackupInfo{
		CreatedAt: msTime(hdr.CreatedAt), Revision: hdr.Revision, Keys: hdr.Keys, Records: hdr.Records,
		Size: bw.n, SHA256: hex.EncodeToString(sum),
	}, nil
}

// backupData is a backup read and checked whole.
type backupData struct {
	hdr      backupHeader
	info     BackupInfo
	contents *store.Contents
	records  int
}

// errBackupRead marks a failure of the reader itself (not of the backup's
// content).
type errBackupRead struct{ err error }

func (e *errBackupRead) Error() string { return "read the backup: " + e.err.Error() }
func (e *errBackupRead) Unwrap() error { return e.err }

// VerifyBackup reads a backup whole and checks it as Restore does before
// writing anything, without a backend: its format, its digest and every
// record's checksum, and that the records agree with each other. It does
// not check that a backend can open the material (Restore does). A backup
// that fails is ErrBackupInvalid; a reader that fails is ErrInternal.
func VerifyBackup(ctx context.Context, r io.Reader) (*BackupInfo, error) {
	const op = "verify backup"
	if r == nil {
		return nil, newErr(op, "", ErrInvalidArgument, "nil reader")
	}
	d, err := readBackup(ctx, op, r)
	if err != nil {
		return nil, err
	}
	info := d.info
	return &info, nil
}

// readBackup reads and checks a whole backup: the frames, the digest,
// then every record. Errors are *Error: ErrBackupInvalid for the content,
// ErrInternal for the reader, ErrCanceled for ctx.
func readBackup(ctx context.Context, op string, r io.Reader) (*backupData, error) {
	if err := ctx.Err(); err != nil {
		return nil, canceled(op, "", err)
	}
	keys, vals, hdrJSON, size, sum, err := readFrames(ctx, r)
	if err != nil {
		var re *errBackupRead
		switch {
		case isContextErr(err):
			return nil, canceled(op, "", err)
		case errors.As(err, &re):
			return nil, wrapErr(op, "", ErrInternal, err)
		}
		return nil, newErr(op, "", ErrBackupInvalid, err.Error())
	}
	d, err := decodeBackup(keys, vals, hdrJSON)
	if err != nil {
		return nil, newErr(op, "", ErrBackupInvalid, err.Error())
	}
	d.info.Size, d.info.SHA256 = size, hex.EncodeToString(sum)
	return d, nil
}

// readFrames reads the frames of a backup and checks its digest. Errors
// are plain descriptions of the damage, *errBackupRead for the reader's
// own failures, or ctx's error.
func readFrames(ctx context.Context, r io.Reader) (keys []string, vals [][]byte, hdr []byte, size int64, sum []byte, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	h := sha256.New()
	read := func(n int, hashed bool) ([]byte, error) {
		var b []byte
		var m int
		var err error
		if n <= 64<<10 {
			b = make([]byte, n)
			m, err = io.ReadFull(br, b)
		} else {
			// A large frame grows as its bytes arrive: a damaged length
			// costs no more memory than the input holds.
			var bb bytes.Buffer
			var m64 int64
			m64, err = bb.ReadFrom(io.LimitReader(br, int64(n)))
			m, b = int(m64), bb.Bytes()
			if err == nil && m < n {
				err = io.ErrUnexpectedEOF
			}
		}
		size += int64(m)
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return nil, errors.New("truncated: the backup ends before its trailer")
		case err != nil:
			return nil, &errBackupRead{err}
		}
		if hashed {
			h.Write(b)
		}
		return b, nil
	}
	start, err := read(len(backupMagic)+2, true)
	if err != nil {
		return
	}
	if string(start[:len(backupMagic)]) != backupMagic {
		return nil, nil, nil, size, nil, errors.New("not a pocketkms backup (bad magic)")
	}
	if v := binary.BigEndian.Uint16(start[len(backupMagic):]); v != backupVersion {
		return nil, nil, nil, size, nil, fmt.Errorf("unknown backup format version %d", v)
	}
	for n := 0; ; n++ {
		if n%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, nil, nil, size, nil, err
			}
		}
		fh, err := read(5, true)
		if err != nil {
			return nil, nil, nil, size, nil, err
		}
		kind, length := fh[0], binary.BigEndian.Uint32(fh[1:])
		if length > maxBackupFrame {
			return nil, nil, nil, size, nil, fmt.Errorf("frame %d claims %d bytes, more than a frame holds", n, length)
		}
		switch kind {
		case frameHeader:
			if n != 0 {
				return nil, nil, nil, size, nil, errors.New("header frame not first")
			}
			if hdr, err = read(int(length), true); err != nil {
				return nil, nil, nil, size, nil, err
			}
		case frameRecord:
			if n == 0 {
				return nil, nil, nil, size, nil, errors.New("no header frame")
			}
			p, err := read(int(length), true)
			if err != nil {
				return nil, nil, nil, size, nil, err
			}
			if len(p) < 2 || int(binary.BigEndian.Uint16(p))+2 > len(p) {
				return nil, nil, nil, size, nil, fmt.Errorf("frame %d: malformed record frame", n)
			}
			kl := int(binary.BigEndian.Uint16(p))
			keys = append(keys, string(p[2:2+kl]))
			vals = append(vals, p[2+kl:])
		case frameTrailer:
			if n == 0 {
				return nil, nil, nil, size, nil, errors.New("no header frame")
			}
			if length != trailerSize {
				return nil, nil, nil, size, nil, errors.New("malformed trailer")
			}
			count, err := read(8, true)
			if err != nil {
				return nil, nil, nil, size, nil, err
			}
			want := h.Sum(nil)
			got, err := read(sha256.Size, false)
			if err != nil {
				return nil, nil, nil, size, nil, err
			}
			if subtle.ConstantTimeCompare(got, want) != 1 {
				return nil, nil, nil, size, nil, errors.New("SHA-256 digest mismatch: the backup was altered or damaged")
			}
			if _, err := br.ReadByte(); err == nil {
				return nil, nil, nil, size, nil, errors.New("data after the trailer")
			} else if !errors.Is(err, io.EOF) {
				return nil, nil, nil, size, nil, &errBackupRead{err}
			}
			if binary.BigEndian.Uint64(count) != uint64(len(keys)) {
				return nil, nil, nil, size, nil, errors.New("the trailer's record count does not match the records")
			}
			return keys, vals, hdr, size, got, nil
		default:
			return nil, nil, nil, size, nil, fmt.Errorf("frame %d: unknown frame kind %#02x", n, kind)
		}
	}
}

// decodeBackup decodes the records of a backup whose digest held and
// checks that they make a store the Engine opens.
func decodeBackup(keys []string, vals [][]byte, hdrJSON []byte) (*backupData, error) {
	d := &backupData{records: len(keys)}
	dec := json.NewDecoder(bytes.NewReader(hdrJSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d.hdr); err != nil || dec.More() {
		return nil, errors.New("malformed header")
	}
	if d.hdr.Records != len(keys) {
		return nil, fmt.Errorf("the header counts %d records, the backup holds %d", d.hdr.Records, len(keys))
	}
	var a store.Assembler
	seen := make(map[string]bool, len(keys))
	for i, key := range keys {
		if seen[key] {
			return nil, fmt.Errorf("record %d: duplicate record %q", i, key)
		}
		seen[key] = true
		r, err := store.Decode(key, vals[i])
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
		a.Add(r, d.hdr.Revision)
	}
	c, err := a.Contents(d.hdr.Revision)
	if err != nil {
		return nil, err
	}
	if len(c.Keys) != d.hdr.Keys {
		return nil, fmt.Errorf("the header counts %d keys, the backup holds %d", d.hdr.Keys, len(c.Keys))
	}
	slices.SortFunc(c.Keys, func(a, b *store.KeyData) int { return strings.Compare(a.Key.Tag, b.Key.Tag) })
	names := make(map[string]string, len(c.Keys))
	for _, kd := range c.Keys {
		s, err := snapFromData(kd)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", kd.Key.Tag, err)
		}
		if s.wrapped {
			return nil, fmt.Errorf("key %s: a handle sealed under a shred key", s.tag)
		}
		for _, v := range s.versions {
			if len(v.handle) == 0 {
				return nil, fmt.Errorf("key %s: version %d has no handle", s.tag, v.num)
			}
		}
		if s.gen.isActive() && len(s.gen.handle) == 0 {
			return nil, fmt.Errorf("key %s: active token generator without a handle", s.tag)
		}
		names[lower(s.name)] = s.tag
	}
	if len(c.Names) != len(names) {
		return nil, errors.New("name index out of step with keys")
	}
	for name, tag := range c.Names {
		if names[name] != tag {
			return nil, errors.New("name index out of step with keys")
		}
	}
	d.contents = c
	d.info = BackupInfo{CreatedAt: msTime(d.hdr.CreatedAt), Revision: d.hdr.Revision, Keys: d.hdr.Keys, Records: d.hdr.Records}
	return d, nil
}
