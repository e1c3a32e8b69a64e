package config

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestAgentNetworksAndTrustedPeers(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []netip.Prefix
		wantErr string
	}{
		{"", nil, ""},
		{"10.0.1.0/24", []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24")}, ""},
		{" 10.0.1.7/24 , fd00:1::/64 ", []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24"), netip.MustParsePrefix("fd00:1::/64")}, ""},
		{"10.0.1.0", nil, `AGENT_NETWORKS: "10.0.1.0" is not valid`},
	} {
		env := map[string]string{"AGENT_NETWORKS": tc.in, "TRUSTED_PEERS": "tasks.traefik, tasks.s3"}
		c, errs := build(func(k string) string { return env[k] })
		var msgs []string
		for _, e := range errs {
			msgs = append(msgs, e.Error())
		}
		joined := strings.Join(msgs, "; ")
		if tc.wantErr != "" {
			if !strings.Contains(joined, tc.wantErr) {
				t.Errorf("%q: errors %q, want %q", tc.in, joined, tc.wantErr)
			}
			continue
		}
		if joined != "" || !slices.Equal(c.AgentNetworks, tc.want) {
			t.Errorf("%q: %v (%s), want %v", tc.in, c.AgentNetworks, joined, tc.want)
		}
		if !slices.Equal(c.TrustedPeers, []string{"tasks.traefik", "tasks.s3"}) {
			t.Errorf("TRUSTED_PEERS: %q", c.TrustedPeers)
		}
	}
}
