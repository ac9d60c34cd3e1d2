package kms_test

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
)

var crashCycles = flag.Int("crash.cycles", 15, "kill-and-restart cycles of TestCrashSafety (run more for a long test)")

const crashEnv = "POCKETKMS_CRASH_CHILD"

// crashOp is one change the child makes; it prints BEGIN before and ACK
// (or FAIL) after, so the parent knows what was acknowledged and which
// single change may have been in flight when it was killed.
type crashOp struct {
	Phase   string `json:"phase"` // BEGIN, ACK, FAIL
	Op      string `json:"op"`
	Tag     string `json:"tag,omitempty"`
	Name    string `json:"name,omitempty"`
	Version uint32 `json:"version,omitempty"`
	CT      string `json:"ct,omitempty"`
	PT      string `json:"pt,omitempty"`
}

type modelKey struct {
	state    kms.KeyState
	versions []kms.VersionState
}

func (m modelKey) clone() modelKey {
	return modelKey{state: m.state, versions: slices.Clone(m.versions)}
}

// apply is the model of each change: what the key must look like after it.
func apply(m modelKey, op crashOp) modelKey {
	m = m.clone()
	switch op.Op {
	case "rotate":
		m.versions = append(m.versions, kms.VersionEnabled)
	case "disable":
		m.state = kms.StateDisabled
	case "enable":
		m.state = kms.StateEnabled
	case "delete":
		m.state = kms.StateRevoked
	case "cancel":
		m.state = kms.StateDisabled
	case "vdisable":
		m.versions[op.Version-1] = kms.VersionDisabled
	case "venable":
		m.versions[op.Version-1] = kms.VersionEnabled
	}
	return m
}

func actualKey(t *testing.T, e *kms.Engine, tag string) (modelKey, bool) {
	t.Helper()
	ctx := context.Background()
	k, err := e.GetKey(ctx, tag)
	if err != nil {
		return modelKey{}, false
	}
	vs, err := e.ListKeyVersions(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	m := modelKey{state: k.State}
	for _, v := range vs {
		m.versions = append(m.versions, v.State)
	}
	if int(k.CurrentVersion) != len(vs) {
		t.Fatalf("key %s: current version %d but %d versions", tag, k.CurrentVersion, len(vs))
	}
	return m, true
}

func sameModel(a, b modelKey) bool { return a.state == b.state && slices.Equal(a.versions, b.versions) }

// TestCrashSafety kills a child process at random moments while it
// creates keys, rotates, changes key and version states, requests and
// cancels deletions and encrypts, then reopens the store: every
// acknowledged change must be there, nothing half-made may exist, and
// every acknowledged ciphertext of a usable version must decrypt.
func TestCrashSafety(t *testing.T) {
	if dir := os.Getenv(crashEnv); dir != "" {
		crashChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	dir := t.TempDir()
	model := map[string]modelKey{}
	type ctRecord struct{ tag, ct, pt string }
	var cts []ctRecord
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	ctx := context.Background()
	acked := 0
	for cycle := range *crashCycles {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashSafety$")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir, fmt.Sprintf("POCKETKMS_CRASH_SEED=%d", rng.Uint64()))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan crashOp, 1024)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				var op crashOp
				if json.Unmarshal(sc.Bytes(), &op) == nil && op.Phase != "" {
					lines <- op
				}
			}
		}()
		// Wait for the child's first acknowledgement, then kill it at a
		// random moment.
		killAt := time.Duration(rng.IntN(150)) * time.Millisecond
		var timer <-chan time.Time
		var inflight *crashOp
		started := time.Now()
	read:
		for {
			select {
			case op, ok := <-lines:
				if !ok {
					break read
				}
				if timer == nil && op.Phase == "ACK" {
					timer = time.After(killAt)
				}
				switch op.Phase {
				case "BEGIN":
					o := op
					inflight = &o
				case "ACK":
					inflight = nil
					acked++
					switch op.Op {
					case "create":
						model[op.Tag] = modelKey{state: kms.StateEnabled, versions: []kms.VersionState{kms.VersionEnabled}}
					case "encrypt":
						cts = append(cts, ctRecord{op.Tag, op.CT, op.PT})
					default:
						model[op.Tag] = apply(model[op.Tag], op)
					}
				case "FAIL":
					inflight = nil
				}
			case <-timer:
				cmd.Process.Kill()
				timer = nil
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("cycle %d: child silent for 30s (started %v ago)", cycle, time.Since(started))
			}
		}
		cmd.Wait()

		// Restart on the same directory and compare.
		e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir), kms.WithMaintenanceInterval(0))
		if err != nil {
			t.Fatalf("cycle %d: reopen after kill: %v", cycle, err)
		}
		page, err := e.ListKeys(ctx, kms.ListKeysRequest{PageSize: 200})
		if err != nil {
			t.Fatal(err)
		}
		extra := page.TotalCount - len(model)
		if extra < 0 || extra > 1 || (extra == 1 && (inflight == nil || inflight.Op != "create")) {
			t.Fatalf("cycle %d: %d keys stored, %d acknowledged (in flight: %+v)", cycle, page.TotalCount, len(model), inflight)
		}
		for _, k := range page.Keys {
			if _, known := model[k.Tag]; !known {
				model[k.Tag] = modelKey{state: kms.StateEnabled, versions: []kms.VersionState{kms.VersionEnabled}}
			}
		}
		for tag, want := range model {
			got, ok := actualKey(t, e, tag)
			if !ok {
				t.Fatalf("cycle %d: acknowledged key %s is missing", cycle, tag)
			}
			if sameModel(got, want) {
				continue
			}
			if inflight != nil && inflight.Tag == tag && sameModel(got, apply(want, *inflight)) {
				model[tag] = got // the in-flight change committed before the kill
				continue
			}
			t.Fatalf("cycle %d: key %s is %+v, acknowledged %+v (in flight %+v)", cycle, tag, got, want, inflight)
		}
		for _, c := range cts {
			m := model[c.tag]
			var v uint32
			fmt.Sscanf(c.ct, "ncpkms:v%d:", &v)
			if m.state != kms.StateEnabled || m.versions[v-1] != kms.VersionEnabled {
				continue
			}
			pt, err := e.Decrypt(ctx, c.tag, c.ct, nil)
			if err != nil || string(pt) != c.pt {
				t.Fatalf("cycle %d: acknowledged ciphertext no longer decrypts: %v", cycle, err)
			}
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d cycles, %d acknowledged changes, %d keys, %d ciphertexts checked", *crashCycles, acked, len(model), len(cts))
	if acked == 0 {
		t.Fatal("the child acknowledged nothing")
	}
}

