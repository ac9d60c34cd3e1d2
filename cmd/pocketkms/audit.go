package main

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"strconv"

	"github.com/pocketkms/kms"
)

func init() {
	register(command{"audit", "list a key's management history, newest first", auditCmd})
}

// historyJSON is a page of a key's history in -o json output.
type historyJSON struct {
	Tag        string             `json:"keyTag"`
	PageNo     int                `json:"pageNo"`
	PageSize   int                `json:"pageSize"`
	TotalCount int                `json:"totalCount"`
	Entries    []historyEntryJSON `json:"entries"`
}

type historyEntryJSON struct {
	Seq       uint64 `json:"seq"`
	Time      string `json:"time"`
	Operation string `json:"operation"`
	Version   uint32 `json:"version,omitempty"`
	Plane     string `json:"plane"`
	Caller    string `json:"caller"`
	Addr      string `json:"addr,omitempty"`
	State     string `json:"state"`
}

// auditCmd prints a page of kms.Engine.ListKeyHistory.
func auditCmd(ctx context.Context, args []string, s *stdio) error {
	var o dataOpts
	fl := newFlags("audit", "KEY", "List KEY's management history, newest first (kms.Engine.ListKeyHistory): every\n"+
		"successful change (create, rotate, enable, disable, deletion, token issuance, ...) with\n"+
		"its time, version, plane, caller and the key's state after it, recorded in the same\n"+
		"commit as the change. A key keeps its newest 100 changes. Cipher calls and refusals\n"+
		"are not in it (they go to the audit sink of the program serving the key). Pages count\n"+
		"from 0, as in the library and the HTTP API. KEY is a key tag or a key name.", s, &o)
	page := fl.Int("page", 0, "page number, from 0 (newest)")
	size := fl.Int("size", 20, "changes a page, 1..100")
	pos, err := parseArgs(fl, args, &o, 1, 1)
	if err != nil {
		return err
	}
	if *page < 0 {
		return usagef("audit: -page must be 0 or more")
	}
	if *size < 1 || *size > 100 {
		return usagef("audit: -size must be 1..100")
	}
	return o.withKey(ctx, pos[0], func(e *kms.Engine, tag string) error {
		p, err := e.ListKeyHistory(ctx, tag, *page, *size)
		if err != nil {
			return err
		}
		j := historyJSON{Tag: tag, PageNo: p.PageNo, PageSize: p.PageSize, TotalCount: p.TotalCount, Entries: []historyEntryJSON{}}
		t := table{header: []string{"SEQ", "TIME", "OPERATION", "VERSION", "STATE", "PLANE", "CALLER", "ADDRESS"}}
		for _, h := range p.Entries {
			addr := ""
			if h.Addr.IsValid() {
				addr = h.Addr.String()
			}
			j.Entries = append(j.Entries, historyEntryJSON{Seq: h.Seq, Time: stamp(h.Time), Operation: h.Op, Version: h.Version,
				Plane: string(h.Plane), Caller: h.Caller, Addr: addr, State: string(h.State)})
			v := "-"
			if h.Version > 0 {
				v = strconv.FormatUint(uint64(h.Version), 10)
			}
			t.rows = append(t.rows, []string{strconv.FormatUint(h.Seq, 10), stamp(h.Time), h.Op, v, string(h.State),
				dash(string(h.Plane)), dash(h.Caller), dash(addr)})
		}
		if o.output == "json" {
			return s.emit(&o, j, t)
		}
		if len(t.rows) > 0 {
			if err := s.emit(&o, j, t); err != nil {
				return err
			}
		}
		last := max((p.TotalCount+p.PageSize-1)/p.PageSize, 1) - 1
		more := ""
		if p.PageNo < last {
			more = fmt.Sprintf("; next: -page %d", p.PageNo+1)
		}
		_, err = fmt.Fprintf(s.out, "%d of %s (page %d of pages 0..%d%s)\n", len(p.Entries), plural(p.TotalCount, "change"), p.PageNo, last, more)
		return err
	})
}

// cliCaller is who the key history names for a change an admin command
// makes (kms.WithCaller): "pocketkms:" and the operating-system user.
// Tests replace it.
var cliCaller = func() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if name == "" {
		name = "unknown"
	}
	return "pocketkms:" + name
}
