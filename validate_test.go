package idepool

import (
	"strings"
	"testing"
)

// TestValidateBucketName: S3's general-purpose bucket naming rules, each
// with a name that breaks only it.
func TestValidateBucketName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"bench-class", true},
		{"a.b-c9", true},
		{"abc", true},
		{strings.Repeat("a", 63), true},
		{"1.2.3", true}, // not four parts: not an address
		{"", false},
		{"ab", false},
		{strings.Repeat("a", 64), false},
		{"Abc", false},
		{"ab_c", false},
		{"-abc", false},
		{"abc-", false},
		{".abc", false},
		{"abc.", false},
		{"a..b", false},
		{"a.-b", false},
		{"a-.b", false},
		{"192.168.5.4", false},
		{"xn--abc", false},
		{"sthree-abc", false},
		{"abc-s3alias", false},
		{"abc--ol-s3", false},
		{"ab c", false},
		{"abc\u00e9", false},
	} {
		err := ValidateBucketName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateBucketName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && ErrorCode(err) != EInvalidBucket {
			t.Errorf("ValidateBucketName(%q): code %s, want %s", tc.name, ErrorCode(err), EInvalidBucket)
		}
	}
}
