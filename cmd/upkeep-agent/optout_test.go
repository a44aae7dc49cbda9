package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func TestOptOutCommand(t *testing.T) {
	state := t.TempDir()
	if err := os.WriteFile(filepath.Join(state, "state.json"), []byte(`{"device_id":"d1","phase":"idle"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	status := func() bool {
		t.Helper()
		var out bytes.Buffer
		if err := run(ctx, "status", []string{"--state", state}, &out); err != nil {
			t.Fatal(err)
		}
		var st struct {
			OptOut *bool `json:"opt_out"`
		}
		if err := json.Unmarshal(out.Bytes(), &st); err != nil || st.OptOut == nil {
			t.Fatalf("status %s: %v, want an opt_out field", out.String(), err)
		}
		return *st.OptOut
	}
	if status() {
		t.Error("opted out before the owner asked")
	}
	for _, args := range [][]string{{"on", "--state", state}, {"--state", state, "on"}} {
		if err := run(ctx, "opt-out", args, &bytes.Buffer{}); err != nil {
			t.Fatalf("opt-out %v: %v", args, err)
		}
		if !status() {
			t.Errorf("after opt-out %v, status says not opted out", args)
		}
	}
	if err := run(ctx, "opt-out", []string{"--state", state, "off"}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if status() {
		t.Error("after opt-out off, status says opted out")
	}
	if err := run(ctx, "opt-out", []string{"--state", state, "maybe"}, &bytes.Buffer{}); err == nil {
		t.Error("opt-out maybe was accepted")
	}
	if err := run(ctx, "opt-out", []string{"--state", t.TempDir(), "on"}, &bytes.Buffer{}); err == nil {
		t.Error("opt-out on a folder without agent state was accepted")
	}
}
