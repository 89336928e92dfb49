#!/usr/bin/env bash
# Headless qgis_process with this plugin and the venv's packages (torch) visible.
# Debian's /usr/bin/qgis_process script passes --noversioncheck, which its binary rejects; call the binary.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$(dirname "$here")"
repo="$(dirname "$venv")"
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d /tmp/mstt-xdg.XXXXXX)}"
chmod 700 "$XDG_RUNTIME_DIR" 2>/dev/null || true
export QGIS_PLUGINPATH="$repo/build/plugins${QGIS_PLUGINPATH:+:$QGIS_PLUGINPATH}"
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
exec /usr/bin/qgis_process.bin "$@"