// crashChild makes random changes forever (until killed, or 20 s).
func crashChild(dir string) {
	ctx := context.Background()
	var seed uint64
	fmt.Sscan(os.Getenv("POCKETKMS_CRASH_SEED"), &seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	be, err := memory.New(rootKey)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	e, err := kms.New(ctx, be, kms.WithDirectory(dir), kms.WithMaintenanceInterval(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(2)
	}
	enc := json.NewEncoder(os.Stdout)
	say := func(op crashOp) { enc.Encode(op) }
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		page, _ := e.ListKeys(ctx, kms.ListKeysRequest{PageSize: 200})
		if len(page.Keys) < 3 || (len(page.Keys) < 40 && rng.IntN(10) == 0) {
			op := crashOp{Op: "create", Name: fmt.Sprintf("k%d_%d", seed%100000, i)}
			say(with(op, "BEGIN"))
			k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: op.Name, Type: kms.AES256})
			if err != nil {
				say(with(op, "FAIL"))
				continue
			}
			op.Tag = k.Tag
			say(with(op, "ACK"))
			continue
		}
		k := page.Keys[rng.IntN(len(page.Keys))]
		op := crashOp{Tag: k.Tag}
		var err error
		switch {
		case k.State == kms.StateRevoked:
			op.Op = "cancel"
			say(with(op, "BEGIN"))
			_, err = e.CancelKeyDeletion(ctx, k.Tag)
		case k.State == kms.StateDisabled:
			op.Op = "enable"
			if rng.IntN(4) == 0 {
				op.Op = "delete"
			}
			say(with(op, "BEGIN"))
			if op.Op == "enable" {
				_, err = e.EnableKey(ctx, k.Tag)
			} else {
				_, err = e.RequestKeyDeletion(ctx, k.Tag)
			}
		default:
			switch r := rng.IntN(10); {
			case r < 3 && k.CurrentVersion < 30:
				op.Op = "rotate"
				say(with(op, "BEGIN"))
				_, err = e.RotateKey(ctx, k.Tag)
			case r < 5 && k.CurrentVersion > 1:
				op.Version = 1 + uint32(rng.IntN(int(k.CurrentVersion-1)))
				vs, _ := e.ListKeyVersions(ctx, k.Tag)
				if vs[op.Version-1].State == kms.VersionEnabled {
					op.Op = "vdisable"
					say(with(op, "BEGIN"))
					_, err = e.DisableKeyVersion(ctx, k.Tag, op.Version)
				} else {
					op.Op = "venable"
					say(with(op, "BEGIN"))
					_, err = e.EnableKeyVersion(ctx, k.Tag, op.Version)
				}
			case r < 6:
				op.Op = "disable"
				say(with(op, "BEGIN"))
				_, err = e.DisableKey(ctx, k.Tag)
			case r < 7:
				op.Op = "delete"
				say(with(op, "BEGIN"))
				_, err = e.RequestKeyDeletion(ctx, k.Tag)
			default:
				op.Op, op.PT = "encrypt", fmt.Sprintf("pt-%d", i)
				say(with(op, "BEGIN"))
				op.CT, err = e.Encrypt(ctx, k.Tag, []byte(op.PT), nil)
			}
		}
		if err != nil {
			say(with(op, "FAIL"))
			continue
		}
		say(with(op, "ACK"))
	}
	e.Close()
}

func with(op crashOp, phase string) crashOp {
	op.Phase = phase
	return op
}
