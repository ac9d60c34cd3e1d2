package naverapi

import (
	"context"
	"slices"
	"testing"
)

// TestIPv6AllowListEntries: by default (NAVER-compatible) the ACL calls
// refuse IPv6 entries to add with 400 InvalidParameter naming each one,
// and add nothing; removing works whatever the entry; WithIPv6AllowLists
// accepts them; the library accepts them either way.
func TestIPv6AllowListEntries(t *testing.T) {
	ctx := context.Background()
	for _, allow := range []bool{false, true} {
		var opts []Option
		if allow {
			opts = append(opts, WithIPv6AllowLists())
		}
		ts := newTestServer(t, opts...)
		c := ts.client
		tag := c.do(t, "POST", "/kms/v3/keys", map[string]any{"keyName": "six", "keyType": "AES256", "rotation": map[string]any{"enabled": false}}, "").ok(t, "create").str("keyTag")
		v2p, v3p := "/kms/v1/keys/"+tag+"/acl", "/kms/v3/keys/"+tag+"/acl"
		for _, tc := range []struct {
			path, field string
			entries     []string
			refused     []string // fieldErrors when IPv6 is refused
		}{
			{v3p + "/add-allowed-ips", "allowedIps", []string{"10.0.0.1", "2001:db8::/32"}, []string{"allowedIps[1]"}},
			{v3p + "/add-allowed-ips", "allowedIps", []string{"::1", "fe80::1"}, []string{"allowedIps[0]", "allowedIps[1]"}},
			{v2p, "ipList", []string{"2001:db8::7", "10.0.0.2"}, []string{"ipList[0]"}},
		} {
			r := c.do(t, "POST", tc.path, map[string]any{tc.field: tc.entries}, "")
			if allow {
				r.ok(t, "add IPv6 with the option")
				continue
			}
			r.fails(t, "add IPv6", 400, "InvalidParameter")
			if got := r.fieldErrors(); !slices.Equal(got, tc.refused) {
				t.Fatalf("%v: fieldErrors %v, want %v", tc.entries, got, tc.refused)
			}
		}
		a, err := ts.eng.GetKeyACL(ctx, tag)
		if err != nil {
			t.Fatal(err)
		}
		if want := 0; !allow && len(a.Entries) != want {
			t.Fatalf("refused calls added %v", a.Entries)
		}
		// A malformed entry keeps the Engine's own error; IPv4 is fine.
		c.do(t, "POST", v3p+"/add-allowed-ips", map[string]any{"allowedIps": []string{"2001:db8::zz"}}, "").fails(t, "malformed", 400, "InvalidParameter")
		c.do(t, "POST", v3p+"/add-allowed-ips", map[string]any{"allowedIps": []string{"10.9.0.0/16"}}, "").ok(t, "IPv4")

		// An IPv6 entry added through the library is listed and removable.
		if _, err := ts.eng.AddAllowedIPs(ctx, tag, []string{"2001:db8:1::/48"}); err != nil {
			t.Fatal(err)
		}
		r := c.do(t, "GET", v3p+"/allowed-ips", nil, "").ok(t, "list")
		if !slices.Contains(toStrings(r.body["allowedIps"]), "2001:db8:1::/48") {
			t.Fatalf("list: %s", r.raw)
		}
		c.do(t, "POST", v3p+"/remove-allowed-ips", map[string]any{"allowedIps": []string{"2001:db8:1::/48"}}, "").ok(t, "remove IPv6")
		if _, err := ts.eng.AddAllowedIPs(ctx, tag, []string{"2001:db8:2::/48"}); err != nil {
			t.Fatal(err)
		}
		c.do(t, "DELETE", v2p, map[string]any{"ipList": []string{"2001:db8:2::/48"}}, "").ok(t, "v2 remove IPv6")
	}
}
