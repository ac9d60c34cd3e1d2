//go:build !cgo

package softhsmtest

const haveCgo = false
