package lockfile

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

func TestClaims(t *testing.T) {
	c := Claims{Dir: t.TempDir() + "/claims"}
	f, ok, err := c.Try("a")
	if err != nil || !ok {
		t.Fatalf("a free claim: ok %v, %v", ok, err)
	}
	if !Held(c.Path("a")) {
		t.Fatal("a taken claim is not held")
	}
	if _, ok, err := c.Try("a"); err != nil || ok {
		t.Fatalf("a held claim taken again: ok %v, %v", ok, err)
	}
	if g, ok, err := c.Try("b"); err != nil || !ok {
		t.Fatalf("another name's claim: ok %v, %v", ok, err)
	} else {
		c.Release("b", g)
	}

	// Wait gives up after its bound, and at once when ctx ends.
	t0 := time.Now()
	if _, ok, err := c.Wait(context.Background(), "a", 50*time.Millisecond); err != nil || ok {
		t.Fatalf("wait on a held claim: ok %v, %v", ok, err)
	}
	if d := time.Since(t0); d < 50*time.Millisecond {
		t.Fatalf("gave up after %v, before its bound", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, ok, err := c.Wait(ctx, "a", time.Minute); ok || !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with an ended ctx: ok %v, %v", ok, err)
	}

	// Wait takes the claim as its holder lets go, though the holder
	// removes the file the waiter blocked on.
	go func() {
		time.Sleep(100 * time.Millisecond)
		c.Release("a", f)
	}()
	g, ok, err := c.Wait(context.Background(), "a", time.Minute)
	if err != nil || !ok {
		t.Fatalf("wait for a claim let go of: ok %v, %v", ok, err)
	}
	if !c.same(g, "a") {
		t.Fatal("the claim waited for is not the file at its path")
	}
	c.Release("a", g)
	if _, err := os.Stat(c.Path("a")); !os.IsNotExist(err) {
		t.Fatalf("a released claim's file is still there: %v", err)
	}
	c.Release("a", nil) // nothing to let go of
}
