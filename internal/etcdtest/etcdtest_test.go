package etcdtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/pocketkms/kms/internal/etcdtest"
)

// TestKillRestart: a cluster serves, keeps serving with one member killed
// (3 members), and the restarted member has every write.
func TestKillRestart(t *testing.T) {
	start := time.Now()
	c := etcdtest.Start(t, etcdtest.Members())
	t.Logf("%d members ready in %v", c.Size(), time.Since(start))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := c.Client(t)
	if _, err := cli.Put(ctx, "a", "1"); err != nil {
		t.Fatal(err)
	}
	if c.Size() < 3 {
		return
	}
	t0 := time.Now()
	c.Kill(0)
	t.Logf("killed member 0 in %v", time.Since(t0))
	// If member 0 led, the others elect a new leader first; until then a
	// put may time out on the server ("request timed out"), which a busy
	// machine stretches. The put is idempotent: retry until the deadline.
	for {
		_, err := cli.Put(ctx, "b", "2")
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("put with one member down: %v", err)
		}
		t.Logf("put with one member down: %v; retrying", err)
		time.Sleep(100 * time.Millisecond)
	}
	t0 = time.Now()
	if err := c.Restart(0); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted member 0 in %v", time.Since(t0))
	only, err := etcdtest.NewClient(c.Endpoint(0))
	if err != nil {
		t.Fatal(err)
	}
	defer only.Close()
	resp, err := only.Get(ctx, "b")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "2" {
		t.Fatalf("restarted member reads b: %v, %v", resp, err)
	}
}
