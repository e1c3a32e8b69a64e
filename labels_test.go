package idepool

import "testing"

func TestIsRuntimeLabel(t *testing.T) {
	for k, want := range map[string]bool{
		LabelManaged: true, LabelID: true, LabelProfile: true, LabelCreated: true,
		LabelTokenHash: false, LabelBucket: false, LabelGeneration: false, "idepool.other": false, "": false,
	} {
		if got := IsRuntimeLabel(k); got != want {
			t.Errorf("IsRuntimeLabel(%q) = %v, want %v", k, got, want)
		}
	}
}
