// pulumi-resource-kubernetes built from the github.com/pulumi/pulumi-kubernetes/provider/v4 Go module.
//
// The upstream cmd/pulumi-resource-kubernetes/main.go go:embeds schema-embed.json and
// terraform-mapping-embed.json, which its `go generate` step writes and which are not in the module zip.
// tools/build-toolchain.sh copies this file with go.mod/go.sum into a build directory in the toolchain
// cache and writes those two files there (from the schema.json and terraform-mapping.json the module does
// carry, with the schema's version set to the stamped provider version, see gen.go) before building.
package main

import (
	_ "embed"

	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"
	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version"
)

//go:embed schema-embed.json
var pulumiSchema []byte

//go:embed terraform-mapping-embed.json
var terraformMapping []byte

func main() {
	provider.Serve("kubernetes", version.Version, pulumiSchema, terraformMapping)
}
