// Package redact gives the backends of this module one way to print a
// value that holds key material: [Text], embedded in the value's type,
// makes every formatting path print a fixed description and never a
// field.
package redact

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
)

// Text is the description that stands for a value holding secrets.
// Embedded in a struct, it gives the struct (and pointers to it) String,
// GoString, Format (every fmt verb), MarshalJSON and LogValue, all of
// which print the description only.
type Text string

// String returns the description.
func (t Text) String() string { return string(t) }

// GoString returns the description, for %#v.
func (t Text) GoString() string { return string(t) }

// Format prints the description for every verb, so that no verb (%x, %+v,
// %d, ...) reaches the fields of the value.
func (t Text) Format(f fmt.State, _ rune) { io.WriteString(f, string(t)) }

// MarshalJSON encodes the description as a JSON string.
func (t Text) MarshalJSON() ([]byte, error) { return json.Marshal(string(t)) }

// LogValue logs the description.
func (t Text) LogValue() slog.Value { return slog.StringValue(string(t)) }
