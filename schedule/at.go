// Package schedule runs a job once a day at a wall-clock time in a time
// zone: parsing "02:00 PDT", computing the next run across daylight-saving
// changes, a runner loop that survives clock jumps and machine sleep, and
// the Prometheus text metrics the schedule agent serves.
package schedule

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrBadSpec: a time of day or zone that ParseAt does not accept.
var ErrBadSpec = errors.New("bad schedule time")

// abbreviations map common zone abbreviations to a zone, not to a fixed
// offset: "02:00 PDT" means 02:00 Los Angeles time all year, so a
// daylight-saving change neither skips nor repeats a day's run. Ambiguous
// ones are mapped to the zone most operators mean: IST is India (not
// Ireland or Israel), CST is US Central (not China or Cuba), BST is British
// Summer Time (not Bangladesh), AST is Atlantic (not Arabia).
var abbreviations = map[string]string{
	"UTC": "UTC", "GMT": "UTC", "Z": "UTC",
	"PST": "America/Los_Angeles", "PDT": "America/Los_Angeles",
	"MST": "America/Denver", "MDT": "America/Denver",
	"CST": "America/Chicago", "CDT": "America/Chicago",
	"EST": "America/New_York", "EDT": "America/New_York",
	"AST": "America/Halifax", "ADT": "America/Halifax",
	"NST": "America/St_Johns", "NDT": "America/St_Johns",
	"AKST": "America/Anchorage", "AKDT": "America/Anchorage",
	"HST": "Pacific/Honolulu",
	"BST": "Europe/London",
	"WET": "Europe/Lisbon", "WEST": "Europe/Lisbon",
	"CET": "Europe/Paris", "CEST": "Europe/Paris",
	"EET": "Europe/Athens", "EEST": "Europe/Athens",
	"MSK":  "Europe/Moscow",
	"SAST": "Africa/Johannesburg",
	"IST":  "Asia/Kolkata",
	"SGT":  "Asia/Singapore",
	"HKT":  "Asia/Hong_Kong",
	"JST":  "Asia/Tokyo",
	"KST":  "Asia/Seoul",
	"AWST": "Australia/Perth",
	"ACST": "Australia/Adelaide", "ACDT": "Australia/Adelaide",
	"AEST": "Australia/Sydney", "AEDT": "Australia/Sydney",
	"NZST": "Pacific/Auckland", "NZDT": "Pacific/Auckland",
}

// AbbreviationHelp documents the abbreviations ParseAt accepts, for help
// texts.
const AbbreviationHelp = `Zone abbreviations name a zone, not a fixed offset: "02:00 PDT" in January
means 02:00 Los Angeles time (PST then), so daylight-saving changes neither
skip nor repeat a day. Accepted: UTC, GMT, Z (UTC); PST/PDT
(America/Los_Angeles), MST/MDT (America/Denver), CST/CDT (America/Chicago),
EST/EDT (America/New_York), AST/ADT (America/Halifax), NST/NDT
(America/St_Johns), AKST/AKDT (America/Anchorage), HST (Pacific/Honolulu),
BST (Europe/London), WET/WEST (Europe/Lisbon), CET/CEST (Europe/Paris),
EET/EEST (Europe/Athens), MSK (Europe/Moscow), SAST (Africa/Johannesburg),
IST (Asia/Kolkata), SGT (Asia/Singapore), HKT (Asia/Hong_Kong), JST
(Asia/Tokyo), KST (Asia/Seoul), AWST (Australia/Perth), ACST/ACDT
(Australia/Adelaide), AEST/AEDT (Australia/Sydney), NZST/NZDT
(Pacific/Auckland). Ambiguous ones mean: IST India (not Ireland or Israel),
CST US Central (not China or Cuba), BST British Summer Time (not
Bangladesh), AST Atlantic (not Arabia); give the zone's name
(Asia/Shanghai, Europe/Dublin, ...) for the others.`

// Spec is a time of day in a zone: "every day at Hour:Minute:Second in
// Location".
type Spec struct {
	Hour, Minute, Second int
	Location             *time.Location
	// Zone is the zone as written ("PDT", "Europe/Berlin"), or "" for the
	// machine's local zone.
	Zone string
}

// ParseAt reads "HH:MM[:SS] [ZONE]": a 24-hour time of day, then an IANA
// zone name (America/Los_Angeles), UTC/GMT/Z, or one of the abbreviations
// in AbbreviationHelp. Without a zone it is the machine's local time zone.
func ParseAt(s string) (Spec, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 || len(fields) > 2 {
		return Spec{}, fmt.Errorf(`%w: %q: want "HH:MM[:SS] [ZONE]", e.g. "02:00 America/Los_Angeles" or "02:00 PDT"`, ErrBadSpec, s)
	}
	var sp Spec
	parts := strings.Split(fields[0], ":")
	if len(parts) < 2 || len(parts) > 3 {
		return Spec{}, fmt.Errorf(`%w: %q: the time of day must be HH:MM or HH:MM:SS (24-hour)`, ErrBadSpec, fields[0])
	}
	vals := []*int{&sp.Hour, &sp.Minute, &sp.Second}
	limits := []int{23, 59, 59}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || len(p) == 0 || len(p) > 2 || (i > 0 && len(p) != 2) || p[0] == '+' || p[0] == '-' || n < 0 || n > limits[i] {
			return Spec{}, fmt.Errorf(`%w: %q: the time of day must be HH:MM or HH:MM:SS, 00:00 to 23:59:59`, ErrBadSpec, fields[0])
		}
		*vals[i] = n
	}
	sp.Location = time.Local
	if len(fields) == 1 {
		return sp, nil
	}
	zone := fields[1]
	name := zone
	if z, ok := abbreviations[strings.ToUpper(zone)]; ok {
		name = z
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return Spec{}, fmt.Errorf("%w: unknown zone %q: give an IANA zone name such as Europe/Berlin or America/Los_Angeles, UTC, or a common abbreviation such as PDT or CET (a fixed offset is Etc/GMT-2 for +02:00)", ErrBadSpec, zone)
	}
	sp.Location, sp.Zone = loc, zone
	return sp, nil
}

