package etcdstore_test

// Kill -9 a process mid-change: child processes (this test binary run
// again) make changes through their own Engine on the parent's embedded
// etcd and report each one; the parent kills them with SIGKILL at random
// points and checks that every acknowledged change is present on its own
// two Engines, which followed the child's changes through the watch.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/etcdtest"
	"github.com/pocketkms/kms/internal/testproc"
	etcdstore "github.com/pocketkms/kms/store/etcd"
)

var killRounds = flag.Int("kill.rounds", 0, "child processes TestKillMidChange kills (0: 20, or 5 with -short; the issue asks for 100)")

// killOp is one line of the child: a change begun or acknowledged.
type killOp struct {
	Phase   string // BEGIN, ACK, FAIL
	Op      string // create, rotate, memo
	Tag     string
	Version uint32 // rotate: the version made
	Memo    string // memo: the memo set
	Err     string
}

// killKey is what the parent knows one key must show.
type killKey struct {
	version uint32 // at least this version (acknowledged rotations)
	memo    string // the last acknowledged memo
	pending string // a memo whose change was in flight at the kill
}

func TestKillMidChange(t *testing.T) {
	if args, ok := testproc.Child(t); ok {
		killChild(args)
		return
	}
	rounds := *killRounds
	if rounds <= 0 {
		rounds = 20
		if testing.Short() {
			rounds = 5
		}
	}
	c := shared(t)
	prefix := freshPrefix(t)
	a, b := newEngine(t, c, prefix), newEngine(t, c, prefix)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 16))
	ctx := context.Background()
	keys := map[string]*killKey{}
	acks, inflight := 0, 0
	for round := range rounds {
		p := testproc.Start(t, testproc.Options{Timeout: 60 * time.Second},
			strings.Join(c.Endpoints(), ","), prefix, fmt.Sprint(round), fmt.Sprint(rng.Uint64()))
		killAt := 1 + rng.IntN(12) // acknowledgements before the kill
		delay := time.Duration(rng.IntN(4000)) * time.Microsecond
		var begun *killOp
		seen := 0
		// Every line the child printed before it died counts, those after
		// the kill was decided included.
		for line := range p.Lines() {
			var op killOp
			if json.Unmarshal([]byte(line), &op) != nil || op.Phase == "" {
				continue
			}
			switch op.Phase {
			case "FAIL":
				p.Kill()
				t.Fatalf("round %d: the child's %s failed: %s", round, op.Op, op.Err)
			case "BEGIN":
				begun = &op
				continue
			}
			begun = nil
			acks++
			switch op.Op {
			case "create":
				keys[op.Tag] = &killKey{version: 1}
			case "rotate":
				keys[op.Tag].version = max(keys[op.Tag].version, op.Version)
			case "memo":
				keys[op.Tag].memo, keys[op.Tag].pending = op.Memo, ""
			}
			if seen++; seen == killAt {
				// Somewhere in a later change; lines keep coming until the
				// child is dead and its output closed.
				time.AfterFunc(delay, p.Kill)
			}
		}
		r := p.Wait()
		if !r.Killed {
			t.Fatalf("round %d: the child ended on its own (%v):\n%s", round, r, testproc.Tail(r.Stderr, 20))
		}
		if begun != nil {
			inflight++
			if begun.Op == "memo" {
				keys[begun.Tag].pending = begun.Memo
			}
		}
		// Every acknowledged change, on both Engines.
		for tag, want := range keys {
			for i, e := range []*kms.Engine{a, b} {
				withinOr(t, 5*time.Second, fmt.Sprintf("round %d: engine %d shows key %s", round, i, tag), func() bool {
					k, err := e.GetKey(ctx, tag)
					if err != nil || k.CurrentVersion < want.version {
						return false
					}
					// The change in flight at the kill may land, even after
					// this check: either memo is right.
					return k.Memo == want.memo || (want.pending != "" && k.Memo == want.pending)
				}, func() string {
					k, err := e.GetKey(ctx, tag)
					if err != nil {
						return err.Error()
					}
					return fmt.Sprintf("version %d memo %q; want version >= %d, memo %q or %q", k.CurrentVersion, k.Memo, want.version, want.memo, want.pending)
				})
			}
		}
	}
	// The change in flight at the last kill may land late: compare fresh
	// views until they agree.
	var va, vb string
	withinOr(t, 5*time.Second, "both Engines agree", func() bool {
		var errA, errB error
		va, errA = view(ctx, a)
		vb, errB = view(ctx, b)
		return errA == nil && errB == nil && va == vb
	}, func() string {
		for i := range min(len(va), len(vb)) {
			if va[i] != vb[i] {
				return fmt.Sprintf("first difference at %d:\nA: %s\nB: %s", i, va[max(0, i-200):min(len(va), i+300)], vb[max(0, i-200):min(len(vb), i+300)])
			}
		}
		return fmt.Sprintf("lengths %d and %d", len(va), len(vb))
	})
	t.Logf("%d rounds, %d acknowledged changes on %d keys, killed mid-change %d times", rounds, acks, len(keys), inflight)
}

