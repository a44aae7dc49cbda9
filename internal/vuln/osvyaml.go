package vuln

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"gopkg.in/yaml.v3"
)

// maxYAMLNodes bounds the nodes visited while converting one YAML record, aliases expanded:
// a record of MaxOSVBytes has far fewer, and a "billion laughs" document must not get through.
const maxYAMLNodes = 1 << 20

// isYAML reports whether raw is not a JSON object: OSV records in YAML (pypa/advisory-database
// writes them so) start with a key, a comment or "---", never with "{".
func isYAML(raw []byte) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] != '{' && t[0] != '['
}

// osvYAMLToJSON converts one OSV record written in YAML into its JSON form. Scalars keep their
// text: an unquoted `fixed: 2.0` is the version "2.0", not the number 2 (YAML 1.2 would read a
// float); only true/false and null keep their YAML type, so that protojson reads the record as
// the OSV schema types it.
func osvYAMLToJSON(raw []byte) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("decode OSV YAML: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("decode OSV YAML: not a mapping")
	}
	budget := maxYAMLNodes
	v, err := yamlValue(doc.Content[0], &budget, 0)
	if err != nil {
		return nil, fmt.Errorf("decode OSV YAML: %w", err)
	}
	return json.Marshal(v)
}

func yamlValue(n *yaml.Node, budget *int, depth int) (any, error) {
	*budget--
	if *budget < 0 {
		return nil, errors.New("too many nodes (aliases expanded)")
	}
	if depth > 64 {
		return nil, errors.New("nested too deeply")
	}
	switch n.Kind {
	case yaml.AliasNode:
		return yamlValue(n.Alias, budget, depth+1)
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return nil, nil
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err == nil {
				return b, nil
			}
		}
		return n.Value, nil
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := yamlValue(c, budget, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: a key that is not a scalar", k.Line)
			}
			if k.Value == "<<" {
				return nil, fmt.Errorf("line %d: merge keys are not supported", k.Line)
			}
			v, err := yamlValue(n.Content[i+1], budget, depth+1)
			if err != nil {
				return nil, err
			}
			out[k.Value] = v
		}
		return out, nil
	}
	return nil, fmt.Errorf("line %d: unexpected YAML node", n.Line)
}
