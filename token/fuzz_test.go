package token

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzVerify feeds arbitrary strings to Verify. Property: Verify never
// panics, every refusal is one of the two token sentinels and does not
// echo the input, and the only strings it accepts are the tokens issued
// here: any other string that verified would be a forgery or a
// non-canonical spelling of a real token. The checked-in corpus is in
// testdata/fuzz/FuzzVerify; valid tokens (whose key is made per process)
// and mutations of them are added here.
func FuzzVerify(f *testing.F) {
	k := testKey(f)
	set := issueTestSet(f)
	r := baseRequest()
	r.AccessTTL = TTL{Unlimited: true}
	unlimited, err := IssueSet(k, r)
	if err != nil {
		f.Fatal(err)
	}
	valid := map[string]bool{set.Access: true, unlimited.Access: true}
	for _, tok := range []string{set.Access, set.Refresh, unlimited.Access} {
		h, p, s := segments(f, tok)
		f.Add(tok)
		f.Add(tok + "=")
		f.Add(tok[:len(tok)-1])
		f.Add(h + "." + p)
		f.Add(h + "." + p + "." + s + "." + s)
		f.Add(enc(`{"typ":"JWT","alg":"none"}`) + "." + p + ".")
		f.Add(enc(altHeader) + "." + p + "." + s)
		f.Add(h + "." + p + "." + strings.ToUpper(s))
	}
	f.Add(signJSON(f, Header, `{"sub":"s","iat":1729052876,"exp":1729063676,"1":"REFRESH","1":"ACCESS","2":"keytag__`+testTag+`","3":"EXT","4":[0]}`))
	f.Add(signJSON(f, Header, `{"sub":"s","iat":1729052876,"1":"ACCESS","2":"keytag__`+testTag+`","3":"EXT","4":[0,"1"]}`))

	pub := &k.PublicKey
	want := expectAccess(testNow.Add(time.Minute))
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := Verify(tok, pub, want)
		if err == nil {
			if !valid[tok] || c == nil {
				t.Fatalf("Verify accepted a token that was never issued: %q", tok)
			}
			return
		}
		if c != nil {
			t.Fatal("claims returned with an error")
		}
		if !errors.Is(err, ErrTokenInvalid) && !errors.Is(err, ErrTokenExpired) {
			t.Fatalf("error %v is neither sentinel", err)
		}
		if len(tok) >= 8 && strings.Contains(err.Error(), tok) {
			t.Fatalf("error echoes the input: %v", err)
		}
	})
}

// FuzzParseClaims feeds arbitrary payloads to the claims parser, the code
// that runs after a signature has verified. Property: it never panics, and
// what it accepts is valid and re-encodes to exactly the input.
func FuzzParseClaims(f *testing.F) {
	f.Add([]byte(goodPayload))
	f.Add([]byte(`{"sub":"s","iat":100,"1":"ACCESS","2":"keytag__` + testTag + `","3":"EXT","4":[0],"cidr":["10.0.0.0/8","2001:db8::/32"],"jti":"a"}`))
	f.Add([]byte(`{"sub":"s","iat":100,"exp":200,"1":"ACCESS","2":"keytag__` + testTag + `","3":"EXT","4":[0,1],"jti":"AAAAAAAAAAAAAAAAAAAAAA"}`))
	f.Add([]byte(`{"sub":"s","iat":100,"exp":200,"1":"ACCESS","1":"REFRESH","2":"keytag__` + testTag + `","3":"EXT","4":[0,1]}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		// The positional fast path accepts exactly what quickClaims
		// accepts, with the same claims.
		fc, fok := fastClaims(payload)
		qc, qok := quickClaims(payload)
		if fok != qok || (fok && !reflect.DeepEqual(fc, qc)) {
			t.Fatalf("fastClaims %v %+v, quickClaims %v %+v", fok, fc, qok, qc)
		}
		c, r := parseClaims(payload)
		if r != 0 {
			if c != nil {
				t.Fatal("claims returned with a reason")
			}
			if r != ReasonClaims && r != ReasonDuplicateClaim {
				t.Fatalf("reason %v", r)
			}
			return
		}
		if err := c.validate(false); err != nil {
			t.Fatalf("accepted invalid claims: %v", err)
		}
		if got := c.appendPayload(nil); !bytes.Equal(got, payload) {
			t.Fatalf("accepted a non-canonical payload\n got %q\nwant %q", payload, got)
		}
	})
}
