package store

import (
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"strings"
)

// Codec 2: the binary payload of the records there are one or more of per
// key (KeyRecord, VersionRecord, and the name index's owning tag), which a
// store with many keys reads by the hundred thousand when it opens;
// decoding them as JSON was the larger part of opening (issue 19).
// GeneratorRecord and ACLRecord stay JSON (codec 1). Every reader takes
// both codecs, so records written before codec 2 existed read as they
// did.
//
// A payload is a sequence of fields in a fixed order, with no field names:
//
//	string, []byte  uvarint length, then the bytes
//	uint32, uint64  uvarint
//	int64, int      zig-zag varint
//	float64         8 bytes, big-endian IEEE 754; finite
//	flags           one byte; bits not defined must be 0
//
// Varints must be minimal, and nothing may follow the last field, so the
// codec has one form: decoding then encoding gives the input back.
//
//	KeyRecord:     Name Type Memo State Seq CreatedAt StateChangedAt
//	               CurrentVersion DestroyAt MinDecryptVersion HistorySeq
//	               flags (1 Convergent, 2 Rotation, 4 RateLimit)
//	               [Rotation: flags (1 Enabled) PeriodDays NextAt]
//	               [RateLimit: flags (1 Unlimited) PerSecond Burst]
//	VersionRecord: State CreatedAt StateChangedAt Handle PublicKey
//	name index:    the owning tag (a string)
//	UsageRecord:   count, then per version: Version Encryptions
//	               Decryptions Signatures Verifications Refusals LastUse
//	HistoryRecord: Time Op Version Plane Caller Addr State
//
// Usage and history records (one or more per key, all read when a store
// opens, for its integrity digest at least) joined codec 2 with schema 3
// of the Badger directory (internal/store).
//
// The key tag of key, version, usage and history records, the version
// number of version records and the sequence number of history records
// are not repeated in the payload: they are read from the
// record's store key (k/<tag>, v/<tag>/<%010d version>), which the frame's
// checksum covers. A key tag is three quarters of a small record, and a
// large store's size (and the pages of it an open maps in) shrinks by
// about that much.
const codecVersion2 = 2

var errPayload = errors.New("malformed binary payload")

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendFlags(b []byte, bits ...bool) []byte {
	var f byte
	for i, on := range bits {
		if on {
			f |= 1 << i
		}
	}
	return append(b, f)
}

func appendKeyRecord(b []byte, r *KeyRecord) []byte {
	b = appendString(b, r.Name)
	b = appendString(b, r.Type)
	b = appendString(b, r.Memo)
	b = appendString(b, r.State)
	b = binary.AppendUvarint(b, r.Seq)
	b = binary.AppendVarint(b, r.CreatedAt)
	b = binary.AppendVarint(b, r.StateChangedAt)
	b = binary.AppendUvarint(b, uint64(r.CurrentVersion))
	b = binary.AppendVarint(b, r.DestroyAt)
	b = binary.AppendUvarint(b, uint64(r.MinDecryptVersion))
	b = binary.AppendUvarint(b, r.HistorySeq)
	b = appendFlags(b, r.Convergent, r.Rotation != nil, r.RateLimit != nil)
	if rr := r.Rotation; rr != nil {
		b = appendFlags(b, rr.Enabled)
		b = binary.AppendVarint(b, int64(rr.PeriodDays))
		b = binary.AppendVarint(b, rr.NextAt)
	}
	if rl := r.RateLimit; rl != nil {
		b = appendFlags(b, rl.Unlimited)
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(rl.PerSecond))
		b = binary.AppendVarint(b, int64(rl.Burst))
	}
	return b
}

func appendVersionRecord(b []byte, r *VersionRecord) []byte {
	b = appendString(b, r.State)
	b = binary.AppendVarint(b, r.CreatedAt)
	b = binary.AppendVarint(b, r.StateChangedAt)
	b = appendBytes(b, r.Handle)
	return appendBytes(b, r.PublicKey)
}

func appendUsageRecord(b []byte, r *UsageRecord) []byte {
	b = binary.AppendUvarint(b, uint64(len(r.Versions)))
	for _, v := range r.Versions {
		b = binary.AppendUvarint(b, uint64(v.Version))
		b = binary.AppendUvarint(b, v.Encryptions)
		b = binary.AppendUvarint(b, v.Decryptions)
		b = binary.AppendUvarint(b, v.Signatures)
		b = binary.AppendUvarint(b, v.Verifications)
		b = binary.AppendUvarint(b, v.Refusals)
		b = binary.AppendVarint(b, v.LastUse)
	}
	return b
}

