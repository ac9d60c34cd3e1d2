package naverapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestCanceledRequestAnswersNothing: a request whose context has ended
// (the client went away) is answered with nothing, not a 500: the handler
// aborts the response (http.ErrAbortHandler, which net/http turns into a
// closed connection) and logs status 499.
func TestCanceledRequestAnswersNothing(t *testing.T) {
	ts := newTestServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tag := strings.Repeat("ab", 32)
	req := httptest.NewRequest(http.MethodPost, "/kms/v1/keys/"+tag+"/encrypt", strings.NewReader(`{"plaintext":"aGk="}`)).WithContext(ctx)
	req.Header.Set(HeaderToken, "junk.token.value")
	rec := httptest.NewRecorder()
	func() {
		defer func() {
			if p := recover(); p != http.ErrAbortHandler {
				t.Fatalf("recovered %v, want http.ErrAbortHandler", p)
			}
		}()
		ts.handler.ServeHTTP(rec, req)
	}()
	if rec.Body.Len() != 0 || rec.Code != http.StatusOK && rec.Code != 0 {
		// httptest's recorder reports 200 until something is written.
		t.Fatalf("answered %d with %d bytes", rec.Code, rec.Body.Len())
	}
	if rec.Result().Header.Get("Content-Type") != "" {
		t.Fatal("a body was started for a client that went away")
	}
	if log := ts.out.String(); !strings.Contains(log, "status=499") {
		t.Fatalf("the log does not record 499:\n%s", log)
	}
}
