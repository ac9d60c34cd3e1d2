//go:build !race

package kms_test

const raceEnabled = false
