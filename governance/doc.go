// Package governance is the control plane's own guard rails (Baldur
// §15.1, §15.3b): the fleet-wide system control (dry run; the kill switch
// itself is the circuit domain's and is read here), the operating mode
// (NORMAL, or STRICT for a bounded time), break glass, and the pre-action
// gate every guarded operation passes (Gate: fixed order, first failure
// wins). Change functions are deterministic over fsm.KV; the leader's
// time-driven steps (STRICT warnings and its return to NORMAL, the end of
// break glass) are in leader.go.
package governance
