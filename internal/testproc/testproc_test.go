package testproc

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestChildProcess re-runs itself as a child in each way the harnesses use:
// printing lines and an exit status, echoing its standard input, and
// hanging until killed or timed out.
func TestChildProcess(t *testing.T) {
	if args, ok := Child(t); ok {
		switch args[0] {
		case "exit":
			fmt.Println("line 1")
			fmt.Println("line 2")
			fmt.Fprintln(os.Stderr, "to stderr")
			code, _ := strconv.Atoi(args[1])
			os.Exit(code)
		case "echo":
			in := bufio.NewScanner(os.Stdin)
			for in.Scan() {
				fmt.Println("echo " + in.Text())
			}
			os.Exit(0)
		case "hang":
			fmt.Println("started")
			time.Sleep(time.Hour)
		}
		t.Fatalf("unknown child mode %q", args)
	}

	t.Run("output and exit status", func(t *testing.T) {
		out, r := Run(t, Options{}, "exit", "0")
		if r.Err != nil || r.Code != 0 || r.Killed || !slices.Equal(out, []string{"line 1", "line 2"}) || r.Stderr != "to stderr\n" {
			t.Fatalf("%v, %d, %q, %q", r, r.Code, out, r.Stderr)
		}
		_, r = Run(t, Options{}, "exit", "3")
		if r.Err == nil || r.Code != 3 || r.String() != "exit status 3" {
			t.Fatalf("%v, %d", r, r.Code)
		}
	})
	t.Run("stdin", func(t *testing.T) {
		p := Start(t, Options{Stdin: true}, "echo")
		for _, s := range []string{"a", "b"} {
			if err := p.Send(s); err != nil {
				t.Fatal(err)
			}
			if got := <-p.Lines(); got != "echo "+s {
				t.Fatalf("got %q", got)
			}
		}
		p.stdin.Close()
		if r := p.Wait(); r.Err != nil {
			t.Fatal(r)
		}
		if err := Start(t, Options{}, "echo").Send("x"); err == nil {
			t.Fatal("Send without Options.Stdin succeeded")
		}
	})
	t.Run("kill", func(t *testing.T) {
		p := Start(t, Options{}, "hang")
		if got := <-p.Lines(); got != "started" {
			t.Fatalf("got %q", got)
		}
		p.Kill()
		if r := p.Wait(); !r.Killed || r.TimedOut || r.Code != -1 || r.String() != "signal: killed" {
			t.Fatalf("%v, %+v", r, r)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		start := time.Now()
		_, r := Run(t, Options{Timeout: 200 * time.Millisecond}, "hang")
		if !r.TimedOut || !r.Killed || r.Code != -1 || time.Since(start) > time.Minute {
			t.Fatalf("%v, %+v", r, r)
		}
	})
}

func TestTail(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a\nb\n", "a\nb"},
		{"a\nb\nc\nd", "[2 lines before]\nc\nd"},
	} {
		if got := Tail(tc.in, 2); got != tc.want {
			t.Errorf("Tail(%q, 2) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
