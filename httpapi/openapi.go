package httpapi

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
)

// openAPIDoc is the hand-written OpenAPI 3 description of routes.go. The
// tests keep it true: every route described and nothing else, every
// handler's answer valid against its schema.
//
//go:embed openapi.json
var openAPIDoc []byte

// OpenAPI returns the API's OpenAPI 3 document with info.version set to
// version.
func OpenAPI(version string) ([]byte, error) {
	var doc map[string]any
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		return nil, fmt.Errorf("embedded openapi.json: %w", err)
	}
	info, ok := doc["info"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("embedded openapi.json: no info object")
	}
	info["version"] = version
	return json.Marshal(doc)
}

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) error {
	if s.openAPIErr != nil {
		return s.openAPIErr
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	w.Write(s.openAPI)
	return nil
}
