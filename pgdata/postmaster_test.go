package pgdata

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func TestPostmasterAlive(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content *string
		want    bool
	}{
		{"no pid file", nil, false},
		{"this process", ptr(fmt.Sprintf("%d\n/data\n", os.Getpid())), true},
		{"a pid no process has", ptr("2147483646\n/data\n"), false},
		{"not a number", ptr("garbage\n"), false},
		{"empty", ptr(""), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.content != nil {
				if err := os.WriteFile(filepath.Join(dir, PIDFile), []byte(*tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if got := PostmasterAlive(dir); got != tc.want {
				t.Errorf("PostmasterAlive = %v, want %v", got, tc.want)
			}
		})
	}
}

func ptr(s string) *string { return &s }
