package api

import _ "embed"

// openAPIDocument is the OpenAPI 3.1 description of the API (openapi.json
// beside this file), served at PathOpenAPI.
//
//go:embed openapi.json
var openAPIDocument []byte

// OpenAPI returns the OpenAPI 3.1 document of the API.
func OpenAPI() []byte { return append([]byte(nil), openAPIDocument...) }
