package store

import (
	"cmp"
	"fmt"
	"slices"
)

// Assembler groups the records a Load reads into Contents. Implementations
// feed it every record with its revision and call Contents at the end;
// records that belong to no key (a version, generator or allow-list whose
// key record is missing) make Contents fail with ErrCorrupt.
type Assembler struct {
	keys   map[string]*KeyData
	orphan map[string][]Record
	names  map[string]string
}

// Add files one record read at revision rev.
func (a *Assembler) Add(r Record, rev int64) {
	if a.keys == nil {
		a.keys, a.orphan, a.names = map[string]*KeyData{}, map[string][]Record{}, map[string]string{}
	}
	if n, ok := r.(*NameRecord); ok {
		a.names[n.Name] = n.Tag
		return
	}
	if IsAuxiliary(r) {
		return // history and usage are read on demand (Ranger)
	}
	tag := r.KeyTag()
	kd := a.keys[tag]
	if kr, ok := r.(*KeyRecord); ok {
		if kd == nil {
			kd = &KeyData{}
			a.keys[tag] = kd
		}
		kd.Rev, kd.Key = rev, *kr
		return
	}
	if kd == nil {
		a.orphan[tag] = append(a.orphan[tag], r)
		return
	}
	a.file(kd, r)
}

func (a *Assembler) file(kd *KeyData, r Record) {
	switch r := r.(type) {
	case *VersionRecord:
		kd.Versions = append(kd.Versions, *r)
	case *GeneratorRecord:
		kd.Generator = r
	case *ACLRecord:
		kd.ACL = r
	}
}

// Contents returns what was added, at store revision rev.
func (a *Assembler) Contents(rev int64) (*Contents, error) {
	c := &Contents{Rev: rev, Names: a.names}
	if c.Names == nil {
		c.Names = map[string]string{}
	}
	for tag, rs := range a.orphan {
		kd := a.keys[tag]
		if kd == nil {
			return nil, fmt.Errorf("%w: %s of a missing key", ErrCorrupt, rs[0].StoreKey())
		}
		for _, r := range rs {
			a.file(kd, r)
		}
	}
	for _, kd := range a.keys {
		slices.SortFunc(kd.Versions, func(x, y VersionRecord) int { return cmp.Compare(x.Version, y.Version) })
		c.Keys = append(c.Keys, kd)
	}
	return c, nil
}
