//go:build !unix

package kms_test

import "testing"

// reportCPU reports nothing where getrusage is missing.
func reportCPU(*testing.B) func() { return func() {} }

// pairedCPU needs getrusage.
func pairedCPU(b *testing.B, _ int, _, _ func()) { b.Skip("needs getrusage") }
