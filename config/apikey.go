package config

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// APIKeyFile is the name of the generated key's file under DATA_DIR.
const APIKeyFile = "api-key"

// EnsureAPIKey returns the API key kept in dataDir/api-key, generating and
// storing one first when there is none: 32 random bytes, base64url, with
// the prefix "idp_", written with mode 0600 (directory 0700) atomically, so
// a crash never leaves half a key and two racing starts agree on one.
// generated says the key is new (print it once). An existing file readable
// by group or others is refused: the key may have leaked.
func EnsureAPIKey(dataDir string) (key string, generated bool, err error) {
	path := filepath.Join(dataDir, APIKeyFile)
	if key, err := readAPIKey(path); err == nil || !errors.Is(err, os.ErrNotExist) {
		return key, false, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", false, fmt.Errorf("api key: create DATA_DIR: %w", err)
	}
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand documents it)
	key = "idp_" + base64.RawURLEncoding.EncodeToString(b)

	tmp, err := os.CreateTemp(dataDir, ".api-key-*") // mode 0600
	if err != nil {
		return "", false, fmt.Errorf("api key: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(key + "\n")
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", false, fmt.Errorf("api key: write %s: %w", tmp.Name(), err)
	}
	// Link, unlike rename, never replaces a key another process just wrote.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			key, err := readAPIKey(path)
			return key, false, err
		}
		// A file system without hard links: fall back to rename.
		if err := os.Rename(tmp.Name(), path); err != nil {
			return "", false, fmt.Errorf("api key: %w", err)
		}
	}
	if d, err := os.Open(dataDir); err == nil {
		d.Sync() // best effort: make the new name durable
		d.Close()
	}
	return key, true, nil
}

func readAPIKey(path string) (string, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("api key file %s is not a regular file; remove it", path)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("api key file %s has mode %04o: readable by group or others, so the key may have leaked; remove the file to get a new key, or chmod 600 it to keep this one", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("api key: %w", err)
	}
	key := strings.TrimSpace(string(data))
	if len(key) < MinAPIKeyLen || strings.ContainsAny(key, " \t\r\n,") {
		return "", fmt.Errorf("api key file %s does not hold one key of at least %d characters; remove it to get a new key", path, MinAPIKeyLen)
	}
	return key, nil
}

// ReadAPIKeyFile returns the keys in the file API_KEY_FILE names:
// comma- or newline-separated, each at least MinAPIKeyLen long, in a file
// no one else may read (a Docker secret mounted with mode 0400 qualifies).
func ReadAPIKeyFile(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("API_KEY_FILE: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("API_KEY_FILE %s is not a regular file", path)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("API_KEY_FILE %s has mode %04o: readable by group or others; chmod 600 it (a Docker secret: mode 0400)", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("API_KEY_FILE: %w", err)
	}
	var keys []string
	for _, k := range strings.FieldsFunc(string(data), func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		k = strings.TrimSpace(k)
		if k == "" {
			continue
		}
		if len(k) < MinAPIKeyLen || strings.ContainsAny(k, " \t") {
			return nil, fmt.Errorf("API_KEY_FILE %s: a key is shorter than %d characters or holds a blank", path, MinAPIKeyLen)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("API_KEY_FILE %s holds no key", path)
	}
	return keys, nil
}
