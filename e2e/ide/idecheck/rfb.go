// Package idecheck speaks just enough of the IDE image's protocols to prove
// its workloads work end to end: RFB through websockify (noVNC's path),
// shellinabox's HTTP terminal, and Jupyter's REST API and kernel websocket.
// Tests use it against a container directly and through idepool's routers.
package idecheck

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"

	"github.com/coder/websocket"
)

// Desktop is what a VNC server says of itself after the handshake.
type Desktop struct {
	Version       string // "RFB 003.008"
	SecurityTypes []byte
	Width, Height uint16
	Name          string
}

// rfbNone is the RFB security type without authentication.
const rfbNone = 1

// VNC opens wsURL (websockify's websocket, as noVNC does) and runs the RFB
// 3.8 handshake up to ServerInit with security type None: the same steps
// noVNC takes before it draws the desktop. header goes with the upgrade
// request (cookies, Origin).
func VNC(ctx context.Context, wsURL string, header http.Header, hc *http.Client) (Desktop, error) {
	c, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{
		HTTPHeader:   header,
		HTTPClient:   hc,
		Subprotocols: []string{"binary"},
	})
	if err != nil {
		if resp != nil {
			return Desktop{}, fmt.Errorf("vnc websocket %s: HTTP %d: %w", wsURL, resp.StatusCode, err)
		}
		return Desktop{}, fmt.Errorf("vnc websocket %s: %w", wsURL, err)
	}
	defer c.CloseNow()
	conn := websocket.NetConn(ctx, c, websocket.MessageBinary)
	d, err := rfbHandshake(conn)
	if err != nil {
		return d, fmt.Errorf("vnc websocket %s: %w", wsURL, err)
	}
	c.Close(websocket.StatusNormalClosure, "")
	return d, nil
}

// rfbHandshake is the client side of RFB 3.8 up to ServerInit.
func rfbHandshake(rw io.ReadWriter) (Desktop, error) {
	var d Desktop
	ver := make([]byte, 12)
	if _, err := io.ReadFull(rw, ver); err != nil {
		return d, fmt.Errorf("read protocol version: %w", err)
	}
	d.Version = string(ver[:11])
	if string(ver) != "RFB 003.008\n" {
		return d, fmt.Errorf("protocol version %q: want %q", ver, "RFB 003.008\n")
	}
	if _, err := rw.Write(ver); err != nil {
		return d, fmt.Errorf("write protocol version: %w", err)
	}
	n, err := readU8(rw)
	if err != nil {
		return d, fmt.Errorf("read security types: %w", err)
	}
	if n == 0 {
		return d, fmt.Errorf("server refused the connection: %s", readReason(rw))
	}
	d.SecurityTypes = make([]byte, n)
	if _, err := io.ReadFull(rw, d.SecurityTypes); err != nil {
		return d, fmt.Errorf("read security types: %w", err)
	}
	hasNone := false
	for _, t := range d.SecurityTypes {
		hasNone = hasNone || t == rfbNone
	}
	if !hasNone {
		return d, fmt.Errorf("security types %v: want None (1) offered", d.SecurityTypes)
	}
	if _, err := rw.Write([]byte{rfbNone}); err != nil {
		return d, fmt.Errorf("choose security type: %w", err)
	}
	var result uint32
	if err := binary.Read(rw, binary.BigEndian, &result); err != nil {
		return d, fmt.Errorf("read security result: %w", err)
	}
	if result != 0 {
		return d, fmt.Errorf("security handshake failed (%d): %s", result, readReason(rw))
	}
	if _, err := rw.Write([]byte{1}); err != nil { // ClientInit: shared
		return d, fmt.Errorf("write client init: %w", err)
	}
	var init struct {
		Width, Height uint16
		PixelFormat   [16]byte
		NameLength    uint32
	}
	if err := binary.Read(rw, binary.BigEndian, &init); err != nil {
		return d, fmt.Errorf("read server init: %w", err)
	}
	if init.NameLength > 1<<16 {
		return d, fmt.Errorf("server init: desktop name of %d bytes", init.NameLength)
	}
	name := make([]byte, init.NameLength)
	if _, err := io.ReadFull(rw, name); err != nil {
		return d, fmt.Errorf("read desktop name: %w", err)
	}
	d.Width, d.Height, d.Name = init.Width, init.Height, string(name)
	return d, nil
}

func readU8(r io.Reader) (byte, error) {
	var b [1]byte
	_, err := io.ReadFull(r, b[:])
	return b[0], err
}

// readReason reads an RFB failure reason (u32 length, text).
func readReason(r io.Reader) string {
	var n uint32
	if err := binary.Read(r, binary.BigEndian, &n); err != nil || n > 4096 {
		return "(no reason given)"
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "(reason cut short)"
	}
	return string(b)
}
