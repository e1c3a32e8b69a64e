package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strings"

	"github.com/idepool/idepool"
)

// decodeJSON reads a JSON object body into v. Unknown fields are ignored
// (the original's clients may send more than we read); known fields are
// type-checked and the error names the field. An empty body decodes as {}.
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	data, err := s.readJSONBody(w, r)
	if err != nil {
		return err
	}
	return decodeBytes(data, v)
}

// readJSONBody is decodeJSON's reading half: the Content-Type check and the
// body, bounded.
func (s *Server) readJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !(mt == "application/json" || strings.HasSuffix(mt, "+json")) {
			return nil, &idepool.Error{Code: idepool.EUnsupportedMedia, Message: "Content-Type must be application/json",
				Details: map[string]any{"contentType": truncate(ct, 100)}}
		}
	}
	body := http.MaxBytesReader(w, r.Body, s.o.MaxBodyBytes)
	data, err := io.ReadAll(body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &idepool.Error{Code: idepool.ETooLarge, Message: fmt.Sprintf("request body over %d bytes", s.o.MaxBodyBytes),
				Details: map[string]any{"limit": s.o.MaxBodyBytes}}
		}
		var ie *idepool.Error
		if errors.As(err, &ie) {
			return nil, ie // the body guard's refusal
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, idepool.Errorf(idepool.EInvalid, "request body stalled: no data for %s", s.o.BodyTimeout)
		}
		return nil, idepool.WrapError(idepool.EInvalid, err, "could not read request body")
	}
	return data, nil
}

// decodeBytes is the pure half of decodeJSON (fuzzed).
func decodeBytes(data []byte, v any) error {
	if len(strings.TrimSpace(string(data))) == 0 {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return idepool.Errorf(idepool.EInvalid, "malformed JSON: unexpected data after the object")
	}
	return nil
}

func jsonError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return &idepool.Error{Code: idepool.EInvalid, Message: fmt.Sprintf("request body must be a JSON object, not %s", typ.Value)}
		}
		return &idepool.Error{Code: idepool.EInvalid, Message: fmt.Sprintf("field %s: want %s, got %s", field, kindName(typ.Type.Kind().String()), typ.Value),
			Details: map[string]any{"field": field}}
	case errors.As(err, &syn):
		return &idepool.Error{Code: idepool.EInvalid, Message: fmt.Sprintf("malformed JSON at byte %d", syn.Offset),
			Details: map[string]any{"offset": syn.Offset}}
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return idepool.Errorf(idepool.EInvalid, "malformed JSON: unexpected end of body")
	}
	return idepool.Errorf(idepool.EInvalid, "malformed JSON")
}

func kindName(k string) string {
	switch k {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int64", "int32", "float64":
		return "a number"
	case "struct", "map":
		return "an object"
	}
	return k
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
