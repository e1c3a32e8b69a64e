package process

import (
	"fmt"
	"net"
	"sync"
)

// portPicker asks the kernel for a free port and holds it open until the
// caller is done choosing, so one container never gets the same port twice.
type portPicker func() (int, net.Listener, error)

func kernelPort() (int, net.Listener, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, nil, err
	}
	return l.Addr().(*net.TCPAddr).Port, l, nil
}

// ports hands out free loopback ports and remembers which belong to live
// containers: the kernel would happily give a port back as soon as the
// listener that probed it closes, before the agent binds it.
type ports struct {
	mu    sync.Mutex
	used  map[int]string // port -> container id
	pick  portPicker
	tries int
}

func newPorts(pick portPicker) *ports {
	if pick == nil {
		pick = kernelPort
	}
	return &ports{used: map[int]string{}, pick: pick, tries: 64}
}

// alloc returns one distinct free port per name and reserves them for id.
func (p *ports) alloc(id string, names []string) (map[string]int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(names))
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	taken := map[int]bool{}
	for _, name := range names {
		got := 0
		for range p.tries {
			port, l, err := p.pick()
			if err != nil {
				return nil, fmt.Errorf("find a free port for route %s: %w", name, err)
			}
			if l != nil {
				held = append(held, l)
			}
			if _, inUse := p.used[port]; inUse || taken[port] {
				continue
			}
			got = port
			break
		}
		if got == 0 {
			return nil, fmt.Errorf("find a free port for route %s: every port offered is in use", name)
		}
		taken[got] = true
		out[name] = got
	}
	for _, port := range out {
		p.used[port] = id
	}
	return out, nil
}

// reserve marks ports of a recovered container as used.
func (p *ports) reserve(id string, m map[string]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, port := range m {
		p.used[port] = id
	}
}

// release frees the ports of id.
func (p *ports) release(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for port, owner := range p.used {
		if owner == id {
			delete(p.used, port)
		}
	}
}
