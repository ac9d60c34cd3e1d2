//go:build cgo

package softhsmtest

const haveCgo = true
