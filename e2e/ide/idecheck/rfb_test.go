package idecheck

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// serverInit is a ServerInit for a w×h desktop called name.
func serverInit(w, h uint16, name string) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.BigEndian, w)
	binary.Write(&b, binary.BigEndian, h)
	b.Write(make([]byte, 16))
	binary.Write(&b, binary.BigEndian, uint32(len(name)))
	b.WriteString(name)
	return b.Bytes()
}

func reason(s string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(s)))
	return append(b, s...)
}

// fakeServer plays a scripted RFB server: it writes each step's bytes after
// reading the client's answer of the given length.
type step struct {
	read  int
	write []byte
}

func serve(conn io.ReadWriter, steps []step) {
	for _, s := range steps {
		if s.read > 0 {
			if _, err := io.ReadFull(conn, make([]byte, s.read)); err != nil {
				return
			}
		}
		if _, err := conn.Write(s.write); err != nil {
			return
		}
	}
}

func TestRFBHandshake(t *testing.T) {
	ok := []step{
		{0, []byte("RFB 003.008\n")},
		{12, []byte{2, 2, 1}},           // VNC auth and None offered
		{1, []byte{0, 0, 0, 0}},         // security result OK
		{1, serverInit(1280, 800, "d")}, // after ClientInit
	}
	tests := []struct {
		name    string
		steps   []step
		want    Desktop
		wantErr string
	}{
		{name: "none", steps: ok, want: Desktop{Version: "RFB 003.008", SecurityTypes: []byte{2, 1}, Width: 1280, Height: 800, Name: "d"}},
		{name: "old version", steps: []step{{0, []byte("RFB 003.003\n")}}, wantErr: "protocol version"},
		{name: "refused", steps: []step{{0, []byte("RFB 003.008\n")}, {12, append([]byte{0}, reason("too many")...)}}, wantErr: "too many"},
		{name: "password only", steps: []step{{0, []byte("RFB 003.008\n")}, {12, []byte{1, 2}}}, wantErr: "want None"},
		{name: "auth failed", steps: []step{{0, []byte("RFB 003.008\n")}, {12, []byte{1, 1}}, {1, append([]byte{0, 0, 0, 1}, reason("no")...)}}, wantErr: "failed (1): no"},
		{name: "cut short", steps: []step{{0, []byte("RFB 003.008\n")}, {12, []byte{1, 1}}, {1, []byte{0, 0, 0, 0}}, {1, []byte{5, 0}}}, wantErr: "server init"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			go func() {
				defer server.Close()
				serve(server, tt.steps)
			}()
			d, err := rfbHandshake(client)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Version != tt.want.Version || !bytes.Equal(d.SecurityTypes, tt.want.SecurityTypes) ||
				d.Width != tt.want.Width || d.Height != tt.want.Height || d.Name != tt.want.Name {
				t.Errorf("desktop = %+v, want %+v", d, tt.want)
			}
		})
	}
}

// TestVNCOverWebsocket runs the handshake through a websocket that splits
// the server's bytes across frames, as websockify may.
func TestVNCOverWebsocket(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"binary"}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		conn := websocket.NetConn(r.Context(), c, websocket.MessageBinary)
		all := append([]byte("RFB 003.008\n"), 1, 1)
		for _, b := range all { // one byte per frame
			conn.Write([]byte{b})
		}
		serve(conn, []step{{12 + 1, []byte{0, 0, 0, 0}}, {1, serverInit(800, 600, "split")}})
	}))
	defer srv.Close()
	d, err := VNC(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http")+"/websockify", nil, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	if d.Width != 800 || d.Height != 600 || d.Name != "split" {
		t.Errorf("desktop = %+v", d)
	}
}
