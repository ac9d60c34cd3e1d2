package redact_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/pocketkms/kms/backend/internal/redact"
)

type holder struct {
	redact.Text
	secret []byte
}

// TestText checks that a struct embedding Text prints its description on
// every formatting path and its secret on none, as a value and a pointer.
func TestText(t *testing.T) {
	h := &holder{Text: "holder{redacted}", secret: []byte("SECRETSECRET")}
	for _, v := range []any{h, *h} {
		var outs []string
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
			outs = append(outs, fmt.Sprintf(verb, v))
		}
		outs = append(outs, fmt.Sprint(v), fmt.Sprintf("%v", []any{v}), fmt.Sprintf("%+v", struct{ H any }{v}))
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, string(j))
		var logBuf bytes.Buffer
		slog.New(slog.NewTextHandler(&logBuf, nil)).Info("x", "v", v)
		slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("x", "v", v)
		outs = append(outs, logBuf.String())
		for _, out := range outs {
			if strings.Contains(out, "SECRET") || strings.Contains(strings.ToUpper(out), "534543524554") {
				t.Errorf("output reveals the secret: %s", out)
			}
			if !strings.Contains(out, "holder{redacted}") {
				t.Errorf("output lacks the description: %s", out)
			}
		}
	}
}
