package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/ratelimit"
)

func init() {
	register(group("acl", "IP allow-lists of the token API",
		command{"show", "show a key's allow-list", keyCmd("acl show", "Show a key's IP allow-list for token API callers.", (*kms.Engine).GetKeyACL, emitACL)},
		command{"set", "replace a key's allow-list entries", aclSet},
		command{"enable", "enforce the allow-list", aclEnable(true)},
		command{"disable", "stop enforcing the allow-list", aclEnable(false)},
	))
	register(group("limits", "token API rate limits",
		command{"show", "show a key's rate limit", keyCmd("limits show", "Show the token API rate limit in force for a key.\n"+
			"A key without its own limit shows the library's default; a server started with\n"+
			"another default applies that instead.", (*kms.Engine).GetKeyRateLimit, emitLimit)},
		command{"set", "set (or clear) a key's rate limit", limitsSet},
	))
}

type aclJSON struct {
	Tag     string   `json:"keyTag"`
	Enabled bool     `json:"enabled"`
	Entries []string `json:"entries"`
}

func emitACL(s *stdio, o *dataOpts, tag string, a *kms.ACL) error {
	j := aclJSON{Tag: tag, Enabled: a.Enabled, Entries: a.Entries}
	if j.Entries == nil {
		j.Entries = []string{}
	}
	state := "disabled (anyone may use the key's tokens)"
	if a.Enabled {
		state = "enabled (only the entries may use the key's tokens)"
	}
	t := fields("key", tag, "allow-list", state, "entries", fmt.Sprint(len(a.Entries)))
	for _, e := range a.Entries {
		t.rows = append(t.rows, []string{"", e})
	}
	return s.emit(o, j, t)
}

func aclSet(ctx context.Context, args []string, s *stdio) error {
	var o dataOpts
	fs := newFlags("acl set", "KEY [ADDRESS-OR-CIDR...]",
		"Make the entries the key's allow-list: entries not given are removed, new ones\n"+
			"added (none: an empty list, which denies everyone while the list is enabled).\n"+
			"Whether the list is enforced is acl enable/disable.", s, &o)
	pos, err := parseArgs(fs, args, &o, 1, -1)
	if err != nil {
		return err
	}
	want := pos[1:]
	return o.withKey(ctx, pos[0], func(e *kms.Engine, tag string) error {
		a, err := e.GetKeyACL(ctx, tag)
		if err != nil {
			return err
		}
		var add, remove []string
		for _, w := range want {
			if !slices.Contains(a.Entries, w) && !slices.Contains(add, w) {
				add = append(add, w)
			}
		}
		for _, h := range a.Entries {
			if !slices.Contains(want, h) {
				remove = append(remove, h)
			}
		}
		// Add first: an entry that is refused leaves the list as it was.
		if len(add) > 0 {
			if a, err = e.AddAllowedIPs(ctx, tag, add); err != nil {
				return err
			}
		}
		if len(remove) > 0 {
			if a, err = e.RemoveAllowedIPs(ctx, tag, remove); err != nil {
				return err
			}
		}
		return emitACL(s, &o, tag, a)
	})
}

func aclEnable(on bool) func(context.Context, []string, *stdio) error {
	name := map[bool]string{true: "enable", false: "disable"}[on]
	return keyCmd("acl "+name, strings.ToUpper(name[:1])+name[1:]+" a key's IP allow-list.",
		func(e *kms.Engine, ctx context.Context, tag string) (*kms.ACL, error) {
			return e.SetKeyACLEnabled(ctx, tag, on)
		}, emitACL)
}

type limitJSON struct {
	Tag       string  `json:"keyTag"`
	Unlimited bool    `json:"unlimited"`
	Rate      float64 `json:"perSecond"`
	Burst     int     `json:"burst"`
	Own       bool    `json:"own"`
}

func emitLimit(s *stdio, o *dataOpts, tag string, l *kms.KeyRateLimit) error {
	j := limitJSON{Tag: tag, Unlimited: l.Unlimited, Rate: l.Rate, Burst: l.Burst, Own: l.Own}
	from := "the server's default"
	if l.Own {
		from = "the key's own"
	}
	return s.emit(o, j, fields("key", tag, "rate limit", l.Limit.String(), "set by", from))
}

func limitsSet(ctx context.Context, args []string, s *stdio) error {
	var o dataOpts
	var l ratelimit.Limit
	var clearIt bool
	fs := newFlags("limits set", "KEY", "Set a key's own token API rate limit: -rate (with -burst), -unlimited, or\n-clear to go back to the server's default.", s, &o)
	fs.Float64Var(&l.Rate, "rate", 0, "operations per second")
	fs.IntVar(&l.Burst, "burst", 0, "bucket size (default one second's worth)")
	fs.BoolVar(&l.Unlimited, "unlimited", false, "no limit")
	fs.BoolVar(&clearIt, "clear", false, "remove the key's own limit")
	pos, err := parseArgs(fs, args, &o, 1, 1)
	if err != nil {
		return err
	}
	n := 0
	for _, set := range []bool{l.Rate != 0, l.Unlimited, clearIt} {
		if set {
			n++
		}
	}
	if n != 1 {
		return usagef("limits set: give exactly one of -rate, -unlimited and -clear")
	}
	if !clearIt {
		if err := l.Validate(); err != nil {
			return usagef("limits set: %v", err)
		}
	} else if l.Burst != 0 {
		return usagef("limits set: -burst goes with -rate")
	}
	return o.withKey(ctx, pos[0], func(e *kms.Engine, tag string) error {
		var err error
		if clearIt {
			err = e.ClearKeyRateLimit(ctx, tag)
		} else {
			err = e.SetKeyRateLimit(ctx, tag, l)
		}
		if err != nil {
			return err
		}
		got, err := e.GetKeyRateLimit(ctx, tag)
		if err != nil {
			return err
		}
		return emitLimit(s, &o, tag, got)
	})
}