// killChild makes changes until killed: two keys of its own, then
// rotations and memo changes on any key of the prefix, printing
// each change as it begins and once acknowledged.
func killChild(args []string) {
	say := func(op killOp) {
		b, _ := json.Marshal(op)
		os.Stdout.Write(append(b, '\n'))
	}
	fail := func(op string, err error) {
		say(killOp{Phase: "FAIL", Op: op, Err: err.Error()})
		time.Sleep(time.Minute) // the parent kills us
	}
	var seed uint64
	fmt.Sscan(args[3], &seed)
	rng := rand.New(rand.NewPCG(seed, 61))
	cli, err := etcdtest.NewClient(strings.Split(args[0], ",")...)
	if err != nil {
		fail("client", err)
	}
	ctx := context.Background()
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := etcdstore.New(octx, cli, args[1])
	if err != nil {
		fail("open", err)
	}
	be, err := memory.New(rootKey)
	if err != nil {
		fail("open", err)
	}
	e, err := kms.New(octx, be, kms.WithStore(st), kms.WithMaintenanceInterval(0))
	if err != nil {
		fail("open", err)
	}
	var tags []string
	for i := range 2 {
		say(killOp{Phase: "BEGIN", Op: "create"})
		k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: fmt.Sprintf("r%s-%d", args[2], i), Type: kms.AES256})
		if err != nil {
			fail("create", err)
		}
		tags = append(tags, k.Tag)
		say(killOp{Phase: "ACK", Op: "create", Tag: k.Tag})
	}
	for i := 0; ; i++ {
		tag := tags[rng.IntN(len(tags))]
		if rng.IntN(2) == 0 {
			say(killOp{Phase: "BEGIN", Op: "rotate", Tag: tag})
			k, err := e.RotateKey(ctx, tag)
			if err != nil {
				fail("rotate", err)
			}
			say(killOp{Phase: "ACK", Op: "rotate", Tag: tag, Version: k.Version})
			continue
		}
		memo := fmt.Sprintf("round %s change %d", args[2], i)
		say(killOp{Phase: "BEGIN", Op: "memo", Tag: tag, Memo: memo})
		if _, err := e.UpdateKey(ctx, tag, kms.UpdateKeyRequest{Memo: &memo}); err != nil {
			fail("memo", err)
		}
		say(killOp{Phase: "ACK", Op: "memo", Tag: tag, Memo: memo})
	}
}

// withinOr is within, with what shows when cond does not hold in time.
func withinOr(t *testing.T, limit time.Duration, what string, cond func() bool, shows func() string) {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("not within %v: %s: %s", limit, what, shows())
		}
		time.Sleep(time.Millisecond)
	}
}
