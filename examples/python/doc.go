// Package python holds a standard-library Python client that takes part in
// baldurd's fleet-wide breakers over REST, and the test that runs it.
package python
