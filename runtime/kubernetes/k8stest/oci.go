package k8stest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
)

// ociArchive writes an OCI image layout archive of one layer holding the
// binary as /app, and returns its path and the reference containerd will
// list it by, and the manifest's digest (which changes with the binary).
func ociArchive(dir, bin, tag string, args []string) (path, ref, digest string, err error) {
	app, err := os.ReadFile(bin)
	if err != nil {
		return "", "", "", err
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	if err := tw.WriteHeader(&tar.Header{Name: "app", Mode: 0o755, Size: int64(len(app)), Typeflag: tar.TypeReg}); err != nil {
		return "", "", "", err
	}
	if _, err := tw.Write(app); err != nil {
		return "", "", "", err
	}
	if err := tw.Close(); err != nil {
		return "", "", "", err
	}
	blobs := map[string][]byte{}
	add := func(b []byte) (string, int) {
		sum := sha256.Sum256(b)
		d := hex.EncodeToString(sum[:])
		blobs[d] = b
		return "sha256:" + d, len(b)
	}
	layerDigest, layerSize := add(layer.Bytes())
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": append([]string{"/app"}, args...)},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	if err != nil {
		return "", "", "", err
	}
	configDigest, configSize := add(config)
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": configDigest, "size": configSize},
		"layers":        []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layerSize}},
	})
	if err != nil {
		return "", "", "", err
	}
	manifestDigest, manifestSize := add(manifest)
	ref = normalise(tag)
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifestDigest, "size": manifestSize,
			"annotations": map[string]string{"org.opencontainers.image.ref.name": ref},
		}},
	})
	if err != nil {
		return "", "", "", err
	}
	path = filepath.Join(dir, "image.tar")
	f, err := os.Create(path)
	if err != nil {
		return "", "", "", err
	}
	defer f.Close()
	out := tar.NewWriter(f)
	write := func(name string, b []byte) error {
		if err := out.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := out.Write(b)
		return err
	}
	if err := write("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return "", "", "", err
	}
	if err := write("index.json", index); err != nil {
		return "", "", "", err
	}
	for d, b := range blobs {
		if err := write("blobs/sha256/"+d, b); err != nil {
			return "", "", "", err
		}
	}
	if err := out.Close(); err != nil {
		return "", "", "", err
	}
	return path, ref, manifestDigest, f.Close()
}

// normalise returns the full reference a pod's image name means:
// docker.io/library/NAME:TAG for a bare NAME:TAG.
func normalise(tag string) string {
	name := tag
	if !strings.Contains(name, ":") {
		name += ":latest"
	}
	first, _, ok := strings.Cut(name, "/")
	switch {
	case !ok:
		return "docker.io/library/" + name
	case !strings.ContainsAny(first, ".:") && first != "localhost":
		return "docker.io/" + name
	}
	return name
}
