package naverapi

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/acl"
)

// v2 management (/kms/v1/keys…, account authentication), answered in the
// {"code":"SUCCESS","data":…} envelope with epoch-millisecond dates.

// ms is an epoch-millisecond date, null when t is zero.
func ms(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	v := t.UnixMilli()
	return &v
}

// v2Status maps key and version states to v2's names.
func v2Status[S ~string](s S) string {
	switch s {
	case "ENABLED":
		return "ENABLE"
	case "DISABLED":
		return "DISABLE"
	case "REVOKED":
		return "REVOKE"
	}
	return string(s)
}

func newV2Key(k *kms.Key) *V2Key {
	return &V2Key{
		KeyTag: k.Tag, KeyName: k.Name, KeyType: string(k.Type), Status: v2Status(k.State),
		ProtectionType: protectionBasic, IsConvergent: k.Convergent, Memo: k.Memo,
		IsAutoRotation: k.AutoRotation.Enabled, RotationPeriod: k.AutoRotation.PeriodDays,
		NextRotationDate: ms(k.AutoRotation.NextRotationAt), CurrentVersion: k.CurrentVersion,
		RegisterDate: ms(k.CreatedAt), StatusDate: ms(k.StateChangedAt), DestroyDate: ms(k.DestroyAt),
	}
}

// protectionBasic is the only protection type offered: keys sealed under the
// root key of backend/memory (NAVER's "stored encrypted in internal storage").
const protectionBasic = "BASIC"

// checkProtection checks a protectionType member: BASIC, or absent where not
// required. COMMON_HSM is refused rather than silently downgraded.
func checkProtection(o object) {
	p, ok := o.str("protectionType")
	switch {
	case !ok || p == protectionBasic:
	case p == "COMMON_HSM":
		o.fail("protectionType", "COMMON_HSM is not offered by this server; use BASIC")
	default:
		o.fail("protectionType", "must be BASIC")
	}
}

// v2CreateKey serves POST /kms/v1/keys.
func v2CreateKey(c *call) (any, error) {
	o, err := c.body()
	if err != nil {
		return nil, err
	}
	for _, f := range []string{"keyName", "keyType", "isAutoRotation", "protectionType"} {
		o.require(f)
	}
	name, _ := o.str("keyName")
	typ, _ := o.str("keyType")
	memo, _ := o.str("memo")
	conv, _ := o.boolean("isConvergent")
	auto, _ := o.boolean("isAutoRotation")
	period, _ := o.integer("rotationPeriod", 1, kms.MaxRotationPeriodDays)
	checkProtection(o)
	if err := o.err(); err != nil {
		return nil, err
	}
	k, err := c.h.eng.CreateKey(c.ctx, kms.CreateKeyRequest{Name: name, Type: kms.KeyType(typ), Memo: memo,
		Convergent: conv, AutoRotation: auto, RotationPeriodDays: period})
	if err != nil {
		return nil, err
	}
	return newV2Key(k), nil
}

// queryInt reads a decimal query parameter in min..max, def when absent.
func (c *call) queryInt(o object, name string, def, min, max int) int {
	q := c.r.URL.Query()
	if !q.Has(name) {
		return def
	}
	n, ok := parseDecimal(q.Get(name), min, max)
	if !ok {
		o.fail(name, "must be an integer from "+strconv.Itoa(min)+" to "+strconv.Itoa(max))
	}
	return n
}

func newQuery() object { return object{errs: new([]FieldError)} }

// v2ListKeys serves GET /kms/v1/keys?pageNo&pageSize: pageNo from 1
// (default 1), pageSize 1..200 (default 100).
func v2ListKeys(c *call) (any, error) {
	q := newQuery()
	pageNo := c.queryInt(q, "pageNo", 1, 1, 1<<31-1)
	pageSize := c.queryInt(q, "pageSize", 100, 1, 200)
	if err := q.err(); err != nil {
		return nil, err
	}
	page, err := c.h.eng.ListKeys(c.ctx, kms.ListKeysRequest{PageNo: pageNo - 1, PageSize: pageSize})
	if err != nil {
		return nil, err
	}
	list := make([]*V2Key, len(page.Keys))
	for i := range page.Keys {
		list[i] = newV2Key(&page.Keys[i])
	}
	return &V2KeyList{KeyList: list, CurrentPageNo: pageNo,
		TotalPageNo: (page.TotalCount + pageSize - 1) / pageSize, TotalCount: page.TotalCount}, nil
}

