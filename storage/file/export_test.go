package file

import (
	"slices"
	"sync"
	"testing"
)

// RecordSyncs records the folders fsynced until the test ends, in order.
func RecordSyncs(t *testing.T) func() []string {
	var mu sync.Mutex
	var dirs []string
	orig := syncDir
	syncDir = func(dir string) error {
		mu.Lock()
		dirs = append(dirs, dir)
		mu.Unlock()
		return orig(dir)
	}
	t.Cleanup(func() { syncDir = orig })
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(dirs)
	}
}
