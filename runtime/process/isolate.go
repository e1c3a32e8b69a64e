//go:build unix

package process

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	idepool "github.com/idepool/idepool"
)

// User is a uid and gid to run agents and their workloads as.
type User struct {
	UID, GID uint32
}

func (u User) String() string { return fmt.Sprintf("%d:%d", u.UID, u.GID) }

// Nobody is the default unprivileged user when idepool runs as root.
var Nobody = User{UID: 65534, GID: 65534}

// ParseUser reads "uid[:gid]" (numbers; gid defaults to uid).
func ParseUser(s string) (User, error) {
	us, gs, ok := strings.Cut(s, ":")
	uid, err := strconv.ParseUint(us, 10, 32)
	if err != nil || uid == 0 {
		return User{}, fmt.Errorf("user %q: want a non-zero numeric uid[:gid]", s)
	}
	gid := uid
	if ok {
		if gid, err = strconv.ParseUint(gs, 10, 32); err != nil || gid == 0 {
			return User{}, fmt.Errorf("user %q: want a non-zero numeric gid", s)
		}
	}
	return User{UID: uint32(uid), GID: uint32(gid)}, nil
}

// searchable reports why user u cannot reach path (every directory on
// the way must let it search, the last one too), or nil. Only the
// "other" bits and ownership are checked: a group grant is not assumed.
func searchable(path string, u User, wantExec bool) error {
	path = filepath.Clean(path)
	for p := path; ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		sys, _ := st.Sys().(*syscall.Stat_t)
		mode := st.Mode().Perm()
		need := os.FileMode(0o001)
		if sys != nil && sys.Uid == u.UID {
			need = 0o100
		}
		if (p != path || st.IsDir() || wantExec) && mode&need == 0 {
			return fmt.Errorf("%s (mode %v) is not searchable by uid %d", p, mode, u.UID)
		}
		if p == "/" || p == "." {
			return nil
		}
	}
}

// isolation decides, once, what the runtime can isolate and logs what it
// cannot. Called by newRuntime.
func (r *Runtime) setupIsolation() {
	var missing []string
	if r.opts.User != nil {
		u := *r.opts.User
		var why error
		switch {
		case os.Geteuid() != 0:
			why = errors.New("only root can run processes as another user")
		default:
			if err := searchable(r.opts.AgentCommand[0], u, true); err != nil {
				why = fmt.Errorf("the agent binary: %w (install idepool where every user can run it, e.g. /usr/local/bin)", err)
			} else if err := searchable(r.opts.DataDir, u, false); err != nil {
				why = fmt.Errorf("DATA_DIR: %w", err)
			}
		}
		if why != nil {
			r.log.Warn("agents and workloads run as idepool's own user", "wanted", u.String(), "reason", why.Error())
			r.opts.User = nil
		} else {
			// The container directories must be reachable (not listable)
			// by the agents' user.
			if err := os.Chmod(r.dir, 0o711); err != nil {
				r.log.Warn("agents and workloads run as idepool's own user", "wanted", u.String(), "reason", err.Error())
				r.opts.User = nil
			}
		}
	}
	if r.opts.User == nil {
		missing = append(missing, fmt.Sprintf("user (uid %d, idepool's own)", os.Geteuid()))
	}
	if r.opts.Limits {
		l, err := openLimiter(r.opts.Deployment, r.cpu)
		if err != nil {
			r.log.Warn("containers get no memory or CPU limits", "reason", err.Error())
		} else {
			r.limits = l
		}
	}
	if r.limits == nil {
		missing = append(missing, "memory and CPU limits")
	}
	// Short: one line of the start-up summary; docs/security.md explains.
	missing = append(missing, "network", "files outside the workspace")
	attrs := []any{"not_isolated", strings.Join(missing, "; ")}
	if r.opts.User != nil {
		attrs = append(attrs, "user", r.opts.User.String())
	}
	if r.limits != nil {
		kind, _, _ := strings.Cut(r.limits.kind(), " (")
		attrs = append(attrs, "limits", kind)
		r.log.Debug("process runtime cgroups", "limits", r.limits.kind())
	}
	r.log.Info("process runtime isolation", attrs...)
}

// prepareDirs gives the agents' user its directories: the container's
// own is searchable, workspace/, state/ and home/ are its own.
func (r *Runtime) prepareDirs(dir string) error {
	if r.opts.User == nil {
		return nil
	}
	u := *r.opts.User
	if err := os.Chmod(dir, 0o711); err != nil {
		return err
	}
	for _, sub := range []string{"workspace", "state", "home"} {
		p := filepath.Join(dir, sub)
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := os.Chown(p, int(u.UID), int(u.GID)); err != nil {
			return err
		}
	}
	return nil
}

// credential is the agent's SysProcAttr.Credential: nil to stay ourselves.
func (r *Runtime) credential() *syscall.Credential {
	if r.opts.User == nil {
		return nil
	}
	// No supplementary groups: root's would otherwise be kept.
	return &syscall.Credential{Uid: r.opts.User.UID, Gid: r.opts.User.GID, Groups: []uint32{}}
}

// containerLimits makes the cgroups of container id with p's limits.
func (r *Runtime) containerLimits(id string, p idepool.Profile) ([]string, error) {
	if r.limits == nil {
		return nil, nil
	}
	return r.limits.create(id, p)
}
