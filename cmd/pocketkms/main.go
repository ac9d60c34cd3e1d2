// Command pocketkms is pocketkms as one program: a NAVER Cloud
// KMS-compatible HTTP server and the administration of its data directory.
// Its commands:
//
//	pocketkms serve [flags]                serve NAVER Cloud KMS's HTTP APIs on a data directory
//	pocketkms init [-data DIR]             create a data directory (as serve's first run does)
//	pocketkms keys <subcommand>            create, list, show, rotate, enable, disable, delete,
//	                                       cancel-deletion, min-decryption-version
//	pocketkms versions <subcommand>        list, show, enable, disable
//	pocketkms tokens <subcommand>          show, activate, rotate, deactivate (the generator),
//	                                       issue (a token set), revoke (a token by id)
//	pocketkms acl <subcommand>             show, set, enable, disable (IP allow-lists)
//	pocketkms limits <subcommand>          show, set (token API rate limits)
//	pocketkms verify [flags]               check a data directory offline, read-only
//	pocketkms backup [flags] FILE          write a backup of a data directory's keys to FILE
//	pocketkms restore [flags] FILE         restore a backup into a new data directory
//	pocketkms verify-backup [-o json] FILE check a backup file offline (no root key needed)
//	pocketkms rotate-root [flags]          re-seal every key under a new root key, then replace root.key
//	pocketkms audit [flags] KEY            a key's management history, newest first (-page, -size)
//	pocketkms usage [flags] KEY            a key's usage counters per version
//	pocketkms reencrypt [flags] KEY FILE   move a file of ciphertexts to KEY's current version
//	pocketkms help [command [subcommand]]  print the usage of pocketkms or of a command
//
// # Serving
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
// Retry-After), -metrics-addr (serve the Engine's metrics in Prometheus's
// text format at http://ADDR/metrics, on a listener of their own so that
// the API's address serves nothing unauthenticated; package kmsmetrics
// through the OpenTelemetry Prometheus exporter; off by default).
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
// # Administration
//
// The other commands work on a data directory (-data, default kms-data;
// -root-key-file as for serve) while no server runs on it: they open it as
// serve does (root.key, store/; the credentials file is not needed), do one
// thing, and close it. A directory that a running server (or another
// command) holds is refused with exit code 3 and says so, and nothing in
// it is changed: use the HTTP API meanwhile. They never create a data
// directory: `pocketkms init` does, with serve's own code. Background
// maintenance (auto-rotation, destruction of keys past their deletion
// time) is left to the server: a command changes only what it was asked to.
//
// A key is named by its tag or its name (names are unique
// case-insensitively):
//
//	pocketkms init -data /var/lib/kms
//	pocketkms keys create -data /var/lib/kms -name orders -type AES256 -auto-rotation
//	pocketkms keys list -data /var/lib/kms
//	pocketkms keys rotate -data /var/lib/kms orders
//	pocketkms versions list -data /var/lib/kms orders
//	pocketkms tokens activate -data /var/lib/kms orders
//	pocketkms tokens issue -data /var/lib/kms orders -subject billing -permissions encrypt,decrypt -out billing.tokens
//	pocketkms acl set -data /var/lib/kms orders 10.0.0.0/8 192.0.2.7 && pocketkms acl enable -data /var/lib/kms orders
//	pocketkms limits set -data /var/lib/kms orders -rate 1000
//	pocketkms keys delete -data /var/lib/kms orders    # REVOKED; destroyed 72 h later unless cancel-deletion
//
// Flags and arguments may come in any order ("--" ends the flags). Every
// command prints its result as a table for people, or with -o json as
// JSON for scripts (an object, or an array for lists; times are RFC 3339
// UTC, absent times are ""). Run `pocketkms <command> <subcommand> -h` for
// each command's flags.
//
// Token sets are bearer secrets. `tokens issue` writes them only to the
// file given with -out (created with mode 0600, never over an existing
// file) or, with -reveal, to standard output; one of the two is required,
// and without -reveal the output shows the set's times, not the tokens.
// Nothing else ever prints a token, a key or a root key.
//
// `pocketkms verify` checks a data directory offline without writing to
// it (kms.VerifyDirectory: the store is opened read-only under a shared
// lock, so it also runs on a read-only copy or mount): the store's content
// against its integrity record, every table's checksums, every record and
// that a key's records agree, and that every version's material and every
// active token-signing key opens with the root key. It prints the problems
// it found (none: just a summary line) and exits 4 if there are any.
//
// `pocketkms reencrypt KEY INPUT -out OUTPUT` (or -in-place) re-encrypts
// every ciphertext in INPUT under KEY's current version inside the Engine,
// so no plaintext leaves it: one ciphertext a line, or with -field a.b.c
// one JSON object a line (JSON Lines) whose member at that path holds it;
// the rest of each line, blank lines, line endings and ciphertexts already
// at the current version are kept byte for byte. Give -context when the
// ciphertexts were made with an encryption context. It draws a progress
// bar on standard error when that is a terminal (-progress bar forces it,
// -progress none turns it off) and prints one summary line at the end
// (with -o json, a JSON object). It is resumable and never leaves a
// partial result where a complete one is expected: it writes
// OUTPUT.reencrypt-partial and renames it to OUTPUT (with -in-place, over
// INPUT) only when every line is done, and every -checkpoint-every lines
// (10,000) it syncs that file and records in OUTPUT.reencrypt-checkpoint
// how many input lines and output bytes are done. Interrupted (Ctrl-C,
// SIGTERM: it checkpoints and exits 5) or killed, the same command resumes
// after the last checkpoint, cutting off whatever was written after it. A
// checkpoint belongs to one job (input path, size and modification time,
// key and its current version, field, context digest): for another, the command refuses until
// -restart. A line that does not re-encrypt (not a ciphertext of KEY, a
// disabled version, the member missing) stops the run at that line with
// exit 1, the line number and the reason; the lines before it are
// checkpointed, so the same command resumes once the cause is fixed (e.g.
// the version enabled again), as long as INPUT is unchanged. Afterwards,
// `keys min-decryption-version KEY N` retires the old versions.
//
// # Backup and restore
//
// `pocketkms backup -data DIR FILE` writes a backup of DIR's keys to FILE
// with kms.Engine.BackupFile (see "Backup and restore" in package kms for
// what a backup holds: every key with its versions, token generator,
// allow-list and rate limit, and the name index, each handle sealed under
// the root key, never a raw key; usage counters and audit history are not
// in it). It is written to a temporary file beside FILE (mode 0600),
// synced and renamed, so a failure (a full disk) leaves FILE as it was and
// no file that looks complete. An existing FILE is refused unless -force,
// which replaces it only with a complete backup; so is a FILE inside the
// key store. Like the other commands
// it needs the directory to itself: while a server holds it, backup exits
// 3 and says so. The library could back up a serving Engine (Backup does
// not block calls), but only from inside the process that holds the
// directory, and the HTTP API has no backup call: stop the server, or
// call Engine.Backup from a program that embeds the Engine.
//
// `pocketkms restore -data DIR -root-key-file KEY FILE` writes the backup
// FILE into DIR with kms.Restore. DIR's key store (DIR/store) must not
// exist or be empty; DIR itself may exist (holding root.key and
// credentials, say) and is made (0700) if it does not. The root key is
// -root-key-file or DIR/root.key, and must be the one the backup was made
// under; a DIR/root.key that is another key than -root-key-file is
// refused (the restored directory would not open with it). Everything is checked before anything is written: the whole
// backup (truncated, altered: refused), then that the root key opens every
// key in it (another root key: refused). A refusal exits 1 and writes
// nothing: a DIR that did not exist still does not. With -copy-root-key
// the root key file is copied to DIR/root.key (0600, never over a file)
// once the store is in place; without it DIR has no root.key, and serve
// and the commands need -root-key-file (restore says so on standard
// error): a copy of the root key is made only when asked for. A backup
// has no credentials: serve makes a new credentials file on its first run
// unless DIR/credentials exists.
//
// `pocketkms verify-backup FILE` checks a backup offline with
// kms.VerifyBackup (format, SHA-256 digest, every record's checksum, that
// the records agree) without a data directory or root key; it does not
// check that a root key opens the material (restore does that before it
// writes). It exits 4 for an invalid backup, as verify does for problems.
//
//	pocketkms backup -data /var/lib/kms /backups/kms-2026-12-03.pkb
//	pocketkms verify-backup /backups/kms-2026-12-03.pkb
//	pocketkms restore -data /var/lib/kms-new -root-key-file /secure/root.key -copy-root-key /backups/kms-2026-12-03.pkb
//
// # Audit history and usage
//
// `pocketkms audit KEY` lists KEY's management history newest first
// (kms.Engine.ListKeyHistory): every successful change with its sequence
// number, time, the version it made or changed, the key's state after
// it, the plane and the caller (and the address, for token renewals).
// Pages count from 0 as in the library and the HTTP API (GET
// /kms/v3/keys/{keyTag}/history): -page N, -size 1..100 (default 20); the
// table ends with a line saying how many changes there are and the next
// page, and -o json gives {keyTag, pageNo, pageSize, totalCount,
// entries}. A key keeps its newest 100 changes; refusals and cipher calls
// are not in the history (they go to the audit sink of the program that
// serves the key), and a backup does not carry it. The admin commands
// name their caller "pocketkms:" and the operating-system user
// (kms.WithCaller), so the history tells a change made at the command line
// from one made through the API.
//
// `pocketkms usage KEY` prints KEY's usage counters per version
// (kms.Engine.KeyUsage): encryptions, decryptions, signatures,
// verifications, refusals, the last use and, for AES256 keys with random
// nonces, the AES-GCM encryptions the version may still make (of 2^32;
// absent in JSON for other keys). They are what a server wrote to the
// store, at every maintenance run and when it stopped: a server killed
// loses the counts since its last maintenance run, and a command cannot
// read a running server's counters (exit 3; the library's KeyUsage can).
//
//	pocketkms audit -data /var/lib/kms orders -size 50
//	pocketkms usage -data /var/lib/kms orders -o json
//
// # Root-key rotation
//
// `pocketkms rotate-root -data DIR` re-seals every key of DIR under a new
// root key with kms.Engine.RotateRootKey and then replaces the root key
// file (-root-key-file, default DIR/root.key). The new key is
// -new-root-key-file (read, and refused if malformed or readable by group
// or others, before anything is opened), or a new random key from
// memory.GenerateRootKey. The steps follow the library's crash-safety
// protocol (see RotateRootKey and `go doc ./backend/memory`), each safe to
// interrupt: (1) the store is opened with the current key, so a directory
// a server holds is refused with exit 3 before anything is written; (2)
// a random new key is made durable in <root key file>.new (0600), or the
// one an interrupted run left there is reused; (3) the store is rotated
// (a kill before its switch leaves it under the old key, after it under
// the new one); (4) only then is the root key file replaced atomically
// (temporary file, sync, rename) and the .new file removed. Run the same
// command again after an interruption: a store already switched opens
// with the .new key (or -new-root-key-file) and the run finishes; a run
// cut off after replacing the root key file only removes the .new file.
// It prints where the new key is, never the key (-o json: data, store,
// rootKeyFile, resumed). Backups made before the rotation open only with
// the old root key: keep a copy of it as long as those backups, or take
// a new backup after rotating.
//
// # Exit codes
//
//	0  success, and -h/--help/help on every command
//	1  failure (the message says what failed: a key not found, a refused change, an I/O error)
//	2  usage error: unknown command, subcommand or flag, a malformed value, missing or
//	   extra arguments; nothing was opened or changed
//	3  the data directory is in use by another process (stop the server first)
//	4  verify found problems, or verify-backup an invalid backup
//	5  reencrypt was interrupted; run the same command again to resume
//
// Errors go to standard error as one line starting "pocketkms: ".
//
// # Design choices
//
// The commands use the standard library's flag package, one flag set per
// subcommand, and a progress bar of about 40 lines: a CLI framework or a
// progress-bar library (github.com/schollz/progressbar/v3 is served) would
// add dependencies for what the flag package and one \r-redrawn line do
// here. New commands are one file each: see register in main.go.
//
// backup writes to a file only (not to standard output). verify reports a store whose records do
// not decode as one problem, since nothing after it can be checked.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/pocketkms/kms"
)

