package naverapi

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pocketkms/kms/ratelimit"
)

// fakeNow is a settable clock for the account limiter.
type fakeNow struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeNow) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeNow) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestAccountRateLimit: the account API is limited per access key: over
// its budget a caller gets 429 TooManyRequests with Retry-After, in the
// envelope of the path's API, before its body is read; other access keys
// and the token API are not affected; refused signatures spend nothing.
func TestAccountRateLimit(t *testing.T) {
	eng := newTestEngine(t)
	sig, err := NewSignatureV2(map[string]string{"AKONE": "secret-one", "AKTWO": "secret-two"})
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHandler(eng, WithAuthenticator(sig), WithAccountRateLimit(ratelimit.Limit{Rate: 0.5, Burst: 2}))
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeNow{t: time.Now()}
	h.now = clk.now
	send := func(ak, sk, path string, body *countingBody) *httptest.ResponseRecorder {
		method := "GET"
		var r *http.Request
		if body != nil {
			method = "POST"
			r = httptest.NewRequest(method, path, body)
			r.ContentLength = body.n
		} else {
			r = httptest.NewRequest(method, path, nil)
		}
		ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
		r.Header.Set(HeaderTimestamp, ts)
		r.Header.Set(HeaderAccessKey, ak)
		r.Header.Set(HeaderSignature, SignV2(sk, method, path, ts, ak))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for i := range 2 {
		if w := send("AKONE", "secret-one", "/kms/v3/keys", nil); w.Code != 200 {
			t.Fatalf("request %d: %d %s", i, w.Code, w.Body)
		}
	}
	for _, tc := range []struct{ path, envelope string }{
		{"/kms/v3/keys", `{"error":{"errorCode":"TooManyRequests"`},
		{"/kms/v1/keys", `{"code":"TooManyRequests"`},
	} {
		body := &countingBody{n: 1 << 20}
		w := send("AKONE", "secret-one", tc.path+"?x", body)
		if w.Code != 429 || !strings.HasPrefix(w.Body.String(), tc.envelope) || w.Header().Get("Retry-After") != "2" {
			t.Fatalf("%s over the limit: %d %q Retry-After %q", tc.path, w.Code, w.Body, w.Header().Get("Retry-After"))
		}
		if body.read.Load() != 0 {
			t.Fatal("a limited caller's body was read")
		}
	}
	if w := send("AKTWO", "secret-two", "/kms/v3/keys", nil); w.Code != 200 {
		t.Fatalf("another access key: %d %s", w.Code, w.Body)
	}
	clk.advance(2 * time.Second) // one request's worth
	// Refused signatures for AKONE spend nothing of its budget.
	for range 10 {
		if w := send("AKONE", "wrong", "/kms/v3/keys", nil); w.Code != 401 {
			t.Fatalf("bad signature: %d", w.Code)
		}
	}
	if w := send("AKONE", "secret-one", "/kms/v3/keys", nil); w.Code != 200 {
		t.Fatalf("after Retry-After: %d %s", w.Code, w.Body)
	}

	// Unlimited switches the limit off; an invalid limit is refused.
	h, err = NewHandler(eng, WithAuthenticator(sig), WithAccountRateLimit(ratelimit.Limit{Unlimited: true}))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		if w := send("AKONE", "secret-one", "/kms/v3/keys", nil); w.Code != 200 {
			t.Fatalf("unlimited, request %d: %d", i, w.Code)
		}
	}
	if _, err := NewHandler(eng, WithAccountRateLimit(ratelimit.Limit{Rate: -1})); err == nil {
		t.Fatal("a negative rate was accepted")
	}
}
