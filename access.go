package kms

import (
	"context"
	"slices"
	"time"

	"github.com/pocketkms/kms/acl"
	"github.com/pocketkms/kms/ratelimit"
)

// ACL is a key's IP allow-list for token-plane callers.
type ACL struct {
	// Enabled: when true only listed addresses may use the key's tokens
	// (an empty list denies everyone); when false anyone may.
	Enabled bool
	// Entries as entered, sorted by string.
	Entries []string
}

func aclInfo(l acl.List) *ACL { return &ACL{Enabled: l.Enabled(), Entries: l.Entries()} }

// GetKeyACL returns a key's IP allow-list.
func (e *Engine) GetKeyACL(ctx context.Context, keyTag string) (*ACL, error) {
	return readKey(e, ctx, "get key acl", keyTag, func(op string, s *keySnap) (*ACL, error) {
		return aclInfo(s.rare().acl), nil
	})
}

// AllowedIPPage is one page of a key's allow-list.
type AllowedIPPage struct {
	// Entries as entered, sorted by string.
	Entries    []string
	PageNo     int
	PageSize   int
	TotalCount int
}

// ListAllowedIPs returns a page of a key's allow-list entries, sorted by
// string: pageNo from 0, pageSize 1..200 (0 means 20).
func (e *Engine) ListAllowedIPs(ctx context.Context, keyTag string, pageNo, pageSize int) (*AllowedIPPage, error) {
	return readKey(e, ctx, "list allowed ips", keyTag, func(op string, s *keySnap) (*AllowedIPPage, error) {
		if pageSize == 0 {
			pageSize = acl.DefaultPageSize
		}
		page, err := s.rare().acl.Page(pageNo, pageSize)
		if err != nil {
			return nil, wrapErr(op, s.tag, ErrInvalidArgument, err)
		}
		return &AllowedIPPage{Entries: page, PageNo: pageNo, PageSize: pageSize, TotalCount: s.rare().acl.Len()}, nil
	})
}

// SetKeyACLEnabled turns an ENABLED key's IP allow-list on or off. On with
// an empty list denies every token caller. The change applies to the very
// next token-plane call, tokens issued before included.
func (e *Engine) SetKeyACLEnabled(ctx context.Context, keyTag string, enabled bool) (*ACL, error) {
	return e.changeACL(ctx, "set key acl", keyTag, func(l acl.List) (acl.List, error) { return l.WithEnabled(enabled), nil })
}

// AddAllowedIPs adds 1..100 entries to an ENABLED key's allow-list: IPv4
// addresses, CIDRs /0../32, addresses with '*' octets, and IPv6 addresses
// and CIDRs in canonical form, stored exactly as entered (see package acl;
// at most acl.MaxEntries per key). Entries already listed are no-ops; any
// bad entry fails the whole call, naming every bad entry.
func (e *Engine) AddAllowedIPs(ctx context.Context, keyTag string, entries []string) (*ACL, error) {
	return e.changeACL(ctx, "add allowed ips", keyTag, func(l acl.List) (acl.List, error) { return l.Add(entries) })
}

// RemoveAllowedIPs removes 1..100 entries, matched exactly as entered. If
// any is not listed nothing is removed and the error names every missing
// one; on an empty list it succeeds, as on NAVER.
func (e *Engine) RemoveAllowedIPs(ctx context.Context, keyTag string, entries []string) (*ACL, error) {
	return e.changeACL(ctx, "remove allowed ips", keyTag, func(l acl.List) (acl.List, error) { return l.Remove(entries) })
}

func (e *Engine) changeACL(ctx context.Context, op, keyTag string, fn func(acl.List) (acl.List, error)) (*ACL, error) {
	return mutate(e, ctx, op, keyTag, func(s *keySnap, _ time.Time) (edit, *ACL, error) {
		if !s.enabled() {
			return edit{}, nil, newErr(op, s.tag, ErrKeyNotEnabled, "")
		}
		cur := s.rare().acl
		l, err := fn(cur)
		if err != nil {
			return edit{}, nil, wrapErr(op, s.tag, ErrInvalidArgument, err)
		}
		if l.Enabled() == cur.Enabled() && slices.Equal(l.Entries(), cur.Entries()) {
			return edit{}, aclInfo(cur), nil
		}
		ns := s.clone()
		ns.own().acl, ns.aclM = l, l.Compile()
		ed := edit{next: ns}
		ed.change.Put(aclRecord(s.tag, l))
		return ed, aclInfo(l), nil
	})
}

// SetKeyRateLimit gives a key its own token-plane rate limit, persisted,
// in place of the Engine's (WithRateLimit); ratelimit.Limit{Unlimited:
// true} switches limiting off for the key. The limit lives in the key's
// snapshot and is handed to the limiter on every call, so it takes effect
// on the next call; a change keeps the tokens the key's bucket holds, so
// it never grants a fresh burst.
func (e *Engine) SetKeyRateLimit(ctx context.Context, keyTag string, l ratelimit.Limit) error {
	const op = "set key rate limit"
	n, err := l.Normalize()
	if err != nil {
		return wrapErr(op, "", ErrInvalidArgument, err)
	}
	return e.putRateLimit(ctx, op, keyTag, &n)
}

// ClearKeyRateLimit returns a key to the Engine's rate limit.
func (e *Engine) ClearKeyRateLimit(ctx context.Context, keyTag string) error {
	return e.putRateLimit(ctx, "clear key rate limit", keyTag, nil)
}

func (e *Engine) putRateLimit(ctx context.Context, op, keyTag string, l *ratelimit.Limit) error {
	_, err := mutate(e, ctx, op, keyTag, func(s *keySnap, _ time.Time) (edit, struct{}, error) {
		ns := s.clone()
		ns.limit = l
		return edit{next: ns}, struct{}{}, nil
	})
	return err
}

// limitOf is the rate limit in force for a key.
func (e *Engine) limitOf(s *keySnap) ratelimit.Limit {
	if s.limit != nil {
		return *s.limit
	}
	return e.limit
}

// KeyRateLimit is the rate limit in force for a key.
type KeyRateLimit struct {
	ratelimit.Limit
	// Own is true when the key has its own limit (SetKeyRateLimit) rather
	// than the Engine's.
	Own bool
}

// GetKeyRateLimit returns the rate limit in force for a key.
func (e *Engine) GetKeyRateLimit(ctx context.Context, keyTag string) (*KeyRateLimit, error) {
	return readKey(e, ctx, "get key rate limit", keyTag, func(op string, s *keySnap) (*KeyRateLimit, error) {
		return &KeyRateLimit{Limit: e.limitOf(s), Own: s.limit != nil}, nil
	})
}
