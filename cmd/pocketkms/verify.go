package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/pocketkms/kms"
)

func init() {
	register(command{"verify", "check a data directory offline (read-only)", verifyCmd})
}

type verifyJSON struct {
	Data     string        `json:"data"`
	OK       bool          `json:"ok"`
	Keys     int           `json:"keys"`
	Versions int           `json:"versions"`
	Skipped  int           `json:"skippedDueForDestruction"`
	Problems []problemJSON `json:"problems"`
}

type problemJSON struct {
	Tag     string `json:"keyTag,omitempty"`
	Version uint32 `json:"version,omitempty"`
	Problem string `json:"problem"`
}

// verifyCmd runs kms.VerifyDirectory: it exits 0 when the directory is
// sound, 4 (exitProblems) when it found problems, 1 when it could not
// check (3 when a server holds the directory).
func verifyCmd(ctx context.Context, args []string, s *stdio) error {
	var o dataOpts
	fs := newFlags("verify", "", "Check a data directory offline and read-only (nothing is written): the store's\n"+
		"integrity record, every record, and that every key version's material and every\n"+
		"active token-signing key opens with the root key. Exit 0: sound; 4: problems found\n"+
		"(listed); 3: the directory is in use (stop the server first); 1: could not check.", s, &o)
	if _, err := parseArgs(fs, args, &o, 0, 0); err != nil {
		return err
	}
	be, err := o.openBackendFor()
	if err != nil {
		return err
	}
	defer be.Close()
	rep, err := kms.VerifyDirectory(ctx, be, filepath.Join(o.data, "store"))
	if err != nil {
		return o.openErr(err)
	}
	j := verifyJSON{Data: o.data, OK: len(rep.Problems) == 0, Keys: rep.Keys, Versions: rep.Versions, Skipped: rep.Skipped, Problems: []problemJSON{}}
	t := table{header: []string{"KEY", "VERSION", "PROBLEM"}}
	// A problem's text can be long: the table puts it last.
	for _, p := range rep.Problems {
		j.Problems = append(j.Problems, problemJSON{p.KeyTag, p.Version, p.Problem})
		v := "-"
		if p.Version > 0 {
			v = strconv.FormatUint(uint64(p.Version), 10)
		}
		t.rows = append(t.rows, []string{dash(p.KeyTag), v, p.Problem})
	}
	summary := fmt.Sprintf("verified %s: %s, %s, %d skipped (due for destruction), %s",
		o.data, plural(rep.Keys, "key"), plural(rep.Versions, "version"), rep.Skipped, plural(len(rep.Problems), "problem"))
	if o.output == "json" {
		if err := s.emit(&o, j, t); err != nil {
			return err
		}
	} else {
		if len(rep.Problems) > 0 {
			if err := s.emit(&o, j, t); err != nil {
				return err
			}
		}
		if _, err := fmt.Fprintln(s.out, summary); err != nil {
			return err
		}
	}
	if len(rep.Problems) > 0 {
		return &exitError{exitProblems, fmt.Errorf("verify: %d problems in %s", len(rep.Problems), o.data)}
	}
	return nil
}
