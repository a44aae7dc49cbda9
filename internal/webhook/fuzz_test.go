package webhook_test

import (
	"encoding/json"
	"net/netip"
	"net/url"
	"testing"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/webhook"
	"upkeep.dev/upkeep/wire"
)

// FuzzCreateRequest feeds the webhook create request, as the API decodes it, to the parser:
// it never panics, refuses with apperr.Invalid, and what it accepts is an https:// URL (http://
// only with allow_http) with a host and no credentials, whose literal address is special only
// with allow_private.
func FuzzCreateRequest(f *testing.F) {
	for _, s := range []string{
		`{"url":"https://hooks.example.com/upkeep"}`,
		`{"url":"http://127.0.0.1:8080/x","allow_private":true,"allow_http":true}`,
		`{"url":"https://[::ffff:10.0.0.1]/","events":["dev.upkeep.device.failed"]}`,
		`{"url":"https://user@hooks.example.com/#x","description":"d"}`,
		`{"url":"https://169.254.169.254/latest/meta-data"}`,
		`{"url":"https://[fe80::1%25eth0]:1/"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req wire.WebhookRequest
		if json.Unmarshal(body, &req) != nil {
			return
		}
		spec := webhook.Spec(req)
		err := spec.Validate()
		if err != nil {
			if apperr.CodeOf(err) != apperr.Invalid {
				t.Fatalf("Validate(%q): code %s, want invalid", body, apperr.CodeOf(err))
			}
			return
		}
		u, perr := url.Parse(req.URL)
		if perr != nil {
			t.Fatalf("accepted %q, which url.Parse refuses", req.URL)
		}
		if !(u.Scheme == "https" || u.Scheme == "http" && req.AllowHTTP) || u.Host == "" || u.User != nil {
			t.Fatalf("accepted %q (allow_http %v)", req.URL, req.AllowHTTP)
		}
		if a, err := netip.ParseAddr(u.Hostname()); err == nil && webhook.Special(a) && !req.AllowPrivate {
			t.Fatalf("accepted the special address %s without allow_private", a)
		}
	})
}
