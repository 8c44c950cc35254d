package schedule

import (
	"errors"
	"testing"
	"time"
	_ "time/tzdata" // the same zone data on every machine
)

func mustLoad(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func TestParseAt(t *testing.T) {
	tests := []struct {
		in               string
		h, m, s          int
		zone             string // the location's name; "" = time.Local
		wantErr          bool
		wantErrSubstring string
	}{
		{in: "02:00 PDT", h: 2, zone: "America/Los_Angeles"},
		{in: "02:00 pst", h: 2, zone: "America/Los_Angeles"},
		{in: "2:05 America/Los_Angeles", h: 2, m: 5, zone: "America/Los_Angeles"},
		{in: "  23:59:59   Europe/Berlin ", h: 23, m: 59, s: 59, zone: "Europe/Berlin"},
		{in: "00:00 UTC", zone: "UTC"},
		{in: "00:00 GMT", zone: "UTC"},
		{in: "12:30:05 Z", h: 12, m: 30, s: 5, zone: "UTC"},
		{in: "01:30 CET", h: 1, m: 30, zone: "Europe/Paris"},
		{in: "01:30 CEST", h: 1, m: 30, zone: "Europe/Paris"},
		{in: "01:30 EST", h: 1, m: 30, zone: "America/New_York"},
		{in: "04:00 CST", h: 4, zone: "America/Chicago"},
		{in: "04:00 IST", h: 4, zone: "Asia/Kolkata"},
		{in: "04:00 BST", h: 4, zone: "Europe/London"},
		{in: "04:00 AEDT", h: 4, zone: "Australia/Sydney"},
		{in: "04:00 NZST", h: 4, zone: "Pacific/Auckland"},
		{in: "04:00 HST", h: 4, zone: "Pacific/Honolulu"},
		{in: "04:00 MSK", h: 4, zone: "Europe/Moscow"},
		{in: "04:00 Japan", h: 4, zone: "Japan"}, // an IANA link without a slash
		{in: "03:15", h: 3, m: 15, zone: ""},
		{in: "03:15 Local", h: 3, m: 15, zone: "Local"},

		{in: "", wantErr: true},
		{in: "   ", wantErr: true},
		{in: "24:00 UTC", wantErr: true},
		{in: "12:60 UTC", wantErr: true},
		{in: "12:00:60 UTC", wantErr: true},
		{in: "12:5 UTC", wantErr: true},
		{in: "123:00 UTC", wantErr: true},
		{in: "-1:00 UTC", wantErr: true},
		{in: "+1:00 UTC", wantErr: true},
		{in: "12 UTC", wantErr: true},
		{in: "12:00:00:00", wantErr: true},
		{in: "2pm", wantErr: true},
		{in: "2:00pm PDT", wantErr: true},
		{in: "02:00 PDT extra", wantErr: true},
		{in: "02:00 XYZ", wantErr: true},
		{in: "02:00 +0200", wantErr: true},
		{in: "02:00 Mars/Olympus_Mons", wantErr: true},
		{in: "02:00 ../../etc/passwd", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			sp, err := ParseAt(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrBadSpec) {
					t.Fatalf("ParseAt(%q) = %+v, %v; want ErrBadSpec", tt.in, sp, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAt(%q): %v", tt.in, err)
			}
			if sp.Hour != tt.h || sp.Minute != tt.m || sp.Second != tt.s {
				t.Errorf("ParseAt(%q) = %02d:%02d:%02d, want %02d:%02d:%02d", tt.in, sp.Hour, sp.Minute, sp.Second, tt.h, tt.m, tt.s)
			}
			want := tt.zone
			if want == "" {
				want = time.Local.String()
			}
			if sp.Location.String() != want {
				t.Errorf("ParseAt(%q) zone %s, want %s", tt.in, sp.Location, want)
			}
		})
	}
}

// TestAbbreviationsAreZones: every abbreviation names a zone whose clock
// shows that abbreviation at some time of the year (so CST is the one
// observing CST, not a fixed offset), except the UTC aliases and HKT/SGT,
// whose zone data no longer use them.
func TestAbbreviationsAreZones(t *testing.T) {
	for abbr, zone := range abbreviations {
		loc := mustLoad(t, zone)
		switch abbr {
		case "UTC", "GMT", "Z", "SGT", "HKT":
			continue
		}
		seen := false
		for d := 0; d < 366 && !seen; d += 5 {
			name, _ := time.Date(2026, 1, 1+d, 12, 0, 0, 0, loc).Zone()
			seen = name == abbr
		}
		if !seen {
			t.Errorf("%s maps to %s, which never shows %s in 2026", abbr, zone, abbr)
		}
	}
}

// TestNextAroundChanges: the runs around each DST change, by hand.
func TestNextAroundChanges(t *testing.T) {
	la := mustLoad(t, "America/Los_Angeles")
	berlin := mustLoad(t, "Europe/Berlin")
	sydney := mustLoad(t, "Australia/Sydney")
	utc := time.UTC
	tests := []struct {
		name  string
		at    string
		after time.Time
		want  time.Time // in UTC
	}{
		// 2026-03-08: Los Angeles jumps from 02:00 PST to 03:00 PDT.
		{"LA day before gap", "02:30 PDT", time.Date(2026, 3, 7, 0, 0, 0, 0, la), time.Date(2026, 3, 7, 10, 30, 0, 0, utc)},
		{"LA gap day", "02:30 PDT", time.Date(2026, 3, 7, 2, 30, 0, 0, la), time.Date(2026, 3, 8, 10, 0, 0, 0, utc)}, // 03:00 PDT
		{"LA after gap", "02:30 PDT", time.Date(2026, 3, 8, 3, 0, 0, 0, la), time.Date(2026, 3, 9, 9, 30, 0, 0, utc)},
		{"LA gap start", "02:00 PST", time.Date(2026, 3, 8, 0, 0, 0, 0, la), time.Date(2026, 3, 8, 10, 0, 0, 0, utc)},
		{"LA gap last second", "02:59:59 PST", time.Date(2026, 3, 8, 0, 0, 0, 0, la), time.Date(2026, 3, 8, 10, 0, 0, 0, utc)},
		{"LA gap end", "03:00 PST", time.Date(2026, 3, 8, 0, 0, 0, 0, la), time.Date(2026, 3, 8, 10, 0, 0, 0, utc)},
		// 2026-11-01: 02:00 PDT becomes 01:00 PST; 01:30 happens twice.
		{"LA repeat first", "01:30 America/Los_Angeles", time.Date(2026, 11, 1, 0, 0, 0, 0, la), time.Date(2026, 11, 1, 8, 30, 0, 0, utc)},
		{"LA repeat not twice", "01:30 America/Los_Angeles", time.Date(2026, 11, 1, 8, 30, 0, 0, utc), time.Date(2026, 11, 2, 9, 30, 0, 0, utc)},
		{"LA repeat at 01:00", "01:00 PST", time.Date(2026, 11, 1, 0, 0, 0, 0, la), time.Date(2026, 11, 1, 8, 0, 0, 0, utc)},
		{"LA 02:00 after repeat", "02:00 PST", time.Date(2026, 11, 1, 0, 0, 0, 0, la), time.Date(2026, 11, 1, 10, 0, 0, 0, utc)},
		// 2026-03-29: Berlin jumps from 02:00 CET to 03:00 CEST; 2026-10-25
		// 03:00 CEST becomes 02:00 CET.
		{"Berlin gap", "02:30 Europe/Berlin", time.Date(2026, 3, 29, 0, 0, 0, 0, berlin), time.Date(2026, 3, 29, 1, 0, 0, 0, utc)},
		{"Berlin repeat", "02:30 Europe/Berlin", time.Date(2026, 10, 25, 0, 0, 0, 0, berlin), time.Date(2026, 10, 25, 0, 30, 0, 0, utc)},
		{"Berlin repeat not twice", "02:30 Europe/Berlin", time.Date(2026, 10, 25, 0, 30, 0, 0, utc), time.Date(2026, 10, 26, 1, 30, 0, 0, utc)},
		// Sydney: 2026-04-05 03:00 AEDT becomes 02:00 AEST; 2026-10-04
		// 02:00 AEST jumps to 03:00 AEDT.
		{"Sydney repeat", "02:30 AEST", time.Date(2026, 4, 5, 0, 0, 0, 0, sydney), time.Date(2026, 4, 4, 15, 30, 0, 0, utc)},
		{"Sydney gap", "02:30 AEST", time.Date(2026, 10, 4, 0, 0, 0, 0, sydney), time.Date(2026, 10, 3, 16, 0, 0, 0, utc)},
		// Plain days, the strictly-after rule, and a month end.
		{"UTC same instant", "00:00 UTC", time.Date(2026, 1, 31, 0, 0, 0, 0, utc), time.Date(2026, 2, 1, 0, 0, 0, 0, utc)},
		{"UTC just before", "00:00 UTC", time.Date(2026, 1, 30, 23, 59, 59, 999, utc), time.Date(2026, 1, 31, 0, 0, 0, 0, utc)},
		{"after in another zone", "23:00 Europe/Berlin", time.Date(2026, 6, 30, 21, 30, 0, 0, utc), time.Date(2026, 7, 1, 21, 0, 0, 0, utc)},
		{"year end", "00:00:01 UTC", time.Date(2026, 12, 31, 1, 0, 0, 0, utc), time.Date(2027, 1, 1, 0, 0, 1, 0, utc)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sp, err := ParseAt(tt.at)
			if err != nil {
				t.Fatal(err)
			}
			got := sp.Next(tt.after)
			if !got.Equal(tt.want) {
				t.Fatalf("%s: Next(%s) = %s (%s), want %s (%s)", tt.at, tt.after, got.UTC(), got.In(sp.Location), tt.want, tt.want.In(sp.Location))
			}
		})
	}
}

// TestSkippedDay: Samoa skipped 2011-12-30 when it crossed the date line:
// that date has no run, and the days around it have one each.
func TestSkippedDay(t *testing.T) {
	sp, err := ParseAt("04:00 Pacific/Apia")
	if err != nil {
		t.Fatal(err)
	}
	apia := sp.Location
	var dates []string
	for at := time.Date(2011, 12, 28, 12, 0, 0, 0, apia); len(dates) < 4; {
		at = sp.Next(at)
		dates = append(dates, at.In(apia).Format("2006-01-02 15:04"))
	}
	want := []string{"2011-12-29 04:00", "2011-12-31 04:00", "2012-01-01 04:00", "2012-01-02 04:00"}
	if len(dates) != len(want) {
		t.Fatalf("runs %v, want %v", dates, want)
	}
	for i := range want {
		if dates[i] != want[i] {
			t.Fatalf("runs %v, want %v", dates, want)
		}
	}
}
