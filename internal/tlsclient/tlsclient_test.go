package tlsclient

import (
	"errors"
	"testing"
)

func TestCheckServerURL(t *testing.T) {
	for _, tc := range []struct {
		url   string
		plain bool // refused as plain HTTP off loopback
		ok    bool
	}{
		{"https://updates.example.com", false, true},
		{"https://10.0.0.5:8443", false, true},
		{"http://127.0.0.1:8080", false, true},
		{"http://127.9.9.9", false, true},
		{"http://localhost:8080/", false, true},
		{"http://[::1]:8080", false, true},
		{"http://example.com", true, false},
		{"http://10.0.0.5:8080", true, false},
		{"http://0.0.0.0:8080", true, false},
		{"http://[::]:8080", true, false},
		{"ftp://example.com", false, false},
		{"example.com", false, false},
	} {
		err := CheckServerURL(tc.url)
		if (err == nil) != tc.ok || errors.Is(err, ErrPlainHTTP) != tc.plain {
			t.Errorf("CheckServerURL(%q) = %v; want ok %v, plain-HTTP refusal %v", tc.url, err, tc.ok, tc.plain)
		}
	}
}