func appendHistoryRecord(b []byte, r *HistoryRecord) []byte {
	b = binary.AppendVarint(b, r.Time)
	b = appendString(b, r.Op)
	b = binary.AppendUvarint(b, uint64(r.Version))
	b = appendString(b, r.Plane)
	b = appendString(b, r.Caller)
	b = appendString(b, r.Addr)
	return appendString(b, r.State)
}

// reader decodes a binary payload; the first failure sticks.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) uvarint() uint64 {
	if r.bad {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	// n <= 0: truncated or overflowing. A last byte of 0 after others is
	// a longer form of a shorter varint: refused, so the form is unique.
	if n <= 0 || (n > 1 && r.b[n-1] == 0) {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	u := r.uvarint()
	v := int64(u >> 1)
	if u&1 != 0 {
		v = ^v
	}
	return v
}

func (r *reader) uint32() uint32 {
	v := r.uvarint()
	if v > math.MaxUint32 {
		r.bad = true
		return 0
	}
	return uint32(v)
}

func (r *reader) int() int {
	v := r.varint()
	if int64(int(v)) != v {
		r.bad = true
		return 0
	}
	return int(v)
}

func (r *reader) raw() []byte {
	n := r.uvarint()
	if r.bad || n > uint64(len(r.b)) {
		r.bad = true
		return nil
	}
	s := r.b[:n:n]
	r.b = r.b[n:]
	return s
}

func (r *reader) string() string { return string(r.raw()) }

// common are the values every key and version record repeats (types and
// states): decoded, they share one string instead of one allocation per
// record.
var common = map[string]string{}

func init() {
	for _, s := range []string{"AES256", "RSA2048", "ECDSA", "ENABLED", "DISABLED", "REVOKED"} {
		common[s] = s
	}
}

// word is string for fields that usually hold one of common.
func (r *reader) word() string {
	b := r.raw()
	if s, ok := common[string(b)]; ok {
		return s
	}
	return string(b)
}

// bytes returns a copy of the next byte field (nil when empty): the
// payload is the store's buffer, which may be reused after the decode.
func (r *reader) bytes() []byte {
	s := r.raw()
	if len(s) == 0 {
		return nil
	}
	return append([]byte(nil), s...)
}

// flags reads a flags byte with the given number of defined bits.
func (r *reader) flags(n uint) byte {
	if r.bad || len(r.b) == 0 || r.b[0]>>n != 0 {
		r.bad = true
		return 0
	}
	f := r.b[0]
	r.b = r.b[1:]
	return f
}

func (r *reader) float64() float64 {
	if r.bad || len(r.b) < 8 {
		r.bad = true
		return 0
	}
	v := math.Float64frombits(binary.BigEndian.Uint64(r.b))
	if math.IsNaN(v) || math.IsInf(v, 0) {
		// JSON, codec 1, has no form for them either.
		r.bad = true
		return 0
	}
	r.b = r.b[8:]
	return v
}

// done fails unless every byte was read.
func (r *reader) done() error {
	if r.bad || len(r.b) != 0 {
		return errPayload
	}
	return nil
}

func decodeKeyRecord(key string, p []byte, k *KeyRecord) error {
	tag, ok := strings.CutPrefix(key, PrefixKey)
	if !ok {
		return errPayload
	}
	r := reader{b: p}
	*k = KeyRecord{
		Tag: tag, Name: r.string(), Type: r.word(), Memo: r.string(), State: r.word(),
		Seq: r.uvarint(), CreatedAt: r.varint(), StateChangedAt: r.varint(), CurrentVersion: r.uint32(),
		DestroyAt: r.varint(), MinDecryptVersion: r.uint32(), HistorySeq: r.uvarint(),
	}
	f := r.flags(3)
	k.Convergent = f&1 != 0
	if f&2 != 0 {
		k.Rotation = &RotationRecord{Enabled: r.flags(1) != 0, PeriodDays: r.int(), NextAt: r.varint()}
	}
	if f&4 != 0 {
		k.RateLimit = &RateLimitRecord{Unlimited: r.flags(1) != 0, PerSecond: r.float64(), Burst: r.int()}
	}
	return r.done()
}

// numberedKeyParts splits a store key of the form prefix + tag + "/" +
// a number in exactly width decimal digits that fits in bits bits
// (version records: 10 digits, 32 bits; history records: 20, 64).
func numberedKeyParts(key, prefix string, width, bits int) (tag string, n uint64, ok bool) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok || len(rest) < width+1 || rest[len(rest)-width-1] != '/' {
		return "", 0, false
	}
	tag, digits := rest[:len(rest)-width-1], rest[len(rest)-width:]
	n, err := strconv.ParseUint(digits, 10, bits)
	if err != nil {
		return "", 0, false
	}
	return tag, n, true
}

