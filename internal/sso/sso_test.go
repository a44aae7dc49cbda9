package sso

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseRoleMap(t *testing.T) {
	got, err := ParseRoleMap(" groups:release=release-manager, groups:eu-ops=deployer:eu+eu-lab,email:a@b.example=admin,url:https://x/y=z=viewer ,")
	if err != nil {
		t.Fatal(err)
	}
	want := []Rule{
		{Claim: "groups", Value: "release", Role: "release-manager"},
		{Claim: "groups", Value: "eu-ops", Role: "deployer", Groups: []string{"eu", "eu-lab"}},
		{Claim: "email", Value: "a@b.example", Role: "admin"},
		{Claim: "url", Value: "https://x/y=z", Role: "viewer"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("ParseRoleMap (-want +got):\n%s", d)
	}
	if got[1].String() != "groups:eu-ops=deployer:eu+eu-lab" {
		t.Errorf("String = %q", got[1])
	}
	for _, bad := range []string{"groups", "groups:x", ":x=admin", "groups:x=", "groups:x=root", "groups:x=viewer:lab", "groups:x=deployer:a b", "groups=admin"} {
		if _, err := ParseRoleMap(bad); err == nil {
			t.Errorf("ParseRoleMap(%q) accepted", bad)
		}
	}
	if rules, err := ParseRoleMap(""); err != nil || len(rules) != 0 {
		t.Errorf("empty map: %v %v", rules, err)
	}
}

func TestMatch(t *testing.T) {
	rules, err := ParseRoleMap("groups:admins=admin,groups:release=release-manager,email_verified:true=viewer,level:3=support,sub:x=auditor")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		claims string
		role   string
	}{
		{`{"groups":["dev","release"]}`, "release-manager"},
		{`{"groups":["release","admins"]}`, "admin"}, // first rule written wins
		{`{"groups":"release"}`, "release-manager"},
		{`{"groups":[["release"]]}`, ""}, // nested arrays are not looked into
		{`{"groups":["Release"]}`, ""},   // exact, case-sensitive
		{`{"email_verified":true}`, "viewer"},
		{`{"email_verified":"true"}`, "viewer"},
		{`{"level":3}`, "support"},
		{`{"level":3.5}`, ""},
		{`{"sub":{"x":1}}`, ""},
		{`{}`, ""},
	} {
		var claims map[string]any
		if err := json.Unmarshal([]byte(c.claims), &claims); err != nil {
			t.Fatal(err)
		}
		r, ok := Match(rules, claims)
		if ok != (c.role != "") || r.Role != c.role {
			t.Errorf("Match(%s) = %q %v, want %q", c.claims, r.Role, ok, c.role)
		}
	}
}

