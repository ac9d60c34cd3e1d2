package storetest

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/pocketkms/kms/store"
)

// Memory is a store.Store shared in memory by any number of handles, each
// of which also implements store.Watcher: several Engines in one process
// opened on handles of one Memory behave like processes sharing a
// distributed store. It keeps every value framed as the schema says
// (store.Encode), checks expectations like a compare-and-swap store, and
// keeps the history of commits for watchers until Compact drops it. It is
// for tests: nothing is persisted.
type Memory struct {
	mu        sync.Mutex
	rev       int64
	data      map[string]value
	history   []store.Commit // commits after compacted, in order
	compacted int64          // watchers asking for revisions below it must resync
	changed   chan struct{}  // closed and replaced on every commit
}

type value struct {
	raw []byte
	rev int64
}

// NewMemory returns an empty shared store.
func NewMemory() *Memory {
	return &Memory{data: map[string]value{}, changed: make(chan struct{})}
}

// Open returns a new handle on m. Closing a handle closes only it.
func (m *Memory) Open() *MemoryHandle { return &MemoryHandle{m: m} }

// Compact drops the commit history: a Watch asking for any revision
// before now fails with store.ErrResync, as etcd does after compaction.
func (m *Memory) Compact() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.history, m.compacted = nil, m.rev
	close(m.changed)
	m.changed = make(chan struct{})
}

// Rev returns the store's current revision.
func (m *Memory) Rev() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rev
}

// MemoryHandle is one handle on a Memory; it implements store.Store and
// store.Watcher.
type MemoryHandle struct {
	m      *Memory
	mu     sync.Mutex
	closed bool
}

var (
	_ store.Store   = (*MemoryHandle)(nil)
	_ store.Watcher = (*MemoryHandle)(nil)
)

func (h *MemoryHandle) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

// Load implements store.Store.
func (h *MemoryHandle) Load(ctx context.Context) (*store.Contents, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if h.isClosed() {
		return nil, store.ErrClosed
	}
	m := h.m
	m.mu.Lock()
	defer m.mu.Unlock()
	var a store.Assembler
	keys := make([]string, 0, len(m.data))
	for k := range m.data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := m.data[k]
		r, err := store.Decode(k, v.raw)
		if err != nil {
			return nil, fmt.Errorf("storetest: load %s: %w", k, err)
		}
		a.Add(r, v.rev)
	}
	return a.Contents(m.rev)
}

// Apply implements store.Store.
func (h *MemoryHandle) Apply(ctx context.Context, c *store.Change) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if h.isClosed() {
		return 0, store.ErrClosed
	}
	type put struct {
		key string
		raw []byte
	}
	puts := make([]put, 0, len(c.Puts))
	for _, r := range c.Puts {
		k, raw, err := store.Encode(r)
		if err != nil {
			return 0, err
		}
		puts = append(puts, put{k, raw})
	}
	m := h.m
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, want := range c.Expect {
		if m.data[k].rev != want {
			return 0, &store.ConflictError{Key: k}
		}
	}
	if len(c.Puts) == 0 && len(c.Deletes) == 0 {
		// Expectations only: nothing is committed, no revision is used.
		return m.rev, nil
	}
	m.rev++
	commit := store.Commit{Rev: m.rev}
	for _, k := range c.Deletes {
		if _, ok := m.data[k]; ok {
			delete(m.data, k)
			commit.Deletes = append(commit.Deletes, k)
		}
	}
	for _, p := range puts {
		m.data[p.key] = value{raw: p.raw, rev: m.rev}
		r, err := store.Decode(p.key, p.raw)
		if err != nil { // cannot happen: Encode made it
			return 0, err
		}
		commit.Puts = append(commit.Puts, r)
	}
	m.history = append(m.history, commit)
	close(m.changed)
	m.changed = make(chan struct{})
	return m.rev, nil
}

// Watch implements store.Watcher.
func (h *MemoryHandle) Watch(ctx context.Context, after int64, fn func(store.Commit)) error {
	for {
		if h.isClosed() {
			return store.ErrClosed
		}
		m := h.m
		m.mu.Lock()
		if after < m.compacted {
			m.mu.Unlock()
			return fmt.Errorf("storetest: revision %d compacted: %w", after, store.ErrResync)
		}
		var due []store.Commit
		for _, c := range m.history {
			if c.Rev > after {
				due = append(due, c)
			}
		}
		wait := m.changed
		m.mu.Unlock()
		for _, c := range due {
			fn(c)
			after = c.Rev
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wait:
		}
	}
}

// Close implements store.Store; it closes this handle only.
func (h *MemoryHandle) Close() error {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	return nil
}
