//go:build ignore

// gen.go writes schema-embed.json (schema.json with "version" set to $VERSION, compacted) and
// terraform-mapping-embed.json (terraform-mapping.json compacted) in the current directory, like the
// upstream generate step. Run by tools/build-toolchain.sh as `VERSION=x.y.z go run gen.go`.
package main

import (
	"bytes"
	"encoding/json"
	"log"
	"os"
)

func main() {
	version := os.Getenv("VERSION")
	if version == "" {
		log.Fatal("VERSION is not set")
	}
	raw, err := os.ReadFile("schema.json")
	if err != nil {
		log.Fatal(err)
	}
	var schema map[string]json.RawMessage
	if err := json.Unmarshal(raw, &schema); err != nil {
		log.Fatalf("schema.json: %v", err)
	}
	v, err := json.Marshal(version)
	if err != nil {
		log.Fatal(err)
	}
	schema["version"] = v
	out, err := json.Marshal(schema)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile("schema-embed.json", out, 0o600); err != nil {
		log.Fatal(err)
	}
	mapping, err := os.ReadFile("terraform-mapping.json")
	if err != nil {
		log.Fatal(err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, mapping); err != nil {
		log.Fatalf("terraform-mapping.json: %v", err)
	}
	if err := os.WriteFile("terraform-mapping-embed.json", compact.Bytes(), 0o600); err != nil {
		log.Fatal(err)
	}
}
