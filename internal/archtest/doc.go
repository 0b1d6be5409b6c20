// Package archtest enforces the dependency direction of DESIGN §4 and that
// every package documents itself. It has tests only.
package archtest
