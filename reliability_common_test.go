package kms_test

import "flag"

// relStrict turns the known bugs the reliability tests report (see
// TESTING.md) into failures instead of a "BUG:" skip.
var relStrict = flag.Bool("reliability.strict", false, "fail, instead of skipping with BUG:, on the known bugs the reliability tests detect")
