package pgdata

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

func TestVersionDir(t *testing.T) {
	for _, tt := range []struct {
		version int
		cat     uint32
		want    string
	}{
		{150004, 202209061, "PG_15_202209061"},
		{170002, 202406281, "PG_17_202406281"},
		{90624, 201608131, "PG_9.6_201608131"},
	} {
		got := VersionDir(tt.version, tt.cat)
		if got != tt.want {
			t.Errorf("VersionDir(%d, %d) = %q, want %q", tt.version, tt.cat, got, tt.want)
		}
		major, cat, ok := ParseVersionDir(got)
		if !ok || cat != tt.cat || "PG_"+major+"_"+strconv.FormatUint(uint64(cat), 10) != got {
			t.Errorf("ParseVersionDir(%q) = %q, %d, %v", got, major, cat, ok)
		}
	}
	for _, bad := range []string{"PG_15", "PG__202209061", "PG_15_2022", "PG_x_202209061", "pg_15_202209061", "PG_15_202209061x"} {
		if _, _, ok := ParseVersionDir(bad); ok {
			t.Errorf("ParseVersionDir(%q) ok", bad)
		}
	}
}

func TestMajorVersion(t *testing.T) {
	for num, want := range map[int]string{150004: "15", 100023: "10", 90624: "9.6", 170000: "17", 120000: "12"} {
		if got := MajorVersion(num); got != want {
			t.Errorf("MajorVersion(%d) = %q, want %q", num, got, want)
		}
	}
}

func TestTablespaceLink(t *testing.T) {
	if got := TablespaceLink(16400); got != "pg_tblspc/16400" {
		t.Errorf("TablespaceLink = %q", got)
	}
	for p, want := range map[string]uint32{"pg_tblspc/16400": 16400, "pg_tblspc/16400/PG_15_202209061": 0, "pg_tblspc/x": 0, "base/16400": 0, "pg_tblspc/": 0} {
		got, ok := ParseTablespaceLink(p)
		if got != want || ok != (want != 0) {
			t.Errorf("ParseTablespaceLink(%q) = %d, %v", p, got, ok)
		}
	}
}

func TestTablespaceMap(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []MapEntry
	}{
		{"empty", "", nil},
		{"two", "16400 /srv/ts1\n16401 /srv/ts 2\n", []MapEntry{{16400, "/srv/ts1"}, {16401, "/srv/ts 2"}}},
		{"crlf", "16400 /srv/ts1\r\n", []MapEntry{{16400, "/srv/ts1"}}},
		{"no final newline", "16400 /srv/ts1", []MapEntry{{16400, "/srv/ts1"}}},
		{"escaped newline and backslash", "16400 /srv/a\\\nb\\\\c\n", []MapEntry{{16400, "/srv/a\nb\\c"}}},
		{"leading space in path", "16400  /srv/x\n", []MapEntry{{16400, " /srv/x"}}},
	}
	for _, tt := range tests {
		got, err := ParseTablespaceMap(tt.text)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("%s: ParseTablespaceMap = %v, %v; want %v", tt.name, got, err, tt.want)
		}
		// What FormatTablespaceMap writes reads back the same.
		back, err := ParseTablespaceMap(FormatTablespaceMap(got))
		if err != nil || !slices.Equal(back, tt.want) {
			t.Errorf("%s: round trip = %v, %v", tt.name, back, err)
		}
	}
	if got := FormatTablespaceMap([]MapEntry{{16401, "/b"}, {16400, "/a\nx"}}); got != "16400 /a\\\nx\n16401 /b\n" {
		t.Errorf("FormatTablespaceMap = %q", got)
	}
	for _, bad := range []string{"16400\n", "x /srv\n", "16400 \n", "16400 /srv\\", " /srv\n"} {
		if _, err := ParseTablespaceMap(bad); !errors.Is(err, ErrTablespaceMap) {
			t.Errorf("ParseTablespaceMap(%q) = %v, want ErrTablespaceMap", bad, err)
		}
	}
}

func TestTablespacesInside(t *testing.T) {
	data, outside := t.TempDir(), t.TempDir()
	for _, d := range []string{"pg_tblspc/16390", "tsin", "deep/ts2"} { // 16390: an in-place tablespace
		if err := os.MkdirAll(filepath.Join(data, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for oid, target := range map[string]string{
		"16384": filepath.Join(data, "tsin"),
		"16385": "../deep/ts2", // relative
		"16386": outside,
		"16387": filepath.Join(data, "gone"), // dangling
	} {
		if err := os.Symlink(target, filepath.Join(data, "pg_tblspc", oid)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := TablespacesInside(data)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]bool{"tsin": true, "deep/ts2": true}; !maps.Equal(got, want) {
		t.Errorf("TablespacesInside = %v, want %v", got, want)
	}
	if got, err := TablespacesInside(t.TempDir()); err != nil || len(got) != 0 {
		t.Errorf("without pg_tblspc: %v, %v", got, err)
	}
}
