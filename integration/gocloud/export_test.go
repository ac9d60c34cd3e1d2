package gocloud

import "gocloud.dev/secrets/driver"

// NewDriver exposes the driver to the conformance suite, which takes a
// driver.Keeper rather than a *secrets.Keeper.
func NewDriver(c Client, keyTag string) driver.Keeper { return &keeper{c: c, keyTag: keyTag} }
