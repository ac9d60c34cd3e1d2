package naverapi

import (
	"math"
	"net/http"
	"time"

	"github.com/pocketkms/kms"
)

// v3 management (/kms/v3/keys…, account authentication): flat bodies,
// RFC 3339 UTC dates with milliseconds in fields ending in DateTime.

// dateTime formats a v3 date; "" for the zero time (then omitted).
func dateTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

func newV3Rotation(r kms.Rotation) V3Rotation {
	return V3Rotation{Enabled: r.Enabled, PeriodDays: r.PeriodDays, NextRotationDateTime: dateTime(r.NextRotationAt)}
}

func newV3Key(k *kms.Key) *V3Key {
	out := &V3Key{
		KeyTag: k.Tag, KeyName: k.Name, NRN: "nrn:PUB:KMS::local:Key/" + k.Tag, KeyType: string(k.Type),
		ProtectionType: protectionBasic, Convergent: k.Convergent, Status: string(k.State),
		CurrentVersion: k.CurrentVersion, Rotation: newV3Rotation(k.AutoRotation),
		CreatedDateTime: dateTime(k.CreatedAt), StatusUpdatedDateTime: dateTime(k.StateChangedAt),
		ScheduledDestroyDateTime: dateTime(k.DestroyAt),
	}
	if k.Memo != "" {
		out.Memo = &k.Memo
	}
	return out
}

func newV3Version(v *kms.KeyVersion) V3Version {
	return V3Version{Version: v.Version, Status: string(v.State), Current: v.Current, CreatedDateTime: dateTime(v.CreatedAt)}
}

// page reads v3 paging: pageNo from 0 (default 0), pageSize 1..200
// (default 20), pageNo × pageSize ≤ 2,147,483,647.
func (c *call) page(q object) (pageNo, pageSize int) {
	pageNo = c.queryInt(q, "pageNo", 0, 0, math.MaxInt32-1)
	pageSize = c.queryInt(q, "pageSize", 20, 1, 200)
	if int64(pageNo)*int64(pageSize) > math.MaxInt32 {
		q.fail("pageNo", "pageNo × pageSize must not exceed 2147483647")
	}
	return pageNo, pageSize
}

// memoField checks a v3 memo string: 1..100 characters (null clears it on
// update; the Engine counts the characters).
func memoField(o object) (*string, bool) {
	m, ok := o.str("memo")
	if ok && m == "" {
		o.fail("memo", "must be 1..100 characters (send null to clear it)")
	}
	return &m, ok
}

// v3CreateKey serves POST /kms/v3/keys (201).
func v3CreateKey(c *call) (any, error) {
	o, err := c.body()
	if err != nil {
		return nil, err
	}
	for _, f := range []string{"keyName", "keyType", "rotation"} {
		o.require(f)
	}
	name, _ := o.str("keyName")
	typ, _ := o.str("keyType")
	checkProtection(o)
	memo, _ := memoField(o)
	conv, _ := o.boolean("convergent")
	var auto bool
	var period int
	if rot, ok := o.obj("rotation"); ok {
		rot.require("enabled")
		auto, _ = rot.boolean("enabled")
		period, _ = rot.integer("periodDays", 1, kms.MaxRotationPeriodDays)
	}
	if err := o.err(); err != nil {
		return nil, err
	}
	k, err := c.h.eng.CreateKey(c.ctx, kms.CreateKeyRequest{Name: name, Type: kms.KeyType(typ), Memo: *memo,
		Convergent: conv, AutoRotation: auto, RotationPeriodDays: period})
	if err != nil {
		return nil, err
	}
	c.status = http.StatusCreated
	return newV3Key(k), nil
}

// v3ListKeys serves GET /kms/v3/keys?pageNo&pageSize, newest first:
// {keys, pageNo, pageSize, totalCount}.
func v3ListKeys(c *call) (any, error) {
	q := newQuery()
	pageNo, pageSize := c.page(q)
	if err := q.err(); err != nil {
		return nil, err
	}
	page, err := c.h.eng.ListKeys(c.ctx, kms.ListKeysRequest{PageNo: pageNo, PageSize: pageSize})
	if err != nil {
		return nil, err
	}
	keys := make([]*V3Key, len(page.Keys))
	for i := range page.Keys {
		keys[i] = newV3Key(&page.Keys[i])
	}
	return &V3KeyList{Keys: keys, PageNo: pageNo, PageSize: pageSize, TotalCount: page.TotalCount}, nil
}

