package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"path/filepath"
	"strings"
	"testing"
)

// TestUsage: -h prints the usage and exits 0; an unknown command or flag,
// no command and stray arguments print the usage and exit 2.
func TestUsage(t *testing.T) {
	data := filepath.Join(t.TempDir(), "never-created")
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string // printed on stdout
	}{
		{"-h", []string{"-h"}, 0, "usage: pocketkms <command>"},
		{"--help", []string{"--help"}, 0, "serve "},
		{"help", []string{"help"}, 0, "usage: pocketkms <command>"},
		{"help serve", []string{"help", "serve"}, 0, "usage: pocketkms serve"},
		{"serve -h", []string{"serve", "-h"}, 0, "-trusted-proxies"},
		{"no command", nil, 2, "usage: pocketkms <command>"},
		{"unknown command", []string{"frobnicate"}, 2, "usage: pocketkms <command>"},
		{"unknown flag", []string{"serve", "-data", data, "-nosuchflag"}, 2, "usage: pocketkms serve"},
		{"flag before the command", []string{"-addr", ":1", "serve"}, 2, "usage: pocketkms <command>"},
		{"stray argument", []string{"serve", "-data", data, "extra"}, 2, ""},
		{"half of TLS", []string{"serve", "-data", data, "-tls-cert", "c.pem"}, 2, ""},
		{"bad proxy", []string{"serve", "-data", data, "-trusted-proxies", "proxy.example"}, 2, ""},
		{"negative rate", []string{"serve", "-data", data, "-account-rate-limit", "-1"}, 2, ""},
		{"NaN rate", []string{"serve", "-data", data, "-account-rate-limit", "NaN"}, 2, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), tc.args, &out)
			if got := exitCode(err); got != tc.code {
				t.Fatalf("run %q: %v, exit %d, want %d", tc.args, err, got, tc.code)
			}
			if !strings.Contains(out.String(), tc.out) {
				t.Fatalf("run %q printed:\n%s\nwant %q", tc.args, out.String(), tc.out)
			}
		})
	}
	if exitCode(errors.New("listen: address in use")) != 1 || exitCode(flag.ErrHelp) != 0 || exitCode(nil) != 0 {
		t.Fatal("exitCode")
	}
}
