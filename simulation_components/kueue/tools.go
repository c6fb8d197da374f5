//go:build tools

// Package kueue pins the command the build script compiles, so that
// `go mod tidy` keeps every module it needs in go.sum.
package kueue

import (
	_ "sigs.k8s.io/kueue/cmd/kueue"
)
