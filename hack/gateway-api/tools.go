//go:build tools

// Package tools pins the upstream Gateway API code this module builds: the conformance suite (a test binary), the
// echo-basic server its manifests run (the lab's registry.k8s.io/gateway-api/echo-basic), and the CRDs the lab and
// the chart install (config/crd/standard of sigs.k8s.io/gateway-api).
package tools

import (
	_ "sigs.k8s.io/gateway-api/apis/v1"
	_ "sigs.k8s.io/gateway-api/conformance"
	_ "sigs.k8s.io/gateway-api/conformance/echo-basic"
)
