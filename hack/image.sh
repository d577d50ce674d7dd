#!/usr/bin/env bash
# `make image`: builds Portico's image without a container engine daemon, from ./Containerfile, and saves it
# as an OCI image layout in .cache/image/oci (tag VERSION-COMMIT). Prints the layout reference, DIR:TAG.
#   1. the root filesystem: Debian bookworm, minbase, with only what the agent drives (mmdebstrap; cached by
#      this script's hash, so a second build reuses it);
#   2. Portico's wheel and its locked dependencies (uv.lock, without the dev group) for that Debian's Python;
#   3. buildah (chroot isolation, vfs storage) runs the Containerfile over that context.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=bookworm
PACKAGES=python3,nftables,conntrack,gobgpd,haproxy,iproute2,netbase
MIRROR=http://deb.debian.org/debian
PYTHON_VERSION=3.11  # bookworm's python3
PLATFORM=x86_64-manylinux_2_36  # bookworm's glibc
UV=.cache/uv-0.13.8/bin/uv

for cmd in mmdebstrap buildah; do
  command -v "$cmd" >/dev/null || { echo "error: '$cmd' is missing (make deps installs it)" >&2; exit 1; }
done
version=$(.venv/bin/python -c 'from importlib.metadata import version; print(version("portico"))')
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain 2>/dev/null)" ] || revision+=-dirty  # built from uncommitted changes
tag="$version-$revision"
out=.cache/image
ctx="$out/context"
base_cache=${XDG_CACHE_HOME:-$HOME/.cache}/portico/image
base_key=$(sha256sum "$0" | cut -c1-16)
base="$base_cache/rootfs-$SUITE-$base_key.tar"

if [ ! -f "$base" ]; then
  rm -f "$base_cache"/rootfs-*  # an older recipe's
  echo "building the $SUITE root filesystem (first time only)" >&2
  mkdir -p "$base_cache"
  # No documentation, manual pages or translations (their copyright files stay); no apt lists or caches.
  # merged-usr by symlinks (usr-is-merged), not the usrmerge package, which would bring all of perl; no gobgp
  # CLI (the agent speaks gobgpd's gRPC API); no apt in the image (nothing installs into it later); no glibc
  # charset converters (Python has its own codecs), no lib2to3 or pydoc topics.
  mmdebstrap --quiet --variant=minbase --include="$PACKAGES" --format=tar \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --customize-hook='chroot "$1" dpkg --purge --force-remove-essential --force-depends apt' \
    --aptopt='APT::Install-Recommends "false"' --dpkgopt='path-exclude=/usr/bin/gobgp' \
    --customize-hook='ln -s /usr/sbin/nft "$1"/usr/local/sbin/portico-nft' \
    --customize-hook='rm -rf "$1"/usr/lib/x86_64-linux-gnu/gconv "$1"/usr/lib/python3.11/lib2to3 "$1"/usr/lib/python3.11/pydoc_data' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    "$SUITE" "$base.tmp" "deb $MIRROR $SUITE main" "deb $MIRROR-security $SUITE-security main" >&2
  mv "$base.tmp" "$base"
fi

rm -rf "$ctx" && mkdir -p "$ctx/site"
cp Containerfile "$ctx/"
ln "$base" "$ctx/rootfs.tar" 2>/dev/null || cp "$base" "$ctx/rootfs.tar"
# Every runtime dependency, cryptography included: the controller and the agents check Gateway listeners'
# certificates (portico.l7.certificates).
"$UV" export --frozen --no-dev --no-emit-project --no-hashes --quiet -o "$ctx/requirements.txt"
"$UV" build --wheel --quiet -o "$ctx/dist" >&2
"$UV" pip install --quiet --target "$ctx/site" --python-version "$PYTHON_VERSION" --python-platform "$PLATFORM" \
  --only-binary :all: --no-deps -r "$ctx/requirements.txt" "$ctx"/dist/*.whl
rm -rf "$ctx/site/bin" && find "$ctx/site" -name __pycache__ -prune -exec rm -rf {} +
printf '#!/usr/bin/python3\nimport sys\nfrom portico.cli import main\nsys.exit(main())\n' > "$ctx/portico"
chmod 755 "$ctx/portico"

export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
buildah bud --quiet --layers=false --timestamp 0 -t "localhost/portico:$tag" \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" \
  --build-arg CREATED="$(git log -1 --format=%cI 2>/dev/null || date -u +%FT%TZ)" \
  -f "$ctx/Containerfile" "$ctx" >&2
rm -rf "$out/oci"
buildah push --quiet "localhost/portico:$tag" "oci:$out/oci:$tag" >&2
buildah rmi "localhost/portico:$tag" >/dev/null
echo "$out/oci:$tag"
