package kmscrypto_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/kmscrypto"
	"github.com/pocketkms/kms/token"
)

func newSigner(t *testing.T, c kmscrypto.Client, tag string) *kmscrypto.Signer {
	t.Helper()
	s, err := kmscrypto.NewSigner(context.Background(), c, tag)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	return s
}

// certTemplate is a TLS server certificate for "pocketkms.test".
func certTemplate(serial int64, isCA bool) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "pocketkms.test"},
		DNSNames:              []string{"pocketkms.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  isCA,
	}
}

func TestSignerSignsDigests(t *testing.T) {
	e := newEngine(t)
	for _, typ := range []kms.KeyType{kms.RSA2048, kms.ECDSA} {
		tag := newKey(t, e, typ, false)
		for plane, c := range planes(t, e, tag) {
			t.Run(string(typ)+"/"+plane, func(t *testing.T) {
				s := newSigner(t, c, tag)
				if s.Version() != 1 || s.KeyTag() != tag {
					t.Fatalf("signer %v", s)
				}
				digest := sha256.Sum256([]byte("message"))
				switch pub := s.Public().(type) {
				case *rsa.PublicKey:
					for salt, want := range map[int]int{rsa.PSSSaltLengthAuto: 222, 222: 222, rsa.PSSSaltLengthEqualsHash: 32, 32: 32} {
						sig, err := s.Sign(rand.Reader, digest[:], &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: salt})
						if err != nil {
							t.Fatal(err)
						}
						if err := rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: want}); err != nil {
							t.Fatalf("salt %d: verify with %d: %v", salt, want, err)
						}
					}
				case *ecdsa.PublicKey:
					sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
					if err != nil {
						t.Fatal(err)
					}
					if !ecdsa.VerifyASN1(pub, digest[:], sig) {
						t.Fatal("ECDSA signature does not verify")
					}
				default:
					t.Fatalf("Public() is %T", pub)
				}
			})
		}
	}
}

// TestSignerX509 signs certificates with x509.CreateCertificate: an ECDSA
// key self-signs, and certifies an RSA2048 key; an RSA2048 key self-signs
// with RSASSA-PSS (a salt as long as the hash) and certifies an ECDSA
// key, but refuses PKCS #1 v1.5, x509's default for RSA keys.
func TestSignerX509(t *testing.T) {
	e := newEngine(t)
	ecTag := newKey(t, e, kms.ECDSA, false)
	rsaTag := newKey(t, e, kms.RSA2048, false)
	for plane, c := range planes(t, e, ecTag) {
		t.Run(plane, func(t *testing.T) {
			ca := newSigner(t, c, ecTag)
			tmpl := certTemplate(1, true)
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, ca.Public(), ca)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			if cert.SignatureAlgorithm != x509.ECDSAWithSHA256 {
				t.Fatalf("signature algorithm %v", cert.SignatureAlgorithm)
			}
			if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
				t.Fatalf("CheckSignature: %v", err)
			}
			if err := cert.CheckSignatureFrom(cert); err != nil {
				t.Fatalf("CheckSignatureFrom(self): %v", err)
			}

			// The RSA2048 key's public key, certified by the ECDSA key.
			rsaPub := newSigner(t, e, rsaTag).Public()
			leafDER, err := x509.CreateCertificate(rand.Reader, certTemplate(2, false), cert, rsaPub, ca)
			if err != nil {
				t.Fatal(err)
			}
			leaf, _ := x509.ParseCertificate(leafDER)
			if err := leaf.CheckSignatureFrom(cert); err != nil {
				t.Fatalf("leaf CheckSignatureFrom(ca): %v", err)
			}
		})
	}

	for plane, c := range planes(t, e, rsaTag) {
		t.Run("RSA2048/"+plane, func(t *testing.T) {
			ca := newSigner(t, c, rsaTag)
			tmpl := certTemplate(3, true)
			tmpl.SignatureAlgorithm = x509.SHA256WithRSAPSS
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, ca.Public(), ca)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			if cert.SignatureAlgorithm != x509.SHA256WithRSAPSS {
				t.Fatalf("signature algorithm %v", cert.SignatureAlgorithm)
			}
			if err := cert.CheckSignatureFrom(cert); err != nil {
				t.Fatalf("CheckSignatureFrom(self): %v", err)
			}
			// x509 verifies RSASSA-PSS with a salt as long as the hash.
			d := sha256.Sum256(cert.RawTBSCertificate)
			if err := rsa.VerifyPSS(ca.Public().(*rsa.PublicKey), crypto.SHA256, d[:], cert.Signature, &rsa.PSSOptions{SaltLength: 32}); err != nil {
				t.Fatalf("salt 32: %v", err)
			}

			// The ECDSA key's public key, certified by the RSA2048 key.
			ecPub := newSigner(t, e, ecTag).Public()
			leafTmpl := certTemplate(4, false)
			leafTmpl.SignatureAlgorithm = x509.SHA256WithRSAPSS
			leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, cert, ecPub, ca)
			if err != nil {
				t.Fatal(err)
			}
			leaf, _ := x509.ParseCertificate(leafDER)
			if err := leaf.CheckSignatureFrom(cert); err != nil {
				t.Fatalf("leaf CheckSignatureFrom(ca): %v", err)
			}
		})
	}

	t.Run("RSA2048 self-signed PKCS#1 v1.5 refused", func(t *testing.T) {
		rs := newSigner(t, e, rsaTag)
		tmpl := certTemplate(5, true)
		tmpl.SignatureAlgorithm = x509.SHA256WithRSA // x509's default for RSA keys
		_, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, rs.Public(), rs)
		wantKind(t, err, kms.ErrInvalidArgument)
		if !errors.Is(err, errors.ErrUnsupported) {
			t.Fatalf("err = %v, want errors.ErrUnsupported too", err)
		}
	})
}