// v3GetKey serves GET /kms/v3/keys/{keyTag}.
func v3GetKey(c *call) (any, error) {
	k, err := c.h.eng.GetKey(c.ctx, c.tag)
	if err != nil {
		return nil, err
	}
	return newV3Key(k), nil
}

// stateField reads a state member: ENABLED or DISABLED, never null.
func stateField(o object, field string) (string, bool) {
	if o.isNull(field) {
		o.fail(field, "must not be null")
		return "", false
	}
	s, ok := o.str(field)
	if ok && s != "ENABLED" && s != "DISABLED" {
		o.fail(field, "must be ENABLED or DISABLED")
		return "", false
	}
	return s, ok
}

// v3UpdateKey serves PATCH /kms/v3/keys/{keyTag}, a merge patch of keyName,
// memo (null clears it) and status (ENABLED|DISABLED); {} changes nothing.
func v3UpdateKey(c *call) (any, error) {
	o, err := c.body()
	if err != nil {
		return nil, err
	}
	var req kms.UpdateKeyRequest
	if o.isNull("keyName") {
		o.fail("keyName", "must not be null")
	} else if name, ok := o.str("keyName"); ok {
		req.Name = &name
	}
	if o.isNull("memo") {
		req.Memo = new(string)
	} else if m, ok := memoField(o); ok {
		req.Memo = m
	}
	if s, ok := stateField(o, "status"); ok {
		st := kms.KeyState(s)
		req.State = &st
	}
	if err := o.err(); err != nil {
		return nil, err
	}
	k, err := c.h.eng.UpdateKey(c.ctx, c.tag, req)
	if err != nil {
		return nil, err
	}
	return newV3Key(k), nil
}

// v3UpdateRotation serves PATCH rotation {enabled?, periodDays?}: the
// resulting setting.
func v3UpdateRotation(c *call) (any, error) {
	o, err := c.body()
	if err != nil {
		return nil, err
	}
	var up kms.RotationUpdate
	for _, f := range []string{"enabled", "periodDays"} {
		if o.isNull(f) {
			o.fail(f, "must not be null")
		}
	}
	if e, ok := o.boolean("enabled"); ok {
		up.Enabled = &e
	}
	if p, ok := o.integer("periodDays", 1, kms.MaxRotationPeriodDays); ok {
		up.PeriodDays = &p
	}
	if err := o.err(); err != nil {
		return nil, err
	}
	k, err := c.h.eng.UpdateKeyRotation(c.ctx, c.tag, up)
	if err != nil {
		return nil, err
	}
	return newV3Rotation(k.AutoRotation), nil
}

// v3KeyChange serves request-deletion and cancel-deletion: the key.
func v3KeyChange(change keyChange) handler {
	return func(c *call) (any, error) {
		k, err := change(c.h.eng, c.ctx, c.tag)
		if err != nil {
			return nil, err
		}
		return newV3Key(k), nil
	}
}

// v3ListVersions serves GET versions?pageNo&pageSize, ascending:
// {versions, pageNo, pageSize, totalCount}.
func v3ListVersions(c *call) (any, error) {
	q := newQuery()
	pageNo, pageSize := c.page(q)
	if err := q.err(); err != nil {
		return nil, err
	}
	vs, err := c.h.eng.ListKeyVersions(c.ctx, c.tag)
	if err != nil {
		return nil, err
	}
	out := []V3Version{}
	for i := pageNo * pageSize; i < len(vs) && i < (pageNo+1)*pageSize; i++ {
		out = append(out, newV3Version(&vs[i]))
	}
	return &V3VersionList{Versions: out, PageNo: pageNo, PageSize: pageSize, TotalCount: len(vs)}, nil
}

// v3CreateVersion serves POST versions, a manual rotation (201).
func v3CreateVersion(c *call) (any, error) {
	v, err := c.h.eng.RotateKey(c.ctx, c.tag)
	if err != nil {
		return nil, err
	}
	c.status = http.StatusCreated
	return newV3Version(v), nil
}

// v3GetVersion serves GET versions/{version}.
func v3GetVersion(c *call) (any, error) {
	v, err := findVersion(c, math.MaxInt32)
	if err != nil {
		return nil, err
	}
	return newV3Version(v), nil
}

