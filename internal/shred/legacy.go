package shred

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/pocketkms/kms/internal/atomicfile"
	"github.com/pocketkms/kms/internal/keytag"
)

// migrateHook, when set (tests), is called after each step of Migrate
// ("slots": the slots written and synced; "zeroed": the files overwritten
// and synced; "unlinked": the files unlinked, the directory not yet
// synced); an error stops Migrate there, as a crash would.
var migrateHook func(step string) error

// legacyName splits a former-layout file name into its tag and kind;
// ok is false for any other name (temporary files included).
func legacyName(name string) (tag string, kind byte, ok bool) {
	if keytag.Valid(name) {
		return name, kindKey, true
	}
	if t, found := strings.CutSuffix(name, NextSuffix); found && keytag.Valid(t) {
		return t, kindNext, true
	}
	return "", 0, false
}

// legacyTemp reports whether name is the temporary file of a
// former-layout Create or Next interrupted before its rename.
func legacyTemp(name string) bool {
	t, ok := strings.CutSuffix(name, tmpSuffix)
	if !ok {
		return false
	}
	_, _, ok = legacyName(t)
	return ok
}

// loadLegacy lists the directory for files of the former layout and
// reads those whose tag and kind have no valid slot, in parallel (an
// Engine opening a directory of many keys before its migration reads
// them all). A damaged file makes its key damaged (Get reports it); a
// file that cannot be read fails the Open, as the former layout's Get
// did.
func (ks *Keys) loadLegacy() error {
	ents, err := os.ReadDir(ks.dir)
	if err != nil {
		return err
	}
	type job struct {
		name, tag string
		kind      byte
	}
	var jobs []job
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() {
			continue
		}
		if legacyTemp(name) {
			ks.addLegacy(name)
			continue
		}
		tag, kind, ok := legacyName(name)
		if !ok {
			continue
		}
		ks.addLegacy(name)
		m := ks.keys
		if kind == kindNext {
			m = ks.nexts
		}
		if m[tag] == nil {
			jobs = append(jobs, job{name, tag, kind})
		}
	}
	if len(jobs) == 0 {
		return nil
	}
	keys := make([]*Key, len(jobs))
	errs := make([]error, len(jobs))
	workers := max(1, min(16, len(jobs)/64))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(jobs); i += workers {
				raw, err := readSmall(filepath.Join(ks.dir, jobs[i].name))
				if err != nil {
					errs[i] = err
					continue
				}
				b, err := unmarshal(jobs[i].tag, raw)
				clear(raw)
				if err == nil {
					keys[i] = newKey(jobs[i].tag, b)
					keys[i].slot = noSlot
				}
			}
		})
	}
	wg.Wait()
	for i, j := range jobs {
		switch {
		case errs[i] != nil:
			return fmt.Errorf("read key file: %w", errs[i])
		case keys[i] == nil:
			ks.setDamaged(j.tag, j.kind)
		case j.kind == kindNext:
			ks.nexts[j.tag] = keys[i]
		default:
			ks.keys[j.tag] = keys[i]
		}
	}
	return nil
}

func (ks *Keys) addLegacy(name string) {
	if ks.legacy == nil {
		ks.legacy = map[string]bool{}
	}
	ks.legacy[name] = true
}

// Migrate moves the keys of the former layout's files into the slot
// file: every key read from a file is written into a slot and the slots
// synced; then each such file (and the temporary files of interrupted
// former-layout Creates) is overwritten with zeros and synced, unlinked,
// and the directory synced. It returns how many keys it moved. Damaged
// files stay (Get reports them). A crash or failure at any step leaves
// every key readable (see the package documentation); the next Migrate
// finishes the work. Only a writable user of the directory calls it.
func (ks *Keys) Migrate() (int, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.closed {
		return 0, ErrClosed
	}
	if len(ks.legacy) == 0 {
		return 0, nil
	}
	var ws []slotWrite
	var moved []*Key
	defer func() {
		for _, w := range ws {
			clear(w.data)
		}
	}()
	for _, kind := range []byte{kindKey, kindNext} {
		m := ks.keys
		if kind == kindNext {
			m = ks.nexts
		}
		for tag, k := range m {
			if k.slot != noSlot {
				continue
			}
			slot, err := ks.allocLocked()
			if err != nil {
				ks.unallocLocked(ws)
				return 0, fmt.Errorf("shred: migrate: %w", err)
			}
			ks.seq++
			data := make([]byte, slotSize)
			marshalSlot(data, kind, ks.seq, tag, k.b[:])
			ws = append(ws, slotWrite{slot, data})
			moved = append(moved, k)
		}
	}
	if len(ws) > 0 {
		f, err := ks.fileLocked()
		if err == nil {
			if err = writeSlots(f, ws); err == nil {
				err = atomicfile.Datasync(f)
			}
		}
		if err != nil {
			ks.unallocLocked(ws)
			return 0, fmt.Errorf("shred: migrate: %w", err)
		}
	}
	// writeSlots sorted ws by slot: match them to moved by content.
	slotOf := make(map[*Key]int32, len(moved))
	for _, w := range ws {
		m := ks.keys
		if w.data[offKind] == kindNext {
			m = ks.nexts
		}
		slotOf[m[string(w.data[offTag:offKey])]] = w.slot
	}
	for _, k := range moved {
		k.slot = slotOf[k]
	}
	if err := step("slots"); err != nil {
		return len(moved), err
	}
	// Every key of a file has its slot: shred the files, except damaged
	// ones (no slot replaces them).
	var names []string
	for name := range ks.legacy {
		if tag, kind, ok := legacyName(name); ok && ks.damaged[tag]&kind != 0 {
			continue
		}
		names = append(names, name)
	}
	sort.Strings(names)
	if err := ks.shredFilesLocked(names); err != nil {
		return len(moved), fmt.Errorf("shred: migrate: %w", err)
	}
	return len(moved), nil
}

