package dirlock

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestSecondLockNamesTheHolder(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(dir, "serve", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetPort(4321); err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir, "serve", 1234)
	var held *HeldError
	if !errors.As(err, &held) || held.Holder.PID != os.Getpid() || held.Holder.Port != 4321 ||
		!strings.Contains(err.Error(), "port 4321") {
		t.Fatalf("second Acquire: %v (%+v)", err, held)
	}
	if h, ok, err := Held(dir); err != nil || !ok || h.Port != 4321 {
		t.Errorf("Held = %+v %v %v", h, ok, err)
	}
	l.Close()
	if _, ok, err := Held(dir); err != nil || ok {
		t.Errorf("Held after Close = %v %v", ok, err)
	}
	l2, err := Acquire(dir, "down", 0)
	if err != nil {
		t.Fatalf("Acquire after Close: %v", err)
	}
	l2.Close()
}
