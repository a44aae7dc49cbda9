// Command upkeep is Upkeep's server and operator CLI: serve, keys, release, deploy, devices,
// rollouts, vulnerabilities, labels, the demo and the benchmarks (internal/cli).
package main

import (
	"os"

	"upkeep.dev/upkeep/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