func step(name string) error {
	if migrateHook != nil {
		return migrateHook(name)
	}
	return nil
}

// unallocLocked returns the slots of ws, written or not, to the free list
// after a failed migration (what reached them names keys whose files
// stay, so a file still wins; the next Migrate rewrites them).
func (ks *Keys) unallocLocked(ws []slotWrite) {
	for _, w := range ws {
		ks.release(w.slot)
	}
}

// shredFilesLocked overwrites the former-layout files names with zeros
// and syncs them (in parallel), unlinks them, and syncs the directory.
func (ks *Keys) shredFilesLocked(names []string) error {
	if len(names) == 0 {
		return nil
	}
	// Many files (a migration): zeros written to all, then one flush for
	// all of them, instead of an fsync each (which made migrating 100,000
	// keys take over a minute).
	batch := canSyncAll && len(names) >= batchSync
	workers := max(1, min(8, len(names)/64))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(names); i += workers {
				overwrite(filepath.Join(ks.dir, names[i]), !batch)
			}
		})
	}
	wg.Wait()
	if batch {
		syncAll(ks.dir)
	}
	if err := step("zeroed"); err != nil {
		return err
	}
	// Unlinking costs the kernel 60-80 µs of CPU a file here, in
	// parallel or not (they serialise on the directory's lock): a
	// 100,000-key migration's largest part, paid once.
	rmErrs := make([]error, len(names))
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(names); i += workers {
				if err := os.Remove(filepath.Join(ks.dir, names[i])); err != nil && !errors.Is(err, fs.ErrNotExist) {
					rmErrs[i] = err
				}
			}
		})
	}
	wg.Wait()
	var errs []error
	for i, name := range names {
		if rmErrs[i] != nil {
			errs = append(errs, rmErrs[i])
			continue
		}
		delete(ks.legacy, name)
	}
	if err := step("unlinked"); err != nil {
		return err
	}
	// Synced even when a file was already gone: an earlier attempt may
	// have unlinked it and failed before its sync.
	if err := syncDir(ks.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// shredLegacyLocked shreds the former-layout files of names that exist
// (with their temporary files): what Delete, Promote and DropNext do to
// a key not migrated yet.
func (ks *Keys) shredLegacyLocked(names ...string) error {
	var present []string
	for _, n := range names {
		for _, name := range []string{n, n + tmpSuffix} {
			if ks.legacy[name] {
				present = append(present, name)
			}
		}
	}
	return ks.shredFilesLocked(present)
}

// pruneTempsLocked shreds the temporary files of interrupted
// former-layout Creates.
func (ks *Keys) pruneTempsLocked() error {
	var temps []string
	for name := range ks.legacy {
		if legacyTemp(name) {
			temps = append(temps, name)
		}
	}
	sort.Strings(temps)
	return ks.shredFilesLocked(temps)
}

// batchSync is the number of files from which shredFilesLocked flushes
// the zeros written over them with one syncAll.
const batchSync = 64

// overwrite replaces a file's bytes with zeros and (with sync) syncs
// them, best effort: the unlink that follows is what Delete promises.
func overwrite(path string, sync bool) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return
	}
	if _, err := f.WriteAt(make([]byte, min(fi.Size(), 1<<16)), 0); err == nil && sync {
		f.Sync()
	}
}