// handshake runs a TLS 1.3 handshake on loopback with cert as the
// server's certificate and roots trusted by the client, and returns the
// server's and the client's errors.
func handshake(t *testing.T, cert tls.Certificate, roots *x509.CertPool) (serverErr, clientErr error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if err := conn.(*tls.Conn).Handshake(); err != nil {
			done <- err
			return
		}
		_, err = io.WriteString(conn, "hello over pocketkms")
		done <- err
	}()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(),
		&tls.Config{RootCAs: roots, ServerName: "pocketkms.test", MinVersion: tls.VersionTLS13})
	if err == nil {
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		var got []byte
		got, clientErr = io.ReadAll(conn)
		if clientErr == nil && string(got) != "hello over pocketkms" {
			clientErr = fmt.Errorf("client read %q", got)
		}
		if st := conn.ConnectionState(); clientErr == nil && st.Version != tls.VersionTLS13 {
			clientErr = fmt.Errorf("TLS version %x", st.Version)
		}
	} else {
		clientErr = err
	}
	return <-done, clientErr
}

// TestSignerTLS serves TLS 1.3 on loopback with the server's private key
// in pocketkms.
func TestSignerTLS(t *testing.T) {
	e := newEngine(t)
	ecTag := newKey(t, e, kms.ECDSA, false)
	rsaTag := newKey(t, e, kms.RSA2048, false)
	for plane, c := range planes(t, e, ecTag) {
		t.Run("ECDSA/"+plane, func(t *testing.T) {
			s := newSigner(t, c, ecTag)
			tmpl := certTemplate(10, true)
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.Public(), s)
			if err != nil {
				t.Fatal(err)
			}
			leaf, _ := x509.ParseCertificate(der)
			roots := x509.NewCertPool()
			roots.AddCert(leaf)
			serr, cerr := handshake(t, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: s, Leaf: leaf}, roots)
			if serr != nil || cerr != nil {
				t.Fatalf("server: %v; client: %v", serr, cerr)
			}
		})
	}
	// TLS 1.3 signs RSA-PSS with a salt as long as the hash: the RSA2048
	// key self-signs its certificate (RSASSA-PSS) and signs the handshake.
	for plane, c := range planes(t, e, rsaTag) {
		t.Run("RSA2048/"+plane, func(t *testing.T) {
			s := newSigner(t, c, rsaTag)
			tmpl := certTemplate(11, true)
			tmpl.SignatureAlgorithm = x509.SHA256WithRSAPSS
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.Public(), s)
			if err != nil {
				t.Fatal(err)
			}
			leaf, _ := x509.ParseCertificate(der)
			roots := x509.NewCertPool()
			roots.AddCert(leaf)
			serr, cerr := handshake(t, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: s, Leaf: leaf}, roots)
			if serr != nil || cerr != nil {
				t.Fatalf("server: %v; client: %v", serr, cerr)
			}
		})
	}
}

