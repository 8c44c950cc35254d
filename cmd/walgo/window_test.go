package main

import (
	"testing"
	"time"
)

func TestParseWindow(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"7d", 7 * 24 * time.Hour}, {"2w", 14 * 24 * time.Hour}, {"1w3d", 10 * 24 * time.Hour},
		{"36h", 36 * time.Hour}, {"90m", 90 * time.Minute}, {"1d12h", 36 * time.Hour}, {" 7D ", 7 * 24 * time.Hour},
		{"", 0}, {"0d", 0}, {"7", 0}, {"d", 0}, {"7x", 0}, {"-7d", 0}, {"7d-", 0}, {"1.5d", 0}, {"9999999d", 0},
	} {
		got, err := parseWindow(tc.in)
		if got != tc.want || (err == nil) != (tc.want > 0) {
			t.Errorf("parseWindow(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}