func main() {
	err := runWith(context.Background(), os.Args[1:], &stdio{out: os.Stdout, err: os.Stderr, errTerminal: isTerminal(os.Stderr)})
	if code := exitCode(err); code != 0 {
		fmt.Fprintln(os.Stderr, "pocketkms:", err)
		os.Exit(code)
	}
}

// stdio is where a command writes: out for its result (table or JSON),
// err for progress and notes. errTerminal says whether err is a terminal
// (then reencrypt draws a progress bar there).
type stdio struct {
	out, err    io.Writer
	errTerminal bool
}

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// command is a subcommand: run gets the arguments after its name.
type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, s *stdio) error
}

// commands are the subcommands; the usage lists them by name. Every
// command but serve lives in its own file and adds itself with register
// from an init function, so that a new command is one new file.
var commands = []command{
	{"serve", "serve NAVER Cloud KMS's HTTP APIs on a data directory",
		func(ctx context.Context, args []string, s *stdio) error { return serve(ctx, args, s.out) }},
}

// register adds a command; it panics on a duplicate name (a programming
// error found by every test run).
//
// A new command is one new file that registers itself, for example
// audit.go:
//
//	func init() {
//		register(command{"audit", "list a key's management history", auditCmd})
//	}
//
//	func auditCmd(ctx context.Context, args []string, s *stdio) error {
//		var o dataOpts // -data, -root-key-file, -o
//		fs := newFlags("audit", "KEY", "List KEY's management changes, newest first.", s, &o)
//		limit := fs.Int("limit", 50, "changes to list")
//		pos, err := parseArgs(fs, args, &o, 1, 1) // usage errors (exit 2) before anything is opened
//		if err != nil {
//			return err
//		}
//		// exit 3 when a server holds the directory; KEY is a tag or a name
//		return o.withKey(ctx, pos[0], func(e *kms.Engine, tag string) error {
//			...
//			return s.emit(&o, rowsForJSON, table{header: []string{"TIME", "OPERATION"}, rows: rows})
//		})
//	}
//
// A command with subcommands registers group(name, summary, command{…}…)
// instead. TestEveryCommandHelp then checks its -h, TestUsageErrorsChangeNothing
// takes its malformed command lines, and a step in TestAdminGolden its output.
func register(c command) {
	for _, have := range commands {
		if have.name == c.name {
			panic("pocketkms: command " + c.name + " registered twice")
		}
	}
	commands = append(commands, c)
	slices.SortFunc(commands, func(a, b command) int { return strings.Compare(a.name, b.name) })
}

