#!/usr/bin/env bash
# Headless qgis_process with this plugin and the venv's packages (torch) visible.
# Debian's /usr/bin/qgis_process script passes --noversioncheck, which its binary rejects; call the binary.
# Installed by `make setup` as .venv/bin/qgis_process. It uses a private QGIS profile in
# build/qgis-profile (set QGIS_CUSTOM_CONFIG_PATH to use another), so that a copy of the plugin in
# your own profile cannot clash with this checkout. qgis_process (3.22) loads only plugins with
# hasProcessingProvider=yes that the profile enables (PythonPlugins/<name>=true): done once here.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$(dirname "$here")"
repo="$(dirname "$venv")"
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -w "$XDG_RUNTIME_DIR" ]; then
  export XDG_RUNTIME_DIR="${TMPDIR:-/tmp}/mstt-xdg-$(id -u)"
  mkdir -p "$XDG_RUNTIME_DIR"
fi
chmod 700 "$XDG_RUNTIME_DIR" 2>/dev/null || true
export QGIS_CUSTOM_CONFIG_PATH="${QGIS_CUSTOM_CONFIG_PATH:-$repo/build/qgis-profile}"
mkdir -p "$QGIS_CUSTOM_CONFIG_PATH"
export QGIS_PLUGINPATH="$repo/build/plugins${QGIS_PLUGINPATH:+:$QGIS_PLUGINPATH}"
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
ini="$QGIS_CUSTOM_CONFIG_PATH/profiles/default/QGIS/QGIS3.ini"
if ! grep -qs '^mstt_stvsr=true' "$ini"; then
  /usr/bin/qgis_process.bin plugins enable mstt_stvsr >/dev/null 2>&1 || true
fi
exec /usr/bin/qgis_process.bin "$@"
