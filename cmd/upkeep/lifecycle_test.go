package main

import (
	"context"
	"strings"
	"testing"
)

// TestSupportPolicyAndEndOfSupportNotice sets a product's support policy through the CLI: the
// end date may be extended but never shortened, every change is kept, operators see a warning
// when the end is near, and the product's devices receive the date in signed director metadata.
func TestSupportPolicyAndEndOfSupportNotice(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	v100 := image("1.0.0", 32<<10)
	r100 := e.publish("1.0.0", 1, v100)
	d := e.device("SN-EOS", v100, r100)
	g := []string{"--server", e.srv.URL, "--token", e.srv.AdminToken}

	out := cli(t, append(g, "product", "set", testProduct, "--support-end", "2031-12-31", "--notify", "app", "--vdp-url", "https://example.com/vdp")...)
	if !strings.Contains(out, "security updates until 2031-12-31") || strings.Contains(out, "WARNING") {
		t.Fatalf("product set: %s", out)
	}
	if err := d.Agent.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	if n := d.Agent.State().Notice; n == nil || n.EndOfSupport != "2031-12-31" || n.Product != testProduct {
		t.Fatalf("device notice: %+v", n)
	}

	// Shortening is refused and changes nothing.
	cmd := newRoot()
	cmd.SetArgs(append(g, "product", "set", testProduct, "--support-end", "2030-01-01"))
	var sink strings.Builder
	cmd.SetOut(&sink)
	cmd.SetErr(&sink)
	if err := cmd.ExecuteContext(ctx); err == nil || !strings.Contains(err.Error(), "never shortened") {
		t.Fatalf("shortening the support period: %v", err)
	}
	// An end within the warning period warns, and the device learns the extension.
	cli(t, append(g, "product", "set", testProduct, "--support-end", "2032-06-30")...)
	if err := d.Agent.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	if n := d.Agent.State().Notice; n == nil || n.EndOfSupport != "2032-06-30" {
		t.Fatalf("device notice after the extension: %+v", n)
	}
	hist := cli(t, append(g, "product", "history", testProduct)...)
	if !strings.Contains(hist, `"2031-12-31"`) || !strings.Contains(hist, `"2032-06-30"`) || !strings.Contains(hist, "admin") {
		t.Fatalf("history:\n%s", hist)
	}
	if list := cli(t, append(g, "product", "list")...); strings.Contains(list, "ends on") {
		t.Fatalf("a warning years ahead of the end:\n%s", list)
	}
	cli(t, append(g, "product", "set", testProduct, "--support-end", "2032-06-30", "--warn-days", "5000")...)
	if list := cli(t, append(g, "product", "list")...); !strings.Contains(list, "security-update support ends on 2032-06-30") {
		t.Fatalf("no warning inside the warning period:\n%s", list)
	}
}
