package vuln

import (
	"math"
	"strings"
)

// cvssSeverity maps a base score to a level: CVSS v3 uses the FIRST
// qualitative scale (v3.1 spec §5), CVSS v2 the NVD one (no "critical").
// A score of 0.0 ("none") counts as low.
func cvssSeverity(score float64, major int) string {
	switch {
	case major >= 3 && score >= 9.0:
		return SeverityCritical
	case score >= 7.0:
		return SeverityHigh
	case score >= 4.0:
		return SeverityMedium
	default:
		return SeverityLow
	}
}

func cvssMetrics(vector string) map[string]string {
	m := make(map[string]string, 12)
	for _, part := range strings.Split(vector, "/") {
		k, v, ok := strings.Cut(part, ":")
		if ok {
			m[k] = v
		}
	}
	return m
}

// cvss3Score computes the CVSS v3.0/v3.1 base score of a vector string
// ("CVSS:3.1/AV:N/AC:L/..."), per the v3.1 specification §7.1 and the
// Roundup of Appendix A.
func cvss3Score(vector string) (float64, bool) {
	if !strings.HasPrefix(vector, "CVSS:3.") {
		return 0, false
	}
	m := cvssMetrics(vector)
	av, ok1 := map[string]float64{"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2}[m["AV"]]
	ac, ok2 := map[string]float64{"L": 0.77, "H": 0.44}[m["AC"]]
	ui, ok3 := map[string]float64{"N": 0.85, "R": 0.62}[m["UI"]]
	cia := map[string]float64{"H": 0.56, "L": 0.22, "N": 0}
	c, ok4 := cia[m["C"]]
	i, ok5 := cia[m["I"]]
	a, ok6 := cia[m["A"]]
	scope := m["S"]
	var pr float64
	ok7 := true
	switch m["PR"] {
	case "N":
		pr = 0.85
	case "L":
		pr = map[bool]float64{false: 0.62, true: 0.68}[scope == "C"]
	case "H":
		pr = map[bool]float64{false: 0.27, true: 0.5}[scope == "C"]
	default:
		ok7 = false
	}
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7) || (scope != "U" && scope != "C") {
		return 0, false
	}
	iss := 1 - (1-c)*(1-i)*(1-a)
	var impact float64
	if scope == "U" {
		impact = 6.42 * iss
	} else {
		impact = 7.52*(iss-0.029) - 3.25*math.Pow(iss-0.02, 15)
	}
	expl := 8.22 * av * ac * pr * ui
	if impact <= 0 {
		return 0, true
	}
	if scope == "U" {
		return roundup(math.Min(impact+expl, 10)), true
	}
	return roundup(math.Min(1.08*(impact+expl), 10)), true
}

func roundup(x float64) float64 {
	n := int64(math.Round(x * 100000))
	if n%10000 == 0 {
		return float64(n) / 100000
	}
	return float64(n/10000+1) / 10
}

// cvss2Score computes the CVSS v2 base score (v2 guide §3.2.1) of a vector
// such as "AV:N/AC:L/Au:N/C:P/I:P/A:P", with or without "CVSS:2.0/".
func cvss2Score(vector string) (float64, bool) {
	m := cvssMetrics(strings.TrimPrefix(vector, "CVSS:2.0/"))
	av, ok1 := map[string]float64{"L": 0.395, "A": 0.646, "N": 1.0}[m["AV"]]
	ac, ok2 := map[string]float64{"H": 0.35, "M": 0.61, "L": 0.71}[m["AC"]]
	au, ok3 := map[string]float64{"M": 0.45, "S": 0.56, "N": 0.704}[m["Au"]]
	cia := map[string]float64{"N": 0, "P": 0.275, "C": 0.660}
	c, ok4 := cia[m["C"]]
	i, ok5 := cia[m["I"]]
	a, ok6 := cia[m["A"]]
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) {
		return 0, false
	}
	impact := 10.41 * (1 - (1-c)*(1-i)*(1-a))
	expl := 20 * av * ac * au
	f := 1.176
	if impact == 0 {
		f = 0
	}
	return math.Round(((0.6*impact)+(0.4*expl)-1.5)*f*10) / 10, true
}
