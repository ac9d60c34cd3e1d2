package envelope

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version uint32
		body    []byte
		want    string
	}{
		{"one byte", 1, []byte{0xff}, "ncpkms:v1:/w=="},
		{"two bytes", 12, []byte{0xfb, 0xff}, "ncpkms:v12:+/8="},
		{"three bytes", 999999999, []byte("abc"), "ncpkms:v999999999:YWJj"},
		{"hello kms", 4, []byte("Hello KMS"), "ncpkms:v4:SGVsbG8gS01T"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Format(tc.version, tc.body)
			if got != tc.want {
				t.Fatalf("Format = %q, want %q", got, tc.want)
			}
			v, b, err := Parse(got, 0)
			if err != nil || v != tc.version || !bytes.Equal(b, tc.body) {
				t.Fatalf("Parse(%q) = %d, %x, %v", got, v, b, err)
			}
			if v2, err := Version(got); err != nil || v2 != tc.version {
				t.Fatalf("Version(%q) = %d, %v", got, v2, err)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"no prefix", "YWJj"},
		{"vault prefix", "vault:v1:YWJj"},
		{"upper prefix", "NCPKMS:v1:YWJj"},
		{"v0", "ncpkms:v0:YWJj"},
		{"leading zero", "ncpkms:v01:YWJj"},
		{"ten digits", "ncpkms:v1000000000:YWJj"},
		{"no digits", "ncpkms:v:YWJj"},
		{"sign", "ncpkms:v+1:YWJj"},
		{"no colon", "ncpkms:v1YWJj"},
		{"empty body", "ncpkms:v1:"},
		{"missing padding", "ncpkms:v1:/w"},
		{"missing one pad", "ncpkms:v1:/w="},
		{"url alphabet", "ncpkms:v1:-_8="},
		{"space inside", "ncpkms:v1:YW Jj"},
		{"leading space", " ncpkms:v1:YWJj"},
		{"trailing newline", "ncpkms:v1:YWJj\n"},
		{"newline inside", "ncpkms:v1:YW\nJj"},
		{"cr inside", "ncpkms:v1:YW\rJj"},
		{"crlf inside, length kept", "ncpkms:v1:000\r\r\r\r0"},
		{"crlf between quads", "ncpkms:v1:YWJj\r\nYWJj"},
		{"nonzero pad bits", "ncpkms:v1:/x=="},
		{"too much padding", "ncpkms:v1:YQ==="},
		{"padding in middle", "ncpkms:v1:YQ==YWJj"},
		{"space in version", "ncpkms:v 1:YWJj"},
		{"second colon", "ncpkms:v1:YWJj:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse(tc.in, 0)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(%q) err = %v, want ErrMalformed", tc.in, err)
			}
			if err != nil && strings.Contains(err.Error(), "YWJj") {
				t.Fatalf("error leaks input: %v", err)
			}
		})
	}
}

func TestParseMaxBody(t *testing.T) {
	s := Format(1, make([]byte, 29))
	if _, _, err := Parse(s, 28); !errors.Is(err, ErrMalformed) {
		t.Fatalf("29-byte body with max 28: err = %v", err)
	}
	if _, b, err := Parse(s, 29); err != nil || len(b) != 29 {
		t.Fatalf("29-byte body with max 29: %d, %v", len(b), err)
	}
	// A huge input is refused before decoding.
	huge := Prefix + "1:" + strings.Repeat("AAAA", 1<<16)
	if _, _, err := Parse(huge, 1024); !errors.Is(err, ErrMalformed) {
		t.Fatalf("huge: err = %v", err)
	}
}

func TestFormatPanicsOnBadVersion(t *testing.T) {
	for _, v := range []uint32{0, MaxVersion + 1} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Format(%d) did not panic", v)
				}
			}()
			Format(v, []byte{1})
		}()
	}
}

// FuzzParse checks the canonical-form property: a string either fails to
// parse or formats back to exactly itself.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"ncpkms:v1:/w==", "ncpkms:v12:+/8=", "ncpkms:v999999999:YWJj", "ncpkms:v01:YWJj", "ncpkms:v1:/x==", "ncpkms:v1:-_8="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, body, err := Parse(s, 0)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("unexpected error type %v", err)
			}
			return
		}
		if got := Format(v, body); got != s {
			t.Fatalf("Format(Parse(%q)) = %q", s, got)
		}
		// The append forms agree with Parse and Format, after a prefix
		// the caller already holds.
		pre := []byte("held")
		for name, parse := range map[string]func([]byte) (uint32, []byte, error){
			"AppendParse":      func(d []byte) (uint32, []byte, error) { return AppendParse(d, s, 0) },
			"AppendParseBytes": func(d []byte) (uint32, []byte, error) { return AppendParseBytes(d, []byte(s), 0) },
		} {
			v2, out, err := parse(bytes.Clone(pre))
			if err != nil || v2 != v || !bytes.Equal(out, append(bytes.Clone(pre), body...)) {
				t.Fatalf("%s(%q) = %d, %x, %v", name, s, v2, out, err)
			}
		}
		if got := AppendText(bytes.Clone(pre), v, body); string(got) != "held"+s {
			t.Fatalf("AppendText = %q, want %q", got, "held"+s)
		}
		if TextLen(v, len(body)) != len(s) {
			t.Fatalf("TextLen(%d, %d) = %d, want %d", v, len(body), TextLen(v, len(body)), len(s))
		}
	})
}

