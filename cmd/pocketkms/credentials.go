package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/pocketkms/kms/naverapi"
)

// credentials are the access key pairs of a credentials file. The secrets
// are never logged, printed or put in an error.
type credentials struct {
	keys  []string          // access keys in file order
	pairs map[string]string // access key → secret key
}

// String describes the credentials without their secrets.
func (c *credentials) String() string { return fmt.Sprintf("credentials{%d access keys}", len(c.keys)) }

// loadCredentials reads "accessKey:secretKey" lines ('#' comments and blank
// lines allowed) from a file that group and others cannot access.
func loadCredentials(path string) (*credentials, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("credentials file %s has mode %04o: it must not be accessible by group or others (chmod 600)", path, perm)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	defer clear(data)
	c := &credentials{pairs: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		ak, sk, ok := strings.Cut(line, ":")
		if !ok || !naverapi.ValidAccessKey(ak) || sk == "" || strings.ContainsAny(sk, " \t") {
			return nil, fmt.Errorf("credentials file %s line %d: want accessKey:secretKey (access key of 1..%d printable characters without ':' or spaces)", path, n, naverapi.MaxAccessKeyLen)
		}
		if _, dup := c.pairs[ak]; dup {
			return nil, fmt.Errorf("credentials file %s line %d: access key %s is listed twice", path, n, ak)
		}
		c.keys = append(c.keys, ak)
		c.pairs[ak] = sk
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("credentials file %s: %w", path, err)
	}
	if len(c.keys) == 0 {
		return nil, fmt.Errorf("credentials file %s holds no access key", path)
	}
	return c, nil
}

// createCredentials writes a new file with one random pair, mode 0600, and
// returns the access key. It never overwrites a file.
func createCredentials(path string) (string, error) {
	ak := rand.Text()[:20]          // 100 bits, NAVER-like 20 characters
	sk := rand.Text() + rand.Text() // 256 bits
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("create credentials file: %w", err)
	}
	_, werr := fmt.Fprintf(f, "# pocketkms server credentials: one accessKey:secretKey a line. Keep this file secret.\n%s:%s\n", ak, sk)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return "", fmt.Errorf("write credentials file: %w", werr)
	}
	return ak, nil
}
