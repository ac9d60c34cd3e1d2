//go:build cgo

package softhsm

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
)

// maxPINFileSize bounds what a PIN file may hold.
const maxPINFileSize = 256

// bytes returns a copy of the PIN that the caller clears.
func (p PIN) bytes() []byte {
	if !p.IsSet() {
		return nil
	}
	return bytes.Clone(p.p.b)
}

// validate checks everything but the PIN file's content.
func (c *Config) validate() error {
	switch {
	case c.Module == "":
		return fmt.Errorf("%w: no module path", ErrInvalidConfig)
	case c.TokenLabel == "" && c.TokenSerial == "":
		return fmt.Errorf("%w: no token label or serial number", ErrInvalidConfig)
	case len(c.TokenLabel) > 32:
		return fmt.Errorf("%w: token label longer than 32 bytes", ErrInvalidConfig)
	case len(c.TokenSerial) > 16:
		return fmt.Errorf("%w: token serial number longer than 16 bytes", ErrInvalidConfig)
	case c.PIN.IsSet() && c.PINFile != "":
		return fmt.Errorf("%w: both PIN and PIN file are set", ErrInvalidConfig)
	case !c.PIN.IsSet() && c.PINFile == "":
		return fmt.Errorf("%w: no PIN or PIN file", ErrInvalidConfig)
	case c.MaxSessions < 0 || c.MaxSessions > maxMaxSessions:
		return fmt.Errorf("%w: max sessions %d is outside 0..%d", ErrInvalidConfig, c.MaxSessions, maxMaxSessions)
	}
	return nil
}

func (c *Config) maxSessions() int {
	if c.MaxSessions == 0 {
		return DefaultMaxSessions
	}
	return c.MaxSessions
}

// pin returns the user PIN, from PIN or from PINFile, as a slice the
// caller clears. Errors name the file, never its content.
func (c *Config) pin() ([]byte, error) {
	if c.PIN.IsSet() {
		return c.PIN.bytes(), nil
	}
	f, err := os.Open(c.PINFile)
	if err != nil {
		return nil, fmt.Errorf("softhsm: PIN file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("softhsm: PIN file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: PIN file %q is not a regular file", ErrInvalidConfig, c.PINFile)
	}
	if runtime.GOOS != "windows" && runtime.GOOS != "plan9" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: PIN file %q has mode %v, which gives access to group or others (use 0600)",
			ErrInvalidConfig, c.PINFile, fi.Mode().Perm())
	}
	buf := make([]byte, maxPINFileSize+1)
	defer clear(buf)
	n, err := io.ReadFull(f, buf)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return nil, fmt.Errorf("softhsm: PIN file %q: read failed", c.PINFile)
	}
	if n > maxPINFileSize {
		return nil, fmt.Errorf("%w: PIN file %q is longer than %d bytes", ErrInvalidConfig, c.PINFile, maxPINFileSize)
	}
	data := buf[:n]
	data = bytes.TrimSuffix(data, []byte("\n"))
	data = bytes.TrimSuffix(data, []byte("\r"))
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: PIN file %q is empty", ErrInvalidConfig, c.PINFile)
	}
	if bytes.ContainsAny(data, "\r\n") {
		return nil, fmt.Errorf("%w: PIN file %q holds more than one line", ErrInvalidConfig, c.PINFile)
	}
	return bytes.Clone(data), nil
}
