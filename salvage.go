package idepool

import "context"

// SalvageFunc reaches a dead container's files (Capabilities.Salvage). The
// orchestrator calls it before Remove when the container's agent could not
// flush (it died, or its connection is gone): the runtime stops what is
// left of the container, then pushes the files on its disk that the agent
// had not uploaded to the assignment's workspace, three-way against the
// agent's sync base, never overwriting newer remote work (changed on both
// sides: kept as a conflict copy). A runtime that cannot reach the files (a
// lost node) returns an error coded EUnavailable.
type SalvageFunc func(ctx context.Context, id string, a Assignment) (SalvageResult, error)

// SalvageResult counts what a salvage pushed.
type SalvageResult struct {
	// Uploaded files went under their own names; Conflicts beside newer
	// remote versions as conflict copies; Failed could not be pushed.
	Uploaded  int      `json:"uploaded"`
	Conflicts int      `json:"conflicts"`
	Failed    int      `json:"failed"`
	Bytes     int64    `json:"bytes"`
	Paths     []string `json:"paths,omitempty"`
}

// Salvaged is the number of files that reached the workspace.
func (r SalvageResult) Salvaged() int { return r.Uploaded + r.Conflicts }