// v2GetKey serves GET /kms/v1/keys/{keyTag}.
func v2GetKey(c *call) (any, error) {
	k, err := c.h.eng.GetKey(c.ctx, c.tag)
	if err != nil {
		return nil, err
	}
	return newV2Key(k), nil
}

// keyChange is an Engine method that changes a key's state.
type keyChange func(e *kms.Engine, ctx context.Context, keyTag string) (*kms.Key, error)

// v2KeyState serves enable, disable, request-deletion and cancel-deletion:
// {keyTag, status, statusDate} (+ destroyDate while REVOKE).
func v2KeyState(change keyChange) handler {
	return func(c *call) (any, error) {
		k, err := change(c.h.eng, c.ctx, c.tag)
		if err != nil {
			return nil, err
		}
		return &V2KeyStatus{KeyTag: k.Tag, Status: v2Status(k.State), StatusDate: ms(k.StateChangedAt), DestroyDate: ms(k.DestroyAt)}, nil
	}
}

// v2Rotate serves POST rotate: {keyTag, version, rotatedDate}.
func v2Rotate(c *call) (any, error) {
	v, err := c.h.eng.RotateKey(c.ctx, c.tag)
	if err != nil {
		return nil, err
	}
	return &V2RotateResponse{KeyTag: c.keyTag(), Version: v.Version, RotatedDate: ms(v.CreatedAt)}, nil
}

// v2Rotation serves rotation-period (rotationPeriod required),
// enable-auto-rotation (rotationPeriod optional) and disable-auto-rotation:
// {keyTag, isAutoRotation, rotationPeriod, nextRotationDate}.
func v2Rotation(enabled *bool, needPeriod bool) handler {
	return func(c *call) (any, error) {
		o, err := c.body()
		if err != nil {
			return nil, err
		}
		up := kms.RotationUpdate{Enabled: enabled}
		if needPeriod {
			o.require("rotationPeriod")
		}
		if enabled == nil || *enabled {
			if p, ok := o.integer("rotationPeriod", 1, kms.MaxRotationPeriodDays); ok {
				up.PeriodDays = &p
			}
		}
		if err := o.err(); err != nil {
			return nil, err
		}
		k, err := c.h.eng.UpdateKeyRotation(c.ctx, c.tag, up)
		if err != nil {
			return nil, err
		}
		return &V2RotationResponse{KeyTag: k.Tag, IsAutoRotation: k.AutoRotation.Enabled,
			RotationPeriod: k.AutoRotation.PeriodDays, NextRotationDate: ms(k.AutoRotation.NextRotationAt)}, nil
	}
}

// v2Memo serves PUT memo: {"memo"} (0..100 characters) → {keyTag, memo}.
func v2Memo(c *call) (any, error) {
	o, err := c.body()
	if err != nil {
		return nil, err
	}
	if _, ok := o.m["memo"]; !ok {
		o.fail("memo", "is required")
	}
	memo, _ := o.str("memo")
	if err := o.err(); err != nil {
		return nil, err
	}
	k, err := c.h.eng.UpdateKey(c.ctx, c.tag, kms.UpdateKeyRequest{Memo: &memo})
	if err != nil {
		return nil, err
	}
	return &V2MemoResponse{KeyTag: k.Tag, Memo: k.Memo}, nil
}

// findVersion returns one version of a key.
func findVersion(c *call, max int) (*kms.KeyVersion, error) {
	n, err := c.version(max)
	if err != nil {
		return nil, err
	}
	return c.h.eng.GetKeyVersion(c.ctx, c.tag, n)
}

func newV2Version(tag string, v *kms.KeyVersion) V2Version {
	return V2Version{KeyTag: tag, Version: v.Version, Status: v2Status(v.State),
		IsCurrent: v.Current, RegisterDate: ms(v.CreatedAt)}
}

// v2ListVersions serves GET versions: {keyTag, versionList}.
func v2ListVersions(c *call) (any, error) {
	vs, err := c.h.eng.ListKeyVersions(c.ctx, c.tag)
	if err != nil {
		return nil, err
	}
	list := make([]V2Version, len(vs))
	for i := range vs {
		list[i] = newV2Version(c.keyTag(), &vs[i])
	}
	return &V2VersionList{KeyTag: c.keyTag(), VersionList: list}, nil
}

// v2GetVersion serves GET versions/{version}.
func v2GetVersion(c *call) (any, error) {
	v, err := findVersion(c, kms.MaxVersions)
	if err != nil {
		return nil, err
	}
	out := newV2Version(c.keyTag(), v)
	return &out, nil
}

