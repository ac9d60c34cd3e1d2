package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), nil, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
	for _, want := range []string{"reached B and C", "C decrypted", "C refused the old token", "A refused to encrypt", "all checks passed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunRejectsArguments(t *testing.T) {
	if err := run(context.Background(), []string{"x"}, &bytes.Buffer{}); err == nil {
		t.Fatal("run accepted an argument")
	}
}
