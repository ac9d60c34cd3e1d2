package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/pocketkms/kms"
)

func init() {
	register(group("keys", "create, list, show and change keys",
		command{"create", "create a key", keysCreate},
		command{"list", "list the keys", keysList},
		command{"show", "show a key", keyAction("show", "Show a key.", (*kms.Engine).GetKey)},
		command{"rotate", "make a new current version", keyCmd("keys rotate", "Rotate a key: a new version becomes current; older versions still decrypt.\nKEY is a key tag or a key name.", (*kms.Engine).RotateKey, emitVersion)},
		command{"enable", "enable a disabled key", keyAction("enable", "Enable a DISABLED key.", (*kms.Engine).EnableKey)},
		command{"disable", "disable a key (it serves nothing until enabled)", keyAction("disable", "Disable an ENABLED key: it serves nothing until enabled again.", (*kms.Engine).DisableKey)},
		command{"delete", "schedule a key's destruction in 72 h", keyAction("delete",
			"Schedule a key's destruction 72 hours from now (NAVER's deletion request): the key\n"+
				"becomes REVOKED and serves nothing; cancel-deletion undoes it until then. The key\n"+
				"is destroyed by the first maintenance run after that time (a running server).", (*kms.Engine).RequestKeyDeletion)},
		command{"cancel-deletion", "cancel a scheduled destruction", keyAction("cancel-deletion", "Cancel a key's scheduled destruction: it becomes DISABLED.", (*kms.Engine).CancelKeyDeletion)},
		command{"min-decryption-version", "set the lowest version that decrypts", keysMinDecrypt},
	))
	register(group("versions", "list, show, enable and disable key versions",
		command{"list", "list a key's versions", versionsList},
		command{"show", "show one version", versionCmd("show", "Show one version of a key. KEY is a key tag or a key name.", (*kms.Engine).GetKeyVersion)},
		command{"enable", "enable a disabled version", versionAction("enable", "Enable a DISABLED version: it decrypts again.", (*kms.Engine).EnableKeyVersion)},
		command{"disable", "disable a version (not the current one)", versionAction("disable", "Disable a version: its ciphertexts no longer decrypt until it is enabled again.", (*kms.Engine).DisableKeyVersion)},
	))
}

// resolveKey accepts a key tag or a key name (names are unique
// case-insensitively) and returns the tag.
func resolveKey(ctx context.Context, e *kms.Engine, ref string) (string, error) {
	if isTag(ref) {
		k, err := e.GetKey(ctx, ref)
		if err == nil {
			return k.Tag, nil
		}
		if !errors.Is(err, kms.ErrKeyNotFound) {
			return "", err
		}
	}
	for page := 0; ; page++ {
		p, lerr := e.ListKeys(ctx, kms.ListKeysRequest{PageNo: page, PageSize: 200})
		if lerr != nil {
			return "", lerr
		}
		for _, k := range p.Keys {
			if strings.EqualFold(k.Name, ref) {
				return k.Tag, nil
			}
		}
		if (page+1)*p.PageSize >= p.TotalCount || len(p.Keys) == 0 {
			return "", fmt.Errorf("no key with tag or name %q: %w", ref, kms.ErrKeyNotFound)
		}
	}
}

