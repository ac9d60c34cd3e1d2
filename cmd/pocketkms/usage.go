package main

import (
	"context"
	"strconv"

	"github.com/pocketkms/kms"
)

func init() {
	register(command{"usage", "show a key's usage counters per version", usageCmd})
}

// usageJSON is a key's usage in -o json output.
type usageJSON struct {
	Tag      string             `json:"keyTag"`
	Versions []versionUsageJSON `json:"versions"`
}

type versionUsageJSON struct {
	Version       uint32 `json:"version"`
	Encryptions   uint64 `json:"encryptions"`
	Decryptions   uint64 `json:"decryptions"`
	Signatures    uint64 `json:"signatures"`
	Verifications uint64 `json:"verifications"`
	Refusals      uint64 `json:"refusals"`
	LastUse       string `json:"lastUse"`
	// BudgetLeft is absent for keys without an AES-GCM budget.
	BudgetLeft *uint64 `json:"encryptionBudgetLeft,omitempty"`
}

// usageCmd prints kms.Engine.KeyUsage.
func usageCmd(ctx context.Context, args []string, s *stdio) error {
	var o dataOpts
	fl := newFlags("usage", "KEY", "Show KEY's usage counters per version (kms.Engine.KeyUsage): encryptions,\n"+
		"decryptions, signatures, verifications, refusals, the last use, and for AES256 keys\n"+
		"with random nonces how many encryptions the version may still make (2^32 in all).\n"+
		"They are the counts a server wrote to the store: every maintenance run and when it\n"+
		"stops, so a server killed loses the counts since its last maintenance run. KEY is a\n"+
		"key tag or a key name.", s, &o)
	pos, err := parseArgs(fl, args, &o, 1, 1)
	if err != nil {
		return err
	}
	return o.withKey(ctx, pos[0], func(e *kms.Engine, tag string) error {
		u, err := e.KeyUsage(ctx, tag)
		if err != nil {
			return err
		}
		k, err := e.GetKey(ctx, tag)
		if err != nil {
			return err
		}
		budgeted := k.Type == kms.AES256 && !k.Convergent
		j := usageJSON{Tag: u.KeyTag, Versions: []versionUsageJSON{}}
		t := table{header: []string{"VERSION", "ENCRYPTIONS", "DECRYPTIONS", "SIGNATURES", "VERIFICATIONS", "REFUSALS", "LAST USE", "BUDGET LEFT"}}
		for _, v := range u.Versions {
			vj := versionUsageJSON{Version: v.Version, Encryptions: v.Encryptions, Decryptions: v.Decryptions,
				Signatures: v.Signatures, Verifications: v.Verifications, Refusals: v.Refusals, LastUse: stamp(v.LastUse)}
			budget := "-"
			if budgeted {
				left := v.BudgetLeft
				vj.BudgetLeft = &left
				budget = strconv.FormatUint(left, 10)
			}
			j.Versions = append(j.Versions, vj)
			t.rows = append(t.rows, []string{strconv.FormatUint(uint64(v.Version), 10),
				strconv.FormatUint(v.Encryptions, 10), strconv.FormatUint(v.Decryptions, 10),
				strconv.FormatUint(v.Signatures, 10), strconv.FormatUint(v.Verifications, 10),
				strconv.FormatUint(v.Refusals, 10), dash(vj.LastUse), budget})
		}
		return s.emit(&o, j, t)
	})
}
