//go:build !unix

package shred

// canSyncAll: syncAll is not available; files are synced one by one.
const canSyncAll = false

func syncAll(string) {}
