// Command pocketkms is pocketkms as one program. Its subcommands:
//
//	pocketkms serve [flags]   serve NAVER Cloud KMS's HTTP APIs on a data directory
//	pocketkms help [command]  print the usage of pocketkms or of a command
//
// `pocketkms serve` is a NAVER Cloud KMS-compatible HTTP server: the API
// 2.0 token and account APIs (/kms/v1/…) and the v3 API (/kms/v3/…) of
// package naverapi, so that client code written for
// https://ocapi.ncloud.com works against it with only its base URL
// changed. It doubles as a local stand-in for NAVER KMS in development and
// tests.
//
//	go run ./cmd/pocketkms serve                      # 127.0.0.1:8080, data in ./kms-data
//	go run ./cmd/pocketkms serve -addr 127.0.0.1:9000 -data /var/lib/kms
//
// The first run creates the data directory (mode 0700) with a root key
// (root.key, 0600, from memory.GenerateRootKey) that seals every key of the
// software backend, an access/secret key pair (credentials, 0600) and the key
// store (store/). It prints the paths, the access key (never the secret) and
// a ready curl line that signs a request with the secret read from the file:
//
//	AK=…; SK=$(grep -m1 "^$AK:" kms-data/credentials | cut -d: -f2-); TS=$(($(date +%s)*1000));
//	SIG=$(printf 'GET /kms/v1/keys\n%s\n%s' "$TS" "$AK" | openssl dgst -sha256 -hmac "$SK" -binary | openssl base64 -A);
//	curl -s http://127.0.0.1:8080/kms/v1/keys -H "x-ncp-apigw-timestamp: $TS" -H "x-ncp-iam-access-key: $AK" -H "x-ncp-apigw-signature-v2: $SIG"
//
// Flags of serve: -addr, -data, -root-key-file (an existing root key, 64
// hex characters or 32 bytes, mode 0600), -credentials (an existing
// "accessKey:secretKey" file, one pair a line, '#' comments, mode 0600),
// -trusted-proxies (comma-separated addresses and CIDRs whose
// X-Forwarded-For is honoured), -tls-cert and -tls-key (serve HTTPS),
// -ipv6-acl (accept IPv6 allow-list entries, which NAVER does not),
// -account-rate-limit (account API requests a second per access key,
// default 300 with a burst of 300; 0 for none: over it, 429 with
// Retry-After).
// SIGINT and SIGTERM shut the server down gracefully: requests in flight
// finish (up to 15 s), then the Engine closes.
//
// The account API is authenticated with NCP API Gateway signature v2
// (naverapi.SignatureV2) against the credentials file; every access key
// may do everything. Request bodies are limited to naverapi.MaxBodyBytes
// (6 MiB), headers to 64 KiB. Timeouts: 10 s to read headers, 60 s to read
// a request, 60 s to write a response, 120 s idle keep-alive. The log has
// one line per request (see naverapi.WithLogger) and nothing secret; the
// banner prints file paths and the access key, never the secret key. The
// credentials file and the root key must not be readable by group or
// others (serve refuses to start otherwise). Without -tls-cert and -tls-key
// the server speaks plain HTTP: keep it on loopback (the default) or behind
// TLS, since tokens and data cross the wire; it warns when it serves plain
// HTTP on another address.
//
// `pocketkms -h` and `pocketkms serve -h` print their usage and exit 0; an
// unknown command or flag prints the usage and exits 2; any other failure
// exits 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

func main() {
	err := run(context.Background(), os.Args[1:], os.Stdout)
	if code := exitCode(err); code != 0 {
		fmt.Fprintln(os.Stderr, "pocketkms:", err)
		os.Exit(code)
	}
}

// command is a subcommand: run gets the arguments after its name.
type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout io.Writer) error
}

// commands are the subcommands, in the order the usage lists them.
// Administration of a data directory (backup, key listing, …) will join
// serve here.
var commands = []command{
	{"serve", "serve NAVER Cloud KMS's HTTP APIs on a data directory", serve},
	{"rotate-root", "re-seal a data directory's keys under a new root key (server stopped)", rotateRoot},
}

// usageError is a command line that could not be understood: exit code 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// exitCode maps run's error to the process's exit status: 0 for success
// and for -h, 2 for a command line that could not be understood, 1 for
// anything else.
func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		return 2
	}
	return 1
}

// run is the program: it dispatches args to a subcommand.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		printUsage(stdout)
		return &usageError{errors.New("no command given")}
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help":
		printUsage(stdout)
		return flag.ErrHelp
	case "help":
		if len(rest) == 0 {
			printUsage(stdout)
			return flag.ErrHelp
		}
		name, rest = rest[0], []string{"-h"}
	}
	for _, c := range commands {
		if c.name == name {
			return c.run(ctx, rest, stdout)
		}
	}
	printUsage(stdout)
	return &usageError{fmt.Errorf("unknown command %q", name)}
}

func printUsage(w io.Writer) {
	var b strings.Builder
	b.WriteString("usage: pocketkms <command> [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-8s %s\n", c.name, c.summary)
	}
	b.WriteString("\nRun 'pocketkms <command> -h' for a command's flags.\n")
	io.WriteString(w, b.String())
}
