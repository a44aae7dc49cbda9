package main

import (
	"flag"
	"fmt"

	"upkeep.dev/upkeep/internal/agent"
	"upkeep.dev/upkeep/internal/tlsclient"
)

func (c *common) registerPush(fs *flag.FlagSet) {
	fs.StringVar(&c.push, "push", envOr("UPKEEP_PUSH", "on"), "on: keep an MQTT connection to the broker the server offers and check in when nudged (polling goes on); off: poll only (UPKEEP_PUSH)")
}

// enablePush turns push on unless --push off. The broker is trusted with the same CA as the
// server (--ca); a nudge is trusted for nothing anyway.
func (c *common) enablePush(a *agent.Agent) error {
	switch c.push {
	case "off":
		return nil
	case "on", "":
	default:
		return fmt.Errorf("--push %q: want on or off", c.push)
	}
	tls, err := tlsclient.Config(c.ca)
	if err != nil {
		return err
	}
	a.EnablePush(agent.PushOptions{TLS: tls})
	return nil
}
