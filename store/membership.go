package store

// Membership is implemented by stores shared by several Engines that
// count the Engines sharing them (etcdstore registers each store with a
// lease). The Engine divides each key's token-plane rate limit by the
// count, so that the Engines together admit about the key's limit.
type Membership interface {
	// Members returns the number of live Engines sharing the store, this
	// one included: at least 1. It is called on every token-plane call,
	// so it must be cheap (an atomic load) and never block.
	Members() int
}
