# The two commands a newcomer needs (see README): `make demo` and `make test`.
.PHONY: deps demo image test lint typecheck unit integration e2e down conformance

deps:
	@hack/install-deps.sh

demo: deps image
	@hack/demo.sh

# Portico's image, as an OCI layout in .cache/image/oci (docs/image.md).
image: deps
	@hack/image.sh

# Everything CI runs: lint, type check, the image, then every test tier (unit, integration, e2e); then the data-path and
# announcement e2e tests again with the real kube-proxy on the lab's nodes, in each of its modes; then node failure
# in a lab of three nodes.
KUBE_PROXY_E2E = tests/e2e/test_dataplane_lab.py tests/e2e/test_announce_l2.py tests/e2e/test_announce_bgp.py \
                 tests/e2e/test_kube_proxy.py
test: deps lint typecheck image
	.venv/bin/pytest
	.venv/bin/pytest $(KUBE_PROXY_E2E) --kube-proxy=nftables
	.venv/bin/pytest $(KUBE_PROXY_E2E) --kube-proxy=iptables
	.venv/bin/pytest tests/e2e/test_node_failure.py --lab-nodes=3

lint:
	.venv/bin/ruff check src tests bench

typecheck:
	.venv/bin/mypy

unit integration e2e: deps
	.venv/bin/pytest -m $@

down:
	.venv/bin/portico dev down

# The upstream Gateway API conformance suite against a lab of its own; its report goes to docs/conformance/.
conformance: deps image
	@hack/conformance.sh
