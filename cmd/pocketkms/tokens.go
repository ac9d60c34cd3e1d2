package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/token"
)

func init() {
	register(group("tokens", "token generators and token sets",
		command{"show", "show a key's token generator", genAction("show", "Show a key's token generator.", (*kms.Engine).GetTokenGenerator)},
		command{"activate", "activate the token generator", genAction("activate", "Activate a key's token generator: token sets can be issued.", (*kms.Engine).ActivateTokenGenerator)},
		command{"rotate", "rotate the generator (revokes every token)", genAction("rotate", "Rotate a key's token generator: a new signing key; every token issued before stops working.", (*kms.Engine).RotateTokenGenerator)},
		command{"deactivate", "deactivate the generator (revokes every token)", genAction("deactivate", "Deactivate a key's token generator: every token stops working.", (*kms.Engine).DeactivateTokenGenerator)},
		command{"issue", "issue a token set (secret: -reveal or -out)", tokensIssue},
		command{"revoke", "revoke one token by its id", tokensRevoke},
	))
}

type generatorJSON struct {
	Tag              string `json:"keyTag"`
	ID               string `json:"id"`
	Status           string `json:"status"`
	EnabledAt        string `json:"enabledAt"`
	DisabledAt       string `json:"disabledAt"`
	IssuedTokenCount uint64 `json:"issuedTokenCount"`
}

func genAction(name, about string, f func(*kms.Engine, context.Context, string) (*kms.TokenGenerator, error)) func(context.Context, []string, *stdio) error {
	return keyCmd("tokens "+name, about+"\nKEY is a key tag or a key name.", f, emitGenerator)
}

// emitGenerator writes the token generator of the key tag (keyCmd's out).
func emitGenerator(s *stdio, o *dataOpts, tag string, g *kms.TokenGenerator) error {
	j := generatorJSON{Tag: tag, ID: g.ID, Status: string(g.Status), EnabledAt: stamp(g.EnabledAt),
		DisabledAt: stamp(g.DisabledAt), IssuedTokenCount: g.IssuedTokenCount}
	return s.emit(o, j, fields("key", tag, "generator id", dash(g.ID), "status", string(g.Status),
		"enabled", dash(j.EnabledAt), "disabled", dash(j.DisabledAt),
		"issued tokens", strconv.FormatUint(g.IssuedTokenCount, 10)))
}

// permissionsByName maps lower-case permission names to permissions.
func permissionsByName() map[string]token.Permission {
	m := map[string]token.Permission{}
	for _, p := range token.AllPermissions() {
		m[strings.ToLower(p.String())] = p
	}
	return m
}

// tokenSetJSON is an issued set; the tokens are only present when asked
// for (-reveal, or in the -out file).
type tokenSetJSON struct {
	Tag            string `json:"keyTag"`
	Subject        string `json:"subject"`
	AccessToken    string `json:"accessToken,omitempty"`
	RefreshToken   string `json:"refreshToken,omitempty"`
	AccessID       string `json:"accessTokenId,omitempty"`
	RefreshID      string `json:"refreshTokenId,omitempty"`
	IssuedAt       string `json:"issuedAt"`
	AccessExpires  string `json:"accessExpiresAt"`
	RefreshExpires string `json:"refreshExpiresAt"`
	File           string `json:"file,omitempty"`
}

