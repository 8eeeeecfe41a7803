#!/usr/bin/env bash
# Validates the Kubernetes manifests under deploy/k8s, offline once the tools are installed:
#   1. renders the base and every overlay with kustomize (kubectl kustomize),
#   2. checks every rendered object against the Kubernetes API schemas, strictly (unknown
#      fields fail), for each version from 1.30 (the first with the preStop sleep action on by
#      default) to 1.37,
#   3. runs checkov on the files (framework kubernetes) and on the rendered kustomizations
#      (framework kustomize), with the skips in .checkov.yaml and on the resources.
# Overlays' secrets/*.env files are gitignored: the check works on a copy of the tree where
# they are the base's templates, so it never reads (or prints) real secrets.
#
#   bash deploy/k8s/validate.sh
#
# Tools: pinned in requirements.txt, installed from PyPI into a virtualenv
# ($DEPLOY_TOOLS_VENV, default ~/.cache/microstack-deploy-tools) when missing or when the pins
# change (.ci/lint passes its own, with DEPLOY_TOOLS_INSTALLED=1). On Debian's own python3 that needs the python3-venv package.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
versions=${K8S_VERSIONS:-"1.30.0 1.31.0 1.32.0 1.33.0 1.34.0 1.35.0 1.36.0 1.37.0"}
venv=${DEPLOY_TOOLS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/microstack-deploy-tools}

step() { printf '\n::: %s\n' "$*"; }
fail() { printf 'deploy/k8s validation FAILED: %s\n' "$*" >&2; exit 1; }

# .ci/lint installs these tools into its own virtualenv and says so with DEPLOY_TOOLS_INSTALLED=1.
if [ "${DEPLOY_TOOLS_INSTALLED:-}" != 1 ] && ! cmp -s "$here/requirements.txt" "$venv/requirements.txt" 2>/dev/null; then
  step "installing the tools into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" || fail "cannot create a virtualenv (Debian: apt-get install python3-venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" \
    || fail "cannot install $here/requirements.txt"
  cp "$here/requirements.txt" "$venv/requirements.txt"
fi
export PATH="$venv/bin:$PATH"
kubectl version --client >/dev/null || fail "kubectl does not run"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -R "$here" "$work/k8s"
for secrets in "$work"/k8s/overlays/*/secrets; do
  rm -f "$secrets"/*.env
  for example in "$work"/k8s/base/secrets/*.env.example; do
    cp "$example" "$secrets/$(basename "$example" .example)"
  done
done
mkdir "$work/rendered"

step "kustomize: render the base and every overlay ($(kubectl version --client | grep -i kustomize))"
targets=(base)
for overlay in "$work"/k8s/overlays/*/; do
  targets+=("overlays/$(basename "$overlay")")
done
for target in "${targets[@]}"; do
  out="$work/rendered/${target//\//-}.yaml"
  kubectl kustomize "$work/k8s/$target" >"$out" || fail "kustomize cannot render $target"
  echo "$target: $(grep -c '^kind:' "$out") objects"
done

step "kubernetes-validate --strict: Kubernetes $versions"
for version in $versions; do
  for rendered in "$work"/rendered/*.yaml; do
    kubernetes-validate --strict --quiet -k "$version" "$rendered" \
      || fail "$(basename "$rendered" .yaml) does not validate against Kubernetes $version"
  done
  echo "Kubernetes $version: every object valid"
done

step "checkov: the manifests (framework kubernetes) and the kustomizations (framework kustomize)"
(cd "$work/k8s" && checkov --config-file "$here/.checkov.yaml" -d . --framework kubernetes) \
  || fail "checkov (kubernetes) found problems"
(cd "$work/k8s" && checkov --config-file "$here/.checkov.yaml" -d . --framework kustomize) \
  || fail "checkov (kustomize) found problems"

echo
echo "deploy/k8s: rendered, schema-valid and checkov-clean"
