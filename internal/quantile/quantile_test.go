package quantile

import (
	"testing"
	"time"
)

func TestOf(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(100-i) * time.Millisecond // 100 ms … 1 ms, unsorted
	}
	for _, c := range []struct {
		name string
		d    []time.Duration
		q    float64
		want time.Duration
	}{
		{"empty", nil, 0.99, 0},
		{"one", []time.Duration{7}, 0.5, 7},
		{"one q=0", []time.Duration{7}, 0, 7},
		{"p0 is the least", hundred, 0, 1 * time.Millisecond},
		{"p50 of 100 is the 50th", hundred, 0.5, 50 * time.Millisecond},
		{"p29 of 100 is the 29th (0.29·100 in floats)", hundred, 0.29, 29 * time.Millisecond},
		{"p99 of 100 is the 99th, not the max", hundred, 0.99, 99 * time.Millisecond},
		{"p100 is the max", hundred, 1, 100 * time.Millisecond},
		{"p99 of 10 is the max", hundred[90:], 0.99, 10 * time.Millisecond},
		{"p50 of 4 is the 2nd", []time.Duration{4, 1, 3, 2}, 0.5, 2},
		{"p51 of 4 is the 3rd", []time.Duration{4, 1, 3, 2}, 0.51, 3},
	} {
		if got := Of(c.d, c.q); got != c.want {
			t.Errorf("%s: Of(q=%v) = %v, want %v", c.name, c.q, got, c.want)
		}
	}
	if hundred[0] != 100*time.Millisecond {
		t.Error("Of sorted its argument")
	}
}

func TestSorted(t *testing.T) {
	d := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if got := Sorted(d, 0.9); got != 9 {
		t.Errorf("Sorted(p90 of 10) = %v, want 9", got)
	}
	if got := Sorted(nil, 0.5); got != 0 {
		t.Errorf("Sorted(empty) = %v, want 0", got)
	}
}
