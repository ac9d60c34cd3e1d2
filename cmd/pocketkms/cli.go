package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	badgerstore "github.com/pocketkms/kms/internal/store"
)

// groups are the subcommands of each group, by the group's name.
var groups = map[string][]command{}

// group is a command with subcommands ("keys create", "keys list", …).
func group(name, summary string, subs ...command) command {
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: pocketkms %s <subcommand> [flags] [arguments]\n\n%s.\n\nsubcommands:\n", name, upperFirst(summary))
		for _, c := range subs {
			fmt.Fprintf(w, "  %-24s %s\n", c.name, c.summary)
		}
		fmt.Fprintf(w, "\nRun 'pocketkms %s <subcommand> -h' for its flags.\n", name)
	}
	groups[name] = subs
	return command{name: name, summary: summary, run: func(ctx context.Context, args []string, s *stdio) error {
		if len(args) == 0 {
			usage(s.out)
			return usagef("%s: no subcommand given", name)
		}
		switch args[0] {
		case "-h", "-help", "--help", "help":
			usage(s.out)
			return flag.ErrHelp
		}
		for _, c := range subs {
			if c.name == args[0] {
				return c.run(ctx, args[1:], s)
			}
		}
		usage(s.out)
		return usagef("%s: unknown subcommand %q", name, args[0])
	}}
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// dataOpts are the flags every data-directory command has.
type dataOpts struct {
	data, rootKeyFile, output string
}

// newFlags makes the flag set of "pocketkms <path>" with the data
// directory flags; argsUsage names the positional arguments, about is the
// paragraph the usage prints.
func newFlags(path, argsUsage, about string, s *stdio, o *dataOpts) *flag.FlagSet {
	fs := flag.NewFlagSet("pocketkms "+path, flag.ContinueOnError)
	fs.SetOutput(s.out)
	fs.Usage = func() {
		fmt.Fprintf(s.out, "usage: pocketkms %s [flags] %s\n\n%s\n\nflags:\n", path, argsUsage, about)
		fs.PrintDefaults()
	}
	if o != nil {
		fs.StringVar(&o.data, "data", "kms-data", "data directory (as for serve)")
		fs.StringVar(&o.rootKeyFile, "root-key-file", "", "root key file (default <data>/root.key)")
		fs.StringVar(&o.output, "o", "table", "output format: table or json")
	}
	return fs
}

// parseArgs parses flags and positional arguments in any order (flags may
// follow the arguments; "--" ends the flags) and checks that there are
// min..max positional arguments (max < 0: any number).
func parseArgs(fs *flag.FlagSet, args []string, o *dataOpts, min, max int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{err}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if o != nil && o.output != "table" && o.output != "json" {
		return nil, usagef("-o must be table or json, not %q", o.output)
	}
	switch {
	case len(pos) < min:
		fs.Usage()
		return nil, usagef("%s: want %s", fs.Name(), plural(min, "argument"))
	case max >= 0 && len(pos) > max:
		fs.Usage()
		return nil, usagef("%s: unexpected arguments %q", fs.Name(), pos[max:])
	}
	return pos, nil
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// errInUse: the data directory is locked by a running server (or another
// admin command).
var errInUse = errors.New("is in use by another process (a running `pocketkms serve`?): stop it first, or use the HTTP API")

// engineOptions are added to every Engine the admin commands open (tests
// set a clock here).
var engineOptions []kms.Option

// openBackendFor opens the root key of a data directory that must exist
// and hold a key store: admin commands never create one (init does).
func (o *dataOpts) openBackendFor() (*memory.Backend, error) {
	if fi, err := os.Stat(filepath.Join(o.data, "store")); err != nil || !fi.IsDir() {
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s is not a pocketkms data directory (no store/ in it): create one with `pocketkms init -data %s`", o.data, o.data)
		}
		return nil, fmt.Errorf("data directory: %w", err)
	}
	// serve's own code: the same root key file, the same refusals.
	be, _, err := openBackend(&serveConfig{data: o.data, rootKeyFile: o.rootKeyFile}, false)
	if err != nil {
		return nil, err
	}
	return be, nil
}

