// Command s3seed fills workspaces in an S3 store for BenchmarkClusterUsable:
// n prefixes, each with files objects of bytes in all, in ten folders, put
// by the agents' own S3 adapter (wsync.S3Store, so the objects carry what
// an agent's upload would).
//
// The benchmark copies it, built static, into the local S3 store's
// container (FROM scratch: no shell, no client) and runs it there with
// docker exec: the store listens only on the overlay network, and its root
// keys are in that container's environment (ROOT_ACCESS_KEY_ID,
// ROOT_SECRET_ACCESS_KEY).
//
//	s3seed -endpoint http://127.0.0.1:7070 -bucket workspaces -prefix bench-usable-x- -n 100 -files 200 -bytes 10485760
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idepool/idepool/wsync"
)

func main() {
	endpoint := flag.String("endpoint", "http://127.0.0.1:7070", "S3 endpoint")
	bucket := flag.String("bucket", "workspaces", "bucket")
	prefix := flag.String("prefix", "", "workspace prefixes: <prefix><i>/")
	n := flag.Int("n", 1, "workspaces")
	files := flag.Int("files", 200, "files per workspace")
	size := flag.Int64("bytes", 10<<20, "bytes per workspace, spread evenly over its files")
	par := flag.Int("parallel", 16, "puts at once")
	flag.Parse()
	if err := seed(*endpoint, *bucket, *prefix, *n, *files, *size, *par); err != nil {
		fmt.Fprintln(os.Stderr, "s3seed:", err)
		os.Exit(1)
	}
}

func seed(endpoint, bucket, prefix string, n, files int, size int64, par int) error {
	st, err := wsync.NewS3Store(wsync.S3Config{Endpoint: endpoint, Bucket: bucket,
		AccessKeyID: os.Getenv("ROOT_ACCESS_KEY_ID"), SecretAccessKey: os.Getenv("ROOT_SECRET_ACCESS_KEY")})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	// One body per file index, shared by every workspace (content does not
	// matter to a pull; incompressible, as source and data mostly are not,
	// but no transfer compresses here).
	each := size / int64(files)
	bodies := make([][]byte, files)
	rng := rand.New(rand.NewPCG(1, 2))
	for f := range bodies {
		sz := each
		if f == files-1 {
			sz = size - each*int64(files-1)
		}
		b := make([]byte, sz)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		bodies[f] = b
	}
	type job struct {
		key  string
		body []byte
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	var done atomic.Int64
	start := time.Now()
	for range par {
		wg.Go(func() {
			for j := range jobs {
				if _, err := st.Put(ctx, j.key, bytes.NewReader(j.body), int64(len(j.body)), wsync.Condition{}); err != nil {
					err = fmt.Errorf("put %s: %w", j.key, err)
					failed.CompareAndSwap(nil, &err)
					cancel()
					continue
				}
				done.Add(1)
			}
		})
	}
	for w := range n {
		for f := range files {
			select {
			case jobs <- job{fmt.Sprintf("%s%d/dir%02d/file%03d.dat", prefix, w, f%10, f), bodies[f]}:
			case <-ctx.Done():
			}
		}
	}
	close(jobs)
	wg.Wait()
	if p := failed.Load(); p != nil {
		return *p
	}
	fmt.Printf("%d objects (%d workspaces × %d files, %d bytes each workspace) in %v\n", done.Load(), n, files, size, time.Since(start).Round(time.Millisecond))
	return nil
}
