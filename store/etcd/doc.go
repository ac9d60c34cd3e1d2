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
//	<prefix>m/members/<lease>        one per open Store, under its lease
//	                                 (see # Rate limits across Engines)
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
// etcd takes at most --max-txn-ops operations of each kind in one
// transaction (default 128). Apply deletes a run of consecutive versions
// of one key with one range delete, from the first version's key to the
// last's: with versions numbered in ten fixed digits the range holds
// exactly those records, and the change still compares the key record's
// revision, so it is as safe under concurrency as one delete per record.
// Destroying a key of kms.MaxVersions (100) versions is thus 5 writes,
// not 104, and a change of any number of versions fits. A change that
// still needs more operations than [WithMaxTxnOps] (default 128) fails
// with [ErrChangeTooLarge] before it is sent, and so does one the cluster
// refuses as too large; nothing is written. No change the Engine makes
// comes near it.
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
// black hole), or a cluster that is gone, leaves etcd's watch waiting
// silently; Watch's own check notices it within two [WithWatchCheck]
// intervals (see # Offline window), and gRPC keepalives make the client
// move to another member: set DialKeepAliveTime and DialKeepAliveTimeout
// on the client. A watch whose history was compacted away fails with
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
// Process kills are tested: a child process changing keys through its
// own Engine is killed with SIGKILL at random points, 20 times per run
// (100 with -kill.rounds=100), and every change it acknowledged is on two
// other Engines (TestKillMidChange).
//
// # Offline window
//
// Watch asks the cluster for a progress notification every
// [WithWatchCheck] (default 2 s) and gives up, with store.ErrResync, when
// one goes unanswered for a whole interval: etcd's client waits silently
// for a cluster that is gone, so without the check a replica cut off from
// every member would never learn it. The Engine then reloads, retrying
// while the cluster is unreachable, and from the moment the feed was lost
// it keeps serving from its last state for kms.WithStaleLimit (default
// kms.DefaultStaleLimit, 30 s); past that, token-plane calls fail with
// kms.ErrStale (503) until a reload succeeds, because a cut-off replica
// cannot see the revocations, generator rotations and allow-list edits
// made elsewhere. Trusted calls keep serving from the last state, and
// changes fail while the cluster cannot be reached. kms.Engine.FeedLost
// reports the state, for a readiness probe.
//
// # Rate limits across Engines
//
// Every Store registers under <prefix>m/members/ with a lease
// ([WithMemberTTL], default 5 s, kept alive in the background) and
// watches the registrations; [Store.Members] is their number. The Engine
// divides each key's token-plane rate limit by it: each of N replicas
// admits Rate/N per second with a burst of Burst/N (rounded up, but never
// below min(Burst, 100) so that a full batch is never refused as larger
// than the burst). So:
//
//   - Under even load (a load balancer spreading a key's callers over the
//     replicas) the N replicas together admit the key's rate: measured
//     within 1% with 3 Engines (TestRateLimitClusterWide, fake clock).
//     Bursts add up to N times the burst share: with the batch floor,
//     more than the key's burst when Burst/N < 100 (default limit
//     300/300: from 4 replicas on).
//   - Under uneven load the shares are static: a replica taking more than
//     1/N of a key's traffic refuses its excess with ErrRateLimited while
//     the others leave theirs unused, so the cluster admits less than the
//     key's limit (all of a key's traffic on one replica: 1/N of it).
//     Spread each key's callers evenly, or give hot keys a higher limit.
//   - A replica that opens counts at once for the others (the watch brings
//     its registration within milliseconds), and starts with a full
//     burst share of its own. One that closes its Store revokes its lease
//     and stops counting at once. One whose process dies counts until its
//     lease expires, up to WithMemberTTL later (1.3 s measured with a 1 s
//     TTL): meanwhile the others enforce smaller shares than they could.
//   - While the cluster cannot be reached, a Store keeps its last count;
//     a Store whose lease expired registers again when the cluster is
//     back.
//   - A process that opens a Store but serves no token-plane calls (an
//     administration tool) should pass [WithoutMembership], or it shrinks
//     every replica's share while it runs.
//
// # PKCS#11 across processes
//
// The memory backend works across processes that share the root key: the
// sealed material lives in etcd. The PKCS#11 backend stores only
// references to token objects, so every process must reach the same
// token: in production a network HSM (every replica's module talks to the
// same HSM partition). TestSoftHSMAcrossProcesses proves the mechanics
// with SoftHSM2 processes on one machine sharing one token directory
// (SOFTHSM2_CONF naming the same directories.tokendir): a key created in
// process A encrypts there and decrypts in process B, which was already
// running, and a version rotated in B serves A. SoftHSM2 with a shared
// directory is for tests; it does not replicate across machines.
//
// # Limits of etcd
//
// A change is one transaction of at most etcd's
// --max-txn-ops operations of each kind (see # Revisions and
// transactions) and --max-request-bytes (default 1.5 MiB). A change that
// only deletes absent records writes nothing and returns the current
// revision. There is no schema-version record yet.
package etcdstore
