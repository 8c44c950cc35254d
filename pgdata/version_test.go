package pgdata

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckVersion(t *testing.T) {
	for _, tc := range []struct {
		num  int
		ok   bool
		says string
	}{
		{130000, true, ""},
		{130023, true, ""},
		{150018, true, ""},
		{180004, true, ""},
		{129999, false, "PostgreSQL 12 "},
		{120022, false, "PostgreSQL 12 "},
		{90624, false, "PostgreSQL 9.6 "},
		{190000, false, "PostgreSQL 19 "},
		{0, false, ""},
	} {
		err := CheckVersion(tc.num)
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrUnsupportedVersion)) {
			t.Errorf("%d: %v", tc.num, err)
		}
		if err != nil && (!strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), "supports PostgreSQL 13 to 18")) {
			t.Errorf("%d: message %q", tc.num, err)
		}
	}
}
