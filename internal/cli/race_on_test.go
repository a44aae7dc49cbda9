//go:build race

package cli

// raceEnabled: the race detector slows the server several-fold, so timing-bound harnesses
// (the power-cut loop) run fewer rounds and wait longer.
const raceEnabled = true
