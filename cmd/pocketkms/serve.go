package main

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/naverapi"
	"github.com/pocketkms/kms/ratelimit"
)

// Server timeouts.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 60 * time.Second
	writeTimeout      = 60 * time.Second
	idleTimeout       = 120 * time.Second
	shutdownTimeout   = 15 * time.Second
	maxHeaderBytes    = 64 << 10
)

// serveConfig is the parsed command line of serve.
type serveConfig struct {
	addr, data, rootKeyFile, credsFile string
	trustedProxies, tlsCert, tlsKey    string
	ipv6ACL                            bool
	accountRate                        float64
	metricsAddr                        string
}

func parseServeFlags(args []string, out io.Writer) (*serveConfig, error) {
	var c serveConfig
	fs := flag.NewFlagSet("pocketkms serve", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: pocketkms serve [flags]\n\nServe NAVER Cloud KMS's API 2.0 and v3 on a data directory (go doc ./cmd/pocketkms).\n\nflags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "address to listen on")
	fs.StringVar(&c.data, "data", "kms-data", "data directory (created 0700): root key, credentials, key store")
	fs.StringVar(&c.rootKeyFile, "root-key-file", "", "root key file (mode 0600; default <data>/root.key, generated on first run)")
	fs.StringVar(&c.credsFile, "credentials", "", "accessKey:secretKey file (mode 0600; default <data>/credentials, generated on first run)")
	fs.StringVar(&c.trustedProxies, "trusted-proxies", "", "comma-separated proxy addresses or CIDRs whose X-Forwarded-For is honoured")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "serve HTTPS with this PEM certificate (with -tls-key)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM private key for -tls-cert")
	fs.BoolVar(&c.ipv6ACL, "ipv6-acl", false, "accept IPv6 entries in IP allow-lists (NAVER accepts IPv4 only)")
	fs.Float64Var(&c.accountRate, "account-rate-limit", naverapi.DefaultAccountRateLimit.Rate, "account API requests per second per access key, with a burst of one second's worth (0: unlimited)")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics on a listener of their own (default: no metrics)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, &usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, &usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	if c.metricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.metricsAddr); err != nil {
			return nil, &usageError{fmt.Errorf("-metrics-addr: %w", err)}
		}
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return nil, &usageError{errors.New("-tls-cert and -tls-key go together")}
	}
	if !(c.accountRate >= 0 && c.accountRate <= ratelimit.MaxRate) {
		return nil, &usageError{fmt.Errorf("-account-rate-limit must be from 0 (unlimited) to %g", float64(ratelimit.MaxRate))}
	}
	return &c, nil
}

// serve is the serve command: it serves until ctx is cancelled or
// SIGINT/SIGTERM arrives, then shuts down gracefully.
func serve(ctx context.Context, args []string, stdout io.Writer) error {
	return serveWith(ctx, args, stdout, nil)
}

