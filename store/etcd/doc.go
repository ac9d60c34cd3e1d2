// Package etcdstore keeps a pocketkms Engine's state in etcd, so that
// several processes (replicas of one application, each embedding an
// Engine) share one set of keys. Its import path is
// github.com/pocketkms/kms/store/etcd; the package is named etcdstore so
// that it reads apart from etcd's own packages.
package etcdstore
