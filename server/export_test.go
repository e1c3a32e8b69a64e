package server

import "github.com/idepool/idepool"

// SetWrapRuntime makes New use wrap(runtime) (tests inject a runtime's
// failures).
func SetWrapRuntime(o *Options, wrap func(idepool.Runtime) idepool.Runtime) { o.wrapRuntime = wrap }

// SetFailAfter makes New fail right after the named stage.
func SetFailAfter(o *Options, stage string) { o.failAfter = stage }

// Stages names New's stages in order.
func Stages() []string { return stageNames() }
