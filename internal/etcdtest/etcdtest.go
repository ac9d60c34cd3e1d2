// Package etcdtest runs a real etcd cluster inside the current process
// (go.etcd.io/etcd/server/v3/embed), for tests and examples: nothing needs
// to be installed, every member listens on 127.0.0.1 only, on ports
// picked free at start, and keeps its data in a directory of the caller's.
//
// Tests use [Start], which tears the cluster down in t.Cleanup:
//
//	c := etcdtest.Start(t, etcdtest.Members())
//	cli := c.Client(t)
//
// Programs (examples/cluster) use [New] and [Cluster.Close].
//
// Members are real etcd servers with etcd's own durability (the WAL is
// synced before a write is acknowledged). Their loggers are silenced.
// Clients reach each member through a small TCP relay in front of its
// client port, so that [Cluster.Kill] can cut every client connection at
// once, as a crashed process's would be, before it stops the member
// without the graceful leadership handover of a normal shutdown (its data
// is kept); [Cluster.Restart] brings it back on the same ports and data.
//
// # Limitations
//
// The members live in this process, so Kill is not a SIGKILL: the
// operating system's buffers survive it, and the member's peers see it
// stop answering rather than a closed connection. A port picked free can
// be taken by another program before etcd binds it; New then tries fresh
// ports (three attempts in all).
package etcdtest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Members is the cluster size tests should use: 3, or 1 under -short.
func Members() int {
	if testing.Short() {
		return 1
	}
	return 3
}

// startTimeout bounds how long a cluster (or a restarted member) may take
// to become ready.
const startTimeout = 30 * time.Second

// Cluster is a running in-process etcd cluster.
type Cluster struct {
	mu      sync.Mutex
	members []*member
	closed  bool
}

type member struct {
	cfg   *embed.Config
	etcd  *embed.Etcd // nil while killed
	relay *relay      // in front of the client port; clients use its address
}

// Start starts a cluster of n members with its data in t.TempDir() and
// stops it in t.Cleanup. It fails the test if the cluster does not start.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	c, err := New(t.TempDir(), n)
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// New starts a cluster of n members (1 to 7) with their data under dir
// and waits until it serves. Close stops it.
func New(dir string, n int) (*Cluster, error) {
	if n < 1 || n > 7 {
		return nil, fmt.Errorf("etcdtest: %d members; want 1 to 7", n)
	}
	var errs []error
	for attempt := range 3 {
		c, err := start(filepath.Join(dir, fmt.Sprintf("cluster%d", attempt)), n)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, errors.Join(errs...)
}

func start(dir string, n int) (*Cluster, error) {
	ports, err := freePorts(3 * n)
	if err != nil {
		return nil, err
	}
	token := make([]byte, 8)
	if _, err := rand.Read(token); err != nil {
		return nil, err
	}
	c := &Cluster{}
	var initial []string
	for i := range n {
		name := fmt.Sprintf("m%d", i)
		cfg := embed.NewConfig()
		cfg.Name = name
		cfg.Dir = filepath.Join(dir, name)
		peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[3*i])}
		client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[3*i+1])}
		relayed := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[3*i+2])}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{relayed}
		// A token of its own, so a member can never join a cluster of
		// another test that happens to use the same ports.
		cfg.InitialClusterToken = "pocketkms-" + hex.EncodeToString(token)
		cfg.ClusterState = embed.ClusterStateFlagNew
		// Shorter than etcd's defaults (100 ms, 1 s) so a killed leader is
		// replaced quickly, long enough for a loaded 2-core machine.
		cfg.TickMs, cfg.ElectionMs = 50, 500
		cfg.Logger, cfg.LogLevel = "zap", "error"
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		initial = append(initial, name+"="+peer.String())
		c.members = append(c.members, &member{cfg: cfg, relay: &relay{addr: relayed.Host, target: client.Host}})
	}
	for _, m := range c.members {
		m.cfg.InitialCluster = strings.Join(initial, ",")
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, m := range c.members {
		wg.Go(func() { m.etcd, errs[i] = startMember(m.cfg) })
	}
	wg.Wait()
	for i, m := range c.members {
		if errs[i] == nil {
			errs[i] = m.relay.open()
		}
	}
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// startMember starts one member and waits until it serves.
func startMember(cfg *embed.Config) (*embed.Etcd, error) {
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcdtest: start %s: %w", cfg.Name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcdtest: %s failed while starting: %w", cfg.Name, err)
	case <-time.After(startTimeout):
		e.Server.HardStop()
		e.Close()
		return nil, fmt.Errorf("etcdtest: %s not ready within %v", cfg.Name, startTimeout)
	}
}

// freePorts returns n distinct loopback ports that were free just now.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("etcdtest: pick a free port: %w", err)
		}
		// Held open until all are picked, so none is picked twice.
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Size returns the number of members.
func (c *Cluster) Size() int { return len(c.members) }

// Endpoints returns the client URLs of every member, killed ones included
// (a client moves to a live member by itself).
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.cfg.AdvertiseClientUrls[0].String())
	}
	return eps
}

// Endpoint returns the client URL of member i.
func (c *Cluster) Endpoint(i int) string { return c.members[i].cfg.AdvertiseClientUrls[0].String() }

// NewClient returns a client of every member, with its logger silenced.
// The caller closes it.
func (c *Cluster) NewClient() (*clientv3.Client, error) {
	return NewClient(c.Endpoints()...)
}

// NewClient returns a client of the given endpoints with its logger
// silenced, as tests and examples want it. It does not wait for a
// connection: requests do, until their context ends.
func NewClient(endpoints ...string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
}

// Client returns a client of every member, closed in t.Cleanup.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := c.NewClient()
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Kill stops member i at once: it cuts every client connection to it,
// then stops it without handing its leadership over, keeping its data for
// Restart. Killing a killed member does nothing.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	m := c.members[i]
	e := m.etcd
	m.etcd = nil
	c.mu.Unlock()
	if e != nil {
		m.relay.cut()
		stop(e)
	}
}

// stop stops a member: the raft node first, without the leadership
// transfer of a graceful stop, then its listeners.
func stop(e *embed.Etcd) {
	e.Server.HardStop()
	e.Close()
}

// Restart starts killed member i again on its ports and data and waits
// until it serves. Restarting a running member does nothing.
func (c *Cluster) Restart(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("etcdtest: cluster closed")
	}
	m := c.members[i]
	if m.etcd != nil {
		return nil
	}
	// The member's data directory holds its membership now; the initial
	// cluster settings are ignored on a restart.
	e, err := startMember(m.cfg)
	if err != nil {
		return err
	}
	m.etcd = e
	return m.relay.open()
}

// Close stops every member. It is idempotent.
func (c *Cluster) Close() {
	c.mu.Lock()
	c.closed = true
	var running []*embed.Etcd
	for _, m := range c.members {
		m.relay.cut()
		if m.etcd != nil {
			running = append(running, m.etcd)
			m.etcd = nil
		}
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, e := range running {
		wg.Go(func() { stop(e) })
	}
	wg.Wait()
}
