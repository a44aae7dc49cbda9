//go:build !unix

package main

import "os/exec"

// killGroupOnCancel leaves exec's default: the shell itself is killed.
func killGroupOnCancel(*exec.Cmd) {}
