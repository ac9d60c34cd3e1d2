package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
)

// Record framing: magic 'P', codec version, payload (JSON for codec 1,
// binary for codec 2: see binary.go), then a CRC-32C
// over (record key ‖ magic ‖ version ‖ payload). Binding the record's own
// key into the checksum means a value copied under another key, or a
// flipped byte anywhere, is detected on read. Every implementation stores
// values framed this way, so a damaged or misplaced record is refused the
// same way whatever holds it.
const (
	recordMagic   = 'P'
	codecVersion1 = 1
	frameOverhead = 2 + 4
)

// Castagnoli is the CRC-32C table of the record frame.
var Castagnoli = crc32.MakeTable(crc32.Castagnoli)

// EncodeValue frames v, a record struct (or a name's owning tag), for
// storage under key: key, version, usage and history records and name
// entries in the binary codec 2, the rest as JSON (codec 1).
func EncodeValue(key string, v any) ([]byte, error) {
	out := make([]byte, 2, 128)
	out[0], out[1] = recordMagic, codecVersion2
	out, ok := encodeBinary(out, v)
	if ok && !boundToKey(key, v) {
		// The payload leaves out what the store key says: a record must
		// be written under its own key.
		return nil, errors.New("store: encode record: the record does not belong under its key")
	}
	if !ok {
		payload, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("store: encode record: %w", err)
		}
		out = append(out[:0], recordMagic, codecVersion1)
		out = append(out, payload...)
	}
	sum := crc32.Update(crc32.Checksum([]byte(key), Castagnoli), Castagnoli, out)
	return binary.BigEndian.AppendUint32(out, sum), nil
}

// boundToKey reports whether key is the store key of v, for the records
// whose codec-2 payload leaves out the tag and version the key holds.
func boundToKey(key string, v any) bool {
	switch v := v.(type) {
	case *KeyRecord:
		return key == v.StoreKey()
	case *VersionRecord:
		return key == v.StoreKey()
	case *UsageRecord:
		return key == v.StoreKey()
	case *HistoryRecord:
		return key == v.StoreKey()
	}
	return true
}

// DecodeValue checks the frame of data stored under key and decodes its
// payload into v, refusing unknown fields and trailing data. It reads both
// codecs whatever v is: a record written as JSON before codec 2 existed
// reads as it always did. Anything that
// fails is ErrCorrupt.
func DecodeValue(key string, data []byte, v any) error {
	if len(data) < frameOverhead+1 || data[0] != recordMagic {
		return fmt.Errorf("%w: bad record frame", ErrCorrupt)
	}
	body, tail := data[:len(data)-4], data[len(data)-4:]
	sum := crc32.Update(crc32.Checksum([]byte(key), Castagnoli), Castagnoli, body)
	if binary.BigEndian.Uint32(tail) != sum {
		return fmt.Errorf("%w: record checksum mismatch", ErrCorrupt)
	}
	switch body[1] {
	case codecVersion1:
	case codecVersion2:
		if err := decodeBinary(key, body[2:], v); err != nil {
			return fmt.Errorf("%w: record payload", ErrCorrupt)
		}
		return nil
	default:
		return fmt.Errorf("%w: unknown record codec %d", ErrCorrupt, body[1])
	}
	dec := json.NewDecoder(bytes.NewReader(body[2:]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: record payload", ErrCorrupt)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data in record", ErrCorrupt)
	}
	return nil
}
