package keytag

import (
	"strings"
	"testing"
)

func TestValidAndNormalize(t *testing.T) {
	low := strings.Repeat("0123456789abcdef", 4)
	up := strings.ToUpper(low)
	for _, tc := range []struct {
		name      string
		in        string
		valid     bool
		norm      string
		normalize bool
	}{
		{"lower", low, true, low, true},
		{"upper", up, false, low, true},
		{"mixed", "A" + low[1:], false, "a" + low[1:], true},
		{"short", low[:63], false, "", false},
		{"long", low + "0", false, "", false},
		{"empty", "", false, "", false},
		{"non-hex", "g" + low[1:], false, "", false},
		{"space", " " + low[1:], false, "", false},
		{"unicode", "é" + low[2:], false, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Valid(tc.in); got != tc.valid {
				t.Errorf("Valid = %v, want %v", got, tc.valid)
			}
			got, ok := Normalize(tc.in)
			if ok != tc.normalize || got != tc.norm {
				t.Errorf("Normalize = %q, %v; want %q, %v", got, ok, tc.norm, tc.normalize)
			}
		})
	}
}
