package main

import (
	"io"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestParseSubscriptionFlags(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		check func(subscriptionConfig) bool
		bad   bool
	}{
		{"defaults", nil, func(c subscriptionConfig) bool {
			return c.Enabled == "on" && !c.AllowLoopback && c.allow == nil && c.Timeout == 10*time.Second && c.Failures == 5 && c.MaxPerClient == 100
		}, false},
		{"networks", []string{"--subscription-allow-networks", "10.20.0.0/16, 192.168.7.9/24", "--subscription-allow-loopback"}, func(c subscriptionConfig) bool {
			return c.AllowLoopback && slices.Equal(c.allow, []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("192.168.7.0/24")})
		}, false},
		{"off", []string{"--subscriptions=off"}, func(c subscriptionConfig) bool { return c.Enabled == "off" }, false},
		{"bad switch", []string{"--subscriptions=maybe"}, nil, true},
		{"bad network", []string{"--subscription-allow-networks", "10.0.0.0"}, nil, true},
		{"zero timeout", []string{"--subscription-timeout", "0s"}, nil, true},
		{"zero failures", []string{"--subscription-failures-before-error", "0"}, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseServe(tc.args, io.Discard, func(string) string { return "" })
			if tc.bad {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(cfg.Subs) {
				t.Fatalf("parsed %+v", cfg.Subs)
			}
		})
	}
}
