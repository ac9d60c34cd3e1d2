// Package etcdstore keeps a pocketkms Engine's state in etcd, so that
// several processes (the replicas of one application, each embedding an
// Engine) share one set of keys: what one replica changes holds on every
// other within milliseconds.
//
// Its import path is github.com/pocketkms/kms/store/etcd; the package is
// named etcdstore so that it reads apart from etcd's own packages. The root
// package never imports it: a program that uses only Badger does not link
// etcd.
//
// Start with [New], given a client of your cluster and a key prefix, and
// hand the Store to kms.WithStore:
//
//	cli, err := clientv3.New(clientv3.Config{
//		Endpoints:            []string{"https://etcd-1:2379", "https://etcd-2:2379", "https://etcd-3:2379"},
//		DialTimeout:          5 * time.Second,
//		DialKeepAliveTime:    10 * time.Second, // notice a hung member (see # Concurrency)
//		DialKeepAliveTimeout: 5 * time.Second,
//		TLS:                  tlsConfig,
//	})
//	defer cli.Close() // after e.Close: the Store does not own the client
//	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
//	defer cancel()
//	st, err := etcdstore.New(ctx, cli, "pocketkms/orders/")
//	e, err := kms.New(ctx, be, kms.WithStore(st)) // e.Close closes st
//
// Every replica uses the same prefix and a backend that opens the same key
// material: the memory backend under the same root key (the sealed
// material lives in etcd with the records). Engines under different
// prefixes share nothing, so several sets of keys can live in one cluster.
//
// # Layout under the prefix
//
// One etcd key per record of package store's schema, the prefix in front:
//
//	<prefix>k/<keyTag>               the key record
//	<prefix>v/<keyTag>/<%010d ver>   one per version (with the backend's handle)
//	<prefix>g/<keyTag>               the token generator
//	<prefix>a/<keyTag>               the IP allow-list
//	<prefix>n/<lower-case name>      the name index: the tag owning a name
//	<prefix>m/leader/<lease>         [Lead]'s candidates (the store's own
//	                                 bookkeeping: Load and Watch pass over m/)
//
// Values are framed by store.Encode, the same framing Badger uses: a
// codec version, the payload (binary for key and version records and name
// entries, JSON for the rest; records written as JSON by builds before
// the binary codec are still read, but those builds cannot read binary
// ones), and a CRC-32C over the record key and the frame.
// Every value is checked by store.Decode on every Load and every watch
// event. Anything else under the prefix is another program's data: Load
// and Watch fail with store.ErrCorrupt naming the key; nothing is ever
// skipped. A prefix must end in '/'; choose prefixes that are not prefixes
// of one another ("kms/" and "kms/a/" overlap; "kms/a/" and "kms/b/" do
// not).
//
// # Revisions and transactions
//
// A record's revision is its etcd ModRevision, and a Load's revision is
// the cluster revision it read at: Load is one ranged Get, in pages
// ([WithPageSize]) all read at the first page's revision, so it is one
// consistent snapshot. Apply is one etcd transaction:
//
//	If(ModRevision(prefix+key) == rev, or CreateRevision == 0 for "absent", for each expectation)
//	Then(the puts and deletes)
//	Else(a keys-only Get of each expected key)
//
// When a compare fails, the Else reads name the record whose revision
// moved, in a *store.ConflictError, without a second round trip. Apply
// returns the transaction's revision. Watch follows the prefix from the
// revision asked for; the events of one revision (one transaction) make
// one store.Commit.
//
// # Concurrency
//
// A Store is safe for concurrent use. The Engine's hot path never calls
// etcd: it serves from snapshots, which each Engine keeps current from its
// watch. On a 3-member loopback cluster a change reaches the other Engines
// about 0.1 ms (p50) to a few ms (p99) after the writer's call returns
// (TestEnginesShareChanges logs the figures of each run). Until then a
// replica serves its previous state; changes are not linearizable across
// Engines:
//
//   - A key created on one Engine is ErrKeyNotFound on another for that
//     moment.
//   - Every change that writes compares the revisions it read, so a change
//     decided on a stale snapshot conflicts, and the Engine decides it
//     again once its feed brings the winning change; two changes to one
//     key never lose an update, and of two creates of one name exactly one
//     wins.
//   - A change that would change nothing on the Engine's snapshot (disable
//     a disabled key, activate an active generator, set the allow-list
//     switch to its current value) is acknowledged without writing. On a
//     replica that has not yet seen another replica's opposite change it
//     returns success and leaves the other change in force.
//
// The watch requires a leader: a member cut off from its quorum cancels
// it, and the Engine reloads through a member that has one. A member that
// hangs without closing its connections (a stopped process, a network
// black hole) is noticed only by gRPC keepalives: set DialKeepAliveTime
// and DialKeepAliveTimeout on the client, or a watch on such a member
// waits silently. A watch whose history was compacted away fails with
// store.ErrResync, and the Engine reloads everything.
//
// # Errors and faults
//
// Requests use the caller's context, bounded by [WithTimeout] when it has
// no earlier deadline (DefaultTimeout); give New and kms.New a deadline.
// A cluster that does not answer in time fails with [ErrUnavailable]
// (wrapping context.DeadlineExceeded where a deadline passed). An Apply
// that fails after its request may have reached the cluster (a lost
// connection, a deadline, a leader change) also matches
// store.ErrUncertain: the change may have landed, so the Engine keeps any
// key material it made for it, and the feed or the next Load tells the
// truth. An Apply the cluster refused outright (too large, too many
// operations, no space, not permitted) wrote nothing.
//
// A record that fails its frame fails Load, and ends Watch, with
// store.ErrCorrupt. An Engine whose feed hits one keeps serving its last
// state and retries the reload (logging each failure) until the record is
// repaired; a new Engine refuses to open.
//
// # Security
//
// etcd holds what Badger would: the backend's handles (for the memory
// backend, material sealed under the root key), names, memos, public
// keys, allow-lists. Nothing secret is written unwrapped. Still, whoever
// can write under the prefix can delete or disable keys or change
// allow-lists: use TLS and etcd authentication with a role limited to the
// prefix. The frame's checksum catches damage, not an attacker (it is not
// a MAC).
//
// # Limitations
//
// Background work: by default every Engine runs Maintain (auto-rotation,
// destruction of due keys) every minute. Revision compares keep two
// replicas from rotating one key twice or committing one destruction
// twice, but run it once anyway: open every Engine with
// kms.WithMaintenanceInterval(0) and run Maintain under [Lead], which
// elects one replica and fences its commits. What is not fenced is the
// backend: a key's material is destroyed before its records are deleted,
// and due dates are judged by the leader's clock, so keep the replicas'
// clocks in sync; a deletion cancelled on a replica whose clock is behind
// the leader's, in the moment the leader finds the key due, can leave the
// key with its material destroyed (for the memory backend, whose material
// is the sealed handle in the records, destroying it changes nothing).
//
// Not done yet (issue #16):
//
//   - Rate limits are per Engine: N replicas admit up to N times a key's
//     limit in total.
//   - An Engine cut off from etcd serves its last state for as long as it
//     lasts, cipher and token-plane calls alike, with no bound and no
//     typed refusal; only changes fail.
//   - The PKCS#11 backend across processes (a shared token) is not proven.
//   - No process-kill tests and no benchmarks of an etcd-backed Engine yet.
//
// Limits of etcd: a change is one transaction of at most etcd's
// --max-txn-ops operations (default 128; destroying a key of 100 versions
// takes 104) and --max-request-bytes (default 1.5 MiB). A change that only
// deletes absent records writes nothing and returns the current revision.
// There is no schema-version record yet.
package etcdstore