// isTag reports whether s looks like a key tag: 64 hex digits.
func isTag(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range strings.ToLower(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// keyJSON is a key in -o json output.
type keyJSON struct {
	Tag                  string       `json:"keyTag"`
	Name                 string       `json:"name"`
	Type                 string       `json:"type"`
	Memo                 string       `json:"memo"`
	Convergent           bool         `json:"convergent"`
	State                string       `json:"state"`
	CurrentVersion       uint32       `json:"currentVersion"`
	MinDecryptionVersion uint32       `json:"minDecryptionVersion"`
	CreatedAt            string       `json:"createdAt"`
	StateChangedAt       string       `json:"stateChangedAt"`
	DestroyAt            string       `json:"destroyAt,omitempty"`
	AutoRotation         rotationJSON `json:"autoRotation"`
}

type rotationJSON struct {
	Enabled        bool   `json:"enabled"`
	PeriodDays     int    `json:"periodDays"`
	NextRotationAt string `json:"nextRotationAt,omitempty"`
}

func keyOut(k *kms.Key) keyJSON {
	return keyJSON{Tag: k.Tag, Name: k.Name, Type: string(k.Type), Memo: k.Memo, Convergent: k.Convergent,
		State: string(k.State), CurrentVersion: k.CurrentVersion, MinDecryptionVersion: k.MinDecryptionVersion,
		CreatedAt: stamp(k.CreatedAt), StateChangedAt: stamp(k.StateChangedAt), DestroyAt: stamp(k.DestroyAt),
		AutoRotation: rotationJSON{Enabled: k.AutoRotation.Enabled, PeriodDays: k.AutoRotation.PeriodDays,
			NextRotationAt: stamp(k.AutoRotation.NextRotationAt)}}
}

func keyTable(k *kms.Key) table {
	rot := "off"
	if k.AutoRotation.Enabled {
		rot = fmt.Sprintf("every %d days, next %s", k.AutoRotation.PeriodDays, stamp(k.AutoRotation.NextRotationAt))
	}
	minDec := "all versions"
	if k.MinDecryptionVersion > 0 {
		minDec = strconv.FormatUint(uint64(k.MinDecryptionVersion), 10)
	}
	return fields(
		"tag", k.Tag, "name", k.Name, "type", string(k.Type), "memo", dash(k.Memo),
		"convergent", strconv.FormatBool(k.Convergent), "state", string(k.State),
		"current version", strconv.FormatUint(uint64(k.CurrentVersion), 10),
		"min decryption version", minDec, "auto-rotation", rot,
		"created", stamp(k.CreatedAt), "state changed", stamp(k.StateChangedAt),
		"destroy at", dash(stamp(k.DestroyAt)))
}

func keysCreate(ctx context.Context, args []string, s *stdio) error {
	var o dataOpts
	var req kms.CreateKeyRequest
	var typ string
	fs := newFlags("keys create", "", "Create a key and print it.", s, &o)
	fs.StringVar(&req.Name, "name", "", "key name: 3..15 letters, digits, '-' and '_', starting with a letter (required)")
	fs.StringVar(&typ, "type", "AES256", "key type: AES256, RSA2048 or ECDSA")
	fs.StringVar(&req.Memo, "memo", "", "memo, at most 100 characters")
	fs.BoolVar(&req.Convergent, "convergent", false, "AES256 only: the same plaintext and context always encrypt alike")
	fs.BoolVar(&req.AutoRotation, "auto-rotation", false, "rotate automatically (while a server runs)")
	fs.IntVar(&req.RotationPeriodDays, "rotation-days", 0, "auto-rotation period, 1..730 days (default 90)")
	if _, err := parseArgs(fs, args, &o, 0, 0); err != nil {
		return err
	}
	if req.Name == "" {
		return usagef("keys create: -name is required")
	}
	req.Type = kms.KeyType(strings.ToUpper(typ))
	if !req.Type.Valid() {
		return usagef("keys create: -type must be AES256, RSA2048 or ECDSA, not %q", typ)
	}
	return o.withEngine(ctx, func(e *kms.Engine) error {
		k, err := e.CreateKey(ctx, req)
		if err != nil {
			return err
		}
		return s.emit(&o, keyOut(k), keyTable(k))
	})
}

func keysList(ctx context.Context, args []string, s *stdio) error {
	var o dataOpts
	fs := newFlags("keys list", "", "List every key, newest first.", s, &o)
	if _, err := parseArgs(fs, args, &o, 0, 0); err != nil {
		return err
	}
	return o.withEngine(ctx, func(e *kms.Engine) error {
		out := []keyJSON{}
		t := table{header: []string{"TAG", "NAME", "TYPE", "STATE", "VERSION", "CREATED"}}
		for page := 0; ; page++ {
			p, err := e.ListKeys(ctx, kms.ListKeysRequest{PageNo: page, PageSize: 200})
			if err != nil {
				return err
			}
			for i := range p.Keys {
				k := &p.Keys[i]
				out = append(out, keyOut(k))
				t.rows = append(t.rows, []string{k.Tag, k.Name, string(k.Type), string(k.State),
					strconv.FormatUint(uint64(k.CurrentVersion), 10), stamp(k.CreatedAt)})
			}
			if len(p.Keys) == 0 || (page+1)*p.PageSize >= p.TotalCount {
				break
			}
		}
		return s.emit(&o, out, t)
	})
}

// keyAction is a command that takes one key and calls f on it.
func keyAction(name, about string, f func(*kms.Engine, context.Context, string) (*kms.Key, error)) func(context.Context, []string, *stdio) error {
	return keyCmd("keys "+name, about+"\nKEY is a key tag or a key name.", f, emitKey)
}

// emitKey writes a key (keyCmd's out).
func emitKey(s *stdio, o *dataOpts, _ string, k *kms.Key) error {
	return s.emit(o, keyOut(k), keyTable(k))
}

func keysMinDecrypt(ctx context.Context, args []string, s *stdio) error {
	var o dataOpts
	fs := newFlags("keys min-decryption-version", "KEY VERSION",
		"Set the lowest version of KEY that still decrypts and re-encrypts (0: every version).\n"+
			"Raise it after `pocketkms reencrypt` moved the ciphertexts to the current version.", s, &o)
	pos, err := parseArgs(fs, args, &o, 2, 2)
	if err != nil {
		return err
	}
	v, err := strconv.ParseUint(pos[1], 10, 32)
	if err != nil {
		return usagef("keys min-decryption-version: VERSION must be a number, not %q", pos[1])
	}
	return o.withKey(ctx, pos[0], func(e *kms.Engine, tag string) error {
		k, err := e.SetKeyMinDecryptionVersion(ctx, tag, uint32(v))
		if err != nil {
			return err
		}
		return emitKey(s, &o, tag, k)
	})
}

// versionJSON is a key version in -o json output.
type versionJSON struct {
	Tag            string `json:"keyTag"`
	Version        uint32 `json:"version"`
	State          string `json:"state"`
	Current        bool   `json:"current"`
	CreatedAt      string `json:"createdAt"`
	StateChangedAt string `json:"stateChangedAt"`
}

func versionOut(tag string, v *kms.KeyVersion) versionJSON {
	return versionJSON{Tag: tag, Version: v.Version, State: string(v.State), Current: v.Current,
		CreatedAt: stamp(v.CreatedAt), StateChangedAt: stamp(v.StateChangedAt)}
}

func versionTable(tag string, v *kms.KeyVersion) table {
	return fields("key", tag, "version", strconv.FormatUint(uint64(v.Version), 10), "state", string(v.State),
		"current", strconv.FormatBool(v.Current), "created", stamp(v.CreatedAt), "state changed", stamp(v.StateChangedAt))
}

// emitVersion writes a version of the key tag (keyCmd's out).
func emitVersion(s *stdio, o *dataOpts, tag string, v *kms.KeyVersion) error {
	return s.emit(o, versionOut(tag, v), versionTable(tag, v))
}

func versionsList(ctx context.Context, args []string, s *stdio) error {
	var o dataOpts
	fs := newFlags("versions list", "KEY", "List a key's versions, oldest first. KEY is a key tag or a key name.", s, &o)
	pos, err := parseArgs(fs, args, &o, 1, 1)
	if err != nil {
		return err
	}
	return o.withKey(ctx, pos[0], func(e *kms.Engine, tag string) error {
		k, err := e.GetKey(ctx, tag)
		if err != nil {
			return err
		}
		vs, err := e.ListKeyVersions(ctx, tag)
		if err != nil {
			return err
		}
		out := []versionJSON{}
		t := table{header: []string{"VERSION", "STATE", "CURRENT", "DECRYPTS", "CREATED", "STATE CHANGED"}}
		for i := range vs {
			v := &vs[i]
			out = append(out, versionOut(tag, v))
			decrypts := v.State == kms.VersionEnabled && v.Version >= k.MinDecryptionVersion
			t.rows = append(t.rows, []string{strconv.FormatUint(uint64(v.Version), 10), string(v.State),
				yes(v.Current), yes(decrypts), stamp(v.CreatedAt), stamp(v.StateChangedAt)})
		}
		return s.emit(&o, out, t)
	})
}

// versionAction is a command that takes a key and a version and calls f.
func versionAction(name, about string, f func(*kms.Engine, context.Context, string, uint32) (*kms.KeyVersion, error)) func(context.Context, []string, *stdio) error {
	return versionCmd(name, about+"\nKEY is a key tag or a key name.", f)
}

// versionCmd is "pocketkms versions <name> [flags] KEY VERSION": it calls
// f on the version and writes the version f returns.
func versionCmd(name, about string, f func(*kms.Engine, context.Context, string, uint32) (*kms.KeyVersion, error)) func(context.Context, []string, *stdio) error {
	return func(ctx context.Context, args []string, s *stdio) error {
		var o dataOpts
		fs := newFlags("versions "+name, "KEY VERSION", about, s, &o)
		pos, err := parseArgs(fs, args, &o, 2, 2)
		if err != nil {
			return err
		}
		n, err := strconv.ParseUint(pos[1], 10, 32)
		if err != nil || n == 0 {
			return usagef("versions %s: VERSION must be a number from 1, not %q", name, pos[1])
		}
		return o.withKey(ctx, pos[0], func(e *kms.Engine, tag string) error {
			v, err := f(e, ctx, tag, uint32(n))
			if err != nil {
				return err
			}
			return emitVersion(s, &o, tag, v)
		})
	}
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
