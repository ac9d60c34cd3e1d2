package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"reflect"
	"strings"
	"testing"
)

// codec1 frames v as every build before codec 2 did: JSON.
func codec1(key string, v any) []byte {
	payload, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	out := append([]byte{recordMagic, codecVersion1}, payload...)
	sum := crc32.Update(crc32.Checksum([]byte(key), Castagnoli), Castagnoli, out)
	return binary.BigEndian.AppendUint32(out, sum)
}

func sampleRecords() []Record {
	tag := strings.Repeat("ab", 32)
	return []Record{
		&KeyRecord{Tag: tag, Name: "k", Type: "AES256", State: "ENABLED", Seq: 1, CreatedAt: 1700000000000, StateChangedAt: 1700000000000, CurrentVersion: 1},
		&KeyRecord{
			Tag: tag, Name: "Ünïcode name", Type: "RSA2048", Memo: "memo", Convergent: true, State: "REVOKED", Seq: 1 << 40,
			CreatedAt: -5, StateChangedAt: 1 << 50, CurrentVersion: 100, DestroyAt: 1800000000000, MinDecryptVersion: 7, HistorySeq: 99,
			Rotation:  &RotationRecord{Enabled: true, PeriodDays: 30, NextAt: 1900000000000},
			RateLimit: &RateLimitRecord{Unlimited: true, PerSecond: 12.5, Burst: -3},
		},
		&KeyRecord{Tag: tag, Rotation: &RotationRecord{}, RateLimit: &RateLimitRecord{}},
		&VersionRecord{Tag: tag, Version: 4000000000},
		&VersionRecord{Tag: tag, Version: 3, State: "DISABLED", CreatedAt: 1, StateChangedAt: 2, Handle: []byte{1, 2, 3}, PublicKey: []byte{0x30, 0}},
		&VersionRecord{Tag: tag, Version: 1, State: "ENABLED", Handle: bytes.Repeat([]byte{9}, 300)},
		&NameRecord{Name: "k", Tag: tag},
		&UsageRecord{Tag: tag, Versions: []VersionUsageRecord{
			{Version: 1, Encryptions: 1 << 32, Decryptions: 6, Signatures: 7, Verifications: 8, Refusals: 9, LastUse: 1700000000000},
			{Version: 2}, {Version: 4000000000, LastUse: -1},
		}},
		&UsageRecord{Tag: tag},
		&HistoryRecord{Tag: tag, Seq: 1, Time: 1700000000000, Op: "create", Plane: "trusted", State: "ENABLED"},
		&HistoryRecord{Tag: tag, Seq: 1<<64 - 1, Time: -1, Op: "rotate", Version: 4000000000, Plane: "token", Caller: "Ünï", Addr: "2001:db8::1"},
		&HistoryRecord{Tag: tag},
		&GeneratorRecord{Tag: tag, ID: "g", Active: true, Generation: 2, Handle: []byte{1}, IssuedCount: 4, Revoked: []RevokedToken{{ID: "x", Until: 5}}},
		&ACLRecord{Tag: tag, Enabled: true, Entries: []string{"10.0.0.0/8"}},
	}
}

