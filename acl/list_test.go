package acl

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
)

func mustAdd(t testing.TB, l List, entries ...string) List {
	t.Helper()
	l, err := l.Add(entries)
	if err != nil {
		t.Fatalf("Add(%q): %v", entries, err)
	}
	return l
}

func TestZeroList(t *testing.T) {
	var l List
	if l.Enabled() || l.Len() != 0 {
		t.Errorf("zero List: enabled %v, len %d", l.Enabled(), l.Len())
	}
	if got := l.Entries(); got == nil || len(got) != 0 {
		t.Errorf("Entries() = %#v, want empty non-nil", got)
	}
	st := l.State()
	if st.Enabled || st.Entries == nil || len(st.Entries) != 0 {
		t.Errorf("State() = %#v", st)
	}
}

func TestAddKeepsTextSortsAndDedupes(t *testing.T) {
	l := List{}.WithEnabled(true)
	l = mustAdd(t, l, "10.0.0.1", "10.0.0.1/32", "10.3.0.1/24", "10.3.0.0/24", "2001:db8::1", "1.*.*.1", "10.0.0.1")
	want := []string{"1.*.*.1", "10.0.0.1", "10.0.0.1/32", "10.3.0.0/24", "10.3.0.1/24", "2001:db8::1"}
	if got := l.Entries(); !slices.Equal(got, want) {
		t.Fatalf("Entries() = %q, want %q", got, want)
	}
	if !l.Enabled() {
		t.Error("Add lost the enabled flag")
	}
	// Re-adding is a no-op.
	l2 := mustAdd(t, l, "10.0.0.1", "2001:db8::1")
	if got := l2.Entries(); !slices.Equal(got, want) {
		t.Errorf("after re-add Entries() = %q, want %q", got, want)
	}
	// Adding merges in order; the old List is untouched.
	l3 := mustAdd(t, l, "9.9.9.9", "0.0.0.0/0")
	want3 := []string{"0.0.0.0/0", "1.*.*.1", "10.0.0.1", "10.0.0.1/32", "10.3.0.0/24", "10.3.0.1/24", "2001:db8::1", "9.9.9.9"}
	if got := l3.Entries(); !slices.Equal(got, want3) {
		t.Errorf("Entries() = %q, want %q", got, want3)
	}
	if got := l.Entries(); !slices.Equal(got, want) {
		t.Errorf("original changed: %q", got)
	}
	for _, s := range want3 {
		if !l3.Has(s) {
			t.Errorf("Has(%q) = false", s)
		}
	}
	if l3.Has("10.0.0.2") || l3.Has("10.3.0.1") {
		t.Error("Has reports an absent entry")
	}
}

func TestAddRejectsAndChangesNothing(t *testing.T) {
	base := mustAdd(t, List{}.WithEnabled(true), "10.0.0.1")
	tests := []struct {
		name    string
		entries []string
		want    error
	}{
		{"none", nil, ErrInvalidArgument},
		{"empty slice", []string{}, ErrInvalidArgument},
		{"101", numbered(101), ErrInvalidArgument},
		{"one invalid", []string{"10.0.0.2", "10.0.0.300"}, ErrInvalidEntry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := base.Add(tt.entries)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "acl: ") {
				t.Errorf("message %q lacks the prefix", err)
			}
			if !slices.Equal(got.Entries(), []string{"10.0.0.1"}) || !got.Enabled() {
				t.Errorf("list changed on error: %v", got.State())
			}
		})
	}
	if _, err := base.Add(numbered(100)); err != nil {
		t.Errorf("Add(100 entries): %v", err)
	}
}

