package kms

// WithEncryptionBudgetForTest lowers the AES-GCM encryption budget of
// every key version to n, so tests can reach it.
func WithEncryptionBudgetForTest(n uint64) Option {
	return func(c *config) error {
		c.budget = n
		return nil
	}
}