// TestCodecRoundTrip: every record encodes and decodes to itself; key and
// version records and name entries in codec 2, the others in codec 1.
func TestCodecRoundTrip(t *testing.T) {
	for _, r := range sampleRecords() {
		key, val, err := Encode(r)
		if err != nil {
			t.Fatal(err)
		}
		want := byte(codecVersion1)
		switch r.(type) {
		case *KeyRecord, *VersionRecord, *NameRecord, *UsageRecord, *HistoryRecord:
			want = codecVersion2
		}
		if val[1] != want {
			t.Errorf("%T written in codec %d, want %d", r, val[1], want)
		}
		got, err := Decode(key, val)
		if err != nil {
			t.Fatalf("%T: %v", r, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("%T: decoded %+v, want %+v", r, got, r)
		}
	}
}

// TestCodec1StillReads: records written as JSON, as every build before
// codec 2 wrote them, decode to the same records.
func TestCodec1StillReads(t *testing.T) {
	for _, r := range sampleRecords() {
		var v any = r
		if n, ok := r.(*NameRecord); ok {
			v = n.Tag
		}
		key := r.StoreKey()
		got, err := Decode(key, codec1(key, v))
		if err != nil {
			t.Fatalf("%T: %v", r, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("%T: decoded %+v, want %+v", r, got, r)
		}
	}
}

// TestCodec2WrongKey: a key or version record is written only under its
// own store key, whose tag and version its payload leaves out.
func TestCodec2WrongKey(t *testing.T) {
	tag := strings.Repeat("ab", 32)
	if _, err := EncodeValue(KeyKey(strings.Repeat("cd", 32)), &KeyRecord{Tag: tag}); err == nil {
		t.Error("key record encoded under another key")
	}
	if _, err := EncodeValue(VersionKey(tag, 2), &VersionRecord{Tag: tag, Version: 1}); err == nil {
		t.Error("version record encoded under another version's key")
	}
	if _, err := EncodeValue(UsageKey(strings.Repeat("cd", 32)), &UsageRecord{Tag: tag}); err == nil {
		t.Error("usage record encoded under another key")
	}
	if _, err := EncodeValue(HistoryKey(tag, 2), &HistoryRecord{Tag: tag, Seq: 1}); err == nil {
		t.Error("history record encoded under another entry's key")
	}
	_, hval, _ := Encode(&HistoryRecord{Tag: tag, Seq: 1, Op: "create"})
	for _, key := range []string{"h/" + tag + "/1", "h/" + tag + "/0000000000000000000x", "h/" + tag + "/99999999999999999999"} {
		if _, err := Decode(key, hval); err == nil {
			t.Errorf("history record decoded under %q", key)
		}
	}
	_, val, _ := Encode(&VersionRecord{Tag: tag, Version: 1})
	for _, key := range []string{"v/" + tag + "/1", "v/" + tag + "x0000000001", "k/" + tag} {
		if _, err := Decode(key, val); err == nil {
			t.Errorf("version record decoded under %q", key)
		}
	}
}

// TestCodec2Malformed: truncations, trailing bytes, overlong varints and
// undefined flag bits are ErrCorrupt.
func TestCodec2Malformed(t *testing.T) {
	for _, r := range codec2Samples() {
		if _, ok := r.(*NameRecord); ok {
			continue // a bare string: every truncation is a shorter string
		}
		key, val, _ := Encode(r)
		body := val[2 : len(val)-4]
		reframe := func(p []byte) []byte {
			out := append([]byte{recordMagic, codecVersion2}, p...)
			sum := crc32.Update(crc32.Checksum([]byte(key), Castagnoli), Castagnoli, out)
			return binary.BigEndian.AppendUint32(out, sum)
		}
		cases := map[string][]byte{
			"trailing": append(bytes.Clone(body), 0),
		}
		if len(body) > 0 {
			cases["overlong"] = append([]byte{0x80 | body[0], 0}, body[1:]...)
		}
		for i := range len(body) {
			cases["truncated"+string(rune('a'+i%26))] = body[:i]
		}
		for name, p := range cases {
			if _, err := Decode(key, reframe(p)); err == nil {
				t.Errorf("%T %s: decoded", r, name)
			}
		}
	}
	key, val, _ := Encode(sampleRecords()[0])
	body := bytes.Clone(val[2 : len(val)-4])
	body[len(body)-1] |= 8 // an undefined flag
	out := append([]byte{recordMagic, codecVersion2}, body...)
	out = binary.BigEndian.AppendUint32(out, crc32.Update(crc32.Checksum([]byte(key), Castagnoli), Castagnoli, out))
	if _, err := Decode(key, out); err == nil {
		t.Error("undefined flag bit decoded")
	}
}

// codec2Samples returns the sample records written in codec 2.
func codec2Samples() []Record {
	var out []Record
	for _, r := range sampleRecords() {
		switch r.(type) {
		case *KeyRecord, *VersionRecord, *NameRecord, *UsageRecord, *HistoryRecord:
			out = append(out, r)
		}
	}
	return out
}

// FuzzDecodeBinary: whatever decodes as codec 2 encodes to the very same
// bytes (the codec has one form), and nothing panics.
func FuzzDecodeBinary(f *testing.F) {
	for _, r := range codec2Samples() {
		key, val, _ := Encode(r)
		f.Add(key, val[2:len(val)-4])
	}
	f.Fuzz(func(t *testing.T, key string, p []byte) {
		var v, again any
		switch {
		case strings.HasPrefix(key, PrefixKey):
			v, again = new(KeyRecord), new(KeyRecord)
		case strings.HasPrefix(key, PrefixVersion):
			v, again = new(VersionRecord), new(VersionRecord)
		case strings.HasPrefix(key, PrefixUsage):
			v, again = new(UsageRecord), new(UsageRecord)
		case strings.HasPrefix(key, PrefixHistory):
			v, again = new(HistoryRecord), new(HistoryRecord)
		default:
			v, again = new(string), new(string)
		}
		if err := decodeBinary(key, p, v); err != nil {
			return
		}
		if r, ok := v.(Record); ok && r.StoreKey() != key {
			return // Decode refuses it: stored under the wrong key
		}
		out, ok := encodeBinary(nil, v)
		if !ok || !bytes.Equal(out, p) {
			t.Fatalf("decoded %+v re-encodes to %x, not %x", v, out, p)
		}
		if err := decodeBinary(key, out, again); err != nil || !reflect.DeepEqual(again, v) {
			t.Fatalf("re-encoded payload decodes to %+v, %v", again, err)
		}
	})
}

// TestCodec2EveryField: a codec-2 record with every field set (by
// reflection, so a field added to a record later is covered without
// editing this test) decodes with every field still set: a field the
// binary codec forgets fails here instead of vanishing from the store.
func TestCodec2EveryField(t *testing.T) {
	tag := strings.Repeat("cd", 32)
	for _, r := range []Record{&KeyRecord{Tag: tag}, &VersionRecord{Tag: tag, Version: 2}, &UsageRecord{Tag: tag}, &HistoryRecord{Tag: tag, Seq: 3}} {
		fill(t, reflect.ValueOf(r).Elem())
		// The key is built from these two: keep them valid.
		switch r := r.(type) {
		case *KeyRecord:
			r.Tag = tag
		case *VersionRecord:
			r.Tag, r.Version = tag, 2
		case *UsageRecord:
			r.Tag = tag
		case *HistoryRecord:
			r.Tag, r.Seq = tag, 3
		}
		key, val, err := Encode(r)
		if err != nil {
			t.Fatal(err)
		}
		if val[1] != codecVersion2 {
			t.Fatalf("%T written in codec %d", r, val[1])
		}
		got, err := Decode(key, val)
		if err != nil {
			t.Fatalf("%T: %v", r, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("%T lost a field in codec 2:\n got %+v\nwant %+v", r, got, r)
		}
	}
}

// fill sets every field of v to a non-zero value.
func fill(t *testing.T, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(t, v.Field(i))
			}
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(t, v.Elem())
	case reflect.String:
		v.SetString("ENABLED")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(7)
	case reflect.Uint, reflect.Uint64, reflect.Uint32:
		v.SetUint(7)
	case reflect.Float64:
		v.SetFloat(2.5)
	case reflect.Slice:
		switch v.Type().Elem().Kind() {
		case reflect.Uint8:
			v.SetBytes([]byte{1, 2})
		case reflect.Struct:
			v.Set(reflect.MakeSlice(v.Type(), 1, 1))
			fill(t, v.Index(0))
		default:
			t.Fatalf("fill: no rule for %s", v.Type())
		}
	default:
		t.Fatalf("fill: no rule for %s", v.Type())
	}
}
