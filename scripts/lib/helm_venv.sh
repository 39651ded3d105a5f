# Sourced by scripts/lint-helm and scripts/test-image: a venv with Helm's Go library (the PyPI
# wheel helm-sdkpy, which carries libhelm), jsonschema and PyYAML, under
# ${CALLBRIDGE_CI_CACHE:-~/.cache/callbridge-ci}, installed once; later runs reuse it. Sets
# $helm_python to its interpreter.
HELM_SDKPY_VERSION=0.1.32
JSONSCHEMA_VERSION=4.26.0
PYYAML_VERSION=6.0.3
helm_cache="${CALLBRIDGE_CI_CACHE:-$HOME/.cache/callbridge-ci}"
helm_venv="$helm_cache/helm-venv"
helm_stamp="$helm_venv/.callbridge-installed"
helm_want="helm-sdkpy==$HELM_SDKPY_VERSION jsonschema==$JSONSCHEMA_VERSION pyyaml==$PYYAML_VERSION"

if [[ ! -x "$helm_venv/bin/python" ]] || [[ "$(cat "$helm_stamp" 2>/dev/null)" != "$helm_want" ]]; then
  echo "== installing $helm_want into $helm_venv"
  rm -rf "$helm_venv"
  mkdir -p "$helm_cache"
  python3 -m venv "$helm_venv"
  "$helm_venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
  # helm-sdkpy declares python>=3.12 but its code and its native library run on 3.11.
  # shellcheck disable=SC2086
  "$helm_venv/bin/pip" install --quiet --disable-pip-version-check --ignore-requires-python $helm_want
  echo "$helm_want" > "$helm_stamp"
fi
helm_python="$helm_venv/bin/python"