// versionChange is an Engine method that changes a version's state.
type versionChange func(e *kms.Engine, ctx context.Context, keyTag string, version uint32) (*kms.KeyVersion, error)

// v2VersionState serves versions/{version}/enable and /disable:
// {keyTag, version, status, statusDate}.
func v2VersionState(change versionChange) handler {
	return func(c *call) (any, error) {
		n, err := c.version(kms.MaxVersions)
		if err != nil {
			return nil, err
		}
		v, err := change(c.h.eng, c.ctx, c.tag, n)
		if err != nil {
			return nil, err
		}
		return &V2VersionStatus{KeyTag: c.keyTag(), Version: v.Version, Status: v2Status(v.State), StatusDate: ms(v.StateChangedAt)}, nil
	}
}

// generatorChange is an Engine method that changes a token generator.
type generatorChange func(e *kms.Engine, ctx context.Context, keyTag string) (*kms.TokenGenerator, error)

// v2GeneratorChange serves POST, PUT and DELETE token-generator: data null.
func v2GeneratorChange(change generatorChange) handler {
	return func(c *call) (any, error) {
		_, err := change(c.h.eng, c.ctx, c.tag)
		return nil, err
	}
}

// v2GetGenerator serves GET token-generator.
func v2GetGenerator(c *call) (any, error) {
	g, err := c.h.eng.GetTokenGenerator(c.ctx, c.tag)
	if err != nil {
		return nil, err
	}
	var id *string
	if g.ID != "" {
		id = &g.ID
	}
	return &V2TokenGenerator{TokenGeneratorID: id, Status: string(g.Status), EnabledDate: ms(g.EnabledAt),
		DisabledDate: ms(g.DisabledAt), IssuedTokenCount: g.IssuedTokenCount}, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// v2ACLEnabled serves acl/enable and acl/disable: {keyTag, isAclEnabled}.
func v2ACLEnabled(enabled bool) handler {
	return func(c *call) (any, error) {
		a, err := c.h.eng.SetKeyACLEnabled(c.ctx, c.tag, enabled)
		if err != nil {
			return nil, err
		}
		return &V2ACLStatus{KeyTag: c.keyTag(), IsACLEnabled: a.Enabled}, nil
	}
}

// aclChange is an Engine method that adds or removes allow-list entries.
type aclChange func(e *kms.Engine, ctx context.Context, keyTag string, entries []string) (*kms.ACL, error)

// readIPs reads a required list of IP entries. Entries to add must be IPv4
// unless the handler allows IPv6 (WithIPv6AllowLists): NAVER documents
// IPv4 only. Removal takes any entry, so that one added otherwise (through
// the library, or with the option) can be removed.
func readIPs(c *call, field string, adding bool) ([]string, error) {
	o, err := c.body()
	if err != nil {
		return nil, err
	}
	o.require(field)
	ips, ok := o.strList(field)
	if ok && (len(ips) == 0 || len(ips) > maxArrayItems) {
		o.fail(field, "must hold 1.."+strconv.Itoa(maxArrayItems)+" entries")
	}
	if adding && !c.h.ipv6ACL {
		for i, ip := range ips {
			// An entry with ':' that parses is IPv6; one that does not
			// parse gets the Engine's own error.
			if _, err := acl.ParseEntry(ip); err == nil && strings.Contains(ip, ":") {
				o.failAt(field+"["+strconv.Itoa(i)+"]", "must be an IPv4 address, CIDR prefix or wildcard: IPv6 entries are not accepted")
			}
		}
	}
	return ips, o.err()
}

// v2ACLList serves POST acl (add) and DELETE acl (remove), body
// {"ipList":[…]}: {keyTag, allowedIpList}.
func v2ACLList(change aclChange, adding bool) handler {
	return func(c *call) (any, error) {
		ips, err := readIPs(c, "ipList", adding)
		if err != nil {
			return nil, err
		}
		a, err := change(c.h.eng, c.ctx, c.tag, ips)
		if err != nil {
			return nil, err
		}
		return &V2ACLList{KeyTag: c.keyTag(), AllowedIPList: nonNil(a.Entries)}, nil
	}
}

// v2GetACL serves GET acl: {keyTag, isAclEnabled, allowedIpList}.
func v2GetACL(c *call) (any, error) {
	a, err := c.h.eng.GetKeyACL(c.ctx, c.tag)
	if err != nil {
		return nil, err
	}
	return &V2ACL{KeyTag: c.keyTag(), IsACLEnabled: a.Enabled, AllowedIPList: nonNil(a.Entries)}, nil
}
