package naverapi

import "github.com/pocketkms/kms"

// V3KeyHistory answers GET /kms/v3/keys/{keyTag}/history, a pocketkms
// extension: NAVER's console has a per-key usage history, but its API
// pages were not found (see the spec, §9), so the path and the fields
// are pocketkms's, in the v3 style (camelCase, pageNo from 0,
// dateTime strings). Entries are the key's management changes, newest
// first (kms.Engine.ListKeyHistory).
type V3KeyHistory struct {
	History    []V3HistoryEntry `json:"history"`
	PageNo     int              `json:"pageNo"`
	PageSize   int              `json:"pageSize"`
	TotalCount int              `json:"totalCount"`
}

// V3HistoryEntry is one management change of a key.
type V3HistoryEntry struct {
	Seq       uint64 `json:"seq"`
	Operation string `json:"operation"`
	// Version is the version the change made or changed; absent for the
	// key as a whole.
	Version  uint32 `json:"version,omitempty"`
	Plane    string `json:"plane"`
	Caller   string `json:"caller,omitempty"`
	CallerIP string `json:"callerIp,omitempty"`
	// Status is the key's status after the change.
	Status   string `json:"status"`
	DateTime string `json:"dateTime"`
}

// v3KeyHistory serves GET /kms/v3/keys/{keyTag}/history.
func v3KeyHistory(c *call) (any, error) {
	q := newQuery()
	pageNo, pageSize := c.page(q)
	if pageSize > 100 {
		q.fail("pageSize", "must be 1..100")
	}
	if err := q.err(); err != nil {
		return nil, err
	}
	page, err := c.h.eng.ListKeyHistory(c.ctx, c.tag, pageNo, pageSize)
	if err != nil {
		return nil, err
	}
	out := &V3KeyHistory{History: make([]V3HistoryEntry, len(page.Entries)), PageNo: pageNo, PageSize: pageSize, TotalCount: page.TotalCount}
	for i, en := range page.Entries {
		out.History[i] = newV3HistoryEntry(&en)
	}
	return out, nil
}

func newV3HistoryEntry(en *kms.KeyHistoryEntry) V3HistoryEntry {
	h := V3HistoryEntry{Seq: en.Seq, Operation: en.Op, Version: en.Version, Plane: string(en.Plane),
		Caller: en.Caller, Status: string(en.State), DateTime: dateTime(en.Time)}
	if en.Addr.IsValid() {
		h.CallerIP = en.Addr.String()
	}
	return h
}
