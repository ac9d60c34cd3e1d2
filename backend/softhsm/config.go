package softhsm

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
)

// DefaultMaxSessions is the size of a Backend's session pool when
// Config.MaxSessions is zero.
const DefaultMaxSessions = 16

// maxMaxSessions bounds Config.MaxSessions.
const maxMaxSessions = 1024

// Config says which PKCS#11 module and token a Backend uses and how it
// logs in. Build it in code or with ParseURI. Its String, GoString,
// Format, MarshalJSON and LogValue methods never show the PIN.
type Config struct {
	// Module is the path of the PKCS#11 library, for SoftHSM2 typically
	// /usr/lib/softhsm/libsofthsm2.so. Required.
	Module string
	// TokenLabel selects the token by its label. At least one of
	// TokenLabel and TokenSerial is required; when both are set the token
	// must match both. Slot numbers are deliberately not accepted: SoftHSM2
	// renumbers slots whenever tokens are added.
	TokenLabel string
	// TokenSerial selects the token by its serial number.
	TokenSerial string
	// PIN is the token's user PIN. Exactly one of PIN and PINFile is
	// required.
	PIN PIN
	// PINFile names a file that holds the user PIN, optionally followed by
	// one "\n" or "\r\n". On Unix-like systems the file must not be
	// accessible to group or others (mode 0600 or 0400). It is read by
	// New and again whenever the token must be logged in again (see the
	// package documentation's Sessions and recovery), never kept.
	PINFile string
	// MaxSessions bounds the Backend's session pool: at most this many
	// operations run in the token at once, further callers wait. Zero
	// means DefaultMaxSessions; at most 1024.
	MaxSessions int
	// NoSessionCopies makes every operation use the token objects
	// directly instead of session-object copies of them (see the package
	// documentation). It is about twice as slow for AES-GCM on SoftHSM2,
	// but a key destroyed by another process stops working at once.
	NoSessionCopies bool
}

// PIN is a token PIN. Its String, GoString, Format, MarshalJSON and
// LogValue methods never show it, and it keeps the PIN behind a pointer,
// so printing a value that holds a PIN in an unexported field shows an
// address, not the PIN. The zero PIN is unset.
type PIN struct{ p *pinValue }

type pinValue struct{ b []byte }

// NewPIN returns pin as a PIN. The empty string gives the unset PIN.
func NewPIN(pin string) PIN {
	if pin == "" {
		return PIN{}
	}
	return PIN{p: &pinValue{b: []byte(pin)}}
}

// IsSet reports whether the PIN holds a value.
func (p PIN) IsSet() bool { return p.p != nil && len(p.p.b) > 0 }

// String returns "[redacted]", or "[unset]" for the zero PIN.
func (p PIN) String() string {
	if !p.IsSet() {
		return "[unset]"
	}
	return "[redacted]"
}

// GoString returns the same text as String.
func (p PIN) GoString() string { return p.String() }

// Format prints the same text as String for every verb.
func (p PIN) Format(f fmt.State, _ rune) { io.WriteString(f, p.String()) }

// MarshalJSON encodes the same text as String as a JSON string.
func (p PIN) MarshalJSON() ([]byte, error) { return json.Marshal(p.String()) }

// LogValue logs the same text as String.
func (p PIN) LogValue() slog.Value { return slog.StringValue(p.String()) }

// String describes the configuration with the PIN redacted.
func (c Config) String() string {
	return fmt.Sprintf("softhsm.Config{Module:%q, TokenLabel:%q, TokenSerial:%q, PIN:%s, PINFile:%q, MaxSessions:%d, NoSessionCopies:%t}",
		c.Module, c.TokenLabel, c.TokenSerial, c.PIN.String(), c.PINFile, c.MaxSessions, c.NoSessionCopies)
}

// GoString returns the same text as String.
func (c Config) GoString() string { return c.String() }

// Format prints the same text as String for every verb, so that no fmt
// verb reveals the PIN.
func (c Config) Format(f fmt.State, _ rune) { io.WriteString(f, c.String()) }

// MarshalJSON encodes the configuration with the PIN redacted.
func (c Config) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Module          string `json:"module"`
		TokenLabel      string `json:"tokenLabel,omitempty"`
		TokenSerial     string `json:"tokenSerial,omitempty"`
		PIN             string `json:"pin"`
		PINFile         string `json:"pinFile,omitempty"`
		MaxSessions     int    `json:"maxSessions,omitempty"`
		NoSessionCopies bool   `json:"noSessionCopies,omitempty"`
	}{c.Module, c.TokenLabel, c.TokenSerial, c.PIN.String(), c.PINFile, c.MaxSessions, c.NoSessionCopies})
}

