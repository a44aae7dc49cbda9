package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/agent"
	"upkeep.dev/upkeep/internal/product"
	"upkeep.dev/upkeep/internal/uptane"
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
	if n := waitNotice(t, d.Agent, "2031-12-31"); n.Product != testProduct {
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
	// Extending the end changes only the end: the rest of the policy is kept, and the device
	// learns the extension.
	cli(t, append(g, "product", "set", testProduct, "--support-end", "2032-06-30")...)
	waitNotice(t, d.Agent, "2032-06-30")
	pol := storedPolicy(t, e)
	if pol.SupportEnd != "2032-06-30" || pol.VDPURL != "https://example.com/vdp" || len(pol.Notification) != 1 || pol.Notification[0] != "app" ||
		pol.Delivery != product.DeliveryAutomatic || !pol.SecuritySeparate {
		t.Fatalf("after extending the end only: %+v", pol)
	}
	// Other flags change their field alone; an empty value given explicitly clears it.
	cli(t, append(g, "product", "set", testProduct, "--delivery", "consent", "--vdp-url", "", "--name", "Acme Thermostat", "--model", "T2-EU")...)
	pol = storedPolicy(t, e)
	if pol.SupportEnd != "2032-06-30" || pol.VDPURL != "" || pol.Delivery != product.DeliveryConsent || pol.ProductName != "Acme Thermostat" ||
		pol.ModelDesignation != "T2-EU" || len(pol.Notification) != 1 {
		t.Fatalf("after a partial update: %+v", pol)
	}
	// Values the declaration schema refuses are refused when set, naming the field.
	for _, bad := range [][]string{{"--vdp-url", "security.example.com"}, {"--notify", "app,,email"}, {"--support-start-basis", "birthday"}} {
		cmd := newRoot()
		cmd.SetArgs(append(append(g, "product", "set", testProduct), bad...))
		cmd.SetOut(&sink)
		cmd.SetErr(&sink)
		if err := cmd.ExecuteContext(ctx); err == nil {
			t.Errorf("product set %v was accepted", bad)
		}
	}
	if pol := storedPolicy(t, e); pol.VDPURL != "" || len(pol.Notification) != 1 {
		t.Fatalf("a refused value was stored: %+v", pol)
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

// waitNotice runs the agent's cycle until the end-of-support notice says end: the server re-signs
// the devices' director views in the background after a policy change.
func waitNotice(t *testing.T, a *agent.Agent, end string) *uptane.Notice {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := a.Cycle(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := a.State().Notice; n != nil && n.EndOfSupport == end {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("device notice %+v, want the end %s", a.State().Notice, end)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// storedPolicy reads testProduct's policy through the API.
func storedPolicy(t *testing.T, e *env) product.Policy {
	t.Helper()
	ps, err := e.cli.Products(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.Name == testProduct {
			var pol product.Policy
			if err := json.Unmarshal(p.Policy, &pol); err != nil {
				t.Fatal(err)
			}
			return pol
		}
	}
	t.Fatalf("no product %s", testProduct)
	return product.Policy{}
}
