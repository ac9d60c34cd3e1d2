package gocloud

import (
	"github.com/pocketkms/kms"

	"go/ast"
	"go/parser"
	"go/token"
	"testing"
)

// TestEverySentinelHasACode: every Err… sentinel the kms package declares
// in errors.go has a row in codes, so a sentinel added to the core does not
// fall through to gcerrors.Unknown unnoticed.
func TestEverySentinelHasACode(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "../../errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	mapped := map[error]bool{}
	for _, c := range codes {
		mapped[c.kind] = true
	}
	byName := sentinelsByName()
	n := 0
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.VAR {
			continue
		}
		for _, spec := range g.Specs {
			for _, name := range spec.(*ast.ValueSpec).Names {
				if len(name.Name) < 4 || name.Name[:3] != "Err" || !name.IsExported() {
					continue
				}
				n++
				kind, ok := byName[name.Name]
				if !ok {
					t.Errorf("kms.%s is not listed in sentinelsByName (add it there and to codes)", name.Name)
					continue
				}
				if !mapped[kind] {
					t.Errorf("kms.%s has no gcerrors code", name.Name)
				}
			}
		}
	}
	if n < 20 {
		t.Fatalf("found only %d sentinels in errors.go", n)
	}
}

// sentinelsByName names every kms sentinel, for TestEverySentinelHasACode.
func sentinelsByName() map[string]error {
	return map[string]error{
		"ErrInvalidArgument":     kms.ErrInvalidArgument,
		"ErrWrongKeyType":        kms.ErrWrongKeyType,
		"ErrDecryptionFailed":    kms.ErrDecryptionFailed,
		"ErrKeyNotFound":         kms.ErrKeyNotFound,
		"ErrVersionNotFound":     kms.ErrVersionNotFound,
		"ErrAlreadyExists":       kms.ErrAlreadyExists,
		"ErrKeyNotEnabled":       kms.ErrKeyNotEnabled,
		"ErrInvalidState":        kms.ErrInvalidState,
		"ErrVersionDisabled":     kms.ErrVersionDisabled,
		"ErrVersionBelowMinimum": kms.ErrVersionBelowMinimum,
		"ErrVersionLimit":        kms.ErrVersionLimit,
		"ErrAccessDenied":        kms.ErrAccessDenied,
		"ErrPermissionDenied":    kms.ErrPermissionDenied,
		"ErrTokenInvalid":        kms.ErrTokenInvalid,
		"ErrTokenExpired":        kms.ErrTokenExpired,
		"ErrRateLimited":         kms.ErrRateLimited,
		"ErrClosed":              kms.ErrClosed,
		"ErrUnavailable":         kms.ErrUnavailable,
		"ErrBackendMismatch":     kms.ErrBackendMismatch,
		"ErrConflict":            kms.ErrConflict,
		"ErrCanceled":            kms.ErrCanceled,
		"ErrInternal":            kms.ErrInternal,
		"ErrBackupInvalid":       kms.ErrBackupInvalid,
		"ErrStale":               kms.ErrStale,
		"ErrUnsupported":         kms.ErrUnsupported,
		"ErrEncryptionBudget":    kms.ErrEncryptionBudget,
		"ErrAuditFailed":         kms.ErrAuditFailed,
	}
}
