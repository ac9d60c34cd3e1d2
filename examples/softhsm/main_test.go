package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	if _, err := os.Stat("/usr/lib/softhsm/libsofthsm2.so"); err != nil {
		skipOrFail(t, "SoftHSM2 module missing: "+err.Error())
	}
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		skipOrFail(t, "softhsm2-util missing")
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-data", t.TempDir()}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, want := range []string{"throw-away SoftHSM2 token", "created RSA2048", "rotated to v2", "all checks passed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunBadURI(t *testing.T) {
	if err := run(context.Background(), []string{"-uri", "pkcs11:slot-id=1"}, &bytes.Buffer{}); err == nil {
		t.Fatal("a slot-id URI was accepted")
	}
}

func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}
