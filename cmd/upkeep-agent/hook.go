package main

import (
	"context"
	"os/exec"
	"time"
)

// shellCommand runs cmdline with /bin/sh as a device hook. When ctx ends (the agent's hook
// timeout, or shutdown) the shell and whatever it started are killed, and Wait gives up on
// output pipes that a stray grandchild still holds after hookWaitDelay.
func shellCommand(ctx context.Context, cmdline string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", cmdline)
	cmd.WaitDelay = hookWaitDelay
	killGroupOnCancel(cmd)
	return cmd
}

const hookWaitDelay = 2 * time.Second
