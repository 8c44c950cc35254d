package catalog

import "sync"

// eachBounded calls fn(0) ... fn(count-1), at most n at once, and waits for
// all of them. fn records its own result and errors.
func eachBounded(n, count int, fn func(i int)) {
	sem := make(chan struct{}, max(n, 1))
	var wg sync.WaitGroup
	for i := range count {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(i)
		})
	}
	wg.Wait()
}