// TestSignerJWT signs PS256 and ES256 tokens with golang-jwt through the
// Signer and verifies them with golang-jwt's own methods and the public
// key; RS256 (PKCS #1 v1.5) is refused.
func TestSignerJWT(t *testing.T) {
	e := newEngine(t)
	for _, tc := range []struct {
		typ    kms.KeyType
		method *signerMethod
	}{{kms.RSA2048, signerPS256}, {kms.ECDSA, signerES256}} {
		tag := newKey(t, e, tc.typ, false)
		for plane, c := range planes(t, e, tag) {
			t.Run(tc.method.Alg()+"/"+plane, func(t *testing.T) {
				s := newSigner(t, c, tag)
				tok, err := jwt.NewWithClaims(tc.method, jwt.MapClaims{"sub": "alice", "iss": plane}).SignedString(s)
				if err != nil {
					t.Fatal(err)
				}
				parsed, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return s.Public(), nil },
					jwt.WithValidMethods([]string{tc.method.Alg()}))
				if err != nil || !parsed.Valid {
					t.Fatalf("jwt.Parse: %v", err)
				}
				if iss, _ := parsed.Claims.GetIssuer(); iss != plane {
					t.Fatalf("iss = %q", iss)
				}
				// A token signed by another key does not verify.
				other := newSigner(t, e, newKey(t, e, tc.typ, false))
				if _, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return other.Public(), nil }); err == nil {
					t.Fatal("verified with another key's public key")
				}
			})
		}
	}
	t.Run("RS256 refused", func(t *testing.T) {
		s := newSigner(t, e, newKey(t, e, kms.RSA2048, false))
		rs256 := &signerMethod{jwt.SigningMethodRS256, crypto.SHA256}
		_, err := jwt.NewWithClaims(rs256, jwt.MapClaims{"sub": "alice"}).SignedString(s)
		wantKind(t, err, kms.ErrInvalidArgument)
	})
}

// TestSignerRotation: the token plane finds the current version without
// GetKey; a rotation after NewSigner stops Sign with ErrVersionNotCurrent.
func TestSignerRotation(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	tag := newKey(t, e, kms.ECDSA, false)
	for range 4 {
		if _, err := e.RotateKey(ctx, tag); err != nil {
			t.Fatal(err)
		}
	}
	// A disabled version still counts as existing.
	if _, err := e.DisableKeyVersion(ctx, tag, 4); err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("m"))
	signers := map[string]*kmscrypto.Signer{}
	for plane, c := range planes(t, e, tag) {
		s := newSigner(t, c, tag)
		if s.Version() != 5 {
			t.Fatalf("%s: Version() = %d, want 5", plane, s.Version())
		}
		signers[plane] = s
	}
	if _, err := e.RotateKey(ctx, tag); err != nil {
		t.Fatal(err)
	}
	for plane, s := range signers {
		_, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
		wantKind(t, err, kms.ErrInvalidState)
		if !errors.Is(err, kmscrypto.ErrVersionNotCurrent) {
			t.Fatalf("%s: err = %v, want ErrVersionNotCurrent", plane, err)
		}
	}
	s := newSigner(t, e, tag)
	sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil || s.Version() != 6 || !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatalf("new signer: version %d, %v", s.Version(), err)
	}
}

func TestSignerRefuses(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	aesTag := newKey(t, e, kms.AES256, false)
	for plane, c := range planes(t, e, aesTag) {
		_, err := kmscrypto.NewSigner(ctx, c, aesTag)
		if plane == "trusted" {
			wantKind(t, err, kms.ErrWrongKeyType)
		} else if err == nil {
			t.Fatalf("%s: NewSigner on an AES256 key succeeded", plane)
		}
	}
	_, err := kmscrypto.NewSigner(ctx, e, unknownTag(aesTag))
	wantKind(t, err, kms.ErrKeyNotFound)

	// The token needs GetPublicKey to build the signer and Sign to sign.
	ecTag := newKey(t, e, kms.ECDSA, false)
	_, err = kmscrypto.NewSigner(ctx, tokenClient(t, e, ecTag, token.PermSign), ecTag)
	wantKind(t, err, kms.ErrPermissionDenied)
	s, err := kmscrypto.NewSigner(ctx, tokenClient(t, e, ecTag, token.PermGetPublicKey), ecTag)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("m"))
	_, err = s.Sign(rand.Reader, digest[:], crypto.SHA256)
	wantKind(t, err, kms.ErrPermissionDenied)

	// A done context stops Sign before the Engine.
	cctx, cancel := context.WithCancel(ctx)
	s, err = kmscrypto.NewSigner(cctx, e, ecTag)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := s.Sign(rand.Reader, digest[:], crypto.SHA256); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sign after cancel: %v", err)
	}
}

// unknownTag is a well-formed tag that differs from tag (a random tag
// starts with "00" one time in 256).
func unknownTag(tag string) string {
	if tag[:2] == "00" {
		return "ff" + tag[2:]
	}
	return "00" + tag[2:]
}
