// Package testproc runs the dangerous part of a test in a child process:
// the test binary itself, started again to run that one test, so that a
// crash, a kill or a hang is reported by the parent test instead of ending
// the whole run. It is for tests only.
//
// A test that uses it starts with the child's side, then the parent's:
//
//	func TestX(t *testing.T) {
//		if args, ok := testproc.Child(t); ok {
//			child(t, args) // the dangerous part, in the child process
//			return
//		}
//		p := testproc.Start(t, testproc.Options{}, dir)
//		for line := range p.Lines() {
//			// what the child printed on its standard output
//		}
//		r := p.Wait()
//		...
//	}
//
// [Run] is Start, reading every line, and Wait in one call.
//
// # Limitations
//
// The child runs the top-level test of the caller's t with no flag but
// -test.run: it does not see the parent's flags, and prints nothing of the
// testing package's verbose output.
package testproc

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// envChild names, in a child's environment, the test it runs.
const envChild = "POCKETKMS_TESTPROC_CHILD"

// topTest is the top-level test of t: the one a child runs.
func topTest(t testing.TB) string {
	name, _, _ := strings.Cut(t.Name(), "/")
	return name
}

// Child reports whether this process is a child that Start launched for
// t's top-level test, and returns the arguments Start was given.
func Child(t testing.TB) (args []string, ok bool) {
	if os.Getenv(envChild) != topTest(t) {
		return nil, false
	}
	return flag.Args(), true
}

// Options configures Start. The zero value runs the current test binary.
type Options struct {
	// Binary is the test binary to run; empty means this one. Set it to a
	// copy that an unprivileged SysProcAttr.Credential can execute.
	Binary string
	// SysProcAttr, if set, is the child's (for example its credentials).
	SysProcAttr *syscall.SysProcAttr
	// Stdin gives the child a standard input that Send writes to.
	Stdin bool
	// Timeout, if positive, kills the child that long after it started.
	Timeout time.Duration
}

// Proc is a running child. Its methods are for the test's goroutine.
type Proc struct {
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	stderr   bytes.Buffer
	lines    chan string
	readErr  error // set before lines is closed
	timer    *time.Timer
	killed   atomic.Bool
	timedOut atomic.Bool
	waited   atomic.Bool
	wait     sync.Once
	result   Result
}

// Result is how a child ended.
type Result struct {
	// Err is nil when the child exited with status 0. Otherwise it is an
	// *exec.ExitError, whose message gives the exit status or the signal
	// ("signal: killed"), or the error reading the child's output.
	Err error
	// Code is the exit status, -1 when a signal ended the child.
	Code int
	// Killed: Kill was called, by the test or the timeout. With Code -1
	// it is what ended the child; the child may have ended before.
	Killed bool
	// TimedOut: the timeout ended the child.
	TimedOut bool
	// Stderr is everything the child wrote to its standard error.
	Stderr string
}

// Start runs the test binary again for t's top-level test, as a child for
// which Child returns args. Each line the child prints on its standard
// output arrives on Lines, its standard error is kept for the Result. A
// child the test did not Wait for is killed when the test ends, and what
// it wrote to standard error is logged if the test failed.
func Start(t testing.TB, o Options, args ...string) *Proc {
	t.Helper()
	bin := o.Binary
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			t.Fatalf("testproc: %v", err)
		}
		bin = exe
	}
	name := topTest(t)
	cmd := exec.Command(bin, append([]string{"-test.run=^" + regexp.QuoteMeta(name) + "$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), envChild+"="+name)
	cmd.SysProcAttr = o.SysProcAttr
	p := &Proc{cmd: cmd, lines: make(chan string, 1024)}
	cmd.Stderr = &p.stderr
	var err error
	if o.Stdin {
		if p.stdin, err = cmd.StdinPipe(); err != nil {
			t.Fatalf("testproc: %v", err)
		}
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("testproc: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testproc: start %s: %v", name, err)
	}
	go p.read(stdout)
	if o.Timeout > 0 {
		p.timer = time.AfterFunc(o.Timeout, func() {
			p.timedOut.Store(true)
			p.Kill()
		})
	}
	t.Cleanup(func() {
		if p.waited.Load() {
			return
		}
		p.Kill()
		if r := p.Wait(); t.Failed() && r.Stderr != "" {
			t.Logf("standard error of the child running %s (%v):\n%s", name, r, Tail(r.Stderr, 40))
		}
	})
	return p
}

// read passes the child's output lines (up to 1 MiB each) to Lines.
func (p *Proc) read(stdout io.Reader) {
	defer close(p.lines)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		p.lines <- sc.Text()
	}
	if p.readErr = sc.Err(); p.readErr != nil {
		io.Copy(io.Discard, stdout) // let the child go on writing
	}
}

// Lines delivers the lines the child prints on its standard output; it is
// closed when the child closes its output (normally: when it ends).
func (p *Proc) Lines() <-chan string { return p.lines }

// Send writes line and a newline to the child's standard input (Options.Stdin).
func (p *Proc) Send(line string) error {
	if p.stdin == nil {
		return errors.New("testproc: the child has no standard input (Options.Stdin)")
	}
	_, err := io.WriteString(p.stdin, line+"\n")
	return err
}

// Kill ends the child with SIGKILL. It is harmless once the child has ended.
func (p *Proc) Kill() {
	p.killed.Store(true)
	p.cmd.Process.Kill()
}

// Wait discards the lines not yet read, waits for the child to end and
// reports how it ended. Later calls return the same Result.
func (p *Proc) Wait() Result {
	p.wait.Do(func() {
		p.waited.Store(true)
		for range p.lines {
		}
		err := p.cmd.Wait()
		if p.timer != nil {
			p.timer.Stop()
		}
		if err == nil {
			err = p.readErr
		}
		p.result = Result{
			Err:      err,
			Code:     p.cmd.ProcessState.ExitCode(),
			Killed:   p.killed.Load(),
			TimedOut: p.timedOut.Load(),
			Stderr:   p.stderr.String(),
		}
	})
	return p.result
}

// String says how the child ended: "exit status 0", "signal: killed",
// "signal: killed (timed out)".
func (r Result) String() string {
	s := "exit status 0"
	if r.Err != nil {
		s = r.Err.Error()
	}
	if r.TimedOut {
		s += " (timed out)"
	}
	return s
}

// Run starts the child like Start, waits for it to end and returns the
// lines it printed on its standard output with how it ended.
func Run(t testing.TB, o Options, args ...string) ([]string, Result) {
	t.Helper()
	p := Start(t, o, args...)
	var lines []string
	for l := range p.Lines() {
		lines = append(lines, l)
	}
	return lines, p.Wait()
}

// Tail returns the last n lines of s, for failure messages.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[%d lines before]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
