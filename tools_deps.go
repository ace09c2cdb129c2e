//go:build tools

package tools

import (
	_ "github.com/FerretDB/FerretDB/ferretdb"
	_ "github.com/coreos/go-oidc/v3/oidc"
	_ "github.com/go-jose/go-jose/v4"
	_ "github.com/google/fhir/go/fhirversion"
	_ "github.com/google/fhir/go/jsonformat"
	_ "github.com/labstack/echo/v4"
	_ "github.com/santhosh-tekuri/jsonschema/v5"
	_ "github.com/zitadel/oidc/v3/pkg/op"
	_ "go.mongodb.org/mongo-driver/v2/mongo"
	_ "golang.org/x/oauth2"
	_ "modernc.org/sqlite"
)
