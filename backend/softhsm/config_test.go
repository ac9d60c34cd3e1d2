package softhsm_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/pocketkms/kms/backend/softhsm"
)

func TestParseURI(t *testing.T) {
	const mod = "/usr/lib/softhsm/libsofthsm2.so"
	good := []struct {
		uri  string
		want softhsm.Config
	}{
		{"pkcs11:token=kms?module-path=" + mod, softhsm.Config{Module: mod, TokenLabel: "kms"}},
		{"pkcs11:serial=0123abcd?module-path=" + mod + "&pin-source=/run/pin", softhsm.Config{Module: mod, TokenSerial: "0123abcd", PINFile: "/run/pin"}},
		{"pkcs11:token=my%20token;serial=1?module-path=" + mod + "&pin-source=file:/run/pin&max-sessions=4",
			softhsm.Config{Module: mod, TokenLabel: "my token", TokenSerial: "1", PINFile: "/run/pin", MaxSessions: 4}},
		{"pkcs11:token=kms?pin-source=file:///run/p%20in&module-path=" + mod, softhsm.Config{Module: mod, TokenLabel: "kms", PINFile: "/run/p in"}},
		{"pkcs11:token=kms?module-path=" + mod + "&pin-source=file://localhost/run/pin", softhsm.Config{Module: mod, TokenLabel: "kms", PINFile: "/run/pin"}},
	}
	for _, c := range good {
		got, err := softhsm.ParseURI(c.uri)
		if err != nil || got.String() != c.want.String() {
			t.Errorf("ParseURI(%q) = %v, %v; want %v", c.uri, got, err, c.want)
		}
	}
	bad := map[string]string{
		"NoScheme":       "token=kms?module-path=" + mod,
		"OtherScheme":    "pkcs12:token=kms?module-path=" + mod,
		"NoModule":       "pkcs11:token=kms",
		"NoToken":        "pkcs11:?module-path=" + mod,
		"PINValue":       "pkcs11:token=kms?module-path=" + mod + "&pin-value=1234",
		"SlotID":         "pkcs11:token=kms;slot-id=1?module-path=" + mod,
		"Object":         "pkcs11:token=kms;object=key?module-path=" + mod,
		"UnknownQuery":   "pkcs11:token=kms?module-path=" + mod + "&module-name=softhsm2",
		"Repeated":       "pkcs11:token=kms;token=other?module-path=" + mod,
		"EmptyValue":     "pkcs11:token=?module-path=" + mod,
		"NoEquals":       "pkcs11:token?module-path=" + mod,
		"BadEscape":      "pkcs11:token=%zz?module-path=" + mod,
		"ZeroSessions":   "pkcs11:token=kms?module-path=" + mod + "&max-sessions=0",
		"HugeSessions":   "pkcs11:token=kms?module-path=" + mod + "&max-sessions=100000",
		"RelativeFile":   "pkcs11:token=kms?module-path=" + mod + "&pin-source=file:pin",
		"RemoteFile":     "pkcs11:token=kms?module-path=" + mod + "&pin-source=file://host/pin",
		"TrailingAmp":    "pkcs11:token=kms?module-path=" + mod + "&",
		"TrailingSemico": "pkcs11:token=kms;?module-path=" + mod,
	}
	for name, uri := range bad {
		_, err := softhsm.ParseURI(uri)
		if !errors.Is(err, softhsm.ErrInvalidConfig) {
			t.Errorf("%s: ParseURI(%q) = %v, want ErrInvalidConfig", name, uri, err)
		}
		if err != nil && strings.Contains(err.Error(), "1234") {
			t.Errorf("%s: error reveals the pin-value: %v", name, err)
		}
	}
}

func TestConfigRedaction(t *testing.T) {
	const pin = "s3cret-PIN-value"
	cfg := softhsm.Config{Module: "/m.so", TokenLabel: "kms", PIN: softhsm.NewPIN(pin)}
	type holder struct{ c softhsm.Config }
	type pinHolder struct{ p softhsm.PIN }
	type exported struct{ C softhsm.Config }
	values := []any{cfg, &cfg, cfg.PIN, &cfg.PIN, holder{cfg}, &holder{cfg}, pinHolder{cfg.PIN}, exported{cfg}, []softhsm.Config{cfg}, map[string]softhsm.PIN{"k": cfg.PIN}}
	for _, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
			out := fmt.Sprintf(verb, v)
			if strings.Contains(out, pin) || strings.Contains(strings.ToLower(out), fmt.Sprintf("%x", pin)) {
				t.Errorf("%s of %T reveals the PIN: %s", verb, v, out)
			}
		}
		js, err := json.Marshal(v)
		if err != nil {
			if _, ok := v.(holder); ok {
				continue
			}
			t.Errorf("json.Marshal(%T): %v", v, err)
		}
		if bytes.Contains(js, []byte(pin)) {
			t.Errorf("JSON of %T reveals the PIN: %s", v, js)
		}
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "cfg", cfg, "pin", cfg.PIN)
	if strings.Contains(buf.String(), pin) || !strings.Contains(buf.String(), "kms") {
		t.Errorf("slog output reveals the PIN or hides the token: %s", buf.String())
	}
	if !cfg.PIN.IsSet() || (softhsm.PIN{}).IsSet() || softhsm.NewPIN("").IsSet() {
		t.Error("IsSet is wrong")
	}
	if got := fmt.Sprint(softhsm.PIN{}); got != "[unset]" {
		t.Errorf("unset PIN prints %q", got)
	}
}
