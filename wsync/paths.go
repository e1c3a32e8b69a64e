package wsync

import (
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// tmpPrefix names the engine's own temporary files; the scanner skips them.
const tmpPrefix = ".idepool-tmp-"

// IgnoreFile is the per-workspace ignore list, one pattern a line.
const IgnoreFile = ".idepoolignore"

// DefaultIgnore are patterns never synced. .git is synced on purpose: a
// user's unpushed commits are work too (add ".git" to .idepoolignore to
// skip it).
// .idepool (at any depth) holds identity markers: a workspace's own, or
// that of a workspace whose prefix lies inside this one's. Nothing built on
// the ignore list (salvage, a parent workspace) touches them.
var defaultIgnore = []string{"node_modules", "__pycache__", ".venv", "*.swp", "*.swx", "*~", ".DS_Store", tmpPrefix + "*", reservedDir}

// DefaultIgnore returns a copy of the built-in ignore patterns.
func DefaultIgnore() []string { return append([]string(nil), defaultIgnore...) }

// errUnsafeKey marks a remote key refused because it cannot be a path
// inside the workspace.
var errUnsafeKey = errors.New("unsafe key")

// RelFromKey maps an object key under prefix to a slash-separated path
// relative to the workspace. It refuses anything that is not a plain local
// path: "..", absolute paths, NUL and control characters, backslashes,
// empty or "." segments, invalid UTF-8. Directory markers ("dir/") return
// "", nil and are skipped.
func RelFromKey(prefix, key string) (string, error) {
	if !strings.HasPrefix(key, prefix) {
		return "", fmt.Errorf("%w: %q is outside prefix %q", errUnsafeKey, key, prefix)
	}
	rel := key[len(prefix):]
	if rel == "" || strings.HasSuffix(rel, "/") {
		if strings.Contains(rel, "..") || strings.ContainsRune(rel, 0) {
			return "", fmt.Errorf("%w: %q", errUnsafeKey, key)
		}
		return "", nil // directory marker
	}
	if err := checkRel(rel); err != nil {
		return "", fmt.Errorf("%w: %q: %v", errUnsafeKey, key, err)
	}
	return rel, nil
}

func checkRel(rel string) error {
	switch {
	case !utf8.ValidString(rel):
		return errors.New("not valid UTF-8")
	case strings.ContainsAny(rel, "\\"):
		return errors.New("contains a backslash")
	case strings.HasPrefix(rel, "/"):
		return errors.New("absolute path")
	}
	for _, r := range rel {
		if r < 0x20 || r == 0x7f {
			return errors.New("contains a control character")
		}
	}
	if path.Clean(rel) != rel {
		return errors.New("not a clean path")
	}
	for _, seg := range strings.Split(rel, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return errors.New("has an empty, '.' or '..' segment")
		}
	}
	if !filepath.IsLocal(filepath.FromSlash(rel)) {
		return errors.New("not a local path")
	}
	return nil
}

// joinInside joins a checked relative path to the workspace and verifies
// the result is still inside it (defence in depth; writes also go through
// an os.Root).
func joinInside(dir, rel string) (string, error) {
	if err := checkRel(rel); err != nil {
		return "", err
	}
	p := filepath.Join(dir, filepath.FromSlash(rel))
	r, err := filepath.Rel(dir, p)
	if err != nil || !filepath.IsLocal(r) {
		return "", fmt.Errorf("%q escapes the workspace", rel)
	}
	return p, nil
}

// KeyFromRel is the object key of a workspace path.
func KeyFromRel(prefix, rel string) string { return prefix + rel }

// Ignorer decides which workspace paths are never synced.
type Ignorer struct {
	patterns []string
}

// NewIgnorer builds an ignorer from patterns (default list plus the
// workspace's .idepoolignore lines). A pattern without "/" matches any path
// segment (like "node_modules"); one with "/" matches the whole relative
// path (path.Match syntax) or any of its parent directories.
func NewIgnorer(patterns []string) *Ignorer {
	var ps []string
	for _, p := range patterns {
		p = strings.TrimSpace(p)
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		p = strings.TrimPrefix(strings.TrimSuffix(p, "/"), "/")
		if p == "" {
			continue
		}
		if _, err := path.Match(p, ""); err != nil {
			continue // malformed pattern: ignore the pattern, not everything
		}
		ps = append(ps, p)
	}
	return &Ignorer{patterns: ps}
}

// ParseIgnoreFile returns the patterns of an .idepoolignore body.
func ParseIgnoreFile(body string) []string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		l = strings.TrimSpace(strings.TrimSuffix(l, "\r"))
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, l)
	}
	return out
}

// Ignored reports whether rel (slash-separated) or any of its parent
// directories matches a pattern.
func (ig *Ignorer) Ignored(rel string) bool {
	if ig == nil {
		return false
	}
	segs := strings.Split(rel, "/")
	for _, p := range ig.patterns {
		if strings.Contains(p, "/") {
			for i := 1; i <= len(segs); i++ {
				if ok, _ := path.Match(p, strings.Join(segs[:i], "/")); ok {
					return true
				}
			}
			continue
		}
		for _, s := range segs {
			if ok, _ := path.Match(p, s); ok {
				return true
			}
		}
	}
	return false
}

// ConflictName is the path a conflicting version is kept under:
// "dir/name.conflict-<who>-<20060102T150405Z>.ext".
func ConflictName(rel, who, stamp string) string {
	dir, file := path.Split(rel)
	ext := path.Ext(file)
	stem := strings.TrimSuffix(file, ext)
	if stem == "" { // dotfile such as ".bashrc"
		stem, ext = file, ""
	}
	who = sanitizeWho(who)
	return dir + stem + ".conflict-" + who + "-" + stamp + ext
}

func sanitizeWho(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "local"
	}
	return b.String()
}
