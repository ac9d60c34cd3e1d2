package etcdstore_test

// The PKCS#11 backend across processes: SoftHSM2 processes on one machine
// share one token directory (SOFTHSM2_CONF, inherited by the children),
// each with an Engine on the same etcd prefix. A key created in process A
// encrypts there and decrypts in process B, which was already running;
// a key rotated in B serves A. A network HSM is the production
// equivalent of the shared directory.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/softhsm"
	"github.com/pocketkms/kms/backend/softhsm/softhsmtest"
	"github.com/pocketkms/kms/internal/etcdtest"
	"github.com/pocketkms/kms/internal/testproc"
	etcdstore "github.com/pocketkms/kms/store/etcd"
)

// hsmMsg is one line between the parent and a child: a request on the
// child's standard input, a reply on its output.
type hsmMsg struct {
	Op   string // create, encrypt, decrypt, rotate, quit; replies: ready, ok, error
	Name string
	Tag  string
	CT   string
	PT   string
	Err  string
}

func TestSoftHSMAcrossProcesses(t *testing.T) {
	if args, ok := testproc.Child(t); ok {
		hsmChild(args)
		return
	}
	softhsmtest.Module(t) // skips without SoftHSM2 (fails under CI=true)
	pinBytes := make([]byte, 8)
	rand.Read(pinBytes)
	pin := hex.EncodeToString(pinBytes)
	cfg := softhsmtest.NewTokenWithPIN(t, pin)
	t.Cleanup(func() { os.RemoveAll(softhsmtest.Dir(t)) })
	pinFile := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte(pin), 0o600); err != nil {
		t.Fatal(err)
	}
	c := shared(t)
	prefix := freshPrefix(t)
	start := func(name string) (*testproc.Proc, func(hsmMsg) hsmMsg) {
		p := testproc.Start(t, testproc.Options{Stdin: true, Timeout: 60 * time.Second},
			strings.Join(c.Endpoints(), ","), prefix, cfg.Module, cfg.TokenLabel, pinFile)
		ask := func(m hsmMsg) hsmMsg {
			t.Helper()
			if m.Op != "" {
				b, _ := json.Marshal(m)
				if err := p.Send(string(b)); err != nil {
					t.Fatalf("%s: send: %v", name, err)
				}
			}
			for line := range p.Lines() {
				var r hsmMsg
				if json.Unmarshal([]byte(line), &r) == nil && r.Op != "" {
					if r.Op == "error" {
						t.Fatalf("%s: %s %s: %s", name, m.Op, m.Name, r.Err)
					}
					return r
				}
			}
			r := p.Wait()
			t.Fatalf("%s ended: %v\n%s", name, r, testproc.Tail(r.Stderr, 20))
			return hsmMsg{}
		}
		return p, ask
	}
	pb, askB := start("B")
	askB(hsmMsg{}) // ready: B's Engine is open before A creates anything
	pa, askA := start("A")
	askA(hsmMsg{})

	k := askA(hsmMsg{Op: "create", Name: "shared-hsm"})
	ct := askA(hsmMsg{Op: "encrypt", Tag: k.Tag, PT: "made in A"})
	if got := askB(hsmMsg{Op: "decrypt", Tag: k.Tag, CT: ct.CT}); got.PT != "made in A" {
		t.Fatalf("B decrypted %q", got.PT)
	}
	askB(hsmMsg{Op: "rotate", Tag: k.Tag})
	ct2 := askB(hsmMsg{Op: "encrypt", Tag: k.Tag, PT: "made in B"})
	if got := askA(hsmMsg{Op: "decrypt", Tag: k.Tag, CT: ct2.CT}); got.PT != "made in B" {
		t.Fatalf("A decrypted %q", got.PT)
	}
	for _, p := range []*testproc.Proc{pa, pb} {
		p.Send(`{"Op":"quit"}`)
		if r := p.Wait(); r.Err != nil {
			t.Fatalf("child: %v\n%s", r, testproc.Tail(r.Stderr, 20))
		}
	}
}

// hsmChild opens an Engine on the shared token and the etcd prefix and
// serves the parent's requests.
func hsmChild(args []string) {
	out := json.NewEncoder(os.Stdout)
	reply := func(m hsmMsg) { out.Encode(m) }
	fail := func(err error) {
		reply(hsmMsg{Op: "error", Err: err.Error()})
		time.Sleep(time.Minute)
	}
	ctx := context.Background()
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cli, err := etcdtest.NewClient(strings.Split(args[0], ",")...)
	if err != nil {
		fail(err)
	}
	defer cli.Close()
	st, err := etcdstore.New(octx, cli, args[1])
	if err != nil {
		fail(err)
	}
	be, err := softhsm.New(octx, softhsm.Config{Module: args[2], TokenLabel: args[3], PINFile: args[4]})
	if err != nil {
		fail(err)
	}
	e, err := kms.New(octx, be, kms.WithStore(st), kms.WithMaintenanceInterval(0))
	if err != nil {
		fail(err)
	}
	defer e.Close()
	reply(hsmMsg{Op: "ready"})
	// arrived waits for the feed to bring a key (or version) made by the
	// other process.
	arrived := func(try func() error) error {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := try()
			if err == nil || time.Now().After(deadline) {
				return err
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var m hsmMsg
		if err := json.Unmarshal(in.Bytes(), &m); err != nil {
			fail(err)
		}
		var r hsmMsg
		switch m.Op {
		case "quit":
			return
		case "create":
			k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: m.Name, Type: kms.AES256})
			if err != nil {
				fail(err)
			}
			r.Tag = k.Tag
		case "encrypt":
			if r.CT, err = e.Encrypt(ctx, m.Tag, []byte(m.PT), nil); err != nil {
				fail(err)
			}
		case "decrypt":
			err := arrived(func() error {
				pt, err := e.Decrypt(ctx, m.Tag, m.CT, nil)
				r.PT = string(pt)
				return err
			})
			if err != nil {
				fail(err)
			}
		case "rotate":
			if _, err := e.RotateKey(ctx, m.Tag); err != nil {
				fail(err)
			}
		default:
			fail(fmt.Errorf("unknown request %q", m.Op))
		}
		r.Op = "ok"
		reply(r)
	}
}
