// Command cluster runs three Engines in one process, as three replicas of
// an application would run one each, sharing their keys through etcd:
// a key created on A reaches B and C, B encrypts, C decrypts, a token
// generator rotated on A refuses the old token on C, and a key disabled
// on C stops serving on A. It prints what it did and how long each change
// took to reach the other Engines, and exits non-zero on any failure.
//
// With no flags it starts a 3-member etcd cluster inside the process
// (loopback ports, a temporary directory, removed at the end), so it needs
// nothing installed:
//
//	go run ./examples/cluster
//
// Against a cluster of your own, name its endpoints and a prefix that
// nothing else writes under (the example leaves its keys there):
//
//	go run ./examples/cluster -endpoints http://127.0.0.1:2379 -prefix pocketkms-demo/
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/etcdtest"
	etcdstore "github.com/pocketkms/kms/store/etcd"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) (err error) {
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	fs.SetOutput(out)
	endpoints := fs.String("endpoints", "", "comma-separated etcd endpoints (default: an embedded 3-member cluster)")
	prefix := fs.String("prefix", "pocketkms-demo/", "key prefix of the Engines' records")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	eps := strings.Split(*endpoints, ",")
	if *endpoints == "" {
		dir, err := os.MkdirTemp("", "pocketkms-cluster-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		start := time.Now()
		c, err := etcdtest.New(dir, 3)
		if err != nil {
			return err
		}
		defer c.Close()
		fmt.Fprintf(out, "started an embedded 3-member etcd cluster in %v\n", time.Since(start).Round(time.Millisecond))
		eps = c.Endpoints()
	}

	// Every replica has the same root key (in production: from your
	// secret store), its own etcd client and its own Engine.
	root, err := memory.GenerateRootKey()
	if err != nil {
		return err
	}
	defer clear(root)
	var rs []*replica
	defer func() {
		for _, r := range rs {
			err = errors.Join(err, r.close())
		}
	}()
	for range 3 {
		r, err := open(ctx, eps, *prefix, root)
		if err != nil {
			return err
		}
		rs = append(rs, r)
	}
	return demo(ctx, rs[0].e, rs[1].e, rs[2].e, out)
}

// replica is what each replica of an application holds.
type replica struct {
	cli *clientv3.Client
	e   *kms.Engine
}

// close closes the Engine (and with it the store and the backend), then
// the client, which the store does not own.
func (r *replica) close() error {
	return errors.Join(r.e.Close(), r.cli.Close())
}

// open opens one replica's Engine: a client of the cluster, a store under
// the prefix, and a memory backend under the shared root key.
func open(ctx context.Context, endpoints []string, prefix string, root []byte) (*replica, error) {
	cli, err := etcdtest.NewClient(endpoints...)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := etcdstore.New(ctx, cli, prefix)
	if err != nil {
		cli.Close()
		return nil, err
	}
	be, err := memory.New(root)
	if err != nil {
		cli.Close()
		return nil, err
	}
	e, err := kms.New(ctx, be, kms.WithStore(st))
	if err != nil {
		return nil, errors.Join(err, st.Close(), be.Close(), cli.Close())
	}
	return &replica{cli: cli, e: e}, nil
}

// demo shows changes made on one Engine holding on the others.
func demo(ctx context.Context, a, b, c *kms.Engine, out io.Writer) error {
	name := fmt.Sprintf("demo%d", time.Now().UnixMilli()%1_000_000)
	k, err := a.CreateKey(ctx, kms.CreateKeyRequest{Name: name, Type: kms.AES256})
	if err != nil {
		return err
	}
	d, err := reach(func() bool {
		_, errB := b.GetKey(ctx, k.Tag)
		_, errC := c.GetKey(ctx, k.Tag)
		return errB == nil && errC == nil
	})
	if err != nil {
		return fmt.Errorf("the new key did not reach B and C: %w", err)
	}
	fmt.Fprintf(out, "A created key %q; it reached B and C in %v\n", k.Name, d)

	ct, err := b.Encrypt(ctx, k.Tag, []byte("written by B"), nil)
	if err != nil {
		return err
	}
	pt, err := c.Decrypt(ctx, k.Tag, ct, nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "B encrypted, C decrypted: %q\n", pt)

	if _, err := a.ActivateTokenGenerator(ctx, k.Tag); err != nil {
		return err
	}
	set, err := a.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "orders-service"})
	if err != nil {
		return err
	}
	caller := netip.MustParseAddr("127.0.0.1")
	if _, err := reach(func() bool {
		_, err := c.WithToken(set.Access, caller).Encrypt(ctx, k.Tag, []byte("x"), nil)
		return err == nil
	}); err != nil {
		return fmt.Errorf("replica C does not accept the token from A: %w", err)
	}
	fmt.Fprintln(out, "A issued a token; C accepts it")
	if _, err := a.RotateTokenGenerator(ctx, k.Tag); err != nil {
		return err
	}
	d, err = reach(func() bool {
		_, err := c.WithToken(set.Access, caller).Encrypt(ctx, k.Tag, []byte("x"), nil)
		return errors.Is(err, kms.ErrTokenInvalid)
	})
	if err != nil {
		return fmt.Errorf("replica C still accepts the token after the rotation: %w", err)
	}
	fmt.Fprintf(out, "A rotated the token generator; C refused the old token after %v\n", d)

	if _, err := c.DisableKey(ctx, k.Tag); err != nil {
		return err
	}
	d, err = reach(func() bool {
		_, err := a.Encrypt(ctx, k.Tag, []byte("x"), nil)
		return errors.Is(err, kms.ErrKeyNotEnabled)
	})
	if err != nil {
		return fmt.Errorf("replica A still encrypts with the disabled key: %w", err)
	}
	fmt.Fprintf(out, "C disabled the key; A refused to encrypt after %v\n", d)
	fmt.Fprintln(out, "all checks passed")
	return nil
}

// reach polls cond until it holds (within 5 s) and returns how long that
// took.
func reach(cond func() bool) (time.Duration, error) {
	start := time.Now()
	for !cond() {
		if time.Since(start) > 5*time.Second {
			return 0, errors.New("not within 5s")
		}
		time.Sleep(100 * time.Microsecond)
	}
	return time.Since(start).Round(time.Microsecond), nil
}
