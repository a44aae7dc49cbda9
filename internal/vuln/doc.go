// Package vuln turns SBOMs, OSV advisories and CSAF 2.0 documents (including
// the VEX profile) into one model and matches components against advisories.
//
// It is pure: no database, no network, no clock. Parsers take raw bytes from
// untrusted sources and are fuzzed; the server stores what they return.
//
// Matching follows the OSV evaluation algorithm (OSV schema §"Evaluation"):
// a version is affected if it is listed in affected[].versions or lies within
// a SEMVER or ECOSYSTEM range. Versions are ordered per ecosystem by
// osv-scalibr's semantic package; components of generic firmware use the
// ordering described on [Compare]. Nothing is guessed: GIT-only ranges and
// ecosystems without an ordering yield Status "unmatched".
//
// The package is imported by the server only, never by cmd/upkeep-agent.
// docs/VULNERABILITIES.md records the decisions and the figures.
package vuln
