package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestAuditHistory: audit lists a key's changes newest first, each naming
// the command line's user as its caller, pages through them (-page from
// 0) and reports the total; a key made by an embedding program names
// that program's caller.
func TestAuditHistory(t *testing.T) {
	data := newDataDir(t)
	deterministic(t)
	must(t, "keys", "create", "-data", data, "-name", "alpha")
	for range 4 {
		must(t, "keys", "rotate", "-data", data, "alpha")
	}
	must(t, "keys", "disable", "-data", data, "alpha")

	var page historyJSON
	out := must(t, "audit", "-data", data, "alpha", "-o", "json")
	if err := json.Unmarshal([]byte(out), &page); err != nil {
		t.Fatal(err)
	}
	if page.TotalCount != 6 || len(page.Entries) != 6 {
		t.Fatalf("want 6 changes: %s", out)
	}
	wantOps := []string{"update key", "rotate key", "rotate key", "rotate key", "rotate key", "create key"}
	for i, en := range page.Entries {
		if en.Seq != uint64(6-i) || en.Operation != wantOps[i] || en.Caller != "pocketkms:tester" || en.Plane != "trusted" {
			t.Errorf("entry %d: %+v", i, en)
		}
	}
	if page.Entries[0].State != "DISABLED" || page.Entries[1].Version != 5 || page.Entries[5].Version != 1 {
		t.Errorf("states or versions: %s", out)
	}

	out = must(t, "audit", "-data", data, "alpha", "-size", "4", "-page", "1", "-o", "json")
	page = historyJSON{}
	if err := json.Unmarshal([]byte(out), &page); err != nil {
		t.Fatal(err)
	}
	if page.PageNo != 1 || page.PageSize != 4 || page.TotalCount != 6 || len(page.Entries) != 2 ||
		page.Entries[0].Seq != 2 || page.Entries[1].Seq != 1 {
		t.Fatalf("page 1 of 4: %s", out)
	}
	out = must(t, "audit", "-data", data, "alpha", "-size", "4")
	if !strings.Contains(out, "4 of 6 changes (page 0 of pages 0..1; next: -page 1)") {
		t.Fatalf("table footer:\n%s", out)
	}
	if out := must(t, "audit", "-data", data, "alpha", "-page", "9"); !strings.HasPrefix(out, "0 of 6 changes") {
		t.Fatalf("a page past the end:\n%s", out)
	}
	if r := pk(t, "audit", "-data", data, "nosuchkey"); r.code != 1 || !strings.Contains(r.err, "not found") {
		t.Fatalf("unknown key: %+v", r)
	}
}

// TestUsageCounters: usage shows the counters an Engine wrote at Close,
// per version: encryptions and decryptions with the AES-GCM budget left,
// signatures and verifications (no budget for ECDSA), a refusal charged
// to the current version, and the last use.
func TestUsageCounters(t *testing.T) {
	data := newDataDir(t)
	must(t, "keys", "create", "-data", data, "-name", "alpha")
	must(t, "keys", "create", "-data", data, "-name", "signer", "-type", "ECDSA")
	ctx := context.Background()
	e := openForTest(t, data)
	alpha, signer := findKey(t, e, "alpha"), findKey(t, e, "signer")
	var cts []string
	for range 3 {
		ct, err := e.Encrypt(ctx, alpha, []byte("p"), nil)
		if err != nil {
			t.Fatal(err)
		}
		cts = append(cts, ct)
	}
	for _, ct := range cts[:2] {
		if _, err := e.Decrypt(ctx, alpha, ct, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.RotateKey(ctx, alpha); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Encrypt(ctx, alpha, []byte("p"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.DisableKey(ctx, alpha); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Encrypt(ctx, alpha, []byte("p"), nil); err == nil {
		t.Fatal("a disabled key encrypted")
	}
	sig, err := e.Sign(ctx, signer, []byte("release"))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if ok, err := e.Verify(ctx, signer, []byte("release"), sig); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	var u usageJSON
	out := must(t, "usage", "-data", data, "alpha", "-o", "json")
	if err := json.Unmarshal([]byte(out), &u); err != nil {
		t.Fatal(err)
	}
	if u.Tag != alpha || len(u.Versions) != 2 {
		t.Fatalf("usage alpha: %s", out)
	}
	v1, v2 := u.Versions[0], u.Versions[1]
	if v1.Version != 1 || v1.Encryptions != 3 || v1.Decryptions != 2 || v1.Refusals != 0 || v1.LastUse == "" ||
		v1.BudgetLeft == nil || *v1.BudgetLeft != 1<<32-3 {
		t.Errorf("version 1: %s", out)
	}
	if v2.Version != 2 || v2.Encryptions != 1 || v2.Refusals != 1 || v2.BudgetLeft == nil || *v2.BudgetLeft != 1<<32-1 {
		t.Errorf("version 2: %s", out)
	}
	out = must(t, "usage", "-data", data, "signer", "-o", "json")
	u = usageJSON{}
	if err := json.Unmarshal([]byte(out), &u); err != nil {
		t.Fatal(err)
	}
	if len(u.Versions) != 1 || u.Versions[0].Signatures != 1 || u.Versions[0].Verifications != 2 || u.Versions[0].BudgetLeft != nil {
		t.Errorf("usage signer: %s", out)
	}
	if strings.Contains(out, "encryptionBudgetLeft") {
		t.Errorf("an ECDSA key shows an encryption budget: %s", out)
	}
	out = must(t, "usage", "-data", data, "alpha")
	if !strings.Contains(out, "4294967293") || !strings.Contains(out, "LAST USE") {
		t.Errorf("usage table:\n%s", out)
	}
}
