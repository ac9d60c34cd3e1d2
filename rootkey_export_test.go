package kms

// SetRootRotationHook installs a hook RotateRootKey calls at each step
// (see rootRotationHook) and returns a function that removes it. Tests
// stop a rotation with ErrRotationHookStop "as if the process died".
func SetRootRotationHook(h func(step string, n int) error) (restore func()) {
	rootRotationHook = h
	return func() { rootRotationHook = nil }
}

// ErrRotationHookStop is what a hook returns to stop a rotation.
var ErrRotationHookStop = errRotationHookStop
