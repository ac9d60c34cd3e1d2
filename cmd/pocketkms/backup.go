package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/atomicfile"
)

func init() {
	register(command{"backup", "write a backup of a data directory's keys to a file", backupCmd})
	register(command{"restore", "restore a backup into a new data directory", restoreCmd})
	register(command{"verify-backup", "check a backup file offline (no root key needed)", verifyBackupCmd})
}

// backupJSON describes a backup (kms.BackupInfo) and its file.
type backupJSON struct {
	File      string `json:"file"`
	CreatedAt string `json:"createdAt"`
	Revision  int64  `json:"revision"`
	Keys      int    `json:"keys"`
	Records   int    `json:"records"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
}

func backupInfoJSON(file string, b *kms.BackupInfo) backupJSON {
	return backupJSON{File: file, CreatedAt: stamp(b.CreatedAt), Revision: b.Revision, Keys: b.Keys,
		Records: b.Records, Size: b.Size, SHA256: b.SHA256}
}

// backupFields is the vertical table of a backup.
func backupFields(first, firstValue string, b *kms.BackupInfo, more ...string) table {
	kv := append([]string{first, firstValue,
		"created", dash(stamp(b.CreatedAt)), "revision", strconv.FormatInt(b.Revision, 10),
		"keys", strconv.Itoa(b.Keys), "records", strconv.Itoa(b.Records),
		"size", strconv.FormatInt(b.Size, 10) + " bytes", "sha256", b.SHA256}, more...)
	return fields(kv...)
}

// errBackupInUse replaces errInUse for backup: the HTTP API has no backup,
// so the advice differs.
var errBackupInUse = errors.New("is in use by another process (a running `pocketkms serve`?): stop it first; " +
	"the HTTP API has no backup, but a program that embeds the Engine can back up while serving (Engine.Backup)")

// backupCmd writes a backup with Engine.BackupFile: atomically, so that a
// failure (a full disk) leaves FILE as it was and no file that looks
// complete.
func backupCmd(ctx context.Context, args []string, s *stdio) error {
	var o dataOpts
	fl := newFlags("backup", "FILE", "Write a backup of the data directory's keys to FILE (kms.Engine.BackupFile): every key\n"+
		"with its versions, token generator, allow-list and rate limit, and the name index, each\n"+
		"handle as sealed under the root key (no raw key is in it; keep it as safe as the root\n"+
		"key's ciphertexts). It is written to a temporary file beside FILE (mode 0600), synced\n"+
		"and renamed: a failure, a full disk say, leaves FILE as it was. An existing FILE is\n"+
		"refused unless -force, which replaces it only with a complete backup. Restore it with\n"+
		"`pocketkms restore`, check it with `pocketkms verify-backup`. A directory a server\n"+
		"holds is refused (exit 3): stop the server first.", s, &o)
	force := fl.Bool("force", false, "replace FILE if it exists (only by a complete backup)")
	pos, err := parseArgs(fl, args, &o, 1, 1)
	if err != nil {
		return err
	}
	file := pos[0]
	if inside(file, filepath.Join(o.data, "store")) {
		return fmt.Errorf("backup: %s is inside the key store %s: write the backup elsewhere", file, filepath.Join(o.data, "store"))
	}
	if !*force {
		if _, err := os.Lstat(file); err == nil {
			return fmt.Errorf("backup: %s exists: pass -force to replace it", file)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("backup: %w", err)
		}
	}
	err = o.withEngine(ctx, func(e *kms.Engine) error {
		info, err := e.BackupFile(ctx, file)
		if err != nil {
			return err
		}
		return s.emit(&o, backupInfoJSON(file, info), backupFields("backup", file, info, "data", o.data))
	})
	var ee *exitError
	if errors.As(err, &ee) && ee.code == exitInUse {
		return &exitError{exitInUse, fmt.Errorf("data directory %s %w", o.data, errBackupInUse)}
	}
	return err
}

// restoreJSON describes a restore.
type restoreJSON struct {
	Data        string     `json:"data"`
	Store       string     `json:"store"`
	RootKeyFile string     `json:"rootKeyFile"`
	Keys        int        `json:"keys"`
	Records     int        `json:"records"`
	Backup      backupJSON `json:"backup"`
}

// restoreCmd writes a backup into a data directory without a key store
// with kms.Restore. It must not use withEngine: the target has no store.
func restoreCmd(ctx context.Context, args []string, s *stdio) error {
	var o dataOpts
	fl := newFlags("restore", "FILE", "Restore the backup FILE into the data directory -data, whose key store (store/) must\n"+
		"not exist or be empty; the directory itself may exist (with its root.key and\n"+
		"credentials, say) and is created (0700) if it does not. The root key must be the one\n"+
		"the backup was made under: -root-key-file, or <data>/root.key (a <data>/root.key that\n"+
		"is another key than -root-key-file is refused). Everything is checked\n"+
		"before anything is written (kms.Restore): the whole backup, then that the root key\n"+
		"opens every key in it; a refusal (another root key, a damaged backup, a store that is\n"+
		"not empty) writes nothing. With -copy-root-key the root key file is copied to\n"+
		"<data>/root.key (0600) once the store is restored, so that serve and the commands\n"+
		"find it there; without, they need -root-key-file. The credentials file is not in a\n"+
		"backup: serve creates a new one on its first run unless <data>/credentials exists.", s, &o)
	copyKey := fl.Bool("copy-root-key", false, "copy -root-key-file to <data>/root.key after the restore")
	pos, err := parseArgs(fl, args, &o, 1, 1)
	if err != nil {
		return err
	}
	if *copyKey && o.rootKeyFile == "" {
		return usagef("restore: -copy-root-key needs -root-key-file (without it the root key is <data>/root.key already)")
	}
	file := pos[0]
	keyPath := o.rootKeyFile
	if keyPath == "" {
		keyPath = filepath.Join(o.data, "root.key")
	}
	dest := filepath.Join(o.data, "root.key")
	if *copyKey {
		if _, err := os.Lstat(dest); err == nil {
			return fmt.Errorf("restore: %s exists: drop -copy-root-key, or pass it as -root-key-file", dest)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restore: %w", err)
		}
	}
	be, err := memory.NewFromFile(keyPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && o.rootKeyFile == "" {
			return fmt.Errorf("restore: %s has no root.key: pass the root key the backup was made under with -root-key-file", o.data)
		}
		return fmt.Errorf("restore: %w", err)
	}
	defer be.Close()
	store := filepath.Join(o.data, "store")
	if ents, _ := os.ReadDir(store); keyPath != dest && len(ents) == 0 {
		// (A store that is not empty is refused by Restore, for that.)
		// A root.key in the target that is another key would be a trap:
		// serve and the commands would read it and refuse the store.
		if other, err := memory.NewFromFile(dest); err == nil {
			a, aerr := be.CheckValue(ctx)
			b, berr := other.CheckValue(ctx)
			other.Close()
			if aerr != nil || berr != nil || subtle.ConstantTimeCompare(a, b) != 1 {
				return fmt.Errorf("restore: %s holds another root key than %s: the restored directory would not open with it; remove it, or restore elsewhere", dest, keyPath)
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restore: %s is in the way: %w", dest, err)
		}
	}
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	opts := append([]kms.Option{kms.WithDirectory(store), kms.WithLogger(slog.New(slog.DiscardHandler))}, engineOptions...)
	info, err := kms.Restore(ctx, f, be, opts...)
	switch {
	case errors.Is(err, kms.ErrBackendMismatch):
		return fmt.Errorf("restore: root key %s: %w; nothing was written", keyPath, err)
	case errors.Is(err, kms.ErrAlreadyExists):
		return fmt.Errorf("restore: %s: %w; nothing was written", store, err)
	case err != nil:
		return fmt.Errorf("restore: %w", err)
	}
	if *copyKey {
		if err := copyRootKey(keyPath, dest); err != nil {
			return fmt.Errorf("restore: the key store is restored in %s, but the root key was not copied: %w (copy it by hand, or pass -root-key-file to serve)", store, err)
		}
		keyPath = dest
	}
	j := restoreJSON{Data: o.data, Store: store, RootKeyFile: keyPath, Keys: info.Keys, Records: info.Records,
		Backup: backupInfoJSON(file, &info.Backup)}
	if err := s.emit(&o, j, fields("restored", store, "root key", keyPath, "keys", strconv.Itoa(info.Keys),
		"records", strconv.Itoa(info.Records), "backup", file, "backup created", dash(stamp(info.Backup.CreatedAt)),
		"backup revision", strconv.FormatInt(info.Backup.Revision, 10), "backup sha256", info.Backup.SHA256)); err != nil {
		return err
	}
	if _, err := os.Stat(dest); err != nil {
		fmt.Fprintf(s.err, "note: %s has no root.key: pass -root-key-file %s to serve and to the commands\n", o.data, keyPath)
	}
	return nil
}

// copyRootKey copies the root key file src to dst (which must not exist),
// mode 0600, durably (atomicfile.Create: written to a temporary file,
// synced, linked into place, never over a file, and the directory synced).
func copyRootKey(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	defer clear(data)
	return atomicfile.Create(dst, data)
}

// verifyBackupJSON is verify-backup's result.
type verifyBackupJSON struct {
	File    string      `json:"file"`
	OK      bool        `json:"ok"`
	Problem string      `json:"problem,omitempty"`
	Backup  *backupJSON `json:"backup,omitempty"`
}

// verifyBackupCmd runs kms.VerifyBackup: exit 0 for a sound backup, 4
// (exitProblems) for an invalid one, 1 when the file cannot be read.
func verifyBackupCmd(ctx context.Context, args []string, s *stdio) error {
	var o dataOpts
	fl := newFlags("verify-backup", "FILE", "Check the backup FILE offline (kms.VerifyBackup): its format, its SHA-256 digest,\n"+
		"every record's checksum and that the records agree with each other. It needs no data\n"+
		"directory and no root key, and does not check that a root key opens the material\n"+
		"(restore does, before it writes anything). Exit 0: sound; 4: the backup is invalid\n"+
		"(truncated, altered, not a backup); 1: the file could not be read.", s, nil)
	fl.StringVar(&o.output, "o", "table", "output format: table or json")
	pos, err := parseArgs(fl, args, &o, 1, 1)
	if err != nil {
		return err
	}
	file := pos[0]
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("verify-backup: %w", err)
	}
	defer f.Close()
	info, err := kms.VerifyBackup(ctx, f)
	if err != nil && !errors.Is(err, kms.ErrBackupInvalid) {
		return fmt.Errorf("verify-backup: %w", err)
	}
	if err != nil {
		if o.output == "json" {
			if jerr := s.emit(&o, verifyBackupJSON{File: file, Problem: err.Error()}, table{}); jerr != nil {
				return jerr
			}
		}
		return &exitError{exitProblems, fmt.Errorf("verify-backup: %s: %w", file, err)}
	}
	bj := backupInfoJSON(file, info)
	if o.output == "json" {
		return s.emit(&o, verifyBackupJSON{File: file, OK: true, Backup: &bj}, table{})
	}
	_, err = fmt.Fprintf(s.out, "backup %s is sound: created %s, revision %d, %s, %s, %d bytes, sha256 %s\n",
		file, dash(bj.CreatedAt), info.Revision, plural(info.Keys, "key"), plural(info.Records, "record"), info.Size, info.SHA256)
	return err
}

// inside reports whether path is dir or under it (lexically, after
// making both absolute).
func inside(path, dir string) bool {
	p, err1 := filepath.Abs(path)
	d, err2 := filepath.Abs(dir)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(d, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}