// usageError is a command line that could not be understood: exit code 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return &usageError{fmt.Errorf(format, args...)} }

// exitError is a failure with its own exit code (see the package doc).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Exit codes besides 0 (success, -h), 1 (failure) and 2 (usage error).
const (
	exitInUse       = 3 // the data directory is locked by a running server
	exitProblems    = 4 // verify found problems, verify-backup an invalid backup
	exitInterrupted = 5 // reencrypt stopped early; run it again to resume
)

// exitCode maps run's error to the process's exit status: 0 for success
// and for -h, 2 for a command line that could not be understood, the code
// of an exitError, 1 for anything else.
func exitCode(err error) int {
	var ue *usageError
	var ee *exitError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		return 2
	case errors.As(err, &ee):
		return ee.code
	}
	return 1
}

// run is the program with stdout as given and stderr as the process's.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	return runWith(ctx, args, &stdio{out: stdout, err: os.Stderr})
}

// runWith is the program: it dispatches args to a subcommand.
func runWith(ctx context.Context, args []string, s *stdio) error {
	stdout := s.out
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
		name, rest = rest[0], append(rest[1:len(rest):len(rest)], "-h")
	}
	for _, c := range commands {
		if c.name == name {
			if name != "serve" {
				// The key history names the command line's user as the
				// caller of what an admin command changes.
				ctx = kms.WithCaller(ctx, cliCaller())
			}
			return c.run(ctx, rest, s)
		}
	}
	printUsage(stdout)
	return &usageError{fmt.Errorf("unknown command %q", name)}
}

func printUsage(w io.Writer) {
	var b strings.Builder
	b.WriteString("usage: pocketkms <command> [flags]\n\ncommands:\n")
	width := 11
	for _, c := range commands {
		width = max(width, len(c.name))
	}
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-*s %s\n", width, c.name, c.summary)
	}
	b.WriteString("\nRun 'pocketkms <command> -h' for a command's flags, 'go doc ./cmd/pocketkms' for the manual.\n")
	io.WriteString(w, b.String())
}
