// Command server is a custom NAVER-compatible KMS server: package naverapi's
// handler mounted in a mux of its own, next to a route of its own, behind
// its own middleware (a request log), with its own account authentication
// (a static bearer token from $KMS_ADMIN_TOKEN instead of NCP signature v2).
// Keys live in memory. For the full server on a data directory, run
// `go run ./cmd/pocketkms serve`.
//
//	KMS_ADMIN_TOKEN=$(openssl rand -hex 32) go run ./examples/server -addr 127.0.0.1:8080
//	curl -s -X POST http://127.0.0.1:8080/kms/v3/keys -H "Authorization: Bearer $KMS_ADMIN_TOKEN" \
//	  -d '{"keyName":"orders","keyType":"AES256","rotation":{"enabled":false}}'
package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/naverapi"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
}

// bearer authenticates account calls by a static admin token, compared in
// constant time (as hashes, so its length does not leak either).
type bearer [sha256.Size]byte

func (b *bearer) Authenticate(r *http.Request) (naverapi.Principal, error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if sum := sha256.Sum256([]byte(tok)); !ok || subtle.ConstantTimeCompare(sum[:], b[:]) != 1 {
		return naverapi.Principal{}, &naverapi.Error{Status: http.StatusUnauthorized, Code: "Unauthorized", Detail: "send Authorization: Bearer <admin token>"}
	}
	return naverapi.Principal{ID: "admin"}, nil
}

// logRequests is the server's own middleware: one line per request.
func logRequests(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		next.ServeHTTP(w, r)
		log.Info("request", "method", r.Method, "path", r.URL.Path, "duration", time.Since(start),
			"request_id", w.Header().Get(naverapi.HeaderRequestID))
	})
}

// run serves until ctx is cancelled, then shuts down gracefully.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(stdout)
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if admin := os.Getenv("KMS_ADMIN_TOKEN"); len(admin) < 16 {
		return errors.New("set KMS_ADMIN_TOKEN to an admin token of at least 16 characters")
	}
	root, err := memory.GenerateRootKey()
	if err != nil {
		return err
	}
	be, err := memory.New(root)
	if err != nil {
		return err
	}
	eng, err := kms.New(ctx, be) // in memory: keys die with the process
	if err != nil {
		return err
	}
	defer eng.Close()
	auth := bearer(sha256.Sum256([]byte(os.Getenv("KMS_ADMIN_TOKEN"))))
	api, err := naverapi.NewHandler(eng, naverapi.WithAuthenticator(&auth))
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/kms/", api) // NAVER's API 2.0 and v3 paths
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: logRequests(slog.New(slog.NewTextHandler(stdout, nil)), mux),
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, WriteTimeout: time.Minute}
	fmt.Fprintf(stdout, "listening on http://%s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