// LogValue logs the configuration with the PIN redacted.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("module", c.Module),
		slog.String("tokenLabel", c.TokenLabel),
		slog.String("tokenSerial", c.TokenSerial),
		slog.String("pin", c.PIN.String()),
		slog.String("pinFile", c.PINFile),
		slog.Int("maxSessions", c.MaxSessions),
		slog.Bool("noSessionCopies", c.NoSessionCopies),
	)
}

// ParseURI parses a PKCS#11 URI (RFC 7512) into a Config. The accepted
// grammar is a subset of RFC 7512 that names a token, never an object:
//
//	pkcs11:token=<label>;serial=<serial>?module-path=<path>&pin-source=<file>&max-sessions=<n>
//
// Path attributes, separated by ";":
//
//   - token: the token label (Config.TokenLabel).
//   - serial: the token serial number (Config.TokenSerial).
//
// At least one of them is required. Query attributes, separated by "&":
//
//   - module-path: the PKCS#11 library (Config.Module). Required.
//   - pin-source: a file holding the user PIN (Config.PINFile), as a path
//     or a file: URI (file:/run/secrets/pin or file:///run/secrets/pin).
//   - max-sessions: the session pool bound (Config.MaxSessions), a
//     vendor attribute of this package.
//
// Values are percent-decoded. Any other attribute, a repeated attribute,
// or an empty value is an error. pin-value is refused on purpose: URIs end
// up in logs and process listings, so the PIN goes in a file or in
// Config.PIN. slot-id is refused too: SoftHSM2 renumbers slots.
//
// Example:
//
//	pkcs11:token=pocketkms?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/run/secrets/hsm-pin
func ParseURI(uri string) (Config, error) {
	var c Config
	rest, ok := strings.CutPrefix(uri, "pkcs11:")
	if !ok {
		return c, fmt.Errorf("%w: URI does not start with \"pkcs11:\"", ErrInvalidConfig)
	}
	path, query, _ := strings.Cut(rest, "?")
	seen := map[string]bool{}
	attr := func(kv string) (string, string, error) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return "", "", fmt.Errorf("%w: URI attribute %q has no value", ErrInvalidConfig, truncate(k))
		}
		if seen[k] {
			return "", "", fmt.Errorf("%w: URI attribute %q appears twice", ErrInvalidConfig, truncate(k))
		}
		seen[k] = true
		if k == "pin-value" {
			return "", "", fmt.Errorf("%w: pin-value is not accepted in a URI: use pin-source or Config.PIN", ErrInvalidConfig)
		}
		d, err := url.PathUnescape(v)
		if err != nil || d == "" {
			return "", "", fmt.Errorf("%w: URI attribute %q has a malformed or empty value", ErrInvalidConfig, truncate(k))
		}
		return k, d, nil
	}
	if path != "" {
		for _, kv := range strings.Split(path, ";") {
			k, v, err := attr(kv)
			if err != nil {
				return Config{}, err
			}
			switch k {
			case "token":
				c.TokenLabel = v
			case "serial":
				c.TokenSerial = v
			default:
				return Config{}, fmt.Errorf("%w: unsupported URI path attribute %q", ErrInvalidConfig, truncate(k))
			}
		}
	}
	if query != "" {
		for _, kv := range strings.Split(query, "&") {
			k, v, err := attr(kv)
			if err != nil {
				return Config{}, err
			}
			switch k {
			case "module-path":
				c.Module = v
			case "pin-source":
				p, err := pinSourcePath(v)
				if err != nil {
					return Config{}, err
				}
				c.PINFile = p
			case "max-sessions":
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 || n > maxMaxSessions {
					return Config{}, fmt.Errorf("%w: max-sessions must be 1..%d", ErrInvalidConfig, maxMaxSessions)
				}
				c.MaxSessions = n
			default:
				return Config{}, fmt.Errorf("%w: unsupported URI query attribute %q", ErrInvalidConfig, truncate(k))
			}
		}
	}
	if c.Module == "" {
		return Config{}, fmt.Errorf("%w: URI has no module-path", ErrInvalidConfig)
	}
	if c.TokenLabel == "" && c.TokenSerial == "" {
		return Config{}, fmt.Errorf("%w: URI names no token (token= or serial=)", ErrInvalidConfig)
	}
	return c, nil
}

// pinSourcePath turns a pin-source value (already percent-decoded) into a
// file path: a plain path, file:/path or file:///path.
func pinSourcePath(v string) (string, error) {
	p, ok := strings.CutPrefix(v, "file:")
	if !ok {
		return v, nil
	}
	if rest, ok := strings.CutPrefix(p, "//"); ok {
		p = strings.TrimPrefix(rest, "localhost")
	}
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("%w: pin-source must be a path or a file: URI with an absolute path", ErrInvalidConfig)
	}
	return p, nil
}

// truncate shortens caller-supplied identifiers that go into messages.
func truncate(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