// String is the spec as ParseAt reads it, with the zone it stands for.
func (s Spec) String() string {
	t := fmt.Sprintf("%02d:%02d", s.Hour, s.Minute)
	if s.Second != 0 {
		t += fmt.Sprintf(":%02d", s.Second)
	}
	loc := s.loc().String()
	switch {
	case s.Zone == "":
		return t + " " + loc
	case s.Zone == loc:
		return t + " " + s.Zone
	}
	return t + " " + s.Zone + " (" + loc + ")"
}

func (s Spec) loc() *time.Location {
	if s.Location == nil {
		return time.Local
	}
	return s.Location
}

// Next returns the first instant strictly after after whose local date has
// not had its run yet by this rule: each local calendar day runs exactly
// once, at the first instant its wall clock reads the spec's time. When
// that time occurs twice (the hour repeated when daylight-saving time ends)
// it is the first occurrence; when it does not occur (the hour skipped
// when it starts) it is the end of the gap, e.g. 03:00 for 02:30 on the
// spring-forward day in Los Angeles. A day whose gap runs past midnight
// (only historic or exotic zones) has no run.
func (s Spec) Next(after time.Time) time.Time {
	loc := s.loc()
	y, m, d := after.In(loc).Date()
	// A run on an earlier local date is before the start of after's
	// date, so after's own date is the first candidate. Skipped calendar
	// days (Samoa, 2011) are the only reason to look further than two.
	for i := range 8 {
		if t, ok := s.on(y, m, d+i); ok && t.After(after) {
			return t
		}
	}
	// Unreachable with real zone data; a run a day later is better than none.
	return after.Add(24 * time.Hour)
}

// on returns the run's instant on the local date y-m-d (normalized, so
// d may overflow the month), and false if that date has no run.
func (s Spec) on(y int, m time.Month, d int) (time.Time, bool) {
	loc := s.loc()
	c := time.Date(y, m, d, s.Hour, s.Minute, s.Second, 0, loc)
	y, m, d = time.Date(y, m, d, 12, 0, 0, 0, time.UTC).Date()
	want := wall{y, m, d, s.Hour, s.Minute, s.Second}
	cw := wallOf(c.In(loc))
	var best time.Time
	if cw == want {
		// The same wall time can also be read at an instant with the
		// offset in effect just before or after c's zone period: pick
		// the earliest.
		best = c
		_, off := c.Zone()
		start, end := c.ZoneBounds()
		var neighbours []time.Time
		if !start.IsZero() {
			neighbours = append(neighbours, start.Add(-time.Second))
		}
		if !end.IsZero() {
			neighbours = append(neighbours, end)
		}
		for _, n := range neighbours {
			_, o2 := n.In(loc).Zone()
			alt := c.Add(time.Duration(off-o2) * time.Second)
			if wallOf(alt.In(loc)) == want && alt.Before(best) {
				best = alt
			}
		}
	} else {
		// want falls in a gap. time.Date normalized it with the offset
		// from one side of the transition; the transition instant, the
		// first after the gap, is the bound of c's zone period on the
		// other side.
		start, end := c.ZoneBounds()
		if cw.before(want) {
			best = end
		} else {
			best = start
		}
		if best.IsZero() {
			return time.Time{}, false
		}
		bw := wallOf(best.In(loc))
		pw := wallOf(best.Add(-time.Second).In(loc))
		if !pw.before(want) || bw.before(want) {
			return time.Time{}, false
		}
	}
	by, bm, bd := best.In(loc).Date()
	if by != y || bm != m || bd != d {
		return time.Time{}, false
	}
	return best, true
}

// wall is a local date and time of day, to the second.
type wall struct {
	y         int
	m         time.Month
	d         int
	h, mi, se int
}

func wallOf(t time.Time) wall {
	y, m, d := t.Date()
	h, mi, se := t.Clock()
	return wall{y, m, d, h, mi, se}
}

func (a wall) before(b wall) bool {
	x := []int{a.y, int(a.m), a.d, a.h, a.mi, a.se}
	z := []int{b.y, int(b.m), b.d, b.h, b.mi, b.se}
	for i := range x {
		if x[i] != z[i] {
			return x[i] < z[i]
		}
	}
	return false
}