func TestAttemptRoundTrip(t *testing.T) {
	a := NewAttempt()
	b, err := DecodeAttempt(a.Encode())
	if err != nil || a != b {
		t.Fatalf("DecodeAttempt(Encode) = %+v, %v; want %+v", b, err, a)
	}
	if NewAttempt() == a {
		t.Fatal("two attempts alike")
	}
	_, key := NewCLIKey()
	c := NewAttempt()
	c.CLI = CLI{Port: 49152, Key: key}
	if d, err := DecodeAttempt(c.Encode()); err != nil || d != c {
		t.Fatalf("DecodeAttempt(Encode) with a CLI = %+v, %v; want %+v", d, err, c)
	}
	for _, bad := range []string{c.Encode() + "x", strings.Replace(c.Encode(), ".49152.", ".80.", 1), strings.Replace(c.Encode(), ".49152.", ".049152.", 1), strings.Replace(c.Encode(), ".49152.", "..", 1)} {
		if _, err := DecodeAttempt(bad); err != ErrBadAttempt {
			t.Errorf("DecodeAttempt(%q) = %v", bad, err)
		}
	}
	for _, bad := range []string{"", "v1", "v2." + a.State + "." + a.Nonce + "." + a.Verifier, "v1." + a.State + "." + a.Nonce, "v1." + a.State + "." + a.Nonce + ".short",
		"v1." + a.State + "." + a.Nonce + "." + a.Verifier + ".x", "v1." + a.State + "!." + a.Nonce + "." + a.Verifier, strings.Repeat("A", 600)} {
		if _, err := DecodeAttempt(bad); err != ErrBadAttempt {
			t.Errorf("DecodeAttempt(%q) = %v", bad, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	rules, _ := ParseRoleMap("groups:x=viewer")
	good := Config{Issuer: "https://idp.example/", ClientID: "upkeep", RedirectURL: "https://upkeep.example/api/v1/oidc/callback", RoleMap: rules}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	loop := good
	loop.Issuer = "http://localhost:9998/"
	if err := loop.Validate(); err != nil {
		t.Fatalf("loopback http issuer: %v", err)
	}
	for name, change := range map[string]func(*Config){
		"plain http issuer": func(c *Config) { c.Issuer = "http://idp.example/" },
		"no scheme":         func(c *Config) { c.Issuer = "idp.example" },
		"no client id":      func(c *Config) { c.ClientID = "" },
		"no redirect":       func(c *Config) { c.RedirectURL = "" },
		"relative redirect": func(c *Config) { c.RedirectURL = "/api/v1/oidc/callback" },
		"no rules":          func(c *Config) { c.RoleMap = nil },
	} {
		c := good
		change(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzDecodeAttempt: the attempt cookie is what a browser sends back; anything it holds either
// decodes to an attempt that encodes back to the same text, or is ErrBadAttempt.
func FuzzDecodeAttempt(f *testing.F) {
	f.Add(NewAttempt().Encode())
	_, key := NewCLIKey()
	withCLI := NewAttempt()
	withCLI.CLI = CLI{Port: 40000, Key: key}
	f.Add(withCLI.Encode())
	f.Add("v1.a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		a, err := DecodeAttempt(s)
		if err != nil {
			if err != ErrBadAttempt {
				t.Fatalf("error %v", err)
			}
			return
		}
		if a.Encode() != s {
			t.Fatalf("%q decoded to %+v, which encodes to %q", s, a, a.Encode())
		}
	})
}

// FuzzParseRoleMap: the role map never panics, and every rule it returns names a valid role
// and a claim.
func FuzzParseRoleMap(f *testing.F) {
	f.Add("groups:release=release-manager,groups:eu=deployer:eu+lab")
	f.Add("a:b=c=admin")
	f.Fuzz(func(t *testing.T, s string) {
		rules, err := ParseRoleMap(s)
		if err != nil {
			return
		}
		for _, r := range rules {
			if r.Claim == "" || r.Role == "" {
				t.Fatalf("%q gave rule %+v", s, r)
			}
		}
	})
}

func TestSealForCLI(t *testing.T) {
	priv, key := NewCLIKey()
	c := CLI{Port: 50000, Key: key}
	sealed, err := c.Seal([]byte(`{"token":"upk_admin_x"}`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sealed, "upk_admin") {
		t.Fatal("sealed in clear")
	}
	got, err := OpenSealed(priv, sealed)
	if err != nil || string(got) != `{"token":"upk_admin_x"}` {
		t.Fatalf("OpenSealed = %q, %v", got, err)
	}
	other, _ := NewCLIKey()
	if _, err := OpenSealed(other, sealed); err == nil {
		t.Fatal("opened with another key")
	}
	if !strings.HasPrefix(c.RedirectURL(sealed), "http://127.0.0.1:50000/upkeep-login?sealed=") {
		t.Fatal(c.RedirectURL(sealed))
	}
	for _, bad := range []CLI{{Port: 80, Key: key}, {Port: 70000, Key: key}, {Port: 50000, Key: "short"}, {Port: 50000}} {
		if bad.Check() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// FuzzOpenSealed: what comes to the command line's loopback port is untrusted; it opens only
// if sealed to its key, and never panics.
func FuzzOpenSealed(f *testing.F) {
	priv, key := NewCLIKey()
	sealed, _ := CLI{Port: 50000, Key: key}.Seal([]byte("x"))
	f.Add(sealed)
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		if pt, err := OpenSealed(priv, s); err == nil && s != sealed && string(pt) == "x" && len(s) < 10 {
			t.Fatalf("%q opened", s)
		}
	})
}