// TestAppendFormsReject: the append forms refuse what Parse refuses, and
// a body over maxBody, and give the caller's bytes back as they were.
func TestAppendFormsReject(t *testing.T) {
	for _, tc := range []struct {
		in      string
		maxBody int
	}{
		{"", 0}, {"ncpkms:v01:YWJj", 0}, {"ncpkms:v1:/x==", 0}, {"ncpkms:v1:YW\nJj", 0},
		{"ncpkms:v1000000000:YWJj", 0}, {"ncpkms:v1:YWJjYWJj", 3},
	} {
		if _, out, err := AppendParse([]byte("held"), tc.in, tc.maxBody); !errors.Is(err, ErrMalformed) || string(out) != "held" {
			t.Fatalf("AppendParse(%q, %d) = %q, %v", tc.in, tc.maxBody, out, err)
		}
		if _, out, err := AppendParseBytes([]byte("held"), []byte(tc.in), tc.maxBody); !errors.Is(err, ErrMalformed) || string(out) != "held" {
			t.Fatalf("AppendParseBytes(%q, %d) = %q, %v", tc.in, tc.maxBody, out, err)
		}
	}
}

// FuzzEncode: the SIMD encoder gives exactly encoding/base64's output.
func FuzzEncode(f *testing.F) {
	for _, n := range []int{0, 1, 2, 3, 5, 6, 7, 8, 9, 13, 14, 27, 28, 29, 1052} {
		f.Add(bytes.Repeat([]byte{0xa5, 0x0f, 0xff}, n)[:n])
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		got := make([]byte, base64.StdEncoding.EncodedLen(len(src)))
		std.Encode(got, src)
		if want := base64.StdEncoding.EncodeToString(src); string(got) != want {
			t.Fatalf("encode(%x) = %q, want %q", src, got, want)
		}
	})
}

// stdDecode is the reference: encoding/base64's strict decoder.
var stdDecode = base64.StdEncoding.Strict()

// checkDecode compares the SIMD decoder with encoding/base64 on src: the
// same bytes written, the same count, an error exactly when it errs.
func checkDecode(t *testing.T, src []byte) {
	t.Helper()
	n := stdDecode.DecodedLen(len(src))
	want := make([]byte, n)
	wn, werr := stdDecode.Decode(want, src)
	got := make([]byte, n)
	gn, gerr := std.Decode(got, src)
	if (werr == nil) != (gerr == nil) || (werr == nil && (wn != gn || !bytes.Equal(want[:wn], got[:gn]))) {
		t.Fatalf("decode(%q) = %d, %x, %v; encoding/base64: %d, %x, %v", src, gn, got[:gn], gerr, wn, want[:wn], werr)
	}
}

// FuzzDecode: the SIMD decoder agrees with encoding/base64 on any input,
// valid or not.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{"", "/w==", "YWJj", "YQ===", "/x==", "YW\nJj", strings.Repeat("QUJD", 20), strings.Repeat("QUJD", 20) + "-" + strings.Repeat("QUJD", 5)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) { checkDecode(t, src) })
}

func TestCodecAllLengths(t *testing.T) {
	src := make([]byte, 300)
	for i := range src {
		src[i] = byte(i*131 + 7)
	}
	for n := 0; n <= len(src); n++ {
		got := make([]byte, base64.StdEncoding.EncodedLen(n))
		std.Encode(got, src[:n])
		want := base64.StdEncoding.EncodeToString(src[:n])
		if string(got) != want {
			t.Fatalf("encode length %d: %q, want %q", n, got, want)
		}
		checkDecode(t, got)
	}
}

// TestDecodeBadByteEverywhere puts each kind of byte the alphabet lacks at
// every position of inputs long enough for the SIMD loop, so the vector
// code's refusal and the hand-over to encoding/base64 are both exercised.
func TestDecodeBadByteEverywhere(t *testing.T) {
	good := []byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xa5, 0x0f, 0x7e}, 40)))
	for _, bad := range []byte{'=', '-', '_', ' ', '\r', '\n', 0, 0x80, 0xff, '.', '@', '[', '`', '{'} {
		for i := range good {
			src := bytes.Clone(good)
			src[i] = bad
			checkDecode(t, src)
			if _, _, err := Parse(Prefix+"1:"+string(src), 0); err == nil {
				t.Fatalf("Parse accepted byte %#x at %d", bad, i)
			}
		}
	}
}

func BenchmarkFormat1KiB(b *testing.B) {
	body := make([]byte, 1052)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		sink = Format(1, body)
	}
}

var sink string

// BenchmarkFormatCopy1KiB is Format without unsafe: encode into a reused
// buffer, then copy it into a string. Format shares a fresh buffer with
// its string instead; this is what that choice is measured against.
func BenchmarkFormatCopy1KiB(b *testing.B) {
	body := make([]byte, 1052)
	scratch := make([]byte, 0, TextLen(1, len(body)))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		sink = string(AppendText(scratch[:0], 1, body))
	}
}

func BenchmarkStdlibBase64_1KiB(b *testing.B) {
	body := make([]byte, 1052)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		_ = base64.StdEncoding.EncodeToString(body)
	}
}

func BenchmarkParse1KiB(b *testing.B) {
	s := Format(1, make([]byte, 1052))
	b.SetBytes(1052)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Parse(s, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStdlibDecode1KiB(b *testing.B) {
	s := base64.StdEncoding.EncodeToString(make([]byte, 1052))
	b.SetBytes(1052)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := base64.StdEncoding.Strict().DecodeString(s); err != nil {
			b.Fatal(err)
		}
	}
}
