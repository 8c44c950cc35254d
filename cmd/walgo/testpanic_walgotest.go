//go:build walgotest

package main

import "os"

// Built only with -tags walgotest (guard_test.go does): WALGO_TEST_PANIC=STAGE
// panics at that stage, STAGE-goroutine in a goroutine of its own, so the
// guard's exit status for a panic can be tested on the real binary.
func init() {
	testPanic = func(stage string) {
		switch os.Getenv("WALGO_TEST_PANIC") {
		case stage:
			panic("test panic at " + stage)
		case stage + "-goroutine":
			block := make(chan struct{})
			go func() { panic("test panic in a goroutine at " + stage) }()
			<-block
		}
	}
}