// openEngine opens the Engine of the data directory, without background
// maintenance (an admin command changes only what it was asked to).
func (o *dataOpts) openEngine(ctx context.Context) (*kms.Engine, error) {
	be, err := o.openBackendFor()
	if err != nil {
		return nil, err
	}
	return o.engineOn(ctx, be)
}

// engineOn opens the Engine of the data directory's store on be, without
// background maintenance; be is closed when that fails.
func (o *dataOpts) engineOn(ctx context.Context, be *memory.Backend) (*kms.Engine, error) {
	opts := append([]kms.Option{kms.WithDirectory(filepath.Join(o.data, "store")),
		kms.WithMaintenanceInterval(0), kms.WithLogger(slog.New(slog.DiscardHandler))}, engineOptions...)
	e, err := kms.New(ctx, be, opts...)
	if err != nil {
		be.Close()
		return nil, o.openErr(err)
	}
	return e, nil
}

// openErr says plainly that a locked directory is in use (exit 3).
func (o *dataOpts) openErr(err error) error {
	if errors.Is(err, badgerstore.ErrInUse) || errors.Is(err, badgerstore.ErrLocked) || strings.Contains(err.Error(), "Cannot acquire directory lock") {
		return &exitError{exitInUse, fmt.Errorf("data directory %s %w", o.data, errInUse)}
	}
	return err
}

// withEngine runs f on the data directory's Engine and closes it.
func (o *dataOpts) withEngine(ctx context.Context, f func(*kms.Engine) error) error {
	e, err := o.openEngine(ctx)
	if err != nil {
		return err
	}
	err = f(e)
	if cerr := e.Close(); err == nil {
		err = cerr
	}
	return err
}

// withKey runs f on the data directory's Engine with ref, a key tag or a
// key name, resolved to the key's tag (resolveKey), and closes the Engine.
func (o *dataOpts) withKey(ctx context.Context, ref string, f func(e *kms.Engine, tag string) error) error {
	return o.withEngine(ctx, func(e *kms.Engine) error {
		tag, err := resolveKey(ctx, e, ref)
		if err != nil {
			return err
		}
		return f(e, tag)
	})
}

// keyCmd is a command "pocketkms <path> [flags] KEY" that calls do on the
// key and writes the result with out.
func keyCmd[T any](path, about string, do func(*kms.Engine, context.Context, string) (T, error),
	out func(s *stdio, o *dataOpts, tag string, v T) error) func(context.Context, []string, *stdio) error {
	return func(ctx context.Context, args []string, s *stdio) error {
		var o dataOpts
		fs := newFlags(path, "KEY", about, s, &o)
		pos, err := parseArgs(fs, args, &o, 1, 1)
		if err != nil {
			return err
		}
		return o.withKey(ctx, pos[0], func(e *kms.Engine, tag string) error {
			v, err := do(e, ctx, tag)
			if err != nil {
				return err
			}
			return out(s, &o, tag, v)
		})
	}
}

// table is output for people: a header and rows, or (vertical) one
// record as FIELD VALUE lines.
type table struct {
	header []string
	rows   [][]string
}

// emit writes v as indented JSON with -o json, else t as aligned columns.
func (s *stdio) emit(o *dataOpts, v any, t table) error {
	if o.output == "json" {
		enc := json.NewEncoder(s.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(s.out, 0, 0, 2, ' ', 0)
	if t.header != nil {
		fmt.Fprintln(tw, strings.Join(t.header, "\t"))
	}
	for _, r := range t.rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// fields is a vertical table of one record.
func fields(kv ...string) table {
	var t table
	for i := 0; i+1 < len(kv); i += 2 {
		t.rows = append(t.rows, []string{kv[i] + ":", kv[i+1]})
	}
	return t
}

// stamp formats a time for tables and JSON: RFC 3339 UTC to the second,
// "" for the zero time.
func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// dash shows "" as "-" in a table.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
