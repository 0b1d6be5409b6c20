// Package e2e runs the built baldurd binary as separate processes on
// loopback and checks behaviour that needs real process faults: kill -9,
// restart and SIGTERM. It has tests only.
package e2e
