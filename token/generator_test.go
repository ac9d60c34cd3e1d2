package token

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestNewGeneratorID(t *testing.T) {
	id, err := NewGeneratorID(bytes.NewReader(bytes.Repeat([]byte{0xab}, 40)))
	if err != nil {
		t.Fatal(err)
	}
	if id != strings.Repeat("ab", GeneratorIDSize) {
		t.Errorf("id = %q", id)
	}
	a, err := NewGeneratorID(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewGeneratorID(nil)
	if len(a) != 64 || a == b || !validKeyTag(a) {
		t.Errorf("ids %q %q", a, b)
	}
	_, err = NewGeneratorID(bytes.NewReader(make([]byte, GeneratorIDSize-1)))
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.HasPrefix(err.Error(), "token: generator id: ") {
		t.Errorf("short read: %v", err)
	}
}