// versionKeyParts splits a version record's store key.
func versionKeyParts(key string) (tag string, version uint32, ok bool) {
	tag, n, ok := numberedKeyParts(key, PrefixVersion, 10, 32)
	return tag, uint32(n), ok
}

func decodeVersionRecord(key string, p []byte, v *VersionRecord) error {
	tag, n, ok := versionKeyParts(key)
	if !ok {
		return errPayload
	}
	r := reader{b: p}
	*v = VersionRecord{
		Tag: tag, Version: n, State: r.word(), CreatedAt: r.varint(),
		StateChangedAt: r.varint(), Handle: r.bytes(), PublicKey: r.bytes(),
	}
	return r.done()
}

// minUsageVersion is the size of the shortest version entry of a usage
// record (seven one-byte varints): a count that could not fit in what is
// left is refused before anything is allocated for it.
const minUsageVersion = 7

func decodeUsageRecord(key string, p []byte, u *UsageRecord) error {
	tag, ok := strings.CutPrefix(key, PrefixUsage)
	if !ok {
		return errPayload
	}
	r := reader{b: p}
	n := r.uvarint()
	if r.bad || n > uint64(len(r.b)/minUsageVersion) {
		return errPayload
	}
	*u = UsageRecord{Tag: tag}
	if n > 0 {
		u.Versions = make([]VersionUsageRecord, n)
	}
	for i := range u.Versions {
		u.Versions[i] = VersionUsageRecord{
			Version: r.uint32(), Encryptions: r.uvarint(), Decryptions: r.uvarint(), Signatures: r.uvarint(),
			Verifications: r.uvarint(), Refusals: r.uvarint(), LastUse: r.varint(),
		}
	}
	return r.done()
}

// historyKeyParts splits a history record's store key.
func historyKeyParts(key string) (tag string, seq uint64, ok bool) {
	return numberedKeyParts(key, PrefixHistory, 20, 64)
}

func decodeHistoryRecord(key string, p []byte, h *HistoryRecord) error {
	tag, seq, ok := historyKeyParts(key)
	if !ok {
		return errPayload
	}
	r := reader{b: p}
	*h = HistoryRecord{
		Tag: tag, Seq: seq, Time: r.varint(), Op: r.string(), Version: r.uint32(),
		Plane: r.string(), Caller: r.string(), Addr: r.string(), State: r.word(),
	}
	return r.done()
}

func decodeTag(p []byte, s *string) error {
	r := reader{b: p}
	*s = r.string()
	return r.done()
}

// encodeBinary appends v's codec-2 payload to b; ok is false when v's type
// has none (it is then written as JSON, codec 1).
func encodeBinary(b []byte, v any) (out []byte, ok bool) {
	switch v := v.(type) {
	case *KeyRecord:
		return appendKeyRecord(b, v), true
	case *VersionRecord:
		return appendVersionRecord(b, v), true
	case *UsageRecord:
		return appendUsageRecord(b, v), true
	case *HistoryRecord:
		return appendHistoryRecord(b, v), true
	case string:
		return appendString(b, v), true
	case *string:
		return appendString(b, *v), true
	}
	return b, false
}

// decodeBinary decodes a codec-2 payload read under key into v.
func decodeBinary(key string, p []byte, v any) error {
	switch v := v.(type) {
	case *KeyRecord:
		return decodeKeyRecord(key, p, v)
	case *VersionRecord:
		return decodeVersionRecord(key, p, v)
	case *UsageRecord:
		return decodeUsageRecord(key, p, v)
	case *HistoryRecord:
		return decodeHistoryRecord(key, p, v)
	case *string:
		return decodeTag(p, v)
	}
	return errPayload
}
