package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pocketkms/kms"
)

func init() {
	register(command{"reencrypt", "move a file of ciphertexts to a key's current version (resumable)", reencryptCmd})
}

// Suffixes of reencrypt's work files, next to the output file.
const (
	partialSuffix    = ".reencrypt-partial"
	checkpointSuffix = ".reencrypt-checkpoint"
	// maxLine is the longest input line reencrypt reads.
	maxLine = 16 << 20
)

// reencryptCheckpointed, when not nil, is called after every checkpoint
// with the number of input lines it covers (tests interrupt there).
var reencryptCheckpointed func(lines int64)

// checkpoint is what reencrypt has made durable: the first Line lines of
// the input (InputOffset bytes) are in the partial output file, whose
// first OutputOffset bytes hold them. It names the job so that a resumed
// run is the same job.
type checkpoint struct {
	Format       int    `json:"format"`
	Input        string `json:"input"`
	InputSize    int64  `json:"inputSize"`
	InputModTime int64  `json:"inputModTimeNs"`
	KeyTag       string `json:"keyTag"`
	Version      uint32 `json:"version"`
	Field        string `json:"field"`
	ContextHash  string `json:"contextSha256"`
	Line         int64  `json:"line"`
	InputOffset  int64  `json:"inputOffset"`
	OutputOffset int64  `json:"outputOffset"`
	Reencrypted  int64  `json:"reencrypted"`
	Current      int64  `json:"alreadyCurrent"`
	Blank        int64  `json:"blank"`
}

// sameJob reports whether c was written by the job want describes.
func (c *checkpoint) sameJob(want *checkpoint) bool {
	return c.Format == want.Format && c.Input == want.Input && c.InputSize == want.InputSize &&
		c.InputModTime == want.InputModTime && c.KeyTag == want.KeyTag && c.Version == want.Version && c.Field == want.Field &&
		c.ContextHash == want.ContextHash
}

type reencryptJSON struct {
	Input       string `json:"input"`
	Output      string `json:"output"`
	KeyTag      string `json:"keyTag"`
	Version     uint32 `json:"version"`
	Lines       int64  `json:"lines"`
	Reencrypted int64  `json:"reencrypted"`
	Current     int64  `json:"alreadyCurrent"`
	Blank       int64  `json:"blank"`
	ResumedAt   int64  `json:"resumedAtLine"`
}

