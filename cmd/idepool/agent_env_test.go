package main

import (
	"strings"
	"testing"

	"github.com/idepool/idepool"
)

func TestSyncOptionsFromEnv(t *testing.T) {
	for _, c := range []struct {
		name              string
		env               map[string]string
		parallel, percent int
		err               string
	}{
		{name: "unset: the defaults", env: nil},
		{name: "both", env: map[string]string{idepool.EnvSyncParallelism: "32", idepool.EnvSyncMaxDeletePercent: "40"}, parallel: 32, percent: 40},
		{name: "parallelism 0", env: map[string]string{idepool.EnvSyncParallelism: "0"}, err: idepool.EnvSyncParallelism},
		{name: "parallelism too high", env: map[string]string{idepool.EnvSyncParallelism: "257"}, err: "want an integer 1-256"},
		{name: "parallelism not a number", env: map[string]string{idepool.EnvSyncParallelism: "many"}, err: `"many"`},
		{name: "percent too high", env: map[string]string{idepool.EnvSyncMaxDeletePercent: "101"}, err: idepool.EnvSyncMaxDeletePercent},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts, err := syncOptionsFromEnv(func(k string) string { return c.env[k] })
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want one naming %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if opts.Parallelism != c.parallel || opts.MaxDeletePercent != c.percent {
				t.Errorf("Parallelism %d, MaxDeletePercent %d; want %d, %d", opts.Parallelism, opts.MaxDeletePercent, c.parallel, c.percent)
			}
		})
	}
}
