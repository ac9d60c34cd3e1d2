package kms_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend"
	badgerstore "github.com/pocketkms/kms/internal/store"
	"github.com/pocketkms/kms/store"
)

// TestOpenCodec1Directory: a data directory written before the binary
// record codec (schema 1, every record JSON, no integrity record yet)
// opens, serves its keys, takes changes, and reads back after them.
func TestOpenCodec1Directory(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	be := newBackend(t, rootKey)
	const tag = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	g, err := be.Generate(ctx, &backend.GenerateRequest{Ref: backend.KeyRef{KeyTag: tag, Version: 1, Purpose: backend.PurposeCipher}, Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	crc := crc32.MakeTable(crc32.Castagnoli)
	frame := func(key string, v any) []byte {
		payload, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		out := append([]byte{'P', 1}, payload...)
		return binary.BigEndian.AppendUint32(out, crc32.Update(crc32.Checksum([]byte(key), crc), crc, out))
	}
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil).WithSyncWrites(true).WithCompression(options.None))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		for key, v := range map[string]any{
			"m/schema":               1,
			store.KeyKey(tag):        &store.KeyRecord{Tag: tag, Name: "old", Type: "AES256", State: "ENABLED", Seq: 1, CreatedAt: 1, StateChangedAt: 1, CurrentVersion: 1, HistorySeq: 1},
			store.HistoryKey(tag, 1): &store.HistoryRecord{Tag: tag, Seq: 1, Time: 1, Op: "create key", Plane: "trusted", State: "ENABLED"},
			store.VersionKey(tag, 1): &store.VersionRecord{Tag: tag, Version: 1, State: "ENABLED", CreatedAt: 1, Handle: g.Handle},
			store.NameKey("old"):     tag,
			store.UsageKey(tag):      &store.UsageRecord{Tag: tag, Versions: []store.VersionUsageRecord{{Version: 1, Encryptions: 5, LastUse: 1}}},
		} {
			if err := txn.Set([]byte(key), frame(key, v)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	e, err := kms.New(ctx, be, kms.WithDirectory(dir))
	if err != nil {
		t.Fatalf("open a codec-1 directory: %v", err)
	}
	ct, err := e.Encrypt(ctx, tag, []byte("hello"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := e.KeyUsage(ctx, tag); err != nil || u.Versions[0].Encryptions != 6 {
		t.Fatalf("KeyUsage over a codec-1 usage record: %+v, %v", u, err)
	}
	if _, err := e.RotateKey(ctx, tag); err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "new", Type: kms.AES256}); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	e = newEngine(t, kms.WithDirectory(dir))
	pt, err := e.Decrypt(ctx, tag, ct, nil)
	if err != nil || string(pt) != "hello" {
		t.Fatalf("Decrypt after reopening: %q, %v", pt, err)
	}
	if k, err := e.GetKey(ctx, tag); err != nil || k.CurrentVersion != 2 || k.Name != "old" {
		t.Fatalf("GetKey after reopening: %+v, %v", k, err)
	}
	// The JSON history entry reads beside the binary one RotateKey wrote.
	if h, err := e.ListKeyHistory(ctx, tag, 0, 10); err != nil || len(h.Entries) != 2 || h.Entries[1].Op != "create key" || h.Entries[1].Seq != 1 {
		t.Fatalf("ListKeyHistory after reopening: %+v, %v", h, err)
	}
	// The usage record, rewritten (in codec 2) at Close, still counts the
	// five encryptions of the codec-1 record.
	if u, err := e.KeyUsage(ctx, tag); err != nil || u.Versions[0].Encryptions != 6 || u.Versions[0].Decryptions != 1 {
		t.Fatalf("KeyUsage after reopening: %+v, %v", u, err)
	}
	if _, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "OLD", Type: kms.AES256}); err == nil {
		t.Fatal("a codec-1 name entry no longer reserves its name")
	}
	e.Close()
	// The directory is now schema 3, which a build without codec-2 usage
	// records refuses with ErrSchemaTooNew rather than misreading one.
	opts := badger.DefaultOptions(dir).WithLogger(nil).WithReadOnly(true).WithCompression(options.None)
	if db, err = badger.Open(opts); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var schema []byte
	if err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte("m/schema"))
		if err != nil {
			return err
		}
		schema, err = item.ValueCopy(nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if want := frame("m/schema", badgerstore.SchemaVersion); string(schema) != string(want) || badgerstore.SchemaVersion != 3 {
		t.Fatalf("schema record %q, want %q (schema 3)", schema, want)
	}
}