func reencryptCmd(ctx context.Context, args []string, s *stdio) error {
	var o dataOpts
	var out, field, encCtx, progress string
	var inPlace, restart, force bool
	var every int64
	fs := newFlags("reencrypt", "KEY INPUT",
		"Re-encrypt every ciphertext in INPUT under KEY's current version, inside the Engine\n"+
			"(no plaintext leaves it), writing the result to -out or, with -in-place, over INPUT.\n"+
			"INPUT has one ciphertext a line or, with -field, one JSON object a line (JSON Lines)\n"+
			"whose member at the dotted path holds the ciphertext; the rest of each line is kept\n"+
			"byte for byte. Blank lines and ciphertexts already at the current version are copied.\n"+
			"\n"+
			"The output is written to OUT"+partialSuffix+" and renamed to OUT only when complete,\n"+
			"so INPUT is never overwritten by a partial result. Progress is checkpointed to\n"+
			"OUT"+checkpointSuffix+" (every -checkpoint-every lines, and when interrupted):\n"+
			"interrupted (Ctrl-C: exit 5) or killed, the same command resumes where it stopped.\n"+
			"A line that fails stops the run at that line (exit 1; resumable once the cause is\n"+
			"fixed, as long as INPUT is unchanged).", s, &o)
	fs.StringVar(&out, "out", "", "output file (not INPUT; see -in-place)")
	fs.BoolVar(&inPlace, "in-place", false, "replace INPUT with the complete output")
	fs.BoolVar(&force, "force", false, "replace an existing -out file")
	fs.StringVar(&field, "field", "", "JSON Lines: dotted path of the ciphertext member (e.g. data.ct)")
	fs.StringVar(&encCtx, "context", "", "encryption context of every ciphertext")
	fs.StringVar(&progress, "progress", "auto", "progress: bar (on standard error), none, or auto (bar when standard error is a terminal)")
	fs.BoolVar(&restart, "restart", false, "discard a checkpoint of an earlier run and start over")
	fs.Int64Var(&every, "checkpoint-every", 10000, "lines between checkpoints")
	pos, err := parseArgs(fs, args, &o, 2, 2)
	if err != nil {
		return err
	}
	input := pos[1]
	switch {
	case (out == "") == !inPlace:
		return usagef("reencrypt: give -out FILE or -in-place")
	case progress != "auto" && progress != "bar" && progress != "none":
		return usagef("reencrypt: -progress must be auto, bar or none")
	case every < 1:
		return usagef("reencrypt: -checkpoint-every must be at least 1")
	case field != "" && slicesContainsEmpty(strings.Split(field, ".")):
		return usagef("reencrypt: -field %q is not a dotted path of member names", field)
	}
	in, err := os.Open(input)
	if err != nil {
		return fmt.Errorf("reencrypt: %w", err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return fmt.Errorf("reencrypt: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("reencrypt: %s is not a regular file", input)
	}
	if inPlace {
		out = input
	} else if ofi, err := os.Stat(out); err == nil && os.SameFile(fi, ofi) {
		return usagef("reencrypt: -out is INPUT: use -in-place to replace INPUT")
	}
	absIn, err := filepath.Abs(input)
	if err != nil {
		return fmt.Errorf("reencrypt: %w", err)
	}
	bar := progress == "bar" || (progress == "auto" && s.errTerminal)

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	return o.withKey(ctx, pos[0], func(e *kms.Engine, tag string) error {
		k, err := e.GetKey(ctx, tag)
		if err != nil {
			return err
		}
		sum := sha256.Sum256([]byte(encCtx))
		job := &checkpoint{Format: 1, Input: absIn, InputSize: fi.Size(), InputModTime: fi.ModTime().UnixNano(),
			KeyTag: tag, Version: k.CurrentVersion, Field: field, ContextHash: hex.EncodeToString(sum[:])}
		r := &reencryptor{e: e, tag: tag, current: k.CurrentVersion, field: strings.Split(field, "."), ctx: encCtxBytes(encCtx),
			in: in, final: out, partial: out + partialSuffix, ckptPath: out + checkpointSuffix, every: every, s: s, total: fi.Size()}
		if field == "" {
			r.field = nil
		}
		if bar {
			r.bar = &progressBar{w: s.err, total: fi.Size()}
		}
		ck, err := r.start(job, restart, force || inPlace)
		if err != nil {
			return err
		}
		resumed := ck.Line
		if resumed > 0 {
			fmt.Fprintf(s.err, "reencrypt: resuming %s at line %d\n", input, resumed+1)
		}
		if err := r.run(ctx, ck); err != nil {
			return err
		}
		j := reencryptJSON{Input: input, Output: out, KeyTag: tag, Version: k.CurrentVersion, Lines: ck.Line,
			Reencrypted: ck.Reencrypted, Current: ck.Current, Blank: ck.Blank, ResumedAt: resumed}
		if o.output == "json" {
			return s.emit(&o, j, table{})
		}
		note := ""
		if resumed > 0 {
			note = fmt.Sprintf(" (resumed at line %d)", resumed+1)
		}
		_, err = fmt.Fprintf(s.out, "reencrypted %s to %s: %d lines, %d re-encrypted to version %d, %d already current, %d blank%s\n",
			input, out, ck.Line, ck.Reencrypted, k.CurrentVersion, ck.Current, ck.Blank, note)
		return err
	})
}

func slicesContainsEmpty(parts []string) bool {
	for _, p := range parts {
		if p == "" {
			return true
		}
	}
	return false
}

func encCtxBytes(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

// reencryptor is one run of reencrypt.
type reencryptor struct {
	e                        *kms.Engine
	tag                      string
	current                  uint32
	field                    []string
	ctx                      []byte
	in                       *os.File
	final, partial, ckptPath string
	every                    int64
	s                        *stdio
	bar                      *progressBar
	total                    int64
	outF                     *os.File
}

// start reads or creates the checkpoint and opens the partial output at
// its end, and the input at the checkpoint's offset.
func (r *reencryptor) start(job *checkpoint, restart, force bool) (*checkpoint, error) {
	ck := *job
	raw, err := os.ReadFile(r.ckptPath)
	switch {
	case err == nil && !restart:
		var have checkpoint
		if err := json.Unmarshal(raw, &have); err != nil {
			return nil, fmt.Errorf("reencrypt: checkpoint %s is unreadable (%v): pass -restart to start over", r.ckptPath, err)
		}
		if !have.sameJob(job) {
			return nil, fmt.Errorf("reencrypt: checkpoint %s is of another job (other input, key, field or context, the input changed, or the key was rotated since): pass -restart to start over", r.ckptPath)
		}
		ck = have
	case err == nil || errors.Is(err, fs.ErrNotExist):
		if !force && r.final != job.Input {
			if _, err := os.Lstat(r.final); err == nil {
				return nil, fmt.Errorf("reencrypt: %s exists: pass -force to replace it", r.final)
			}
		}
		// A fresh start: no checkpoint, an empty partial file.
		if err := os.Remove(r.ckptPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("reencrypt: %w", err)
		}
	default:
		return nil, fmt.Errorf("reencrypt: checkpoint: %w", err)
	}
	flags := os.O_RDWR | os.O_CREATE
	if ck.Line == 0 {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(r.partial, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("reencrypt: %w", err)
	}
	if ck.Line > 0 {
		// Lines written after the last checkpoint are written again.
		fi, err := f.Stat()
		if err == nil && fi.Size() < ck.OutputOffset {
			err = fmt.Errorf("%s is shorter than its checkpoint says: pass -restart to start over", r.partial)
		}
		if err == nil {
			err = f.Truncate(ck.OutputOffset)
		}
		if err == nil {
			_, err = f.Seek(ck.OutputOffset, io.SeekStart)
		}
		if err == nil {
			_, err = r.in.Seek(ck.InputOffset, io.SeekStart)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("reencrypt: resume: %w", err)
		}
	}
	r.outF = f
	return &ck, nil
}

// run re-encrypts from the checkpoint to the end of the input, then
// renames the partial output over the final one.
func (r *reencryptor) run(ctx context.Context, ck *checkpoint) (err error) {
	defer func() {
		if r.outF != nil {
			r.outF.Close()
		}
	}()
	br := bufio.NewReaderSize(r.in, 64<<10)
	bw := bufio.NewWriterSize(r.outF, 64<<10)
	save := func() error {
		if err := bw.Flush(); err != nil {
			return err
		}
		if err := r.outF.Sync(); err != nil {
			return err
		}
		if err := writeFileAtomic(r.ckptPath, ck); err != nil {
			return err
		}
		if reencryptCheckpointed != nil {
			reencryptCheckpointed(ck.Line)
		}
		return nil
	}
	if r.bar != nil {
		r.bar.update(ck.InputOffset, ck.Line)
	}
	since := int64(0)
	for {
		if ctx.Err() != nil {
			if err := save(); err != nil {
				return fmt.Errorf("reencrypt: interrupted at line %d, and the checkpoint failed: %w", ck.Line+1, err)
			}
			if r.bar != nil {
				r.bar.finish()
			}
			return &exitError{exitInterrupted, fmt.Errorf("reencrypt: interrupted after line %d of %s: run the same command again to resume", ck.Line, ck.Input)}
		}
		line, rerr := readLine(br)
		if len(line) > 0 {
			outLine, kind, err := r.convert(ctx, line)
			if err != nil {
				if ctx.Err() != nil {
					continue // interrupted mid-call: checkpoint above
				}
				if serr := save(); serr != nil {
					err = errors.Join(err, serr)
				}
				if r.bar != nil {
					r.bar.finish()
				}
				return fmt.Errorf("reencrypt: line %d: %w (nothing was written to %s; the lines before it are checkpointed, so the same command resumes there once the cause is fixed, e.g. a disabled version enabled again; a changed input needs -restart)", ck.Line+1, err, r.final)
			}
			if _, err := bw.Write(outLine); err != nil {
				return fmt.Errorf("reencrypt: write: %w", err)
			}
			ck.Line++
			ck.InputOffset += int64(len(line))
			ck.OutputOffset += int64(len(outLine))
			switch kind {
			case lineReencrypted:
				ck.Reencrypted++
			case lineCurrent:
				ck.Current++
			case lineBlank:
				ck.Blank++
			}
			if r.bar != nil {
				r.bar.update(ck.InputOffset, ck.Line)
			}
			if since++; since >= r.every {
				since = 0
				if err := save(); err != nil {
					return fmt.Errorf("reencrypt: checkpoint: %w", err)
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("reencrypt: read: %w", rerr)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("reencrypt: write: %w", err)
	}
	if err := r.outF.Sync(); err != nil {
		return fmt.Errorf("reencrypt: write: %w", err)
	}
	if err := r.outF.Close(); err != nil {
		return fmt.Errorf("reencrypt: write: %w", err)
	}
	r.outF = nil
	if r.bar != nil {
		r.bar.finish()
	}
	// The input must still be the file the job started on.
	if fi, err := os.Stat(r.in.Name()); err != nil || fi.Size() != ck.InputSize || fi.ModTime().UnixNano() != ck.InputModTime {
		return fmt.Errorf("reencrypt: %s changed while it was being read: output left in %s", r.in.Name(), r.partial)
	}
	if err := os.Rename(r.partial, r.final); err != nil {
		return fmt.Errorf("reencrypt: %w", err)
	}
	syncDir(filepath.Dir(r.final))
	if err := os.Remove(r.ckptPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reencrypt: remove checkpoint: %w", err)
	}
	return nil
}

// readLine returns the next line with its terminator ("" at the end).
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		line = append(line, frag...)
		if len(line) > maxLine {
			return nil, fmt.Errorf("a line is longer than %d bytes", maxLine)
		}
		if err != bufio.ErrBufferFull {
			return line, err
		}
	}
}

type lineKind int

const (
	lineReencrypted lineKind = iota
	lineCurrent
	lineBlank
)

// convert re-encrypts one line (with its terminator).
func (r *reencryptor) convert(ctx context.Context, line []byte) ([]byte, lineKind, error) {
	body := bytes.TrimRight(line, "\r\n")
	end := line[len(body):]
	if len(bytes.TrimSpace(body)) == 0 {
		return line, lineBlank, nil
	}
	var start, stop int
	if r.field != nil {
		var err error
		if start, stop, err = jsonStringSpan(body, r.field); err != nil {
			return nil, 0, err
		}
	} else {
		trimmed := bytes.TrimSpace(body)
		start = bytes.Index(body, trimmed)
		stop = start + len(trimmed)
	}
	ct := string(body[start:stop])
	if r.field != nil {
		if err := json.Unmarshal(body[start:stop], &ct); err != nil {
			return nil, 0, err
		}
	}
	if ciphertextVersion(ct) == r.current {
		return line, lineCurrent, nil
	}
	nct, err := r.e.ReEncrypt(ctx, r.tag, ct, r.ctx)
	if err != nil {
		return nil, 0, err
	}
	repl := nct
	if r.field != nil {
		q, _ := json.Marshal(nct)
		repl = string(q)
	}
	out := make([]byte, 0, len(line)-(stop-start)+len(repl))
	out = append(out, body[:start]...)
	out = append(out, repl...)
	out = append(out, body[stop:]...)
	out = append(out, end...)
	return out, lineReencrypted, nil
}

// ciphertextVersion is N of "ncpkms:v{N}:…", 0 when ct is not of that form.
func ciphertextVersion(ct string) uint32 {
	rest, ok := strings.CutPrefix(ct, "ncpkms:v")
	if !ok {
		return 0
	}
	n, _, ok := strings.Cut(rest, ":")
	if !ok {
		return 0
	}
	v, err := strconv.ParseUint(n, 10, 32)
	if err != nil {
		return 0
	}
	return uint32(v)
}

// jsonStringSpan finds the string member at path in the JSON object line
// and returns the byte span of its quoted value.
func jsonStringSpan(line []byte, path []string) (int, int, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	where := "-field " + strings.Join(path, ".")
	tok, err := dec.Token()
	if err != nil {
		return 0, 0, fmt.Errorf("not a JSON object: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return 0, 0, errors.New("not a JSON object")
	}
	for depth := 0; ; {
		// At the start of an object's members, looking for path[depth].
		tok, err := dec.Token()
		if err != nil {
			return 0, 0, fmt.Errorf("malformed JSON: %w", err)
		}
		if d, ok := tok.(json.Delim); ok && d == '}' {
			return 0, 0, fmt.Errorf("%s: no such member", where)
		}
		name, _ := tok.(string)
		if name != path[depth] {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return 0, 0, fmt.Errorf("malformed JSON: %w", err)
			}
			continue
		}
		if depth == len(path)-1 {
			after := int(dec.InputOffset())
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return 0, 0, fmt.Errorf("malformed JSON: %w", err)
			}
			stop := int(dec.InputOffset())
			start := after + bytes.IndexByte(line[after:stop], '"')
			if len(raw) == 0 || raw[0] != '"' || start < after {
				return 0, 0, fmt.Errorf("%s is not a string", where)
			}
			return start, stop, nil
		}
		tok, err = dec.Token()
		if err != nil {
			return 0, 0, fmt.Errorf("malformed JSON: %w", err)
		}
		if d, ok := tok.(json.Delim); !ok || d != '{' {
			return 0, 0, fmt.Errorf("%s: %s is not an object", where, strings.Join(path[:depth+1], "."))
		}
		depth++
	}
}

// writeFileAtomic writes v as JSON to path through a temporary file and a
// rename, so that path always holds a whole checkpoint.
func writeFileAtomic(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	syncDir(filepath.Dir(path))
	return nil
}

// syncDir makes a rename in dir durable (best effort: not every system
// can sync a directory).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// progressBar draws "[=====>    ]  45% 45000 lines  12000 lines/s" on a
// terminal, redrawn in place whenever the whole percentage changes.
type progressBar struct {
	w       io.Writer
	total   int64
	last    int
	started time.Time
	drawn   bool
}

const barWidth = 30

func (b *progressBar) update(done, lines int64) {
	pct := 100
	if b.total > 0 {
		pct = int(done * 100 / b.total)
	}
	if b.drawn && pct == b.last {
		return
	}
	if b.started.IsZero() {
		b.started = time.Now()
	}
	b.last, b.drawn = pct, true
	fill := pct * barWidth / 100
	bar := strings.Repeat("=", fill)
	if fill < barWidth {
		bar += ">" + strings.Repeat(" ", barWidth-fill-1)
	}
	rate := ""
	if el := time.Since(b.started).Seconds(); el > 0.5 {
		rate = fmt.Sprintf("  %.0f lines/s", float64(lines)/el)
	}
	fmt.Fprintf(b.w, "\r[%s] %3d%% %d lines%s\x1b[K", bar, pct, lines, rate)
}

// finish ends the bar's line.
func (b *progressBar) finish() {
	if b.drawn {
		fmt.Fprintln(b.w)
	}
}
