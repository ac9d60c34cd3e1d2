package kms_test

import (
	"context"
	"strings"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/store"
	"github.com/pocketkms/kms/store/storetest"
)

// TestNameIndexOutOfStep: New refuses a store whose name index does not
// name exactly its keys, each by its own name (ErrInternal naming the
// key where one is at fault): a name missing, a name pointing at another
// key, an extra name, two keys under one name.
func TestNameIndexOutOfStep(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		damage func(a, b *kms.Key) *store.Change
	}{
		{"missing", func(a, _ *kms.Key) *store.Change { return (&store.Change{}).Delete(store.NameKey("alpha")) }},
		{"crossed", func(a, b *kms.Key) *store.Change {
			return (&store.Change{}).Put(&store.NameRecord{Name: "alpha", Tag: b.Tag}, &store.NameRecord{Name: "beta", Tag: a.Tag})
		}},
		{"extra", func(a, _ *kms.Key) *store.Change {
			return (&store.Change{}).Put(&store.NameRecord{Name: "gamma", Tag: a.Tag})
		}},
		{"shared", func(a, b *kms.Key) *store.Change {
			kr := &store.KeyRecord{Tag: b.Tag, Name: "alpha", Type: string(b.Type), State: string(b.State), Seq: 2,
				CreatedAt: b.CreatedAt.UnixMilli(), StateChangedAt: b.StateChangedAt.UnixMilli(), CurrentVersion: 1}
			return (&store.Change{}).Put(kr).Delete(store.NameKey("beta"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := storetest.NewMemory()
			e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithStore(mem.Open()), kms.WithMaintenanceInterval(0))
			if err != nil {
				t.Fatal(err)
			}
			a, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "alpha", Type: kms.AES256})
			if err != nil {
				t.Fatal(err)
			}
			b, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "beta", Type: kms.AES256})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			if e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithStore(mem.Open()), kms.WithMaintenanceInterval(0)); err != nil {
				t.Fatalf("intact store: %v", err)
			} else {
				e.Close()
			}
			if _, err := mem.Open().Apply(ctx, tc.damage(a, b)); err != nil {
				t.Fatal(err)
			}
			_, err = kms.New(ctx, newBackend(t, rootKey), kms.WithStore(mem.Open()), kms.WithMaintenanceInterval(0))
			wantErr(t, err, kms.ErrInternal)
			if !strings.Contains(err.Error(), "name index out of step with keys") {
				t.Fatalf("refused for another reason: %v", err)
			}
		})
	}
}