func tokensIssue(ctx context.Context, args []string, s *stdio) error {
	var o dataOpts
	var subject, perms, cidrs, outFile, accessTTL, refreshTTL string
	var reveal bool
	names := make([]string, 0, len(token.AllPermissions()))
	for _, p := range token.AllPermissions() {
		names = append(names, p.String())
	}
	fs := newFlags("tokens issue", "KEY",
		"Issue an access and refresh token set for KEY (its generator must be active).\n"+
			"The tokens are bearer secrets: they are written only to the -out file (created\n"+
			"0600, never overwritten) or, with -reveal, to standard output; one of the two is\n"+
			"required. Without -reveal the output shows the set's times and file, not the tokens.", s, &o)
	fs.StringVar(&subject, "subject", "", "principal the tokens are for (required)")
	fs.StringVar(&perms, "permissions", "all", "comma-separated permissions ("+strings.Join(names, ", ")+") or all")
	fs.StringVar(&cidrs, "cidrs", "", "comma-separated address prefixes the tokens are narrowed to")
	fs.StringVar(&accessTTL, "access-ttl", "", "access token lifetime in minutes, or unlimited (default 72 h)")
	fs.StringVar(&refreshTTL, "refresh-ttl", "", "refresh token lifetime in minutes, or unlimited (default 2,160 h)")
	fs.StringVar(&outFile, "out", "", "write the set as JSON to this new file (mode 0600)")
	fs.BoolVar(&reveal, "reveal", false, "print the tokens on standard output")
	pos, err := parseArgs(fs, args, &o, 1, 1)
	if err != nil {
		return err
	}
	req := kms.IssueTokensRequest{Subject: subject}
	switch {
	case subject == "":
		return usagef("tokens issue: -subject is required")
	case !reveal && outFile == "":
		return usagef("tokens issue: the tokens are secret: give -out FILE or -reveal")
	}
	if perms == "all" {
		req.Permissions = token.AllPermissions()
	} else {
		byName := permissionsByName()
		for _, n := range strings.Split(perms, ",") {
			p, ok := byName[strings.ToLower(strings.TrimSpace(n))]
			if !ok {
				return usagef("tokens issue: unknown permission %q (want %s or all)", n, strings.Join(names, ", "))
			}
			req.Permissions = append(req.Permissions, p)
		}
	}
	if cidrs != "" {
		req.AllowedCIDRs = strings.Split(cidrs, ",")
	}
	if req.AccessTTL, err = parseTTL("access-ttl", accessTTL); err != nil {
		return err
	}
	if req.RefreshTTL, err = parseTTL("refresh-ttl", refreshTTL); err != nil {
		return err
	}
	var f *os.File
	if outFile != "" {
		// Made before the tokens, so that a file that exists costs nothing.
		if f, err = os.OpenFile(outFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return fmt.Errorf("tokens issue: %w", err)
		}
	}
	err = o.withKey(ctx, pos[0], func(e *kms.Engine, tag string) error {
		set, err := e.IssueTokens(ctx, tag, req)
		if err != nil {
			return err
		}
		j := tokenSetJSON{Tag: tag, Subject: subject, AccessToken: set.Access, RefreshToken: set.Refresh,
			AccessID: set.AccessID, RefreshID: set.RefreshID, IssuedAt: stamp(set.IssuedAt),
			AccessExpires: stamp(set.AccessExpires), RefreshExpires: stamp(set.RefreshExpires)}
		if f != nil {
			data, err := json.MarshalIndent(j, "", "  ")
			if err != nil {
				return err
			}
			_, err = f.Write(append(data, '\n'))
			clear(data)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			f = nil
			if err != nil {
				return fmt.Errorf("tokens issue: write %s: %w", outFile, err)
			}
			j.File = outFile
		}
		if !reveal {
			j.AccessToken, j.RefreshToken = "", ""
		}
		t := fields("key", tag, "subject", subject, "issued", j.IssuedAt,
			"access expires", dash(j.AccessExpires), "refresh expires", dash(j.RefreshExpires))
		if reveal {
			t.rows = append(t.rows, []string{"access token:", set.Access}, []string{"refresh token:", set.Refresh})
		}
		if j.File != "" {
			t.rows = append(t.rows, []string{"written to:", j.File})
		}
		return s.emit(&o, j, t)
	})
	if f != nil {
		// Nothing was issued: leave no empty file behind.
		f.Close()
		os.Remove(outFile)
	}
	return err
}

func parseTTL(name, v string) (token.TTL, error) {
	switch v {
	case "":
		return token.TTL{}, nil
	case "unlimited":
		return token.TTL{Unlimited: true}, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return token.TTL{}, usagef("tokens issue: -%s must be a number of minutes or unlimited, not %q", name, v)
	}
	t := token.TTL{Minutes: n}
	if err := t.Validate(); err != nil {
		return token.TTL{}, usagef("tokens issue: -%s: %v", name, err)
	}
	return t, nil
}

func tokensRevoke(ctx context.Context, args []string, s *stdio) error {
	var o dataOpts
	fs := newFlags("tokens revoke", "KEY TOKEN-ID",
		"Revoke one token of KEY by its id (claim jti; tokens have ids when the server\n"+
			"issues them with ids). To revoke every token, rotate or deactivate the generator.", s, &o)
	pos, err := parseArgs(fs, args, &o, 2, 2)
	if err != nil {
		return err
	}
	return o.withKey(ctx, pos[0], func(e *kms.Engine, tag string) error {
		if err := e.RevokeToken(ctx, tag, pos[1]); err != nil {
			return err
		}
		return s.emit(&o, map[string]string{"keyTag": tag, "revoked": pos[1]}, fields("key", tag, "revoked", pos[1]))
	})
}
