package kms

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/shred"
	"github.com/pocketkms/kms/internal/testclock"
	"github.com/pocketkms/kms/store"
)

// staleStore serves a Load read earlier: what Backup sees when a key is
// destroyed between its read of the store and its read of the shred keys.
type staleStore struct {
	store.Store
	c *store.Contents
}

func (s staleStore) Load(context.Context) (*store.Contents, error) { return s.c, nil }

// TestBackupSkipsKeyDestroyedDuringBackup: a key destroyed after Backup
// read the store (its shred key gone) is left out whole, name included,
// and the backup restores; a live key whose shred key is missing fails
// the backup instead of writing a key that cannot open.
func TestBackupSkipsKeyDestroyedDuringBackup(t *testing.T) {
	ctx := context.Background()
	clk := testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e, err := New(ctx, memoryBackend(t), WithDirectory(t.TempDir()), WithClock(clk), WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	doomed, err := e.CreateKey(ctx, CreateKeyRequest{Name: "doomed", Type: AES256})
	if err != nil {
		t.Fatal(err)
	}
	live, err := e.CreateKey(ctx, CreateKeyRequest{Name: "live", Type: RSA2048})
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.st.Load(ctx)
	if err != nil || len(c.Keys) != 2 {
		t.Fatalf("load: %v", err)
	}
	if _, err := e.RequestKeyDeletion(ctx, doomed.Tag); err != nil {
		t.Fatal(err)
	}
	clk.Advance(DeletionDelay + time.Second)
	if err := e.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	real := e.st
	e.st = staleStore{real, c}
	defer func() { e.st = real }()
	var buf bytes.Buffer
	info, err := e.Backup(ctx, &buf)
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if info.Keys != 1 || bytes.Contains(buf.Bytes(), []byte(doomed.Tag)) || bytes.Contains(buf.Bytes(), []byte(`"doomed"`)) {
		t.Fatalf("the destroyed key is in the backup (%d keys)", info.Keys)
	}
	d, err := readBackup(ctx, "test", bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("the backup does not read back: %v", err)
	}
	for _, kd := range d.contents.Keys {
		for _, v := range kd.Versions {
			if shred.IsWrapped(v.Handle) {
				t.Fatal("a handle in the backup is still sealed under its shred key")
			}
		}
	}
	if err := e.shred.Delete(live.Tag); err != nil {
		t.Fatal(err)
	}
	_, err = e.Backup(ctx, &bytes.Buffer{})
	if !errors.Is(err, ErrInternal) {
		t.Fatalf("backup of a live key without its shred key: %v, want ErrInternal", err)
	}
}

// sealBackupBody makes a backup of body (the frames after the magic and
// version) with a valid trailer claiming count records, so that the
// fuzzer reaches what lies past the digest check.
func sealBackupBody(body []byte, count uint64) []byte {
	out := []byte(backupMagic)
	out = binary.BigEndian.AppendUint16(out, backupVersion)
	out = append(out, body...)
	out = append(out, frameTrailer)
	out = binary.BigEndian.AppendUint32(out, trailerSize)
	out = binary.BigEndian.AppendUint64(out, count)
	sum := sha256.Sum256(out)
	return append(out, sum[:]...)
}

// FuzzBackupReader feeds the backup reader arbitrary bytes, as they come
// and sealed with a valid digest: it never panics, and refuses what it
// refuses with ErrBackupInvalid; what it accepts counts the records its
// trailer claims.
func FuzzBackupReader(f *testing.F) {
	ctx := context.Background()
	e, err := New(ctx, memoryBackendTB(f), WithMaintenanceInterval(0))
	if err != nil {
		f.Fatal(err)
	}
	for _, typ := range []KeyType{AES256, ECDSA} {
		k, err := e.CreateKey(ctx, CreateKeyRequest{Name: "fz-" + string(typ), Type: typ})
		if err != nil {
			f.Fatal(err)
		}
		if _, err := e.AddAllowedIPs(ctx, k.Tag, []string{"10.0.0.1"}); err != nil {
			f.Fatal(err)
		}
	}
	var buf bytes.Buffer
	info, err := e.Backup(ctx, &buf)
	e.Close()
	if err != nil {
		f.Fatal(err)
	}
	good := buf.Bytes()
	body := good[len(backupMagic)+2 : len(good)-5-trailerSize]
	f.Add(good, false, uint8(0))
	f.Add(body, true, uint8(info.Records))
	f.Add(good[:len(good)/2], false, uint8(0))
	f.Add([]byte{}, true, uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, seal bool, count uint8) {
		if seal {
			data = sealBackupBody(data, uint64(count))
		}
		d, err := readBackup(ctx, "fuzz", bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrBackupInvalid) {
				t.Fatalf("refused with %v, want ErrBackupInvalid", err)
			}
			return
		}
		if d.records != int(count) && seal {
			t.Fatalf("accepted %d records, the trailer claims %d", d.records, count)
		}
		if d.contents == nil || len(d.contents.Keys) != d.info.Keys {
			t.Fatal("accepted a backup whose keys do not add up")
		}
	})
}

func memoryBackendTB(tb testing.TB) backend.Backend {
	tb.Helper()
	be, err := memory.New(bytes.Repeat([]byte{7}, memory.RootKeySize))
	if err != nil {
		tb.Fatal(err)
	}
	return be
}

// bkBenchEngine is an in-memory Engine with n AES256 keys of two versions.
func bkBenchEngine(b *testing.B, n int) *Engine {
	b.Helper()
	ctx := context.Background()
	e, err := New(ctx, memoryBackendTB(b), WithMaintenanceInterval(0))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	for i := range n {
		k, err := e.CreateKey(ctx, CreateKeyRequest{Name: fmt.Sprintf("bench-%d", i), Type: AES256})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.RotateKey(ctx, k.Tag); err != nil {
			b.Fatal(err)
		}
	}
	return e
}

// BenchmarkStoreLoad is the raw primitive under Backup: one read of the
// whole store (1,000 keys of two versions).
func BenchmarkStoreLoad(b *testing.B) {
	e := bkBenchEngine(b, 1000)
	ctx := context.Background()
	for b.Loop() {
		if _, err := e.st.Load(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBackup writes a backup of the same store to io.Discard.
func BenchmarkBackup(b *testing.B) {
	e := bkBenchEngine(b, 1000)
	ctx := context.Background()
	var size int64
	for b.Loop() {
		info, err := e.Backup(ctx, io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		size = info.Size
	}
	b.SetBytes(size)
}

// BenchmarkVerifyBackup reads and checks that backup (what Restore does
// before it touches the backend).
func BenchmarkVerifyBackup(b *testing.B) {
	e := bkBenchEngine(b, 1000)
	ctx := context.Background()
	var buf bytes.Buffer
	if _, err := e.Backup(ctx, &buf); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(buf.Len()))
	for b.Loop() {
		if _, err := VerifyBackup(ctx, bytes.NewReader(buf.Bytes())); err != nil {
			b.Fatal(err)
		}
	}
}