func TestAddLimit(t *testing.T) {
	var l List
	for i := 0; i < MaxEntries/MaxEntriesPerCall; i++ {
		l = mustAdd(t, l, numbered(MaxEntriesPerCall, i*MaxEntriesPerCall)...)
	}
	if l.Len() != MaxEntries {
		t.Fatalf("Len() = %d, want %d", l.Len(), MaxEntries)
	}
	// Re-adding held entries to a full list is still a no-op success.
	if l2, err := l.Add([]string{"10.0.0.0", "10.0.0.1"}); err != nil || l2.Len() != MaxEntries {
		t.Errorf("re-add to full list: len %d, %v", l2.Len(), err)
	}
	// One new entry, even beside held ones, is too many.
	l2, err := l.Add([]string{"10.0.0.0", "192.0.2.1"})
	if !errors.Is(err, ErrTooManyEntries) {
		t.Fatalf("err = %v, want ErrTooManyEntries", err)
	}
	if !strings.Contains(err.Error(), "1001") || !strings.Contains(err.Error(), "1000") {
		t.Errorf("message %q does not give the counts", err)
	}
	if l2.Len() != MaxEntries || l2.Has("192.0.2.1") {
		t.Error("list changed on ErrTooManyEntries")
	}
	// Below the limit, a batch that would cross it fails as a whole.
	l3, err := l.Remove([]string{"10.0.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l3.Add([]string{"192.0.2.1", "192.0.2.2"}); !errors.Is(err, ErrTooManyEntries) {
		t.Errorf("err = %v, want ErrTooManyEntries", err)
	}
	if l4, err := l3.Add([]string{"192.0.2.1", "192.0.2.1"}); err != nil || l4.Len() != MaxEntries {
		t.Errorf("fill to the limit: len %d, %v", l4.Len(), err)
	}
}

func TestRemove(t *testing.T) {
	l := mustAdd(t, List{}.WithEnabled(true), "10.0.0.1", "10.0.0.1/32", "10.3.0.1/24", "2001:db8::/32")

	got, err := l.Remove([]string{"10.0.0.1", "2001:db8::/32", "10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.0.1/32", "10.3.0.1/24"}; !slices.Equal(got.Entries(), want) {
		t.Errorf("Entries() = %q, want %q", got.Entries(), want)
	}
	if !got.Enabled() {
		t.Error("Remove lost the enabled flag")
	}
	if l.Len() != 4 {
		t.Error("Remove changed the original")
	}

	// All or nothing, naming every missing entry.
	got, err = l.Remove([]string{"10.0.0.1", "10.3.0.0/24", "10.0.0.2", "10.0.0.1/32"})
	var ee *EntryError
	if !errors.As(err, &ee) || !errors.Is(err, ErrEntryNotFound) || errors.Is(err, ErrInvalidEntry) {
		t.Fatalf("err = %v, want *EntryError matching ErrEntryNotFound only", err)
	}
	if len(ee.Problems) != 2 || ee.Problems[0].Index != 1 || ee.Problems[0].Entry != "10.3.0.0/24" ||
		ee.Problems[1].Index != 2 || ee.Problems[1].Entry != "10.0.0.2" {
		t.Errorf("problems = %+v", ee.Problems)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "acl: entry not found: ") ||
		!strings.Contains(msg, `"10.3.0.0/24"`) || !strings.Contains(msg, `"10.0.0.2"`) {
		t.Errorf("message = %q", msg)
	}
	if got.Len() != 4 {
		t.Error("list changed on ErrEntryNotFound")
	}

	// Exact strings only.
	if _, err := l.Remove([]string{"10.3.0.0/24"}); !errors.Is(err, ErrEntryNotFound) {
		t.Errorf("removing by equivalent text: err = %v", err)
	}

	// Syntax is checked first, on every entry.
	_, err = l.Remove([]string{"10.0.0.1", "bad", "010.0.0.1"})
	if !errors.As(err, &ee) || !errors.Is(err, ErrInvalidEntry) || len(ee.Problems) != 2 {
		t.Errorf("err = %v, want ErrInvalidEntry with 2 problems", err)
	}
	for _, n := range []int{0, 101} {
		if _, err := l.Remove(numbered(n)); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("Remove(%d entries): err = %v", n, err)
		}
	}

	// Removing everything leaves an empty list that still denies when enabled.
	empty, err := l.Remove(l.Entries())
	if err != nil || empty.Len() != 0 || !empty.Enabled() {
		t.Fatalf("remove all: %v, %v", empty.State(), err)
	}
}

func TestRemoveFromEmptyListSucceeds(t *testing.T) {
	for _, l := range []List{{}, List{}.WithEnabled(true)} {
		got, err := l.Remove([]string{"10.0.0.1", "2001:db8::/32"})
		if err != nil {
			t.Fatalf("Remove from empty list: %v", err)
		}
		if got.Len() != 0 || got.Enabled() != l.Enabled() {
			t.Errorf("got %v", got.State())
		}
		// Invalid entries are still refused.
		if _, err := l.Remove([]string{"nope"}); !errors.Is(err, ErrInvalidEntry) {
			t.Errorf("err = %v, want ErrInvalidEntry", err)
		}
	}
}

func TestWithEnabled(t *testing.T) {
	l := mustAdd(t, List{}, "10.0.0.1")
	on := l.WithEnabled(true)
	if l.Enabled() || !on.Enabled() || !slices.Equal(on.Entries(), l.Entries()) {
		t.Errorf("WithEnabled(true): %v from %v", on.State(), l.State())
	}
	off := on.WithEnabled(false)
	if off.Enabled() || off.Len() != 1 {
		t.Errorf("WithEnabled(false): %v", off.State())
	}
}

func TestPage(t *testing.T) {
	var l List
	for i := range 3 {
		l = mustAdd(t, l, numbered(100, i*100)...)
	}
	all := l.Entries()
	if !slices.IsSorted(all) {
		t.Fatal("Entries() not sorted")
	}
	tests := []struct {
		no, size   int
		start, end int
	}{
		{0, 0, 0, 20},
		{1, 0, 20, 40},
		{0, 200, 0, 200},
		{1, 200, 200, 300},
		{2, 200, 300, 300},
		{14, 20, 280, 300},
		{15, 20, 300, 300},
		{299, 1, 299, 300},
		{MaxPageNo, 1, 300, 300},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d_%d", tt.no, tt.size), func(t *testing.T) {
			got, err := l.Page(tt.no, tt.size)
			if err != nil {
				t.Fatal(err)
			}
			if got == nil || !slices.Equal(got, all[tt.start:tt.end]) {
				t.Errorf("Page(%d, %d) = %q, want all[%d:%d]", tt.no, tt.size, got, tt.start, tt.end)
			}
		})
	}
	for _, bad := range [][2]int{{-1, 20}, {0, -1}, {0, 201}, {MaxPageNo + 1, 1}, {MaxPageNo, 2}, {math.MaxInt32/200 + 1, 200}} {
		if _, err := l.Page(bad[0], bad[1]); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("Page(%d, %d): err = %v, want ErrInvalidArgument", bad[0], bad[1], err)
		}
	}
	if _, err := l.Page(math.MaxInt32/200, 200); err != nil {
		t.Errorf("Page at the product limit: %v", err)
	}
	if got, err := (List{}).Page(0, 0); err != nil || got == nil || len(got) != 0 {
		t.Errorf("empty list page = %#v, %v", got, err)
	}
}

