package token

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
)

// GeneratorIDSize is the number of random bytes in a generator id; the id
// is their lowercase hex encoding (64 characters).
const GeneratorIDSize = 32

// NewGeneratorID returns a fresh token-generator id: GeneratorIDSize bytes
// read from r, hex encoded. A nil r means crypto/rand.Reader. A short read
// fails with the reader's error wrapped.
func NewGeneratorID(r io.Reader) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	var b [GeneratorIDSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("token: generator id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
