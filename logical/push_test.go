package logical

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage/file"
)

// TestClaimName: a claimed name is valid, of its start second, and never
// one that is taken (a sentinel, or only data of a dump still running).
func TestClaimName(t *testing.T) {
	ctx := context.Background()
	names := map[string]bool{}
	for range 100 {
		_, name, err := claimName(ctx, mustStore(t))
		if err != nil {
			t.Fatal(err)
		}
		names[name] = true
	}
	if len(names) < 100 {
		t.Errorf("100 claims in a row gave %d names: dumps of the same second would share one", len(names))
	}
	for _, what := range []string{"sentinel", "data"} {
		t.Run(what, func(t *testing.T) {
			st, err := file.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			taken := map[string]bool{}
			for i := range 2 { // this second and the next
				name := catalog.DumpName(now.Add(time.Duration(i)*time.Second), "a1")
				taken[name] = true
				key := catalog.DumpKey(name, codec.Zstd{})
				if what == "sentinel" {
					key = catalog.DumpSentinelKey(name)
				}
				if err := st.Put(ctx, key, strings.NewReader("x")); err != nil {
					t.Fatal(err)
				}
			}
			start, name, err := claimName(ctx, st)
			if err != nil {
				t.Fatal(err)
			}
			if taken[name] || !strings.HasPrefix(name, strings.TrimSuffix(catalog.DumpName(start, ""), "_")) || !catalog.ValidDumpName(name) {
				t.Fatalf("claimed %s (start %s); taken: %v", name, start, taken)
			}
		})
	}
}

func mustStore(t *testing.T) *file.Store {
	t.Helper()
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return st
}