func TestStateRoundTrip(t *testing.T) {
	l := mustAdd(t, List{}.WithEnabled(true), "10.3.0.1/24", "10.0.0.1", "2001:db8::1", "*.1.*.1")
	st := l.State()
	if !st.Enabled || !slices.Equal(st.Entries, l.Entries()) {
		t.Fatalf("State() = %v", st)
	}
	st.Entries[0] = "mutated"
	if l.Entries()[0] == "mutated" {
		t.Fatal("State shares memory with the List")
	}
	back, err := ParseState(l.State())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back.Entries(), l.Entries()) || back.Enabled() != l.Enabled() {
		t.Errorf("round trip: %v, want %v", back.State(), l.State())
	}
	// Unsorted input is accepted and sorted.
	back, err = ParseState(State{Entries: []string{"9.9.9.9", "10.0.0.1"}})
	if err != nil || !slices.Equal(back.Entries(), []string{"10.0.0.1", "9.9.9.9"}) || back.Enabled() {
		t.Errorf("unsorted: %v, %v", back.State(), err)
	}
	if back, err := ParseState(State{Enabled: true}); err != nil || !back.Enabled() || back.Len() != 0 {
		t.Errorf("empty enabled: %v, %v", back.State(), err)
	}
}

func TestParseStateRejects(t *testing.T) {
	_, err := ParseState(State{Entries: []string{"10.0.0.1", "x", "10.0.0.1 ", "010.1.1.1"}})
	var ee *EntryError
	if !errors.As(err, &ee) || !errors.Is(err, ErrInvalidEntry) || len(ee.Problems) != 3 {
		t.Errorf("invalid entries: err = %v", err)
	}
	_, err = ParseState(State{Entries: []string{"10.0.0.1", "10.0.0.2", "10.0.0.1"}})
	if !errors.As(err, &ee) || !errors.Is(err, ErrInvalidEntry) || len(ee.Problems) != 1 ||
		ee.Problems[0].Index != 2 || !strings.Contains(ee.Problems[0].Reason, "duplicate") {
		t.Errorf("duplicate: err = %v", err)
	}
	if _, err := ParseState(State{Entries: numbered(MaxEntries + 1)}); !errors.Is(err, ErrTooManyEntries) {
		t.Errorf("too many: err = %v", err)
	}
	if l, err := ParseState(State{Entries: numbered(MaxEntries)}); err != nil || l.Len() != MaxEntries {
		t.Errorf("at the limit: %v", err)
	}
}

// numbered returns n distinct IPv4 addresses 10.0.x.y, starting at the
// first one of them (default 0).
func numbered(n int, first ...int) []string {
	start := 0
	if len(first) > 0 {
		start = first[0]
	}
	out := make([]string, n)
	for i := range out {
		k := start + i
		out[i] = fmt.Sprintf("10.0.%d.%d", k/256, k%256)
	}
	return out
}