// serveWith is serve with a hook for tests and benchmarks: started, if not
// nil, is called with the Engine and the bound address once the server
// accepts connections.
func serveWith(ctx context.Context, args []string, stdout io.Writer, started func(e *kms.Engine, addr string)) error {
	cfg, err := parseServeFlags(args, stdout)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(stdout, nil))
	proxies, err := naverapi.ParseTrustedProxies(cfg.trustedProxies)
	if err != nil {
		return &usageError{err}
	}
	var tlsConfig *tls.Config
	if cfg.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.tlsCert, cfg.tlsKey)
		if err != nil {
			return fmt.Errorf("TLS certificate: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}

	firstRun, err := prepareDataDir(cfg.data, log)
	if err != nil {
		return err
	}
	be, rootKeyPath, err := openBackend(cfg, firstRun)
	if err != nil {
		return err
	}
	credsPath, newAccessKey, err := ensureCredentials(cfg)
	if err != nil {
		be.Close()
		return err
	}
	creds, err := loadCredentials(credsPath)
	if err != nil {
		be.Close()
		return err
	}
	engOpts := []kms.Option{kms.WithDirectory(filepath.Join(cfg.data, "store")), kms.WithLogger(slog.New(storageLogHandler{log.Handler()}))}
	var metrics *metricsServer
	if cfg.metricsAddr != "" {
		m, opt, err := startMetrics(cfg.metricsAddr, log)
		if err != nil {
			be.Close()
			return err
		}
		metrics = m
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			defer cancel()
			metrics.close(sctx)
		}()
		engOpts = append(engOpts, opt)
	}
	eng, err := kms.New(ctx, be, engOpts...)
	if err != nil {
		be.Close()
		return err
	}
	defer eng.Close()

	auth, err := naverapi.NewSignatureV2(creds.pairs)
	if err != nil {
		return err
	}
	opts := []naverapi.Option{naverapi.WithAuthenticator(auth),
		naverapi.WithClientAddr(naverapi.TrustedProxies(proxies...)), naverapi.WithLogger(log)}
	if cfg.ipv6ACL {
		opts = append(opts, naverapi.WithIPv6AllowLists())
	}
	if cfg.accountRate == 0 {
		opts = append(opts, naverapi.WithAccountRateLimit(ratelimit.Limit{Unlimited: true}))
	} else {
		opts = append(opts, naverapi.WithAccountRateLimit(ratelimit.Limit{Rate: cfg.accountRate}))
	}
	h, err := naverapi.NewHandler(eng, opts...)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		TLSConfig:         tlsConfig,
	}
	scheme := "http"
	if tlsConfig != nil {
		scheme = "https"
	}
	base := scheme + "://" + ln.Addr().String()
	printBanner(stdout, cfg, base, rootKeyPath, credsPath, creds.keys[0], newAccessKey)
	if metrics != nil {
		fmt.Fprintf(stdout, "Prometheus metrics on http://%s/metrics\n", metrics.Addr())
	}
	if host, _, _ := net.SplitHostPort(cfg.addr); scheme == "http" && !isLoopback(host) {
		log.Warn("serving plain HTTP on a non-loopback address: tokens and data cross the network unencrypted; use -tls-cert and -tls-key")
	}

	errc := make(chan error, 1)
	go func() {
		if tlsConfig != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	if started != nil {
		started(eng, ln.Addr().String())
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return eng.Close()
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// prepareDataDir creates the data directory (0700) and reports whether this
// is the first run (no key store yet).
func prepareDataDir(dir string, log *slog.Logger) (firstRun bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("data directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return false, fmt.Errorf("data directory: %w", err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("the data directory is accessible by group or others; chmod 700 it", "dir", dir)
	}
	_, err = os.Stat(filepath.Join(dir, "store"))
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	return false, err
}

// openBackend opens the memory backend under the root key: -root-key-file,
// or <data>/root.key, generated (0600) on the first run only — a store whose
// root key is missing is an error, not a reason to make a new key.
func openBackend(cfg *serveConfig, firstRun bool) (*memory.Backend, string, error) {
	path := cfg.rootKeyFile
	if path == "" {
		path = filepath.Join(cfg.data, "root.key")
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			if !firstRun {
				return nil, "", fmt.Errorf("root key file %s is missing but the store exists: restore the root key (or pass -root-key-file)", path)
			}
			if err := writeRootKey(path); err != nil {
				return nil, "", err
			}
		}
	}
	be, err := memory.NewFromFile(path)
	if err != nil {
		return nil, "", err
	}
	return be, path, nil
}

func writeRootKey(path string) error {
	key, err := memory.GenerateRootKey()
	if err != nil {
		return err
	}
	defer clear(key)
	text := make([]byte, hex.EncodedLen(len(key))+1)
	defer clear(text)
	hex.Encode(text, key)
	text[len(text)-1] = '\n'
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create root key file: %w", err)
	}
	_, werr := f.Write(text)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("write root key file: %w", werr)
	}
	return nil
}

// ensureCredentials returns the credentials file path, creating the default
// file with a new pair when none exists (then it returns the new access key).
func ensureCredentials(cfg *serveConfig) (path, created string, err error) {
	if cfg.credsFile != "" {
		return cfg.credsFile, "", nil
	}
	path = filepath.Join(cfg.data, "credentials")
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		return path, "", err
	}
	created, err = createCredentials(path)
	return path, created, err
}

// printBanner tells how to call the server. It prints the access key and
// the path of the credentials file, never a secret: the curl line reads the
// secret key from the file when it runs.
func printBanner(w io.Writer, cfg *serveConfig, base, rootKeyPath, credsPath, accessKey, created string) {
	fmt.Fprintf(w, "pocketkms server: NAVER Cloud KMS API 2.0 / v3 on %s\n", base)
	fmt.Fprintf(w, "data directory %s, root key %s\n", cfg.data, rootKeyPath)
	if created != "" {
		fmt.Fprintf(w, "created access key %s; its secret key is in %s (mode 0600)\n", created, credsPath)
	} else {
		fmt.Fprintf(w, "credentials from %s (access key %s, …)\n", credsPath, accessKey)
	}
	curl := "curl -s"
	if cfg.tlsCert != "" {
		curl += " --cacert " + shellQuote(cfg.tlsCert)
	}
	fmt.Fprintf(w, "try (bash; signs with NCP API Gateway signature v2):\n")
	fmt.Fprintf(w, "  AK=%s; SK=$(grep -m1 \"^$AK:\" %s | cut -d: -f2-); TS=$(($(date +%%s)*1000)); "+
		"SIG=$(printf 'GET /kms/v1/keys\\n%%s\\n%%s' \"$TS\" \"$AK\" | openssl dgst -sha256 -hmac \"$SK\" -binary | openssl base64 -A); "+
		"%s %s/kms/v1/keys -H \"x-ncp-apigw-timestamp: $TS\" -H \"x-ncp-iam-access-key: $AK\" -H \"x-ncp-apigw-signature-v2: $SIG\"\n",
		accessKey, shellQuote(credsPath), curl, base)
	fmt.Fprintf(w, "token API (after POST /kms/v1/keys/<keyTag>/token-set):\n")
	fmt.Fprintf(w, "  %s -X POST %s/kms/v1/keys/<keyTag>/encrypt -H 'x-ncp-ocapi-token: <access token>' -H 'Content-Type: application/json' -d '{\"plaintext\":\"SGVsbG8gS01T\"}'\n", curl, base)
	fmt.Fprintf(w, "listening on %s\n", base)
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