// v3UpdateVersion serves PATCH versions/{version} {"status"}.
func v3UpdateVersion(c *call) (any, error) {
	n, err := c.version(math.MaxInt32)
	if err != nil {
		return nil, err
	}
	o, err := c.body()
	if err != nil {
		return nil, err
	}
	o.require("status")
	s, _ := stateField(o, "status")
	if err := o.err(); err != nil {
		return nil, err
	}
	change := (*kms.Engine).EnableKeyVersion
	if s == "DISABLED" {
		change = (*kms.Engine).DisableKeyVersion
	}
	v, err := change(c.h.eng, c.ctx, c.tag, n)
	if err != nil {
		return nil, err
	}
	return newV3Version(v), nil
}

// v3GeneratorChange serves activate-, rotate- and
// deactivate-token-generator: {status ENABLED|DISABLED, tokenGeneratorId}.
func v3GeneratorChange(change generatorChange) handler {
	return func(c *call) (any, error) {
		g, err := change(c.h.eng, c.ctx, c.tag)
		if err != nil {
			return nil, err
		}
		out := &V3TokenGeneratorStatus{Status: "DISABLED"}
		if g.Status == kms.GeneratorActive {
			out.Status, out.TokenGeneratorID = "ENABLED", g.ID
		}
		return out, nil
	}
}

// v3GetGenerator serves GET token-generator (a pocketkms addition: NAVER's
// v3 page for it was not found).
func v3GetGenerator(c *call) (any, error) {
	g, err := c.h.eng.GetTokenGenerator(c.ctx, c.tag)
	if err != nil {
		return nil, err
	}
	out := &V3TokenGenerator{Status: "DISABLED", IssuedTokenCount: g.IssuedTokenCount,
		EnabledDateTime: dateTime(g.EnabledAt), DisabledDateTime: dateTime(g.DisabledAt)}
	if g.Status == kms.GeneratorActive {
		out.Status, out.TokenGeneratorID = "ENABLED", g.ID
	}
	return out, nil
}

// v3UpdateACL serves PATCH acl {"enabled"?}: {"enabled"}. {} changes
// nothing and answers the current setting; the key must be ENABLED.
func v3UpdateACL(c *call) (any, error) {
	o, err := c.body()
	if err != nil {
		return nil, err
	}
	if o.isNull("enabled") {
		o.fail("enabled", "must not be null")
	}
	enabled, set := o.boolean("enabled")
	if err := o.err(); err != nil {
		return nil, err
	}
	if set {
		a, err := c.h.eng.SetKeyACLEnabled(c.ctx, c.tag, enabled)
		if err != nil {
			return nil, err
		}
		return &V3ACLStatus{Enabled: a.Enabled}, nil
	}
	k, err := c.h.eng.GetKey(c.ctx, c.tag)
	if err != nil {
		return nil, err
	}
	if k.State != kms.StateEnabled {
		return nil, &apiError{status: http.StatusConflict, code: codeInvalidState, detail: "key is not enabled"}
	}
	a, err := c.h.eng.GetKeyACL(c.ctx, c.tag)
	if err != nil {
		return nil, err
	}
	return &V3ACLStatus{Enabled: a.Enabled}, nil
}

// v3ACLList serves acl/add-allowed-ips and acl/remove-allowed-ips, body
// {"allowedIps":[…]}: the whole updated list {"allowedIps"}.
func v3ACLList(change aclChange, adding bool) handler {
	return func(c *call) (any, error) {
		ips, err := readIPs(c, "allowedIps", adding)
		if err != nil {
			return nil, err
		}
		a, err := change(c.h.eng, c.ctx, c.tag, ips)
		if err != nil {
			return nil, err
		}
		return &V3AllowedIPs{AllowedIPs: nonNil(a.Entries)}, nil
	}
}

// v3ListACL serves GET acl/allowed-ips?pageNo&pageSize, sorted by string:
// {allowedIps, pageNo, pageSize, totalCount}.
func v3ListACL(c *call) (any, error) {
	q := newQuery()
	pageNo, pageSize := c.page(q)
	if err := q.err(); err != nil {
		return nil, err
	}
	page, err := c.h.eng.ListAllowedIPs(c.ctx, c.tag, pageNo, pageSize)
	if err != nil {
		return nil, err
	}
	return &V3AllowedIPList{AllowedIPs: nonNil(page.Entries), PageNo: pageNo, PageSize: pageSize, TotalCount: page.TotalCount}, nil
}
